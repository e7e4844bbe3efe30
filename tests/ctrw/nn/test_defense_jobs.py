"""Every defense trained and evaluated end to end through ``ctrw.jobs`` on the real digits data,
under both protocols, with the adaptive attacks (EOT-PGD, transfer from the surrogate) and the
diagnostics that look at the model."""

import math

import pytest
import torch

from ctrw.checkpoint import load_checkpoint
from ctrw.config import EvalConfig, TrainConfig
from ctrw.hooks import Cancelled, Hooks
from ctrw.jobs import run_evaluation, run_training
from ctrw.nn.randomness import random_modules
from ctrw.training import load_trained_model

DEFENSE_VARIANTS = ("pgd_at_es", "additive_noise", "resize_pad", "rna", "pni", "dwq")

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


class CancelInEpoch(Hooks):
    def __init__(self, epoch: int) -> None:
        self.epoch, self.current = epoch, 0

    def on_progress(self, p) -> None:
        self.current = p.epoch

    def should_cancel(self) -> bool:
        return self.current >= self.epoch


@pytest.mark.parametrize("variant", ["additive_noise", "rna", "pni", "dwq"])
def test_a_defense_resumes_bit_for_bit(variant, tmp_path):
    """Every random module's generator is in the checkpoint: 1 epoch + resume + 1 = 2 epochs."""
    cfg = TrainConfig.model_validate({"variant": variant, **TINY_DIGITS, "val_pgd_steps": 0})
    run_training(cfg, run_dir=tmp_path / "straight")
    with pytest.raises(Cancelled):
        run_training(cfg, run_dir=tmp_path / "resumed", hooks=CancelInEpoch(2))
    run_training(cfg, run_dir=tmp_path / "resumed")
    a, _ = load_checkpoint(tmp_path / "straight" / "last.safetensors")
    b, _ = load_checkpoint(tmp_path / "resumed" / "last.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("rng.layer.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_the_paper_protocol_overstates_random_resize_and_pad_on_digits(tmp_path):
    """Attacking one fixed draw and judging with another (the published protocol) scores higher
    than EOT-PGD against the deployed model: the gap the adaptive protocol exists to expose.

    resize_pad trained with its transform (``in_training``): on 8x8 digits the paper's recipe (no
    training with it) loses most clean accuracy, since a one-pixel shift is an eighth of the image.
    Measured here (seeded, CPU): paper PGD-20 0.80 [0.73, 0.86], adaptive EOT-PGD-20 0.69
    [0.66, 0.72]. additive_noise (std 0.25-0.5) and pni showed no such gap on digits (within 0.04).
    """
    cfg = TrainConfig.model_validate({
        **TINY_DIGITS,
        "variant": "resize_pad",
        "defense": {"resize_pad": {"in_training": True}},
        "model": {"name": "small_cnn", "width": 0.5},
        "data": {**TINY_DIGITS["data"], "train_subset": None},
        "optim": {"epochs": 8, "batch_size": 64, "lr": 0.05, "milestones": [100]},
        "attack": {"steps": 3, "eps": 0.1, "step_size": 0.04},
    })  # fmt: skip
    summary = run_training(cfg, run_dir=tmp_path)
    pgd = {"eps": 0.1, "step_size": 0.02, "steps": 20}
    ev = EvalConfig.model_validate(
        {
            "attacks": [{"name": "pgd", **pgd}, {"name": "eotpgd", **pgd, "eot_draws": 8}],
            "protocol": "both",
            "n_examples": 256,
            "batch_size": 32,
            "score_draws": 8,
            "diagnostics": False,
        }  # fmt: skip
    )
    rows = {
        (r["attack"], r["protocol"]): r for r in run_evaluation(summary["best_checkpoint"], ev, cfg)["rows"]
    }
    paper, adaptive = rows[("pgd20", "paper")], rows[("eotpgd20", "adaptive")]
    assert paper["accuracy"] - adaptive["accuracy"] >= 0.05, (paper["accuracy"], adaptive["accuracy"])
