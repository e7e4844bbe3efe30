"""Figure 3 of the paper from a suite's assembled data, and each train/attack job's own figures
(training curves, sum(sigma) with its bounds, sigma histograms, robust accuracy with CI bars), as PNG
and SVG (matplotlib, Agg backend).

Wherever a figure shows our accuracies it draws their 95% CIs (from the sub-jobs' result rows) as
error bars. Worker side only (the API serves the files). The paper's values are overlaid where its text
gives them: Figure 3b's two points, bounds and the ~14% level above B; Figure 3c's 69% +- 1%
band. Figures 3a and 3d have no numbers in the paper's text; their caption says so.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ctrw.paper.common import COLUMN_LABELS
from ctrw.render import to_percent

__all__ = ["render_figure", "render_figures", "render_job_figures"]

log = logging.getLogger(__name__)

_COLORS = {"natural": "tab:blue", "pgd20": "tab:red", "eotpgd": "tab:purple", "paper": "tab:red",
           "adaptive": "tab:purple"}  # fmt: skip
PAPER_STYLE = {"color": "0.35", "linestyle": ":", "linewidth": 1.2}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _scale_text(scale: Mapping[str, Any]) -> str:
    widths = ", ".join(f"{m} width {w:g}" for m, w in (scale.get("widths") or {}).items())
    data = ", ".join(scale.get("datasets") or [])
    smoke = " (smoke run)" if scale.get("smoke") else ""
    return f"ours: {data}, {scale.get('epochs')} epochs, {widths}{smoke}"


def _ran_on(scale: Mapping[str, Any]) -> str | None:
    """The data set ours ran on when it is not one the paper's labels name (CIFAR-10/100), else None."""
    datasets = [d for d in scale.get("datasets") or [] if not str(d).startswith("cifar")]
    return ", ".join(datasets) or None


def _none_to_nan(values: list[float | None]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


def _yerr(values: list[float | None], low: list[float | None] | None, high: list[float | None] | None) -> Any:
    """Asymmetric error bars (below, above) of ours from the 95% CI bounds; None where a bound is
    missing (no bar there), or None when the data carries no CIs (figure data of older suites)."""
    if not low or not high:
        return None
    below = [float("nan") if v is None or lo is None else v - lo for v, lo in zip(values, low, strict=True)]
    above = [float("nan") if v is None or hi is None else hi - v for v, hi in zip(values, high, strict=True)]
    return [below, above]


def _dodge(xs: list[float], slot: float, span: float) -> list[float]:
    """Series at the same x moved apart by 1.2% of the axis each, so their CI bars do not hide each other."""
    return [x + slot * 0.012 * (span or 1.0) for x in xs]


_CI = {"capsize": 3, "elinewidth": 1}
CI_NOTE = "bars: 95% CI of ours"


def _tag_ci(container: Any, name: str) -> None:
    """Give the error bars an SVG id (``ci-<name>``): findable in the figure, e.g. by tests."""
    bars = getattr(container, "errorbar", container)  # ax.bar keeps its ErrorbarContainer there
    for i, lines in enumerate(getattr(bars, "lines", (None, None, ()))[2] or ()):
        lines.set_gid(f"ci-{name}" + (f"-{i}" if i else ""))


def _sigma_histograms(ax: Any, data: Mapping[str, Any]) -> str:
    import numpy as np

    panels = data["panels"]
    for i, p in enumerate(panels, start=1):
        color = "tab:red" if p["constrain"] == "without" else "tab:blue"
        hist = p.get("hist")
        if not hist:
            ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=8)
            continue
        edges = np.asarray(hist["edges"], dtype=float)
        counts = np.asarray(hist["counts"], dtype=float)
        centers = (edges[:-1] + edges[1:]) / 2
        width = 0.4 * counts / max(counts.max(), 1.0)
        ax.fill_betweenx(centers, i - width, i + width, color=color, alpha=0.6, linewidth=0)
        mean = float((centers * counts).sum() / max(counts.sum(), 1.0))
        ax.plot([i - 0.3, i + 0.3], [mean, mean], color="k", linewidth=1)
    ax.set_xticks(range(1, len(panels) + 1))
    ran = data.get("ran_on")
    ax.set_xticklabels([f"{p['number']}\n{p['model']}\n" + (f"{ran} (as {p['dataset']})" if ran else p["dataset"])
                        for p in panels], fontsize=7)  # fmt: skip
    ax.set_xlim(0.4, len(panels) + 0.6)
    ax.set_ylabel("final sigma (per element)")
    ax.fill_between([], [], color="tab:red", alpha=0.6, label="without constraint")
    ax.fill_between([], [], color="tab:blue", alpha=0.6, label="with constraint (CTRW)")
    ax.plot([], [], color="k", linewidth=1, label="mean")
    ax.legend(fontsize=8)
    return "paper: no numbers in the text (sigma -> 0+ without the constraint; higher, bounded with it)"


def _sigma_sweep(ax: Any, data: Mapping[str, Any]) -> str:
    points = data["points"]
    area = data.get("image_area") or 1
    ks = [p["k"] for p in points]
    xmax = max(ks + [6.0]) + 0.3
    for j, key in enumerate(("natural", "pgd20", "eotpgd")):
        if any(key in p for p in points):
            ys = [p.get(key) for p in points]
            yerr = _yerr(ys, [(p.get("ci_low") or {}).get(key) for p in points],
                         [(p.get("ci_high") or {}).get(key) for p in points])  # fmt: skip
            xs = _dodge(ks, j - 1, xmax)
            drawn = ax.errorbar(xs, _none_to_nan(ys), yerr=yerr, marker="o", color=_COLORS[key],
                                label=f"{COLUMN_LABELS[key]} (ours)", **_CI)  # fmt: skip
            _tag_ci(drawn, key)
    lo, hi = (data.get("bounds") or {}).get("lower"), (data.get("bounds") or {}).get("upper")
    if lo is not None:
        left = lo / area
        right = min(hi / area, xmax) if hi is not None else xmax
        if left < xmax:
            ax.axvspan(left, right, color="tab:orange", alpha=0.2,
                       label=f"bounds A={lo:.4g}, B={'-' if hi is None else f'{hi:.4g}'} (ours)")  # fmt: skip
    ctrw = data.get("ctrw") or {}
    if ctrw.get("sigma_sum") is not None:
        for key in ("natural", "pgd20"):
            if ctrw.get(key) is not None:
                yerr = _yerr(
                    [ctrw[key]], [(ctrw.get("ci_low") or {}).get(key)], [(ctrw.get("ci_high") or {}).get(key)]
                )
                drawn = ax.errorbar([ctrw["sigma_sum"] / area], [ctrw[key]], yerr=yerr, marker="*",
                                    markersize=12, color=_COLORS[key], linestyle="none", **_CI)  # fmt: skip
                _tag_ci(drawn, f"ctrw-{key}")
        ax.plot([], [], marker="*", color="k", linestyle="none", label="CTRW, trained sigma (ours)")
    paper = data.get("paper")
    if paper:
        p_area = paper["image_size"]
        for key, marker in (("natural", "s"), ("pgd20", "D")):
            ax.plot([pt["sigma_sum"] / p_area for pt in paper["points"]], [pt[key] for pt in paper["points"]],
                    marker=marker, fillstyle="none", color=_COLORS[key], linestyle="none",
                    label=f"{COLUMN_LABELS[key]} (paper)")  # fmt: skip
        ax.axvline(paper["bound_lower"] / p_area, **PAPER_STYLE, label="paper A=1000, B~2400")
        ax.axvline(paper["bound_upper"] / p_area, **PAPER_STYLE)
        ax.plot([paper["bound_upper"] / p_area, xmax], [paper["above_upper"]] * 2, color="0.35", linestyle="--",
                linewidth=1, label="paper: ~14% above B")  # fmt: skip
    ax.set_xlim(-0.2, xmax)
    ax.set_xlabel("sum(sigma) / image size (H x W)   (k = 0 means sum = 1)")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7, loc="best")
    return f"{CI_NOTE}; paper values: ResNet18 on CIFAR-10 (image size 1024)"


def _pgd_steps(ax: Any, data: Mapping[str, Any]) -> str:
    steps = data["steps"]
    for j, (key, label) in enumerate(
        (("paper", "paper protocol (ours)"), ("adaptive", "adaptive protocol (ours)"))
    ):
        ys = data["series"][key]
        yerr = _yerr(ys, (data.get("ci_low") or {}).get(key), (data.get("ci_high") or {}).get(key))
        xs = _dodge(steps, j - 0.5, max(steps) - min(steps))
        drawn = ax.errorbar(
            xs, _none_to_nan(ys), yerr=yerr, marker="o", color=_COLORS[key], label=label, **_CI
        )
        _tag_ci(drawn, key)
    paper = data.get("paper")
    if paper:
        lo, hi = paper["band"]
        ax.axhspan(lo, hi, color="0.5", alpha=0.25,
                   label=f"paper: {(lo + hi) / 2:g}% +- {(hi - lo) / 2:g}% for > {paper['more_than_steps']} steps")  # fmt: skip
    ax.set_xticks(steps)
    ax.set_xlabel("PGD steps (0 = natural)")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=8)
    return f"{CI_NOTE}; paper band: ResNet18 on CIFAR-10, paper protocol"


def _positions(ax: Any, data: Mapping[str, Any]) -> str:
    positions = data["positions"]
    keys = list(data["series"])
    width = 0.8 / max(len(keys), 1)
    for j, key in enumerate(keys):
        xs = [p - 0.4 + width * (j + 0.5) for p in positions]
        ys = data["series"][key]
        yerr = _yerr(ys, (data.get("ci_low") or {}).get(key), (data.get("ci_high") or {}).get(key))
        drawn = ax.bar(xs, _none_to_nan(ys), width=width, color=_COLORS.get(key, None), yerr=yerr, capsize=3,
                       label=f"{data['labels'].get(key, key)} (ours)")  # fmt: skip
        _tag_ci(drawn, key)
    ax.set_xticks(positions)
    ax.set_xlabel("position of the random weight (0 = input / first conv, last = before the FC)")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=8)
    return f"{CI_NOTE}; paper: no numbers in the text (position 0 is the best)"


def _zoo(ax: Any, data: Mapping[str, Any]) -> str:
    names = data["defenses"]
    xs = list(range(len(names)))
    paper_attack = data.get("paper_attack", "PGD-20")
    for j, (key, label) in enumerate(
        (("paper", f"{paper_attack}, paper protocol"), ("adaptive", "worst adaptive attack"))
    ):
        ys = data["series"][key]
        yerr = _yerr(ys, (data.get("ci_low") or {}).get(key), (data.get("ci_high") or {}).get(key))
        drawn = ax.bar([x - 0.2 + 0.4 * j for x in xs], _none_to_nan(ys), width=0.4, color=_COLORS[key],
                       yerr=yerr, capsize=3, label=label)  # fmt: skip
        _tag_ci(drawn, key)
    # A star over each defense whose paper protocol overestimates it beyond the CIs (protocol_gap).
    flagged = [x for x, f in zip(xs, data.get("overestimated") or [], strict=False) if f]
    for x in flagged:
        top = max((data.get("ci_high") or data["series"])[k][x] or 0.0 for k in ("paper", "adaptive"))
        ax.annotate("*", (x, top + 1.0), ha="center", va="bottom", fontsize=14, color="0.15")
    ax.set_ylim(0, ax.get_ylim()[1] + 12)  # room for the stars and the legend above the bars
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("robust accuracy (%)")
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    star = "; *: the paper protocol overestimates it beyond the CIs (protocol_gap fired)" if flagged else ""
    return f"{CI_NOTE}{star}; no paper values (the paper compares under its own protocol only)"


_KINDS = {
    "sigma_histograms": ("Figure 3a: final sigma, without vs with the constraint", _sigma_histograms),
    "sigma_sweep": ("Figure 3b: accuracy over a fixed sum(sigma)", _sigma_sweep),
    "pgd_steps": ("Figure 3c: robust accuracy under PGD of increasing strength", _pgd_steps),
    "positions": ("Figure 3d: CTRW at different positions", _positions),
    "zoo": ("Randomized defenses: paper vs adaptive protocol", _zoo),
}


def render_figure(
    name: str, data: Mapping[str, Any], out_dir: Path, *, scale: Mapping[str, Any]
) -> dict[str, Path]:
    """Draw one figure; returns {"png": path, "svg": path} under ``out_dir``."""
    plt = _pyplot()
    title, draw = _KINDS[data["kind"]]
    # A smoke run trains on digits under the paper's labels: the title says what the data was.
    ran = _ran_on(scale)
    data = {**data, "ran_on": ran}
    if data.get("model"):
        title += f" ({data['model']}" + (f", ours on {ran}" if ran else "") + ")"
    elif ran:
        title += f" (ours on {ran})"
    fig, ax = plt.subplots(figsize=(8, 5))
    try:
        paper_note = draw(ax, data)
        ax.set_title(title, fontsize=11)
        ax.grid(alpha=0.3)
        note = textwrap.fill(f"{_scale_text(scale)}; {paper_note}", 150)  # fits the 8-inch width
        fig.text(0.01, 0.01, note, fontsize=7, color="0.3")
        fig.tight_layout(rect=(0, 0.03 * (note.count("\n") + 1), 1, 1))
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {}
        for fmt in ("png", "svg"):
            path = out_dir / f"{name}.{fmt}"
            fig.savefig(path, format=fmt, dpi=120)
            paths[fmt] = path
        return paths
    finally:
        plt.close(fig)


def render_figures(assembly: Mapping[str, Any], out_dir: Path) -> dict[str, dict[str, Path]]:
    """Every figure of an assembled suite (``SuiteAssembly`` as a dict)."""
    return {
        name: render_figure(name, data, Path(out_dir), scale=assembly.get("scale") or {})
        for name, data in (assembly.get("figures") or {}).items()
    }


# --------------------------------------------------------------------------- one job's figures


def _save(fig: Any, out_dir: Path, name: str) -> dict[str, Path]:
    import matplotlib

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    # SVG text stays text: searchable and editable when the figure goes into a paper.
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        for fmt in ("png", "svg"):
            path = out_dir / f"{name}.{fmt}"
            fig.savefig(path, format=fmt, dpi=120)
            paths[fmt] = path
    return paths


def _epoch_ticks() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)  # epochs are whole numbers (not 1.25, 1.50, ...)


def _col(rows: list[Mapping[str, Any]], key: str, scale: float = 1.0) -> list[float]:
    return [float("nan") if r.get(key) is None else float(r[key]) * scale for r in rows]


def render_job_figures(
    *,
    label: str,
    epochs: list[Mapping[str, Any]],
    layers: list[Mapping[str, Any]],
    results: list[Mapping[str, Any]],
    out_dir: Path,
) -> dict[str, dict[str, Path]]:
    """A train or attack job's figures, those its data allows: ``curves`` (loss; train clean/adv and
    validation clean/PGD accuracy per epoch), ``sigma`` (sum(sigma) per epoch with bounds A and B),
    ``sigma_hist`` (final sigma per random layer), ``robust`` (accuracy per attack and protocol with
    95% CI bars).

    Args:
        label: what ran, for the captions (model, variant, data set, job id).
        epochs: per-epoch records (``train_loss``, ``*_acc`` fractions, ``sigma_sum``, ``bound_*``).
        layers: final sigma statistics per layer (``layer``, ``hist_sigma`` = {edges, counts}).
        results: result rows (``attack``, ``protocol``, ``accuracy``, ``ci_low``, ``ci_high``, ``n``).
        out_dir: where ``<name>.png`` and ``<name>.svg`` go.

    Returns:
        {name: {"png": path, "svg": path}}.
    """
    plt = _pyplot()
    out_dir = Path(out_dir)
    figures: dict[str, dict[str, Path]] = {}

    def done(fig: Any, name: str, title: str) -> None:
        try:
            fig.suptitle(title, fontsize=11)
            fig.text(0.01, 0.01, label, fontsize=7, color="0.3")
            fig.tight_layout(rect=(0, 0.03, 1, 1))
            figures[name] = _save(fig, out_dir, name)
        finally:
            plt.close(fig)

    if epochs:
        xs = [int(e["epoch"]) for e in epochs]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        ax1.plot(xs, _col(epochs, "train_loss"), marker="o")
        ax1.set_xlabel("epoch")
        ax1.set_ylabel("training loss")
        for key, name, style in (("train_clean_acc", "train clean", "--"), ("train_adv_acc", "train adversarial", ":"),
                                 ("val_clean_acc", "validation clean", "-"), ("val_pgd_acc", "validation PGD", "-.")):  # fmt: skip
            ax2.plot(xs, _col(epochs, key, 100), linestyle=style, marker="o", label=name)
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("accuracy (%)")
        ax2.legend(fontsize=8)
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(_epoch_ticks())
        done(fig, "curves", "Training curves")

        if any(e.get("sigma_sum") is not None for e in epochs):
            fig, ax = plt.subplots(figsize=(7, 4))
            ax.plot(xs, _col(epochs, "sigma_sum"), marker="o", label="sum(sigma)")
            ax.plot(xs, _col(epochs, "bound_lower"), linestyle="--", color="0.5", label="bound A")
            ax.plot(xs, _col(epochs, "bound_upper"), linestyle="--", color="0.2", label="bound B")
            ax.set_xlabel("epoch")
            ax.set_ylabel("sum(sigma)")
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(_epoch_ticks())
            ax.legend(fontsize=8)
            done(fig, "sigma", "sum(sigma) per epoch with the bounds A and B")

    hists = [(str(layer.get("layer")), layer["hist_sigma"]) for layer in layers if layer.get("hist_sigma")]
    if hists:
        import numpy as np

        fig, axes = plt.subplots(1, len(hists), figsize=(4.5 * len(hists), 3.5), squeeze=False)
        for ax, (name, hist) in zip(axes[0], hists, strict=True):
            edges = np.asarray(hist["edges"], dtype=float)
            ax.stairs(np.asarray(hist["counts"], dtype=float), edges, fill=True, alpha=0.7)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("sigma (per element)")
            ax.set_ylabel("count")
        done(fig, "sigma_hist", "Final sigma per random layer")

    if results:
        names = [f"{r['attack']}\n({r['protocol']})" for r in results]
        acc = [to_percent(r["accuracy"]) for r in results]
        lo = [a - to_percent(r["ci_low"]) for a, r in zip(acc, results, strict=True)]
        hi = [to_percent(r["ci_high"]) - a for a, r in zip(acc, results, strict=True)]
        fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(results) + 2), 4))
        ax.bar(range(len(results)), acc, yerr=[lo, hi], capsize=4, color="tab:blue", alpha=0.8)
        for i, (a, r) in enumerate(zip(acc, results, strict=True)):
            ax.text(i, a + hi[i] + 1, f"{a:.1f}\nn={r['n']}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(results)))
        ax.set_xticklabels(names, fontsize=8)
        ax.set_ylabel("accuracy (%) with 95% CI")
        ax.set_ylim(0, 110)
        ax.grid(alpha=0.3, axis="y")
        done(fig, "robust", "Robust accuracy per attack")
    return figures
