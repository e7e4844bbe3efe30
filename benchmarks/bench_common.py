"""What the benchmark's sections share: the paper's schedule, device name, synchronisation, the
measured matmul peak, the code revision, a model copy, the FLOP count and the training config.

Helpers of ``bench.py`` (a script directory, not a package: imported as ``bench_common``).
"""

from __future__ import annotations

import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ctrw.config import TrainConfig
from ctrw.nn.random_weight import seed_random_layers
from ctrw.training import TrainState as TrainRun
from ctrw.training import build_model

ROOT = Path(__file__).resolve().parent.parent
TEST_SET = 10_000
# The paper's CIFAR schedule: 200 epochs over CIFAR-10's 50,000 training images less our default
# 10% validation split.
PAPER_EPOCHS, CIFAR_TRAIN = 200, 45_000
# The authors' training loop evaluates on the full test set after every epoch: +113% of a training
# epoch's work (issue 17's count for the published loop), so their epoch is 2.13 reference epochs.
AUTHORS_EVAL_EXTRA = 1.13


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
