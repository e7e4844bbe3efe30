"""The API in-process for the service's contract tests: FastAPI's TestClient on the app of the
given settings, against their real database and broker, without a server process (end-to-end
tests start `ctrw-service serve` through ``processes``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient

from app.core.settings import Settings
from app.main import create_app


@contextmanager
def in_process_api(settings: Settings) -> Iterator[TestClient]:
    """A TestClient (an httpx.Client) with the app's lifespan run. Its requests come from no socket
    (``testserver``), so without a key they are local ones, as from a loopback client."""
    with TestClient(create_app(settings)) as client:
        yield client
