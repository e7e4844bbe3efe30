"""Engines and sessions. Created by entry points (API factory, worker), never at import time."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["make_engine", "session_factory", "session_scope"]


@lru_cache(maxsize=8)
def make_engine(database_url: str) -> Engine:
    """One engine per URL and process. SQLite gets WAL and a busy timeout: the API and the worker
    are separate processes writing the same file."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return engine


def session_factory(database_url: str) -> sessionmaker[Session]:
    return sessionmaker(make_engine(database_url), expire_on_commit=False)


def session_scope(database_url: str) -> Iterator[Session]:
    """A session per request (FastAPI dependency body)."""
    with session_factory(database_url)() as session:
        yield session
