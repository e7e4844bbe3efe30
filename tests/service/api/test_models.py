"""POST /models without a worker (in-process API, SQLite): what the API checks itself, torch-free,
before anything is stored: the size limit, the config, the safetensors layout; a pickle or a zip
is named and refused with 422, nothing stored. A well-formed file is stored and queued (202: no
worker checks its tensors here). With a worker: tests/service/e2e/test_models.py."""

from __future__ import annotations

import json
import math
import pickle
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.db import make_engine
from app.core.migrate import upgrade
from app.core.settings import Settings
from app.main import create_app
from app.models import Job
from tests.support.configs import TINY_TRAIN

pytestmark = pytest.mark.service

ARCH = json.dumps({k: v for k, v in TINY_TRAIN.items() if k != "evaluation"})


def safetensors_bytes(
    tensors: dict[str, tuple[str, list[int]]], *, width: dict[str, int] | None = None
) -> bytes:
    """A safetensors file of zeros (header: dtype, shape, offsets), built by hand (no torch)."""
    size = {"F32": 4, "I64": 8}
    header: dict[str, Any] = {"__metadata__": {"note": "test"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = size[dtype] * (1 if not shape else math.prod(shape))
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\0" * offset


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Settings]]:
    tmp = tmp_path_factory.mktemp("models")
    settings = Settings(database_url=f"sqlite:///{tmp / 'ctrw.db'}", runs_dir=tmp / "runs",
                        max_upload_bytes=64 * 1024, upload_validation_s=0)  # fmt: skip
    upgrade(settings)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        yield client, settings


def _post(client: TestClient, body: bytes, config: str = ARCH) -> Any:
    return client.post("/models", params={"config": config}, content=body,
                       headers={"content-type": "application/octet-stream"})  # fmt: skip


def _stored(settings: Settings) -> tuple[int, list[str]]:
    with Session(make_engine(settings.database_url)) as s:
        jobs = s.scalar(select(func.count()).select_from(Job)) or 0
    files = sorted(
        str(p) for p in Path(settings.runs_dir).rglob("*") if p.is_file() and "ctrw.db" not in p.name
    )
    return jobs, files


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (pickle.dumps({"weight": [1.0]}), "a Python pickle (never unpickled here)"),
        (b"PK\x03\x04" + b"\0" * 100, "a zip archive (torch.save's format"),
        (b"\x01\x02", "not a safetensors file"),
        (struct.pack("<Q", 4) + b"nope" + b"\0" * 8, "its header is not JSON"),
        (safetensors_bytes({"w": ("F32", [2, 2])})[:-4], "truncated or padded"),
        (safetensors_bytes({"w": ("F32", [2])}).replace(b'"F32"', b'"Q99"'), "dtype 'Q99'"),
    ],
)
def test_refused_before_anything_is_stored(env: Any, body: bytes, message: str) -> None:
    client, settings = env
    before = _stored(settings)
    r = _post(client, body)
    assert r.status_code == 422, r.text
    assert message in r.json()["message"]
    assert _stored(settings) == before


def test_config_errors_and_size_limit(env: Any) -> None:
    client, settings = env
    before = _stored(settings)
    r = _post(client, safetensors_bytes({"w": ("F32", [2])}), config='{"model": {"name": "vgg"}}')
    assert (
        r.status_code == 422 and "query.config" in r.json()["message"] and "model.name" in r.json()["message"]
    )
    r = _post(client, b"\0" * (64 * 1024 + 1))
    assert r.status_code == 413
    assert _stored(settings) == before


def test_a_well_formed_file_is_stored_and_queued(env: Any) -> None:
    client, settings = env
    body = safetensors_bytes({"a.weight": ("F32", [3, 2]), "a.num_batches_tracked": ("I64", [])})
    r = _post(client, body)
    assert r.status_code == 202, r.text  # no worker here: its tensors are not checked yet
    job = r.json()
    assert (
        job["kind"] == "train" and job["status"] == "queued" and r.headers["location"] == f"/jobs/{job['id']}"
    )
    stored = Path(settings.runs_dir) / job["id"] / "upload.safetensors"
    assert stored.read_bytes() == body
    assert not list((Path(settings.runs_dir) / "uploads").glob("*"))  # the spooled copy is gone
