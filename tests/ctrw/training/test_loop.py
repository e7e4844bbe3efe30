"""Algorithm 1 training: exact resume, constraint during training, variants, digits AT vs ST."""

from pathlib import Path

import pytest
import torch

from ctrw.attacks.pgd import pgd_linf
from ctrw.checkpoint import CheckpointError, load_checkpoint
from ctrw.config import TrainConfig
from ctrw.hooks import Cancelled, Hooks
from ctrw.jobs import load_test_tensors
from ctrw.nn.random_weight import random_layers
from ctrw.training import TrainState, load_trained_model, lr_at, train
from tests.support.models import train_config


def tiny(**over) -> TrainConfig:
    base = {
        "model": {"name": "small_cnn", "width": 0.25},
        "data": {
            "dataset": "synthetic",
            "image_size": 8,
            "channels": 1,
            "synthetic_train": 160,
            "synthetic_test": 64,
            "augment": True,
        },
        "optim": {"epochs": 2, "batch_size": 32, "milestones": [1]},
        "attack": {"steps": 2},
        "val_pgd_steps": 2,
        "val_examples": 32,
        "bounds": {"lower": {"kind": "fraction", "value": 0.5}, "upper": {"kind": "fraction", "value": 1.5}},
        "evaluation": None,
        "amp": False,
    }
    return train_config(base, over)


class CancelAt(Hooks):
    def __init__(self, epoch: int) -> None:
        self.epoch, self.current, self.records = epoch, 0, []

    def on_progress(self, p) -> None:
        self.current = p.epoch

    def on_epoch(self, r) -> None:
        self.records.append(r)

    def should_cancel(self) -> bool:
        return self.current >= self.epoch


def _weights(path: Path) -> dict[str, torch.Tensor]:
    tensors, _ = load_checkpoint(path)
    return tensors


def test_exact_resume_two_epochs_equal_one_plus_resume_plus_one(tmp_path):
    cfg = tiny()
    train(cfg, run_dir=tmp_path / "straight")
    with pytest.raises(Cancelled):
        train(cfg, run_dir=tmp_path / "resumed", hooks=CancelAt(epoch=2))  # stops in epoch 2, keeps epoch 1
    assert load_checkpoint(tmp_path / "resumed" / "last.safetensors")[1]["epoch"] == 1
    hooks = CancelAt(epoch=99)
    summary = train(cfg, run_dir=tmp_path / "resumed", hooks=hooks)
    assert summary["epochs_done"] == 2
    assert [r["epoch"] for r in hooks.records] == [1, 2]  # history re-emitted, then the new epoch
    a, b = (
        _weights(tmp_path / "straight" / "last.safetensors"),
        _weights(tmp_path / "resumed" / "last.safetensors"),
    )
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    train(tiny(optim={"epochs": 1}), run_dir=tmp_path)
    with pytest.raises(CheckpointError, match="different config"):
        train(tiny(optim={"epochs": 1}, seed=5), run_dir=tmp_path)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    train(tiny(optim={"epochs": 1}), run_dir=tmp_path)
    (tmp_path / "last.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_trained_model(tmp_path / "last.safetensors")


@pytest.mark.parametrize(
    "rule,lower", [("sum", {"kind": "fraction", "value": 0.5}), ("floor", {"kind": "fixed", "value": 32.0})]
)
def test_constraint_holds_after_every_training_step(rule, lower):
    upper = {"kind": "fraction", "value": 0.6} if rule == "sum" else None
    # Strong weight decay pulls sigma towards 0 at every step, so the rule must act every time.
    cfg = tiny(
        bounds={"rule": rule, "lower": lower, "upper": upper},
        optim={"epochs": 1, "lr": 0.5, "weight_decay": 1.0},
    )
    run = TrainState.create(cfg)
    layer = random_layers(run.model)[0]
    n = layer.sigma.numel()
    sums = []

    class Check(Hooks):
        def on_progress(self, p) -> None:  # called after step + constraint
            s = layer.sigma.detach()
            sums.append(float(s.sum()))
            assert (s >= 0).all()
            if rule == "sum":
                assert 0.5 * n - 1e-3 <= float(s.sum()) <= 0.6 * n + 1e-3
            else:
                assert float(s.min()) >= 32.0 / n - 1e-6

    run.train_epoch(Check())
    assert len(sums) == 4  # 144 training examples (16 held out for validation) / batch 32
    if rule == "sum":  # weight decay keeps pushing sum(sigma) below the bound; the rule lifts it back
        assert sums == pytest.approx([0.5 * n] * 4, abs=1e-3)


def test_unconstrained_with_weight_decay_drives_sum_sigma_down(tmp_path):
    cfg = tiny(variant="unconstrained", optim={"epochs": 3, "weight_decay": 5e-2, "milestones": [10]})
    records = []

    class Rec(Hooks):
        def on_epoch(self, r) -> None:
            records.append(r)

    train(cfg, run_dir=tmp_path, hooks=Rec())
    n = 64
    sums = [r["sigma_sum"] for r in records]
    assert sums[0] < n and sums[-1] < sums[0]


def test_fixed_variants_freeze_sigma_at_the_bound(tmp_path):
    for variant, at, expected in [
        ("fixed_std", "lower", 0.5),
        ("fixed_sigma", "upper", 1.5),
        ("fixed_sigma", "mid", 1.0),
    ]:
        cfg = tiny(variant=variant, fixed_sigma_at=at, optim={"epochs": 1})
        train(cfg, run_dir=tmp_path / f"{variant}-{at}")
        model, _, _ = load_trained_model(tmp_path / f"{variant}-{at}" / "last.safetensors")
        sigma = random_layers(model)[0].sigma.detach()
        assert torch.allclose(sigma, torch.full_like(sigma, expected)), (variant, at)


def test_baseline_has_no_random_layer_and_records_no_sigma(tmp_path):
    records = []

    class Rec(Hooks):
        def on_epoch(self, r) -> None:
            records.append(r)

    train(tiny(variant="baseline", optim={"epochs": 1}), run_dir=tmp_path, hooks=Rec())
    model, _, _ = load_trained_model(tmp_path / "best.safetensors")
    assert random_layers(model) == [] and records[0]["sigma_sum"] is None
    assert {
        "train_loss",
        "train_clean_acc",
        "train_adv_acc",
        "val_clean_acc",
        "val_pgd_acc",
        "lr",
        "seconds",
    } <= set(records[0])


def test_lemma_bounds_are_computed_and_recorded(tmp_path):
    cfg = tiny(
        bounds={"lower": {"kind": "lemma1", "alpha": -0.5}, "upper": {"kind": "lemma2", "eps_y": 5.0}},
        optim={"epochs": 1},
    )
    records = []

    class Rec(Hooks):
        def on_epoch(self, r) -> None:
            records.append(r)

    train(cfg, run_dir=tmp_path, hooks=Rec())
    r = records[0]
    assert r["bound_lower"] is not None and r["bound_lower"] > 0
    assert r["bound_upper"] is not None and r["bound_upper"] > 0


def test_learning_rate_schedules():
    cfg = TrainConfig()
    assert [lr_at(cfg, e) for e in (0, 99, 100, 149, 150, 199)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )
    cos = TrainConfig.model_validate({"optim": {"schedule": "cosine", "lr": 0.02, "epochs": 90}})
    assert lr_at(cos, 0) == pytest.approx(0.02) and lr_at(cos, 45) == pytest.approx(0.01)


@pytest.mark.slow
def test_on_digits_adversarial_training_beats_standard_training_under_pgd(tmp_path):
    eps = 0.1
    robust = {}
    for steps in (0, 5):
        cfg = TrainConfig.model_validate(
            {
                "variant": "baseline",
                "model": {"name": "small_cnn", "width": 0.5},
                "data": {"dataset": "digits", "image_size": 8, "channels": 1, "augment": False},
                "optim": {"epochs": 10, "batch_size": 64, "lr": 0.05, "milestones": [8]},
                "attack": {"steps": steps, "eps": eps, "step_size": eps / 4},
                "val_pgd_steps": 0,
                "amp": False,
                "evaluation": None,
            }
        )
        train(cfg, run_dir=tmp_path / str(steps))
        model, _, _ = load_trained_model(tmp_path / str(steps) / "last.safetensors")
        model.eval()
        x, y, _ = load_test_tensors(cfg, None)
        assert (model(x).argmax(1) == y).float().mean() > 0.9  # both learn the task
        x_adv = pgd_linf(model, x, y, eps=eps, step_size=eps / 4, steps=10)
        robust[steps] = float((model(x_adv).argmax(1) == y).float().mean())
    assert robust[5] > robust[0] + 0.2, robust


@pytest.mark.parametrize(
    "randomness,expected_mode,draws",
    [("blackbox", "fixed", 1), ("adaptive", "per_forward", 1), ("eot", "per_forward", 3)],
)
def test_training_attack_faces_the_configured_randomness(randomness, expected_mode, draws):
    cfg = tiny(attack={"steps": 2, "randomness": randomness, "eot_draws": 3}, optim={"epochs": 1})
    run = TrainState.create(cfg)
    layer = random_layers(run.model)[0]
    seen = []
    handle = layer.register_forward_hook(lambda m, i, o: seen.append((m.mode, i[0].shape[0])))
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    x_adv = run.attack(x, y)
    handle.remove()
    assert len(seen) == 2 and all(mode == expected_mode and b == 8 * draws for mode, b in seen)
    assert layer.mode == "fixed"  # restored after the attack
    assert (x_adv - x).abs().max() <= cfg.attack.eps + 1e-6
