"""FastAPI dependencies: settings, a database session per request, the dispatcher, and who is
asking (`PrincipalDep`, `AdminDep`: API key, rate limit)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from app.core.db import session_scope
from app.core.queue import Dispatch, DispatchGroup
from app.core.settings import Settings
from app.schemas import ErrorPublic
from app.services import auth

__all__ = [
    "ADMIN_ERRORS",
    "AUTH_ERRORS",
    "AdminDep",
    "DispatchDep",
    "DispatchGroupDep",
    "PrincipalDep",
    "SessionDep",
    "SettingsDep",
]

# Documented on every route that takes a key (Schemathesis checks that statuses are documented).
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorPublic,
        "description": "no valid API key (send `Authorization: Bearer KEY`); keys are required when any "
        "exists or the service listens beyond loopback",
    },
    429: {"model": ErrorPublic, "description": "rate limit of the key, or the owner's unfinished-job quota"},
}
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    403: {"model": ErrorPublic, "description": "the key is not an admin key"},
}
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="ctrw"'}


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _session(request: Request) -> Iterator[Session]:
    yield from session_scope(request.app.state.settings.database_url)


def _dispatch(request: Request) -> Dispatch:
    return request.app.state.dispatch


def _dispatch_group(request: Request) -> DispatchGroup:
    return request.app.state.dispatch_group


SettingsDep = Annotated[Settings, Depends(_settings)]
SessionDep = Annotated[Session, Depends(_session)]
DispatchDep = Annotated[Dispatch, Depends(_dispatch)]
DispatchGroupDep = Annotated[DispatchGroup, Depends(_dispatch_group)]


def _principal(request: Request, session: SessionDep, settings: SettingsDep) -> auth.Principal:
    """The key's owner; without a key the local owner (admin) where no key is required, else 401.
    The key is looked up on every request, so a revoked key is refused at once."""
    header = request.headers.get("authorization")
    if header is None:
        # The local address the connection arrived at also counts: uvicorn started by hand on
        # 0.0.0.0 (CTRW_HOST left at loopback) still refuses a request from the network.
        server = request.scope.get("server")
        required = (
            settings.auth == "required"
            or not auth.is_loopback(settings.host)
            or (server is not None and auth.is_public_ip(str(server[0])))
            or auth.any_keys(session=session)
        )
        session.commit()  # end the read transaction before the route's own work
        if required:
            raise HTTPException(401, "an API key is required: send `Authorization: Bearer KEY`", _CHALLENGE)
        return auth.Principal(owner=auth.LOCAL_OWNER, admin=True)
    scheme, _, key = header.partition(" ")
    row = auth.lookup_key(session=session, key=key.strip()) if scheme.lower() == "bearer" else None
    session.commit()
    if row is None:
        raise HTTPException(401, "invalid or revoked API key", _CHALLENGE)
    wait = request.app.state.rate_limiter.take(row.id)
    if wait is not None:
        raise HTTPException(
            429,
            f"rate limit of {settings.rate_limit_per_minute} requests a minute for this key exceeded; "
            f"retry in {wait:.1f} s",
            {"Retry-After": str(max(1, round(wait + 0.5)))},
        )
    return auth.Principal(owner=row.owner, admin=row.admin, key_id=row.id)


def _admin(principal: Annotated[auth.Principal, Depends(_principal)]) -> auth.Principal:
    if not principal.admin:
        raise HTTPException(403, f"owner {principal.owner!r}: /admin needs an admin key")
    return principal


PrincipalDep = Annotated[auth.Principal, Depends(_principal)]
AdminDep = Annotated[auth.Principal, Depends(_admin)]
