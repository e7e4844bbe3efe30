"""Scheduling: `dispatch_ready`, the one way a job that is ready to run gets its message.

A suite completes through the database, not through a Celery chord: a chord needs a result
backend, and its callback is bound to the group's task results, which do not survive a
redelivered (acks_late) or requeued sub-job cleanly; and the embedded worker has no Celery at
all. Instead whoever finishes a job (the worker, a cancel, a suite creation that found its
sub-jobs done) calls `dispatch_ready`: a waiting job whose dependencies have all finished moves
on with one conditional UPDATE (`transition`), so of two workers finishing a suite's last two
sub-jobs at once exactly one dispatches the suite. Both sides write first and check after (the
creator commits the suite and then checks; a worker commits its job's status and then checks),
so at least one of them sees both writes. The reconciliation calls it for every waiting job as
a backstop (a worker that died between the two steps).

Routing: every message goes to the queue named after its job's ``resources`` (``routed``,
``app.core.queue``); a job whose queue no live worker serves stays queued, and its progress says
what it waits for (``note_unserved``) until a worker that can run it takes it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, aliased

from app.core.queue import Dispatch, DispatchGroup, Routed, describe_queue, queue_of
from app.models import Job, JobKind, JobStatus, SuiteMember, utcnow
from app.services.errors import UnavailableError
from app.services.lifecycle import TERMINAL, transition

__all__ = ["dispatch_job", "dispatch_ready", "mark_dispatched", "note_unserved", "routed"]

log = logging.getLogger(__name__)


def dispatch_ready(
    *,
    session: Session,
    dispatch_group: DispatchGroup | None,
    finished: Iterable[str] | None = (),
    queued: Iterable[str] = (),
    strict: bool = False,
) -> list[str]:
    """Queue what became ready and send one message per ready job (one group), recording when.

    `finished`: jobs that have just finished; the waiting jobs they were the last dependency of
    move to queued (an attack whose train job did not succeed fails instead, and what waits for
    it moves on in turn). None: every waiting job is looked at (the reconciliation's backstop).
    `queued`: jobs the caller has already moved to (or found in) queued, sent along.

    An unreachable broker leaves the jobs queued, and the reconciliation sends them once it
    answers; with `strict` (a submission) the error goes to the caller instead. Without
    `dispatch_group` nothing is sent (the reconciliation sends them). Returns the ids that
    moved from waiting to queued here.
    """
    promoted = _advance(session, _waiting_ready(session) if finished is None else finished)
    ready = list(dict.fromkeys([*queued, *promoted]))
    if not ready or dispatch_group is None:
        return promoted
    jobs = routed(session=session, job_ids=ready)
    try:
        unserved = dispatch_group(jobs)
    except Exception:
        if strict:
            raise
        log.warning("jobs %s stay queued (the reconciliation resends them)", ready, exc_info=True)
        return promoted
    mark_dispatched(session=session, job_ids=ready)
    note_unserved(session=session, jobs=jobs, unserved=unserved)
    return promoted


def dispatch_job(*, session: Session, job_id: str, dispatch: Dispatch) -> None:
    """Hand a newly submitted, committed, queued job to the workers and record when.

    An unreachable broker fails the job at once and answers 503, rather than leave a queued job
    the client believes is on its way.
    """
    jobs = routed(session=session, job_ids=[job_id])
    try:
        unserved = dispatch(jobs[0])
    except Exception as exc:
        error = f"could not reach the job broker: {exc}"
        transition(session=session, job_id=job_id, to=JobStatus.FAILED, error=error)
        raise UnavailableError(f"job {job_id} failed: {error}") from exc
    mark_dispatched(session=session, job_ids=[job_id])
    note_unserved(session=session, jobs=jobs, unserved=unserved)


def routed(*, session: Session, job_ids: Iterable[str]) -> list[Routed]:
    """The job ids with the queue of each (from its config's ``resources``), in order."""
    ids = list(job_ids)
    configs = dict(session.execute(select(Job.id, Job.config).where(Job.id.in_(ids))).all())
    return [Routed(job_id, queue_of(configs.get(job_id) or {})) for job_id in ids]


def note_unserved(*, session: Session, jobs: Iterable[Routed], unserved: set[str] | None) -> None:
    """Jobs sent to a queue no live worker serves stay queued; their progress says so (a worker
    that takes one overwrites it). ``unserved`` None (not known) or empty: nothing to note."""
    waiting = [job for job in jobs if unserved and job.queue in unserved]
    for job in waiting:
        detail = f"waiting for {describe_queue(job.queue)} (queue {job.queue}): none has subscribed"
        session.execute(
            update(Job)
            .where(Job.id == str(job), Job.status == JobStatus.QUEUED)
            .values(progress={"phase": "queued", "detail": detail})
            .execution_options(synchronize_session=False)
        )
        log.warning("job %s is %s", job, detail)
    if waiting:
        session.commit()


def mark_dispatched(*, session: Session, job_ids: Iterable[str]) -> None:
    """Record that a message was sent for these queued jobs (after sending it)."""
    ids = list(job_ids)
    if ids:
        session.execute(
            update(Job)
            .where(Job.id.in_(ids), Job.status == JobStatus.QUEUED)
            .values(dispatched_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        session.commit()


def _advance(session: Session, finished_ids: Iterable[str]) -> list[str]:
    """After jobs finished: attack jobs waiting for one of them as their train job are queued
    (or failed, if it did not succeed), and waiting suites whose sub-jobs have all finished are
    queued to be assembled. Returns the ids that became queued."""
    todo, seen, ready = list(finished_ids), set(), []
    while todo:
        job_id = todo.pop(0)
        if job_id in seen:
            continue
        seen.add(job_id)
        job = session.get(Job, job_id, populate_existing=True)
        if job is None or job.status not in TERMINAL:
            continue
        for dependent in session.scalars(
            select(Job.id).where(Job.train_job_id == job_id, Job.status == JobStatus.WAITING)
        ).all():
            if _advance_attack(session, dependent, job):
                ready.append(dependent)
            else:
                todo.append(dependent)
        suites = session.scalars(
            select(SuiteMember.suite_id)
            .join(Job, Job.id == SuiteMember.suite_id)
            .where(SuiteMember.job_id == job_id, Job.status == JobStatus.WAITING)
        ).all()
        ready += [suite_id for suite_id in suites if _advance_suite(session, suite_id)]
    return ready


def _waiting_ready(session: Session) -> list[str]:
    """Finished jobs that some waiting job depends on and that may be its last dependency: the
    train job of every waiting attack whose train job finished, and one sub-job of every waiting
    suite whose sub-jobs have all finished (`_advance` starts from them)."""
    train = aliased(Job)
    member = aliased(Job)
    attacks = (
        select(Job.train_job_id)
        .join(train, train.id == Job.train_job_id)
        .where(Job.status == JobStatus.WAITING, train.status.in_(TERMINAL))
    )
    unfinished = (
        select(SuiteMember.id)
        .join(member, member.id == SuiteMember.job_id)
        .where(SuiteMember.suite_id == Job.id, member.status.not_in(TERMINAL))
    )
    suites = select(Job.id).where(
        Job.kind == JobKind.SUITE, Job.status == JobStatus.WAITING, ~unfinished.exists()
    )
    finished = list(session.scalars(attacks).all())
    for suite_id in session.scalars(suites).all():
        finished += session.scalars(
            select(SuiteMember.job_id).where(SuiteMember.suite_id == suite_id).limit(1)
        ).all()
    return finished


def _advance_attack(session: Session, attack_id: str, train_job: Job) -> bool:
    """True if the attack was queued; False if it failed (its train job did not succeed)."""
    if train_job.status is JobStatus.SUCCEEDED:
        return transition(
            session=session, job_id=attack_id, to=JobStatus.QUEUED, where=(Job.status == JobStatus.WAITING,)
        )
    transition(
        session=session,
        job_id=attack_id,
        to=JobStatus.FAILED,
        where=(Job.status == JobStatus.WAITING,),
        error=f"train job {train_job.id} {train_job.status}: nothing to attack",
    )
    return False


def _advance_suite(session: Session, suite_id: str) -> bool:
    unfinished = session.scalar(
        select(func.count())
        .select_from(SuiteMember)
        .join(Job, Job.id == SuiteMember.job_id)
        .where(SuiteMember.suite_id == suite_id, Job.status.not_in(TERMINAL))
    )
    if unfinished:
        return False
    return transition(
        session=session, job_id=suite_id, to=JobStatus.QUEUED, where=(Job.status == JobStatus.WAITING,)
    )
