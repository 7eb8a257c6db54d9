/*
 * prunepilot web UI: a token prompt, the token owner's jobs, and one job's live page.
 *
 * The token lives in this tab's sessionStorage and travels only in the Authorization
 * header (never in a URL): the event stream is read with fetch() (EventSource cannot send
 * headers) and downloads go through fetch + Blob. Strings from the API reach the page
 * through textContent only (PPCharts.h).
 */
(function () {
  "use strict";

  const PP = window.PPCharts;
  const { h, fmt } = PP;
  const TOKEN_KEY = "prunepilot.token";
  const JOB_ID = /^[0-9a-f]{16}$/;
  const ACTIVE = new Set(["QUEUED", "RUNNING", "CANCELLING"]);
  const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);
  const $ = (id) => document.getElementById(id);
  const sleep = (ms, signal) =>
    new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      if (signal) signal.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
    });

  class AuthError extends Error {}
  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  let view = null; // the page shown: {signal, ...}; aborted when another is shown
  let pending = null; // a message for the next page shown

  // ------------------------------------------------------------------ API

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  async function api(path, init) {
    const headers = new Headers((init && init.headers) || {});
    headers.set("Authorization", `Bearer ${token()}`);
    const r = await fetch(path, {
      ...init,
      headers,
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
    if (r.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      throw new AuthError("the server refused this token; sign in again");
    }
    return r;
  }

  async function failure(r) {
    try {
      const body = await r.json();
      return new ApiError(r.status, String(body.detail || r.statusText));
    } catch (e) {
      return new ApiError(r.status, `${r.status} ${r.statusText}`);
    }
  }

  async function getJSON(path, init) {
    const r = await api(path, init);
    if (!r.ok) throw await failure(r);
    return r.json();
  }

  // ------------------------------------------------------------------ pages

  function flash(text, kind) {
    const el = $("flash");
    el.textContent = text || "";
    el.className = `flash ${kind || ""}`;
    el.hidden = !text;
  }

  function show(section) {
    for (const id of ["login", "jobs", "job"]) $(id).hidden = id !== section;
    const signedIn = section !== "login";
    $("signout").hidden = !signedIn;
    $("who").textContent = signedIn ? "signed in" : "";
  }

  function handle(err) {
    if (view && view.signal.aborted) return;
    if (err instanceof AuthError) {
      showLogin(err.message);
    } else if (err && err.name !== "AbortError") {
      flash(err.message || String(err), "bad");
    }
  }

  function showLogin(message) {
    stopView();
    show("login");
    flash(message || "", message ? "bad" : "");
    $("token").focus();
  }

  function stopView() {
    if (view) view.abort.abort();
    view = null;
  }

  function newView(kind) {
    stopView();
    const abort = new AbortController();
    view = { kind, abort, signal: abort.signal };
    return view;
  }

  function route() {
    flash(pending ? pending[0] : "", pending ? pending[1] : "");
    pending = null;
    if (!token()) return showLogin();
    const m = /^#\/jobs\/([^/]+)$/.exec(location.hash);
    if (m) return showJob(decodeURIComponent(m[1]));
    return showJobs();
  }

  // ------------------------------------------------------------------ job list

  function badge(status) {
    return h("span", { class: `badge s-${String(status).toLowerCase()}`, text: status });
  }

  function progress(done, planned) {
    const bar = h("progress", { max: Math.max(planned, 1), value: Math.min(done, planned) });
    return h("span", { class: "prog" }, bar, ` ${done} / ${planned}`);
  }

  async function showJobs() {
    const v = newView("jobs");
    show("jobs");
    while (!v.signal.aborted) {
      try {
        const page = await getJSON("/jobs?limit=100", { signal: v.signal });
        if (v.signal.aborted) return;
        const rows = page.items.map((j) =>
          h(
            "tr",
            { dataset: { job: j.id, status: j.status } },
            h(
              "td",
              {},
              h("a", { href: `#/jobs/${j.id}`, text: j.name || j.id }),
              h("div", { class: "muted small" }, h("code", { text: j.id })),
            ),
            h("td", {}, badge(j.status)),
            h("td", { text: j.phase || "" }),
            h("td", { class: "trials" }, progress(j.trials_done, j.trials_planned)),
            h("td", { class: "num", text: fmt.score(j.best_score) }),
            h("td", { class: "small", text: new Date(j.created_at).toLocaleString() }),
          ),
        );
        $("jobs-body").replaceChildren(...rows);
        $("jobs-empty").hidden = rows.length > 0;
      } catch (err) {
        handle(err);
        if (err instanceof AuthError) return;
      }
      await sleep(2000, v.signal);
    }
  }

  // ------------------------------------------------------------------ one job

  async function showJob(id) {
    const v = newView("job");
    v.id = id;
    v.eta = { t0: null, d0: 0, remaining: null, at: null };
    v.trialsAt = 0;
    v.trialsPending = null;
    show("job");
    clearJob();
    if (!JOB_ID.test(id)) {
      return notFound(id);
    }
    try {
      const job = await getJSON(`/jobs/${id}`, { signal: v.signal });
      if (v.signal.aborted) return;
      v.job = job;
      renderJob(v, job);
      await refreshTrials(v);
      if (TERMINAL.has(job.status)) {
        await refreshArtifacts(v);
      } else {
        tickEta(v);
        await follow(v);
      }
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return notFound(id);
      handle(err);
    }
  }

  /** Empty every field of the job page, so nothing of a previous job (or token) shows. */
  function clearJob() {
    for (const id of ["job-title", "job-status", "job-id", "job-created", "job-error", "phase", "best", "eta", "message"]) {
      $(id).textContent = "";
    }
    for (const id of ["scatter-latency", "scatter-macs", "ratios", "finalists", "artifacts", "summary"]) {
      const el = $(id);
      if (el._plot) el._plot.destroy();
      el._plot = null;
      el.replaceChildren();
      delete el.dataset.points;
    }
    $("trials-done").textContent = "0";
    $("trials-planned").textContent = "0";
    $("trials-bar").value = 0;
    $("job-status").className = "badge";
    for (const id of ["summary", "job-error", "cancel", "delete"]) $(id).hidden = true;
    $("job-body").hidden = false;
    $("job-meta").hidden = false;
  }

  function notFound(id) {
    clearJob();
    $("job-title").textContent = "No such job";
    $("job-id").textContent = id;
    $("job-body").hidden = true;
    $("job-meta").hidden = true;
    flash(`No job ${id} for this token.`, "bad");
  }

  function renderJob(v, job) {
    v.job = job;
    $("job-title").textContent = job.name || job.id;
    const status = $("job-status");
    status.textContent = job.status;
    status.className = `badge s-${job.status.toLowerCase()}`;
    $("job-id").textContent = job.id;
    $("job-created").textContent = new Date(job.created_at).toLocaleString();
    $("job-error").textContent = job.error || "";
    $("job-error").hidden = !job.error;
    setProgress(v, {
      phase: job.phase,
      trials_done: job.trials_done,
      trials_planned: job.trials_planned,
      best_score: job.best_score,
    });
    $("cancel").hidden = !(job.status === "QUEUED" || job.status === "RUNNING");
    $("delete").hidden = !TERMINAL.has(job.status);
    renderResult(job.result);
  }

  function setProgress(v, p) {
    if (p.phase) $("phase").textContent = p.phase;
    $("trials-done").textContent = String(p.trials_done);
    $("trials-planned").textContent = String(p.trials_planned);
    const bar = $("trials-bar");
    bar.max = Math.max(p.trials_planned, 1);
    bar.value = Math.min(p.trials_done, p.trials_planned);
    $("best").textContent = fmt.score(p.best_score);
    if (p.message !== undefined) $("message").textContent = p.message || "";
    showEta(v);
  }

  function renderResult(result) {
    const el = $("summary");
    if (!result) {
      el.hidden = true;
      return;
    }
    PP.summary(el, result);
    el.hidden = false;
    const chosen = PP.chosenNumber(result);
    PP.finalists($("finalists"), result.finalists, chosen);
  }

  async function refreshTrials(v) {
    const page = await getJSON(`/jobs/${v.id}/trials`, { signal: v.signal });
    if (v.signal.aborted) return;
    v.trials = page;
    const result = v.job && v.job.result;
    const chosen = PP.chosenNumber(result);
    const width = Math.floor(($("scatter-macs").parentElement.clientWidth || 560) - 4);
    const common = { trials: page.trials, limits: (result && result.limits) || {}, chosen, width };
    PP.scatter($("scatter-latency"), { ...common, axis: "latency" });
    PP.scatter($("scatter-macs"), { ...common, axis: "macs" });
    PP.ratios($("ratios"), result ? result.config : null, PP.uniformConfig(page.trials));
    if (!result) PP.finalists($("finalists"), [], null);
    if (!v.marked) {
      v.marked = true;
      performance.mark("pp:job-rendered");
    }
  }

  /** Re-read the trials at most every 1.5 s while the job runs. */
  function trialsChanged(v) {
    if (v.trialsPending) return;
    const wait = Math.max(0, v.trialsAt + 1500 - performance.now());
    v.trialsPending = setTimeout(async () => {
      v.trialsPending = null;
      v.trialsAt = performance.now();
      try {
        await refreshTrials(v);
      } catch (err) {
        handle(err);
      }
    }, wait);
    v.signal.addEventListener("abort", () => clearTimeout(v.trialsPending), { once: true });
  }

  async function refreshArtifacts(v) {
    const list = await getJSON(`/jobs/${v.id}/artifacts`, { signal: v.signal });
    if (v.signal.aborted) return;
    PP.artifacts($("artifacts"), list, (a) => {
      const note = h("span", { class: "muted small note" });
      const button = h("button", {
        type: "button",
        class: "link download",
        text: a.name,
        onclick: () => download(v, a, note),
      });
      return h("span", {}, button, " ", note);
    });
  }

  async function download(v, a, note) {
    note.textContent = "downloading…";
    try {
      const r = await api(`/jobs/${v.id}/artifacts/${encodeURIComponent(a.name)}`);
      if (!r.ok) throw await failure(r);
      const bytes = await r.arrayBuffer();
      let check = "";
      if (window.crypto && crypto.subtle) {
        const digest = await crypto.subtle.digest("SHA-256", bytes);
        const hex = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
        check = hex === a.sha256 ? " · sha256 verified" : " · sha256 MISMATCH";
      }
      // octet-stream: the browser saves the file and never renders it (report.html included)
      const url = URL.createObjectURL(new Blob([bytes], { type: "application/octet-stream" }));
      const link = h("a", { href: url, download: a.name, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      note.textContent = `saved ${fmt.bytes(bytes.byteLength)}${check}`;
    } catch (err) {
      note.textContent = "";
      handle(err);
    }
  }

  // ------------------------------------------------------------------ live progress

  /** Follow the job's event stream (fetch + a stream reader, resuming with Last-Event-ID). */
  async function follow(v) {
    let last = null;
    let failures = 0;
    while (!v.signal.aborted) {
      try {
        const headers = last !== null ? { "Last-Event-ID": String(last) } : {};
        const r = await api(`/jobs/${v.id}/events`, { headers, signal: v.signal });
        if (r.status === 429) return poll(v); // this token has as many streams as allowed
        if (!r.ok) throw await failure(r);
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value.replace(/\r\n?/g, "\n");
          let cut;
          while ((cut = buf.indexOf("\n\n")) >= 0) {
            const ev = parseEvent(buf.slice(0, cut));
            buf = buf.slice(cut + 2);
            if (ev.id !== null) last = ev.id;
            if (ev.event === "end") return finish(v, ev.data);
            if (ev.data) onProgress(v, ev.data);
          }
        }
        failures = 0;
      } catch (err) {
        if (v.signal.aborted || err instanceof AuthError) return handle(err);
        failures += 1;
      }
      await sleep(Math.min(1000 * 2 ** failures, 15000), v.signal);
    }
  }

  /** Without a stream: poll the job every 2 s until it ends. */
  async function poll(v) {
    while (!v.signal.aborted) {
      const job = await getJSON(`/jobs/${v.id}`, { signal: v.signal });
      if (TERMINAL.has(job.status)) return finish(v, job);
      renderJob(v, job);
      trialsChanged(v);
      await sleep(2000, v.signal);
    }
  }

  function parseEvent(block) {
    const ev = { event: "message", id: null, data: null };
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
      if (field === "event") ev.event = value;
      else if (field === "id") ev.id = value;
      else if (field === "data") data.push(value);
    }
    if (data.length) {
      try {
        ev.data = JSON.parse(data.join("\n"));
      } catch (e) {
        ev.data = null;
      }
    }
    return ev;
  }

  function onProgress(v, d) {
    const prev = v.progress || {};
    v.progress = d;
    if (d.message === d.status) d.message = ""; // a status event: the badge says it
    const status = $("job-status");
    status.textContent = d.status;
    status.className = `badge s-${String(d.status).toLowerCase()}`;
    $("cancel").hidden = !(d.status === "QUEUED" || d.status === "RUNNING");
    const at = Date.parse(d.time);
    const e = v.eta;
    if (d.trials_done > 0 && d.trials_planned > 0 && isFinite(at)) {
      if (e.t0 === null) {
        e.t0 = at;
        e.d0 = d.trials_done;
      } else if (d.trials_done > e.d0 && at > e.t0) {
        const rate = (d.trials_done - e.d0) / ((at - e.t0) / 1000);
        e.remaining = (d.trials_planned - d.trials_done) / rate;
        e.at = at;
      }
    }
    e.done = d.trials_done >= d.trials_planned && d.trials_planned > 0;
    setProgress(v, d);
    if (d.trials_done !== prev.trials_done || d.phase !== prev.phase) trialsChanged(v);
  }

  function showEta(v) {
    const e = v.eta || {};
    const job = v.job || {};
    let text = "—";
    if (TERMINAL.has(job.status)) text = job.status === "SUCCEEDED" ? "done" : "—";
    else if (e.done) text = "trials done; finishing";
    else if (e.remaining !== null && e.remaining !== undefined) {
      const left = e.remaining - Math.max(0, (Date.now() - e.at) / 1000);
      text = left > 1 ? `about ${fmt.duration(left)}` : "any moment";
    } else if (ACTIVE.has(job.status)) text = "estimating…";
    $("eta").textContent = text;
  }

  function tickEta(v) {
    const t = setInterval(() => showEta(v), 1000);
    v.signal.addEventListener("abort", () => clearInterval(t), { once: true });
  }

  async function finish(v, job) {
    if (v.signal.aborted) return;
    if (job.status === "DELETED") {
      flash("This job was deleted.", "bad");
      return;
    }
    renderJob(v, job);
    try {
      await refreshTrials(v);
      await refreshArtifacts(v);
    } catch (err) {
      handle(err);
    }
  }

  // ------------------------------------------------------------------ actions

  async function cancelJob() {
    const v = view;
    if (!v || v.kind !== "job" || !confirm(`Cancel job ${v.id}?`)) return;
    try {
      const job = await getJSON(`/jobs/${v.id}/cancel`, { method: "POST" });
      renderJob(v, job);
      flash("Cancellation requested; the job stops within seconds.", "ok");
    } catch (err) {
      handle(err);
    }
  }

  async function deleteJob() {
    const v = view;
    if (!v || v.kind !== "job" || !confirm(`Delete job ${v.id} and its files?`)) return;
    try {
      const r = await api(`/jobs/${v.id}`, { method: "DELETE" });
      if (!r.ok) throw await failure(r);
      pending = [`Deleted job ${v.id}.`, "ok"];
      location.hash = "#/";
    } catch (err) {
      handle(err);
    }
  }

  function init() {
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = $("token").value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      $("token").value = "";
      route();
    });
    $("signout").addEventListener("click", () => {
      // a fresh page: nothing the previous token could read stays in the DOM
      sessionStorage.removeItem(TOKEN_KEY);
      stopView();
      location.replace("/ui");
    });
    $("cancel").addEventListener("click", cancelJob);
    $("delete").addEventListener("click", deleteJob);
    window.addEventListener("hashchange", route);
    route();
  }

  init();
})();
