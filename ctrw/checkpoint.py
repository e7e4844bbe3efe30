"""Checkpoints: one self-describing safetensors file each. Loading never unpickles anything.

A checkpoint holds every tensor (weights, optimizer buffers, RNG states) and, in the safetensors
header's string metadata, the JSON of everything else (config, epoch, metrics, bounds, library
versions) with a SHA-256 over that JSON and all tensors. So a file downloaded or copied alone is
usable (``ctrw evaluate``, ``ctrw sigma-stats``), and a truncated, corrupted or edited one is
refused with a :class:`CheckpointError` instead of being trusted.

Writes are atomic: a temporary file in the same directory is written, fsynced and renamed over
the destination (then the directory is fsynced), so after a kill at any point a checkpoint path
holds either the previous complete file or the new one. ``link_checkpoint`` publishes a complete
file under a second name the same way, as a hard link (``best`` from ``last``: no second copy of
the bytes; see ``ctrw.training.state.settle_checkpoints`` for the kill between the two), and
``copy_checkpoint`` as an independent copy.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

__all__ = [
    "CheckpointError",
    "copy_checkpoint",
    "environment_info",
    "link_checkpoint",
    "load_checkpoint",
    "read_meta",
    "save_checkpoint",
]

FORMAT = "ctrw-v2"
# Tests only: "<epoch>:<file name>:<stage>" ends the process (os._exit, as a kill would) when the
# checkpoint of that epoch reaches that stage of being written to that name. Stages: written,
# fsynced, renamed, dir-fsynced (save_checkpoint); copied, fsynced, renamed, dir-fsynced
# (copy_checkpoint); linked, renamed, dir-fsynced (link_checkpoint).
_CRASH_ENV = "CTRW_TEST_CRASH_AT"
CRASH_EXIT_CODE = 77


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, corrupted, edited or does not fit the model."""


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write one self-contained checkpoint atomically.

    Args:
        path: destination (``.safetensors``); replaced atomically if it exists.
        tensors: name -> tensor (any device; written contiguous on the CPU).
        meta: JSON-serialisable metadata, stored in the file's header with a digest over it and
            the tensors.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta_json = json.dumps(meta, sort_keys=True)
    header = {"format": FORMAT, "meta": meta_json, "sha256": _digest(meta_json, cpu)}
    tmp = _tmp_name(path)
    save_file(cpu, str(tmp), metadata=header)
    os.chmod(tmp, 0o644)  # safetensors creates it owner-only; best (a copy) and last alike
    _crash_point(path, "written", meta)
    _fsync_file(tmp)
    _crash_point(path, "fsynced", meta)
    os.replace(tmp, path)
    _crash_point(path, "renamed", meta)
    _fsync_dir(path.parent)
    _crash_point(path, "dir-fsynced", meta)


def copy_checkpoint(src: Path, dst: Path) -> None:
    """Publish a copy of the complete checkpoint ``src`` as ``dst``, atomically.

    A copy, not a hard link: a file written in place under one name (a tampering test, an
    ``rsync --inplace``) must not change the other.
    """
    src, dst = Path(src), Path(dst)
    tmp = _tmp_name(dst)
    shutil.copyfile(src, tmp)
    _crash_point(dst, "copied", src)
    _fsync_file(tmp)
    _crash_point(dst, "fsynced", src)
    os.replace(tmp, dst)
    _crash_point(dst, "renamed", src)
    _fsync_dir(dst.parent)
    _crash_point(dst, "dir-fsynced", src)


def link_checkpoint(src: Path, dst: Path) -> None:
    """Publish the complete checkpoint ``src`` also as ``dst``, atomically: a hard link, no copy.

    Safe for our own files because a checkpoint is never modified in place: ``save_checkpoint``
    replaces ``src`` by a rename (a new file), which leaves ``dst`` holding the old one. A file
    edited in place by someone else changes under both names and is then refused by its digest.
    The linked file was fsynced when written; only the rename and the directory need syncing.
    Where hard links are not supported, falls back to ``copy_checkpoint``.
    """
    src, dst = Path(src), Path(dst)
    tmp = _tmp_name(dst)
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # pragma: no cover - file systems without hard links
        copy_checkpoint(src, dst)
        return
    _crash_point(dst, "linked", src)
    os.replace(tmp, dst)
    _crash_point(dst, "renamed", src)
    _fsync_dir(dst.parent)
    _crash_point(dst, "dir-fsynced", src)


def load_checkpoint(
    path: Path, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and metadata of a checkpoint, after checking its digest.

    Raises:
        CheckpointError: missing, unreadable, of another format, or its digest does not match
            (truncated, corrupted or edited).
    """
    path = Path(path)
    header = _header(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt: {e}") from e
    if _digest(header["meta"], tensors) != header["sha256"]:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or was modified: its contents do not match the SHA-256 recorded in it"
        )
    meta = _parse_meta(path, header["meta"])
    if str(device) != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, meta


def read_meta(path: Path) -> dict[str, Any]:
    """A checkpoint's metadata from its header alone (fast; the digest is not checked).

    Raises:
        CheckpointError: missing, unreadable or not a checkpoint of this format.
    """
    path = Path(path)
    return _parse_meta(path, _header(path)["meta"])


def environment_info(device: torch.device | None = None) -> dict[str, Any]:
    """Library versions and device, stored beside every result."""
    import safetensors
    import torchvision

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "safetensors": safetensors.__version__,
        "cuda": torch.version.cuda,
    }
    try:
        info["ctrw"] = importlib.metadata.version("ctrw-service")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        info["ctrw"] = None
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


# --------------------------------------------------------------------------- internals
def _tmp_name(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _digest(meta_json: str, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the metadata JSON and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(meta_json.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # raw bytes, no copy (any dtype, bf16 too)
    return h.hexdigest()


def _header(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt: {e}") from e
    fmt = header.get("format")
    if fmt != FORMAT or "meta" not in header or "sha256" not in header:
        old = " (a two-file checkpoint of an older version: retrain)" if fmt == "ctrw-v1" else ""
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint: format {fmt!r}{old}")
    return header


def _parse_meta(path: Path, meta_json: str) -> dict[str, Any]:
    try:
        meta = json.loads(meta_json)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint {path} has corrupt metadata: {e}") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path} has corrupt metadata: not a JSON object")
    return meta


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make the renames durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _crash_point(path: Path, stage: str, source: dict[str, Any] | Path) -> None:
    """Tests only (see _CRASH_ENV): the epoch comes from the meta being written or the file copied."""
    want = os.environ.get(_CRASH_ENV)
    if not want:
        return
    meta = source if isinstance(source, dict) else read_meta(source)
    if want == f"{meta.get('epoch')}:{path.name}:{stage}":
        os._exit(CRASH_EXIT_CODE)
