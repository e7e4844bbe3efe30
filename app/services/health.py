"""Readiness checks of the service's dependencies."""

from __future__ import annotations

from kombu import Connection
from sqlalchemy.orm import Session

from app.core.migrate import current_revision, head_revision
from app.core.settings import Settings

__all__ = ["check_dependencies"]


def check_dependencies(*, session: Session, settings: Settings) -> dict[str, str]:
    """'ok' or what is wrong, per dependency."""
    checks = {"database": _database(session)}
    if settings.broker_url is not None:
        checks["broker"] = _broker(settings.broker_url)
    return checks


def _database(session: Session) -> str:
    try:
        current = current_revision(session.connection())
    except Exception as exc:
        return f"unreachable: {exc}"
    head = head_revision()
    return "ok" if current == head else f"schema at {current}, expected {head}: run `ctrw-service migrate`"


def _broker(url: str) -> str:
    try:
        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        return f"unreachable: {exc}"
    return "ok"
