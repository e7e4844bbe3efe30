"""Jobs as the API handles them: create (with cost and quota checks), read, cancel, and the
retry and un-cancel a resubmitted suite does. Status changes go through `lifecycle.transition`;
what runs next is `scheduling`'s; a worker's steps are `execution`'s."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import CursorResult, false, func, select, text, update
from sqlalchemy.orm import Session

from app.core.queue import DispatchGroup
from app.models import Artifact, Job, JobKind, JobStatus, SuiteMember, utcnow
from app.schemas import AttackJobCreate
from app.services import limits, records
from app.services.errors import ConflictError, InvalidInputError, NotFoundError, QuotaError
from app.services.lifecycle import ACTIVE, TERMINAL, transition
from app.services.limits import Budget
from app.services.scheduling import dispatch_ready
from ctrw.config import TrainConfig, config_hash, per_example_conflicts

__all__ = [
    "cancel_job",
    "check_quota",
    "create_attack_job",
    "create_train_job",
    "get_checkpoint",
    "get_job",
    "retry_job",
    "serialize_suite_changes",
    "withdraw_cancel",
]


def create_train_job(
    *,
    session: Session,
    job_in: TrainConfig,
    budget: Budget | None = None,
    owner: str = "local",
    max_active: int = 0,
) -> Job:
    """Store a queued training job for ``owner``; 422 if its estimated cost is over ``budget``,
    429 if the owner already has ``max_active`` unfinished jobs (0: no limit)."""
    cost = limits.train_cost(job_in, budget or Budget())
    check_quota(session=session, owner=owner, max_active=max_active)
    return _insert(
        session,
        owner=owner,
        kind=JobKind.TRAIN,
        config=job_in.model_dump(mode="json"),
        digest=config_hash(job_in),
        cost_pflop=cost,
    )


def create_attack_job(
    *,
    session: Session,
    job_in: AttackJobCreate,
    budget: Budget | None = None,
    owner: str = "local",
    scope: str | None = None,
    max_active: int = 0,
) -> Job:
    """Store a queued attack job for ``owner`` on a succeeded train job that ``scope`` may see
    (None: any); 422 if its estimated cost (the evaluation of that job's model on its test set)
    is over ``budget``, 429 if the owner already has ``max_active`` unfinished jobs."""
    train_job = get_job(session=session, job_id=job_in.train_job_id, owner=scope)
    if train_job.kind is not JobKind.TRAIN:
        raise ConflictError(
            f"job {train_job.id} is a {train_job.kind} job; attack a train job", status=train_job.status
        )
    if train_job.status is not JobStatus.SUCCEEDED:
        raise ConflictError(
            f"train job {train_job.id} is {train_job.status}; only a succeeded train job can be attacked",
            status=train_job.status,
        )
    conflicts = per_example_conflicts(job_in.evaluation)
    if train_job.config.get("random_weight", {}).get("per_example") and conflicts:
        i, reason = conflicts[0]
        raise InvalidInputError(
            f"train job {train_job.id}: {reason}", loc=("body", "evaluation", "attacks", i, "protocol")
        )
    try:
        train_config = TrainConfig.model_validate(train_job.config)
    except ValidationError as exc:  # a row stored by an older version
        raise InvalidInputError(
            f"train job {train_job.id}: its stored config is not valid in this version ({exc.error_count()} "
            "errors); retrain it",
            loc=("body", "train_job_id"),
        ) from None
    cost = limits.attack_cost(train_config, job_in.evaluation, budget or Budget())
    config = job_in.model_dump(mode="json")
    check_quota(session=session, owner=owner, max_active=max_active)
    return _insert(
        session,
        owner=owner,
        kind=JobKind.ATTACK,
        config=config,
        digest=config_hash(job_in),
        train_job_id=train_job.id,
        cost_pflop=cost,
    )


def check_quota(*, session: Session, owner: str, max_active: int) -> None:
    """429 (QuotaError) if ``owner`` has ``max_active`` or more unfinished jobs (0: no limit).

    On PostgreSQL a per-owner lock, held until the caller's transaction commits its insert, makes
    concurrent submissions of one owner count one after the other (no overshoot).
    """
    if max_active <= 0:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:owner))"), {"owner": "ctrw-quota:" + owner}
        )
    active = session.scalar(
        select(func.count()).select_from(
            select(Job.id).where(Job.owner == owner, Job.status.in_(ACTIVE)).limit(max_active).subquery()
        )
    )
    if (active or 0) >= max_active:
        session.rollback()
        raise QuotaError(
            f"owner {owner!r} has {max_active} unfinished jobs (waiting, queued or running), the limit "
            "(CTRW_MAX_ACTIVE_JOBS_PER_OWNER); wait for some to finish or cancel some"
        )


def _insert(session: Session, *, kind: JobKind, config: dict[str, Any], digest: str, **extra: Any) -> Job:
    job = Job(kind=kind, status=JobStatus.QUEUED, config=config, config_hash=digest, **extra)
    session.add(job)
    session.commit()
    return job


def get_checkpoint(*, session: Session, job_id: str, which: str, owner: str | None = None) -> Artifact:
    """The train job's best or last checkpoint, checked to exist on this machine's runs volume
    (``owner``: 404 unless the job is theirs)."""
    job = get_job(session=session, job_id=job_id, owner=owner)
    if job.kind is JobKind.ATTACK:
        raise NotFoundError(
            f"job {job_id} is an attack job; checkpoints belong to train job {job.train_job_id}"
        )
    if job.kind is not JobKind.TRAIN:
        raise NotFoundError(f"job {job_id} is a {job.kind} job; its train sub-jobs have the checkpoints")
    artifact = records.get_artifact(session=session, job_id=job_id, kind=f"{which}_checkpoint")
    if "://" not in artifact.path and not Path(artifact.path).is_file():  # a stored one: checked by the API
        raise NotFoundError(
            f"checkpoint file {artifact.path} of job {job_id} is missing from the runs volume"
        )
    return artifact


def get_job(*, session: Session, job_id: str, owner: str | None = None) -> Job:
    """The job; 404 if there is none or (``owner`` given) it is another owner's: the same answer,
    so another owner's job ids do not leak."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or (owner is not None and job.owner != owner):
        raise NotFoundError(f"job {job_id} not found")
    return job


def cancel_job(
    *,
    session: Session,
    job_id: str,
    dispatch_group: DispatchGroup | None = None,
    owner: str | None = None,
) -> Job:
    """A queued (or waiting) job is cancelled at once (it never starts); a running one is flagged
    and its worker stops at the next batch or step, keeping what it finished. A flagged job
    cannot end `succeeded` (`finish_job`), so an accepted cancel is never ignored; a job that
    finished before the flag was set is a 409. A suite also cancels its unfinished sub-jobs that
    no other live suite needs, whichever suite created them (jobs submitted on their own and
    reused by a suite are left alone). A suite waiting for a job cancelled here may be ready to
    assemble: it is dispatched (when `dispatch_group` is given). ``owner``: 404 unless the job is theirs
    (a suite's sub-jobs are its owner's: suites reuse only their owner's jobs)."""
    job = get_job(session=session, job_id=job_id, owner=owner)
    if job.status in TERMINAL:
        raise ConflictError(f"job {job_id} already {job.status}", status=job.status)
    suite = job.kind is JobKind.SUITE
    if suite:
        # One at a time with suite creations and other suite cancels: two identical suites
        # cancelled at once would each see the other still needing the shared sub-jobs.
        session.commit()
        serialize_suite_changes(session)
    outcome = _cancel_one(session, job_id, commit=not suite)
    if outcome is None:
        session.rollback()
        job = get_job(session=session, job_id=job_id)
        raise ConflictError(f"job {job_id} already {job.status}", status=job.status)
    cancelled = [job_id] if outcome else []
    if suite:
        cancelled += [c for c in _unneeded_sub_jobs(session, job_id) if _cancel_one(session, c, commit=False)]
        session.commit()
    dispatch_ready(session=session, dispatch_group=dispatch_group, finished=cancelled)
    return get_job(session=session, job_id=job_id)


def _cancel_one(session: Session, job_id: str, *, commit: bool = True) -> bool | None:
    """Cancel now if it has not started (True), else flag it for its worker (False); None if it
    had already finished."""
    if transition(
        session=session,
        job_id=job_id,
        to=JobStatus.CANCELLED,
        where=(Job.status.in_((JobStatus.QUEUED, JobStatus.WAITING)),),
        commit=commit,
        cancel_requested=True,
    ):
        return True
    # It was running (or a worker claimed it a moment ago): ask the worker to stop.
    flagged = cast(
        CursorResult[Any],
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
            .values(cancel_requested=True, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        ),
    ).rowcount
    if commit:
        session.commit()
    return False if flagged == 1 else None


def _unneeded_sub_jobs(session: Session, suite_id: str) -> list[str]:
    """Unfinished sub-jobs of this suite, created by a suite (this or another), that no other
    unfinished suite has as a sub-job."""
    other = (
        select(SuiteMember.job_id)
        .join(Job, Job.id == SuiteMember.suite_id)
        .where(SuiteMember.suite_id != suite_id, Job.status.not_in(TERMINAL))
    )
    rows = session.scalars(
        select(Job.id)
        .join(SuiteMember, SuiteMember.job_id == Job.id)
        .where(
            SuiteMember.suite_id == suite_id,
            Job.parent_id.is_not(None),
            Job.status.not_in(TERMINAL),
            Job.id.not_in(other),
        )
    )
    return list(rows)


# PostgreSQL advisory lock key for suite creation and suite cancellation (any constant that
# nothing else uses).
_SUITE_LOCK = 0x63747277_73756974  # "ctrwsuit"


def serialize_suite_changes(session: Session) -> None:
    """Hold a lock until this transaction ends, so that suite creations and suite cancels run one
    at a time (each decides from the others' sub-jobs). Must be the transaction's first statement."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SUITE_LOCK})
    else:  # SQLite: any write statement takes the database's write lock until the commit
        session.execute(update(Job).where(false()).values(updated_at=Job.updated_at))


def retry_job(*, session: Session, job_id: str, to: JobStatus, commit: bool = True) -> bool:
    """A failed or cancelled job back to queued (or waiting, for an attack whose train job is not
    done yet). It resumes from its last checkpoint and its stored results."""
    return transition(
        session=session,
        job_id=job_id,
        to=to,
        where=(Job.status.in_((JobStatus.FAILED, JobStatus.CANCELLED)),),
        commit=commit,
        error=None,
        cancel_requested=False,
        finished_at=None,
        worker_losses=0,
    )


def withdraw_cancel(*, session: Session, job_id: str, commit: bool = True) -> bool:
    """A running job flagged for cancellation that a new suite wants after all: unflag it (its
    worker stops only if it already saw the flag; the suite then retries it when resubmitted)."""
    moved = cast(
        CursorResult[Any],
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.cancel_requested.is_(True))
            .values(cancel_requested=False, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        ),
    ).rowcount
    if commit:
        session.commit()
    return moved == 1
