/* resnet-service dashboard: a few pages over the JSON API, in plain JavaScript.
 *
 * The pages are static shells; everything shown comes from /v1 with the API key the user typed
 * in, kept in sessionStorage (gone when the tab closes) and sent as a Bearer token. Text from
 * the API is only ever set with textContent, never parsed as HTML.
 */
"use strict";

(() => {
  const KEY = "resnet.apiKey";
  const app = document.getElementById("app");
  const FIGURES = [
    ["curves", "Training and validation curves"],
    ["plain_vs_residual", "Plain against residual: training error (paper's Figure 6)"],
    ["error_vs_depth", "Test error against depth, beside the paper's"],
    ["training_time_vs_depth", "Training time against depth (Figure 1)"],
    ["confusion", "Confusion matrices"],
    ["throughput", "Images per second per architecture"],
  ];
  const timers = [];

  // --- the API -------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  const apiKey = () => sessionStorage.getItem(KEY);

  function toLogin() {
    const next = location.pathname + location.search;
    location.assign(`/dashboard/login?next=${encodeURIComponent(next)}`);
  }

  async function request(path, { method = "GET", body, signal } = {}) {
    const headers = { Authorization: `Bearer ${apiKey()}` };
    let payload = body;
    if (body !== undefined && !(body instanceof FormData)) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const response = await fetch(path, { method, headers, body: payload, signal });
    if (response.status === 401) {
      sessionStorage.removeItem(KEY);
      toLogin();
      throw new ApiError(401, "The API key is not valid any more");
    }
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try {
        const error = (await response.json()).error;
        if (error && error.message) message = error.message;
      } catch (_) { /* not the JSON error shape */ }
      throw new ApiError(response.status, message);
    }
    return response;
  }

  const getJson = async (path) => (await request(path)).json();

  async function download(path, filename) {
    const blob = await (await request(path)).blob();
    const url = URL.createObjectURL(blob);
    const a = el("a", { href: url, download: filename });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  // --- DOM helpers ---------------------------------------------------------------------------

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "class") node.className = value;
      else if (name === "style") node.style.cssText = value; // CSSOM: allowed by the CSP
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const fmt = {
    pct: (v) => (v === null || v === undefined ? "—" : `${Number(v).toFixed(2)}`),
    num: (v, digits = 4) => (v === null || v === undefined ? "—" : Number(v).toFixed(digits)),
    int: (v) => (v === null || v === undefined ? "—" : Math.round(v).toLocaleString()),
    secs(v) {
      if (v === null || v === undefined) return "—";
      if (v < 60) return `${v.toFixed(1)} s`;
      const h = Math.floor(v / 3600);
      const m = Math.floor((v % 3600) / 60);
      const s = Math.round(v % 60);
      return h ? `${h} h ${m} min` : `${m} min ${s} s`;
    },
    time: (v) => (v ? new Date(v).toLocaleString() : "—"),
    short: (id) => (id ? id.slice(0, 8) : ""),
  };

  const badge = (status) => el("span", { class: `badge ${status || ""}` }, status || "deleted");

  function stat(label, value, id) {
    return el("div", { class: "stat" },
      el("div", { class: "label" }, label),
      el("div", { class: "value", id }, value));
  }

  function table(columns, rows, attrs = {}) {
    return el("div", { class: "scroll" }, el("table", attrs,
      el("thead", {}, el("tr", {}, columns.map((c) => el("th", { class: c.num ? "num" : "" }, c.title)))),
      el("tbody", {}, rows.map((row) => el("tr", { "data-id": row.id },
        columns.map((c) => el("td", { class: c.num ? "num" : "" }, c.cell(row))))))));
  }

  function every(ms, fn) {
    const id = setInterval(() => { if (!document.hidden) fn(); }, ms);
    timers.push(id);
  }

  function showError(where, error) {
    where.replaceChildren(el("p", { class: "error" }, String(error.message || error)));
  }

  // --- charts: inline SVG, drawn from the epoch rows -----------------------------------------

  const SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function ticks(min, max, count = 5) {
    const span = max - min || 1;
    const raw = span / count;
    const step = 10 ** Math.floor(Math.log10(raw));
    const nice = [1, 2, 5, 10].map((m) => m * step).find((s) => span / s <= count) || raw;
    const out = [];
    for (let v = Math.ceil(min / nice) * nice; v <= max + 1e-9; v += nice) out.push(v);
    return out;
  }

  /** A line chart: series = [{name, color, dashed, points: [[x, y], ...]}]. */
  function lineChart(title, series, { yLabel = "", xLabel = "epoch" } = {}) {
    const W = 560, H = 260, L = 52, R = 14, T = 26, B = 36;
    const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": title, "data-chart": title });
    root.append(svg("text", { x: L, y: 16, "font-weight": 600 }, title));
    const points = series.flatMap((s) => s.points);
    if (!points.length) {
      root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no epochs yet"));
      return root;
    }
    const xs = points.map((p) => p[0]);
    const ys = points.map((p) => p[1]);
    const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
    let y0 = Math.min(...ys), y1 = Math.max(...ys);
    const pad = (y1 - y0) * 0.08 || Math.abs(y1) * 0.1 || 0.1;
    y0 -= pad; y1 += pad;
    const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
    for (const t of ticks(y0, y1)) {
      root.append(svg("line", { class: "gridline", x1: L, x2: W - R, y1: sy(t), y2: sy(t) }));
      root.append(svg("text", { x: L - 6, y: sy(t) + 4, "text-anchor": "end" },
        Math.abs(t) >= 100 ? t.toFixed(0) : Number(t.toPrecision(3)).toString()));
    }
    for (const t of ticks(x0, x1, 8).filter((v) => Number.isInteger(v))) {
      root.append(svg("text", { x: sx(t), y: H - B + 16, "text-anchor": "middle" }, t));
    }
    root.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
    root.append(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
    root.append(svg("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, xLabel));
    root.append(svg("text", { x: 12, y: (T + H - B) / 2, "text-anchor": "middle",
      transform: `rotate(-90 12 ${(T + H - B) / 2})` }, yLabel));
    series.forEach((s, i) => {
      if (!s.points.length) return;
      const d = s.points.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
      const g = svg("g", { "data-series": s.name, "data-points": s.points.length });
      g.append(svg("path", { d, fill: "none", stroke: s.color, "stroke-width": 2,
        "stroke-dasharray": s.dashed ? "6 4" : "none" }));
      if (s.points.length <= 80) {
        for (const p of s.points) g.append(svg("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: s.color }));
      }
      root.append(g);
      const ly = T + 4 + i * 14;
      root.append(svg("line", { x1: W - R - 120, x2: W - R - 100, y1: ly, y2: ly, stroke: s.color,
        "stroke-width": 2, "stroke-dasharray": s.dashed ? "6 4" : "none" }));
      root.append(svg("text", { x: W - R - 96, y: ly + 4 }, s.name));
    });
    return root;
  }

  function curveCharts(epochs) {
    const series = (key, name, color, dashed) => ({
      name, color, dashed,
      points: epochs.filter((e) => e[key] !== null && e[key] !== undefined).map((e) => [e.epoch, e[key]]),
    });
    return [
      lineChart("Loss", [series("loss", "train", "#2f6fdf"), series("val_loss", "validation", "#e8590c", true)],
        { yLabel: "loss" }),
      lineChart("Accuracy", [series("accuracy", "train", "#2f6fdf"),
        series("val_accuracy", "validation", "#e8590c", true)], { yLabel: "accuracy" }),
    ];
  }

  // --- server-sent events over fetch (EventSource cannot send the Authorization header) -------

  async function followEvents(path, onEvent, signal) {
    const response = await request(path, { signal });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).trim());
        }
        if (data.length) onEvent(name, JSON.parse(data.join("\n")));
      }
    }
  }

  // --- pages ---------------------------------------------------------------------------------

  function loginPage() {
    const params = new URLSearchParams(location.search);
    const message = el("p", { class: "error", id: "login-error" });
    const input = el("input", { type: "password", id: "api-key", name: "key", autocomplete: "off",
      placeholder: "rsk_…", required: true });
    const form = el("form", { class: "card login", id: "login-form" },
      el("h1", {}, "Log in"),
      el("p", { class: "muted" }, "Paste an API key with the read scope (create one with ",
        el("code", {}, "python -m service.keys create NAME --scope read"), "). It is kept in this tab only."),
      el("label", {}, "API key", input),
      el("p", {}, el("button", { class: "primary", type: "submit" }, "Log in")),
      message);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const key = input.value.trim();
      const response = await fetch("/v1/runs?limit=1", { headers: { Authorization: `Bearer ${key}` } });
      if (response.status === 401) { message.textContent = "That key is not valid."; return; }
      if (response.status === 403) { message.textContent = "That key lacks the read scope."; return; }
      sessionStorage.setItem(KEY, key);
      const next = params.get("next");
      location.assign(next && next.startsWith("/dashboard") && !next.startsWith("/dashboard/login")
        ? next : "/dashboard/runs");
    });
    app.replaceChildren(form);
    input.focus();
  }

  async function runsPage() {
    const params = new URLSearchParams(location.search);
    const status = el("select", { id: "filter-status", name: "status" },
      ["", "queued", "running", "paused", "succeeded", "failed", "cancelled"].map((s) =>
        el("option", { value: s, selected: params.get("status") === s }, s || "any")));
    const architecture = el("input", { id: "filter-architecture", name: "architecture",
      placeholder: "resnet20", value: params.get("architecture") || "" });
    const dataset = el("input", { id: "filter-dataset", name: "dataset", placeholder: "name or KIND:PATH",
      value: params.get("dataset") || "" });
    const list = el("div", { id: "runs" });
    const pager = el("div", { class: "actions" });
    let offset = Number(params.get("offset") || 0);
    const limit = 25;
    const apply = () => {
      offset = 0;
      load();
    };
    for (const input of [status, architecture, dataset]) input.addEventListener("change", apply);
    app.replaceChildren(el("h1", {}, "Runs"),
      el("div", { class: "filters" }, el("label", {}, "Status", status),
        el("label", {}, "Architecture", architecture), el("label", {}, "Dataset", dataset)),
      list, pager);

    async function load() {
      const query = new URLSearchParams({ limit, offset });
      if (status.value) query.set("status", status.value);
      if (architecture.value.trim()) query.set("architecture", architecture.value.trim());
      if (dataset.value.trim()) query.set("dataset", dataset.value.trim());
      const shown = new URLSearchParams(query);
      shown.delete("limit");
      if (!offset) shown.delete("offset");
      history.replaceState(null, "", `/dashboard/runs${shown.toString() ? "?" + shown : ""}`);
      let page;
      try {
        page = await getJson(`/v1/runs?${query}`);
      } catch (error) {
        showError(list, error);
        return;
      }
      list.replaceChildren(page.items.length ? table([
        { title: "Run", cell: (r) => el("a", { href: `/dashboard/runs/${r.id}` }, fmt.short(r.id)) },
        { title: "Architecture", cell: (r) => r.architecture },
        { title: "Dataset", cell: (r) => r.dataset },
        { title: "Status", cell: (r) => badge(r.status) },
        { title: "Epochs", num: true, cell: (r) => `${r.epochs_completed}/${r.epochs_planned ?? "?"}` },
        { title: "Progress", cell: (r) => progressBar(r) },
        { title: "Test accuracy (%)", num: true,
          cell: (r) => fmt.pct(r.metrics && r.metrics.accuracy !== undefined ? 100 * r.metrics.accuracy : null) },
        { title: "Created", cell: (r) => fmt.time(r.created_at) },
      ], page.items, { id: "runs-table" }) : el("p", { class: "muted" }, "No runs match."));
      pager.replaceChildren(
        el("span", { class: "muted" }, `${page.total} runs`),
        el("button", { disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - limit); load(); } }, "Newer"),
        el("button", { disabled: offset + limit >= page.total, onclick: () => { offset += limit; load(); } }, "Older"));
    }
    await load();
    every(3000, load);
  }

  function progressBar(run) {
    const planned = run.epochs_planned || (run.progress && run.progress.epochs);
    let fraction = planned ? run.epochs_completed / planned : 0;
    if (run.status === "running" && run.progress && planned && run.progress.epoch) {
      fraction = (run.progress.epoch - 1 + (run.progress.fraction || 0)) / planned;
    }
    if (run.status === "succeeded") fraction = 1;
    return el("div", { class: "progress", title: `${Math.round(100 * fraction)}%` },
      el("div", { style: `width:${Math.max(0, Math.min(100, 100 * fraction)).toFixed(1)}%` }));
  }

  async function runPage(runId) {
    let run;
    try {
      run = await getJson(`/v1/runs/${encodeURIComponent(runId)}`);
    } catch (error) {
      showError(app, error);
      return;
    }
    const epochs = [];
    const status = el("span", { id: "run-status" }, badge(run.status));
    const behind = el("span", { id: "behind" });
    const charts = el("div", { class: "charts", id: "live-charts", "data-epochs": 0 });
    const epochsTable = el("div", { id: "epochs" });
    const metrics = el("div", { id: "metrics" });
    const evaluations = el("div", { id: "evaluations" });
    const bar = el("div", { class: "progress", id: "run-progress" }, el("div", { style: "width:0%" }));
    const cancel = el("button", { class: "danger", id: "cancel-run", hidden: !["queued", "running", "paused"].includes(run.status),
      onclick: async () => { await request(`/v1/runs/${run.id}/cancel`, { method: "POST" }); } }, "Cancel");
    app.replaceChildren(
      el("h1", {}, `${run.architecture} `, el("span", { class: "muted" }, fmt.short(run.id)), " ", status, " ", behind),
      el("div", { class: "actions" },
        el("button", { id: "bundle", onclick: () => download(`/v1/runs/${run.id}/bundle`, `run-${run.id}.zip`) },
          "Download reproducibility bundle"),
        cancel),
      el("div", { class: "card" },
        el("div", { class: "grid" },
          stat("Dataset", run.dataset),
          stat("Epoch", `${run.epochs_completed}/${run.epochs_planned ?? "?"}`, "stat-epoch"),
          stat("ETA", "—", "stat-eta"),
          stat("Images/s", "—", "stat-speed"),
          stat("Started", fmt.time(run.started_at))),
        el("p", {}, bar),
        el("p", { class: "error", id: "run-error" }, run.error || "")),
      el("h2", {}, "Training curves (live)"), charts,
      el("h2", {}, "Test metrics"), metrics,
      el("h2", {}, "Evaluations and batch predictions"), evaluations,
      el("h2", {}, "Epochs"), epochsTable,
      el("h2", {}, "Config"), el("pre", { class: "card" }, JSON.stringify(run.config, null, 2)));

    function drawEpochs() {
      charts.replaceChildren(...curveCharts(epochs));
      charts.setAttribute("data-epochs", epochs.length);
      epochsTable.replaceChildren(table([
        { title: "Epoch", num: true, cell: (e) => e.epoch },
        { title: "Loss", num: true, cell: (e) => fmt.num(e.loss) },
        { title: "Accuracy", num: true, cell: (e) => fmt.num(e.accuracy) },
        { title: "Val loss", num: true, cell: (e) => fmt.num(e.val_loss) },
        { title: "Val accuracy", num: true, cell: (e) => fmt.num(e.val_accuracy) },
        { title: "LR", num: true, cell: (e) => fmt.num(e.learning_rate, 5) },
        { title: "Seconds", num: true, cell: (e) => fmt.num(e.seconds, 1) },
        { title: "Images/s", num: true, cell: (e) => fmt.int(e.images_per_second) },
      ], epochs));
    }

    function drawMetrics(current) {
      const m = current.metrics;
      if (!m) { metrics.replaceChildren(el("p", { class: "muted" }, "Not evaluated yet.")); return; }
      const rows = [["accuracy", "Accuracy"], ["precision_macro", "Precision (macro)"],
        ["recall_macro", "Recall (macro)"], ["f1_macro", "F1 (macro)"], ["top5_accuracy", "Top-5 accuracy"],
        ["mAP", "mAP"], ["loss", "Loss"], ["train_seconds", "Training time"]].filter(([k]) => m[k] !== undefined && m[k] !== null);
      metrics.replaceChildren(el("div", { class: "card grid" }, rows.map(([k, label]) =>
        stat(label, k === "train_seconds" ? fmt.secs(m[k]) : k === "loss" ? fmt.num(m[k]) : `${fmt.pct(100 * m[k])} %`))));
    }

    function onProgress(p) {
      status.replaceChildren(badge(p.status));
      document.getElementById("stat-epoch").textContent = `${p.epochs_completed}/${p.epochs_planned ?? "?"}`;
      document.getElementById("stat-eta").textContent = p.eta_seconds !== null && p.eta_seconds !== undefined ? fmt.secs(p.eta_seconds) : "—";
      document.getElementById("stat-speed").textContent = fmt.int(p.images_per_second);
      bar.firstChild.style.width = `${(100 * (p.fraction || 0)).toFixed(1)}%`;
      cancel.hidden = !["queued", "running", "paused"].includes(p.status);
      if (p.error) document.getElementById("run-error").textContent = p.error;
      behind.replaceChildren(p.behind && p.behind.behind
        ? el("span", { class: "badge behind", title: p.behind.reasons.join("; "), id: "behind-flag" },
          `behind the curve (${p.behind.twins.length} twin${p.behind.twins.length === 1 ? "" : "s"})`)
        : "");
    }

    function onEpoch(row) {
      const i = epochs.findIndex((e) => e.epoch === row.epoch);
      if (i >= 0) epochs[i] = row; else epochs.push(row);
      epochs.sort((a, b) => a.epoch - b.epoch);
      drawEpochs();
    }

    async function drawEvaluations() {
      let items;
      try {
        items = (await getJson(`/v1/runs/${run.id}/evaluations`)).items;
      } catch (error) {
        showError(evaluations, error);
        return;
      }
      if (!items.length) {
        evaluations.replaceChildren(el("p", { class: "muted" }, "None yet."));
        return;
      }
      const predictions = (e) => `/v1/runs/${run.id}/evaluations/${e.id}/predictions`;
      evaluations.replaceChildren(table([
        { title: "Split", cell: (e) => e.split },
        { title: "Data", cell: (e) => e.dataset || "the run's own" },
        { title: "Status", cell: (e) => badge(e.status) },
        { title: "Accuracy (%)", num: true, cell: (e) => (e.accuracy === null ? "—" : fmt.pct(100 * e.accuracy)) },
        { title: "F1 macro (%)", num: true, cell: (e) => (e.f1_macro === null ? "—" : fmt.pct(100 * e.f1_macro)) },
        { title: "Images", num: true, cell: (e) => fmt.int(e.predictions_count) },
        { title: "Predictions", cell: (e) => (e.predictions_count
          ? el("span", {},
            el("button", { class: "download", "data-format": "csv",
              onclick: () => download(`${predictions(e)}?format=csv`, `predictions-${e.id}.csv`) }, "CSV"), " ",
            el("button", { class: "download", "data-format": "npz",
              onclick: () => download(`${predictions(e)}?format=npz`, `predictions-${e.id}.npz`) }, ".npz"))
          : "—") },
        { title: "Finished", cell: (e) => fmt.time(e.finished_at) },
      ], items, { id: "evaluations-table" }));
    }

    drawEpochs();
    drawMetrics(run);
    drawEvaluations();
    every(5000, drawEvaluations);
    const done = async () => {
      run = await getJson(`/v1/runs/${run.id}`);
      drawMetrics(run);
    };
    const controller = new AbortController();
    window.addEventListener("pagehide", () => controller.abort());
    try {
      await followEvents(`/v1/runs/${run.id}/events?interval=0.5`, (name, data) => {
        if (name === "epoch") onEpoch(data);
        else if (name === "progress") onProgress(data);
        else if (name === "end") done();
      }, controller.signal);
    } catch (error) {
      if (error.name === "AbortError") return;
      // No streaming here (a proxy buffering it?): poll the same state instead.
      every(1500, async () => {
        const state = await getJson(`/v1/runs/${run.id}/live`);
        state.epochs.forEach(onEpoch);
        onProgress(state);
      });
    }
  }

  async function experimentsPage() {
    const list = el("div", { id: "experiments" });
    app.replaceChildren(el("h1", {}, "Experiments"), list);
    const load = async () => {
      const page = await getJson("/v1/experiments?limit=100");
      list.replaceChildren(page.items.length ? table([
        { title: "Experiment", cell: (x) => el("a", { href: `/dashboard/experiments/${x.id}` }, x.name) },
        { title: "Kind", cell: (x) => x.kind },
        { title: "Status", cell: (x) => badge(x.status) },
        { title: "Runs", num: true, cell: (x) => x.runs },
        { title: "By status", cell: (x) => Object.entries(x.counts).map(([k, v]) => `${k} ${v}`).join(", ") },
        { title: "Created", cell: (x) => fmt.time(x.created_at) },
      ], page.items, { id: "experiments-table" }) : el("p", { class: "muted" },
        "No experiments yet: POST /v1/experiments with a grid or a random search."));
    };
    try { await load(); } catch (error) { showError(list, error); return; }
    every(5000, load);
  }

  function reportTable(report) {
    const columns = report.columns.map((c) => ({
      title: c.title + (c.unit ? ` (${c.unit})` : ""),
      num: Boolean(c.unit),
      cell(row) {
        const v = row[c.key];
        // as published: "6.43 (best of 5; …)", the seed study's flags, its printed training time
        if (row[`${c.key}_text`]) return row[`${c.key}_text`];
        if (c.key === "run_id") return v ? el("a", { href: `/dashboard/runs/${v}` }, fmt.short(v)) : "";
        if (v === null || v === undefined) return "—";
        const std = row[`${c.key}_std`];
        if (c.unit === "s") return fmt.secs(v) + (std ? ` ± ${fmt.secs(std)}` : "");
        if (typeof v === "number") return v.toFixed(2) + (std !== undefined && std !== null ? ` ± ${std.toFixed(2)}` : "");
        return String(v);
      },
    }));
    return el("div", {},
      table(columns, report.rows, { id: "report-table" }),
      el("ol", { class: "muted" }, report.notes.map((n) => el("li", {}, n))));
  }

  async function figure(kind, caption, query) {
    const holder = el("figure", { "data-figure": kind }, el("figcaption", {}, caption));
    try {
      const blob = await (await request(`/v1/figures/${kind}.png?${query}`)).blob();
      holder.prepend(el("img", { src: URL.createObjectURL(blob), alt: caption }));
    } catch (error) {
      if (error.status !== 422) throw error;
      holder.append(el("p", { class: "muted" }, `Not available yet: ${error.message}`));
      holder.dataset.missing = "true";
    }
    return holder;
  }

  // " · ASHA, rungs at epochs 1, 3, 9, η 3, 4 at once": an adaptive search's rule in words.
  function rule(r) {
    if (!r) return "";
    if (r.rule === "asha") return ` · ASHA by ${r.metric}, rungs at epochs ${r.rungs.join(", ")}, η ${r.reduction_factor}, ${r.max_concurrent} at once`;
    return ` · median stopping by ${r.metric} from epoch ${r.grace_period}, ${r.max_concurrent} at once`;
  }

  async function experimentPage(experimentId) {
    let experiment;
    try {
      experiment = await getJson(`/v1/experiments/${encodeURIComponent(experimentId)}`);
    } catch (error) {
      showError(app, error);
      return;
    }
    const query = `experiment=${experiment.id}`;
    const header = el("div");
    const cells = el("div", { id: "cells" });
    const aggregate = el("div", { id: "aggregate" });
    const report = el("div", { id: "report" });
    const figures = el("div", { class: "figures", id: "figures" });
    app.replaceChildren(header,
      el("div", { class: "actions" },
        el("button", { id: "download-md", onclick: () => download(`/v1/reports/table1?${query}&format=md`, "table1.md") }, "Table 1 (Markdown)"),
        el("button", { id: "download-csv", onclick: () => download(`/v1/reports/table1?${query}&format=csv`, "table1.csv") }, "Table 1 (CSV)"),
        el("button", { id: "download-bundle", onclick: () => download(`/v1/experiments/${experiment.id}/bundle`, `experiment-${experiment.id}.zip`) }, "Reproducibility bundle"),
        el("button", { class: "danger", id: "cancel-experiment", onclick: async () => {
          await request(`/v1/experiments/${experiment.id}/cancel`, { method: "POST" });
          refresh(true);
        } }, "Cancel the rest")),
      el("h2", {}, "Table 1"), report,
      el("h2", {}, "Mean ± std over seeds"), aggregate,
      el("h2", {}, "Figures"), figures,
      el("h2", {}, "Cells"), cells);

    let shown = "";
    async function refresh(force = false) {
      experiment = await getJson(`/v1/experiments/${experiment.id}`);
      document.getElementById("cancel-experiment").hidden =
        experiment.status !== "queued" && experiment.status !== "running";
      header.replaceChildren(el("h1", {}, `${experiment.name} `, badge(experiment.status)),
        el("p", { class: "muted" }, `${experiment.kind}${rule(experiment.spec.early_stopping)} · ${experiment.cells.length} runs · `,
          Object.entries(experiment.counts).map(([k, v]) => `${k} ${v}`).join(", ")));
      cells.replaceChildren(table([
        { title: "Run", cell: (c) => el("a", { href: `/dashboard/runs/${c.run_id}` }, fmt.short(c.run_id)) },
        { title: "Architecture", cell: (c) => c.architecture },
        { title: "Seed", num: true, cell: (c) => c.seed },
        { title: "Hyperparameters", cell: (c) => Object.entries(c.params).map(([k, v]) => `${k}=${v}`).join(", ") || "—" },
        { title: "Status", cell: (c) => badge(c.status) },
        { title: "Epochs", num: true, cell: (c) => `${c.epochs_completed ?? "—"}/${c.epochs_planned ?? "?"}` },
        { title: "Accuracy (%)", num: true, cell: (c) => fmt.pct(c.accuracy) },
        { title: "Training time", num: true, cell: (c) => fmt.secs(c.training_time) },
        // Adaptive searches (ASHA, median stopping): the last rung reported and why a trial stopped.
        ...(experiment.spec.early_stopping ? [
          { title: "Rung", num: true, cell: (c) => c.rung === null ? "—" : `${c.rung} (${c.rungs[c.rungs.length - 1].decision})` },
          { title: "Why it stopped", cell: (c) => c.stopped_early ? badge("stopped early") :
              (["failed", "cancelled"].includes(c.status) ? (c.stop_reason || c.status) : "—") },
          { title: "Reason", cell: (c) => el("span", { class: "muted reason" }, c.stop_reason || (c.rungs.length ? c.rungs[c.rungs.length - 1].reason : "") || "") },
        ] : []),
      ], experiment.cells, { id: "cells-table" }));
      aggregate.replaceChildren(table([
        { title: "Architecture", cell: (g) => g.architecture },
        { title: "Hyperparameters", cell: (g) => Object.entries(g.params).map(([k, v]) => `${k}=${v}`).join(", ") || "—" },
        { title: "Succeeded", num: true, cell: (g) => `${g.succeeded}/${g.runs}` },
        { title: "Accuracy (%)", num: true, cell: (g) => g.accuracy === null ? "—" : `${g.accuracy.toFixed(2)} ± ${g.accuracy_std.toFixed(2)}` },
        { title: "Error (%)", num: true, cell: (g) => g.error === null ? "—" : `${g.error.toFixed(2)} ± ${g.error_std.toFixed(2)}` },
        { title: "Training time", num: true, cell: (g) => g.training_time === null ? "—" : `${fmt.secs(g.training_time)} ± ${fmt.secs(g.training_time_std)}` },
      ], experiment.aggregate));
      const key = JSON.stringify(experiment.counts);
      if (force || key !== shown) {
        shown = key;
        report.replaceChildren(reportTable(await getJson(`/v1/reports/table1?${query}&format=json`)));
        const drawn = await Promise.all(FIGURES.map(([kind, caption]) => figure(kind, caption, query)));
        figures.replaceChildren(...drawn);
      }
    }
    try { await refresh(true); } catch (error) { showError(app, error); return; }
    every(3000, () => { if (experiment.status === "queued" || experiment.status === "running") refresh(); });
  }

  async function modelsPage() {
    const list = el("div", { id: "models" });
    const choose = el("select", { id: "predict-model", name: "model", required: true });
    const file = el("input", { type: "file", id: "predict-file", name: "file", accept: "image/*", required: true });
    const topK = el("input", { type: "number", id: "predict-top-k", name: "top_k", min: 1, max: 100, value: 3 });
    const preview = el("div", { id: "predict-preview" });
    const result = el("div", { id: "predict-result" });
    const form = el("form", { class: "card", id: "predict-form" },
      el("div", { class: "filters" },
        el("label", {}, "Model", choose), el("label", {}, "Image", file), el("label", {}, "Top k", topK),
        el("button", { class: "primary", type: "submit" }, "Predict")),
      preview, result);
    const batchModel = el("select", { id: "batch-model", name: "model", required: true });
    const batchData = el("select", { id: "batch-dataset", name: "dataset", required: true });
    const batchSplit = el("select", { id: "batch-split", name: "split" },
      ["test", "train", "val"].map((v) => el("option", { value: v }, v)));
    const batchResult = el("div", { id: "batch-result" });
    const batchForm = el("form", { class: "card", id: "batch-form" },
      el("div", { class: "filters" },
        el("label", {}, "Model", batchModel), el("label", {}, "Dataset", batchData),
        el("label", {}, "Split", batchSplit),
        el("button", { class: "primary", type: "submit" }, "Queue")),
      el("p", { class: "muted" }, "A worker predicts every image; the predictions and metrics appear on the model's run page. " +
        "An unlabelled dataset (kind images) has no splits and no metrics: its predictions are listed here, file by file."),
      batchResult);
    app.replaceChildren(el("h1", {}, "Models"), list, el("h2", {}, "Predict an image"), form,
      el("h2", {}, "Predict a whole dataset"), batchForm);
    const unlabelled = () => batchData.selectedOptions.length > 0 && batchData.selectedOptions[0].dataset.kind === "images";
    batchData.addEventListener("change", () => { batchSplit.disabled = unlabelled(); });
    batchForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!batchModel.value || !batchData.value) return;
      const images = unlabelled();
      // Unlabelled images have no splits: the API refuses one (422 on body.split).
      const body = images ? { dataset: batchData.value } : { dataset: batchData.value, split: batchSplit.value };
      try {
        const job = await (await request(`/v1/models/${encodeURIComponent(batchModel.value)}/batch-predictions`,
          { method: "POST", body })).json();
        batchResult.replaceChildren(el("p", {}, "Queued: ",
          el("a", { href: `/dashboard/runs/${job.run_id}`, id: "batch-run" }, `run ${fmt.short(job.run_id)}`),
          ` — evaluation ${fmt.short(job.id)}, ` + (images ? "every file of the folder." : `${job.split} split.`)));
        if (images) followUnlabelled(job, batchResult);
      } catch (error) {
        showError(batchResult, error);
      }
    });
    file.addEventListener("change", () => {
      preview.replaceChildren(file.files.length
        ? el("img", { src: URL.createObjectURL(file.files[0]), alt: "the image", style: "max-height:160px" }) : "");
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!file.files.length || !choose.value) return;
      const body = new FormData();
      body.append("file", file.files[0], file.files[0].name);
      result.replaceChildren(el("p", { class: "muted" }, "Predicting…"));
      try {
        const answer = await (await request(
          `/v1/models/${encodeURIComponent(choose.value)}/predict?top_k=${Number(topK.value) || 3}`,
          { method: "POST", body })).json();
        result.replaceChildren(...answer.predictions.map((p) => el("div", { class: "prediction" },
          el("p", {}, el("strong", {}, p.name || "image"), ` — model ${answer.model.name ?? answer.model.run_id}` +
            (answer.model.version ? ` v${answer.model.version}` : "")),
          table([
            { title: "Label", cell: (l) => l.label },
            { title: "Probability", num: true, cell: (l) => l.probability.toFixed(4) },
            { title: "", cell: (l) => el("div", { class: "bar", style: `width:${(200 * l.probability).toFixed(0)}px` }) },
          ], p.labels, { class: "labels" }))));
      } catch (error) {
        showError(result, error);
      }
    });
    let models;
    try {
      models = (await getJson("/v1/models")).items;
    } catch (error) {
      showError(list, error);
      return;
    }
    list.replaceChildren(models.length ? table([
      { title: "Model", cell: (m) => m.name ?? m.run_id },
      { title: "Version", num: true, cell: (m) => m.version ?? "—" },
      { title: "Run", cell: (m) => el("a", { href: `/dashboard/runs/${m.run_id}` }, fmt.short(m.run_id)) },
      { title: "Architecture", cell: (m) => m.architecture },
      { title: "Dataset", cell: (m) => m.dataset },
      { title: "Classes", num: true, cell: (m) => (m.classes ? m.classes.length : "—") },
      { title: "Loaded", cell: (m) => (m.status && m.status.loaded ? "yes" : "no") },
    ], models, { id: "models-table" }) : el("p", { class: "muted" },
      "No models yet: promote a succeeded run with POST /v1/models. A run id also works below."));
    choose.replaceChildren(...models.map((m) => el("option", { value: m.name ?? m.run_id }, m.name ?? m.run_id)));
    batchModel.replaceChildren(...models.map((m) => el("option", { value: m.name ?? m.run_id }, m.name ?? m.run_id)));
    try {
      const datasets = (await getJson("/v1/datasets?limit=200")).items;
      batchData.replaceChildren(...datasets.map((d) => el("option", { value: d.name, "data-kind": d.kind },
        d.kind === "images" ? `${d.name} (unlabelled images)` : d.name)));
      batchSplit.disabled = unlabelled();
    } catch (error) {
      showError(batchResult, error);
    }
  }

  // Poll a batch prediction of unlabelled images; once done, list its first rows by file name
  // (no label column: there is none) with the per-file errors, and offer the CSV and .npz.
  function followUnlabelled(job, where) {
    const base = `/v1/runs/${job.run_id}/evaluations/${job.id}`;
    const status = el("p", { class: "muted", id: "batch-status" }, "Waiting for a worker…");
    const rows = el("div", { id: "batch-predictions" });
    where.append(status, rows);
    const timer = setInterval(async () => {
      let current;
      try {
        current = await getJson(base);
      } catch (error) {
        clearInterval(timer);
        showError(rows, error);
        return;
      }
      status.replaceChildren(badge(current.status));
      if (current.status === "failed") {
        clearInterval(timer);
        rows.replaceChildren(el("p", { class: "error" }, current.error || "failed"));
      }
      if (current.status !== "succeeded") return;
      clearInterval(timer);
      const page = await getJson(`${base}/predictions?limit=50&top_k=1`);
      status.replaceChildren(badge(current.status),
        ` ${fmt.int(page.count)} files, ${fmt.int(page.unreadable)} unreadable` +
        (page.count > page.items.length ? ` (the first ${page.items.length} below; all in the CSV)` : ""), " ",
        el("button", { class: "download", "data-format": "csv",
          onclick: () => download(`${base}/predictions?format=csv`, `predictions-${job.id}.csv`) }, "CSV"), " ",
        el("button", { class: "download", "data-format": "npz",
          onclick: () => download(`${base}/predictions?format=npz`, `predictions-${job.id}.npz`) }, ".npz"));
      rows.replaceChildren(table([
        { title: "File", cell: (r) => r.id },
        { title: "Predicted", cell: (r) => (r.predictions.length ? r.predictions[0].label : "—") },
        { title: "Score", num: true, cell: (r) => (r.predictions.length ? r.predictions[0].score.toFixed(4) : "—") },
        { title: "Error", cell: (r) => (r.error ? el("span", { class: "error" }, r.error) : "") },
      ], page.items, { id: "batch-predictions-table" }));
    }, 1500);
    timers.push(timer);
  }

  // --- routing -------------------------------------------------------------------------------

  function route() {
    const path = location.pathname.replace(/\/+$/, "");
    for (const a of document.querySelectorAll("[data-nav]")) {
      a.classList.toggle("active", path.startsWith(`/dashboard/${a.dataset.nav}`));
    }
    if (path === "/dashboard/login") return loginPage();
    if (!apiKey()) return toLogin();
    const logout = document.getElementById("logout");
    logout.hidden = false;
    logout.addEventListener("click", () => { sessionStorage.removeItem(KEY); location.assign("/dashboard/login"); });
    let m;
    if ((m = path.match(/^\/dashboard\/runs\/([^/]+)$/))) return runPage(decodeURIComponent(m[1]));
    if ((m = path.match(/^\/dashboard\/experiments\/([^/]+)$/))) return experimentPage(decodeURIComponent(m[1]));
    if (path === "/dashboard/experiments") return experimentsPage();
    if (path === "/dashboard/models") return modelsPage();
    return runsPage();
  }

  route();
})();
