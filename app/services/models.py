"""Bring your own model: an uploaded safetensors state dict becomes a succeeded training job.

``POST /models`` sends the file's bytes with its architecture and defense (a ``TrainConfig``: a
registered model name and width, the variant and its settings, the data set). This module checks
what needs no torch (size, the safetensors format: an 8-byte little-endian header length, a JSON
header of dtype/shape/offsets per tensor, then the bytes; a pickle or a zip of ``torch.save`` is
named as such and never opened), stores the file like a job's artifact and queues the upload as a
training job whose summary says ``upload``. The worker checks the tensor names and shapes against
the network (``ctrw.uploads``, torch) and writes the job's checkpoints, so ``POST /jobs/attack``
evaluates it like any trained model. A file the worker rejects is deleted with its job (the route
answers 422); one that is not checked within CTRW_UPLOAD_VALIDATION_S stays ``queued`` (validating).
"""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.core.artifacts import make_store, sha256_file
from app.core.settings import Settings
from app.models import Artifact, Job, JobKind, JobStatus
from app.services.errors import InvalidInputError
from app.services.jobs import check_quota
from ctrw.config import TrainConfig, config_hash

__all__ = ["REJECTED", "UPLOAD_NAME", "create_upload", "discard_upload", "read_header", "upload_state"]

# The worker's error for a state dict that does not fit (ctrw.uploads.UploadRejected).
REJECTED = "UploadRejected: "
UPLOAD_NAME = "upload.safetensors"
# Bytes per element of the safetensors dtypes.
DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit
_LOC = ("body",)


def _invalid(msg: str, loc: tuple[str | int, ...] = _LOC) -> InvalidInputError:
    return InvalidInputError(msg, loc=loc)


def _not_safetensors(head: bytes) -> str:
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle (never unpickled here); save the state dict with safetensors.torch.save_file"
    if head[:4] == b"PK\x03\x04":
        return "a zip archive (torch.save's format, a pickle inside; never unpickled here); save the state dict with safetensors.torch.save_file"  # noqa: E501
    return "not a safetensors file"


def read_header(path: Path) -> dict[str, dict[str, Any]]:
    """The tensors of a safetensors file (name -> dtype, shape), after checking its layout:
    the header is a JSON object, every tensor's dtype is known and its bytes are exactly its
    shape's, and the tensors tile the data section. 422 naming the problem otherwise."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _invalid(f"{_not_safetensors(head)}: {size} bytes")
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER, size - 8):
            raise _invalid(f"{_not_safetensors(head)} (its first 8 bytes are no header length)")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _invalid(f"{_not_safetensors(head)} (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise _invalid("not a safetensors file (its header is not a JSON object)")
    header.pop("__metadata__", None)
    if not header:
        raise _invalid("the safetensors file holds no tensors")
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise _invalid(f"tensor '{name}': not a safetensors tensor entry")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPES:
            raise _invalid(f"tensor '{name}': dtype {dtype!r} is not one of {sorted(DTYPES)}")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise _invalid(f"tensor '{name}': shape {shape!r} is not a list of sizes")
        numel = 1
        for d in shape:
            numel *= d
        ok = isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
        if not ok or offsets[1] - offsets[0] != numel * DTYPES[dtype]:
            raise _invalid(f"tensor '{name}': its data offsets {offsets!r} do not hold {shape} x {dtype}")
        spans.append((offsets[0], offsets[1]))
    spans.sort()
    end = 0
    for start, stop in spans:
        if start != end:
            raise _invalid("the tensors' data overlap or leave gaps: a corrupted safetensors file")
        end = stop
    if end != size - 8 - n:
        raise _invalid(f"the file is {size} bytes, its header describes {8 + n + end}: truncated or padded")
    return {name: {"dtype": info["dtype"], "shape": info["shape"]} for name, info in header.items()}


def _config(config: str) -> TrainConfig:
    try:
        data = json.loads(config)
    except json.JSONDecodeError as e:
        raise _invalid(f"not JSON: {e}", ("query", "config")) from None
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise _invalid(f"{loc}: {first['msg']}", ("query", "config")) from None


def create_upload(
    *,
    session: Session,
    settings: Settings,
    config: str,
    body: Path,
    filename: str | None,
    owner: str,
    max_active: int = 0,
) -> Job:
    """Check the upload at ``body`` (a temporary file, moved into the job's storage) and queue it.

    Args:
        config: the architecture and defense, a ``TrainConfig`` as JSON (evaluation unused).
        body: the uploaded bytes.
        filename: the client's file name (recorded only).
        owner: the key's owner (the job's).

    Raises:
        InvalidInputError: a bad config or not a well-formed safetensors file (nothing stored).
    """
    cfg = _config(config).model_copy(update={"evaluation": None})
    tensors = read_header(body)
    check_quota(session=session, owner=owner, max_active=max_active)
    upload = {"filename": filename, "tensors": len(tensors), "size_bytes": body.stat().st_size,
              "sha256": sha256_file(body), "owner": owner}  # fmt: skip
    job = Job(kind=JobKind.TRAIN, status=JobStatus.QUEUED, config=cfg.model_dump(mode="json"),
              config_hash=config_hash(cfg), owner=owner, cost_pflop=0.0, summary={"upload": upload})  # fmt: skip
    session.add(job)
    session.flush()
    # The summary names the store's key, not a server path (clients see the summary).
    make_store(settings).put(body, f"{job.id}/{UPLOAD_NAME}", sha256=upload["sha256"])
    job.summary = {"upload": {**upload, "key": f"{job.id}/{UPLOAD_NAME}"}}
    session.commit()
    return job


def upload_state(*, session: Session, job_id: str) -> tuple[JobStatus, str | None]:
    """The upload job's status and error, read afresh."""
    session.expire_all()
    row = session.execute(select(Job.status, Job.error).where(Job.id == job_id)).one()
    return row.status, row.error


def discard_upload(*, session: Session, settings: Settings, job_id: str) -> None:
    """Delete a rejected upload: its stored objects (the file and any checkpoint the worker
    stored), then its job and its artifacts' rows, and its local files. The objects go first, so
    that if the store fails the rows that name them remain (the job failed) and nothing is orphaned."""
    job = session.get(Job, job_id)
    key = ((job.summary or {}).get("upload") or {}).get("key") if job is not None else None
    store = make_store(settings)
    urls = [store.url(key)] if key else []
    urls += session.scalars(select(Artifact.path).where(Artifact.job_id == job_id))
    for url in urls:
        store.delete(url)
    run_dir = settings.runs_dir / job_id
    for name in (UPLOAD_NAME, "last.safetensors", "best.safetensors"):
        (run_dir / name).unlink(missing_ok=True)
    try:
        run_dir.rmdir()
    except OSError:  # absent, or holding files another step wrote: leave them to the operator
        pass
    session.execute(delete(Artifact).where(Artifact.job_id == job_id))
    session.execute(delete(Job).where(Job.id == job_id))
    session.commit()


def spool(chunks: bytes, settings: Settings) -> Path:
    """The request body in a temporary file under the runs directory (moved or removed later)."""
    tmp_dir = settings.runs_dir / "uploads"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=tmp_dir, suffix=".safetensors", delete=False) as f:
        f.write(chunks)
    return Path(f.name)
