/*
 * report.html's boot: reads the job's data from the page's JSON block and draws the same
 * charts as the web UI (PPCharts), with no server and no network.
 */
(function () {
  "use strict";

  const PP = window.PPCharts;
  const $ = (id) => document.getElementById(id);
  const data = JSON.parse($("pp-data").textContent);
  const result = data.result;
  const chosen = PP.chosenNumber(result);
  const trials = data.trials || [];

  $("title").textContent = data.name || data.id;
  $("meta").textContent = `job ${data.id} · ${trials.length} trials · Pareto front of ${(data.pareto || []).length}`;
  PP.summary($("summary"), result);
  const width = Math.floor(($("scatter-macs").parentElement.clientWidth || 520) - 4);
  const common = { trials, limits: result.limits || {}, chosen, width };
  PP.scatter($("scatter-latency"), { ...common, axis: "latency" });
  PP.scatter($("scatter-macs"), { ...common, axis: "macs" });
  PP.ratios($("ratios"), result.config, PP.uniformConfig(trials));
  PP.finalists($("finalists"), result.finalists, chosen);
  PP.artifacts($("artifacts"), data.artifacts || [], null);
  document.body.dataset.ready = "1";
})();
