"""The job entry points end to end on the real digits data: train, every paper attack, sigma stats, CLI."""

import json

import pytest

from ctrw.cli import main
from ctrw.config import EvalConfig, TrainConfig
from ctrw.hooks import Hooks
from ctrw.jobs import run_evaluation, run_sigma_stats, run_training
from ctrw.training import setup
from tests.support.configs import DIGITS_LEMMA_TRAIN, merged

DIGITS_CTRW = merged(
    DIGITS_LEMMA_TRAIN,
    name="digits-ctrw",
    data={"train_subset": 400},
    optim={"epochs": 2, "batch_size": 64, "lr": 0.05, "milestones": [10]},
    attack={"eps": 0.1, "step_size": 0.05},
    val_examples=40,
)

# Every Table 1 attack, with the step counts cut down so the test stays fast on a CPU.
PAPER_ATTACKS_SMALL = [
    {"name": "clean"},
    {"name": "pgd", "steps": 3},
    {"name": "fgsm"},
    {"name": "autoattack", "steps": 3, "queries": 20},
    {"name": "cw", "steps": 10, "c": 1.0},
    {"name": "mifgsm"},
    {"name": "deepfool", "steps": 5},
]
PAPER_EVAL_SMALL = {
    "attacks": PAPER_ATTACKS_SMALL,
    "n_examples": 24,
    "batch_size": 24,
    "score_draws": 2,
    "diagnostics": False,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = TrainConfig.model_validate(DIGITS_CTRW)
    run_dir = tmp_path_factory.mktemp("digits")
    summary = run_training(cfg, run_dir=run_dir)
    return cfg, summary


def test_every_paper_attack_runs_on_a_digits_ctrw_model(trained):
    cfg, summary = trained
    ev = EvalConfig.model_validate(PAPER_EVAL_SMALL)
    rows = []

    class Collect(Hooks):
        def on_result(self, r):
            rows.append(r)

    out = run_evaluation(summary["best_checkpoint"], ev, cfg, hooks=Collect())
    assert [r["name"] for r in out["rows"]] == [a["name"] for a in PAPER_ATTACKS_SMALL]
    assert rows == out["rows"]
    for r in out["rows"]:
        assert r["protocol"] == "paper" and r["n"] == 24
        assert 0.0 <= r["ci_low"] <= r["accuracy"] <= r["ci_high"] <= 1.0, r


def test_the_channels_last_layout_gives_every_paper_attack_the_same_rows(trained, monkeypatch):
    """CPU stand-in for CUDA evaluation, which runs the model channels_last: gradients with respect
    to the NCHW images then come back channels_last, and every attack must take them unchanged."""
    cfg, summary = trained
    ev = EvalConfig.model_validate(PAPER_EVAL_SMALL)
    contiguous = run_evaluation(summary["best_checkpoint"], ev, cfg)["rows"]
    switched = []
    monkeypatch.setattr(setup, "uses_channels_last", lambda config, device: switched.append(1) or True)
    channels_last = run_evaluation(summary["best_checkpoint"], ev, cfg)["rows"]
    assert switched
    for a, b in zip(contiguous, channels_last, strict=True):
        assert (a["attack"], a["n"]) == (b["attack"], b["n"])
        assert a["accuracy"] == pytest.approx(b["accuracy"], abs=1 / 24), a["attack"]


def test_sigma_stats_of_the_trained_model(trained):
    cfg, summary = trained
    stats = run_sigma_stats(summary["best_checkpoint"], cfg, n_pairs=500)
    (layer,) = stats["layers"]
    assert layer["numel"] == 64 and layer["bound_lower"] > 0
    assert layer["table6"]["n_pairs"] == 500 and -1 <= layer["table6"]["min_cos"] <= 1
    assert [e["epoch"] for e in stats["epochs"]] == [1, 2]


def test_cli_train_prints_the_table_and_writes_json(tmp_path, capsys):
    cfg = dict(
        DIGITS_CTRW,
        optim={"epochs": 1, "batch_size": 64},
        evaluation={
            "attacks": [{"name": "clean"}, {"name": "pgd", "steps": 2}],
            "n_examples": 16,
            "score_draws": 2,
            "diagnostics": False,
        },
    )
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    assert main(["train", str(path), "--run-dir", str(tmp_path / "run"), "--pairs", "200"]) == 0
    out = capsys.readouterr().out
    assert "| model | variant |" in out and "pgd2 (paper)" in out
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert {r["attack"] for r in saved["rows"]} == {"clean", "pgd2"}
    assert (tmp_path / "run" / "sigma.json").is_file()
    assert main(["sigma-stats", str(tmp_path / "run" / "best.safetensors"), "--pairs", "200"]) == 0
    assert "Table 6" in capsys.readouterr().out
