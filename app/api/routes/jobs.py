"""/jobs: submit, follow, read back and cancel jobs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Response
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse

from app.api.deps import AUTH_ERRORS, DispatchDep, DispatchGroupDep, PrincipalDep, SessionDep, SettingsDep
from app.core.artifacts import is_remote, make_store
from app.models import Job, JobKind, JobStatus
from app.schemas import (
    ATTACK_EXAMPLES,
    JOB_ID_PATTERN,
    SUITE_EXAMPLES,
    TRAIN_EXAMPLES,
    AttackJobCreate,
    EpochsPublic,
    ErrorPublic,
    JobPublic,
    JobsPublic,
    JobSummary,
    ResultsTable,
    SigmaPublic,
    SuiteResults,
)
from app.services import jobs, lifecycle, records, scheduling, suites, views
from app.services.errors import ConflictError, NotFoundError
from app.services.limits import Budget
from app.services.tables import TableFormat, get_results, render_results
from ctrw.config import TrainConfig
from ctrw.paper import SuiteRequest

# Every route acts for the request's key (app.api.deps.PrincipalDep): another owner's job is a 404.
router = APIRouter(prefix="/jobs", tags=["jobs"], responses=AUTH_ERRORS)

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorPublic, "description": "unknown job"},
    409: {"model": ErrorPublic, "description": "the job's status does not allow this"},
}
_SUBMIT_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorPublic, "description": "body too large"},
    503: {"model": ErrorPublic, "description": "broker unreachable"},
}
_MEDIA_TYPES = {"csv": "text/csv", "markdown": "text/markdown", "latex": "application/x-latex"}
_IMAGE_TYPES = {"png": "image/png", "svg": "image/svg+xml"}
_TEXT = {"schema": {"type": "string"}}
_BINARY = {"schema": {"type": "string", "format": "binary"}}

# Path and query ids are checked by the schema: a 422 naming the parameter, never a database error.
JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="a job's id")]


@router.post(
    "/train",
    status_code=202,
    response_model=JobPublic,
    responses=_SUBMIT_ERRORS,
)
def submit_train_job(
    job_in: Annotated[TrainConfig, Body(openapi_examples=TRAIN_EXAMPLES)],
    session: SessionDep,
    settings: SettingsDep,
    dispatch: DispatchDep,
    response: Response,
    principal: PrincipalDep,
) -> Job:
    """Queue a training job (evaluation and σ statistics follow if `evaluation` is set). 422 if
    its estimated cost (`cost_pflop`) is over CTRW_MAX_JOB_PFLOP; 429 if the key's owner has
    CTRW_MAX_ACTIVE_JOBS_PER_OWNER unfinished jobs."""
    job = jobs.create_train_job(
        session=session,
        job_in=job_in,
        budget=Budget.from_settings(settings),
        owner=principal.owner,
        max_active=settings.max_active_jobs_per_owner,
    )
    scheduling.dispatch_job(session=session, job_id=job.id, dispatch=dispatch)
    response.headers["Location"] = f"/jobs/{job.id}"
    return job


@router.post("/attack", status_code=202, response_model=JobPublic, responses={**_ERRORS, **_SUBMIT_ERRORS})
def submit_attack_job(
    job_in: Annotated[AttackJobCreate, Body(openapi_examples=ATTACK_EXAMPLES)],
    session: SessionDep,
    settings: SettingsDep,
    dispatch: DispatchDep,
    response: Response,
    principal: PrincipalDep,
) -> Job:
    """Queue an evaluation of a succeeded training job's best or last checkpoint (one the key may
    see). 422 if its estimated cost is over CTRW_MAX_JOB_PFLOP; 429 over the owner's quota."""
    job = jobs.create_attack_job(
        session=session,
        job_in=job_in,
        budget=Budget.from_settings(settings),
        owner=principal.owner,
        scope=principal.scope,
        max_active=settings.max_active_jobs_per_owner,
    )
    scheduling.dispatch_job(session=session, job_id=job.id, dispatch=dispatch)
    response.headers["Location"] = f"/jobs/{job.id}"
    return job


@router.post(
    "/suite",
    status_code=202,
    response_model=JobPublic,
    responses=_SUBMIT_ERRORS,
)
def submit_suite(
    job_in: Annotated[SuiteRequest, Body(openapi_examples=SUITE_EXAMPLES)],
    session: SessionDep,
    settings: SettingsDep,
    dispatch_group: DispatchGroupDep,
    response: Response,
    principal: PrincipalDep,
) -> JobPublic:
    """Queue one of the paper's experiments (table1, table2, table4..7, fig3a..d). Its sub-jobs
    (ordinary train/attack jobs) fan out over the workers; existing jobs with the same config
    hash are reused (the key owner's own jobs only), failed or cancelled ones retried. The suite
    assembles the paper's table and figures when the last sub-job has finished. 429 if the owner
    already has CTRW_MAX_ACTIVE_JOBS_PER_OWNER unfinished jobs."""
    suite = suites.create_suite_job(
        session=session,
        job_in=job_in,
        dispatch_group=dispatch_group,
        budget=Budget.from_settings(settings),
        owner=principal.owner,
        max_active=settings.max_active_jobs_per_owner,
    )
    response.headers["Location"] = f"/jobs/{suite.id}"
    return suites.job_public(session=session, job=suite)


@router.get("", response_model=JobsPublic)
def list_jobs(
    session: SessionDep,
    principal: PrincipalDep,
    status: JobStatus | None = None,
    kind: JobKind | None = None,
    parent_id: str | None = Query(None, pattern=JOB_ID_PATTERN, description="jobs created by this suite"),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=views.LIST_MAX_OFFSET, description="deeper pages: use `cursor`"),
    cursor: str | None = Query(
        None, max_length=200, description="the previous page's `next_cursor` (keep the same filters)"
    ),
) -> JobsPublic:
    """Newest first, one summary row per job (its config is on `GET /jobs/{id}`). Follow
    `next_cursor` page by page: jobs created meanwhile do not shift the pages. `count` stops at
    1,000 (`count_exact` false). A key sees its owner's jobs; an admin key sees all."""
    page = views.list_jobs(
        session=session,
        status=status,
        kind=kind,
        parent_id=parent_id,
        limit=limit,
        offset=offset,
        cursor=cursor,
        owner=principal.scope,
    )
    return JobsPublic(
        data=[JobSummary.model_validate(row) for row in page.rows],
        count=page.count,
        count_exact=page.count_exact,
        next_cursor=page.next_cursor,
    )


@router.get("/{job_id}", response_model=JobPublic, responses=_ERRORS)
def read_job(job_id: JobId, session: SessionDep, principal: PrincipalDep) -> JobPublic:
    """A job; a suite also lists its sub-jobs and their aggregate progress."""
    job = jobs.get_job(session=session, job_id=job_id, owner=principal.scope)
    return suites.job_public(session=session, job=job)


@router.get(
    "/{job_id}/results",
    response_model=ResultsTable | SuiteResults,
    responses={
        **_ERRORS,
        200: {"content": {"application/json": {}, **{t: _TEXT for t in _MEDIA_TYPES.values()}}},
    },
)
def read_results(
    job_id: JobId,
    session: SessionDep,
    principal: PrincipalDep,
    format: TableFormat = "json",
    table: str | None = Query(
        None, pattern=r"^[0-9A-Za-z_-]{1,64}$", description="suites: one of its tables (CSV holds one table)"
    ),
) -> ResultsTable | SuiteResults | Response:
    """Robust accuracy per attack column, or a suite's tables in the paper's layout with the
    paper's values beside ours; 409 with the current status until the job has finished."""
    jobs.get_job(session=session, job_id=job_id, owner=principal.scope)  # 404: not the key's
    results = get_results(session=session, job_id=job_id, table=table)
    if format == "json":
        return results
    return PlainTextResponse(render_results(results, format), media_type=_MEDIA_TYPES[format])


@router.get(
    "/{job_id}/figures/{name}",
    response_class=FileResponse,
    responses={**_ERRORS, 200: {"content": {t: _BINARY for t in _IMAGE_TYPES.values()}}},
)
def download_figure(
    job_id: JobId,
    name: Annotated[str, Path(pattern=r"^[0-9A-Za-z_-]{1,64}$", description="e.g. fig3b")],
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    format: Literal["png", "svg"] = "png",
) -> Response:
    """A figure as PNG or SVG. A suite's (e.g. fig3b) carry the paper's values where the paper gives
    them; a train job has `curves`, `sigma`, `sigma_hist` and `robust`, an attack job `robust`
    (drawn by the worker when the job ends; 409 before)."""
    job = jobs.get_job(session=session, job_id=job_id, owner=principal.scope)
    if job.kind is JobKind.SUITE:
        artifact = suites.get_figure(session=session, job_id=job_id, name=name, fmt=format)
    else:
        artifact = _job_figure(session, job, name, format)
    return _artifact_response(artifact, settings, _IMAGE_TYPES[format], f"{job_id}-{name}.{format}")


def _artifact_response(artifact: Any, settings: Any, media_type: str, filename: str) -> Response:
    """A stored file: served from disk, or streamed from the object store (app.core.artifacts) with
    the digest the worker recorded; the client verifies the bytes against X-Content-SHA256."""
    headers = {"X-Content-SHA256": artifact.sha256}
    if not is_remote(artifact.path):
        return FileResponse(artifact.path, media_type=media_type, filename=filename, headers=headers)
    store = make_store(settings)
    stored = store.head(artifact.path)
    if stored is None:
        raise NotFoundError(f"artifact {artifact.path} is missing from the store")
    if stored.sha256 != artifact.sha256:  # replaced behind the service's back: never serve it
        raise ConflictError(f"artifact {artifact.path} does not match its recorded SHA-256")
    headers.update({"Content-Length": str(stored.size_bytes),
                    "Content-Disposition": f'attachment; filename="{filename}"'})  # fmt: skip
    return StreamingResponse(store.open(artifact.path), media_type=media_type, headers=headers)


def _job_figure(session: Any, job: Job, name: str, fmt: str) -> Any:
    if job.status not in lifecycle.TERMINAL:
        raise ConflictError(
            f"job {job.id} is {job.status}; its figures are drawn when it ends", status=job.status
        )
    try:
        return records.get_artifact(session=session, job_id=job.id, kind=f"figure:{name}.{fmt}")
    except NotFoundError:
        known = sorted({a.kind.removeprefix("figure:").rsplit(".", 1)[0]
                        for a in records.list_artifacts(session=session, job_id=job.id, prefix="figure:")})  # fmt: skip
        raise NotFoundError(
            f"job {job.id} has no figure '{name}' (it has: {', '.join(known) or 'none'})"
        ) from None


@router.get("/{job_id}/sigma", response_model=SigmaPublic, responses=_ERRORS)
def read_sigma(job_id: JobId, session: SessionDep, principal: PrincipalDep) -> SigmaPublic:
    """sum(σ) and bounds A, B per epoch (as training goes), then per-layer statistics."""
    job = jobs.get_job(session=session, job_id=job_id, owner=principal.scope)
    return SigmaPublic.model_validate(
        {
            "job_id": job.id,
            "status": job.status,
            "epochs": records.list_epochs(session=session, job_id=job_id),
            "layers": records.list_sigma_stats(session=session, job_id=job_id),
        },
        from_attributes=True,
    )


@router.get("/{job_id}/epochs", response_model=EpochsPublic, responses=_ERRORS)
def read_epochs(job_id: JobId, session: SessionDep, principal: PrincipalDep) -> EpochsPublic:
    """The training curve, one row per finished epoch."""
    job = jobs.get_job(session=session, job_id=job_id, owner=principal.scope)
    epochs = records.list_epochs(session=session, job_id=job_id)
    return EpochsPublic.model_validate(
        {"job_id": job.id, "status": job.status, "data": epochs, "count": len(epochs)}, from_attributes=True
    )


@router.get(
    "/{job_id}/checkpoint",
    response_class=FileResponse,
    responses={**_ERRORS, 200: {"content": {"application/octet-stream": _BINARY}}},
)
def download_checkpoint(
    job_id: JobId,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    which: Literal["best", "last"] = "best",
) -> Response:
    """The checkpoint as one safetensors file: weights, and config, metrics and versions in its
    metadata (`ctrw evaluate` and `ctrw sigma-stats` take it as is). The X-Content-SHA256 header
    lets the client verify the download."""
    artifact = jobs.get_checkpoint(session=session, job_id=job_id, which=which, owner=principal.scope)
    return _artifact_response(artifact, settings, "application/octet-stream", f"{job_id}-{which}.safetensors")


@router.post("/{job_id}/cancel", status_code=202, response_model=JobPublic, responses=_ERRORS)
def cancel_job(
    job_id: JobId, session: SessionDep, dispatch_group: DispatchGroupDep, principal: PrincipalDep
) -> JobPublic:
    """A queued job is cancelled at once; a running job stops at its next batch. A suite cancels
    the unfinished sub-jobs it created that no other unfinished suite uses."""
    job = jobs.cancel_job(
        session=session, job_id=job_id, dispatch_group=dispatch_group, owner=principal.scope
    )
    return suites.job_public(session=session, job=job)
