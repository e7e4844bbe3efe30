"""Issue 17's training speed-ups keep what they compute: compile default, autocast once per attack,
the clean-accuracy forward every Nth batch, large validation batches.

CPU tests with tiny models; the CUDA switches are forced on where the logic can run on a CPU
(bf16 autocast through ``TrainState.autocast_dtype``, as tests/ctrw/training/test_fastpath.py does).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import nullcontext

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ctrw.config import TrainConfig
from ctrw.data import iterate_batches
from ctrw.hooks import Hooks
from ctrw.nn.random_weight import RandomConv2d, seed_random_layers
from ctrw.training import TrainState, setup, step
from tests.support.models import train_config

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def tiny(**over) -> TrainConfig:
    base = {
        "model": {"name": "small_cnn", "width": 0.25},
        "data": {
            "dataset": "synthetic",
            "image_size": 16,
            "channels": 3,
            "synthetic_train": 64,
            "val_fraction": 0.0,
        },
        "optim": {"epochs": 1, "batch_size": 16},
        "attack": {"steps": 3},
        "val_pgd_steps": 0,
        "bounds": {"lower": {"kind": "fraction", "value": 0.5}, "upper": {"kind": "fraction", "value": 1.5}},
        "evaluation": None,
        "amp": False,
    }
    return train_config(base, over)


def _batch(run: TrainState) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return next(
        iterate_batches(
            run.data.train, run.config.optim.batch_size, device=run.device, shuffle=True, generator=gen
        )
    )


# --------------------------------------------------------------------------- compile default


def test_compile_is_on_by_default_for_cuda_jobs_only():
    cfg = tiny()
    assert cfg.compile == "auto" and cfg.compile_mode == "default"
    assert setup.compiles(cfg, CUDA) and not setup.compiles(cfg, CPU)
    assert setup.compiles(tiny(compile=True), CPU)  # forced on: compiles on the CPU too
    assert not setup.compiles(tiny(compile=False), CUDA)  # eager stays available
    assert TrainState.create(cfg).compiled is None  # a CPU job by default: eager
    assert TrainConfig.model_validate(
        {**cfg.model_dump(), "compile_mode": "reduce-overhead"}
    ).compile_mode == ("reduce-overhead")
    with pytest.raises(ValueError):
        tiny(compile="sometimes")


# --------------------------------------------------------------------------- autocast once


class _CastCount(TorchDispatchMode):
    """Counts the tensor casts to bf16 that reach the dispatcher (autocast's included)."""

    def __init__(self) -> None:
        super().__init__()
        self.casts = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and kwargs.get("dtype") == torch.bfloat16:
            self.casts += 1
        return func(*args, **kwargs)


def _attack(run: TrainState, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int]:
    run.attack_gen.manual_seed(5)
    seed_random_layers(run.model, 11)  # the same draws (EOT draws on every forward)
    with _CastCount() as count:
        x_adv = run.attack(x, y)
    return x_adv, count.casts


@pytest.mark.parametrize("randomness", ["blackbox", "eot"])
def test_autocast_once_equals_per_forward_autocast_bit_for_bit(monkeypatch, randomness):
    """bf16 on the CPU: the attack with one autocast context and weights cast once per batch gives
    exactly the adversarial images of the per-forward version, with far fewer casts."""
    monkeypatch.setattr(TrainState, "autocast_dtype", lambda self: torch.bfloat16)
    attack = {"steps": 4, "randomness": randomness, "eot_draws": 2}
    run = TrainState.create(tiny(attack=attack))
    x, y = _batch(run)
    weights = {k: (v.data_ptr(), v.dtype) for k, v in run.model.named_parameters()}
    x_once, casts_once = _attack(run, x, y)
    assert {k: (v.data_ptr(), v.dtype) for k, v in run.model.named_parameters()} == weights  # put back
    assert all(p.requires_grad for p in run.model.parameters())
    monkeypatch.setattr(step, "autocast_once", lambda state: nullcontext())  # the per-forward version
    x_each, casts_each = _attack(run, x, y)
    assert torch.equal(x_once, x_each)
    n_weights = sum(
        1
        for m in run.model.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
        for _ in m.parameters(recurse=False)
    )
    # Per forward, autocast re-casts every conv/linear weight and bias; once per batch it is done once.
    assert casts_each - casts_once >= (attack["steps"] - 1) * n_weights, (casts_each, casts_once)


def test_low_precision_weights_leave_random_convolutions_alone():
    """The 'filters' insertion multiplies the fp32 kernel by the random weight before the cast, so
    that kernel stays fp32 inside the block; plain layers become bf16 and come back as they were."""
    run = TrainState.create(tiny(random_weight={"insertion": "filters"}))
    random_convs = {id(m.conv.weight) for m in run.model.modules() if isinstance(m, RandomConv2d)}
    assert random_convs
    before = [(p.data_ptr(), p.dtype, p.stride()) for p in run.model.parameters()]
    with run.low_precision_weights(torch.bfloat16):
        for m in run.model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                want = torch.float32 if id(m.weight) in random_convs else torch.bfloat16
                assert m.weight.dtype == want
    assert [(p.data_ptr(), p.dtype, p.stride()) for p in run.model.parameters()] == before
    with run.low_precision_weights(torch.bfloat16):  # the same copies every batch (CUDA graphs)
        again = [p.data_ptr() for p in run.low_precision_weights.params]
    assert again == [c.data_ptr() for c in run.low_precision_weights.copies[torch.bfloat16]]


@pytest.fixture
def compile_backend(monkeypatch) -> Iterator[None]:
    """aot_eager: inductor's guards and recompiles without its code generation (see test_fastpath)."""
    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    yield
    torch._dynamo.reset()


def test_compiled_step_with_weights_cast_once_never_recompiles(compile_backend, monkeypatch):
    """The attack sees bf16 weights, the update fp32 ones: two cached graphs after the first
    batch, never a recompile (bf16 autocast forced on the CPU)."""
    monkeypatch.setattr(TrainState, "autocast_dtype", lambda self: torch.bfloat16)
    run = TrainState.create(tiny(compile=True, data={"synthetic_train": 32}, attack={"steps": 2}))
    run.train_epoch(Hooks())
    with torch.compiler.set_stance("fail_on_recompile"):
        metrics = run.train_epoch(Hooks())
    assert metrics["train_loss"] == metrics["train_loss"]  # not NaN


# --------------------------------------------------------------------------- clean accuracy


def test_clean_accuracy_every_nth_batch_measures_those_batches_and_changes_nothing_else():
    cfg = tiny(data={"synthetic_train": 64}, optim={"batch_size": 16})  # 4 batches
    assert setup.clean_acc_every(cfg, CPU) == 1 and setup.clean_acc_every(cfg, CUDA) == 10
    assert setup.clean_acc_every(tiny(train_clean_acc_every=3), CUDA) == 3

    every_batch = TrainState.create(cfg)
    per_batch: list[int] = []
    original = every_batch.train_step

    def recording(x, y, *, measure_clean=True):
        out = original(x, y, measure_clean=measure_clean)
        per_batch.append(int(out[2]))
        return out

    every_batch.train_step = recording  # records the clean counts of a real run, batch by batch
    full = every_batch.train_epoch(Hooks())
    sampled_run = TrainState.create(
        tiny(data={"synthetic_train": 64}, optim={"batch_size": 16}, train_clean_acc_every=2)
    )
    sampled = sampled_run.train_epoch(Hooks())
    assert len(per_batch) == 4 and full["train_clean_acc"] == sum(per_batch) / 64
    assert sampled["train_clean_acc"] == (per_batch[0] + per_batch[2]) / 32  # batches 1 and 3
    # A measurement only: loss, adversarial accuracy and weights are those of the full run.
    assert sampled["train_loss"] == full["train_loss"] and sampled["train_adv_acc"] == full["train_adv_acc"]
    for (k, a), b in zip(
        every_batch.model.state_dict().items(), sampled_run.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k


# --------------------------------------------------------------------------- validation batches


def test_validation_batch_is_large_on_cuda_and_counts_every_example():
    cfg = tiny(optim={"batch_size": 16})
    assert setup.val_batch_size(cfg, CPU) == 16 and setup.val_batch_size(cfg, CUDA) == 64
    assert setup.val_batch_size(tiny(optim={"batch_size": 512}), CUDA) == 1024
    assert setup.val_batch_size(tiny(optim={"batch_size": 2048}), CUDA) == 2048  # never below training
    assert setup.val_batch_size(tiny(val_batch_size=40), CUDA) == 40
    data = {"synthetic_train": 64, "val_fraction": 0.5}
    small = TrainState.create(tiny(data=data, val_pgd_steps=2, val_examples=30, val_batch_size=7))
    large = TrainState.create(tiny(data=data, val_pgd_steps=2, val_examples=30, val_batch_size=30))
    for run, batches in ((small, 5), (large, 1)):
        seen: list[int] = []
        out = run.validate(_Batches(seen))
        assert 0.0 <= out["val_clean_acc"] <= 1.0 and 0.0 <= out["val_pgd_acc"] <= 1.0
        assert seen[-1] == batches
        # Accuracies are counts over all 30 examples, whatever the batching.
        assert out["val_clean_acc"] * 30 == pytest.approx(round(out["val_clean_acc"] * 30))


class _Batches(Hooks):
    def __init__(self, seen: list[int]) -> None:
        self.seen = seen

    def on_progress(self, p) -> None:
        self.seen.append(p.batches)


# --------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_the_cuda_defaults_compile_cast_once_and_never_recompile(mode):
    """A CUDA job as configured by default: compiled (inductor; CUDA graphs with reduce-overhead),
    bf16 with the weights cast once per attack, clean accuracy every 10th batch, validation in one
    large batch. After the first epoch nothing recompiles."""
    torch._dynamo.reset()
    cfg = tiny(
        device="cuda",
        amp=True,
        compile_mode=mode,
        model={"name": "resnet18", "width": 0.25},
        data={"image_size": 32, "synthetic_train": 16 * 12, "val_fraction": 0.25},
        val_pgd_steps=2,
    )
    run = TrainState.create(cfg)
    assert run.compiled is not None and setup.clean_acc_every(cfg, run.device) == 10
    run.train_epoch(Hooks())
    run.validate(Hooks())
    with torch.compiler.set_stance("fail_on_recompile"):
        metrics = run.train_epoch(Hooks())
    assert metrics["train_loss"] == metrics["train_loss"] and 0 <= metrics["train_clean_acc"] <= 1
    assert all(p.dtype == torch.float32 for p in run.model.parameters())  # fp32 weights put back
    torch._dynamo.reset()
