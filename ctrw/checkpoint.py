"""Checkpoints as safetensors + a JSON sidecar. Loading never unpickles anything.

``<stem>.safetensors`` holds every tensor (weights, optimizer buffers, RNG states);
``<stem>.json`` holds the config, epoch, metrics, library versions and the non-tensor state.
Both are written to a temporary name and renamed, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

__all__ = ["CheckpointError", "environment_info", "load_checkpoint", "save_checkpoint", "sidecar_path"]


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated or does not fit the model."""


def sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(cpu, str(tmp), metadata={"format": "ctrw-v1"})
    meta_tmp = sidecar_path(path).with_name(sidecar_path(path).name + ".tmp")
    meta_tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
    # Sidecar first: a tensor file only ever appears with its metadata already in place.
    os.replace(meta_tmp, sidecar_path(path))
    os.replace(tmp, path)


def load_checkpoint(
    path: Path, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt: {e}") from e
    side = sidecar_path(path)
    try:
        meta = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint metadata {side} is missing or corrupt: {e}") from e
    return tensors, meta


def environment_info(device: torch.device | None = None) -> dict[str, Any]:
    """Library versions and device, stored beside every result."""
    import torchvision

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
    }
    try:
        import torchattacks

        info["torchattacks"] = torchattacks.__version__
    except ImportError:  # pragma: no cover - torchattacks is a hard dependency of the ml extra
        info["torchattacks"] = None
    if device is not None and device.type == "cuda":
        info["device"] = torch.cuda.get_device_name(device)
    else:
        info["device"] = f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return info
