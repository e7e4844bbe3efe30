"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.deps import SessionDep, SettingsDep
from app.schemas import ReadyPublic
from app.services import health

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyPublic, responses={503: {"model": ReadyPublic}})
def readyz(session: SessionDep, settings: SettingsDep, response: Response) -> ReadyPublic:
    """The database answers with its schema at head and, unless embedded, the broker answers."""
    checks = health.check_dependencies(session=session, settings=settings)
    ok = all(v == "ok" for v in checks.values())
    if not ok:
        response.status_code = 503
    return ReadyPublic(status="ok" if ok else "unavailable", checks=checks)
