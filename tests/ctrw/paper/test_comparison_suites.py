"""The comparison suites (issue 13): the zoo of every registered defense, the paper's Table 3,
and the ImageNet experiment: expansion, the paper's values beside ours, assembly and figures.
(End to end through the API: tests/service/e2e/test_zoo.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ctrw.catalog import DEFENSES
from ctrw.paper import SuiteRequest, assemble_suite, attack_column, expand_suite
from ctrw.paper import values as pv
from ctrw.paper.experiments import zoo
from ctrw.paper.keys import SubJobKey


def _results(req: SuiteRequest, accuracy: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """Every sub-job succeeded; each row at ``accuracy[protocol]`` (0.5 by default)."""
    accuracy = accuracy or {}
    out: dict[str, dict[str, Any]] = {}
    for job in expand_suite(req):
        evaluation = job.config.evaluation if job.config is not None else job.evaluation
        assert evaluation is not None
        rows = []
        for spec in evaluation.attacks:
            protocol = spec.protocol or evaluation.protocol
            for p in ("paper", "adaptive") if protocol == "both" else (protocol,):
                acc = accuracy.get(p, 0.5)
                rows.append({"attack": spec.column, "protocol": p, "accuracy": acc, "ci_low": acc - 0.05,
                             "ci_high": acc + 0.05, "n": 64})  # fmt: skip
        out[job.key] = {"status": "succeeded", "rows": rows, "sigma": None, "epochs": []}
    return out


@pytest.mark.parametrize("smoke", [True, False])
def test_zoo_trains_every_registered_defense_and_attacks_it_under_both_protocols(smoke: bool) -> None:
    req = SuiteRequest(suite="zoo", smoke=smoke)
    jobs = expand_suite(req)
    trained = [SubJobKey.parse(j.key).variant for j in jobs if j.kind == "train"]
    assert trained == list(DEFENSES)
    attacks = [j for j in jobs if j.kind == "attack"]
    assert len(attacks) == len(DEFENSES)
    for job in attacks:
        assert job.evaluation is not None
        assert job.evaluation.protocol == "both" and job.evaluation.diagnostics
        columns = [
            attack_column(req, c, **zoo.column_settings(req, c))[0] for c in ("natural", "pgd20", "eotpgd")
        ]
        assert [a.column for a in job.evaluation.attacks] == columns
        assert [a.eps for a in job.evaluation.attacks[1:]] == ([0.1, 0.1] if smoke else [None, None])
        if smoke:  # PGD-10 and EOT-PGD-10 over 8 draws, every test image, batches of 16
            assert columns[1:] == ["pgd10", "eotpgd10"] and job.evaluation.attacks[2].eot_draws == 8
            assert job.evaluation.n_examples is None and job.evaluation.batch_size == 16
    table1 = {j.key: j.config for j in expand_suite(SuiteRequest(suite="table1", smoke=smoke))}
    for job in (j for j in jobs if j.kind == "train"):
        assert job.config is not None
        if not smoke:
            # The same defense in another suite is the same training job (one key, one config).
            assert job.key not in table1 or job.config == table1[job.key]
            continue
        # The smoke version's own recipe: all of digits, adversarial training at the table's budget.
        assert job.config.data.train_subset is None and job.config.data.test_subset is None
        assert job.config.attack.eps == 0.1 and job.config.attack.steps == 3 and job.config.optim.epochs == 10
        assert job.config.defense.resize_pad.in_training and job.config.defense.rna.group_sizes == [4]
        assert [a.name for a in job.config.evaluation.attacks] == ["clean"]
        assert job.key not in table1 or job.config != table1[job.key]


def test_zoo_table_and_figure_show_the_gap_per_defense() -> None:
    req = SuiteRequest(suite="zoo", smoke=True)
    out = assemble_suite(req, _results(req, {"paper": 0.8, "adaptive": 0.3}))
    table = out.tables["zoo"]
    assert [r.labels["defense"] for r in table.rows] == list(DEFENSES)
    assert [c.key for c in table.columns] == ["natural", "pgd20_paper", "pgd20_adaptive", "eotpgd", "gap"]
    for row in table.rows:
        assert row.complete
        assert row.cells["pgd20_paper"].ours == 80.0 and row.cells["eotpgd"].ours == 30.0
        assert row.cells["gap"].ours == 50.0
        assert row.labels["randomized"] == ("yes" if DEFENSES[row.labels["defense"]].randomized else "no")
    figure = out.figures["zoo"]
    assert figure["kind"] == "zoo" and figure["defenses"] == list(DEFENSES)
    assert figure["series"]["paper"] == [80.0] * len(DEFENSES)
    assert figure["ci_low"]["adaptive"] == [25.0] * len(DEFENSES)
    assert out.missing == []


def _flag_gap(req: SuiteRequest, results: dict[str, dict[str, Any]], variant: str) -> None:
    """Give ``variant``'s attack sub-job a fired protocol_gap diagnostic."""
    key = next(
        j.key for j in expand_suite(req) if j.kind == "attack" and SubJobKey.parse(j.key).variant == variant
    )
    results[key]["diagnostics"] = [{"name": "protocol_gap", "fired": True, "verdict": "overestimated by 50 points",
                                    "details": {"applicable": True}}]  # fmt: skip


def test_zoo_figure_marks_the_defenses_the_paper_protocol_overestimates() -> None:
    req = SuiteRequest(suite="zoo", smoke=True)
    results = _results(req, {"paper": 0.8, "adaptive": 0.3})
    _flag_gap(req, results, "additive_noise")
    figure = assemble_suite(req, results).figures["zoo"]
    assert figure["overestimated"] == [name == "additive_noise" for name in DEFENSES]
    assert figure["paper_attack"] == "PGD-10"  # the smoke version's PGD
    assert (
        assemble_suite(SuiteRequest(suite="zoo"), _results(SuiteRequest(suite="zoo"))).figures["zoo"][
            "paper_attack"
        ]
        == "PGD-20"
    )


def test_zoo_figure_draws(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from ctrw.figures import render_figures

    req = SuiteRequest(suite="zoo", smoke=True)
    results = _results(req, {"paper": 0.8, "adaptive": 0.3})
    _flag_gap(req, results, "resize_pad")
    assembly = assemble_suite(req, results).model_dump(mode="json")
    paths = render_figures(assembly, tmp_path)
    assert paths["zoo"]["png"].stat().st_size > 1000 and paths["zoo"]["svg"].is_file()
    svg = paths["zoo"]["svg"].read_text()
    # The legend names the smoke version's PGD; the footer explains the stars.
    assert "PGD-10, paper protocol" in svg and "protocol_gap" in svg


def test_table3_keeps_the_papers_rows_and_quotes_beside_ours() -> None:
    req = SuiteRequest(suite="table3", smoke=True)
    out = assemble_suite(req, _results(req))
    table = out.tables["table3"]
    assert [r.labels["method"] for r in table.rows] == [label for label, _ in pv.TABLE3_ROWS]
    assert [c.key for c in table.columns if c.paper] == list(pv.TABLE3_COLUMNS)
    assert [c.key for c in table.columns if not c.paper] == ["eotpgd", "autoattack_rand"]
    for row, (label, variant) in zip(table.rows, pv.TABLE3_ROWS, strict=True):
        for column in pv.TABLE3_COLUMNS:
            assert row.cells[column].paper == pv.TABLE3[label][column]
        if variant is None:  # quoted only: the paper's numbers, no sub-job, said so
            assert row.sub_jobs == [] and "not implemented" in row.labels["ours"]
            assert all(cell.ours is None for cell in row.cells.values())
        else:
            assert variant in DEFENSES and row.complete
            assert row.cells["pgd20"].ours == 50.0 and row.cells["autoattack_rand"].ours == 50.0
            assert row.cells["imagenet_pgd10"].ours is None  # the imagenet suite's
    ctrw = pv.TABLE3["CTRW (ours)"]
    assert (ctrw["pgd20"], ctrw["autoattack"], ctrw["imagenet_pgd10"], ctrw["imagenet_pgd50"]) == (
        71.34,
        74.35,
        59.29,
        60.16,
    )
    assert any("quoted numbers only" in n for n in table.notes)
    # Without the adaptive columns: the paper's four only.
    plain = assemble_suite(SuiteRequest(suite="table3", smoke=True, adaptive=False), {}).tables["table3"]
    assert [c.key for c in plain.columns] == list(pv.TABLE3_COLUMNS)


def test_imagenet_suite_is_the_papers_recipe() -> None:
    jobs = expand_suite(SuiteRequest(suite="imagenet"))
    assert [j.key for j in jobs] == ["resnet50/imagenet/baseline", "resnet50/imagenet/ctrw"]
    cfg = jobs[1].config
    assert cfg is not None and cfg.evaluation is not None
    assert (cfg.model.name, cfg.data.dataset, cfg.variant) == ("resnet50", "imagenet", "ctrw")
    assert (cfg.optim.batch_size, cfg.optim.lr, cfg.optim.schedule, cfg.optim.epochs) == (
        1024,
        0.02,
        "cosine",
        90,
    )
    assert (cfg.attack.steps, cfg.attack.eps, cfg.attack.step_size) == (2, 4 / 255, 1 / 255)
    pgd = [a for a in cfg.evaluation.attacks if a.name == "pgd"]
    assert [(a.steps, a.eps) for a in pgd] == [(10, 4 / 255), (50, 4 / 255)]
    # Scale knobs apply on top of the recipe.
    small = expand_suite(SuiteRequest(suite="imagenet", epochs=3, train_subset=100))[0].config
    assert small is not None and (small.optim.epochs, small.data.train_subset, small.optim.lr) == (
        3,
        100,
        0.02,
    )


def test_imagenet_smoke_assembles_with_the_papers_values() -> None:
    req = SuiteRequest(suite="imagenet", smoke=True)
    jobs = expand_suite(req)
    assert all(j.config is not None and j.config.data.dataset == "imagenet" for j in jobs)
    out = assemble_suite(req, _results(req))
    table = out.tables["imagenet"]
    ctrw = next(r for r in table.rows if r.labels["method"] == "CTRW (ours)")
    assert (ctrw.cells["pgd10"].paper, ctrw.cells["pgd50"].paper) == (59.29, 60.16)
    assert ctrw.cells["pgd10"].ours == 50.0 and ctrw.cells["eotpgd"].ours == 50.0
