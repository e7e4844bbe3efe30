"""Service fixtures: a fresh PostgreSQL database and a Redis db per test session, settings with
fast timings, and helpers that start the real API and worker processes."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.core.db import make_engine
from app.core.migrate import upgrade
from app.core.settings import Settings

PG_ADMIN_URL = os.environ.get("CTRW_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
REDIS_BASE_URL = os.environ.get("CTRW_TEST_REDIS_URL", "redis://127.0.0.1:6379")
BIN = Path(sys.executable).parent
# One scale for every wait of the service tests: each timeout below is the quiet-machine budget
# times this factor (raise it on a slow or loaded machine; waits end as soon as their condition holds).
TIME_SCALE = float(os.environ.get("CTRW_TEST_TIME_SCALE", "2"))

# The tiny CTRW job of the service tests: a few seconds on 2 CPU cores.
TINY_TRAIN: dict[str, Any] = {
    "model": {"name": "small_cnn", "width": 0.25},
    "data": {"dataset": "digits", "image_size": 8, "channels": 1, "augment": False,
             "train_subset": 256, "test_subset": 64},
    "optim": {"epochs": 3, "batch_size": 64, "milestones": [2]},
    "attack": {"steps": 2},
    "val_pgd_steps": 2,
    "val_examples": 64,
    "bounds": {"lower": {"kind": "fraction", "value": 0.3}, "upper": {"kind": "fraction", "value": 1.5}},
    "evaluation": {"attacks": [{"name": "clean"}, {"name": "pgd", "steps": 3}], "n_examples": 64, "score_draws": 2},
    "amp": False,
}  # fmt: skip


@pytest.fixture
def tiny_train() -> dict[str, Any]:
    return copy.deepcopy(TINY_TRAIN)


@pytest.fixture(scope="session")
def slow_train() -> Callable[[int], dict[str, Any]]:
    """A job that trains long enough to be killed or stopped mid-way (~0.3 s an epoch on 2 idle cores)."""

    def make(epochs: int) -> dict[str, Any]:
        return {
            **copy.deepcopy(TINY_TRAIN),
            "model": {"name": "small_cnn", "width": 1.0},
            "data": {**TINY_TRAIN["data"], "train_subset": 1024},
            "optim": {"epochs": epochs, "batch_size": 64, "milestones": [epochs]},
            "attack": {"steps": 5},
            "evaluation": {**TINY_TRAIN["evaluation"], "diagnostics": False},
        }

    return make


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    name = f"ctrw_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is needed (run scripts/services.sh): {exc}", pytrace=False)
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    make_engine(url).dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """An empty Redis db that this session claims (concurrent test runs use different dbs)."""
    owner = uuid.uuid4().hex
    for db in range(1, 16):
        client = redis.Redis.from_url(f"{REDIS_BASE_URL}/{db}")
        try:
            if client.dbsize() == 0 and client.set("ctrw-test-owner", owner, nx=True, ex=3600):
                break
        except redis.ConnectionError as exc:
            pytest.fail(
                f"Redis at {REDIS_BASE_URL} is needed (run scripts/services.sh): {exc}", pytrace=False
            )
    else:
        pytest.fail("no free Redis db in 1..15 for the service tests")
    yield f"{REDIS_BASE_URL}/{db}"
    client.flushdb()


@pytest.fixture(scope="session")
def pg_migrated(pg_url: str) -> str:
    upgrade(Settings(database_url=pg_url))
    return pg_url


def _fast_settings(tmp: Path, **overrides: Any) -> Settings:
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


@pytest.fixture(scope="session")
def fast_settings() -> Callable[..., Settings]:
    return _fast_settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTRW_")}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"CTRW_{name.upper()}"] = str(value)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it is truthy; ``timeout`` is the quiet-machine budget (x TIME_SCALE)."""
    timeout *= TIME_SCALE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


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
        port = _free_port()
        args = [str(BIN / "ctrw-service"), "serve", "--port", str(port)]
        proc = self.start(f"api-{port}", args if embedded_worker else [*args, "--no-worker"], settings)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

        def up() -> bool:
            assert proc.poll() is None, f"API exited:\n{self.logs()}"
            try:
                return client.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        _wait_for(up, timeout=60, what="the API")
        return client

    def celery_worker(self, settings: Settings, name: str) -> subprocess.Popen[bytes]:
        args = [str(BIN / "celery"), "-A", "worker.celery_app", "worker", "-Q", "gpu", "-P", "solo", "-c", "1",
                "-n", f"{name}@%h", "--loglevel", "INFO"]  # fmt: skip
        proc = self.start(name, args, settings)
        log = self.procs[-1][1]
        _wait_for(lambda: proc.poll() is not None or " ready." in log.read_text(errors="replace"),
                 timeout=90, what=f"celery worker {name}")  # fmt: skip
        assert proc.poll() is None, f"worker {name} exited:\n{self.logs()}"
        return proc

    @staticmethod
    def free_port() -> int:
        return _free_port()

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


@pytest.fixture(scope="session")
def wait_for() -> Callable[..., Any]:
    return _wait_for


@pytest.fixture(scope="module")
def module_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    procs = Processes(tmp_path_factory.mktemp("procs"))
    yield procs
    procs.stop_all()


@pytest.fixture
def processes(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(procs.logs())
    procs.stop_all()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # Lets `processes` print the children's logs when a test failed.
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


CHROMIUM = Path(os.environ.get("CTRW_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CTRW_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Debian Chromium driven by Selenium, offline; screenshots go to ``browser.shots``.

    Fails (never skips) when the browser is missing: scripts/bootstrap.sh installs it as root.
    ``browser.shot(name)`` saves ``<tmp_path>/screenshots/<name>.png`` and returns its path.
    """
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed (apt-get install chromium chromium-driver; "
                    "scripts/bootstrap.sh does it as root)", pytrace=False)  # fmt: skip
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    # No sandbox (tests run as root in containers), no GPU, no network-dependent features.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1000", "--no-first-run", "--disable-extensions",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):  # fmt: skip
        opts.add_argument(flag)
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=opts, service=service)
    driver.set_page_load_timeout(30 * TIME_SCALE)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    driver.shots = shots

    def shot(name: str) -> Path:
        path = shots / f"{name}.png"
        driver.save_screenshot(str(path))
        return path

    driver.shot = shot
    try:
        yield driver
    finally:
        driver.quit()
