"""Throughput of PGD adversarial training and of evaluation: ours against the strongest plain loop
and the reference.

A script that prints numbers (not a test). Sections:

1. Device: name, library versions, the measured dense matmul peak (bf16 on CUDA, fp32 on CPU,
   the precision each device's training runs in).
2. Training: images/s of PGD-k adversarial training of the CTRW variant (Algorithm 1) per model
   and batch size, achieved TFLOP/s from the FLOP count and its fraction of the measured peak,
   peak memory; in the same run, on the same model, data and device: the strongest plain loop
   (``strongest_loop.py``: torchattacks PGD + bf16 autocast + channels_last + cudnn.benchmark,
   eager) and the reference loop (``reference_loop.py``: fp32, DataLoader with CPU transforms,
   attack with ``backward()`` in train mode, per-batch ``.item()``). Headline: ours / strongest;
   ours / reference beside it; and the authors' epoch (the reference's training plus their
   per-epoch evaluation of the full test set) against our whole epoch.
3. Evaluation: seconds per attack on a fixed number of examples through ``ctrw.evaluation.evaluate``
   (paper protocol, stochastic scoring included) and the projected time for the 10,000-image
   CIFAR test set; batched DeepFool against torchattacks' per-image DeepFool.

Work is counted in F = one forward pass of the model on one image (FLOPs from
``torch.utils.flop_counter``; ResNet18 1.11 GFLOP, WRN-34-10 13.3 GFLOP at 32x32). Lean PGD-k
training needs (2k + 3)F per image (23F for PGD-10); TFLOP/s are reported for that work. Our loop
runs one more forward per image (train clean accuracy), the reference (3k + 3)F.

Data are synthetic with CIFAR's shape (3x32x32 uint8, 10 classes): no data set can be
downloaded on the build machines, and training throughput does not depend on pixel values.
Attack costs in evaluation do (DeepFool stops once an image is fooled, AutoAttack runs its later
attacks only on points that survived): on an untrained model they are lower bounds; pass
``--checkpoint`` with a trained model for real projections.

Timing: warm-up first (cuDNN autotuning, torch.compile; the warm-up epoch's extra time is the
compile time, counted once in the 200-epoch projection), CUDA synchronised around every timed
region, the loops interleaved repeat by repeat, medians reported.

"ours" is a training job as configured by default: compiled on CUDA (``compile: auto``), eager on
a CPU. On a CPU the strongest loop's switches (bf16, channels_last, cudnn.benchmark) do not
apply: it runs fp32, and the output says so.

Usage:
    python benchmarks/bench.py                    # GPU: ResNet18 + WRN-34-10, batch 128 and 512
    python benchmarks/bench.py --compile          # also ours in the other mode (eager on CUDA,
                                                  # compiled on a CPU)
    python benchmarks/bench.py --cudagraphs       # also ours with compile_mode reduce-overhead
    python benchmarks/bench.py --cpu-tiny         # smoke check: tiny CNN on CPU in seconds

Over 400 lines on purpose: one script, one command line and one JSON for every number of
docs/benchmarks.md, so that a GPU run (benchmarks/gpu_check.sh) is one command; the loops it
times live in their own modules (``reference_loop.py``, ``strongest_loop.py``, ``ctrw.training``).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from reference_loop import ImageArrayDataset, make_constraint, make_loader, train_batches
from strongest_loop import StrongestLoop, strongest_switches
from torch.utils.flop_counter import FlopCounterMode

from ctrw.config import AttackSpec, EvalConfig, TrainConfig
from ctrw.data import iterate_batches
from ctrw.hooks import Hooks
from ctrw.nn.random_weight import seed_random_layers
from ctrw.nn.sigma_policy import constrain_sigma
from ctrw.threads import set_torch_threads, threads_from_env
from ctrw.training import TrainState as TrainRun
from ctrw.training import build_model, load_trained_model, prepare_for_device

ROOT = Path(__file__).resolve().parent.parent
TEST_SET = 10_000
# The paper's CIFAR schedule: 200 epochs over CIFAR-10's 50,000 training images less our default
# 10% validation split.
PAPER_EPOCHS, CIFAR_TRAIN = 200, 45_000
# Anchors (../shared/docs/performance-anchors.md), GFLOP per 32x32 image at width 1.
ANCHOR_GFLOP = {"resnet18": 1.11, "wrn34_10": 13.3}
# The authors' training loop evaluates on the full test set after every epoch: +113% of a training
# epoch's work (issue 17's count for the published loop), so their epoch is 2.13 reference epochs.
AUTHORS_EVAL_EXTRA = 1.13
SMOKE_NOTE = (
    "SMOKE CHECK ONLY (--cpu-tiny): a tiny CNN on the CPU for a few batches; the ratios are noise "
    "(0.7x-2x between runs), not a performance result"
)
EVAL_ATTACKS = ("pgd", "fgsm", "mifgsm", "cw", "deepfool", "autoattack", "autoattack_rand")


# --------------------------------------------------------------------------- helpers


# Defaults of the full (GPU) run and of --cpu-tiny; an option given on the command line wins.
FULL = {
    "models": "resnet18,wrn34_10",
    "width": 1.0,
    "batch_sizes": "128,512",
    "batches": 10,
    "repeats": 3,
    "warmup": 3,
    "eval_examples": 512,
}
CPU_TINY = {
    "device": "cpu",
    "models": "small_cnn",
    "width": 0.5,
    "batch_sizes": "32",
    "batches": 2,
    "repeats": 3,
    "warmup": 1,
    "eval_examples": 0,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-tiny", action="store_true", help=f"CI mode on CPU in seconds: {CPU_TINY}")
    p.add_argument("--device", help="cuda / cpu (default: cuda if available)")
    p.add_argument("--models", help=f"comma-separated model names (default {FULL['models']})")
    p.add_argument("--width", type=float, help="channel multiplier (default 1.0, the paper's nets)")
    p.add_argument(
        "--batch-sizes", help=f"comma-separated training batch sizes (default {FULL['batch_sizes']})"
    )
    p.add_argument("--steps", type=int, default=10, help="PGD steps inside training")
    p.add_argument("--batches", type=int, help=f"timed batches per repeat (default {FULL['batches']})")
    p.add_argument("--repeats", type=int, help=f"timed repeats, median reported (default {FULL['repeats']})")
    p.add_argument("--warmup", type=int, help=f"reference warm-up batches (default {FULL['warmup']})")
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time ours in the other mode (eager on CUDA, compiled on a CPU)",
    )
    p.add_argument(
        "--cudagraphs", action="store_true", help="also time ours with compile_mode reduce-overhead"
    )
    p.add_argument("--no-reference", action="store_true", help="skip the reference loop")
    p.add_argument("--no-strongest", action="store_true", help="skip the strongest plain loop")
    p.add_argument("--ref-workers", type=int, help="reference DataLoader workers (default: CUDA 2, CPU 0)")
    p.add_argument(
        "--eval-examples",
        type=int,
        help=f"examples per attack, 0 = no evaluation (default {FULL['eval_examples']})",
    )
    p.add_argument("--eval-batch", type=int, default=256, help="evaluation batch size")
    p.add_argument("--attacks", default=",".join(EVAL_ATTACKS), help="attacks to time in evaluation")
    p.add_argument("--eval-bf16", action="store_true", help="sign-based attacks under bf16 autocast (CUDA)")
    p.add_argument("--checkpoint", type=Path, help="trained checkpoint for the evaluation")
    p.add_argument("--json", type=Path, help="also write all results to this JSON file")
    args = p.parse_args(argv)
    for key, value in (CPU_TINY if args.cpu_tiny else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.ref_workers is None:
        args.ref_workers = 2 if args.device.type == "cuda" else 0
    return args


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = [line for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        name = models[0].split(":", 1)[1].strip() if models else name
    return f"{name} ({torch.get_num_threads()} threads)"


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True
        ).stdout
        return rev + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def matmul_peak(device: torch.device) -> tuple[float, str]:
    """Measured dense matmul rate in TFLOP/s: bf16 8192^3 on CUDA, fp32 1024^3 on CPU."""
    dtype, n, iters = (torch.bfloat16, 8192, 20) if device.type == "cuda" else (torch.float32, 1024, 5)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b, out=c)
    times = []
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            torch.mm(a, b, out=c)
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 * iters / statistics.median(times) / 1e12, str(dtype).replace("torch.", "")


def model_copy(run: TrainRun) -> torch.nn.Module:
    """A separate model with the run's weights (random layers seeded afresh), on its device."""
    d = run.data
    model = build_model(
        run.config, num_classes=d.num_classes, input_shape=d.input_shape, mean=d.mean, std=d.std
    )
    model.load_state_dict(run.model.state_dict())
    seed_random_layers(model, run.config.seed + 1000)
    return model.to(run.device)


def forward_flops(run: TrainRun) -> float:
    """FLOPs of one forward pass on one image (convolutions and matmuls)."""
    probe = model_copy(run).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        probe(torch.zeros((2, *run.data.input_shape), device=run.device))
    return counter.get_total_flops() / 2


def train_config(
    model: str,
    width: float,
    batch: int,
    n_images: int,
    steps: int,
    compile_: bool | str = "auto",
    mode: str = "default",
) -> TrainConfig:
    """CTRW (variant ctrw, random weight at position 0) on synthetic CIFAR-shaped data."""
    return TrainConfig.model_validate(
        {
            "name": "bench",
            "model": {"name": model, "width": width},
            "data": {
                "dataset": "synthetic",
                "synthetic_train": n_images,
                "synthetic_test": 64,
                "val_fraction": 0.0,
            },
            "optim": {"batch_size": batch, "epochs": 1},
            "attack": {"steps": steps},
            "evaluation": None,  # validation keeps its defaults (PGD-20 on 1,000 images): see epoch_overhead
            "compile": compile_,
            "compile_mode": mode,
        }
    )


# --------------------------------------------------------------------------- training


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


def print_training(rows: list[dict[str, Any]], peak: float, peak_dtype: str, smoke: bool) -> None:
    print(
        f"\n{'model':<10} {'width':>5} {'batch':>5} {'loop':<16} {'img/s':>9} {'TFLOP/s':>8} "
        f"{'%peak':>6} {'peak MB':>8}"
    )
    for row in rows:
        for name, r in row["results"].items():
            mem = "n/a" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
            print(
                f"{row['model']:<10} {row['width']:>5g} {row['batch']:>5} {name:<16} {r['images_per_s']:>9.1f} "
                f"{r['tflops_lean_work']:>8.3f} {100 * r['fraction_of_peak']:>5.1f}% {mem:>8}"
            )
    print(
        f"(TFLOP/s = images/s x (2k+3)F, the lean work; %peak of the measured {peak_dtype} matmul "
        f"peak {peak:.3f} TFLOP/s; peak MB = CUDA memory allocated by tensors, n/a on CPU)"
    )
    off = [k for k, on in rows[0]["strongest_switches"].items() if not on] if rows else []
    if off:
        print(
            f"note: on this device the strongest loop runs without {', '.join(off)} (CUDA-only switches): fp32 eager"
        )
    for row in rows:
        o = row["epoch_overhead"]
        for name, r in row["results"].items():
            if "paper_schedule_minutes" in r:
                print(
                    f"{name} ({row['model']} width {row['width']:g}, batch {row['batch']}): epoch of "
                    f"{CIFAR_TRAIN:,} images {CIFAR_TRAIN / r['images_per_s']:.1f} s + validation "
                    f"{o['validation_s']:.1f} s + checkpoint {o['checkpoint_s']:.2f} s (write "
                    f"{o['checkpoint_write_s']:.2f} s, in the background) + compile {r['compile_s']:.0f} s once -> "
                    f"{PAPER_EPOCHS} epochs in {r['paper_schedule_minutes']:.1f} min"
                )
        if "authors_epoch" in row:
            a = row["authors_epoch"]
            print(
                f"authors' epoch ({row['model']} width {row['width']:g}, batch {row['batch']}): reference "
                f"training + their per-epoch full test-set evaluation (+{100 * AUTHORS_EVAL_EXTRA:.0f}% work) "
                f"{a['epoch_s']:.1f} s -> {PAPER_EPOCHS} epochs in {a['paper_schedule_minutes']:.1f} min"
            )
    for row in rows:
        where = f"({row['model']} width {row['width']:g}, batch {row['batch']})"
        authors = row.get("authors_epoch", {}).get("ratio", {})
        for name in row["results"]:
            if name in row.get("ratio_strongest", {}):
                print(f"HEADLINE ratio {name}/strongest {where}: {row['ratio_strongest'][name]:.2f}x")
            if name in row.get("ratio", {}):
                print(f"ratio {name}/reference {where}: {row['ratio'][name]:.2f}x")
            if name in authors:
                print(f"ratio authors' epoch/{name} epoch {where}: {authors[name]:.2f}x")
    if smoke:
        print(SMOKE_NOTE)


# --------------------------------------------------------------------------- evaluation


def _eval_data(cfg: TrainConfig, n: int, *, real: bool) -> tuple[torch.Tensor, torch.Tensor, int, str]:
    """The first ``n`` test images: the checkpoint's own test set when ``real`` and it is on disk
    (attack costs depend on how many images the model gets right), synthetic ones otherwise."""
    from ctrw.data import DataNotFoundError, load_data
    from ctrw.jobs import load_test_tensors

    if real:
        try:
            x, y, num_classes = load_test_tensors(cfg, n)
            return x, y, num_classes, f"{cfg.data.dataset} test set"
        except DataNotFoundError as e:
            print(f"note: {e}; timing on synthetic images instead (attack costs are then lower bounds)")
    data = load_data(cfg.data.model_copy(update={"dataset": "synthetic", "synthetic_test": max(n, 8)}))
    return data.test.float_images()[:n], data.test.y[:n], data.num_classes, "synthetic images"


def bench_evaluation(args: argparse.Namespace, run: TrainRun | None) -> tuple[list[dict[str, Any]], str]:
    """Seconds per attack on ``--eval-examples`` test images, projected to 10,000; and which
    images they were."""
    from ctrw.attacks.build import build_attack
    from ctrw.evaluation.evaluate import evaluate

    dev, n = args.device, args.eval_examples
    if args.checkpoint is not None:
        model, cfg, _ = load_trained_model(args.checkpoint, device=dev)
        model = prepare_for_device(model, cfg, dev)  # as the evaluation job does
    else:
        assert run is not None
        model, cfg = run.model, run.config
    x, y, num_classes, data_label = _eval_data(cfg, n, real=args.checkpoint is not None)
    x, y = x.to(dev), y.to(dev)
    amp = torch.bfloat16 if (args.eval_bf16 and dev.type == "cuda") else None

    def timed(spec: AttackSpec, xs: torch.Tensor, ys: torch.Tensor) -> tuple[float, dict[str, Any]]:
        ecfg = EvalConfig(attacks=[spec], protocol="paper", batch_size=args.eval_batch, diagnostics=False)
        sync(dev)
        t0 = time.perf_counter()
        out = evaluate(model, xs, ys, ecfg, num_classes=num_classes, device=dev, autocast_dtype=amp)
        sync(dev)
        return time.perf_counter() - t0, out["rows"][0]

    timed(
        AttackSpec(name="pgd", steps=2), x[: min(n, args.eval_batch)], y[: min(n, args.eval_batch)]
    )  # warm-up
    rows = []
    for name in [a for a in args.attacks.split(",") if a]:
        seconds, r = timed(AttackSpec(name=name), x, y)
        rows.append(
            {
                "attack": r["attack"],
                "n": n,
                "seconds": seconds,
                "images_per_s": n / seconds,
                "projected_test_set_s": seconds * TEST_SET / n,
                "accuracy": r["accuracy"],
            }
        )
    # DeepFool alone: our batched version against torchattacks' per-image one, same examples.
    m = min(n, 64)
    model.eval()
    grads = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in grads:
        p.requires_grad_(False)
    try:
        for reference in (False, True):
            attack = build_attack(
                AttackSpec(name="deepfool"), model, num_classes=num_classes, reference=reference
            )
            attack(x[:2], y[:2])  # warm-up
            sync(dev)
            t0 = time.perf_counter()
            attack(x[:m], y[:m])
            sync(dev)
            seconds = time.perf_counter() - t0
            label = "deepfool attack only, " + ("torchattacks per-image" if reference else "ours batched")
            rows.append(
                {
                    "attack": label,
                    "n": m,
                    "seconds": seconds,
                    "images_per_s": m / seconds,
                    "projected_test_set_s": seconds * TEST_SET / m,
                    "accuracy": None,
                }
            )
    finally:
        for p, flag in grads:
            p.requires_grad_(flag)
        model.train()
    return rows, data_label


def print_evaluation(rows: list[dict[str, Any]], label: str) -> None:
    print(f"\nevaluation ({label}; paper protocol, 10 scoring draws per example)")
    print(f"{'attack':<44} {'n':>5} {'seconds':>9} {'img/s':>9} {'10k test set':>14}")
    total = 0.0
    for r in rows:
        if not r["attack"].startswith("deepfool attack only"):
            total += r["projected_test_set_s"]
        print(
            f"{r['attack']:<44} {r['n']:>5} {r['seconds']:>9.2f} {r['images_per_s']:>9.1f} "
            f"{r['projected_test_set_s'] / 60:>10.1f} min"
        )
    print(f"projected total for the listed attacks on {TEST_SET} test images: {total / 60:.1f} min")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    dev = args.device
    set_torch_threads(threads_from_env())  # an entry point: CTRW_TORCH_THREADS, or every usable core
    logging.getLogger("ctrw").setLevel(logging.ERROR)  # robustness diagnostics are not the point here
    torch.manual_seed(0)
    peak, peak_dtype = matmul_peak(dev)
    info = {
        "device": device_name(dev),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "revision": git_revision(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "matmul_peak_tflops": peak,
        "matmul_peak_dtype": peak_dtype,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    print(f"device: {info['device']} | torch {info['torch']} | revision {info['revision']} | {info['date']}")
    print(f"measured {peak_dtype} matmul peak: {peak:.3f} TFLOP/s")
    if args.cpu_tiny:
        print(SMOKE_NOTE)
    print(
        f"training: PGD-{args.steps} adversarial training, CTRW variant, synthetic CIFAR-shaped data "
        f"(3x32x32, 10 classes), {args.batches} batches x {args.repeats} repeats, "
        f"{'bf16 autocast + channels_last + torch.compile' if dev.type == 'cuda' else 'fp32 eager'} (ours), "
        f"strongest plain loop {'bf16 + channels_last + cudnn.benchmark' if dev.type == 'cuda' else 'fp32 (its switches are CUDA-only)'}, "
        f"reference fp32 with {args.ref_workers} DataLoader workers"
    )
    rows = []
    models = args.models.split(",")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    for model_name in models:
        for batch in batch_sizes:
            row = bench_training(args, model_name, batch, peak)
            anchor = ANCHOR_GFLOP.get(model_name)
            if anchor is not None:
                row["anchor_gflop_per_forward"] = anchor * args.width**2
            rows.append(row)
    print_training(rows, peak, peak_dtype, smoke=args.cpu_tiny)
    for row in rows:
        line = f"{row['model']} width {row['width']:g}: F = {row['gflop_per_forward']:.4f} GFLOP per image (counted)"
        if "anchor_gflop_per_forward" in row:
            line += f", anchor x width^2 = {row['anchor_gflop_per_forward']:.4f}"
        print(line)
    results: dict[str, Any] = {"info": info, "smoke_check_only": args.cpu_tiny, "training": rows}
    if args.eval_examples > 0:
        run = None
        if args.checkpoint is None:  # the first model, trained for one short epoch
            cfg = train_config(
                models[0], args.width, batch_sizes[0], batch_sizes[0] * args.batches, args.steps, False
            )
            run = TrainRun.create(cfg.model_copy(update={"device": str(dev)}))
            run.train_epoch(Hooks())
        results["evaluation"], data_label = bench_evaluation(args, run)
        model_label = str(args.checkpoint) if args.checkpoint else "barely trained model"
        lower_bounds = args.checkpoint is None or data_label == "synthetic images"
        label = f"{model_label} on {data_label}" + (": attack costs are lower bounds" if lower_bounds else "")
        results["evaluation_data"] = data_label
        print_evaluation(results["evaluation"], label)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
        print(f"results written to {args.json}")
    return results


if __name__ == "__main__":
    main()
