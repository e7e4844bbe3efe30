"""The artifact store (app.core.artifacts) against a real S3-compatible server (SeaweedFS) and the
local directory: round trips with their SHA-256, verification on read, the local cache, server-side
copies, and atomic replacement (a reader never sees part of an object)."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.core.artifacts import ArtifactError, ArtifactStore, S3Store, make_store
from app.core.settings import Settings
from tests.support.servers import S3Server

pytestmark = pytest.mark.service


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture
def s3(s3_server: S3Server, tmp_path: Path) -> ArtifactStore:
    settings = Settings(
        runs_dir=tmp_path / "runs",
        artifacts_url=f"s3://{s3_server.bucket}/{uuid.uuid4().hex[:8]}/",
        s3_endpoint_url=s3_server.endpoint_url,
    )
    store = make_store(settings)
    assert isinstance(store, S3Store) and store.remote
    return store


def test_s3_round_trip_with_digest(s3: ArtifactStore, s3_server: S3Server, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    stored = s3.put(_file(tmp_path / "x.bin", data), "job/x.bin")
    assert stored.url == s3.url("job/x.bin") and stored.url.startswith("s3://ctrw/")
    assert stored.sha256 == hashlib.sha256(data).hexdigest() and stored.size_bytes == len(data)
    assert s3.head(stored.url) == stored and s3.exists(stored.url)
    assert s3.head(s3.url("job/none.bin")) is None

    got = s3.get(stored.url, tmp_path / "cache" / "x.bin", sha256=stored.sha256)
    assert got.read_bytes() == data
    assert b"".join(s3.open(stored.url)) == data
    copy = s3.copy(stored.url, "job/y.bin")  # server-side, digest kept
    assert s3.head(copy.url) == copy and copy.sha256 == stored.sha256

    # The cache is used as is when it holds the wanted bytes (here: the object is gone).
    bucket, key = stored.url.removeprefix("s3://").split("/", 1)
    s3_server.client.delete_object(Bucket=bucket, Key=key)
    assert s3.get(stored.url, got, sha256=stored.sha256) == got
    with pytest.raises(ArtifactError, match="not found"):
        s3.get(stored.url, tmp_path / "elsewhere.bin", sha256=stored.sha256)


def test_s3_read_is_verified(s3: ArtifactStore, s3_server: S3Server, tmp_path: Path) -> None:
    stored = s3.put(_file(tmp_path / "a.bin", b"good bytes"), "job/a.bin")
    bucket, key = stored.url.removeprefix("s3://").split("/", 1)
    # Replaced behind the store's back, even with the old digest in its metadata.
    s3_server.client.put_object(
        Bucket=bucket, Key=key, Body=b"evil bytes", Metadata={"sha256": stored.sha256}
    )
    dest = tmp_path / "cache" / "a.bin"
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        s3.get(stored.url, dest, sha256=stored.sha256)
    assert not dest.exists() and not list(dest.parent.iterdir())  # nothing half-published


def test_s3_put_of_the_same_bytes_is_skipped(s3: ArtifactStore, tmp_path: Path) -> None:
    path = _file(tmp_path / "c.bin", b"checkpoint")
    first = s3.put(path, "job/c.bin")
    modified = s3.client.head_object(Bucket="ctrw", Key=first.url.split("/", 3)[3])["LastModified"]
    again = s3.put(path, "job/c.bin")
    assert again == first
    assert s3.client.head_object(Bucket="ctrw", Key=first.url.split("/", 3)[3])["LastModified"] == modified


def test_s3_replacement_is_atomic(s3: ArtifactStore, tmp_path: Path) -> None:
    """A reader polling while a multipart upload (12 MB: over boto3's 8 MB threshold) replaces the
    object sees the old bytes or the new ones, never a mix or a prefix."""
    old, new = b"o" * 1_000, os.urandom(12 << 20)
    digests = {hashlib.sha256(old).hexdigest(), hashlib.sha256(new).hexdigest()}
    url = s3.put(_file(tmp_path / "old.bin", old), "job/last.bin").url
    seen: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set() or len(seen) < 2:
            seen.append(hashlib.sha256(b"".join(s3.open(url))).hexdigest())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        s3.put(_file(tmp_path / "new.bin", new), "job/last.bin")
    finally:
        done.set()
        reader.join(timeout=120)
    assert set(seen) <= digests, "a reader saw a partial object"
    assert hashlib.sha256(b"".join(s3.open(url))).hexdigest() == hashlib.sha256(new).hexdigest()


def test_delete_removes_the_object_and_a_missing_one_is_fine(s3: ArtifactStore, tmp_path: Path) -> None:
    """On both stores: the object is gone (and only it), deleting it again or one never stored
    raises nothing (a rejected upload's cleanup may run twice or find no checkpoint)."""
    local = make_store(Settings(runs_dir=tmp_path / "runs", artifacts_url=f"file://{tmp_path / 'shared'}"))
    for store in (s3, local):
        gone = store.put(_file(tmp_path / "g.bin", b"gone"), "job/upload.safetensors")
        kept = store.put(_file(tmp_path / "k.bin", b"kept"), "other/upload.safetensors")
        store.delete(gone.url)
        assert not store.exists(gone.url) and store.head(gone.url) is None
        assert store.head(kept.url) == kept
        store.delete(gone.url)
        store.delete(store.url("job/never.safetensors"))
    bucket, prefix = s3.url("").removeprefix("s3://").split("/", 1)
    listed = s3.client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    assert [o["Key"].removeprefix(prefix) for o in listed] == ["other/upload.safetensors"]
    assert [p.name for p in (tmp_path / "shared").rglob("*") if p.is_file()] == ["upload.safetensors"]


def test_file_store_is_the_runs_directory_by_default(tmp_path: Path) -> None:
    store = make_store(Settings(runs_dir=tmp_path / "runs"))
    assert not store.remote and store.url("j/last.safetensors") == str(
        tmp_path / "runs" / "j" / "last.safetensors"
    )
    written = tmp_path / "runs" / "j" / "last.safetensors"
    written.parent.mkdir(parents=True)
    _file(written, b"in place")
    stored = store.put(written, "j/last.safetensors")  # written where it belongs: recorded, not copied
    assert stored.url == str(written) and stored.sha256 == hashlib.sha256(b"in place").hexdigest()
    assert store.get(stored.url, written, sha256=stored.sha256) == written
    written.write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        store.get(stored.url, written, sha256=stored.sha256)


def test_file_store_elsewhere_copies_atomically(tmp_path: Path) -> None:
    store = make_store(Settings(runs_dir=tmp_path / "runs", artifacts_url=f"file://{tmp_path / 'shared'}"))
    stored = store.put(_file(tmp_path / "f.png", b"png"), "j/figures/f.png")
    assert Path(stored.url) == tmp_path / "shared" / "j" / "figures" / "f.png"
    assert [p.name for p in (tmp_path / "shared" / "j" / "figures").iterdir()] == ["f.png"]
    assert b"".join(store.open(stored.url)) == b"png"


@pytest.mark.parametrize("url", ["http://host/x", "s3://", "file://relative/dir", "gs://b"])
def test_unknown_artifact_urls_are_refused_at_start(url: str, tmp_path: Any) -> None:
    with pytest.raises(ValidationError, match="expected file:///abs/dir or s3://bucket"):
        Settings(runs_dir=tmp_path, artifacts_url=url)


def test_data_sets_are_mirrored_into_each_hosts_data_dir(s3_server: S3Server, tmp_path: Path) -> None:
    """CTRW_DATA_URL: the worker mirrors the store's data prefix into its data directory before a
    job; what is already there is kept, changed or damaged files are fetched again."""
    from worker.storage import sync_data

    prefix = f"data-{uuid.uuid4().hex[:8]}"
    client, bucket = s3_server.client, s3_server.bucket
    batch = os.urandom(50_000)
    # One uploaded by the service's store (with its SHA-256), one by another tool (none).
    make_store(Settings(artifacts_url=f"s3://{bucket}/{prefix}", s3_endpoint_url=s3_server.endpoint_url)).put(
        _file(tmp_path / "b1", batch), "cifar-10-batches-py/data_batch_1"
    )
    client.put_object(Bucket=bucket, Key=f"{prefix}/cifar-10-batches-py/batches.meta", Body=b"meta")
    host = Settings(runs_dir=tmp_path / "runs", data_dir=tmp_path / "data", s3_endpoint_url=s3_server.endpoint_url,
                    data_url=f"s3://{bucket}/{prefix}")  # fmt: skip
    store = make_store(host, host.data_url)
    folder = host.data_dir / "cifar-10-batches-py"

    assert store.sync_down(store.url(""), host.data_dir) == 2
    assert (folder / "data_batch_1").read_bytes() == batch and (
        folder / "batches.meta"
    ).read_bytes() == b"meta"
    assert sorted(p.name for p in folder.iterdir()) == ["batches.meta", "data_batch_1"]  # no leftovers
    assert store.sync_down(store.url(""), host.data_dir) == 0  # cached on this host
    (folder / "data_batch_1").write_bytes(bytes(len(batch)))  # damaged, same size: its digest says so
    sync_data(host)
    assert (folder / "data_batch_1").read_bytes() == batch
    assert store.sync_down(store.url(""), host.data_dir) == 0


def test_data_url_must_be_s3(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="CTRW_DATA_DIR"):
        Settings(runs_dir=tmp_path, data_url="file:///data")
