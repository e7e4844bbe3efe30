"""ctrw.figures: a job's own figures, and suite figures labelled with the data ours ran on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

from ctrw.figures import render_figure, render_job_figures
from ctrw.paper import SuiteRequest, assemble_suite
from tests.support.rows import suite_results

EPOCHS = [
    {"epoch": e, "train_loss": 2.4 - 0.1 * e, "train_clean_acc": 0.1 * e, "train_adv_acc": 0.05 * e,
     "val_clean_acc": 0.12 * e, "val_pgd_acc": 0.04 * e, "sigma_sum": 60.0 + e, "bound_lower": 19.2,
     "bound_upper": 96.0}
    for e in (1, 2, 3)
]  # fmt: skip
LAYERS = [{"layer": "random", "hist_sigma": {"edges": [0.9, 1.0, 1.1], "counts": [10, 54]}}]
RESULTS = [
    {"attack": "clean", "protocol": "paper", "accuracy": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 64},
    {"attack": "pgd3", "protocol": "adaptive", "accuracy": 0.25, "ci_low": 0.15, "ci_high": 0.35, "n": 64},
]


def test_a_train_job_gets_curves_sigma_histograms_and_robust_accuracy(tmp_path: Path) -> None:
    label = "small_cnn (width 0.25), digits 8x8, train job abcdef12"
    figures = render_job_figures(label=label, epochs=EPOCHS, layers=LAYERS, results=RESULTS, out_dir=tmp_path)
    assert set(figures) == {"curves", "sigma", "sigma_hist", "robust"}
    for paths in figures.values():
        assert paths["png"].read_bytes().startswith(b"\x89PNG")
        assert label in paths["svg"].read_text()
    assert all(s in figures["sigma"]["svg"].read_text() for s in ("bound A", "bound B", "sum(sigma)"))
    curves = figures["curves"]["svg"].read_text()
    assert all(s in curves for s in ("validation PGD", "train adversarial", "training loss"))
    robust = figures["robust"]["svg"].read_text()
    # Each bar's value and n, and its attack under its protocol.
    assert all(s in robust for s in ("50.0", "25.0", "n=64", "pgd3", "(adaptive)", "95% CI"))


def test_an_attack_job_without_epochs_gets_only_its_robust_accuracy(tmp_path: Path) -> None:
    figures = render_job_figures(label="x", epochs=[], layers=[], results=RESULTS, out_dir=tmp_path)
    assert set(figures) == {"robust"}
    assert render_job_figures(label="x", epochs=[], layers=[], results=[], out_dir=tmp_path / "none") == {}


def _fig3a(tmp_path: Path, datasets: list[str]) -> str:
    panel = {"number": "1", "model": "ResNet18", "dataset": "CIFAR10", "constrain": "with (CTRW)",
             "hist": {"edges": [0.0, 0.5, 1.0], "counts": [3, 5]}}  # fmt: skip
    data = {"kind": "sigma_histograms", "panels": [panel], "paper": None}
    scale = {"datasets": datasets, "epochs": 2, "widths": {"resnet18": 0.25}, "smoke": datasets == ["digits"]}
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text as text, to read it back
        return render_figure("fig3a", data, tmp_path, scale=scale)["svg"].read_text()


def test_a_smoke_suite_figure_says_it_ran_on_digits_not_cifar(tmp_path: Path) -> None:
    smoke = _fig3a(tmp_path / "smoke", ["digits"])
    assert "digits (as CIFAR10)" in smoke and "ours on digits" in smoke
    paper = _fig3a(tmp_path / "paper", ["cifar10"])
    assert "digits" not in paper and "CIFAR10" in paper


def _with_sigma(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    layer = {"sigma_sum": 32.0, "bound_lower": 16.0, "bound_upper": 96.0}
    return {k: {**r, "sigma": {"layers": [layer]}} for k, r in results.items()}


def test_suite_figures_draw_error_bars_from_the_sub_jobs_cis(tmp_path: Path) -> None:
    # Figure data as the suite builds it (ctrw.paper.experiments.fig3b/c/d): ours with ci_low/ci_high.
    scale = {"datasets": ["digits"], "epochs": 2, "widths": {"resnet18": 0.25}, "smoke": True}
    for suite in ("fig3b", "fig3c", "fig3d"):
        req = SuiteRequest(suite=suite, smoke=True)
        data = assemble_suite(req, _with_sigma(suite_results(req, 0.5))).figures[suite]
        with matplotlib.rc_context({"svg.fonttype": "none"}):
            svg = render_figure(suite, data, tmp_path / suite, scale=scale)["svg"].read_text()
        assert "95% CI" in svg and "ours on digits" in svg, suite
        # Every accuracy series has its bars (ids set by ctrw.figures._tag_ci), one per point.
        keys = {"fig3b": ("natural", "pgd20", "ctrw-pgd20"), "fig3c": ("paper", "adaptive"),
                "fig3d": ("natural", "pgd20")}[suite]  # fmt: skip
        for key in keys:
            assert f'id="ci-{key}"' in svg, (suite, key)
    assert data["ci_low"]["pgd20"][0] == 42.0 and data["ci_high"]["pgd20"][0] == 55.0  # fig3d, in percent


def test_figure_data_without_cis_still_draws(tmp_path: Path) -> None:
    # Suites assembled before the CIs were in the figure data: no bars, same figure.
    data = {"kind": "pgd_steps", "model": "ResNet18", "steps": [0, 1], "paper": None,
            "series": {"paper": [50.0, 30.0], "adaptive": [50.0, None]}}  # fmt: skip
    svg = render_figure("fig3c", data, tmp_path, scale={"datasets": ["cifar10"]})["svg"].read_text()
    assert 'id="ci-paper"' not in svg
