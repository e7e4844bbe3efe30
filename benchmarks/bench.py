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

One script, one command line and one JSON for every number of docs/benchmarks.md, so that a GPU
run (benchmarks/gpu_check.sh) is one command. This file is the command line and the printing; the
timing lives beside it: ``bench_training.py`` (ours, strongest, reference), ``bench_eval.py``
(evaluation), ``bench_common.py`` (device, synchronisation, peak, revision, configs), and the
loops it times in their own modules (``reference_loop.py``, ``strongest_loop.py``, ``ctrw.training``).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import torch
from bench_common import (
    AUTHORS_EVAL_EXTRA,
    CIFAR_TRAIN,
    PAPER_EPOCHS,
    TEST_SET,
    device_name,
    git_revision,
    matmul_peak,
    train_config,
)
from bench_eval import bench_evaluation
from bench_training import bench_training

from ctrw.hooks import Hooks
from ctrw.threads import set_torch_threads, threads_from_env
from ctrw.training import TrainState as TrainRun

# Anchors (../shared/docs/performance-anchors.md), GFLOP per 32x32 image at width 1.
ANCHOR_GFLOP = {"resnet18": 1.11, "wrn34_10": 13.3}
SMOKE_NOTE = (
    "SMOKE CHECK ONLY (--cpu-tiny): a tiny CNN on the CPU for a few batches; the ratios are noise "
    "(0.7x-2x between runs), not a performance result"
)
EVAL_ATTACKS = ("pgd", "fgsm", "mifgsm", "cw", "deepfool", "autoattack", "autoattack_rand")


# --------------------------------------------------------------------------- command line


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


# --------------------------------------------------------------------------- printing


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
