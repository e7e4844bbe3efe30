"""Every defense trained and evaluated end to end through ``ctrw.jobs`` on the real digits data,
under both protocols, with the adaptive attacks (EOT-PGD, transfer from the surrogate) and the
diagnostics that look at the model."""

import math

import pytest

from ctrw.config import EvalConfig, TrainConfig
from ctrw.jobs import run_evaluation, run_training
from ctrw.nn.randomness import random_modules
from ctrw.training import load_trained_model

DEFENSE_VARIANTS = ("pgd_at_es", "additive_noise", "resize_pad", "rna", "pni")

TINY_DIGITS = {
    "model": {"name": "small_cnn", "width": 0.25},
    "data": {"dataset": "digits", "image_size": 8, "channels": 1, "augment": False, "train_subset": 256},
    "optim": {"epochs": 2, "batch_size": 64, "lr": 0.05, "milestones": [10]},
    "attack": {"steps": 2, "eps": 0.1, "step_size": 0.05},
    "val_pgd_steps": 2,
    "val_examples": 64,
    "evaluation": None,
    "amp": False,
    "device": "cpu",
}
ATTACKS = [
    {"name": "clean"},
    {"name": "pgd", "steps": 3, "eps": 0.1, "step_size": 0.04},
    {"name": "eotpgd", "steps": 3, "eps": 0.1, "step_size": 0.04, "eot_draws": 2},
    {"name": "transfer_mean", "steps": 3, "eps": 0.1, "step_size": 0.04},
]


@pytest.mark.parametrize("variant", DEFENSE_VARIANTS)
def test_a_defense_trains_and_is_evaluated_under_both_protocols(variant, tmp_path):
    cfg = TrainConfig.model_validate({"variant": variant, "name": f"digits-{variant}", **TINY_DIGITS})
    summary = run_training(cfg, run_dir=tmp_path)
    assert summary["epochs_done"] == 2
    model, _, _ = load_trained_model(tmp_path / "best.safetensors")
    assert bool(random_modules(model)) == (variant != "pgd_at_es")
    ev = EvalConfig.model_validate(
        {
            "attacks": ATTACKS,
            "protocol": "both",
            "n_examples": 64,
            "batch_size": 32,
            "score_draws": 2,
            "diagnostics": variant == "additive_noise",
        }  # fmt: skip
    )
    out = run_evaluation(tmp_path / "best.safetensors", ev, cfg)
    rows = {(r["attack"], r["protocol"]): r for r in out["rows"]}
    assert len(rows) == 2 * len(ATTACKS)
    for r in rows.values():
        assert 0.0 <= r["ci_low"] <= r["accuracy"] <= r["ci_high"] <= 1.0 and math.isfinite(r["accuracy"])
    if variant == "pgd_at_es":  # deterministic: both protocols are the same attack on the same model
        for a in ("clean", "pgd3", "transfer_mean3"):
            assert rows[(a, "paper")]["accuracy"] == rows[(a, "adaptive")]["accuracy"]
    if ev.diagnostics:
        randomness = next(d for d in out["diagnostics"] if d["name"] == "randomness")
        assert randomness["fired"]
        assert randomness["details"]["random_layers"] == len(random_modules(model))
