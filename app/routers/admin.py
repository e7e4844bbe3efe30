"""Operator actions."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from app.deps import DispatchDep, SessionDep, SettingsDep
from app.schemas import RequeuePublic
from app.services import jobs

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post("/requeue-stale", response_model=RequeuePublic)
def requeue_stale(session: SessionDep, settings: SettingsDep, dispatch: DispatchDep) -> RequeuePublic:
    """Requeue running jobs whose worker stopped heartbeating (workers also do this themselves)."""
    requeued = jobs.requeue_stale_jobs(session=session, older_than=timedelta(seconds=settings.stale_after_s))
    for job_id in requeued:
        jobs.dispatch_job(session=session, job_id=job_id, dispatch=dispatch)
    return RequeuePublic(requeued=requeued)
