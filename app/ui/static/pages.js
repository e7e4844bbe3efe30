// One function per page (body data-page), started at the end.
"use strict";

// ------------------------------------------------------------------ pages

async function jobsPage() {
  const form = document.getElementById("filters");
  const tbody = document.querySelector("#jobs tbody");
  const more = document.getElementById("load-more");
  const selected = new Set();
  // Filters live in the URL too (a filtered list is a link); parent_id = one suite's sub-jobs.
  const url = new URLSearchParams(location.search);
  const FILTERS = ["status", "kind", "suite", "text"];
  for (const k of FILTERS) if (url.get(k)) form.elements[k].value = url.get(k);
  const parent = url.get("parent_id");
  // Pages of `size` rows, newest first, through the API's keyset cursor; `page_size` in the URL.
  const size = Math.min(500, Math.max(1, +url.get("page_size") || 100));
  if (parent) document.querySelector("h1").textContent = `Jobs of suite ${parent.slice(0, 8)}`;
  let rows = [], next = null, count = null, wanted = size, seq = 0;

  function query(limit, cursor) {
    const params = new URLSearchParams({ limit: String(limit) });
    for (const k of ["status", "kind"]) if (form.elements[k].value) params.set(k, form.elements[k].value);
    if (parent) params.set("parent_id", parent);
    if (cursor) params.set("cursor", cursor);
    return getJSON("/jobs?" + params);
  }
  // The loaded extent again from the top (new jobs come first; the polled rows update in place).
  async function fetchRows() {
    const mine = ++seq, got = [];
    let cursor = null, total = null;
    do {
      const res = await query(Math.min(500, wanted - got.length), cursor);
      if (!res.ok) { showError(`GET /jobs: ${res.status} ${JSON.stringify(res.body)}`); return; }
      got.push(...res.body.data);
      cursor = res.body.next_cursor;
      if (total === null) total = `${res.body.count}${res.body.count_exact ? "" : "+"}`;
    } while (cursor && got.length < wanted);
    if (mine !== seq) return;  // a newer fetch (filter change, load more) has started
    showError("");
    const stamp = document.getElementById("list-updated");
    stamp.dataset.fetches = String((+stamp.dataset.fetches || 0) + 1);  // tests wait for a poll by it
    [rows, next, count] = [got, cursor, total];
    draw();
  }
  function matches(j) {
    const text = form.elements.text.value.trim().toLowerCase(), suite = form.elements.suite.value;
    if (suite) {
      // A suite experiment: its suite jobs and (those loaded of) their sub-jobs.
      const suites = new Set(rows.filter((r) => r.suite === suite).map((r) => r.id));
      if (j.suite !== suite && !suites.has(j.parent_id)) return false;
    }
    return !text || [j.id, j.name, j.model, j.variant, j.suite, j.dataset, j.owner, j.parent_id]
      .some((v) => v && v.toLowerCase().includes(text));
  }
  function draw() {
    const shown = rows.filter(matches);
    const shownUrl = new URLSearchParams();
    for (const k of FILTERS) if (form.elements[k].value) shownUrl.set(k, form.elements[k].value);
    if (parent) shownUrl.set("parent_id", parent);
    if (url.get("page_size")) shownUrl.set("page_size", String(size));
    history.replaceState(null, "", "/ui" + (shownUrl.toString() ? "?" + shownUrl : ""));
    tbody.replaceChildren(...shown.map((j) => {
      const box = h("input", { type: "checkbox", value: j.id, checked: selected.has(j.id) });
      box.addEventListener("change", () => (box.checked ? selected.add(j.id) : selected.delete(j.id)));
      return h("tr", { "data-job-id": j.id, "data-status": j.status },
        h("td", {}, box), h("td", {}, jobLink(j.id)), h("td", {}, j.kind), h("td", {}, statusBadge(j.status)),
        h("td", {}, j.name || ""), h("td", {}, j.model || ""), h("td", {}, j.dataset || ""), h("td", {}, j.variant || ""),
        h("td", {}, j.suite || (j.parent_id ? h("a", { href: "/ui/jobs/" + j.parent_id, title: "the suite that created it" },
          "sub-job of " + j.parent_id.slice(0, 6)) : "")),
        h("td", {}, j.owner || ""), h("td", {}, progressCell(j.progress)),
        h("td", {}, ACTIVE.has(j.status) && j.progress ? eta(j.progress.eta_seconds) : ""),
        h("td", { class: "muted" }, new Date(j.created_at).toLocaleString()));
    }));
    const filtered = form.elements.text.value.trim() || form.elements.suite.value;
    document.getElementById("list-updated").textContent = `${shown.length} shown` +
      (filtered ? ` of ${rows.length} loaded` : "") + ` (${count} jobs in all); updated ${new Date().toLocaleTimeString()}`;
    more.hidden = !next;
    more.textContent = filtered ? `Load ${size} more (and search them)` : `Load ${size} more`;
  }
  // Status and kind filter on the server (from the first page again); suite and text in the page.
  const restart = () => { wanted = size; fetchRows(); };
  form.elements.status.addEventListener("change", restart);
  form.elements.kind.addEventListener("change", restart);
  form.elements.suite.addEventListener("change", draw);
  form.elements.text.addEventListener("input", draw);
  form.addEventListener("submit", (e) => e.preventDefault());
  more.addEventListener("click", () => { wanted = rows.length + size; fetchRows(); });
  document.getElementById("compare-selected").addEventListener("click", () => {
    if (selected.size) location.href = "/ui/compare?ids=" + [...selected].join(",");
  });
  await fetchRows();
  setInterval(fetchRows, POLL_MS);
}

async function jobPage() {
  const id = document.body.dataset.jobId;
  let done = false, trainOf = null;
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
      // A smoke suite always runs on digits (ctrw.paper.request): say so, not "the paper's data".
      const data = c.dataset || (c.smoke ? "digits" : "the paper's data");
      head.push(h("span", {}, ` · ${c.suite}${c.smoke ? " (smoke)" : ""} · ${c.model || ""} · ${data}`));
    } else if (c.model) head.push(h("span", {}, ` · ${c.model.name}${c.model.width ? " (width " + c.model.width + ")" : ""}`));
    if (c.data && job.kind !== "suite") head.push(h("span", {}, ` · ${c.data.dataset}`));
    if (job.train_job_id) {
      // What was attacked: the train job's name, model and data (fetched once).
      if (!trainOf) { const t = await getJSON("/jobs/" + job.train_job_id); trainOf = t.ok ? t.body.config : {}; }
      const m = trainOf.model || {}, what = [trainOf.name, m.name && m.name + (m.width ? ` (width ${m.width})` : ""),
        trainOf.data && trainOf.data.dataset, trainOf.variant].filter(Boolean).join(" · ");
      head.push(h("span", {}, " · attacks train job "), jobLink(job.train_job_id), h("span", {}, what ? ` (${what})` : ""));
    }
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
      h("p", { class: "muted scale" }, scaleText(t.scale)),
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

function scaleText(sc) {
  // What ours ran at, in words (the figures' footers say the same).
  if (!sc) return "";
  const widths = Object.entries(sc.widths || {}).map(([m, w]) => `${m} width ${w}`).join(", ");
  return `Ours ran on ${(sc.datasets || []).join(", ") || "?"}${sc.smoke ? " (smoke run)" : ""}: ${sc.epochs} epochs` +
    (widths ? `, ${widths}` : "") + (sc.train_subset ? `, ${sc.train_subset} training examples` : "") +
    (sc.evaluation_examples ? `, ${sc.evaluation_examples} evaluation examples` : "") + ". Values in %, ours [95% CI]; paper beside.";
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
  const runs = [], merged = [], details = [], errors = [];
  const paperBySuite = new Map();  // a suite's paper values of its sub-jobs, fetched once per suite
  for (const id of ids) {
    const job = await getJSON("/jobs/" + id);
    if (!job.ok) { errors.push(h("p", { class: "error" }, `${id}: ${job.status} ${JSON.stringify(job.body)}`)); continue; }
    const j = job.body, c = j.config || {};
    const trainId = j.kind === "attack" ? j.train_job_id : j.kind === "train" ? id : null;
    let label = (c.name || (c.model && c.model.name) || c.suite || j.kind) + " " + id.slice(0, 6);
    if (j.kind === "attack") {
      const of = await getJSON("/jobs/" + trainId);
      label = `attack ${id.slice(0, 6)} on ${(of.ok && of.body.config.name) || ""} ${trainId.slice(0, 6)}`;
    }
    // Curves once per training run (an attack shows its train job's); identical runs say so.
    if (trainId && !runs.some((r) => r.trainId === trainId)) {
      const ep = await getJSON(`/jobs/${trainId}/epochs`);
      if (ep.ok) {
        const same = runs.find((r) => JSON.stringify(r.epochs) === JSON.stringify(ep.body.data));
        runs.push({ trainId, label: label + (same ? ` (= ${same.label})` : ""), epochs: ep.body.data });
      }
    }
    const res = await getJSON(`/jobs/${id}/results`);
    if (!res.ok) {
      details.push(h("p", { class: "muted" }, `${label}: no results yet (${j.status})`));
      continue;
    }
    let paper = {};
    if (j.parent_id && !res.body.tables) {
      if (!paperBySuite.has(j.parent_id)) {
        const pv = await getJSON(`/ui/paper-values/${j.parent_id}`);
        paperBySuite.set(j.parent_id, pv.ok ? pv.body : {});
      }
      paper = paperBySuite.get(j.parent_id)[id] || {};
    }
    const paperOf = (attack, protocol) => { const v = paper[`${attack}|${protocol}`]; return v === undefined ? null : v; };
    merged.push({ id, label, entries: compareEntries(res.body, paperOf) });
    const body = res.body.tables ? Object.values(res.body.tables).map(suiteTable)
      : [resultsTable(res.body), verdictList(res.body.diagnostics)];
    details.push(h("section", { class: "compared", "data-job-id": id }, h("h3", {}, label, " ", jobLink(id), " ", statusBadge(j.status)), ...body));
  }
  document.querySelector("#compare-curves .charts").replaceChildren(...(runs.length ? epochCharts(runs) : []));
  document.getElementById("compare-table").replaceChildren(...errors, merged.length ? mergedTable(merged) : "",
    h("p", { class: "muted" }, "ours: accuracy % [95% CI], n examples; bold = best of the row; † = a fired diagnostic names the cell; " +
      "differs? = the best and the worst job's CIs do not overlap"));
  const more = document.getElementById("compare-tables");
  more.replaceChildren(h("summary", {}, "each job's own table (worst case, majority vote, diagnostics)"), ...details);
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
