"""Bring your own model: a safetensors state dict for a registered architecture and defense,
checked against that architecture and turned into a checkpoint like a training job's.

Never unpickles: the file is read with ``safetensors`` only. The service's API checks the file's
format without torch (``app.services.models``); the tensor names and shapes need the network
itself, so the worker checks them here (``import_state_dict``) before anything is stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from ctrw.checkpoint import environment_info, link_checkpoint, save_checkpoint
from ctrw.config import TrainConfig
from ctrw.data import load_data
from ctrw.training.setup import build_model
from ctrw.training.state import BEST, LAST

__all__ = ["UploadRejected", "expected_shapes", "import_state_dict"]

# How many names of each kind of mismatch the message lists.
_LISTED = 5


class UploadRejected(ValueError):
    """The uploaded state dict does not fit the architecture (names the tensors)."""


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return ", ".join(names[:_LISTED]) + more


def _network(config: TrainConfig) -> tuple[torch.nn.Module, dict[str, Any]]:
    data = load_data(config.data, seed=config.seed)
    info = {"num_classes": data.num_classes, "input_shape": list(data.input_shape),
            "mean": list(data.mean), "std": list(data.std)}  # fmt: skip
    model = build_model(config, num_classes=data.num_classes, input_shape=data.input_shape,
                        mean=data.mean, std=data.std)  # fmt: skip
    return model, info


def expected_shapes(config: TrainConfig) -> dict[str, list[int]]:
    """The state dict's tensor names and shapes of the network ``config`` trains."""
    model, _ = _network(config)
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def _read(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UploadRejected(f"not a readable safetensors file: {e}") from e


def import_state_dict(config: TrainConfig, src: Path, run_dir: Path, *, source: dict[str, Any]) -> Path:
    """Check the state dict at ``src`` against ``config``'s network and write it to ``run_dir`` as
    the ``last`` and ``best`` checkpoints of a finished run (epoch 0), which attack jobs evaluate.

    Args:
        config: the architecture (model name, width), defense (variant, its settings) and data.
        src: the uploaded safetensors file (a state dict; a ``model.`` prefix is accepted).
        run_dir: the run directory of the upload's job.
        source: what to record about the upload (file name, SHA-256, owner...).

    Returns:
        The ``last`` checkpoint's path.

    Raises:
        UploadRejected: missing or unexpected tensors, wrong shapes or dtypes (each named).
    """
    tensors = _read(Path(src))
    if tensors and all(k.startswith("model.") for k in tensors):
        tensors = {k[len("model.") :]: v for k, v in tensors.items()}
    model, data = _network(config)
    want = model.state_dict()
    missing = sorted(set(want) - set(tensors))
    unexpected = sorted(set(tensors) - set(want))
    wrong = sorted(
        f"{k} {list(tensors[k].shape)} (expected {list(want[k].shape)})"
        for k in set(want) & set(tensors)
        if tensors[k].shape != want[k].shape
    )
    floats = sorted(
        k for k in set(want) & set(tensors) if want[k].is_floating_point() != tensors[k].is_floating_point()
    )
    problems = [
        f"{what}: {_listed(names)}"
        for what, names in (
            ("missing tensors", missing),
            ("unexpected tensors", unexpected),
            ("wrong shapes", wrong),
            ("wrong dtype kind", floats),
        )  # fmt: skip
        if names
    ]
    if problems:
        arch = f"{config.model.name} (width {config.model.width:g}, variant {config.variant})"
        raise UploadRejected(f"the state dict does not fit {arch}: " + "; ".join(problems))
    model.load_state_dict({k: v.to(want[k].dtype) for k, v in tensors.items()})
    meta = {
        "config": config.model_dump(mode="json"),
        "data": data,
        "epoch": 0,
        "best_epoch": 0,
        "history": [],
        "uploaded": source,
        "environment": environment_info(),
    }
    run_dir = Path(run_dir)
    last = run_dir / LAST
    save_checkpoint(last, {f"model.{k}": v for k, v in model.state_dict().items()}, meta)
    link_checkpoint(last, run_dir / BEST)
    return last
