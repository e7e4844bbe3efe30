"""The worker's side of the artifact store (app.core.artifacts): each epoch's checkpoint is put in the
store before the epoch is reported, a job resumed on another host starts from the store's
checkpoints, and a job's checkpoints and figures are recorded with their URL and SHA-256."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.core.artifacts import ArtifactError, ArtifactStore, make_store
from app.core.settings import Settings
from app.services import jobs, records
from ctrw.checkpoint import CheckpointError, read_meta
from ctrw.hooks import Hooks, Progress
from ctrw.training import settle_checkpoints
from worker.hooks import JobHooks

__all__ = ["UploadingHooks", "record_checkpoints", "store_figures", "store_run_record", "sync_data"]

log = logging.getLogger(__name__)


def store_figures(
    job_id: str, figures: dict[str, dict[str, Path]], *, settings: Settings, hooks: JobHooks
) -> None:
    """Put the figures drawn under runs/<job id>/ in the artifact store and record them."""
    store, run_dir = make_store(settings), settings.runs_dir / job_id
    with hooks.sessions() as session:
        for name, paths in figures.items():
            for fmt, path in paths.items():
                stored = store.put(path, f"{job_id}/{Path(path).relative_to(run_dir).as_posix()}")
                records.record_artifact(
                    session=session, job_id=job_id, kind=f"figure:{name}.{fmt}", stored=stored
                )


def record_checkpoints(session: Session, job_id: str, run_dir: Path, store: ArtifactStore) -> None:
    # Only a best that agrees with last is recorded (a kill between their writes is repaired).
    try:
        paths = settle_checkpoints(run_dir)
        stored = {which: store.put(path, f"{job_id}/{path.name}") for which, path in sorted(paths.items())}
    except (CheckpointError, ArtifactError, OSError):
        log.warning("job %s: no consistent checkpoints in %s", job_id, run_dir, exc_info=True)
        return
    for which, obj in stored.items():
        records.record_artifact(session=session, job_id=job_id, kind=f"{which}_checkpoint", stored=obj)


class UploadingHooks(Hooks):
    """The job's hooks, with each epoch's checkpoint put in a remote artifact store before the epoch
    is reported: the database never counts an epoch that a worker on another host could not resume
    from. Before training, the store's checkpoints replace this host's cached ones (the store is
    the truth: another host may have trained further since this one last ran the job)."""

    def __init__(self, hooks: JobHooks, *, store: ArtifactStore, job_id: str, run_dir: Path) -> None:
        self.hooks, self.store, self.job_id, self.run_dir = hooks, store, job_id, run_dir
        self.uploaded = 0  # the epoch of the store's last checkpoint
        if store.remote:
            self._fetch()

    def _fetch(self) -> None:
        last = self.store.head(self.store.url(f"{self.job_id}/last.safetensors"))
        if last is None:
            return
        self.store.get(last.url, self.run_dir / "last.safetensors", sha256=last.sha256)
        best = self.store.head(self.store.url(f"{self.job_id}/best.safetensors"))
        if best is not None:  # one behind last after a kill between the two: settle_checkpoints repairs it
            self.store.get(best.url, self.run_dir / "best.safetensors", sha256=best.sha256)
        self.uploaded = int(read_meta(self.run_dir / "last.safetensors")["epoch"])
        log.info("job %s: resuming from the stored checkpoint of epoch %d", self.job_id, self.uploaded)

    def on_epoch(self, record: dict[str, Any]) -> None:
        epoch = int(record["epoch"])
        last = self.run_dir / "last.safetensors"
        # Re-emitted history on resume is skipped; only the epoch that last holds is uploaded.
        if self.store.remote and epoch > self.uploaded and int(read_meta(last)["epoch"]) == epoch:
            stored = self.store.put(last, f"{self.job_id}/last.safetensors")
            if record.get("is_best"):
                self.store.copy(stored.url, f"{self.job_id}/best.safetensors")
            self.uploaded = epoch
        self.hooks.on_epoch(record)

    def on_progress(self, progress: Progress) -> None:
        self.hooks.on_progress(progress)

    def on_result(self, row: dict[str, Any]) -> None:
        self.hooks.on_result(row)

    def should_cancel(self) -> bool:
        return self.hooks.should_cancel()


def sync_data(settings: Settings) -> None:
    """Mirror ``CTRW_DATA_URL`` (if set) into this host's data directory before a job."""
    if not settings.data_url:
        return
    store = make_store(settings, settings.data_url)
    fetched = store.sync_down(store.url(""), settings.data_dir)
    if fetched:
        log.info("fetched %d data files from %s into %s", fetched, settings.data_url, settings.data_dir)


def store_run_record(job_id: str, *, settings: Settings, sessions: Callable[[], Session]) -> None:
    """``<job id>/run.json`` in the store when a job ends: its config, outcome, provenance and
    artifacts (URL, SHA-256, size), so the store alone says what each file is. Best effort: the
    database stays the source of truth, and a failure here is only logged."""
    try:
        with sessions() as session:
            job = jobs.get_job(session=session, job_id=job_id)
            artifacts = {
                a.kind: {"url": a.path, "sha256": a.sha256, "size_bytes": a.size_bytes}
                for a in records.list_artifacts(session=session, job_id=job_id)
                if a.kind != "metadata"
            }
            record = {
                "id": job.id,
                "kind": job.kind.value,
                "status": job.status.value,
                "error": job.error,
                "attempts": job.attempts,
                "worker": job.worker,
                "config": job.config,
                "summary": job.summary,
                "environment": job.environment,
                "artifacts": artifacts,
            }
        path = settings.runs_dir / job_id / "run.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"run.json.{os.getpid()}.part")
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True, default=str))
        os.replace(tmp, path)
        stored = make_store(settings).put(path, f"{job_id}/run.json")
        with sessions() as session:
            records.record_artifact(session=session, job_id=job_id, kind="metadata", stored=stored)
    except Exception:
        log.warning("job %s: its run record could not be stored", job_id, exc_info=True)
