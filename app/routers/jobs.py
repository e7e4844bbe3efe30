"""/jobs: submit, follow, read back and cancel jobs."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import FileResponse, PlainTextResponse

from app.deps import DispatchDep, SessionDep
from app.models import Job, JobKind, JobStatus
from app.schemas import AttackJobCreate, EpochsPublic, JobPublic, JobsPublic, ResultsTable, SigmaPublic
from app.services import jobs, records
from app.services.tables import TableFormat, get_results_table, render_table
from ctrw.config import TrainConfig

router = APIRouter(prefix="/jobs", tags=["jobs"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "unknown job"},
    409: {"description": "the job's status does not allow this"},
}
_MEDIA_TYPES = {"csv": "text/csv", "markdown": "text/markdown", "latex": "application/x-latex"}


@router.post(
    "/train",
    status_code=202,
    response_model=JobPublic,
    responses={413: {"description": "body too large"}, 503: {"description": "broker unreachable"}},
)
def submit_train_job(
    job_in: TrainConfig, session: SessionDep, dispatch: DispatchDep, response: Response
) -> Job:
    """Queue a training job (evaluation and σ statistics follow if `evaluation` is set)."""
    job = jobs.create_train_job(session=session, job_in=job_in)
    jobs.dispatch_job(session=session, job_id=job.id, dispatch=dispatch)
    response.headers["Location"] = f"/jobs/{job.id}"
    return job


@router.post("/attack", status_code=202, response_model=JobPublic, responses=_ERRORS)
def submit_attack_job(
    job_in: AttackJobCreate, session: SessionDep, dispatch: DispatchDep, response: Response
) -> Job:
    """Queue an evaluation of a succeeded training job's best or last checkpoint."""
    job = jobs.create_attack_job(session=session, job_in=job_in)
    jobs.dispatch_job(session=session, job_id=job.id, dispatch=dispatch)
    response.headers["Location"] = f"/jobs/{job.id}"
    return job


@router.get("", response_model=JobsPublic)
def list_jobs(
    session: SessionDep,
    status: JobStatus | None = None,
    kind: JobKind | None = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> JobsPublic:
    """Newest first."""
    data, count = jobs.list_jobs(session=session, status=status, kind=kind, limit=limit, offset=offset)
    return JobsPublic(data=[JobPublic.model_validate(j) for j in data], count=count)


@router.get("/{job_id}", response_model=JobPublic, responses=_ERRORS)
def read_job(job_id: str, session: SessionDep) -> Job:
    return jobs.get_job(session=session, job_id=job_id)


@router.get("/{job_id}/results", response_model=ResultsTable, responses=_ERRORS)
def read_results(job_id: str, session: SessionDep, format: TableFormat = "json") -> ResultsTable | Response:
    """Robust accuracy per attack column; 409 with the current status until the job has finished."""
    table = get_results_table(session=session, job_id=job_id)
    if format == "json":
        return table
    return PlainTextResponse(render_table(table, format), media_type=_MEDIA_TYPES[format])


@router.get("/{job_id}/sigma", response_model=SigmaPublic, responses=_ERRORS)
def read_sigma(job_id: str, session: SessionDep) -> SigmaPublic:
    """sum(σ) and bounds A, B per epoch (as training goes), then per-layer statistics."""
    job = jobs.get_job(session=session, job_id=job_id)
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
def read_epochs(job_id: str, session: SessionDep) -> EpochsPublic:
    """The training curve, one row per finished epoch."""
    job = jobs.get_job(session=session, job_id=job_id)
    epochs = records.list_epochs(session=session, job_id=job_id)
    return EpochsPublic.model_validate(
        {"job_id": job.id, "status": job.status, "data": epochs, "count": len(epochs)}, from_attributes=True
    )


@router.get("/{job_id}/checkpoint", response_class=FileResponse, responses=_ERRORS)
def download_checkpoint(
    job_id: str, session: SessionDep, which: Literal["best", "last"] = "best"
) -> FileResponse:
    """The model weights as safetensors; the X-Content-SHA256 header lets the client verify them."""
    artifact = jobs.get_checkpoint(session=session, job_id=job_id, which=which)
    return FileResponse(
        artifact.path,
        media_type="application/octet-stream",
        filename=f"{job_id}-{which}.safetensors",
        headers={"X-Content-SHA256": artifact.sha256},
    )


@router.post("/{job_id}/cancel", status_code=202, response_model=JobPublic, responses=_ERRORS)
def cancel_job(job_id: str, session: SessionDep) -> Job:
    """A queued job is cancelled at once; a running job stops at its next batch."""
    return jobs.cancel_job(session=session, job_id=job_id)
