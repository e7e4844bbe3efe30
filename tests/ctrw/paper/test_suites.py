"""Paper suites without services: expansion, reuse by config hash, the paper's cells and values,
rendering, request validation. (End to end through the API: tests/service/e2e/test_suites.py.)"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from ctrw.catalog import DEFENSES
from ctrw.config import config_hash
from ctrw.paper import (
    EXPERIMENTS,
    SUITE_NAMES,
    SuiteRequest,
    assemble_suite,
    attack_column,
    expand_suite,
    render_suite_table,
)
from ctrw.paper import values as pv

# The rows and columns of the paper's tables (row labels without the model, which we add).
PAPER_ROWS = {
    "table1": [("baseline",), ("without constrain",), ("fixed std",), ("CTRW (ours)",)],
    "table4": [("in-channels",), ("out-channels",), ("both in- and out-channels",), ("filters",)],
    "table5": [()],
    "table6": [("CIFAR10", "with (ours)"), ("CIFAR10", "without"), ("CIFAR100", "with (ours)"),
               ("CIFAR100", "without")],
    "table7": [("Fixed to lower bound",), ("Fixed to upper bound",), ("Fixed to mid value",), ("CTRW (ours)",)],
}  # fmt: skip
PAPER_ROWS["table2"] = PAPER_ROWS["table1"]
PAPER_COLUMNS = {
    "table1": ["natural", "pgd20", "fgsm", "autoattack", "cw", "mifgsm", "deepfool"],
    "table2": ["natural", "pgd20", "fgsm", "autoattack", "cw", "mifgsm", "deepfool"],
    "table4": ["natural", "pgd20"],
    "table5": ["natural", "pgd20"],
    "table6": ["positive", "ratio", "min_cos", "acc"],
    "table7": ["pgd20"],
}


def _hashes(req: SuiteRequest) -> dict[str, str]:
    return {j.key: config_hash(j.config) for j in expand_suite(req) if j.config is not None}


def _fake_results(req: SuiteRequest, *, fail: set[str] = frozenset()) -> dict[str, dict[str, Any]]:
    """What the worker hands to assemble_suite: every attack row of every sub-job at 0.5."""
    out: dict[str, dict[str, Any]] = {}
    for job in expand_suite(req):
        evaluation = job.config.evaluation if job.config is not None else job.evaluation
        assert evaluation is not None
        rows = []
        for spec in evaluation.attacks:
            protocol = spec.protocol or evaluation.protocol
            for p in ("paper", "adaptive") if protocol == "both" else (protocol,):
                rows.append({"attack": spec.column, "protocol": p, "accuracy": 0.5, "ci_low": 0.4,
                             "ci_high": 0.6, "n": 64, "std": 0.01 if evaluation.repeats > 1 else None})  # fmt: skip
        layer = {"numel": 64, "sigma_sum": 32.0, "sigma_min": 0.1, "sigma_mean": 0.5, "sigma_max": 0.9,
                 "bound_lower": 32.0, "bound_upper": 96.0, "hist_sigma": {"edges": [0.0, 0.5, 1.0], "counts": [3, 61]},
                 "table6": {"positive": 40000, "ratio": 0.4, "min_cos": -0.05, "n_pairs": 100000}}  # fmt: skip
        out[job.key] = {
            "job_id": job.key,
            "status": "failed" if job.key in fail else "succeeded",
            "rows": rows,
            "sigma": {"layers": [layer]}
            if job.config is not None and job.config.variant != "baseline"
            else None,
            "epochs": [{"epoch": 1, "bound_lower": 32.0, "bound_upper": 96.0}],
        }
    return out


@pytest.mark.parametrize("smoke", [True, False], ids=["smoke", "paper-scale"])
@pytest.mark.parametrize("suite", SUITE_NAMES)
def test_every_suite_expands_into_valid_unique_sub_jobs(suite: str, smoke: bool) -> None:
    jobs = expand_suite(SuiteRequest(suite=suite, smoke=smoke))
    keys = [j.key for j in jobs]
    assert len(keys) == len(set(keys))
    train_keys = {j.key for j in jobs if j.kind == "train"}
    for job in jobs:
        if job.kind == "attack":
            assert job.train_key in train_keys and job.evaluation is not None and job.config is None
        else:
            assert job.config is not None and job.config.evaluation is not None
            assert job.config.name == job.key
            assert job.config.data.dataset == (EXPERIMENTS[suite].smoke_dataset if smoke else "cifar100"
                                               if suite == "table2" else job.key.split("/")[1])  # fmt: skip
    # Training sub-jobs come first: attack sub-jobs name a train job created before them.
    kinds = [j.kind for j in jobs]
    assert kinds == sorted(kinds, key=lambda k: k != "train")


def test_sub_job_counts_and_settings() -> None:
    count = {s: len(expand_suite(SuiteRequest(suite=s))) for s in SUITE_NAMES}
    assert count == {"table1": 4, "table2": 4, "table3": 12, "table4": 4, "table5": 2, "table6": 4, "table7": 4,
                     "imagenet": 2, "zoo": 2 * len(DEFENSES), "fig3a": 4, "fig3b": 12, "fig3c": 2, "fig3d": 6}  # fmt: skip
    assert len(expand_suite(SuiteRequest(suite="fig3d", model="wrn34_10"))) == 5  # positions 0..4
    assert len(expand_suite(SuiteRequest(suite="table1", model="all"))) == 8

    table1 = {j.key: j for j in expand_suite(SuiteRequest(suite="table1"))}
    ctrw = table1["resnet18/cifar10/ctrw"].config
    assert ctrw is not None and ctrw.optim.epochs == 200 and ctrw.model.width == 1.0
    assert [a.column for a in ctrw.evaluation.attacks] == [  # type: ignore[union-attr]
        "clean", "pgd20", "fgsm", "autoattack", "cw", "mifgsm", "deepfool", "eotpgd100",
    ]  # fmt: skip
    assert ctrw.evaluation.attacks[-1].protocol == "adaptive"  # type: ignore[union-attr]
    no_adaptive = expand_suite(SuiteRequest(suite="table1", adaptive=False))[3].config
    assert [a.name for a in no_adaptive.evaluation.attacks][-1] == "deepfool"  # type: ignore[union-attr]

    fig3b = {j.key: j.config for j in expand_suite(SuiteRequest(suite="fig3b"))}
    sums = sorted(c.bounds.lower.value for k, c in fig3b.items() if "fixed_sum" in k)  # type: ignore[union-attr]
    assert sums[0] == 1.0 and sums[-1] == 6 * 1024 and 1024.0 in sums and 2048.0 in sums
    assert all(
        c.variant == "fixed_sigma" and c.bounds.upper is None for k, c in fig3b.items() if "fixed_sum" in k
    )

    (table5,) = [j for j in expand_suite(SuiteRequest(suite="table5")) if j.kind == "attack"]
    assert table5.evaluation.repeats == 5 and table5.train_key == "resnet18/cifar10/ctrw"  # type: ignore[union-attr]
    (fig3c,) = [j for j in expand_suite(SuiteRequest(suite="fig3c")) if j.kind == "attack"]
    assert fig3c.evaluation.protocol == "both"  # type: ignore[union-attr]
    assert [a.column for a in fig3c.evaluation.attacks] == ["clean", *(f"pgd{n}" for n in range(10, 101, 10))]  # type: ignore[union-attr]


def test_scale_knobs_and_overrides() -> None:
    req = SuiteRequest(suite="table7", epochs=20, train_subset=1000, test_subset=500,
                       overrides={"optim": {"batch_size": 256}, "evaluation": {"score_draws": 3}})  # fmt: skip
    for job in expand_suite(req):
        assert job.config is not None
        assert job.config.optim.epochs == 20 and job.config.optim.milestones == [10, 15]
        assert job.config.optim.batch_size == 256 and job.config.evaluation.score_draws == 3  # type: ignore[union-attr]
        assert (job.config.data.train_subset, job.config.data.test_subset) == (1000, 500)
    smoke = expand_suite(SuiteRequest(suite="table1", smoke=True))[0].config
    assert smoke is not None and smoke.data.dataset == "digits" and smoke.model.width < 0.2
    assert smoke.evaluation.diagnostics is False  # type: ignore[union-attr]


def test_identical_sub_jobs_across_suites_have_identical_hashes() -> None:
    for smoke in (False, True):
        h = {s: _hashes(SuiteRequest(suite=s, smoke=smoke)) for s in SUITE_NAMES}
        d = "digits" if smoke else "cifar10"
        ref = h["table1"][f"resnet18/{d}/ctrw"]
        for suite in ("table4", "table5", "table6", "table7", "fig3a", "fig3b", "fig3c", "fig3d"):
            assert h[suite][f"resnet18/{d}/ctrw"] == ref, suite
        # Table 7's 'fixed to lower bound' is Table 1's fixed std model (67.75 in both tables).
        assert h["table7"][f"resnet18/{d}/fixed_std"] == h["table1"][f"resnet18/{d}/fixed_std"]
        assert h["table6"][f"resnet18/{d}/unconstrained"] == h["table1"][f"resnet18/{d}/unconstrained"]
        if not smoke:
            assert set(h["table6"].items()) <= set(h["table1"].items()) | set(h["table2"].items())
            assert h["fig3a"] == h["table6"]
        else:  # on digits, Table 2 is Table 1's four models again
            assert h["table2"] == h["table1"]
    # Every hash is unique within a suite; a different scale or seed is a different model.
    assert _hashes(SuiteRequest(suite="table1", seed=1)) != _hashes(SuiteRequest(suite="table1"))
    assert set(_hashes(SuiteRequest(suite="table1", epochs=10)).values()).isdisjoint(
        _hashes(SuiteRequest(suite="table1")).values()
    )


@pytest.mark.parametrize("model", ["resnet18", "wrn34_10", "all"])
@pytest.mark.parametrize("suite", sorted(PAPER_ROWS))
def test_assembled_tables_have_exactly_the_papers_cells(suite: str, model: str) -> None:
    req = SuiteRequest(suite=suite, smoke=True, model=model)
    out = assemble_suite(req, _fake_results(req))
    (table,) = out.tables.values()
    models = ["ResNet18", "WRN34"] if model == "all" else ["ResNet18" if model == "resnet18" else "WRN34"]
    expected = [(m, *r) for m in models for r in PAPER_ROWS[suite]]
    assert [tuple(row.labels[k] for k in table.row_keys) for row in table.rows] == expected
    assert [c.key for c in table.columns if c.paper] == PAPER_COLUMNS[suite]
    extra = [c.key for c in table.columns if not c.paper]
    assert extra == (["eotpgd"] if suite in ("table1", "table2", "table4", "table7") else [])
    for row in table.rows:
        assert set(row.cells) == {c.key for c in table.columns} and row.complete
        assert all(cell.ours is not None for cell in row.cells.values())
    assert out.missing == []


def test_paper_values_beside_ours() -> None:
    req = SuiteRequest(suite="table1", smoke=True, model="all")
    table = assemble_suite(req, _fake_results(req)).tables["table1"]
    ctrw = next(r for r in table.rows if r.labels == {"model": "ResNet18", "method": "CTRW (ours)"})
    assert {k: c.paper for k, c in ctrw.cells.items()} == {
        "natural": 83.69, "pgd20": 69.48, "fgsm": 66.49, "autoattack": 73.56, "cw": 82.93, "mifgsm": 65.47,
        "deepfool": 82.45, "eotpgd": None,
    }  # fmt: skip
    assert ctrw.cells["pgd20"].ours == 50.0 and ctrw.cells["pgd20"].ci_low == 40.0
    # The paper's Section 4.2 differences agree with the transcribed cells.
    for table_, model, pgd, aa in ((pv.TABLE1, "resnet18", 17.32, 25.87), (pv.TABLE1, "wrn34_10", 16.28, 21.99),
                                   (pv.TABLE2, "resnet18", 13.3, 21.10)):  # fmt: skip
        gain = {
            c: table_[(model, "ctrw")][c] - table_[(model, "baseline")][c] for c in ("pgd20", "autoattack")
        }  # type: ignore[operator]
        assert gain == pytest.approx({"pgd20": pgd, "autoattack": aa})
    # Illegible cells are empty with a note; derived ones are noted.
    assert pv.TABLE4[("resnet18", "filters")] == {"natural": None, "pgd20": None}
    assert pv.TABLE2[("wrn34_10", "ctrw")]["natural"] is None
    assert pv.TABLE2[("wrn34_10", "ctrw")]["pgd20"] == 44.33
    table2 = assemble_suite(SuiteRequest(suite="table2", smoke=True, model="all"), {}).tables["table2"]
    assert any("12.64" in n for n in table2.notes) and any("31 97" in n for n in table2.notes)
    assert any(
        "filters" in n for n in assemble_suite(SuiteRequest(suite="table4"), {}).tables["table4"].notes
    )
    table5 = assemble_suite(SuiteRequest(suite="table5", model="all"), {}).tables["table5"]
    assert [(r.cells["pgd20"].paper, r.cells["pgd20"].paper_std) for r in table5.rows] == [
        (69.27, 0.28),
        (70.87, 0.31),
    ]
    table6 = assemble_suite(SuiteRequest(suite="table6"), {}).tables["table6"]
    assert [r.cells["ratio"].paper for r in table6.rows] == [0.4558, 0.0, 0.4124, 0.0]


def test_missing_sub_jobs_leave_empty_cells_and_are_listed() -> None:
    req = SuiteRequest(suite="table7", smoke=True)
    out = assemble_suite(req, _fake_results(req, fail={"resnet18/digits/fixed_sigma@mid"}))
    assert out.missing == ["resnet18/digits/fixed_sigma@mid"]
    mid = next(r for r in out.tables["table7"].rows if r.labels["value of sigma"] == "Fixed to mid value")
    assert not mid.complete and mid.cells["pgd20"].ours is None and mid.cells["pgd20"].paper == 67.50
    assert assemble_suite(req, {}).missing == [j.key for j in expand_suite(req)]


def test_figure_data() -> None:
    req = SuiteRequest(suite="fig3b", smoke=True)
    fig = assemble_suite(req, _fake_results(req)).figures["fig3b"]
    assert fig["kind"] == "sigma_sweep" and fig["image_area"] == 64
    assert [p["k"] for p in fig["points"]] == [0, 0.5, 1, 2, 4, 6]
    assert fig["bounds"] == {"lower": 32.0, "upper": 96.0} and fig["paper"]["bound_upper"] == 2400.0
    req = SuiteRequest(suite="fig3c", smoke=True)
    fig = assemble_suite(req, _fake_results(req)).figures["fig3c"]
    assert fig["steps"] == [0, 1, 2, 3] and fig["series"]["adaptive"] == [50.0] * 4
    req = SuiteRequest(suite="fig3a", model="all", smoke=True)
    fig = assemble_suite(req, _fake_results(req)).figures["fig3a"]
    assert [p["number"] for p in fig["panels"]] == [str(i) for i in range(1, 9)]
    assert fig["panels"][0]["constrain"] == "without" and fig["panels"][-1]["constrain"] == "with (CTRW)"
    req = SuiteRequest(suite="fig3d", model="all", smoke=True)
    figs = assemble_suite(req, _fake_results(req)).figures
    assert sorted(figs) == ["fig3d_resnet18", "fig3d_wrn34_10"] and figs["fig3d_wrn34_10"]["positions"] == [
        0,
        1,
        2,
        3,
        4,
    ]


def test_rendering() -> None:
    req = SuiteRequest(suite="table1", smoke=True)
    table = assemble_suite(req, _fake_results(req)).tables["table1"]
    md = render_suite_table(table, "markdown")
    assert "| model | method | Natural | Natural [paper] | PGD-20 | PGD-20 [paper] |" in md
    assert "| ResNet18 | CTRW (ours) | 50.00 [40.00, 60.00] | 83.69 |" in md
    rows = list(csv.DictReader(io.StringIO(render_suite_table(table, "csv"))))
    assert len(rows) == 4 and rows[3]["natural_paper_pct"] == "83.69" and rows[3]["eotpgd_pct"] == "50.0"
    assert "eotpgd_paper_pct" not in rows[0]
    latex = render_suite_table(table, "latex")
    assert r"\toprule" in latex and "83.69" in latex and "EOT-PGD (adaptive)" in latex
    req5 = SuiteRequest(suite="table5", smoke=True)
    md5 = render_suite_table(assemble_suite(req5, _fake_results(req5)).tables["table5"], "markdown")
    assert "50.00 ± 1.00" in md5 and "69.27 ± 0.28" in md5
    with pytest.raises(ValueError, match="unknown format"):
        render_suite_table(table, "html")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"suite": "table8"}, "suite"),
        ({"suite": "table1", "model": "vgg"}, "model"),
        ({"suite": "table1", "epochs": 0}, "epochs"),
        ({"suite": "table1", "smoke": True, "dataset": "cifar10"}, "dataset"),
        ({"suite": "table1", "overrides": {"variant": "baseline"}}, "variant"),
        ({"suite": "table1", "overrides": {"evaluation": {"attacks": []}}}, "evaluation.attacks"),
        ({"suite": "table1", "overrides": {"optim": {"lr": -1}}}, "overrides: optim.lr"),
        ({"suite": "table1", "colour": "red"}, "colour"),
    ],
)
def test_bad_requests_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as e:
        SuiteRequest.model_validate(body)
    assert field in str(e.value)


def test_attack_columns_follow_the_scale() -> None:
    assert attack_column(SuiteRequest(suite="table1"), "pgd20") == ("pgd20", "paper")
    assert attack_column(SuiteRequest(suite="table1", smoke=True), "pgd20") == ("pgd2", "paper")
    assert attack_column(SuiteRequest(suite="table1"), "eotpgd") == ("eotpgd100", "adaptive")


def test_suites_import_no_torch() -> None:
    code = "import sys, ctrw.paper, ctrw.paper.values; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
