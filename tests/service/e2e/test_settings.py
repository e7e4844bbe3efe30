"""The default database lives in the runs directory: every process that shares CTRW_RUNS_DIR
shares the database, whatever directory it was started from."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.settings import Settings
from tests.support.configs import TINY_TRAIN
from tests.support.processes import BIN, free_port
from tests.support.timing import wait_for

pytestmark = pytest.mark.service


@pytest.fixture
def no_ctrw_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CTRW_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("no_ctrw_env")
def test_default_database_is_in_the_runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "shared" / "runs"
    monkeypatch.setenv("CTRW_RUNS_DIR", str(runs))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = Settings()
    assert settings.runs_dir == runs
    assert settings.database_url == f"sqlite:///{runs}/ctrw.db"
    # A relative runs directory is taken from the working directory once, at start, and stored absolute.
    monkeypatch.setenv("CTRW_RUNS_DIR", "my-runs")
    assert Settings().database_url == f"sqlite:///{elsewhere}/my-runs/ctrw.db"
    assert Settings().runs_dir.is_absolute()
    # An explicit URL is kept as given.
    monkeypatch.setenv("CTRW_DATABASE_URL", "postgresql+psycopg://u@h/db")
    assert Settings().database_url == "postgresql+psycopg://u@h/db"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Path], httpx.Client]]:
    """Starts `ctrw-service serve --no-worker` from a given directory with only CTRW_RUNS_DIR
    (and fast timings) set; every process is stopped at teardown."""
    procs: list[subprocess.Popen[bytes]] = []
    runs = tmp_path / "runs"

    def start(cwd: Path) -> httpx.Client:
        cwd.mkdir(parents=True, exist_ok=True)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CTRW_")}
        env.update(CTRW_RUNS_DIR=str(runs), CTRW_DATA_DIR=str(tmp_path / "data"))
        log = (tmp_path / f"serve-{port}.log").open("wb")
        proc = subprocess.Popen(
            [str(BIN / "ctrw-service"), "serve", "--no-worker", "--port", str(port)],
            cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(proc)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

        def up() -> bool:
            assert proc.poll() is None, (tmp_path / f"serve-{port}.log").read_text(errors="replace")
            try:
                return client.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout=60, what="the API")
        return client

    yield start
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_processes_in_different_directories_share_the_database(
    tmp_path: Path, serve: Callable[[Path], httpx.Client]
) -> None:
    first = serve(tmp_path / "a")
    job: dict[str, Any] = first.post("/jobs/train", json=TINY_TRAIN).json()
    assert job["status"] == "queued"
    # Started from another directory with the same CTRW_RUNS_DIR: the same database.
    second = serve(tmp_path / "b" / "deeper")
    seen = second.get(f"/jobs/{job['id']}")
    assert seen.status_code == 200, seen.text
    assert seen.json()["config_hash"] == job["config_hash"]
    assert (tmp_path / "runs" / "ctrw.db").is_file()
    assert not (tmp_path / "a" / "runs").exists() and not (tmp_path / "b" / "deeper" / "runs").exists()
    # Clean up what was queued (no worker runs here).
    assert second.post(f"/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
