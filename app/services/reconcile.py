"""Reconciliation: bring the workers' queue in line with the database, the only truth (the
sweeper in every worker and `POST /admin/requeue-stale` run `reconcile`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from app.core.queue import DispatchGroup, InFlight
from app.models import Job, JobStatus, utcnow
from app.services.lifecycle import transition
from app.services.scheduling import dispatch_ready, routed

__all__ = ["Reconciliation", "reconcile", "redispatch_lost", "requeue_stale_jobs"]

log = logging.getLogger(__name__)


def requeue_stale_jobs(
    *, session: Session, older_than: timedelta, max_attempts: int | None = None
) -> list[str]:
    """Running jobs whose worker stopped heartbeating go back to the queue (they resume from
    their last epoch checkpoint). Returns their ids; the caller dispatches them. A job whose
    worker was lost `max_attempts` times fails instead (see `reconcile`)."""
    return _requeue_stale(session, older_than, max_attempts)[0]


def _requeue_stale(
    session: Session, older_than: timedelta, max_attempts: int | None
) -> tuple[list[str], list[str]]:
    """(requeued, failed): a job that keeps killing its worker (out of host memory: the kernel
    kills the process, nothing is raised) must not loop forever."""
    cutoff = utcnow() - older_than
    stale = session.execute(
        select(Job.id, Job.worker_losses).where(Job.status == JobStatus.RUNNING, Job.heartbeat_at < cutoff)
    ).all()
    requeued, failed = [], []
    for job_id, losses in stale:
        where = (Job.status == JobStatus.RUNNING, Job.heartbeat_at < cutoff, Job.worker_losses == losses)
        if max_attempts is not None and losses + 1 >= max_attempts:
            error = (
                f"worker lost {losses + 1} times (no heartbeat for {older_than.total_seconds():g} s); "
                f"not retried after CTRW_MAX_ATTEMPTS={max_attempts}: the job may be what kills its "
                "worker (out of host memory?)"
            )
            if transition(
                session=session, job_id=job_id, to=JobStatus.FAILED, where=where,
                worker_losses=losses + 1, error=error,
            ):  # fmt: skip
                failed.append(job_id)
        elif transition(
            session=session, job_id=job_id, to=JobStatus.QUEUED, where=where, worker_losses=losses + 1
        ):
            requeued.append(job_id)
    return requeued, failed


def redispatch_lost(
    *, session: Session, older_than: timedelta, in_flight: InFlight, dispatch_group: DispatchGroup
) -> list[str]:
    """Queued jobs whose message the broker no longer holds get another one. Returns their ids.

    Only jobs queued (or last dispatched) more than `older_than` ago are looked at, so a job the
    API has just committed and is about to send is not sent twice. `in_flight` is read after the
    database: a message taken and claimed in between leaves its job no longer queued, and the
    conditional UPDATE below skips it. Of several sweepers at once, one resends a given job.
    """
    cutoff = utcnow() - older_than
    since = func.coalesce(Job.dispatched_at, Job.updated_at)
    candidates = session.scalars(select(Job.id).where(Job.status == JobStatus.QUEUED, since < cutoff)).all()
    session.commit()
    if not candidates:
        return []
    try:
        held = in_flight()
    except Exception:  # the broker is down: nothing can be sent now anyway
        log.warning("could not read the broker's queue; lost messages are resent later", exc_info=True)
        return []
    sent: list[str] = []
    for job_id in candidates:
        if job_id in held:
            continue
        mine = cast(
            CursorResult[Any],
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.QUEUED, since < cutoff)
                .values(dispatched_at=utcnow())
                .execution_options(synchronize_session=False)
            ),
        ).rowcount
        session.commit()
        if mine != 1:
            continue
        try:
            dispatch_group(routed(session=session, job_ids=[job_id]))
        except Exception:  # broker down: tried again once `older_than` has passed
            log.warning("could not resend job %s", job_id, exc_info=True)
            break
        sent.append(job_id)
    return sent


@dataclass(frozen=True)
class Reconciliation:
    """What one reconciliation changed (job ids)."""

    requeued: list[str]
    failed: list[str]
    promoted: list[str]
    redispatched: list[str]


def reconcile(
    *,
    session: Session,
    stale_after: timedelta,
    max_attempts: int,
    dispatch_group: DispatchGroup,
    in_flight: InFlight | None,
) -> Reconciliation:
    """Bring the workers' queue in line with the database.

    - Running jobs whose heartbeat is older than `stale_after` lost their worker: requeued and
      dispatched, or failed once they lost it `max_attempts` times.
    - Waiting jobs whose dependencies have finished: queued and dispatched (a backstop for a
      worker that died between finishing a job and advancing its dependents).
    - Queued jobs whose message is not in the broker (`in_flight`: a Redis restart without
      persistence, an API killed between commit and send, a worker that died holding it): sent
      again. None (embedded mode: workers poll the database) skips this.

    A duplicate message is harmless: a worker runs a job only by claiming it from `queued`.
    """
    requeued, failed = _requeue_stale(session, stale_after, max_attempts)
    for job_id in requeued:
        log.warning("job %s lost its worker; requeued to resume from its last checkpoint", job_id)
    for job_id in failed:
        log.warning("job %s lost its worker %d times; failed", job_id, max_attempts)
    # finished=None: every waiting job, those of the jobs failed just now included.
    promoted = dispatch_ready(session=session, dispatch_group=dispatch_group, finished=None, queued=requeued)
    for job_id in promoted:
        log.warning("job %s was waiting for jobs that have finished; queued", job_id)
    redispatched = []
    if in_flight is not None:
        redispatched = redispatch_lost(
            session=session, older_than=stale_after, in_flight=in_flight, dispatch_group=dispatch_group
        )
        for job_id in redispatched:
            log.warning("job %s was queued with no message in the broker; sent again", job_id)
    return Reconciliation(requeued=requeued, failed=failed, promoted=promoted, redispatched=redispatched)
