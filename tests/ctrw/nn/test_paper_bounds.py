"""The paper's sigma regime: A = 1000 and B = 2400 over 3 x 32 x 32 (per element elsewhere) by
default, Table 7 at those bounds, lemma bounds that cannot be computed never vanish silently, and
`preset: published` running AutoAttack as the published code did."""

import sys
from pathlib import Path

import pytest
import torch
import torchattacks

from ctrw.attacks.build import build_attack
from ctrw.config import (
    EvalConfig,
    PaperBound,
    TrainConfig,
    load_config_file,
    paper_bound_sum,
    published_preset,
)
from ctrw.evaluation.evaluate import evaluate
from ctrw.hooks import Hooks
from ctrw.nn.bounds import resolve_bounds
from ctrw.nn.random_weight import random_layers
from ctrw.paper import SuiteRequest, expand_suite
from ctrw.training import TrainState, build_model, train
from tests.support.models import prototype_data, train_config, trained_small_cnn


def _synthetic(side: int, channels: int) -> dict:
    return {
        "dataset": "synthetic",
        "image_size": side,
        "channels": channels,
        "synthetic_train": 64,
        "synthetic_test": 32,
        "augment": False,
    }


def tiny(**over) -> TrainConfig:
    """A small_cnn on synthetic 8x8 images with the default (paper) bounds."""
    base = {
        "model": {"name": "small_cnn", "width": 0.25},
        "data": _synthetic(8, 1),
        "optim": {"epochs": 1, "batch_size": 32, "milestones": [1]},
        "attack": {"steps": 1},
        "val_pgd_steps": 1,
        "val_examples": 16,
        "evaluation": None,
        "amp": False,
    }
    return train_config(base, over)


def _layer_bounds(cfg: TrainConfig, shape: tuple[int, int, int]):
    model = build_model(
        cfg, num_classes=10, input_shape=shape, mean=(0.5,) * shape[0], std=(0.25,) * shape[0]
    )
    x = torch.rand(8, *shape, generator=torch.Generator().manual_seed(0))
    layer = random_layers(model)[0]
    return resolve_bounds(cfg.bounds, model, layer, x), layer.sigma.numel()


# ------------------------------------------------------------------ 1. the paper's A and B


def test_default_bounds_are_the_papers_a_1000_and_b_2400_on_cifar():
    cfg = TrainConfig.model_validate({"model": {"width": 0.125}})
    assert isinstance(cfg.bounds.lower, PaperBound) and isinstance(cfg.bounds.upper, PaperBound)
    b, n = _layer_bounds(cfg, (3, 32, 32))
    assert n == 3072
    assert (b.lower, b.upper) == (1000.0, 2400.0)


@pytest.mark.parametrize(
    "model,shape,over,numel",
    [
        ("small_cnn", (1, 8, 8), {}, 64),  # digits: 64 sigma elements
        ("resnet18", (3, 32, 32), {"random_weight": {"position": 1}}, 8 * 32 * 32),  # after conv1, width 1/8
        ("resnet18", (3, 32, 32), {"random_weight": {"insertion": "both"}}, 3072),  # first of two layers
    ],
)
def test_paper_bounds_scale_per_sigma_element(model, shape, over, numel):
    cfg = TrainConfig.model_validate({"model": {"name": model, "width": 0.125}, **over})
    b, n = _layer_bounds(cfg, shape)
    assert n == numel
    assert b.lower == pytest.approx(1000 / 3072 * numel) and b.upper == pytest.approx(2400 / 3072 * numel)
    assert paper_bound_sum("lower", numel) == pytest.approx(b.lower)


def test_training_with_default_bounds_keeps_a_and_b_fixed_every_epoch(tmp_path):
    records = []

    class Rec(Hooks):
        def on_epoch(self, r) -> None:
            records.append(r)

    train(tiny(optim={"epochs": 2, "milestones": [2]}), run_dir=tmp_path, hooks=Rec())
    a, b = 1000 / 3072 * 64, 2400 / 3072 * 64
    assert [(r["bound_lower"], r["bound_upper"]) for r in records] == [
        (pytest.approx(a), pytest.approx(b))
    ] * 2
    assert all(a - 1e-3 <= r["sigma_sum"] <= b + 1e-3 for r in records)
    assert all(r["bound_events"] == [] for r in records)


# ------------------------------------------------------------------ a bound that cannot be computed


def test_lemma1_that_cannot_be_computed_at_the_start_is_an_error_naming_the_field():
    # sum(mu) = 0: Lemma 1's assumption sum(mu) >> 0 fails, so there is no A.
    cfg = tiny(random_weight={"mu_init": 0.0}, bounds={"lower": {"kind": "lemma1"}})
    with pytest.raises(ValueError, match=r"bounds\.lower: Lemma 1 has no bound here"):
        TrainState.create(cfg)


def test_lemma1_unavailable_for_an_unconstrained_run_is_a_recorded_event(tmp_path):
    cfg = tiny(variant="unconstrained", random_weight={"mu_init": 0.0}, bounds={"lower": {"kind": "lemma1"}})
    records = []

    class Rec(Hooks):
        def on_epoch(self, r) -> None:
            records.append(r)

    train(cfg, run_dir=tmp_path, hooks=Rec())
    start, epoch1 = records[0]["bound_events"]  # at the start, and again when recomputed
    assert start.startswith("start: bounds.lower") and "sum(mu) >> 0 fails" in start
    assert epoch1.startswith("epoch 1: bounds.lower") and "no bound since the start" in epoch1


def test_lemma1_lost_during_training_keeps_the_previous_bound_and_records_the_event(caplog):
    run = TrainState.create(tiny(bounds={"lower": {"kind": "lemma1", "alpha": -0.05}}))
    (before,) = run.bounds
    assert before.lower is not None and before.lower > 0
    layer = random_layers(run.model)[0]
    with torch.no_grad():
        layer.mu.fill_(-1.0)  # training drove mu negative: sum(mu) >> 0 no longer holds
    run.recompute_bounds()
    assert run.bounds[0].lower == before.lower  # kept, not None
    (event,) = run.bound_events
    assert "epoch 1: bounds.lower" in event and f"kept {before.lower} from before" in event
    assert any("Lemma 1 has no bound here" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ 2. Table 7 at the paper's bounds


@pytest.mark.parametrize("smoke", [False, True], ids=["paper-scale", "smoke"])
def test_table7_fixes_sigma_at_the_papers_a_b_and_midway(smoke):
    """Each Table 7 sub-job, built as the worker builds it (data swapped for synthetic images of
    the same shape), fixes sigma per element at A/3072, B/3072 and (A+B)/2/3072."""
    expected = {"fixed_std": 1000 / 3072, "fixed_sigma@upper": 2400 / 3072, "fixed_sigma@mid": 1700 / 3072}
    assert expected == pytest.approx(
        {"fixed_std": 0.326, "fixed_sigma@upper": 0.781, "fixed_sigma@mid": 0.553}, abs=1e-3
    )
    seen = {}
    for job in expand_suite(SuiteRequest(suite="table7", smoke=smoke)):
        tag = job.key.rsplit("/", 1)[1]
        if tag not in expected:
            continue
        shape = (
            {"data": _synthetic(8, 1)} if smoke else {"data": _synthetic(32, 3), "model": {"width": 0.0625}}
        )
        cfg = train_config(job.config.model_dump(mode="json"), {**shape, "evaluation": None, "device": "cpu"})
        run = TrainState.create(cfg)
        sigma = random_layers(run.model)[0].sigma.detach()
        assert torch.allclose(sigma, torch.full_like(sigma, expected[tag]), rtol=1e-6), (
            tag,
            float(sigma.mean()),
        )
        assert not sigma.requires_grad
        seen[tag] = float(sigma.sum())
    assert set(seen) == set(expected)
    if not smoke:
        assert seen == pytest.approx(
            {"fixed_std": 1000.0, "fixed_sigma@upper": 2400.0, "fixed_sigma@mid": 1700.0}
        )


def test_suites_train_with_the_papers_bounds():
    for smoke in (False, True):
        for suite in ("table1", "table6", "table7", "fig3a", "fig3d"):
            for job in expand_suite(SuiteRequest(suite=suite, smoke=smoke)):
                if job.config is not None and job.config.variant != "baseline":
                    b = job.config.bounds
                    assert (b.rule, b.lower.kind, b.upper.kind) == ("sum", "paper", "paper"), job.key


# ------------------------------------------------------------------ 4. published AutoAttack


def test_published_preset_runs_autoattack_as_torchattacks_wrapper_and_default_stays_100_steps():
    spec_default = TrainConfig.model_validate({"evaluation": {"attacks": [{"name": "autoattack"}]}})
    assert spec_default.evaluation.attacks[0].resolved() == {
        "eps": 8 / 255, "norm": "Linf", "steps": 100, "queries": 5000
    }  # fmt: skip
    published = published_preset(evaluation={"attacks": [{"name": "clean"}, {"name": "autoattack"}]})
    assert published.evaluation.attacks[1].resolved() == {
        "eps": 8 / 255,
        "norm": "Linf",
        "steps": 10,
        "queries": 5000,
    }
    explicit = published_preset(evaluation={"attacks": [{"name": "autoattack", "steps": 30}]})
    assert explicit.evaluation.attacks[0].steps == 30  # what a user sets wins

    # Same adversarial images as torchattacks.AutoAttack(version='standard') with its defaults.
    torch.manual_seed(0)
    model = trained_small_cnn(None).eval()
    x, y = prototype_data(8, 6)
    eps = 0.08  # one example survives APGD-CE, so APGD-T and FAB-T run too (and fool it: no Square)
    ref = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=3)(x, y)
    spec = published_preset(evaluation={"attacks": [{"name": "autoattack", "eps": eps}]}).evaluation.attacks[
        0
    ]
    ours = build_attack(spec, model, num_classes=10, seed=3)(x, y)
    assert torch.equal(ours, ref)
    # The comparison covers the later attacks: some examples survive APGD-CE alone.
    apgd = torchattacks.APGD(model, eps=eps, steps=10, n_restarts=1, seed=3, loss="ce")(x, y)
    assert bool((model(apgd).argmax(1) == y).any())


def test_published_preset_autoattack_params_are_recorded_with_the_result_row(tmp_path: Path):
    p = tmp_path / "eval.yaml"
    p.write_text(
        "preset: published\nattacks:\n  - {name: autoattack, eps: 0.2}\nscore_draws: 1\ndiagnostics: false\n"
    )
    ev = load_config_file(p, EvalConfig)
    assert isinstance(ev, EvalConfig)
    model = trained_small_cnn(None).eval()
    x, y = prototype_data(4, 5)
    (row,) = evaluate(model, x, y, ev, num_classes=10)["rows"]
    assert row["attack"] == "autoattack" and row["params"]["steps"] == 10 and row["params"]["queries"] == 5000
    bad = tmp_path / "bad.yaml"
    bad.write_text("preset: imagenet\nattacks: [{name: clean}]\n")
    with pytest.raises(ValueError, match="applies to training configs"):
        load_config_file(bad, EvalConfig)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
