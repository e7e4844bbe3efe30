"""Where job artifacts (checkpoints, figures, run metadata) live: a local directory or an S3 bucket.

``CTRW_ARTIFACTS_URL`` picks the store: unset or ``file:///abs/dir`` keeps every artifact under a
directory that the API and the workers share (by default the runs directory: the single-host
layout); ``s3://bucket/prefix`` puts them in any S3-compatible object store (AWS S3, SeaweedFS,
Ceph RGW, ...; ``CTRW_S3_ENDPOINT_URL`` for a non-AWS endpoint, credentials from boto3's usual
chain: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile, an instance or pod role), so
that workers on several hosts and the API share nothing but the database, the broker and the store.

Keys mirror the local runs directory (``<job id>/last.safetensors``, ``<job id>/figures/x.png``):
a worker writes a file locally, then ``put``s it; the database records the returned
``StoredObject`` (its URL, SHA-256 and size). Guarantees:

- Atomic: a reader sees the previous complete object or the new one, never part of one. A local
  put writes a temporary file, fsyncs and renames it; an S3 PUT (and a multipart upload, which
  exists only once completed; boto3 aborts it on error) is atomic by the S3 contract.
- Checksummed: the SHA-256 of the bytes is stored with the object (S3 user metadata ``sha256``)
  and in the database; ``get`` verifies the downloaded bytes against the expected digest before
  it publishes them (atomically) at the destination, and a cached copy with that digest is reused.

The API imports this module (no torch); boto3 is imported only when an S3 store is first used.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = ["ArtifactError", "ArtifactStore", "StoredObject", "is_remote", "make_store", "sha256_file"]

_CHUNK = 1 << 20


class ArtifactError(RuntimeError):
    """An artifact that is missing from the store or whose bytes do not match their SHA-256."""


@dataclass(frozen=True)
class StoredObject:
    """One stored artifact: ``url`` is what the database records (an absolute path for a local
    store, ``s3://bucket/key`` otherwise)."""

    url: str
    sha256: str
    size_bytes: int


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def is_remote(url: str) -> bool:
    """True for an object-store URL; False for a local path (what a file store records)."""
    return url.startswith("s3://")


def _publish_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` atomically: a temporary file beside it, fsynced, renamed."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f"{dst.name}.{os.getpid()}.part")
    shutil.copyfile(src, tmp)
    _fsync_and_rename(tmp, dst)


def _fsync_and_rename(tmp: Path, dst: Path) -> None:
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, dst)


class ArtifactStore:
    """The local-directory store (also the base of ``S3Store``: local paths are read the same way
    by both, so rows recorded before a switch to S3 stay readable)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.remote = False

    def url(self, key: str) -> str:
        return str(self.root / key)

    def put(self, local: Path, key: str, *, sha256: str | None = None) -> StoredObject:
        """Store the complete local file ``local`` under ``key`` (replacing what was there)."""
        local, dest = Path(local), self.root / key
        digest = sha256 or sha256_file(local)
        if local.resolve() != dest.resolve():  # the usual case writes in place: nothing to copy
            _publish_copy(local, dest)
        return StoredObject(str(dest), digest, dest.stat().st_size)

    def head(self, url: str) -> StoredObject | None:
        """The object at ``url`` with its stored digest, or None if there is none."""
        path = Path(url)
        if not path.is_file():
            return None
        return StoredObject(url, sha256_file(path), path.stat().st_size)

    def exists(self, url: str) -> bool:
        return Path(url).is_file()

    def get(self, url: str, dest: Path, *, sha256: str) -> Path:
        """A verified local copy of ``url`` at ``dest`` (kept if it already has that digest).

        Raises:
            ArtifactError: missing, or its bytes do not match ``sha256``.
        """
        dest, src = Path(dest), Path(url)
        if not src.is_file():
            raise ArtifactError(f"artifact not found: {url}")
        if dest.is_file() and sha256_file(dest) == sha256:
            return dest
        if sha256_file(src) != sha256:
            raise ArtifactError(f"{url} changed since it was stored (sha256 mismatch)")
        if src.resolve() != dest.resolve():
            _publish_copy(src, dest)
        return dest

    def open(self, url: str) -> Iterator[bytes]:
        """The bytes of ``url`` in chunks (for a streamed HTTP response)."""
        with Path(url).open("rb") as f:
            yield from iter(lambda: f.read(_CHUNK), b"")

    def copy(self, src_url: str, key: str) -> StoredObject:
        """Store the object at ``src_url`` also under ``key``."""
        return self.put(Path(src_url), key)

    def delete(self, url: str) -> None:
        """Remove the object at ``url`` (a URL, as ``head`` takes: what the database records);
        one that is already gone is fine, so a cleanup that failed halfway can simply run again."""
        Path(url).unlink(missing_ok=True)


class S3Store(ArtifactStore):
    """Objects under ``s3://bucket/prefix/``; local paths (rows from before) are read as files."""

    def __init__(self, bucket: str, prefix: str, *, endpoint_url: str | None, region: str | None) -> None:
        super().__init__(Path("/nonexistent"))
        self.remote = True
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self._endpoint_url, self._region = endpoint_url, region

    @functools.cached_property
    def client(self) -> Any:
        # Created on first use, so a forked Celery worker makes its own (clients are thread-safe).
        import boto3
        from botocore.config import Config

        config = Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"})
        return boto3.session.Session().client(
            "s3", endpoint_url=self._endpoint_url, region_name=self._region, config=config
        )

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}/{key}" if self.prefix else f"s3://{self.bucket}/{key}"

    def _split(self, url: str) -> tuple[str, str]:
        parsed = urlparse(url)
        return parsed.netloc, parsed.path.lstrip("/")

    def put(self, local: Path, key: str, *, sha256: str | None = None) -> StoredObject:
        local = Path(local)
        digest = sha256 or sha256_file(local)
        url = self.url(key)
        stored = self.head(url)
        if stored is not None and stored.sha256 == digest:
            return stored  # already there (a retried upload, a resumed job's unchanged best)
        bucket, name = self._split(url)
        # One PUT, or a multipart upload that becomes visible only when completed: atomic.
        self.client.upload_file(str(local), bucket, name, ExtraArgs={"Metadata": {"sha256": digest}})
        return StoredObject(url, digest, local.stat().st_size)

    def head(self, url: str) -> StoredObject | None:
        if not is_remote(url):
            return super().head(url)
        from botocore.exceptions import ClientError

        bucket, name = self._split(url)
        try:
            out = self.client.head_object(Bucket=bucket, Key=name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return StoredObject(url, out.get("Metadata", {}).get("sha256", ""), int(out["ContentLength"]))

    def exists(self, url: str) -> bool:
        return self.head(url) is not None

    def get(self, url: str, dest: Path, *, sha256: str) -> Path:
        if not is_remote(url):
            return super().get(url, dest, sha256=sha256)
        dest = Path(dest)
        if dest.is_file() and sha256_file(dest) == sha256:
            return dest  # the local cache already holds these bytes
        stored = self.head(url)
        if stored is None:
            raise ArtifactError(f"artifact not found: {url}")
        # Checked against the digest the caller expects (the database's), not the object's own.
        self._download(StoredObject(url, sha256, stored.size_bytes), dest)
        return dest

    def open(self, url: str) -> Iterator[bytes]:
        if not is_remote(url):
            yield from super().open(url)
            return
        bucket, name = self._split(url)
        body = self.client.get_object(Bucket=bucket, Key=name)["Body"]
        try:
            yield from body.iter_chunks(_CHUNK)
        finally:
            body.close()

    def delete(self, url: str) -> None:
        if not is_remote(url):
            super().delete(url)
            return
        from botocore.exceptions import ClientError

        bucket, name = self._split(url)
        try:
            self.client.delete_object(Bucket=bucket, Key=name)  # S3 answers 204 for a missing key
        except ClientError as exc:  # some compatible servers answer 404 instead
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise

    def sync_down(self, url: str, dest: Path) -> int:
        """Mirror every object under the prefix ``url`` into the directory ``dest`` (a host's data
        cache): objects already there with the same size (and SHA-256, where the object carries
        one) are kept, others are downloaded atomically and verified. Returns how many were fetched.
        """
        bucket, prefix = self._split(url.rstrip("/") + "/")
        fetched = 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                relative = item["Key"][len(prefix) :]
                local = Path(dest) / relative
                if not relative or relative.endswith("/") or ".." in Path(relative).parts:
                    continue  # folder markers; never outside dest
                stored = self.head(f"s3://{bucket}/{item['Key']}")
                if stored is None:
                    continue  # deleted meanwhile
                if local.is_file() and local.stat().st_size == stored.size_bytes:
                    if not stored.sha256 or sha256_file(local) == stored.sha256:
                        continue
                self._download(stored, local)
                fetched += 1
        return fetched

    def _download(self, stored: StoredObject, dest: Path) -> None:
        """``stored`` into ``dest`` atomically, checked against its SHA-256 (or, for objects that
        other tools uploaded without one, its size)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")
        bucket, name = self._split(stored.url)
        try:
            self.client.download_file(bucket, name, str(tmp))
            if stored.sha256 and (got := sha256_file(tmp)) != stored.sha256:
                raise ArtifactError(
                    f"{stored.url} changed since it was stored (sha256 mismatch: got {got[:12]}, "
                    f"want {stored.sha256[:12]})"
                )
            if tmp.stat().st_size != stored.size_bytes:
                raise ArtifactError(f"{stored.url}: incomplete download")
            _fsync_and_rename(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def copy(self, src_url: str, key: str) -> StoredObject:
        """A server-side copy (no bytes through this host), metadata included."""
        src = self.head(src_url)
        if src is None:
            raise ArtifactError(f"artifact not found: {src_url}")
        url = self.url(key)
        bucket, name = self._split(url)
        src_bucket, src_name = self._split(src_url)
        self.client.copy_object(
            Bucket=bucket,
            Key=name,
            CopySource={"Bucket": src_bucket, "Key": src_name},
            MetadataDirective="COPY",
        )
        return StoredObject(url, src.sha256, src.size_bytes)


@functools.cache
def _store(url: str, runs_dir: Path, endpoint_url: str | None, region: str | None) -> ArtifactStore:
    parsed = urlparse(url)
    if not url:
        return ArtifactStore(runs_dir)
    if parsed.scheme == "file":
        return ArtifactStore(Path(parsed.path))
    if parsed.scheme == "s3" and parsed.netloc:
        # "" (an unset variable in docker-compose) means boto3's default, as None does.
        return S3Store(parsed.netloc, parsed.path, endpoint_url=endpoint_url or None, region=region or None)
    raise ValueError(f"artifacts URL {url!r}: expected file:///abs/dir or s3://bucket[/prefix]")


def make_store(settings: Any, url: str | None = None) -> ArtifactStore:
    """The artifact store that ``settings`` name, or the store of ``url`` (``CTRW_DATA_URL``) with
    their S3 endpoint; one per process and URL (its client is reused)."""
    return _store(
        settings.artifacts_url if url is None else url,
        settings.runs_dir,
        settings.s3_endpoint_url,
        settings.s3_region,
    )
