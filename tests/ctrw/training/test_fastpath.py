"""The fast path computes what the reference loop computes, without host syncs.

CPU tests with tiny models; the GPU-only checks (bf16 + channels_last + inductor, CUDA sync
detection) are marked ``gpu`` and skipped when no CUDA device is present. torch.compile's checks are in
test_compile.py.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision.transforms.functional as TF

from ctrw.attacks.pgd import pgd_linf
from ctrw.config import EvalConfig, TrainConfig
from ctrw.data import augment_batch
from ctrw.hooks import Hooks, Progress
from ctrw.jobs import run_evaluation, run_sigma_stats
from ctrw.nn.random_weight import random_layers
from ctrw.training import TrainState, setup, train
from tests.support.configs import TINY_SYNTHETIC_TRAIN
from tests.support.models import seeded_batch, train_config

ROOT = Path(__file__).resolve().parents[3]


def _reference_loop():
    """benchmarks/reference_loop.py (a script directory, not a package)."""
    spec = importlib.util.spec_from_file_location("reference_loop", ROOT / "benchmarks" / "reference_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny(**over) -> TrainConfig:
    return train_config(TINY_SYNTHETIC_TRAIN, over)


# --------------------------------------------------------------------------- same computation


@pytest.mark.parametrize(
    "variant,rule,lower",
    [
        ("ctrw", "sum", {"kind": "fraction", "value": 0.5}),
        ("ctrw", "floor", {"kind": "fixed", "value": 1e4}),  # the floor binds: sigma is lifted
        ("baseline", "sum", {"kind": "fraction", "value": 0.5}),
    ],
)
def test_one_step_of_fast_and_reference_path_agree_in_fp32(variant, rule, lower):
    upper = {"kind": "fraction", "value": 1.5} if rule == "sum" else None
    run = TrainState.create(tiny(variant=variant, bounds={"rule": rule, "lower": lower, "upper": upper}))
    ref = _reference_loop()
    model = copy.deepcopy(run.model)  # same weights, same random-layer generator states
    o = run.config.optim
    optimizer = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    x, y = seeded_batch(run)
    run.attack_gen.manual_seed(123)  # same PGD start
    a = run.config.attack

    loss, adv_ok, clean_ok = run.train_step(x, y)
    ref_loss, ref_ok = ref.reference_step(
        model,
        optimizer,
        x,
        y,
        eps=a.eps,
        alpha=a.step_size,
        steps=a.steps,
        constrain=ref.make_constraint(model, run.bounds, rule),
        generator=torch.Generator().manual_seed(123),
    )

    assert float(loss) == pytest.approx(ref_loss, rel=1e-5)
    assert int(adv_ok) == ref_ok and 0 <= int(clean_ok) <= y.shape[0]
    fast_state, ref_state = run.model.state_dict(), model.state_dict()
    assert fast_state.keys() == ref_state.keys()
    for k in fast_state:  # weights, mu, sigma, and the BatchNorm running statistics
        torch.testing.assert_close(fast_state[k], ref_state[k], rtol=1e-5, atol=1e-6, msg=k)
    if variant == "ctrw" and rule == "floor":
        sigma = random_layers(run.model)[0].sigma
        assert float(sigma.detach().min()) >= 1e4 / sigma.numel() - 1e-4


@pytest.mark.parametrize(
    "random_weight",
    [{}, {"position": 2}, {"insertion": "both"}, {"insertion": "filters"}],  # filters: a 5-D mu/sigma
    ids=["input", "position2", "both", "filters"],
)
def test_channels_last_layout_changes_strides_never_values(monkeypatch, tmp_path, random_weight):
    """CPU stand-in for the CUDA layout: the library uses channels_last on CUDA only, so the test
    routes its switch (``uses_channels_last``) on. Lemma bounds, one training step, validation and
    a save/resume then give what the contiguous run gives, and resumed momentum buffers take
    their parameter's layout (so the fused SGD update keeps its fast path)."""
    cfg = tiny(
        bounds={"lower": {"kind": "lemma1"}, "upper": {"kind": "lemma2"}},
        val_pgd_steps=2,
        data={"val_fraction": 0.25},
        random_weight=random_weight,
    )
    plain = TrainState.create(cfg)
    monkeypatch.setattr(setup, "uses_channels_last", lambda config, device: True)
    nhwc = TrainState.create(cfg)
    conv = next(m for m in nhwc.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    for a, b in zip(plain.bounds, nhwc.bounds, strict=True):
        assert a.lower == pytest.approx(b.lower, rel=1e-5) and a.upper == pytest.approx(b.upper, rel=1e-4)

    x, y = seeded_batch(plain)
    for run in (plain, nhwc):
        run.attack_gen.manual_seed(3)
    loss_p, adv_p, clean_p = plain.train_step(x, y)
    loss_n, adv_n, clean_n = nhwc.train_step(x.contiguous(memory_format=torch.channels_last), y)
    assert float(loss_n) == pytest.approx(float(loss_p), rel=1e-5)
    assert (int(adv_n), int(clean_n)) == (int(adv_p), int(clean_p))
    for k, v in plain.model.state_dict().items():
        torch.testing.assert_close(nhwc.model.state_dict()[k], v, rtol=1e-5, atol=1e-6, msg=k)
    for run in (plain, nhwc):
        run.attack_gen.manual_seed(4)
    assert nhwc.validate(Hooks()) == pytest.approx(plain.validate(Hooks()))

    nhwc.save(tmp_path, best=False)
    resumed = TrainState.create(cfg)
    resumed.restore(tmp_path / "last.safetensors")
    for k, v in nhwc.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k
    resumed_conv = next(m for m in resumed.model.modules() if isinstance(m, torch.nn.Conv2d))
    momentum = resumed.optimizer.state[resumed_conv.weight]["momentum_buffer"]
    assert momentum.is_contiguous(memory_format=torch.channels_last) and not momentum.is_contiguous()
    for p, st in resumed.optimizer.state.items():
        assert st["momentum_buffer"].stride() == p.stride()


# The CUDA-only switches forced on across the config space, each case on a code path of its own:
# the 5-D 'filters' weight (it crashed channels_last once), per-example draws, BatchNorm in eval
# mode during the attack with batched EOT, the floor rule, WRN with a random layer deep inside.
_CUDA_SWITCH_CASES = {
    "filters": {"random_weight": {"insertion": "filters"}},
    "both-per-example": {"random_weight": {"insertion": "both", "per_example": True}},
    "eot-bn-eval": {"attack": {"steps": 2, "randomness": "eot", "eot_draws": 2, "bn_mode": "eval"}},
    "fixed-sigma-floor": {"variant": "fixed_sigma", "bounds": {"rule": "floor", "upper": None}},
    "wrn-deep": {"model": {"name": "wrn34_10", "width": 0.05}, "random_weight": {"position": 4}},
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(_CUDA_SWITCH_CASES))
def test_a_job_runs_with_the_cuda_switches_forced_on(monkeypatch, tmp_path, case):
    """bf16 autocast and channels_last apply on CUDA only; here they are switched on on the CPU
    for training, resume, evaluation (adaptive and paper protocol) and sigma statistics."""
    monkeypatch.setattr(setup, "uses_channels_last", lambda config, device: True)
    monkeypatch.setattr(TrainState, "autocast_dtype", lambda self: torch.bfloat16)
    cfg = tiny(
        **{"optim": {"epochs": 1, "batch_size": 16}, "attack": {"steps": 2}, **_CUDA_SWITCH_CASES[case]}
    )
    summary = train(cfg, run_dir=tmp_path)
    assert train(cfg, run_dir=tmp_path) == summary  # resumes from the checkpoint: nothing left
    protocol = "adaptive" if cfg.random_weight.per_example else "both"
    ev = EvalConfig.model_validate(
        {
            "attacks": [
                {"name": "pgd", "steps": 2},
                {"name": "deepfool", "steps": 2},
                {"name": "autoattack", "steps": 2, "queries": 5},
                {"name": "eotpgd", "steps": 2, "eot_draws": 2},
            ],
            "protocol": protocol,
            "n_examples": 16,
            "batch_size": 8,
            "score_draws": 2,
        }
    )
    rows = run_evaluation(summary["best_checkpoint"], ev, cfg)["rows"]
    assert len(rows) == (4 if protocol == "adaptive" else 8)
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    stats = run_sigma_stats(summary["best_checkpoint"], cfg, n_pairs=20, grad_examples=8)
    assert stats["layers"] and all(layer["numel"] > 0 for layer in stats["layers"])


def test_gpu_style_augmentation_equals_torchvision_pad_crop_flip():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 32, 32, generator=g)
    offsets = torch.randint(0, 9, (6, 2), generator=g)
    flips = torch.rand(6, generator=g) < 0.5
    out = augment_batch(x, offsets, flips)
    for i in range(6):
        top, left = int(offsets[i, 0]), int(offsets[i, 1])
        expected = TF.crop(TF.pad(x[i], [4]), top, left, 32, 32)
        expected = TF.hflip(expected) if flips[i] else expected
        assert torch.equal(out[i], expected), i


# --------------------------------------------------------------------------- no host syncs


class _NoHostReads(Hooks):
    """Between the end of batch 1 and the end of the last batch, reading a tensor is an error."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch, self.batches = monkeypatch, 0

    def on_progress(self, p: Progress) -> None:
        self.batches = p.batch
        if p.batch == 1:
            for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__"):
                self.monkeypatch.setattr(torch.Tensor, name, functools.partialmethod(_host_read, name))
        if p.batch == p.batches:
            self.monkeypatch.undo()


def _host_read(self: torch.Tensor, name: str, *args: object, **kwargs: object) -> None:
    raise AssertionError(f"host read Tensor.{name} inside the batch loop")


@pytest.mark.parametrize("randomness", ["blackbox", "eot"])
def test_the_batch_loop_never_reads_a_tensor_on_the_host(monkeypatch, randomness):
    run = TrainState.create(tiny(attack={"steps": 2, "randomness": randomness}, optim={"batch_size": 8}))
    hooks = _NoHostReads(monkeypatch)
    metrics = run.train_epoch(hooks)  # raises if batches 2..8 call item(), bool(t), float(t), ...
    assert hooks.batches == 8 and 0 <= metrics["train_adv_acc"] <= 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_batch_loop_never_synchronises_with_a_gpu():
    cfg = tiny(device="cuda", amp=True, model={"name": "resnet18", "width": 0.25}, data={"image_size": 32})
    run = TrainState.create(cfg)

    class SyncIsError(Hooks):
        def on_progress(self, p: Progress) -> None:
            if p.batch == 1:
                torch.cuda.set_sync_debug_mode("error")
            if p.batch == p.batches:
                torch.cuda.set_sync_debug_mode("default")

    try:
        run.train_epoch(SyncIsError())
    finally:
        torch.cuda.set_sync_debug_mode("default")


# --------------------------------------------------------------------------- bf16


def _digits(seed: int = 0) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "variant": "ctrw",
            "model": {"name": "small_cnn", "width": 0.5},
            "data": {
                "dataset": "digits",
                "image_size": 8,
                "channels": 1,
                "augment": False,
                "val_fraction": 0.0,
            },
            "optim": {"epochs": 5, "batch_size": 128, "lr": 0.1, "milestones": [4]},
            "attack": {"steps": 3, "eps": 0.1, "step_size": 0.04},
            "bounds": {
                "lower": {"kind": "fraction", "value": 0.05},
                "upper": {"kind": "fraction", "value": 0.2},
            },
            "val_pgd_steps": 0,
            "evaluation": None,
            "seed": seed,
        }
    )


def _train_and_score(cfg: TrainConfig) -> tuple[float, float]:
    """Clean and PGD-10 accuracy (paper protocol, fp32) on the 360 digits test images."""
    run = TrainState.create(cfg)
    for _ in range(cfg.optim.epochs):
        run.train_epoch(Hooks())
        run.epoch += 1
    model = run.model.eval()
    x, y = run.data.test.float_images(), run.data.test.y
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    x_adv = pgd_linf(
        model, x, y, eps=0.1, step_size=0.025, steps=10, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        robust = float((model(x_adv).argmax(1) == y).float().mean())
    return clean, robust


@pytest.mark.slow
def test_bf16_training_changes_digits_accuracy_by_no_more_than_noise(monkeypatch):
    """CPU stand-in for the GPU bf16 check: the library enables bf16 autocast on CUDA only, so
    the test routes its single precision switch (``TrainState.autocast_dtype``) to bf16 on CPU.

    Noise: three standard errors of a paired difference of two accuracies on 360 images.
    """
    fp32 = _train_and_score(_digits())
    monkeypatch.setattr(TrainState, "autocast_dtype", lambda self: torch.bfloat16)
    bf16 = _train_and_score(_digits())
    assert fp32[0] > 0.8, fp32  # the run learns the task
    for a, b in zip(fp32, bf16, strict=True):
        p = (a + b) / 2
        noise = 3 * (2 * p * (1 - p) / 360) ** 0.5
        assert abs(a - b) <= max(noise, 2 / 360), (fp32, bf16)


# --------------------------------------------------------------------------- benchmark script


def test_benchmark_cpu_tiny_through_the_gpu_check_script(tmp_path):
    """The CI mode of bench.py, run the way a GPU host runs everything (benchmarks/gpu_check.sh):
    it prints the ratio to the reference and the paper-schedule projection, and on a machine
    without CUDA the GPU-only tests are skipped, not failed."""
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "STEPS": "device gpu-tests bench",
        "BENCH_ARGS": "--cpu-tiny",
    }
    out = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    bench = (tmp_path / "bench.txt").read_text()
    ratio = re.search(r"^ratio ours/reference \(.*\): ([0-9.]+)x$", bench, re.M)
    assert ratio is not None and float(ratio.group(1)) > 0, bench
    schedule = re.search(
        r"^ours \(.*\): epoch of 45,000 images .* -> 200 epochs in ([0-9.]+) min$", bench, re.M
    )
    assert schedule is not None and float(schedule.group(1)) > 0, bench
    assert json.loads((tmp_path / "bench.json").read_text())["training"][0]["ratio"]["ours"] > 0
    # The headline is ours against the strongest plain loop, the authors' epoch beside it, and the
    # CI mode says it is a smoke check.
    headline = re.search(r"^HEADLINE ratio ours/strongest \(.*\): ([0-9.]+)x$", bench, re.M)
    assert headline is not None and float(headline.group(1)) > 0, bench
    assert re.search(r"^ratio authors' epoch/ours epoch \(.*\): [0-9.]+x$", bench, re.M), bench
    assert "SMOKE CHECK ONLY" in bench and "strongest loop runs without bf16_autocast" in bench
    assert json.loads((tmp_path / "bench.json").read_text())["smoke_check_only"] is True
    gpu_tests = (tmp_path / "gpu-tests.txt").read_text()
    assert ("4 passed" if torch.cuda.is_available() else "4 skipped") in gpu_tests, gpu_tests
