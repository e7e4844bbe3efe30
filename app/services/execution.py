"""A worker's steps on the job it runs: find, claim, heartbeat, record progress, give back on
shutdown, finish. Every write is guarded by the worker's attempt number (see `_mine`)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.queue import queue_of
from app.models import Job, JobStatus, utcnow
from app.services.jobs import get_job
from app.services.lifecycle import transition

__all__ = [
    "claim_job",
    "finish_job",
    "heartbeat",
    "next_queued_job_id",
    "release_job",
    "update_running_job",
]


def next_queued_job_id(*, session: Session, queues: Collection[str] | None = None) -> str | None:
    """The oldest queued job (of those routed to ``queues``; None: any)."""
    if queues is None:
        return session.scalar(
            select(Job.id).where(Job.status == JobStatus.QUEUED).order_by(Job.created_at, Job.id).limit(1)
        )
    # The queue is derived from the config (app.core.queue.queue_of), read here rather than in SQL.
    rows = session.execute(
        select(Job.id, Job.config).where(Job.status == JobStatus.QUEUED).order_by(Job.created_at, Job.id)
    )
    return next((job_id for job_id, config in rows if queue_of(config or {}) in queues), None)


def claim_job(*, session: Session, job_id: str, worker: str) -> Job | None:
    """queued -> running for this worker; None if the job is not queued (finished, cancelled,
    or already running elsewhere: a duplicate delivery is a no-op)."""
    claimed = transition(
        session=session,
        job_id=job_id,
        to=JobStatus.RUNNING,
        where=(Job.status == JobStatus.QUEUED,),
        attempts=Job.attempts + 1,
        worker=worker,
        error=None,
    )
    return get_job(session=session, job_id=job_id) if claimed else None


def _mine(job_id: str, attempt: int) -> tuple:
    # Writes from a worker are guarded by its attempt number: a worker that was presumed dead
    # and requeued cannot overwrite its successor's state.
    return (Job.id == job_id, Job.status == JobStatus.RUNNING, Job.attempts == attempt)


def heartbeat(*, session: Session, job_id: str, attempt: int) -> bool | None:
    """Touch heartbeat_at. Returns the cancel flag, or None if this attempt no longer owns the job."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(*_mine(job_id, attempt))
        .values(heartbeat_at=now, updated_at=now)
        .returning(Job.cancel_requested)
        .execution_options(synchronize_session=False)
    ).first()
    session.commit()
    return None if result is None else bool(result[0])


def update_running_job(*, session: Session, job_id: str, attempt: int, **values: Any) -> None:
    """Progress, environment: what a worker records on the job it runs (status excepted)."""
    now = utcnow()
    session.execute(
        update(Job)
        .where(*_mine(job_id, attempt))
        .values(**values, heartbeat_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()


def finish_job(
    *,
    session: Session,
    job_id: str,
    attempt: int,
    status: JobStatus,
    error: str | None = None,
    summary: dict[str, Any] | None = None,
    progress: dict[str, Any] | None = None,
) -> JobStatus | None:
    """This attempt's job to its final status; returns the status it got, None if the attempt
    no longer owns the job. A job flagged for cancellation ends `cancelled`, never `succeeded`,
    even when the flag came after the worker's last look: the cancel was accepted (202)."""
    values: dict[str, Any] = {"error": error}
    if summary is not None:
        values["summary"] = summary
    if progress is not None:
        values["progress"] = progress
    mine = (Job.status == JobStatus.RUNNING, Job.attempts == attempt)
    if status is JobStatus.SUCCEEDED:
        unflagged = (*mine, Job.cancel_requested.is_(False))
        if transition(session=session, job_id=job_id, to=status, where=unflagged, **values):
            return status
        status, mine = JobStatus.CANCELLED, (*mine, Job.cancel_requested.is_(True))
    return status if transition(session=session, job_id=job_id, to=status, where=mine, **values) else None


def release_job(*, session: Session, job_id: str, attempt: int) -> bool:
    """Shutdown: this attempt's running job back to the queue at once (another worker resumes it
    from its last checkpoint); not a lost worker, so not counted against max_attempts. False if
    the attempt no longer owns the job or it was also cancelled meanwhile (it ends cancelled)."""
    return transition(
        session=session,
        job_id=job_id,
        to=JobStatus.QUEUED,
        where=(*_mine(job_id, attempt), Job.cancel_requested.is_(False)),
    )
