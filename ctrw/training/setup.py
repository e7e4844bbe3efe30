"""The pieces of a run built from a ``TrainConfig``: device, model, optimizer, schedule, data, bounds.

``TrainState.create`` puts them together; evaluation jobs use ``build_model``,
``prepare_for_device`` and ``load_trained_model`` to rebuild a trained network.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ctrw.catalog import DEFENSES
from ctrw.checkpoint import CheckpointError, load_checkpoint
from ctrw.config import TrainConfig
from ctrw.data import DataSplits, TensorSplit
from ctrw.nn.bounds import LayerBounds, resolve_bounds
from ctrw.nn.defenses import apply_defense
from ctrw.nn.models import CTRWNet, create_model
from ctrw.nn.random_weight import random_layers, seed_random_layers
from ctrw.nn.randomness import random_modules

__all__ = [
    "build_model",
    "clean_acc_every",
    "compile_for_training",
    "compiles",
    "compute_bounds",
    "load_trained_model",
    "lr_at",
    "make_optimizer",
    "pick_device",
    "place_data",
    "prepare_for_device",
    "uses_channels_last",
    "val_batch_size",
]

# CUDA defaults of the 'auto' (null) settings; see TrainConfig's field descriptions.
CUDA_CLEAN_ACC_EVERY = 10
CUDA_VAL_BATCH_MAX = 1024


def pick_device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def uses_channels_last(config: TrainConfig, device: torch.device) -> bool:
    """channels_last applies on CUDA only (tensor-core convolutions are NHWC natively)."""
    return config.channels_last and device.type == "cuda"


def prepare_for_device(model: CTRWNet, config: TrainConfig, device: torch.device) -> CTRWNet:
    """The device settings of every job (training and evaluation): cuDNN autotuning on CUDA (jobs
    run fixed batch shapes, so tuned kernels are reused) and channels_last where it applies.
    The layout changes strides only; checkpoints are written contiguous."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if uses_channels_last(config, device):
        # Every 4-D parameter and buffer; not Module.to(memory_format=...), which also tries
        # the 5-D mu/sigma of the 'filters' random weight and fails (channels_last is 4-D).
        for t in itertools.chain(model.parameters(), model.buffers()):
            if t.dim() == 4:
                t.data = t.data.contiguous(memory_format=torch.channels_last)
    return model


def build_model(
    config: TrainConfig,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> CTRWNet:
    """The network of a training config: a random weight for the CTRW variants, the variant's
    defense (``ctrw.nn.defenses``) for the others."""
    rw = config.random_weight if DEFENSES[config.variant].random_weight else None
    model = create_model(
        config.model.name,
        num_classes=num_classes,
        input_shape=input_shape,
        mean=mean,
        std=std,
        width=config.model.width,
        random_weight=rw,
    )
    return apply_defense(config.variant, model, config.defense)


def place_data(data: DataSplits, device: torch.device) -> DataSplits:
    """CIFAR-sized data lives on the GPU as uint8; ImageFolder splits stay on disk."""
    if device.type == "cuda":
        for split in ("train", "val", "test"):
            s = getattr(data, split)
            if isinstance(s, TensorSplit):
                setattr(data, split, s.to(device))
    return data


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum; the random modules' own parameters (CTRW's μ and σ, PNI's α) in a group
    of their own, so weight decay on them can be switched off (``optim.weight_decay_on_random``)."""
    rand_params = [p for m in random_modules(model) for p in m.noise_parameters()]
    rand_ids = {id(p) for p in rand_params}
    other = [p for p in model.parameters() if id(p) not in rand_ids]
    o = config.optim
    groups: list[dict[str, Any]] = [{"params": other, "weight_decay": o.weight_decay}]
    if rand_params:
        groups.append(
            {"params": rand_params, "weight_decay": o.weight_decay if o.weight_decay_on_random else 0.0}
        )
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum)


def lr_at(config: TrainConfig, epoch: int) -> float:
    """Learning rate of 0-based ``epoch`` (schedules step once per epoch, as published)."""
    o = config.optim
    if o.schedule == "multistep":
        return o.lr * o.gamma ** sum(epoch >= m for m in o.milestones)
    if o.schedule == "cosine":
        return o.lr * 0.5 * (1 + math.cos(math.pi * epoch / o.epochs))
    return o.lr


def compiles(config: TrainConfig, device: torch.device) -> bool:
    """Whether the training step is compiled: ``config.compile``, where 'auto' means CUDA only.

    Training batches always have one shape (drop_last), so a CUDA job compiles once and reuses
    the graphs for the whole run; on the CPU compile time rarely pays off for the small runs done
    there, so 'auto' keeps them eager.
    """
    if config.compile == "auto":
        return device.type == "cuda"
    return bool(config.compile)


def clean_acc_every(config: TrainConfig, device: torch.device) -> int:
    """Every how many batches the train-clean-accuracy forward runs (1 = every batch).

    It is a measurement only (~1F of ~24F per image); on CUDA it is sampled every 10th batch by
    default, on the CPU every batch keeps the metric of small runs and tests meaningful.
    """
    if config.train_clean_acc_every is not None:
        return config.train_clean_acc_every
    return CUDA_CLEAN_ACC_EVERY if device.type == "cuda" else 1


def val_batch_size(config: TrainConfig, device: torch.device) -> int:
    """Validation batch size: large on CUDA (fewer, fuller kernels), the training batch on the CPU."""
    if config.val_batch_size is not None:
        return config.val_batch_size
    bs = config.optim.batch_size
    return max(bs, min(4 * bs, CUDA_VAL_BATCH_MAX)) if device.type == "cuda" else bs


def compile_for_training(config: TrainConfig, model: nn.Module, device: torch.device) -> nn.Module | None:
    """The ``torch.compile`` wrapper the training step calls, or None when not compiling (``compiles``).

    See ``ctrw.training.step`` for why a run compiles a few graphs in its first batch and never again.
    """
    if not compiles(config, device):
        return None
    # Every CTRWNet shares one forward code object, and dynamo allows it 8 compiled variants per
    # process; this run needs ~3. Without a reset the third compiled run in a process (a worker's
    # next job, the benchmark's next model) would pass that limit and silently run eager. A
    # process trains one run at a time, so nothing else is compiled at this point.
    torch._dynamo.reset()
    return torch.compile(model, dynamic=False, mode=config.compile_mode)


def _bound_examples(data: DataSplits, device: torch.device) -> torch.Tensor:
    split = data.val or data.train
    if not isinstance(split, TensorSplit):
        xs = [split[i][0] for i in range(min(len(split), 64))]
        return torch.stack(xs).to(device)
    return split.head(256).float_images().to(device)


def compute_bounds(
    config: TrainConfig, model: nn.Module, data: DataSplits, device: torch.device
) -> list[LayerBounds]:
    """The configured σ bounds of every random layer (lemma upper bounds look at held-out images)."""
    layers = random_layers(model)
    if not layers:
        return []
    x = _bound_examples(data, device) if config.bounds.upper is not None else None
    return [resolve_bounds(config.bounds, model, layer, x) for layer in layers]


def load_trained_model(
    path: Path, config: TrainConfig | None = None, device: torch.device | str = "cpu"
) -> tuple[CTRWNet, TrainConfig, dict[str, Any]]:
    """Rebuild a model from a checkpoint (weights only; data is not loaded)."""
    tensors, meta = load_checkpoint(Path(path), device="cpu")
    cfg = config or TrainConfig.model_validate(meta["config"])
    d = meta["data"]
    model = build_model(
        cfg,
        num_classes=d["num_classes"],
        input_shape=tuple(d["input_shape"]),
        mean=tuple(d["mean"]),
        std=tuple(d["std"]),
    )
    sd = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit the model of its config: {e}") from e
    seed_random_layers(model, cfg.seed + 2000)
    return model.to(device), cfg, meta
