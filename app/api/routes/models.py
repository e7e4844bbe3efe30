"""/models: bring your own model (a safetensors state dict for a registered architecture)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from app.api.deps import AUTH_ERRORS, DispatchDep, PrincipalDep, SessionDep, SettingsDep
from app.models import Job, JobStatus
from app.schemas import ErrorPublic, JobPublic
from app.services import jobs, models, scheduling
from app.services.errors import InvalidInputError

router = APIRouter(prefix="/models", tags=["models"], responses=AUTH_ERRORS)

_BODY = {
    "required": True,
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    "description": "the state dict as a safetensors file (safetensors.torch.save_file); never a pickle",
}
# How often the route looks whether the worker has checked the upload.
_POLL_S = 0.2


@router.post(
    "",
    status_code=201,
    response_model=JobPublic,
    openapi_extra={"requestBody": _BODY},
    responses={
        202: {
            "model": JobPublic,
            "description": "stored; the worker has not checked its tensors yet (queued)",
        },
        413: {"model": ErrorPublic, "description": "over CTRW_MAX_UPLOAD_BYTES"},
        503: {"model": ErrorPublic, "description": "broker unreachable"},
    },
)
async def upload_model(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    dispatch: DispatchDep,
    response: Response,
    principal: PrincipalDep,
    config: Annotated[
        str,
        Query(
            max_length=65536,
            description="the architecture and defense: a train config "
            'as JSON, e.g. {"model": {"name": "resnet18", "width": 1.0}, "variant": "pni", '
            '"data": {"dataset": "cifar10"}}',
        ),
    ],  # fmt: skip
    filename: Annotated[str | None, Query(max_length=255, description="the file's name (recorded)")] = None,
) -> Any:
    """Upload a trained model: a safetensors state dict with its architecture (a registered model
    name and width) and defense (variant and settings). The format is checked at once (a pickle
    or a malformed file: 422, nothing stored); the worker then checks every tensor's name and
    shape against the network (wrong ones: 422 naming them, nothing stored) and stores it as a
    succeeded training job's checkpoint (201), which `POST /jobs/attack` evaluates. If the worker
    has not checked it within CTRW_UPLOAD_VALIDATION_S: 202, the job stays queued until it has."""
    body = await request.body()
    spooled = await run_in_threadpool(models.spool, body, settings)
    try:
        job = await run_in_threadpool(
            models.create_upload, session=session, settings=settings, config=config, body=spooled,
            filename=filename, owner=principal.owner, max_active=settings.max_active_jobs_per_owner,
        )  # fmt: skip
    finally:
        spooled.unlink(missing_ok=True)
    await run_in_threadpool(scheduling.dispatch_job, session=session, job_id=job.id, dispatch=dispatch)
    response.headers["Location"] = f"/jobs/{job.id}"
    deadline = time.monotonic() + settings.upload_validation_s
    status, error = JobStatus.QUEUED, None
    while time.monotonic() < deadline:
        status, error = await run_in_threadpool(models.upload_state, session=session, job_id=job.id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
            break
        await asyncio.sleep(_POLL_S)
    if status is JobStatus.FAILED and error and error.startswith(models.REJECTED):
        await run_in_threadpool(models.discard_upload, session=session, settings=settings, job_id=job.id)
        raise InvalidInputError(error.removeprefix(models.REJECTED), loc=("body",))
    if status is not JobStatus.SUCCEEDED:
        response.status_code = 202
    fresh: Job = await run_in_threadpool(jobs.get_job, session=session, job_id=job.id)
    return fresh
