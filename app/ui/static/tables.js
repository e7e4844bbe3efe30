// Result tables: a job's, a suite's, and the merged table of the compare page.
"use strict";

// ------------------------------------------------------------------ tables

// A check that could not run here (ctrw.evaluation.entries.not_applicable: details.applicable false).
const notApplicable = (d) => d.applicable === false || (d.details && d.details.applicable === false);

function verdictList(diags) {
  if (!diags || !diags.length) return h("p", { class: "muted" }, "no diagnostics ran");
  return h("ul", { class: "diagnostics" }, diags.map((d) => h("li", {},
    h("span", { class: d.fired ? "fired" : "ok" }, d.fired ? "FIRED " : (notApplicable(d) ? "n/a " : "fine ")),
    h("strong", {}, d.name + (d.source ? ` (${d.source})` : "")), ": ", d.verdict || "")));
}

function resultsTable(t) {
  // A train/attack job's table: accuracy in %, 95% CI, and the K-draw worst case / majority.
  const head = h("tr", {}, h("th", {}, "model"), h("th", {}, "variant"), h("th", {}, "checkpoint"),
    t.columns.map((c) => h("th", { title: c.params ? JSON.stringify(c.params) : "" }, `${c.attack} (${c.protocol})`)));
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


// ------------------------------------------------------------------ compare: one merged table

/** One job's results as merged-table entries, keyed by what a row means: a train/attack job's
 * attack x protocol (x checkpoint when it has several rows); a suite's table x row x column.
 * Accuracies in percent; paper = the paper's value where known (`paperOf(attack, protocol)`). */
function compareEntries(results, paperOf = () => null) {
  const out = new Map();
  if (results.tables) {
    for (const t of Object.values(results.tables)) {
      for (const r of t.rows) {
        const labels = t.row_keys.map((k) => r.labels[k]).filter(Boolean).join(" · ");
        for (const c of t.columns) {
          const x = r.cells[c.key];
          if (!x || (c.kind && c.kind !== "accuracy")) continue;
          out.set(`${t.name}|${labels}|${c.key}`, { what: [`${t.name}: ${labels}`, c.label, c.protocol || ""],
            ours: x.ours, ci_low: x.ci_low, ci_high: x.ci_high, n: x.n, paper: x.paper, flags: x.flags });
        }
      }
    }
    return out;
  }
  const many = results.rows.length > 1;
  for (const r of results.rows) {
    for (const c of results.columns) {
      const x = r.cells[c.key];
      if (!x) continue;
      const what = [c.attack + (many ? ` · ${r.checkpoint}` : ""), c.name, c.protocol];
      out.set(`${c.attack}|${c.protocol}` + (many ? `|${r.checkpoint}` : ""), { what, ours: 100 * x.accuracy,
        ci_low: x.ci_low === null ? null : 100 * x.ci_low, ci_high: x.ci_high === null ? null : 100 * x.ci_high,
        n: x.n, paper: paperOf(c.attack, c.protocol), worst: x.worst_case === null ? null : 100 * x.worst_case });
    }
  }
  return out;
}

/** The compare page's table: rows = attack x protocol (a suite: table x row x column), a column
 * group per job (accuracy [95% CI], and the paper's value where one is known); the best of each
 * row in bold, and a row whose CIs do not overlap marked as a real difference. */
function mergedTable(jobs) {
  // jobs = [{id, label, entries}]
  const keys = [];
  for (const j of jobs) for (const k of j.entries.keys()) if (!keys.includes(k)) keys.push(k);
  const withPaper = jobs.map((j) => [...j.entries.values()].some((e) => e.paper !== null && e.paper !== undefined));
  const head1 = h("tr", {}, h("th", { rowspan: 2 }, "attack / row"), h("th", { rowspan: 2 }, "family / column"),
    h("th", { rowspan: 2 }, "protocol"), jobs.map((j, i) => h("th", { colspan: withPaper[i] ? 2 : 1, class: "job-group",
      "data-job-id": j.id }, j.label, " ", jobLink(j.id))), h("th", { rowspan: 2, title: "95% CIs of the best and the worst job do not overlap" }, "differs?"));
  const head2 = h("tr", {}, jobs.map((j, i) => [h("th", {}, "ours % [95% CI]"), withPaper[i] ? h("th", {}, "paper") : null]));
  const rows = keys.map((k) => {
    const first = jobs.map((j) => j.entries.get(k)).find(Boolean);
    const cells = jobs.map((j) => j.entries.get(k));
    const have = cells.filter((e) => e && e.ours !== null && e.ours !== undefined);
    const best = have.length > 1 ? Math.max(...have.map((e) => e.ours)) : null;
    const hi = have.length > 1 ? have.reduce((a, e) => (e.ours > a.ours ? e : a)) : null;
    const lo = have.length > 1 ? have.reduce((a, e) => (e.ours < a.ours ? e : a)) : null;
    const differs = hi && lo && hi !== lo && hi.ci_low !== null && lo.ci_high !== null && hi.ci_low > lo.ci_high;
    return h("tr", { "data-key": k }, first.what.map((w) => h("td", {}, w)), cells.map((e, i) => [
      h("td", { class: "num cell", "data-job-id": jobs[i].id }, !e || e.ours === null || e.ours === undefined ? "—" : [
        h(e.ours === best ? "strong" : "span", { class: "acc" }, fmt(e.ours, 1)),
        e.ci_low !== null && e.ci_low !== undefined ? ` [${fmt(e.ci_low, 1)}, ${fmt(e.ci_high, 1)}]` : "",
        e.flags && e.flags.length ? h("span", { class: "flag", title: e.flags.join(", ") }, " †") : "",
        h("span", { class: "muted" }, e.n ? ` n=${e.n}` : "")]),
      withPaper[i] ? h("td", { class: "num paper" }, e && e.paper !== null && e.paper !== undefined ? fmt(e.paper, 1) : "") : null]),
    h("td", {}, differs ? h("span", { class: "fired", title: "the CIs do not overlap" }, "yes") : have.length > 1 ? h("span", { class: "muted" }, "within CI") : ""));
  });
  return h("table", { class: "grid results merged", id: "merged" }, h("thead", {}, head1, head2), h("tbody", {}, rows));
}
