"""The cost estimate: F from the model catalog equals what torch counts on the real models; the
paper's suites fit the default budgets and absurd requests do not; the module stays torch-free."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from ctrw.config import AttackSpec, TrainConfig, imagenet_preset
from ctrw.cost import attack_passes, forward_flops, train_job_cost
from ctrw.nn.models import create_model


@pytest.mark.parametrize(
    "body",
    [
        {"model": {"name": "resnet18"}},
        {"model": {"name": "resnet18", "width": 0.3}, "data": {"dataset": "cifar100"}},
        {"model": {"name": "wrn34_10", "width": 0.25}},
        {"model": {"name": "resnet50"}, "data": {"dataset": "imagenet"}},
        {"model": {"name": "small_cnn", "width": 0.5}, "data": {"dataset": "digits", "image_size": 8, "channels": 1}},
        {"model": {"name": "resnet18", "width": 0.5},
         "data": {"dataset": "synthetic", "image_size": 20, "channels": 1, "num_classes": 7}},
    ],
    ids=["resnet18", "resnet18-cifar100-narrow", "wrn34-narrow", "resnet50-imagenet", "small-cnn-digits",
         "resnet18-synthetic-20px"],
)  # fmt: skip
def test_catalog_flops_match_torch_on_the_real_models(body: dict) -> None:
    """F counted without torch (2 x MACs of every conv and linear layer) is what torch's FLOP
    counter measures on one forward pass of the model the worker builds."""
    cfg = TrainConfig.model_validate(body)
    side = {"cifar10": 32, "cifar100": 32, "imagenet": 224}.get(cfg.data.dataset, cfg.data.image_size)
    channels = 3 if cfg.data.dataset in ("cifar10", "cifar100", "imagenet") else cfg.data.channels
    classes = {"cifar10": 10, "cifar100": 100, "imagenet": 1000, "digits": 10}.get(
        cfg.data.dataset, cfg.data.num_classes
    )
    model = create_model(cfg.model.name, num_classes=classes, input_shape=(channels, side, side),
                         mean=[0.5] * channels, std=[0.5] * channels, width=cfg.model.width,
                         random_weight=cfg.random_weight).eval()  # fmt: skip
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, channels, side, side))
    assert forward_flops(cfg) == counter.get_total_flops()


def test_the_paper_anchors() -> None:
    """docs/performance-anchors: ResNet18 1.11 GFLOP, WRN-34-10 13.3, ResNet50 8.18 per image;
    lean PGD-10 training 23F per image, 1.28 PFLOP per CIFAR epoch for ResNet18."""
    r18 = TrainConfig.model_validate(
        {"evaluation": None, "data": {"val_fraction": 0.0}, "optim": {"epochs": 1}}
    )
    assert forward_flops(r18) / 1e9 == pytest.approx(1.11, abs=0.01)
    assert forward_flops(TrainConfig.model_validate({"model": {"name": "wrn34_10"}})) / 1e9 == pytest.approx(
        13.3, abs=0.05
    )
    assert forward_flops(imagenet_preset()) / 1e9 == pytest.approx(8.18, abs=0.01)
    training = next(p for p in train_job_cost(r18).parts if p.name == "training")
    assert training.drivers["passes per image"] == 23.0
    assert training.flops / 1e15 == pytest.approx(1.28, abs=0.01)


def test_attack_passes_follow_their_parameters() -> None:
    assert attack_passes(AttackSpec(name="clean"), 10) == 0
    assert attack_passes(AttackSpec(name="pgd", steps=20), 10) == 40
    assert attack_passes(AttackSpec(name="eotpgd", steps=10, eot_draws=5), 10) == 100
    assert attack_passes(AttackSpec(name="cw", steps=10_000), 10) == 20_000
    # AutoAttack: APGD-CE, APGD-T and FAB-T over 9 targets, plus Square's queries
    assert attack_passes(AttackSpec(name="autoattack"), 10) == 2 * 100 * 19 + 5000
    assert attack_passes(AttackSpec(name="deepfool", steps=50), 100) > attack_passes(
        AttackSpec(name="deepfool", steps=50), 10
    )


def test_the_estimate_grows_with_each_driver() -> None:
    base = {"model": {"name": "resnet18", "width": 0.5}, "data": {"dataset": "synthetic", "image_size": 16}}

    def cost(**over: dict) -> float:
        body = {**base, **over}
        return train_job_cost(TrainConfig.model_validate(body)).flops

    ref = cost()
    assert cost(optim={"epochs": 400, "milestones": [100]}) > ref
    assert cost(attack={"steps": 20}) > ref
    assert cost(data={**base["data"], "synthetic_train": 512}) > ref
    assert cost(data={**base["data"], "image_size": 32}) > ref
    assert cost(model={"name": "resnet18", "width": 1.0}) > ref
    assert cost(evaluation={"attacks": [{"name": "cw", "steps": 5000}]}) > ref
    assert cost(evaluation={"attacks": [{"name": "pgd"}], "repeats": 5}) > cost(
        evaluation={"attacks": [{"name": "pgd"}]}
    )


def test_cost_module_imports_no_torch() -> None:
    """The API estimates every submission: ctrw.cost must not load torch."""
    code = "import sys, ctrw.cost, app.services.limits; print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
