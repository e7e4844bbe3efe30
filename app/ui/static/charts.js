// Inline SVG charts (no library): line charts of per-epoch records and histograms.
"use strict";

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

