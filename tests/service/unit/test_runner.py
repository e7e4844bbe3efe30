"""The worker's job function called directly (SQLite): lifecycle rules, redelivery, bad checkpoints."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.core.db import session_factory
from app.core.migrate import upgrade
from app.core.settings import Settings
from app.models import Job, JobStatus, utcnow
from app.schemas import AttackJobCreate
from app.services import execution, jobs, lifecycle, reconcile, records
from app.services.errors import ConflictError
from ctrw.config import TrainConfig
from ctrw.training import TrainState as TrainRun
from worker.runner import OOM_MESSAGE, run_job

pytestmark = pytest.mark.service


@pytest.fixture
def settings(tmp_path: Path, fast_settings: Any) -> Settings:
    settings = fast_settings(tmp_path)
    upgrade(settings)
    return settings


@pytest.fixture
def session(settings: Settings) -> Session:
    with session_factory(settings.database_url)() as session:
        yield session


def _train_job(session: Session, config: dict[str, Any]) -> Job:
    return jobs.create_train_job(session=session, job_in=TrainConfig.model_validate(config))


def test_status_moves_only_along_allowed_transitions(session: Session, tiny_train: dict[str, Any]) -> None:
    job = _train_job(session, tiny_train)
    assert not lifecycle.transition(session=session, job_id=job.id, to=JobStatus.SUCCEEDED)
    claimed = execution.claim_job(session=session, job_id=job.id, worker="w")
    assert claimed is not None and claimed.status is JobStatus.RUNNING and claimed.attempts == 1
    assert execution.claim_job(session=session, job_id=job.id, worker="other") is None
    assert not execution.finish_job(session=session, job_id=job.id, attempt=2, status=JobStatus.SUCCEEDED)
    assert execution.finish_job(session=session, job_id=job.id, attempt=1, status=JobStatus.SUCCEEDED)
    assert not lifecycle.transition(session=session, job_id=job.id, to=JobStatus.RUNNING)
    with pytest.raises(ConflictError):
        jobs.cancel_job(session=session, job_id=job.id)


def test_stale_running_jobs_are_requeued(session: Session, tiny_train: dict[str, Any]) -> None:
    stale, fresh = _train_job(session, tiny_train), _train_job(session, tiny_train)
    for job in (stale, fresh):
        execution.claim_job(session=session, job_id=job.id, worker="w")
    session.execute(
        update(Job).where(Job.id == stale.id).values(heartbeat_at=utcnow() - timedelta(minutes=5))
    )
    session.commit()
    assert reconcile.requeue_stale_jobs(session=session, older_than=timedelta(minutes=1)) == [stale.id]
    assert jobs.get_job(session=session, job_id=stale.id).status is JobStatus.QUEUED
    assert jobs.get_job(session=session, job_id=fresh.id).status is JobStatus.RUNNING
    # The dead worker's late writes are ignored: its attempt no longer owns the job.
    assert execution.heartbeat(session=session, job_id=stale.id, attempt=1) is None


def test_redelivery_is_a_noop_and_bad_checkpoints_fail_cleanly(
    settings: Settings, session: Session, tiny_train: dict[str, Any]
) -> None:
    job = _train_job(session, tiny_train)
    assert run_job(job.id, settings=settings) is JobStatus.SUCCEEDED
    assert run_job(job.id, settings=settings) is None  # a redelivered message
    done = jobs.get_job(session=session, job_id=job.id)
    assert done.attempts == 1 and len(records.list_results(session=session, job_id=job.id)) == 2

    def attack(which: str) -> Job:
        body = {"train_job_id": job.id, "evaluation": {"attacks": [{"name": "clean"}], "n_examples": 16,
                "score_draws": 1, "checkpoint": which, "diagnostics": False}}  # fmt: skip
        return jobs.create_attack_job(session=session, job_in=AttackJobCreate.model_validate(body))

    best = Path(records.get_artifact(session=session, job_id=job.id, kind="best_checkpoint").path)
    # Corrupted on disk after training; replaced, not written through: best is a hard link to last.
    damaged = best.with_name("damaged.part")
    damaged.write_bytes(b"\x00" * 64)
    os.replace(damaged, best)
    tampered = attack("best")
    assert run_job(tampered.id, settings=settings) is JobStatus.FAILED
    error = jobs.get_job(session=session, job_id=tampered.id).error
    assert error.startswith("bad checkpoint") and "sha256" in error

    # A checkpoint that was unreadable from the start (its recorded digest matches the bad bytes).
    records.upsert_artifact(session=session, job_id=job.id, kind="best_checkpoint", path=best)
    unreadable = attack("best")
    assert run_job(unreadable.id, settings=settings) is JobStatus.FAILED
    error = jobs.get_job(session=session, job_id=unreadable.id).error
    assert error.startswith("bad checkpoint") and str(best) in error

    # The worker is still healthy: the next job runs.
    assert run_job(attack("last").id, settings=settings) is JobStatus.SUCCEEDED


def test_any_error_fails_the_job_with_its_message(
    settings: Settings, session: Session, tiny_train: dict[str, Any]
) -> None:
    job = _train_job(session, {**tiny_train, "data": {"dataset": "cifar10"}})  # not in the data dir
    assert run_job(job.id, settings=settings) is JobStatus.FAILED
    failed = jobs.get_job(session=session, job_id=job.id)
    assert failed.error.startswith("DataNotFoundError: cifar10: no data in")
    assert str(settings.data_dir.resolve()) in failed.error
    assert failed.finished_at is not None and failed.heartbeat_at is None


def test_out_of_gpu_memory_fails_the_job_with_advice_and_the_worker_goes_on(
    settings: Settings, session: Session, tiny_train: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """CUDA's OOM error raised where the batch would run out of memory (no GPU needed to raise it)."""

    def out_of_memory(self: TrainRun, x: Any, y: Any, *, measure_clean: bool = True) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with monkeypatch.context() as patch:
        patch.setattr(TrainRun, "train_step", out_of_memory)
        job = _train_job(session, tiny_train)
        assert run_job(job.id, settings=settings) is JobStatus.FAILED
    failed = jobs.get_job(session=session, job_id=job.id)
    assert failed.error == OOM_MESSAGE and "batch_size" in failed.error
    assert run_job(_train_job(session, tiny_train).id, settings=settings) is JobStatus.SUCCEEDED
