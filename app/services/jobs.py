"""Job lifecycle: creation, listing, status transitions (all of them here), cancel, requeue."""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import CursorResult, Integer, Select, bindparam, false, func, select, text, tuple_, update
from sqlalchemy.orm import Session, aliased

from app.core.queue import Dispatch, InFlight
from app.models import Artifact, Job, JobKind, JobStatus, SuiteMember, utcnow
from app.schemas import AttackJobCreate
from app.services import limits, records
from app.services.errors import ConflictError, InvalidInputError, NotFoundError, QuotaError, UnavailableError
from app.services.limits import Budget
from ctrw.config import TrainConfig, config_hash, per_example_conflicts

__all__ = [
    "ALLOWED_TRANSITIONS",
    "LIST_COUNT_CAP",
    "LIST_MAX_OFFSET",
    "TERMINAL",
    "JobPage",
    "Reconciliation",
    "advance_waiting",
    "cancel_job",
    "check_quota",
    "claim_job",
    "create_attack_job",
    "create_train_job",
    "decode_cursor",
    "dispatch_job",
    "encode_cursor",
    "finish_job",
    "get_checkpoint",
    "get_job",
    "heartbeat",
    "list_jobs",
    "mark_dispatched",
    "next_queued_job_id",
    "promote_waiting",
    "reconcile",
    "redispatch_lost",
    "requeue_stale_jobs",
    "retry_job",
    "serialize_suite_changes",
    "transition",
    "update_running_job",
    "withdraw_cancel",
]

log = logging.getLogger(__name__)

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
        # A new stay in the queue: no message sent for it yet (see dispatch_job, reconcile).
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


# --------------------------------------------------------------------------- API side


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


ACTIVE = (JobStatus.WAITING, JobStatus.QUEUED, JobStatus.RUNNING)


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


def dispatch_job(
    *, session: Session, job_id: str, dispatch: Dispatch, fail_if_unreachable: bool = True
) -> bool:
    """Hand a committed, queued job to the workers and record when (`dispatched_at`).

    At submission (`fail_if_unreachable`) an unreachable broker fails the job at once and answers
    503, rather than leave a queued job the client believes is on its way. Elsewhere (a requeue,
    a finished dependency) the job stays queued and the reconciliation sends it once the broker
    answers. Returns whether the message was sent.
    """
    try:
        dispatch(job_id)
    except Exception as exc:
        error = f"could not reach the job broker: {exc}"
        if not fail_if_unreachable:
            log.warning("job %s stays queued: %s (the reconciliation resends it)", job_id, error)
            return False
        transition(session=session, job_id=job_id, to=JobStatus.FAILED, error=error)
        raise UnavailableError(f"job {job_id} failed: {error}") from exc
    mark_dispatched(session=session, job_ids=[job_id])
    return True


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
    if not Path(artifact.path).is_file():
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


# Listing: newest first by (created_at, id), which the list indexes hold in that order
# (app.models.Job). A page starts after a cursor, the (created_at, id) of the previous page's last
# row, so a deep page costs what the first does and jobs created meanwhile never shift it; `offset`
# still works but stops at LIST_MAX_OFFSET (an offset walks every index entry it skips). The count
# stops at LIST_COUNT_CAP: counting every match on every request was the cost that grew with the
# table (1,000 index entries cost ~0.2 ms, 10,000 ~2-8 ms on a 2-core machine).
LIST_COUNT_CAP = 1_000
LIST_MAX_OFFSET = 10_000
_JOB_ID = re.compile(r"[0-9a-f]{1,32}")


@dataclass(frozen=True)
class JobPage:
    """One page of the job list: summary rows (no config), the capped count, the next cursor."""

    rows: list[dict[str, Any]]
    count: int
    count_exact: bool
    next_cursor: str | None


def encode_cursor(created_at: datetime, job_id: str) -> str:
    """The opaque cursor of the page after the row (created_at, job_id)."""
    stamp = created_at.replace(tzinfo=UTC) if created_at.tzinfo is None else created_at.astimezone(UTC)
    raw = f"{stamp.isoformat()}|{job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at, id) from a cursor; 422 on query.cursor for anything `encode_cursor` did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, job_id = raw.split("|")
        created_at = datetime.fromisoformat(stamp)
        if created_at.tzinfo is None or not _JOB_ID.fullmatch(job_id):
            raise ValueError(raw)
        created_at = created_at.astimezone(UTC)  # OverflowError at the ends of the calendar
    except (ValueError, OverflowError) as exc:  # binascii.Error, UnicodeDecodeError: ValueErrors
        raise InvalidInputError(
            "not a cursor of this API (pass a next_cursor from a previous page)", loc=("query", "cursor")
        ) from exc
    return created_at, job_id


def list_jobs(
    *,
    session: Session,
    status: JobStatus | None = None,
    kind: JobKind | None = None,
    parent_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
    cursor: str | None = None,
    owner: str | None = None,
) -> JobPage:
    """Jobs newest first, as summary rows (see `_summary`); the full config is on the job's page.

    `cursor` (a previous page's `next_cursor`) starts the page after that page's last row, with
    the same filters. `count` counts the matches (cursor and offset aside) up to LIST_COUNT_CAP.
    """
    # The statements are built once per filter combination (building and keying them cost more
    # CPU than running them); the values travel as bound parameters.
    params: dict[str, Any] = {"limit": limit + 1, "offset": offset}
    for name, value in (("status", status), ("kind", kind), ("parent_id", parent_id), ("owner", owner)):
        if value is not None:
            params[name] = value
    if cursor is not None:
        params["after_created_at"], params["after_id"] = decode_cursor(cursor)
    shape = (status is not None, kind is not None, parent_id is not None, owner is not None)
    rows = session.execute(_page_statement(*shape, cursor is not None), params).all()
    # The count rides on the page's rows; an empty page (past the end) asks for it alone.
    count = rows[0].matches if rows else session.scalar(_count_statement(*shape), params) or 0
    more = len(rows) > limit
    rows = rows[:limit]
    return JobPage(
        rows=[_summary(r._mapping) for r in rows],
        count=min(count, LIST_COUNT_CAP),
        count_exact=count <= LIST_COUNT_CAP,
        next_cursor=encode_cursor(rows[-1].created_at, rows[-1].id) if more else None,
    )


def _list_filters(status: bool, kind: bool, parent_id: bool, owner: bool) -> list[Any]:
    named = (
        ("status", status, Job.status),
        ("kind", kind, Job.kind),
        ("parent_id", parent_id, Job.parent_id),
        ("owner", owner, Job.owner),
    )
    return [column == bindparam(name) for name, wanted, column in named if wanted]


@lru_cache(maxsize=16)
def _count_statement(status: bool, kind: bool, parent_id: bool, owner: bool) -> Select[tuple[int]]:
    capped = select(Job.id).where(*_list_filters(status, kind, parent_id, owner)).limit(LIST_COUNT_CAP + 1)
    return select(func.count()).select_from(capped.subquery())


@lru_cache(maxsize=32)
def _page_statement(status: bool, kind: bool, parent_id: bool, owner: bool, after: bool) -> Select[Any]:
    filters = _list_filters(status, kind, parent_id, owner)
    if after:
        # A row comparison: one index range on both backends (an OR of the two cases is not).
        cursor = tuple_(
            bindparam("after_created_at", type_=Job.__table__.c.created_at.type),
            bindparam("after_id", type_=Job.__table__.c.id.type),
        )
        filters.append(tuple_(Job.created_at, Job.id) < cursor)
    # The page's keys first, from the index alone (an offset skips index entries, not rows); then
    # the summary columns of those rows only.
    order = (Job.created_at.desc(), Job.id.desc())
    keys = (
        select(Job.id)
        .where(*filters)
        .order_by(*order)
        .limit(bindparam("limit", type_=Integer()))
        .offset(bindparam("offset", type_=Integer()))
        .subquery()
    )
    train = aliased(Job)
    config, train_config = Job.config, train.config
    return (
        select(
            *(getattr(Job, c) for c in _SUMMARY_COLUMNS),
            config["name"].as_string().label("name"),
            config["variant"].as_string().label("variant"),
            config[("model", "name")].as_string().label("train_model"),
            config[("data", "dataset")].as_string().label("train_dataset"),
            config["suite"].as_string().label("suite"),
            config["model"].as_string().label("suite_model"),
            config["dataset"].as_string().label("suite_dataset"),
            train_config["name"].as_string().label("of_name"),
            train_config["variant"].as_string().label("of_variant"),
            train_config[("model", "name")].as_string().label("of_model"),
            train_config[("data", "dataset")].as_string().label("of_dataset"),
            _count_statement(status, kind, parent_id, owner).scalar_subquery().label("matches"),
        )
        .join(keys, keys.c.id == Job.id)
        .outerjoin(train, train.id == Job.train_job_id)
        .order_by(*order)
    )


_SUMMARY_COLUMNS = (
    "id", "kind", "status", "owner", "train_job_id", "parent_id", "config_hash", "cancel_requested", "attempts",
    "progress", "error", "created_at", "updated_at", "started_at", "finished_at",
)  # fmt: skip


def _summary(row: Any) -> dict[str, Any]:
    """What the list shows of a job's config: a train job's name, model, data set and variant; an
    attack job shows those of the train job it attacks; a suite its experiment, model and data
    set (None: the paper's)."""
    out = {c: row[c] for c in _SUMMARY_COLUMNS}
    if row["kind"] == JobKind.TRAIN:
        label = (row["name"], row["train_model"], row["train_dataset"], row["variant"], None)
    elif row["kind"] == JobKind.ATTACK:
        label = (row["of_name"], row["of_model"], row["of_dataset"], row["of_variant"], None)
    else:
        label = (None, row["suite_model"], row["suite_dataset"], None, row["suite"])
    return out | dict(zip(("name", "model", "dataset", "variant", "suite"), label, strict=True))


def cancel_job(
    *, session: Session, job_id: str, dispatch: Dispatch | None = None, owner: str | None = None
) -> Job:
    """A queued (or waiting) job is cancelled at once (it never starts); a running one is flagged
    and its worker stops at the next batch or step, keeping what it finished. A flagged job
    cannot end `succeeded` (`finish_job`), so an accepted cancel is never ignored; a job that
    finished before the flag was set is a 409. A suite also cancels its unfinished sub-jobs that
    no other live suite needs, whichever suite created them (jobs submitted on their own and
    reused by a suite are left alone). A suite waiting for a job cancelled here may be ready to
    assemble: it is dispatched (when `dispatch` is given). ``owner``: 404 unless the job is theirs
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
    for ready in advance_waiting(session=session, finished_ids=cancelled):
        if dispatch is not None:
            dispatch_job(session=session, job_id=ready, dispatch=dispatch, fail_if_unreachable=False)
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


# --------------------------------------------------------------------------- waiting jobs
#
# A suite completes through the database, not through a Celery chord: a chord needs a result
# backend, and its callback is bound to the group's task results, which do not survive a
# redelivered (acks_late) or requeued sub-job cleanly; and the embedded worker has no Celery at
# all. Instead whoever finishes a job (the worker, a cancel) calls `advance_waiting`: a waiting
# job whose dependencies have all finished moves on with one conditional UPDATE (`transition`),
# so of two workers finishing a suite's last two sub-jobs at once exactly one dispatches the
# suite. Both sides write first and check after (the creator commits the suite and then checks;
# a worker commits its job's status and then checks), so at least one of them sees both writes.
# The sweeper runs `promote_waiting` as a backstop (a worker that died between the two steps).


def advance_waiting(*, session: Session, finished_ids: Iterable[str]) -> list[str]:
    """After jobs finished: attack jobs waiting for one of them as their train job are queued
    (or failed, if it did not succeed), and waiting suites whose sub-jobs have all finished are
    queued to be assembled. Returns the ids that became queued; the caller dispatches them."""
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


def promote_waiting(*, session: Session) -> list[str]:
    """Every waiting job whose dependencies have finished moves on (the sweeper's backstop).
    Returns the ids that became queued."""
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
    return advance_waiting(session=session, finished_ids=finished)


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
    *, session: Session, older_than: timedelta, in_flight: InFlight, dispatch: Dispatch
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
            dispatch(job_id)
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
    dispatch: Dispatch,
    in_flight: InFlight | None,
) -> Reconciliation:
    """Bring the workers' queue in line with the database, the only truth (the sweeper in every
    worker and `POST /admin/requeue-stale` run this).

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
        dispatch_job(session=session, job_id=job_id, dispatch=dispatch, fail_if_unreachable=False)
    for job_id in failed:
        log.warning("job %s lost its worker %d times; failed", job_id, max_attempts)
    promoted = advance_waiting(session=session, finished_ids=failed) + promote_waiting(session=session)
    for job_id in promoted:
        log.warning("job %s was waiting for jobs that have finished; queued", job_id)
        dispatch_job(session=session, job_id=job_id, dispatch=dispatch, fail_if_unreachable=False)
    redispatched = []
    if in_flight is not None:
        redispatched = redispatch_lost(
            session=session, older_than=stale_after, in_flight=in_flight, dispatch=dispatch
        )
        for job_id in redispatched:
            log.warning("job %s was queued with no message in the broker; sent again", job_id)
    return Reconciliation(requeued=requeued, failed=failed, promoted=promoted, redispatched=redispatched)


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
