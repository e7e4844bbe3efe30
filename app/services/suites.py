"""Paper reproduction suites: creation (reusing sub-jobs by config hash), progress, results.

A suite is a job row (kind ``suite``) that waits for its sub-jobs, listed in ``suite_member``.
Creating it expands the request (``ctrw.paper.expand_suite``, pure Python) and, for every
sub-job, attaches an existing job with the same config hash (succeeded, or still running) or
retries a failed/cancelled one (it resumes from its checkpoint), and creates the rest as
children of the suite. The new jobs go to the workers as one Celery group; when the last of
them finishes the suite itself is queued (``scheduling.dispatch_ready``) and a worker assembles the
paper's tables and renders its figures.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.queue import DispatchGroup
from app.models import Job, JobKind, JobStatus, SuiteMember
from app.schemas import (
    AttackJobCreate,
    JobPublic,
    ProgressPublic,
    SubJobPublic,
    SuiteProgress,
    SuiteResults,
)
from app.services import jobs, lifecycle, limits, records, scheduling
from app.services.errors import ConflictError, NotFoundError, UnavailableError
from app.services.limits import Budget
from ctrw.config import config_hash
from ctrw.paper import SuiteAssembly, SuiteRequest, expand_suite

__all__ = [
    "assembly_inputs",
    "create_suite_job",
    "get_figure",
    "get_suite_results",
    "job_public",
    "suite_progress",
]

# Which existing job with the right config hash a suite attaches to: a finished one first, then
# one on its way, then one to retry.
_PREFERENCE = {
    JobStatus.SUCCEEDED: 0,
    JobStatus.RUNNING: 1,
    JobStatus.QUEUED: 2,
    JobStatus.WAITING: 3,
    JobStatus.FAILED: 4,
    JobStatus.CANCELLED: 5,
}
_RETRY = (JobStatus.FAILED, JobStatus.CANCELLED)


def _serialize_suite_creation(session: Session) -> None:
    """Suite creations (and suite cancels) run one at a time: two identical suites submitted at
    once would otherwise both miss each other's new sub-jobs and create duplicates."""
    jobs.serialize_suite_changes(session)


def _existing(session: Session, kind: JobKind, digest: str, owner: str) -> Job | None:
    # Only the owner's own jobs: another owner's job (its results, its checkpoint, its cancel) is
    # never handed over through a suite. Two owners asking for the same model each train it.
    candidates = session.scalars(
        select(Job).where(Job.kind == kind, Job.config_hash == digest, Job.owner == owner)
    ).all()
    return min(candidates, key=lambda j: (_PREFERENCE[j.status], j.created_at, j.id), default=None)


def create_suite_job(
    *,
    session: Session,
    job_in: SuiteRequest,
    dispatch_group: DispatchGroup,
    budget: Budget | None = None,
    owner: str = "local",
    max_active: int = 0,
) -> Job:
    """Create the suite and whatever sub-jobs do not exist yet, then dispatch them as a group.

    Sub-jobs are reused by config hash: resubmitting a finished suite creates no training job,
    and a crashed or cancelled suite resumes (its failed or cancelled sub-jobs are retried and
    continue from their last checkpoint and stored results). 422 before anything is stored if a
    sub-job's estimated cost, or the sum over all of them, is over ``budget``. Reuse is within
    ``owner``'s jobs only; 429 if the owner already has ``max_active`` unfinished jobs (the suite's
    new sub-jobs may take it past the limit: a suite is accepted or refused whole).
    """
    costs = limits.suite_costs(job_in, budget or Budget())
    suite_id = uuid.uuid4().hex
    new_jobs: list[Job] = []
    members: list[SuiteMember] = []
    to_dispatch: list[str] = []
    retried: list[str] = []
    by_key: dict[str, tuple[str, JobStatus]] = {}
    # One transaction from the lock to the commit: retries, the suite, its new jobs and members
    # become visible together, so no worker sees the suite with some of its sub-jobs still
    # failed (it would assemble too early), and no other suite creation runs in between.
    _serialize_suite_creation(session)
    jobs.check_quota(session=session, owner=owner, max_active=max_active)
    for sub in expand_suite(job_in):
        if sub.kind == "train":
            assert sub.config is not None
            kind, config, digest, train_job_id = (
                JobKind.TRAIN, sub.config.model_dump(mode="json"), config_hash(sub.config), None,
            )  # fmt: skip
            start = JobStatus.QUEUED
        else:
            assert sub.train_key is not None and sub.evaluation is not None
            train_job_id, train_status = by_key[sub.train_key]
            body = AttackJobCreate(train_job_id=train_job_id, evaluation=sub.evaluation)
            kind, config, digest = JobKind.ATTACK, body.model_dump(mode="json"), config_hash(body)
            start = JobStatus.QUEUED if train_status is JobStatus.SUCCEEDED else JobStatus.WAITING
        job = _existing(session, kind, digest, owner)
        if job is None:
            job = Job(
                id=uuid.uuid4().hex, kind=kind, status=start, config=config, config_hash=digest, owner=owner,
                train_job_id=train_job_id, parent_id=suite_id, cost_pflop=costs[sub.key],
            )  # fmt: skip
            new_jobs.append(job)
        elif job.status in _RETRY and jobs.retry_job(session=session, job_id=job.id, to=start, commit=False):
            retried.append(job.id)
            job = jobs.get_job(session=session, job_id=job.id)
        elif job.status is JobStatus.RUNNING and job.cancel_requested:
            # a cancelled suite resubmitted at once
            jobs.withdraw_cancel(session=session, job_id=job.id, commit=False)
        if job.status is JobStatus.QUEUED:
            # New and retried jobs need a message; a queued one found here gets another (a
            # duplicate is a no-op), in case its first was lost with a crashed submission.
            to_dispatch.append(job.id)
        by_key[sub.key] = (job.id, job.status)
        members.append(SuiteMember(suite_id=suite_id, key=sub.key, job_id=job.id, label=sub.label))

    suite = Job(
        id=suite_id,
        kind=JobKind.SUITE,
        status=JobStatus.WAITING,
        owner=owner,
        config=job_in.model_dump(mode="json"),
        config_hash=config_hash(job_in),
        cost_pflop=sum(costs.values()),
    )
    session.add(suite)
    session.flush()  # the suite row first: its children and members refer to it
    session.add_all(new_jobs)
    session.flush()
    session.add_all(members)
    if retried:  # the suite that retried a job now owns it (its cancel cancels it)
        session.execute(
            update(Job)
            .where(Job.id.in_(retried))
            .values(parent_id=suite_id)
            .execution_options(synchronize_session=False)
        )
    session.commit()
    # Sub-jobs may all have finished already (a resubmitted suite), or finished while we wrote.
    try:
        scheduling.dispatch_ready(
            session=session,
            dispatch_group=dispatch_group,
            finished=[m.job_id for m in members],
            queued=to_dispatch,
            strict=True,
        )
    except Exception as exc:
        error = f"could not reach the job broker: {exc}"
        for job_id in [*(j.id for j in new_jobs), *retried, suite_id]:
            for status in (JobStatus.QUEUED, JobStatus.WAITING):
                lifecycle.transition(
                    session=session,
                    job_id=job_id,
                    to=JobStatus.FAILED,
                    where=(Job.status == status,),
                    error=error,
                )
        raise UnavailableError(f"suite {suite_id} failed: {error}") from exc
    return jobs.get_job(session=session, job_id=suite_id)


def _members(session: Session, suite_id: str) -> list[tuple[SuiteMember, Job]]:
    rows = session.execute(
        select(SuiteMember, Job)
        .join(Job, Job.id == SuiteMember.job_id)
        .where(SuiteMember.suite_id == suite_id)
        .order_by(SuiteMember.id)
    ).all()
    return [(m, j) for m, j in rows]


def _figure_links(session: Session, suite: Job) -> dict[str, dict[str, str]]:
    links: dict[str, dict[str, str]] = {}
    for artifact in records.list_artifacts(session=session, job_id=suite.id, prefix="figure:"):
        name, fmt = artifact.kind.removeprefix("figure:").rsplit(".", 1)
        links.setdefault(name, {})[fmt] = f"/jobs/{suite.id}/figures/{name}?format={fmt}"
    return links


def suite_progress(*, session: Session, suite: Job) -> SuiteProgress:
    """The aggregate of the suite's sub-jobs: how many finished, per-status counts, the list."""
    members = _members(session, suite.id)
    counts = Counter(j.status.value for _, j in members)
    done = sum(1 for _, j in members if j.status in lifecycle.TERMINAL)
    total = len(members)
    return SuiteProgress(
        total=total,
        done=done,
        percent=round(100.0 * done / total, 2) if total else 100.0,
        counts=dict(counts),
        sub_jobs=[
            SubJobPublic(
                key=m.key,
                job_id=j.id,
                kind=j.kind,
                status=j.status,
                label=m.label or {},
                created_by_suite=j.parent_id == suite.id,
                worker=j.worker,
                started_at=j.started_at,
                finished_at=j.finished_at,
                error=j.error,
            )
            for m, j in members
        ],
        figures=_figure_links(session, suite),
    )


def job_public(*, session: Session, job: Job) -> JobPublic:
    """A job as the API shows it; a suite with the aggregate of its sub-jobs."""
    public = JobPublic.model_validate(job)
    if job.kind is not JobKind.SUITE:
        return public
    progress = suite_progress(session=session, suite=job)
    public.suite = progress
    if job.status is JobStatus.WAITING:
        running = progress.counts.get("running", 0)
        public.progress = ProgressPublic(
            phase="sub-jobs",
            percent=progress.percent,
            batch=progress.done,
            batches=progress.total,
            detail=f"{progress.done}/{progress.total} sub-jobs finished, {running} running",
        )
    return public


# --------------------------------------------------------------------------- results


def assembly_inputs(*, session: Session, suite_id: str) -> dict[str, dict[str, Any]]:
    """What ``ctrw.paper.assemble_suite`` needs from every sub-job: status, result rows, sigma
    statistics, the training curve (an attack sub-job has rows only) and the evaluation's
    diagnostics (shown with the suite's tables)."""
    out: dict[str, dict[str, Any]] = {}
    for member, job in _members(session, suite_id):
        layers = records.list_sigma_stats(session=session, job_id=job.id)
        out[member.key] = {
            "job_id": job.id,
            "status": job.status.value,
            "error": job.error,
            "rows": records.stored_rows(session=session, job_id=job.id),
            "diagnostics": (job.summary or {}).get("diagnostics") or [],
            "sigma": {
                "layers": [
                    {c: getattr(layer, c) for c in ("numel", "sigma_sum", "sigma_min", "sigma_mean", "sigma_max",
                                                    "mu_mean", "bound_lower", "bound_upper", "hist_sigma", "table6")}
                    for layer in layers
                ]
            } if layers else None,
            "epochs": [
                {"epoch": e.epoch, "sigma_sum": e.sigma_sum, "bound_lower": e.bound_lower, "bound_upper": e.bound_upper}
                for e in records.list_epochs(session=session, job_id=job.id)
            ],
        }  # fmt: skip
    return out


def _suite(session: Session, job_id: str) -> Job:
    job = jobs.get_job(session=session, job_id=job_id)
    if job.kind is not JobKind.SUITE:
        raise NotFoundError(f"job {job_id} is a {job.kind} job, not a suite")
    return job


def get_suite_results(*, session: Session, job_id: str, table: str | None = None) -> SuiteResults:
    """The assembled tables (409 until the suite has finished). ``table``: only that table."""
    suite = _suite(session, job_id)
    if suite.status not in lifecycle.TERMINAL:
        raise ConflictError(
            f"suite {job_id} is {suite.status}; results are available once it has been assembled",
            status=suite.status,
        )
    stored = (suite.summary or {}).get("assembly")
    if stored is None:
        raise ConflictError(f"suite {job_id} {suite.status} before it was assembled", status=suite.status)
    assembly = SuiteAssembly.model_validate(stored)
    tables = assembly.tables
    if table is not None:
        if table not in tables:
            raise NotFoundError(f"suite {job_id} has no table '{table}' (it has: {', '.join(tables)})")
        tables = {table: tables[table]}
    return SuiteResults(
        job_id=suite.id,
        kind=suite.kind,
        status=suite.status,
        config_hash=suite.config_hash,
        suite=assembly.suite,
        scale=assembly.scale,
        tables=tables,
        figures=_figure_links(session, suite),
        missing=assembly.missing,
        sub_jobs=(suite.summary or {}).get("sub_jobs", {}),
        error=suite.error,
    )


def get_figure(*, session: Session, job_id: str, name: str, fmt: str) -> Any:
    """The artifact row of one rendered figure (PNG or SVG), checked to exist on the runs volume."""
    suite = _suite(session, job_id)
    if suite.status not in lifecycle.TERMINAL:
        raise ConflictError(f"suite {job_id} is {suite.status}; figures come once it has been assembled",
                            status=suite.status)  # fmt: skip
    try:
        artifact = records.get_artifact(session=session, job_id=job_id, kind=f"figure:{name}.{fmt}")
    except NotFoundError:
        known = ", ".join(_figure_links(session, suite)) or "none"
        raise NotFoundError(f"suite {job_id} has no figure '{name}' (it has: {known})") from None
    return artifact
