"""Service fixtures: a fresh PostgreSQL database, a Redis db and an S3 store per test session, settings with
fast timings, the real API and worker processes, a headless browser, and the drain that keeps
one test's jobs out of the next test's workers."""

from __future__ import annotations

import copy
import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, bindparam, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from app.core.db import make_engine
from app.core.migrate import upgrade
from app.core.settings import Settings
from tests.support import configs
from tests.support.processes import PG_ADMIN_URL, REDIS_BASE_URL, Processes
from tests.support.processes import fast_settings as _fast_settings
from tests.support.servers import S3Server
from tests.support.timing import TIME_SCALE
from tests.support.timing import wait_for as _wait_for


@pytest.fixture
def tiny_train() -> dict[str, Any]:
    return copy.deepcopy(configs.TINY_TRAIN)


@pytest.fixture(scope="session")
def slow_train() -> Callable[[int], dict[str, Any]]:
    return configs.slow_train


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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible store (SeaweedFS) with bucket `ctrw` for this session, stopped at the end.
    Its key is in this process's environment meanwhile (boto3's chain), so child processes (whose
    environment is copied from it) use it too; a test gives each its own prefix."""
    server = S3Server(tmp_path_factory.mktemp("s3"), _wait_for)
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    yield server
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def fast_settings() -> Callable[..., Settings]:
    return _fast_settings


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


# --- Drain: the session's database and Redis db are shared by every test, so a job a test left
# queued or running (or requeued when its worker was stopped) would run in the next test's worker.

_UNFINISHED = ("queued", "waiting", "running")


def _unfinished(engine: Engine) -> set[str]:
    query = text("SELECT id FROM job WHERE status IN :s").bindparams(bindparam("s", expanding=True))
    try:
        with engine.connect() as conn:
            return set(conn.scalars(query, {"s": list(_UNFINISHED)}))
    except DBAPIError:  # not migrated (yet): no jobs
        return set()


def _cancel(engine: Engine, ids: set[str]) -> None:
    """Cancel these jobs: unstarted ones at once, running ones flagged (a live worker stops at its
    next batch), then, once no live worker holds them, whatever still runs (its worker is gone)."""
    ids_param = bindparam("ids", expanding=True)
    with engine.begin() as conn:
        now = datetime.now(UTC)
        conn.execute(text("UPDATE job SET cancel_requested = true, updated_at = :now WHERE id IN :ids")
                     .bindparams(ids_param), {"ids": list(ids), "now": now})  # fmt: skip
        conn.execute(text("UPDATE job SET status = 'cancelled', finished_at = :now, updated_at = :now "
                          "WHERE id IN :ids AND status IN ('queued', 'waiting')")
                     .bindparams(ids_param), {"ids": list(ids), "now": now})  # fmt: skip

    def idle() -> bool:
        # Nothing of these still running with a fresh heartbeat (a dead worker's stays stale).
        query = text("SELECT count(*) FROM job WHERE id IN :ids AND status = 'running' "
                     "AND heartbeat_at > :fresh").bindparams(ids_param)  # fmt: skip
        with engine.connect() as conn:
            fresh = datetime.fromtimestamp(time.time() - 2 * TIME_SCALE, UTC)
            return conn.scalar(query, {"ids": list(ids), "fresh": fresh}) == 0

    _wait_for(idle, timeout=30, what=f"the workers to stop the test's jobs {sorted(ids)}", interval=0.2)
    with engine.begin() as conn:
        now = datetime.now(UTC)
        conn.execute(text("UPDATE job SET status = 'cancelled', finished_at = :now, updated_at = :now "
                          "WHERE id IN :ids AND status = 'running'")
                     .bindparams(ids_param), {"ids": list(ids), "now": now})  # fmt: skip


def _purge_messages(url: str, ids: set[str]) -> None:
    """Remove the broker's messages (queued, or delivered to a worker that died) that name these jobs."""
    client = redis.Redis.from_url(url)
    needles = [i.encode() for i in ids]
    for key in client.scan_iter(match="gpu*"):
        if client.type(key) == b"list":
            for message in set(client.lrange(key, 0, -1)):
                if any(n in message for n in needles):
                    client.lrem(key, 0, message)
    for tag, message in client.hgetall("unacked").items():
        if any(n in message for n in needles):
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)


def _drain(request: pytest.FixtureRequest) -> Iterator[None]:
    node = request.node
    items = (
        [i for i in request.session.items if i.module is node.module]
        if isinstance(node, pytest.Module)
        else [node]
    )

    def used(name: str) -> bool:
        return any(name in getattr(i, "fixturenames", ()) for i in items)

    if not used("pg_url"):
        yield
        return
    engine = create_engine(request.getfixturevalue("pg_url"), poolclass=NullPool)
    before = _unfinished(engine)
    yield
    left = _unfinished(engine) - before
    if left:
        _cancel(engine, left)
        if used("redis_url"):
            _purge_messages(request.getfixturevalue("redis_url"), left)
    engine.dispose()


@pytest.fixture(autouse=True)
def drain_test_jobs(request: pytest.FixtureRequest) -> Iterator[None]:
    """At teardown (after the test's processes stopped), the jobs the test created and left
    unfinished are cancelled and their broker messages removed."""
    yield from _drain(request)


@pytest.fixture(scope="module", autouse=True)
def drain_module_jobs(request: pytest.FixtureRequest) -> Iterator[None]:
    """The same for jobs a module's fixtures created (a module-wide stack), at the module's end."""
    yield from _drain(request)


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
