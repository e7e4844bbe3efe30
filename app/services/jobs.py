"""Job lifecycle: creation, listing, status transitions (all of them here), cancel, requeue."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from app.models import Artifact, Job, JobKind, JobStatus, utcnow
from app.queue import Dispatch
from app.schemas import AttackJobCreate
from app.services import records
from app.services.errors import ConflictError, NotFoundError, UnavailableError
from ctrw.config import TrainConfig, config_hash

__all__ = [
    "ALLOWED_TRANSITIONS",
    "TERMINAL",
    "cancel_job",
    "claim_job",
    "create_attack_job",
    "create_train_job",
    "dispatch_job",
    "finish_job",
    "get_checkpoint",
    "get_job",
    "heartbeat",
    "list_jobs",
    "next_queued_job_id",
    "requeue_stale_jobs",
    "transition",
    "update_running_job",
]

# queued -> failed only when the broker could not be reached at submission;
# running -> queued is the requeue of a job whose worker died.
ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUEUED}
    ),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}
TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


def transition(*, session: Session, job_id: str, to: JobStatus, where: tuple = (), **values: Any) -> bool:
    """Move a job to `to` if its current status allows it. The one place status changes.

    A conditional UPDATE, so two workers (or a worker and a cancel) racing for the same job
    cannot both win. `where` adds conditions (e.g. the claiming attempt). Returns whether the
    row moved; commits.
    """
    sources = [s for s, targets in ALLOWED_TRANSITIONS.items() if to in targets]
    now = utcnow()
    stamps: dict[str, Any] = {"updated_at": now}
    if to in TERMINAL:
        stamps["finished_at"] = now
        stamps["heartbeat_at"] = None
    elif to is JobStatus.RUNNING:
        stamps["started_at"] = func.coalesce(Job.started_at, now)
        stamps["heartbeat_at"] = now
    elif to is JobStatus.QUEUED:
        stamps["heartbeat_at"] = None
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status.in_(sources), *where)
        .values(status=to, **stamps, **values)
        .execution_options(synchronize_session=False)
    )
    moved = cast(CursorResult[Any], session.execute(stmt)).rowcount == 1
    session.commit()
    return moved


# --------------------------------------------------------------------------- API side


def create_train_job(*, session: Session, job_in: TrainConfig) -> Job:
    return _insert(
        session, kind=JobKind.TRAIN, config=job_in.model_dump(mode="json"), digest=config_hash(job_in)
    )


def create_attack_job(*, session: Session, job_in: AttackJobCreate) -> Job:
    train_job = get_job(session=session, job_id=job_in.train_job_id)
    if train_job.kind is not JobKind.TRAIN:
        raise ConflictError(
            f"job {train_job.id} is an attack job; attack a train job", status=train_job.status
        )
    if train_job.status is not JobStatus.SUCCEEDED:
        raise ConflictError(
            f"train job {train_job.id} is {train_job.status}; only a succeeded train job can be attacked",
            status=train_job.status,
        )
    config = job_in.model_dump(mode="json")
    return _insert(
        session, kind=JobKind.ATTACK, config=config, digest=config_hash(job_in), train_job_id=train_job.id
    )


def _insert(session: Session, *, kind: JobKind, config: dict[str, Any], digest: str, **extra: Any) -> Job:
    job = Job(kind=kind, status=JobStatus.QUEUED, config=config, config_hash=digest, **extra)
    session.add(job)
    session.commit()
    return job


def dispatch_job(*, session: Session, job_id: str, dispatch: Dispatch) -> None:
    """Hand a committed job to the workers. If the broker is unreachable the job fails at once
    rather than sitting in the queue with no message that would ever start it."""
    try:
        dispatch(job_id)
    except Exception as exc:
        error = f"could not reach the job broker: {exc}"
        transition(session=session, job_id=job_id, to=JobStatus.FAILED, error=error)
        raise UnavailableError(f"job {job_id} failed: {error}") from exc


def get_checkpoint(*, session: Session, job_id: str, which: str) -> Artifact:
    """The train job's best or last checkpoint, checked to exist on this machine's runs volume."""
    job = get_job(session=session, job_id=job_id)
    if job.kind is not JobKind.TRAIN:
        raise NotFoundError(
            f"job {job_id} is an attack job; checkpoints belong to train job {job.train_job_id}"
        )
    artifact = records.get_artifact(session=session, job_id=job_id, kind=f"{which}_checkpoint")
    if not Path(artifact.path).is_file():
        raise NotFoundError(
            f"checkpoint file {artifact.path} of job {job_id} is missing from the runs volume"
        )
    return artifact


def get_job(*, session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise NotFoundError(f"job {job_id} not found")
    return job


def list_jobs(
    *, session: Session, status: JobStatus | None, kind: JobKind | None, limit: int, offset: int
) -> tuple[list[Job], int]:
    filters = []
    if status is not None:
        filters.append(Job.status == status)
    if kind is not None:
        filters.append(Job.kind == kind)
    count = session.scalar(select(func.count()).select_from(Job).where(*filters)) or 0
    rows = session.scalars(
        select(Job).where(*filters).order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)
    ).all()
    return list(rows), count


def cancel_job(*, session: Session, job_id: str) -> Job:
    """A queued job is cancelled at once (it never starts); a running one is flagged and its
    worker stops at the next batch, keeping what it finished."""
    job = get_job(session=session, job_id=job_id)
    if job.status in TERMINAL:
        raise ConflictError(f"job {job_id} already {job.status}", status=job.status)
    if not transition(
        session=session,
        job_id=job_id,
        to=JobStatus.CANCELLED,
        where=(Job.status == JobStatus.QUEUED,),
        cancel_requested=True,
    ):
        # It was running (or a worker claimed it a moment ago): ask the worker to stop.
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
            .values(cancel_requested=True, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        session.commit()
    return get_job(session=session, job_id=job_id)


def requeue_stale_jobs(*, session: Session, older_than: timedelta) -> list[str]:
    """Running jobs whose worker stopped heartbeating go back to the queue (they resume from
    their last epoch checkpoint). Returns their ids; the caller dispatches them."""
    cutoff = utcnow() - older_than
    stale = session.scalars(
        select(Job.id).where(Job.status == JobStatus.RUNNING, Job.heartbeat_at < cutoff)
    ).all()
    return [
        job_id
        for job_id in stale
        if transition(session=session, job_id=job_id, to=JobStatus.QUEUED, where=(Job.heartbeat_at < cutoff,))
    ]


# --------------------------------------------------------------------------- worker side


def next_queued_job_id(*, session: Session) -> str | None:
    return session.scalar(
        select(Job.id).where(Job.status == JobStatus.QUEUED).order_by(Job.created_at, Job.id).limit(1)
    )


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
) -> bool:
    values: dict[str, Any] = {"error": error}
    if summary is not None:
        values["summary"] = summary
    if progress is not None:
        values["progress"] = progress
    return transition(
        session=session,
        job_id=job_id,
        to=status,
        where=(Job.status == JobStatus.RUNNING, Job.attempts == attempt),
        **values,
    )
