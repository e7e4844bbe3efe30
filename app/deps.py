"""FastAPI dependencies: settings, a database session per request, the dispatcher."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.db import session_scope
from app.queue import Dispatch, DispatchGroup
from app.settings import Settings

__all__ = ["DispatchDep", "DispatchGroupDep", "SessionDep", "SettingsDep"]


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
