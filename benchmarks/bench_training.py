"""Training throughput for ``bench.py``: ours (as a job runs, and the modes asked for), the
strongest plain loop and the reference, on the same model, data and device, interleaved repeat by
repeat; and what a real epoch adds (validation, checkpoint).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_common import (
    AUTHORS_EVAL_EXTRA,
    CIFAR_TRAIN,
    PAPER_EPOCHS,
    forward_flops,
    model_copy,
    sync,
    train_config,
)
from reference_loop import ImageArrayDataset, make_constraint, make_loader, train_batches
from strongest_loop import StrongestLoop, strongest_switches

from ctrw.data import iterate_batches
from ctrw.hooks import Hooks
from ctrw.nn.sigma_policy import constrain_sigma
from ctrw.training import TrainState as TrainRun


def _resident_bytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t.device.type == "cuda")


def _owned_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Tensors a training loop keeps between batches: weights, grads, buffers, optimizer state."""
    tensors = [*model.parameters(), *model.buffers()]
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [v for st in optimizer.state.values() for v in st.values() if isinstance(v, torch.Tensor)]
    return tensors


class _Timed:
    """Wall time and peak CUDA memory of a block.

    Peak memory is this loop's own: the tensors it keeps between batches (``owned``) plus the
    most allocated above the starting point inside the block, so other loops resident on the
    same device do not count.
    """

    def __init__(self, device: torch.device, owned: Callable[[], list[torch.Tensor]]) -> None:
        self.device, self.owned = device, owned
        self.seconds, self.peak_bytes = 0.0, None

    def __enter__(self) -> _Timed:
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            self.owned_bytes = _resident_bytes(self.owned())
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self.t0
        if self.device.type == "cuda":
            above = torch.cuda.max_memory_allocated(self.device) - self.base
            self.peak_bytes = above + self.owned_bytes


def _our_runs(args: argparse.Namespace, model_name: str, batch: int, n_images: int) -> dict[str, TrainRun]:
    """ "ours" as a job runs by default (compiled on CUDA, eager on a CPU) and the modes asked for."""
    variants: dict[str, tuple[bool | str, str]] = {"ours": ("auto", "default")}
    if args.compile:  # the other mode than the default
        variants["ours-eager" if args.device.type == "cuda" else "ours+compile"] = (
            args.device.type != "cuda",
            "default",
        )
    if args.cudagraphs:
        variants["ours+cudagraphs"] = (True, "reduce-overhead")
    runs = {}
    for name, (compile_, mode) in variants.items():
        cfg = train_config(model_name, args.width, batch, n_images, args.steps, compile_, mode)
        runs[name] = TrainRun.create(cfg.model_copy(update={"device": str(args.device)}))
    return runs


def bench_training(
    args: argparse.Namespace, model_name: str, batch: int, peak_tflops: float
) -> dict[str, Any]:
    """Time ours, the strongest plain loop and the reference (interleaved repeat by repeat) on
    one model and batch size."""
    dev = args.device
    n_images = batch * args.batches
    runs = _our_runs(args, model_name, batch, n_images)
    first = runs["ours"]
    flops = forward_flops(first)
    loops: dict[str, Any] = {}
    warmup_s: dict[str, float] = {}
    for name, run in runs.items():
        sync(dev)
        t0 = time.perf_counter()
        run.train_epoch(Hooks())  # warm-up: cuDNN autotuning, compilation
        sync(dev)
        warmup_s[name] = time.perf_counter() - t0

        def ours(run: TrainRun = run) -> None:
            run.train_epoch(Hooks())  # one epoch of --batches batches; ends with its one host read

        def owned(run: TrainRun = run) -> list[torch.Tensor]:
            data = [t for split in (run.data.train, run.data.test) for t in (split.x, split.y)]
            return _owned_tensors(run.model, run.optimizer) + data

        loops[name] = (ours, owned, n_images)
    if not args.no_strongest:
        strong = _Strongest(args, first)
        strong.run(args.warmup)  # cuDNN autotuning, allocator warm-up
        loops["strongest"] = (lambda: strong.run(args.batches), strong.owned, batch * args.batches)
    if not args.no_reference:
        ref = _Reference(args, first, batch)
        ref.run(args.warmup)  # worker start-up, allocator warm-up
        loops["reference"] = (lambda: ref.run(args.batches), ref.owned, batch * args.batches)

    speeds: dict[str, list[float]] = {name: [] for name in loops}
    peaks: dict[str, list[int]] = {name: [] for name in loops}
    for _ in range(args.repeats):  # interleaved, so drift in the machine's load hits all alike
        for name, (fn, owned, images) in loops.items():
            with _Timed(dev, owned) as t:
                fn()
            speeds[name].append(images / t.seconds)
            if t.peak_bytes is not None:
                peaks[name].append(t.peak_bytes)

    overhead = epoch_overhead(first)
    lean, ref_work = 2 * args.steps + 3, 3 * args.steps + 3
    row: dict[str, Any] = {
        "model": model_name,
        "width": args.width,
        "batch": batch,
        "steps": args.steps,
        "gflop_per_forward": flops / 1e9,
        "lean_work_f": lean,
        "epoch_overhead": overhead,
        "strongest_switches": strongest_switches(dev),
        "results": {},
    }
    for name, ips in speeds.items():
        tflops = statistics.median(ips) * lean * flops / 1e12
        executed = {"reference": ref_work, "strongest": lean}.get(name, lean + 1)
        row["results"][name] = {
            "images_per_s": statistics.median(ips),
            "images_per_s_repeats": ips,
            "tflops_lean_work": tflops,
            "executed_work_f": executed,
            "fraction_of_peak": tflops / peak_tflops,
            "peak_memory_mb": max(peaks[name]) / 2**20 if peaks[name] else None,
        }
        if name in runs:  # our full epochs: training, validation, checkpoint; compilation once
            r = row["results"][name]
            # The warm-up epoch ran the same batches as a timed one; what it took beyond that is
            # compilation (and autotuning), paid once per job.
            r["compile_s"] = max(0.0, warmup_s[name] - n_images / r["images_per_s"])
            epoch_s = CIFAR_TRAIN / r["images_per_s"] + overhead["validation_s"] + overhead["checkpoint_s"]
            r["epoch_s"] = epoch_s
            r["paper_schedule_minutes"] = (PAPER_EPOCHS * epoch_s + r["compile_s"]) / 60
    if "reference" in loops:
        ref_ips = row["results"]["reference"]["images_per_s"]
        row["ratio"] = {name: row["results"][name]["images_per_s"] / ref_ips for name in runs}
        authors_epoch = CIFAR_TRAIN / ref_ips * (1 + AUTHORS_EVAL_EXTRA)
        row["authors_epoch"] = {
            "epoch_s": authors_epoch,
            "paper_schedule_minutes": PAPER_EPOCHS * authors_epoch / 60,
            "ratio": {name: authors_epoch / row["results"][name]["epoch_s"] for name in runs},
        }
    if "strongest" in loops:
        strong_ips = row["results"]["strongest"]["images_per_s"]
        row["ratio_strongest"] = {name: row["results"][name]["images_per_s"] / strong_ips for name in runs}
    return row


def epoch_overhead(run: TrainRun) -> dict[str, float]:
    """What a real epoch adds to ``train_epoch``: validation (clean + PGD on ``val_examples``
    held-out images, 1,000 by default, projected from the images at hand) and the checkpoint,
    in seconds. The checkpoint is written on a background thread while the next epoch trains
    (``ctrw.training.writer``): only its synchronous part (copying the state) is counted in an
    epoch; the write itself (last + best) is reported beside it."""
    dev, held_out = run.device, run.data.val
    run.data.val = run.data.train.head(run.config.val_examples)  # stand-in held-out images
    n_val = len(run.data.val)
    try:
        run.validate(Hooks())  # warm-up: cuDNN autotuning of the validation batch shapes
        sync(dev)
        t0 = time.perf_counter()
        run.validate(Hooks())
        sync(dev)
        validation = (time.perf_counter() - t0) * (run.config.val_examples or n_val) / n_val
        with tempfile.TemporaryDirectory() as tmp:
            run.save(Path(tmp), best=True)  # warm-up: first-call imports, file creation
            t0 = time.perf_counter()
            write = run.checkpoint_writer(Path(tmp), best=True)
            copied = time.perf_counter()
            write()
            written = time.perf_counter()
    finally:
        run.data.val = held_out
    return {"validation_s": validation, "checkpoint_s": copied - t0, "checkpoint_write_s": written - copied}


class _Strongest:
    """The strongest plain loop on a copy of our model (same weights, same device, same data)."""

    def __init__(self, args: argparse.Namespace, run: TrainRun) -> None:
        cfg = run.config
        self.model = model_copy(run)
        o = cfg.optim
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
        )
        self.loop = StrongestLoop(
            self.model,
            self.optimizer,
            device=args.device,
            eps=cfg.attack.eps,
            alpha=cfg.attack.step_size,
            steps=args.steps,
            constrain=lambda: constrain_sigma(cfg, self.model, run.bounds),
        )
        self.batches = self._forever(run)

    @staticmethod
    def _forever(run: TrainRun) -> Any:
        gen = torch.Generator().manual_seed(run.config.seed + 7)
        while True:
            yield from iterate_batches(
                run.data.train,
                run.config.optim.batch_size,
                device=run.device,
                shuffle=True,
                generator=gen,
                drop_last=True,
                augment=True,
            )

    def owned(self) -> list[torch.Tensor]:
        return _owned_tensors(self.model, self.optimizer)

    def run(self, n: int) -> None:
        self.loop.run(self.batches, n)


class _Reference:
    """The reference loop on a copy of our model (same weights, same device)."""

    def __init__(self, args: argparse.Namespace, run: TrainRun, batch: int) -> None:
        cfg = run.config
        self.device, self.steps = args.device, args.steps
        self.eps, self.alpha = cfg.attack.eps, cfg.attack.step_size
        self.model = model_copy(run)  # contiguous NCHW, fp32
        o = cfg.optim
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
        )
        self.constrain = make_constraint(self.model, run.bounds, cfg.bounds.rule)
        split = run.data.train
        images = split.x.cpu().permute(0, 2, 3, 1).numpy()  # (N, H, W, C) uint8
        labels = split.y.cpu().numpy()
        # Long enough that the timed batches never restart the loader (no worker start-up inside).
        needed = args.warmup + args.repeats * args.batches
        copies = needed // max(len(labels) // batch, 1) + 1
        dataset = ImageArrayDataset(np.concatenate([images] * copies), np.concatenate([labels] * copies))
        pin = self.device.type == "cuda"
        self.batches = iter(make_loader(dataset, batch, workers=args.ref_workers, pin_memory=pin))

    def owned(self) -> list[torch.Tensor]:
        return _owned_tensors(self.model, self.optimizer)

    def run(self, n: int) -> None:
        benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = False  # PyTorch's default, as the reference repos run
        try:
            train_batches(
                self.model,
                self.optimizer,
                self.batches,
                n,
                device=self.device,
                eps=self.eps,
                alpha=self.alpha,
                steps=self.steps,
                constrain=self.constrain,
            )
        finally:
            torch.backends.cudnn.benchmark = benchmark
