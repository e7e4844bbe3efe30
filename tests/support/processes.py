"""Where the service tests find PostgreSQL, Redis and the installed commands, and `Processes`:
the real API and worker processes of one test (or module), with their logs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx

from app.core.settings import Settings
from tests.support.timing import wait_for

PG_ADMIN_URL = os.environ.get("CTRW_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
REDIS_BASE_URL = os.environ.get("CTRW_TEST_REDIS_URL", "redis://127.0.0.1:6379")
BIN = Path(sys.executable).parent


def fast_settings(tmp: Path, **overrides: Any) -> Settings:
    """Timings short enough that stale-job requeue and redelivery happen within a test."""
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp / 'ctrw.db'}",
        "runs_dir": tmp / "runs",
        "data_dir": tmp / "data",
        "progress_interval_s": 0.2,
        "heartbeat_interval_s": 0.5,
        "stale_after_s": 3.0,
        "visibility_timeout_s": 30,
        "poll_interval_s": 0.2,
        "max_body_bytes": 64 * 1024,
        "log_level": "INFO",
    }
    return Settings(**{**values, **overrides})


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTRW_")}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"CTRW_{name.upper()}"] = str(value)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Child processes of one test, with their logs; all are killed at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, args: list[str], settings: Settings) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}.log"
        proc = subprocess.Popen(
            args, env=settings_env(settings), stdout=log.open("wb"), stderr=subprocess.STDOUT
        )
        self.procs.append((proc, log))
        return proc

    def api(self, settings: Settings, *, embedded_worker: bool = False) -> httpx.Client:
        """`ctrw-service serve` on a free port; returns a client once /healthz answers."""
        port = free_port()
        args = [str(BIN / "ctrw-service"), "serve", "--port", str(port)]
        proc = self.start(f"api-{port}", args if embedded_worker else [*args, "--no-worker"], settings)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

        def up() -> bool:
            assert proc.poll() is None, f"API exited:\n{self.logs()}"
            try:
                return client.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout=60, what="the API")
        return client

    def celery_worker(self, settings: Settings, name: str) -> subprocess.Popen[bytes]:
        """One Celery worker, once it is ready."""
        return self.celery_workers(settings, [name])[name]

    def celery_workers(
        self, settings: Settings, names: list[str], *, unique: bool = False
    ) -> dict[str, subprocess.Popen[bytes]]:
        """Celery workers started side by side (each imports torch: ~10 s), then waited for.

        ``unique``: a random suffix on each node name, for a test that starts a name again.
        """
        started = {}
        for name in names:
            node = f"{name}-{uuid.uuid4().hex[:6]}" if unique else name
            args = [str(BIN / "celery"), "-A", "worker.celery_app", "worker", "-Q", "gpu", "-P", "solo", "-c", "1",
                    "-n", f"{node}@%h", "--loglevel", "INFO"]  # fmt: skip
            started[name] = (self.start(name, args, settings), self.procs[-1][1])
        for name, (proc, log) in started.items():
            wait_for(lambda p=proc, lg=log: p.poll() is not None or " ready." in lg.read_text(errors="replace"),
                     timeout=120, what=f"celery worker {name}")  # fmt: skip
            assert proc.poll() is None, f"worker {name} exited:\n{self.logs()}"
        return {name: proc for name, (proc, _) in started.items()}

    @staticmethod
    def free_port() -> int:
        return free_port()

    def logs(self) -> str:
        return "\n".join(
            f"----- {log.name}\n{log.read_text(errors='replace')[-6000:]}" for _, log in self.procs
        )

    def stop_all(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
