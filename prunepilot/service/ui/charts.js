/*
 * prunepilot charts: the trial scatters, keep ratios per group and finalists of one job.
 *
 * Shared by the web UI (/ui) and the self-contained report.html. Every string from a job
 * reaches the page through textContent, never innerHTML. Needs uPlot (vendored).
 */
(function (global) {
  "use strict";

  /** An element with attributes and children; strings become text nodes, never markup. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = String(value);
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(el.dataset, value);
      else el.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  const fmt = {
    score(v) {
      return v === null || v === undefined ? "—" : Number(v).toFixed(4);
    },
    ms(v) {
      return v === null || v === undefined ? "—" : `${Number(v).toPrecision(3)} ms`;
    },
    count(v) {
      if (v === null || v === undefined) return "—";
      const n = Number(v);
      for (const [div, unit] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
        if (Math.abs(n) >= div) return `${(n / div).toPrecision(3)}${unit}`;
      }
      return String(Math.round(n));
    },
    bytes(v) {
      const n = Number(v);
      if (n < 1024) return `${n} B`;
      const units = ["KiB", "MiB", "GiB", "TiB"];
      let x = n / 1024;
      let i = 0;
      while (x >= 1024 && i < units.length - 1) {
        x /= 1024;
        i += 1;
      }
      return `${x.toFixed(1)} ${units[i]}`;
    },
    ratio(v) {
      return v === null || v === undefined ? "—" : Number(v).toFixed(3);
    },
    duration(s) {
      if (s === null || s === undefined || !isFinite(s)) return "—";
      s = Math.max(0, Math.round(s));
      if (s < 60) return `${s} s`;
      if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
      return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    },
  };

  /** A trial's latency: measured when it was, else predicted (null when neither). */
  function latencyOf(t) {
    if (t.measured_ms !== null && t.measured_ms !== undefined) return t.measured_ms;
    return t.predicted_ms === undefined ? null : t.predicted_ms;
  }

  /** The trial number of the chosen model: the finalist whose config is the result's. */
  function chosenNumber(result) {
    if (!result || !Array.isArray(result.finalists)) return null;
    const key = JSON.stringify(result.config || {});
    const same = result.finalists.find((f) => JSON.stringify(f.config || {}) === key);
    return same ? same.number : null;
  }

  /** The uniform baseline's config among the trials (null when the search had none). */
  function uniformConfig(trials) {
    const t = (trials || []).find((x) => x.baseline === "uniform");
    return t ? t.config : null;
  }

  const COLORS = {
    feasible: "#2563eb",
    infeasible: "#9ca3af",
    unscored: "#c4c8cf",
    pareto: "#ea580c",
    chosen: "#111827",
    budget: "#dc2626",
  };

  function span(values, extra) {
    const xs = values.concat(extra.filter((v) => v !== null && v !== undefined));
    let lo = Math.min(...xs);
    let hi = Math.max(...xs);
    if (!isFinite(lo) || !isFinite(hi)) return [0, 1];
    if (lo === hi) {
      const d = Math.abs(lo) * 0.1 || 1;
      return [lo - d, hi + d];
    }
    const pad = (hi - lo) * 0.06;
    return [lo - pad, hi + pad];
  }

  /** Points no other beats on both score (higher) and cost (lower), cheapest first: the
   * search's own rule (prunepilot.search.pareto_front), here on this chart's cost axis. */
  function paretoFront(points) {
    const front = points.filter(
      (p) => !points.some((o) => o.y >= p.y && o.x <= p.x && (o.y > p.y || o.x < p.x)),
    );
    return front.sort((a, b) => a.x - b.x);
  }

  /**
   * A scatter of every trial: score against latency ("latency") or MACs ("macs").
   *
   * Feasible trials blue, infeasible grey, trials with no score (rejected before being
   * evaluated, failed, running) hollow grey along the bottom; the Pareto front on this
   * chart's axis orange and joined (on latency it is the search's own), the chosen model ringed, the budget a dashed red line. Sets
   * ``data-points`` on ``el`` to the number of trials drawn.
   */
  function scatter(el, opts) {
    const trials = opts.trials || [];
    const axis = opts.axis;
    const limit = axis === "latency" ? (opts.limits || {}).latency_ms : (opts.limits || {}).macs;
    const xOf = axis === "latency" ? latencyOf : (t) => t.macs;
    if (el._plot) {
      el._plot.destroy();
      el._plot = null;
    }
    el.replaceChildren();
    const placed = trials.filter((t) => xOf(t) !== null && xOf(t) !== undefined);
    el.dataset.points = "0";
    if (!placed.length || typeof global.uPlot !== "function") {
      const why = !trials.length
        ? "no trials yet"
        : axis === "latency"
          ? "no latency was measured or predicted (the job has no latency budget)"
          : "no trial has a cost yet";
      el.append(h("p", { class: "empty", text: why }));
      return;
    }
    const scores = placed.map((t) => t.score).filter((s) => s !== null && s !== undefined);
    const [lo, yhi] = span(scores.length ? scores : [0, 1], []);
    const floor = lo;
    const ylo = lo - (yhi - lo) * 0.05;
    const groups = { feasible: [[], []], infeasible: [[], []], unscored: [[], []] };
    const points = [];
    for (const t of placed) {
      const x = xOf(t);
      const scored = t.score !== null && t.score !== undefined;
      const kind = !scored ? "unscored" : t.feasible ? "feasible" : "infeasible";
      const y = scored ? t.score : floor;
      groups[kind][0].push(x);
      groups[kind][1].push(y);
      points.push({ t, x, y, kind });
    }
    const front = paretoFront(points.filter((p) => p.kind === "feasible" && p.t.state === "complete"));
    const chosen = points.find((p) => p.t.number === opts.chosen) || null;
    const [xlo, xhi] = span(
      points.map((p) => p.x),
      [limit],
    );
    const width = Math.max(280, Math.min(opts.width || el.clientWidth || 560, 900));
    const pointSeries = (label, color, fill, size) => ({
      label,
      stroke: color,
      fill,
      width: 1.5,
      paths: global.uPlot.paths.points(),
      points: { show: false, size, width: 1.5 },
      facets: [{ scale: "x", auto: false }, { scale: "y", auto: false }],
    });
    const series = [
      null,
      pointSeries("feasible", COLORS.feasible, "rgba(37,99,235,0.55)", 9),
      pointSeries("infeasible", COLORS.infeasible, "rgba(156,163,175,0.55)", 9),
      pointSeries("not scored", COLORS.unscored, null, 9),
      pointSeries("Pareto front", COLORS.pareto, "rgba(234,88,12,0.85)", 11),
    ];
    const data = [
      null,
      groups.feasible,
      groups.infeasible,
      groups.unscored,
      [front.map((p) => p.x), front.map((p) => p.y)],
    ];
    const draw = (u) => {
      const ctx = u.ctx;
      const px = (v, key) => u.valToPos(v, key, true);
      ctx.save();
      if (front.length > 1) {
        ctx.strokeStyle = COLORS.pareto;
        ctx.lineWidth = 1.5 * devicePixelRatio;
        ctx.setLineDash([]);
        ctx.beginPath();
        front.forEach((p, i) => {
          const f = i ? ctx.lineTo : ctx.moveTo;
          f.call(ctx, px(p.x, "x"), px(p.y, "y"));
        });
        ctx.stroke();
      }
      if (chosen) {
        ctx.strokeStyle = COLORS.chosen;
        ctx.lineWidth = 2 * devicePixelRatio;
        ctx.beginPath();
        ctx.arc(px(chosen.x, "x"), px(chosen.y, "y"), 9 * devicePixelRatio, 0, 2 * Math.PI);
        ctx.stroke();
      }
      if (limit !== null && limit !== undefined) {
        const x = px(limit, "x");
        ctx.strokeStyle = COLORS.budget;
        ctx.lineWidth = 1.5 * devicePixelRatio;
        ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
        ctx.beginPath();
        ctx.moveTo(x, u.bbox.top);
        ctx.lineTo(x, u.bbox.top + u.bbox.height);
        ctx.stroke();
        ctx.fillStyle = COLORS.budget;
        ctx.font = `${11 * devicePixelRatio}px sans-serif`;
        ctx.fillText("budget", x + 4 * devicePixelRatio, u.bbox.top + 12 * devicePixelRatio);
      }
      ctx.restore();
    };
    const plotEl = h("div", { class: "plot" });
    const tip = h("div", { class: "tip", hidden: true });
    const wrap = h("div", { class: "plot-wrap" }, plotEl, tip);
    el.append(wrap, legend(chosen !== null, limit !== null && limit !== undefined));
    const u = new global.uPlot(
      {
        mode: 2,
        width,
        height: opts.height || 300,
        legend: { show: false },
        cursor: { show: false, drag: { x: false, y: false } },
        scales: {
          x: { time: false, auto: false, range: () => [xlo, xhi] },
          y: { auto: false, range: () => [ylo, yhi] },
        },
        axes: [
          {
            label: axis === "latency" ? "latency (ms; measured, else predicted)" : "MACs",
            values: (u, vals) => vals.map((v) => (axis === "latency" ? v.toPrecision(3) : fmt.count(v))),
          },
          { label: "score", values: (u, vals) => vals.map((v) => v.toPrecision(3)) },
        ],
        series,
        hooks: { draw: [draw] },
      },
      data,
      plotEl,
    );
    el._plot = u;
    el.dataset.points = String(points.length);
    u.over.addEventListener("mousemove", (ev) => {
      const r = u.over.getBoundingClientRect();
      const mx = ev.clientX - r.left;
      const my = ev.clientY - r.top;
      let best = null;
      let bestD = 144;
      for (const p of points) {
        const dx = u.valToPos(p.x, "x") - mx;
        const dy = u.valToPos(p.y, "y") - my;
        const d = dx * dx + dy * dy;
        if (d < bestD) {
          best = p;
          bestD = d;
        }
      }
      if (!best) {
        tip.hidden = true;
        return;
      }
      const t = best.t;
      const cost = axis === "latency" ? fmt.ms(best.x) : `${fmt.count(best.x)} MACs`;
      const what = t.baseline ? ` (${t.baseline})` : "";
      const state = t.feasible ? "feasible" : t.reason || t.state;
      tip.textContent = `trial ${t.number}${what} · score ${fmt.score(t.score)} · ${cost} · ${state}`;
      tip.hidden = false;
      tip.style.left = `${u.valToPos(best.x, "x") + u.over.offsetLeft + 12}px`;
      tip.style.top = `${u.valToPos(best.y, "y") + u.over.offsetTop - 8}px`;
    });
    u.over.addEventListener("mouseleave", () => {
      tip.hidden = true;
    });
  }

  function legend(withChosen, withBudget) {
    const item = (cls, label) => h("span", { class: "key" }, h("i", { class: `sw ${cls}` }), label);
    return h(
      "div",
      { class: "legend" },
      item("sw-feasible", "feasible"),
      item("sw-infeasible", "infeasible"),
      item("sw-unscored", "not scored (drawn at the bottom)"),
      item("sw-pareto", "Pareto front"),
      withChosen ? item("sw-chosen", "chosen model") : null,
      withBudget ? item("sw-budget", "budget") : null,
    );
  }

  function bar(value, cls) {
    const fill = h("span", { class: `fill ${cls}` });
    fill.style.width = `${Math.max(0, Math.min(1, Number(value) || 0)) * 100}%`;
    return h("span", { class: "bar" }, fill);
  }

  /** The chosen model's keep ratio per group next to the uniform baseline's. */
  function ratios(el, chosen, uniform) {
    el.replaceChildren();
    const keys = Object.keys(chosen || {});
    if (!keys.length) {
      el.append(h("p", { class: "empty", text: "no chosen model yet" }));
      return;
    }
    const rows = keys.map((k) => {
      const u = uniform ? uniform[k] : null;
      return h(
        "tr",
        {},
        h("td", {}, h("code", { text: k })),
        h("td", { class: "num" }, bar(chosen[k], "chosen"), fmt.ratio(chosen[k])),
        h("td", { class: "num" }, u === null || u === undefined ? "—" : [bar(u, "uniform"), fmt.ratio(u)]),
      );
    });
    el.append(
      h(
        "table",
        { class: "ratios" },
        h("thead", {}, h("tr", {}, h("th", { text: "group" }), h("th", { text: "chosen keeps" }), h("th", { text: "uniform keeps" }))),
        h("tbody", {}, rows),
      ),
    );
  }

  /** The fine-tuned finalists: search score, fine-tuned (validation) score, cost; the chosen
   * one marked, and those that failed the final latency re-measurement said so (the search
   * takes the best validation score among the finalists that pass it). */
  function finalists(el, list, chosen) {
    el.replaceChildren();
    if (!list || !list.length) {
      el.append(h("p", { class: "empty", text: "no finalists yet" }));
      return;
    }
    const rows = list.map((f) =>
      h(
        "tr",
        { class: f.number === chosen ? "chosen" : null },
        h("td", { class: "num", text: f.number }),
        h("td", { text: f.baseline || "search" }),
        h("td", { class: "num", text: fmt.count(f.macs) }),
        h("td", { class: "num", text: fmt.count(f.params) }),
        h("td", { class: "num", text: fmt.ms(latencyOf(f)) }),
        h("td", { class: "num", text: fmt.score(f.score) }),
        h("td", { class: "num strong", text: fmt.score(f.val_score) }),
        h("td", {
          text:
            f.number === chosen ? "chosen" : f.feasible === false ? "over the latency budget when re-measured" : "",
        }),
      ),
    );
    const head = ["trial", "allocation", "MACs", "params", "latency", "search score", "fine-tuned (validation)", ""];
    el.append(
      h(
        "table",
        { class: "finalists" },
        h("thead", {}, h("tr", {}, head.map((x) => h("th", { text: x })))),
        h("tbody", {}, rows),
      ),
    );
  }

  /** Artifacts: name, size and sha256 (``link(a)``: an optional element to download it). */
  function artifacts(el, list, link) {
    el.replaceChildren();
    if (!list || !list.length) {
      el.append(h("p", { class: "empty", text: "no files yet" }));
      return;
    }
    const rows = list.map((a) =>
      h(
        "tr",
        { dataset: { artifact: a.name } },
        h("td", {}, link ? link(a) : h("code", { text: a.name })),
        h("td", { class: "num", text: fmt.bytes(a.size) }),
        h("td", {}, h("code", { class: "sha", text: a.sha256 })),
      ),
    );
    el.append(
      h(
        "table",
        { class: "artifacts" },
        h("thead", {}, h("tr", {}, h("th", { text: "file" }), h("th", { text: "size" }), h("th", { text: "sha256" }))),
        h("tbody", {}, rows),
      ),
    );
  }

  /** The chosen model in one line of figures: allocation, score, MACs, params, latency. */
  function summary(el, result) {
    const base = result.baseline || {};
    const pct = (a, b) => (a && b ? ` (${Math.round((100 * a) / b)}% of ${fmt.count(b)})` : "");
    const items = [
      ["chosen", result.chosen === "search" ? "searched candidate" : `${result.chosen} baseline`],
      ["fine-tuned score", fmt.score(result.score)],
      ["MACs", fmt.count(result.macs) + pct(result.macs, base.macs)],
      ["params", fmt.count(result.params) + pct(result.params, base.params)],
      ["latency", fmt.ms(result.latency_ms)],
      ["search time", fmt.duration(result.wall_s)],
    ];
    el.replaceChildren(
      ...items.map(([k, val]) => h("div", { class: "kv" }, h("span", { class: "label", text: k }), h("span", { text: val }))),
    );
  }

  global.PPCharts = { h, fmt, summary, scatter, ratios, finalists, artifacts, chosenNumber, uniformConfig, latencyOf };
})(window);
