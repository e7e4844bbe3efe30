"""The job state machine: which status may follow which, and the one function that moves a job.

Every status change in the service goes through `transition`; the statuses a job never leaves
on its own (TERMINAL) and those that still need work (ACTIVE) are defined here and nowhere else.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, func, update
from sqlalchemy.orm import Session

from app.models import Job, JobStatus, utcnow

__all__ = ["ACTIVE", "ALLOWED_TRANSITIONS", "TERMINAL", "transition"]

# queued -> failed only when the broker could not be reached at submission;
# running -> queued is the requeue of a job whose worker died (or was shut down), -> failed
# also when its worker was lost too often;
# waiting -> queued when what it waits for has finished (a suite's sub-jobs, an attack sub-job's
# train job), waiting -> failed when that failed;
# failed | cancelled -> queued | waiting is the retry of a sub-job by a resubmitted suite (it
# resumes from its last checkpoint and its stored results).
ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.WAITING: frozenset({JobStatus.QUEUED, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUEUED}
    ),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED, JobStatus.WAITING}),
    JobStatus.CANCELLED: frozenset({JobStatus.QUEUED, JobStatus.WAITING}),
}
TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
# Unfinished: what a per-owner quota counts, in the order a job goes through them.
ACTIVE = tuple(s for s in JobStatus if s not in TERMINAL)


def transition(
    *, session: Session, job_id: str, to: JobStatus, where: tuple = (), commit: bool = True, **values: Any
) -> bool:
    """Move a job to `to` if its current status allows it. The one place status changes.

    A conditional UPDATE, so two workers (or a worker and a cancel) racing for the same job
    cannot both win. `where` adds conditions (e.g. the claiming attempt). Returns whether the
    row moved; commits unless `commit` is False (the caller's transaction goes on).
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
        # A new stay in the queue: no message sent for it yet (see app.services.scheduling).
        stamps["heartbeat_at"] = None
        stamps["dispatched_at"] = None
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status.in_(sources), *where)
        .values(status=to, **stamps, **values)
        .execution_options(synchronize_session=False)
    )
    moved = cast(CursorResult[Any], session.execute(stmt)).rowcount == 1
    if commit:
        session.commit()
    return moved
