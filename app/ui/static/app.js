// The dashboard's only script: reads the JSON API (with the session's API key when one is needed)
// and draws charts as inline SVG. No dependencies, no network beyond this service.
"use strict";

const KEY = "ctrw-api-key";
const POLL_MS = 2000;
const ACTIVE = new Set(["queued", "waiting", "running"]);

// ------------------------------------------------------------------ API access

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = "Bearer " + key;
  const resp = await fetch(path, Object.assign({}, opts, { headers }));
  if (resp.status === 401) {
    // Keys are required: ask once per browser session, then retry with it.
    const entered = window.prompt(key ? "That API key was refused. API key:" : "This service needs an API key:");
    if (entered) {
      sessionStorage.setItem(KEY, entered.trim());
      showAuth();
      return api(path, opts);
    }
  }
  return resp;
}

async function getJSON(path) {
  const resp = await api(path);
  const body = await resp.json().catch(() => null);
  return { ok: resp.ok, status: resp.status, body };
}

function showAuth() {
  const el = document.getElementById("auth-state");
  if (el) el.textContent = sessionStorage.getItem(KEY) ? "API key set for this session" : "";
}

function showError(msg) {
  const el = document.getElementById("error");
  if (!el) return;
  el.hidden = !msg;
  el.textContent = msg || "";
}

// ------------------------------------------------------------------ helpers

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

const pct = (x, digits = 1) => (x === null || x === undefined ? "" : (100 * x).toFixed(digits));
const fmt = (x, digits = 2) => (x === null || x === undefined ? "" : Number(x).toFixed(digits));

function eta(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.round(seconds);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
}

function progressCell(p) {
  if (!p) return "";
  const percent = p.percent === null || p.percent === undefined ? null : p.percent;
  const label = p.phase + (p.epochs ? ` ${p.epoch}/${p.epochs}` : "") + (percent !== null ? ` ${percent.toFixed(0)}%` : "");
  return h("span", {}, h("span", { class: "bar" }, h("span", { style: `width:${percent || 0}%` })), " ", label);
}

const jobLink = (id) => h("a", { href: "/ui/jobs/" + id }, h("code", {}, id.slice(0, 8)));
const statusBadge = (s) => h("span", { class: "status " + s }, s);

// ------------------------------------------------------------------ SVG line charts

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const SVGNS = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

/** A line chart: series = [{name, points: [[x, y]], color?, dash?}]; points with null y are skipped. */
function lineChart({ title, xlabel = "epoch", ylabel = "", series, id }) {
  // Legend entries are laid out first: rows below the plot, as many as the names need.
  const W = 440, L = 62, R = 12, T = 26, PLOT = 172;
  const legend = [];
  let lx = L, row = 0;
  series.forEach((se, i) => {
    const width = 16 + se.name.length * 6.2;
    if (lx > L && lx + width > W - R) { lx = L; row += 1; }
    legend.push({ se, i, x: lx, row });
    lx += width + 10;
  });
  const B = 48 + 15 * (row + 1), H = T + PLOT + B;
  const all = series.flatMap((se) => se.points.filter((p) => p[1] !== null && p[1] !== undefined));
  const svg = s("svg", { class: "chart", width: W, height: H, viewBox: `0 0 ${W} ${H}` });
  if (id) svg.setAttribute("id", id);
  svg.append(s("text", { x: W / 2, y: 16, "text-anchor": "middle", "font-weight": "600" }, title));
  if (!all.length) {
    svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data yet"));
    return svg;
  }
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 -= Math.abs(y0) * 0.1 + 0.01; y1 += Math.abs(y1) * 0.1 + 0.01; }
  const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
  const X = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const Y = (y) => T + (1 - (y - y0) / (y1 - y0)) * PLOT;
  // Tick labels with enough decimals to tell the ticks apart; epochs are whole numbers.
  const ydigits = Math.max(0, Math.ceil(-Math.log10((y1 - y0) / 4)) + 1);
  svg.append(s("line", { x1: L, y1: T + PLOT, x2: W - R, y2: T + PLOT, stroke: "#999" }));
  svg.append(s("line", { x1: L, y1: T, x2: L, y2: T + PLOT, stroke: "#999" }));
  for (let i = 0; i <= 4; i++) {
    const yv = y0 + ((y1 - y0) * i) / 4;
    svg.append(s("text", { x: L - 4, y: Y(yv) + 4, "text-anchor": "end" }, yv.toFixed(ydigits)));
    svg.append(s("line", { x1: L, y1: Y(yv), x2: W - R, y2: Y(yv), stroke: "#f0f0f0" }));
  }
  const xticks = new Set();
  for (let i = 0; i <= 4; i++) xticks.add(Math.round(x0 + ((x1 - x0) * i) / 4));
  for (const xv of xticks) svg.append(s("text", { x: X(xv), y: T + PLOT + 14, "text-anchor": "middle" }, xv));
  svg.append(s("text", { x: (L + W - R) / 2, y: T + PLOT + 28, "text-anchor": "middle" }, xlabel));
  svg.append(s("text", { x: 12, y: T + PLOT / 2, transform: `rotate(-90 12 ${T + PLOT / 2})`, "text-anchor": "middle" }, ylabel));
  for (const { se, i, x, row: r } of legend) {
    const pts = se.points.filter((p) => p[1] !== null && p[1] !== undefined);
    const color = se.color || COLORS[i % COLORS.length];
    if (pts.length) {
      const d = pts.map((p, j) => (j ? "L" : "M") + X(p[0]).toFixed(1) + " " + Y(p[1]).toFixed(1)).join(" ");
      svg.append(s("path", { class: "series", d, fill: "none", stroke: color, "stroke-width": 2,
        "stroke-dasharray": se.dash || "none", "data-name": se.name, "data-points": pts.length }));
      for (const p of pts) svg.append(s("circle", { cx: X(p[0]), cy: Y(p[1]), r: 2.5, fill: color }));
    }
    const ly = T + PLOT + 48 + 15 * r;
    svg.append(s("line", { x1: x, y1: ly - 4, x2: x + 12, y2: ly - 4, stroke: color, "stroke-width": 2, "stroke-dasharray": se.dash || "none" }));
    svg.append(s("text", { x: x + 15, y: ly }, se.name));
  }
  return svg;
}

function epochCharts(runs) {
  // runs = [{label, epochs}] — one for a job page, several overlaid on the compare page.
  const many = runs.length > 1;
  const name = (run, what) => (many ? `${run.label} ${what}` : what);
  const pts = (epochs, key, scale = 1) => epochs.map((e) => [e.epoch, e[key] === null ? null : e[key] * scale]);
  const loss = runs.map((r) => ({ name: name(r, "loss"), points: pts(r.epochs, "train_loss") }));
  const acc = runs.flatMap((r, i) => [
    ["train_clean_acc", "train clean", "4 3"], ["train_adv_acc", "train adv", "2 2"],
    ["val_clean_acc", "val clean", "none"], ["val_pgd_acc", "val PGD", "8 3"],
  ].filter(([key]) => !many || key.startsWith("val"))
    .map(([key, label, dash], j) => ({ name: name(r, label), points: pts(r.epochs, key, 100), dash,
      color: COLORS[(many ? i : j) % COLORS.length] })));
  const sigma = runs.flatMap((r, i) => [
    { name: name(r, "Σσ"), points: pts(r.epochs, "sigma_sum"), color: COLORS[i % COLORS.length] },
    ...(many ? [] : [
      { name: "bound A", points: pts(r.epochs, "bound_lower"), color: "#888", dash: "5 4" },
      { name: "bound B", points: pts(r.epochs, "bound_upper"), color: "#444", dash: "5 4" },
    ]),
  ]);
  return [
    lineChart({ id: "chart-loss", title: "Training loss", ylabel: "loss", series: loss }),
    lineChart({ id: "chart-acc", title: "Accuracy per epoch", ylabel: "accuracy (%)", series: acc }),
    lineChart({ id: "chart-sigma", title: "Σσ per epoch" + (many ? "" : " with bounds A and B"), ylabel: "Σσ", series: sigma }),
  ];
}

function histogram(title, hist) {
  // hist: {edges: [...], counts: [...]} as stored by the worker (tolerates bins/values naming).
  const edges = hist && (hist.edges || hist.bin_edges || hist.bins);
  const counts = hist && (hist.counts || hist.values);
  const W = 300, H = 150, L = 36, B = 24, T = 18;
  const svg = s("svg", { class: "chart hist", width: W, height: H });
  svg.append(s("text", { x: W / 2, y: 13, "text-anchor": "middle" }, title));
  if (!edges || !counts || !counts.length) return svg;
  const max = Math.max(...counts) || 1, bw = (W - L - 8) / counts.length;
  counts.forEach((c, i) => svg.append(s("rect", { class: "bin", x: L + i * bw, y: T + (1 - c / max) * (H - T - B),
    width: Math.max(bw - 1, 1), height: (c / max) * (H - T - B), fill: "#4e79a7" })));
  svg.append(s("text", { x: L, y: H - 6 }, (+edges[0]).toPrecision(2)));
  svg.append(s("text", { x: W - 8, y: H - 6, "text-anchor": "end" }, (+edges[edges.length - 1]).toPrecision(2)));
  return svg;
}

// ------------------------------------------------------------------ tables

function verdictList(diags) {
  if (!diags || !diags.length) return h("p", { class: "muted" }, "no diagnostics ran");
  return h("ul", { class: "diagnostics" }, diags.map((d) => h("li", {},
    h("span", { class: d.fired ? "fired" : "ok" }, d.fired ? "FIRED " : (d.applicable === false ? "n/a " : "fine ")),
    h("strong", {}, d.name + (d.source ? ` (${d.source})` : "")), ": ", d.verdict || "")));
}

function resultsTable(t) {
  // A train/attack job's table: accuracy in %, 95% CI, and the K-draw worst case / majority.
  const head = h("tr", {}, h("th", {}, "model"), h("th", {}, "variant"), h("th", {}, "checkpoint"),
    t.columns.map((c) => h("th", { title: c.params ? JSON.stringify(c.params) : "" }, `${c.name} (${c.protocol})`)));
  const rows = t.rows.map((r) => h("tr", {}, h("td", {}, r.model), h("td", {}, r.variant), h("td", {}, r.checkpoint),
    t.columns.map((c) => {
      const x = r.cells[c.key];
      if (!x) return h("td", {});
      return h("td", { class: "num cell", "data-col": c.key },
        h("strong", {}, pct(x.accuracy)), ` [${pct(x.ci_low)}, ${pct(x.ci_high)}]`, h("br"),
        h("span", { class: "muted" }, `n=${x.n}` + (x.draws ? `, K=${x.draws}` : "") +
          (x.worst_case !== null && x.worst_case !== undefined ? `, worst ${pct(x.worst_case)}` : "") +
          (x.majority !== null && x.majority !== undefined ? `, maj ${pct(x.majority)}` : "")));
    })));
  return h("table", { class: "grid results" }, h("thead", {}, head), h("tbody", {}, rows));
}

function suiteTable(t) {
  // A suite table (percent): ours with CI beside the paper's value.
  const head = h("tr", {}, t.row_keys.map((k) => h("th", {}, k)), t.columns.map((c) => h("th", {}, c.label)));
  const rows = t.rows.map((r) => h("tr", {}, t.row_keys.map((k) => h("td", {}, r.labels[k] || "")),
    t.columns.map((c) => {
      const x = r.cells[c.key];
      if (!x) return h("td", {});
      const ours = x.ours === null || x.ours === undefined ? "—" : fmt(x.ours, 1);
      return h("td", { class: "num cell" }, h("strong", {}, ours),
        x.ci_low !== null && x.ci_low !== undefined ? ` [${fmt(x.ci_low, 1)}, ${fmt(x.ci_high, 1)}]` : "",
        x.flags && x.flags.length ? h("span", { class: "flag", title: x.flags.join(", ") }, " †") : "",
        x.paper !== null && x.paper !== undefined ? h("span", { class: "muted" }, h("br"), `paper ${fmt(x.paper, 1)}`) : "");
    })));
  return h("div", {}, h("h3", {}, t.title), h("table", { class: "grid results" }, h("thead", {}, head), h("tbody", {}, rows)),
    (t.notes || []).map((n) => h("p", { class: "muted" }, n)),
    h("details", {}, h("summary", {}, "diagnostics per row"), verdictList(t.rows.flatMap((r) => r.diagnostics || []))));
}

// ------------------------------------------------------------------ pages

async function jobsPage() {
  const form = document.getElementById("filters");
  const tbody = document.querySelector("#jobs tbody");
  const selected = new Set();
  // Filters live in the URL too (a filtered list is a link); parent_id = one suite's sub-jobs.
  const url = new URLSearchParams(location.search);
  for (const k of ["status", "kind", "text"]) if (url.get(k)) form.elements[k].value = url.get(k);
  const parent = url.get("parent_id");
  if (parent) document.querySelector("h1").textContent = `Jobs of suite ${parent.slice(0, 8)}`;
  async function refresh() {
    const params = new URLSearchParams({ limit: "200" }), shown = new URLSearchParams();
    for (const k of ["status", "kind"]) if (form.elements[k].value) params.set(k, form.elements[k].value);
    if (parent) params.set("parent_id", parent);
    for (const k of ["status", "kind", "text"]) if (form.elements[k].value) shown.set(k, form.elements[k].value);
    if (parent) shown.set("parent_id", parent);
    history.replaceState(null, "", "/ui" + (shown.toString() ? "?" + shown : ""));
    const res = await getJSON("/jobs?" + params);
    if (!res.ok) { showError(`GET /jobs: ${res.status} ${JSON.stringify(res.body)}`); return; }
    showError("");
    const text = form.elements.text.value.trim().toLowerCase();
    const rows = res.body.data.filter((j) => !text ||
      [j.id, j.name, j.model, j.variant, j.suite, j.dataset].some((v) => v && v.toLowerCase().includes(text)));
    tbody.replaceChildren(...rows.map((j) => {
      const box = h("input", { type: "checkbox", value: j.id, checked: selected.has(j.id) });
      box.addEventListener("change", () => (box.checked ? selected.add(j.id) : selected.delete(j.id)));
      return h("tr", { "data-job-id": j.id, "data-status": j.status },
        h("td", {}, box), h("td", {}, jobLink(j.id)), h("td", {}, j.kind), h("td", {}, statusBadge(j.status)),
        h("td", {}, j.name || ""), h("td", {}, j.model || ""), h("td", {}, j.dataset || ""), h("td", {}, j.variant || ""),
        h("td", {}, j.suite || ""), h("td", {}, j.owner || ""), h("td", {}, progressCell(j.progress)),
        h("td", {}, ACTIVE.has(j.status) && j.progress ? eta(j.progress.eta_seconds) : ""),
        h("td", { class: "muted" }, new Date(j.created_at).toLocaleString()));
    }));
    document.getElementById("list-updated").textContent = `${rows.length} shown; updated ${new Date().toLocaleTimeString()}`;
  }
  form.addEventListener("change", refresh);
  form.addEventListener("input", refresh);
  form.addEventListener("submit", (e) => e.preventDefault());
  document.getElementById("compare-selected").addEventListener("click", () => {
    if (selected.size) location.href = "/ui/compare?ids=" + [...selected].join(",");
  });
  await refresh();
  setInterval(refresh, POLL_MS);
}

async function jobPage() {
  const id = document.body.dataset.jobId;
  let done = false;
  async function refresh() {
    const res = await getJSON("/jobs/" + id);
    if (!res.ok) { showError(`GET /jobs/${id}: ${res.status} ${JSON.stringify(res.body)}`); return; }
    showError("");
    const job = res.body;
    done = !ACTIVE.has(job.status);
    document.getElementById("job-status").replaceChildren(statusBadge(job.status));
    const c = job.config || {};
    const head = [h("span", {}, `${job.kind} job`)];
    if (c.name) head.push(h("span", {}, ` · ${c.name}`));
    if (job.kind === "suite") {
      // A suite's config is a SuiteRequest: model is a name, dataset None = the paper's.
      head.push(h("span", {}, ` · ${c.suite}${c.smoke ? " (smoke)" : ""} · ${c.model || ""} · ${c.dataset || "the paper's data"}`));
    } else if (c.model) head.push(h("span", {}, ` · ${c.model.name}${c.model.width ? " (width " + c.model.width + ")" : ""}`));
    if (c.data && job.kind !== "suite") head.push(h("span", {}, ` · ${c.data.dataset}`));
    if (job.train_job_id) head.push(h("span", {}, " · attacks train job "), jobLink(job.train_job_id));
    if (job.parent_id) head.push(h("span", {}, " · part of suite "), jobLink(job.parent_id));
    if (job.error) head.push(h("div", { class: "error" }, job.error));
    document.getElementById("job-head").replaceChildren(...head);
    document.getElementById("progress").replaceChildren(
      job.progress ? h("p", {}, progressCell(job.progress), ACTIVE.has(job.status) && job.progress.eta_seconds !== null
        ? `, ETA ${eta(job.progress.eta_seconds)}` : "", job.progress.detail ? ` — ${job.progress.detail}` : "") : "");
    document.getElementById("config").textContent = JSON.stringify(job.config, null, 2);

    if (job.kind === "train") await trainParts(job);
    if (job.kind === "suite") suiteParts(job);
    await resultParts(job);
    linkParts(job);
  }
  await refresh();
  const timer = setInterval(async () => { if (done) clearInterval(timer); else await refresh(); }, POLL_MS);
}

async function trainParts(job) {
  const ep = await getJSON(`/jobs/${job.id}/epochs`);
  if (ep.ok) {
    const sec = document.getElementById("curves");
    sec.hidden = false;
    sec.querySelector(".charts").replaceChildren(...epochCharts([{ label: job.id.slice(0, 8), epochs: ep.body.data }]));
  }
  const sg = await getJSON(`/jobs/${job.id}/sigma`);
  if (sg.ok && sg.body.layers.length) {
    const sec = document.getElementById("sigma-layers");
    sec.hidden = false;
    sec.querySelector(".layers").replaceChildren(
      h("table", { class: "grid" }, h("thead", {}, h("tr", {}, ["layer", "numel", "Σσ", "min σ", "mean σ", "max σ", "mean μ", "A", "B"].map((x) => h("th", {}, x)))),
        h("tbody", {}, sg.body.layers.map((l) => h("tr", {}, h("td", {}, l.layer), h("td", { class: "num" }, l.numel),
          [l.sigma_sum, l.sigma_min, l.sigma_mean, l.sigma_max, l.mu_mean, l.bound_lower, l.bound_upper]
            .map((v) => h("td", { class: "num" }, v === null ? "" : (+v).toPrecision(4))))))),
      h("div", { class: "charts" }, sg.body.layers.flatMap((l) => [
        histogram(`σ ${l.layer}`, l.hist_sigma), histogram(`μ ${l.layer}`, l.hist_mu)])));
  }
}

function suiteParts(job) {
  if (!job.suite) return;
  const sec = document.getElementById("suite");
  sec.hidden = false;
  const p = job.suite;
  sec.querySelector(".body").replaceChildren(
    h("p", {}, h("span", { class: "bar" }, h("span", { style: `width:${p.percent}%` })),
      ` ${p.done}/${p.total} sub-jobs done — ` + Object.entries(p.counts).map(([k, v]) => `${v} ${k}`).join(", ") + " · ",
      h("a", { href: "/ui?parent_id=" + job.id }, "in the job list"), " · ",
      h("a", { href: "/ui/compare?ids=" + p.sub_jobs.filter((sj) => sj.kind !== "suite").map((sj) => sj.job_id).join(",") }, "compare them")),
    h("table", { class: "grid" }, h("thead", {}, h("tr", {}, ["key", "job", "kind", "status", "worker"].map((x) => h("th", {}, x)))),
      h("tbody", {}, p.sub_jobs.map((sj) => h("tr", {}, h("td", {}, sj.key), h("td", {}, jobLink(sj.job_id)),
        h("td", {}, sj.kind), h("td", {}, statusBadge(sj.status)), h("td", {}, sj.worker || ""))))));
}

async function resultParts(job) {
  if (ACTIVE.has(job.status)) return;
  const res = await getJSON(`/jobs/${job.id}/results`);
  if (!res.ok) return;
  const t = res.body;
  const sec = document.getElementById("results");
  sec.hidden = false;
  if (t.tables) {
    sec.querySelector(".body").replaceChildren(...Object.values(t.tables).map(suiteTable),
      h("p", { class: "muted" }, "scale: " + JSON.stringify(t.scale)),
      t.missing && t.missing.length ? h("p", { class: "error" }, "missing sub-jobs: " + t.missing.join(", ")) : "");
    figureParts(job, t.figures);
  } else {
    sec.querySelector(".body").replaceChildren(resultsTable(t),
      h("p", { class: "muted" }, "accuracy % [95% CI]; K = fresh scoring draws; worst = correct under all K; maj = majority vote"));
    const d = document.getElementById("diagnostics");
    d.hidden = false;
    d.querySelector(".body").replaceChildren(verdictList(t.diagnostics));
    const figs = {};
    for (const name of job.kind === "train" ? ["curves", "sigma", "sigma_hist", "robust"] : ["robust"])
      figs[name] = { png: `/jobs/${job.id}/figures/${name}?format=png`, svg: `/jobs/${job.id}/figures/${name}?format=svg` };
    figureParts(job, figs);
  }
}

async function figureParts(job, figures) {
  if (!figures || !Object.keys(figures).length) return;
  const items = [];
  for (const [name, urls] of Object.entries(figures)) {
    const url = urls.png || Object.values(urls)[0];
    const resp = await api(url);  // with the key; shown as a blob URL, so <img> needs no header
    if (!resp.ok) continue;
    const blob = URL.createObjectURL(await resp.blob());
    items.push(h("figure", {}, h("img", { src: blob, alt: name }), h("figcaption", {}, name, " ",
      Object.entries(urls).map(([f, u]) => h("a", { href: u }, f + " ")))));
  }
  if (!items.length) return;
  const sec = document.getElementById("figures");
  sec.hidden = false;
  sec.querySelector(".body").replaceChildren(h("div", { class: "figs" }, items));
}

function linkParts(job) {
  const links = [];
  if (!ACTIVE.has(job.status)) {
    for (const f of ["json", "csv", "markdown", "latex"]) links.push(h("a", { href: `/jobs/${job.id}/results?format=${f}` }, `results.${f}`));
  }
  if (job.kind === "train" && job.status === "succeeded") links.push(h("a", { href: `/jobs/${job.id}/checkpoint` }, "checkpoint"));
  if (job.kind === "train") links.push(h("a", { href: `/jobs/${job.id}/epochs` }, "epochs.json"), h("a", { href: `/jobs/${job.id}/sigma` }, "sigma.json"));
  links.push(h("a", { href: "/ui/compare?ids=" + job.id }, "compare…"));
  document.querySelector("#links .body").replaceChildren(...links.flatMap((a) => [a, " · "]).slice(0, -1));
}

async function comparePage() {
  const form = document.getElementById("compare-form");
  const ids = (new URLSearchParams(location.search).get("ids") || "").split(",").map((x) => x.trim()).filter(Boolean);
  form.elements.ids.value = ids.join(",");
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    location.search = "?ids=" + form.elements.ids.value.split(/[\s,]+/).filter(Boolean).join(",");
  });
  if (!ids.length) return;
  const runs = [], tables = [];
  for (const id of ids) {
    const job = await getJSON("/jobs/" + id);
    if (!job.ok) { tables.push(h("p", { class: "error" }, `${id}: ${job.status} ${JSON.stringify(job.body)}`)); continue; }
    const j = job.body, c = j.config || {};
    const label = (c.name || (c.model && c.model.name) || j.kind) + " " + id.slice(0, 6);
    const trainId = j.kind === "attack" ? j.train_job_id : j.kind === "train" ? id : null;
    if (trainId) {
      const ep = await getJSON(`/jobs/${trainId}/epochs`);
      if (ep.ok) runs.push({ label, epochs: ep.body.data });
    }
    const res = await getJSON(`/jobs/${id}/results`);
    const body = res.ok ? (res.body.tables ? Object.values(res.body.tables).map(suiteTable) : [resultsTable(res.body)])
      : [h("p", { class: "muted" }, `no results yet (${j.status})`)];
    tables.push(h("section", { class: "compared", "data-job-id": id }, h("h2", {}, label, " ", jobLink(id), " ", statusBadge(j.status)), ...body));
  }
  document.querySelector("#compare-curves .charts").replaceChildren(...(runs.length ? epochCharts(runs) : []));
  document.getElementById("compare-tables").replaceChildren(...tables);
}

function submitPage() {
  const presets = JSON.parse(document.getElementById("presets").textContent);
  const select = document.getElementById("preset"), kind = document.getElementById("kind");
  const text = document.getElementById("config-text"), errors = document.getElementById("submit-errors");
  select.append(...Object.keys(presets).map((n) => h("option", { value: n }, n)));
  const load = () => { const p = presets[select.value]; text.value = p.text; kind.value = p.kind; };
  select.addEventListener("change", load);
  load();
  document.getElementById("submit-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    errors.replaceChildren();
    text.classList.remove("invalid");
    const fail = (items) => {
      text.classList.add("invalid");
      errors.replaceChildren(...items.map(([loc, msg]) => h("li", { "data-loc": loc }, h("code", {}, loc), ": " + msg)));
      // Put the cursor on the first offending field's line when its key is in the text.
      const key = items[0][0].split(".").filter((p) => p !== "body" && isNaN(+p)).pop();
      const m = key ? new RegExp(`["']?${key}["']?\\s*:`).exec(text.value) : null;
      if (m) { const at = m.index + m[0].indexOf(key); text.focus(); text.setSelectionRange(at, at + key.length); }
    };
    const parsed = await api("/ui/parse", { method: "POST", headers: { "Content-Type": "text/plain" }, body: text.value });
    const config = await parsed.json();
    if (!parsed.ok) {
      fail(Array.isArray(config.detail) ? config.detail.map((d) => [d.loc.join("."), d.msg]) : [["body", config.detail]]);
      return;
    }
    const resp = await api("/jobs/" + kind.value, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(config) });
    const body = await resp.json().catch(() => ({}));
    if (resp.ok) { location.href = "/ui/jobs/" + body.id; return; }
    if (Array.isArray(body.detail)) fail(body.detail.map((d) => [d.loc.join("."), d.msg]));
    else fail([["body", `${resp.status}: ${body.detail || JSON.stringify(body)}`]]);
  });
}

showAuth();
({ jobs: jobsPage, job: jobPage, compare: comparePage, submit: submitPage })[document.body.dataset.page]?.();
