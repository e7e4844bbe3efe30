"""Access control against the API (in-process; `serve` where it is the subject) and PostgreSQL: API keys,
per-owner isolation on every job route (404 for another owner's job), admin-only /admin, revocation,
quota and rate limit (429, database unchanged), and `serve` refusing a non-loopback address without keys."""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from app.core.db import make_engine
from app.core.migrate import upgrade
from app.core.settings import Settings
from app.main import create_app
from app.models import ApiKey, Artifact, Epoch, Job, JobKind, JobStatus, Result, SigmaStat, SuiteMember
from app.services import auth
from ctrw.config import TrainConfig, config_hash
from tests.support.api import in_process_api
from tests.support.configs import TINY_TRAIN
from tests.support.processes import BIN, PG_ADMIN_URL, settings_env

pytestmark = pytest.mark.service

QUOTA = 3  # of the quota test's own API; the module's API allows many (suites create sub-jobs)


@pytest.fixture(scope="module")
def auth_pg() -> Iterator[str]:
    """A database of its own: the keys created here make keys required, which the other modules'
    tests (no key, loopback) must not see."""
    name = f"ctrw_auth_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    upgrade(Settings(database_url=url))
    yield url
    make_engine(url).dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="module")
def keys(auth_pg: str) -> dict[str, str]:
    with Session(make_engine(auth_pg)) as session:
        return {
            name: auth.create_key(session=session, owner=name, admin=name == "root")[1]
            for name in ("alice", "bob", "root", "dora")
        }


@pytest.fixture(scope="module")
def settings(auth_pg: str, redis_url: str, module_processes: Any, fast_settings: Any) -> Settings:
    return fast_settings(
        module_processes.tmp, database_url=auth_pg, broker_url=redis_url, max_active_jobs_per_owner=1000
    )


@pytest.fixture(scope="module")
def api(settings: Settings, keys: dict[str, str]) -> Iterator[httpx.Client]:
    """The API in-process (TestClient); `serve` itself is started where a test is about it."""
    with in_process_api(settings) as client:
        yield client


def _h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _rows(url: str) -> dict[str, int]:
    with make_engine(url).connect() as conn:
        return {
            m.__tablename__: conn.scalar(select(func.count()).select_from(m))
            for m in (Job, Epoch, Result, SigmaStat, Artifact, SuiteMember, ApiKey)
        }


@pytest.fixture(scope="module")
def alice_jobs(auth_pg: str, settings: Settings) -> dict[str, str]:
    """Alice's jobs, with everything a route can read: a succeeded train job (epochs, σ, results,
    checkpoint and figure files), a queued job (to cancel) and a suite with that train job."""
    config = TrainConfig.model_validate(TINY_TRAIN)
    files = settings.runs_dir / "alice"
    files.mkdir(parents=True, exist_ok=True)
    ids = {"train": uuid.uuid4().hex, "queued": uuid.uuid4().hex, "suite": uuid.uuid4().hex}
    with Session(make_engine(auth_pg)) as session:
        for key, kind, status, cfg in (
            ("train", JobKind.TRAIN, JobStatus.SUCCEEDED, config.model_dump(mode="json")),
            ("queued", JobKind.TRAIN, JobStatus.QUEUED, config.model_dump(mode="json")),
            ("suite", JobKind.SUITE, JobStatus.WAITING, {"suite": "table1"}),
        ):
            session.add(Job(id=ids[key], kind=kind, status=status, config=cfg,
                            config_hash=config_hash(config), owner="alice"))  # fmt: skip
        session.flush()
        train = ids["train"]
        session.add(SuiteMember(suite_id=ids["suite"], key="m", job_id=train))
        session.add(Epoch(job_id=train, epoch=0, sigma_sum=1.0))
        session.add(SigmaStat(job_id=train, layer="conv", numel=4, sigma_sum=1.0, sigma_min=0.1,
                              sigma_mean=0.25, sigma_max=0.4))  # fmt: skip
        session.add(Result(job_id=train, attack="clean", name="clean", protocol="paper", accuracy=0.5,
                           n=64, ci_low=0.4, ci_high=0.6))  # fmt: skip
        for kind, name in (("best_checkpoint", "best.safetensors"), ("figure:curves.png", "curves.png")):
            path = files / name
            path.write_bytes(b"alice's " + name.encode())
            session.add(Artifact(job_id=train, kind=kind, path=str(path),
                                 sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                                 size_bytes=path.stat().st_size))  # fmt: skip
        session.commit()
    return ids


def _job_routes() -> list[tuple[str, str]]:
    """Every /jobs operation the app documents: a new route is covered here without editing this
    test (and an undocumented one would fail the Schemathesis test)."""
    paths = create_app(Settings()).openapi()["paths"]
    return sorted((m.upper(), p) for p, ops in paths.items() if p.startswith("/jobs") for m in ops)


# How to call the routes that are not about one job id; every other route must have {job_id}.
_SUBMIT = {("POST", "/jobs/train"), ("POST", "/jobs/suite"), ("GET", "/jobs")}


def _request(method: str, path: str, ids: dict[str, str]) -> dict[str, Any]:
    if (method, path) == ("POST", "/jobs/attack"):
        return {"json": {"train_job_id": ids["train"], "evaluation": {"attacks": [{"name": "clean"}]}}}
    assert "{job_id}" in path, f"{method} {path}: add how to call it to tests/service/test_auth.py"
    job = ids["queued"] if path.endswith("/cancel") else ids["train"]
    return {"url": path.replace("{job_id}", job).replace("{name}", "curves")}


@pytest.mark.parametrize(("method", "path"), [r for r in _job_routes() if r not in _SUBMIT])
def test_another_owner_gets_404_on_every_job_route(
    api: httpx.Client, auth_pg: str, keys: dict[str, str], alice_jobs: dict[str, str], method: str, path: str
) -> None:
    """Bob cannot see, cancel, attack or download Alice's job: 404 like an unknown id, nothing
    changes; Alice herself (and an admin) get the answer."""
    request = _request(method, path, alice_jobs)
    url = request.pop("url", path)
    before = _rows(auth_pg)
    r = api.request(method, url, headers=_h(keys["bob"]), **request)
    assert r.status_code == 404, (method, url, r.status_code, r.text)
    job = alice_jobs["queued"] if path.endswith("/cancel") else alice_jobs["train"]
    assert r.json()["detail"] == f"job {job} not found"  # what an unknown id gets: nothing leaks
    assert _rows(auth_pg) == before
    with Session(make_engine(auth_pg)) as session:
        assert session.get(Job, alice_jobs["queued"]).status is JobStatus.QUEUED  # type: ignore[union-attr]
    mine = api.request(method, url, headers=_h(keys["alice"]), **request)
    assert mine.status_code < 400, (method, url, mine.status_code, mine.text)
    if method == "POST":  # the attack queued, the job cancelled: put things back for the next route
        created = mine.json()["id"]
        if created != alice_jobs["queued"]:
            assert api.post(f"/jobs/{created}/cancel", headers=_h(keys["alice"])).status_code == 202
        with Session(make_engine(auth_pg)) as session:
            session.execute(
                Job.__table__.update()
                .where(Job.id == alice_jobs["queued"])
                .values(status=JobStatus.QUEUED, cancel_requested=False, finished_at=None)
            )
            session.commit()
    else:
        admin = api.request(method, url, headers=_h(keys["root"]), **request)
        assert admin.status_code == mine.status_code, admin.text


def test_lists_show_only_the_owners_jobs(
    api: httpx.Client, keys: dict[str, str], alice_jobs: dict[str, str]
) -> None:
    def ids(key: str, **params: Any) -> set[str]:
        r = api.get("/jobs", params={"limit": 500, **params}, headers=_h(key))
        assert r.status_code == 200, r.text
        return {row["id"] for row in r.json()["data"]}

    mine = set(alice_jobs.values())
    assert mine <= ids(keys["alice"])
    assert not mine & ids(keys["bob"])
    assert mine <= ids(keys["root"])
    assert ids(keys["bob"], parent_id=alice_jobs["suite"]) == set()
    assert ids(keys["bob"], status="succeeded") & mine == set()
    rows = api.get("/jobs", params={"limit": 500}, headers=_h(keys["root"])).json()["data"]
    assert {r["owner"] for r in rows if r["id"] in mine} == {"alice"}  # an admin sees whose they are
    suite = api.get(f"/jobs/{alice_jobs['suite']}", headers=_h(keys["alice"])).json()
    assert suite["owner"] == "alice"
    assert [s["job_id"] for s in suite["suite"]["sub_jobs"]] == [alice_jobs["train"]]


def test_suite_reuse_never_hands_one_owners_job_to_another(
    api: httpx.Client, auth_pg: str, keys: dict[str, str]
) -> None:
    """The same suite from two owners: each gets sub-jobs of its own (reuse is within an owner);
    the same owner resubmitting reuses its own."""
    body = {"suite": "fig3b", "smoke": True}
    sub_jobs = {}
    suites = []
    for who in ("alice", "bob", "alice"):
        r = api.post("/jobs/suite", json=body, headers=_h(keys[who]))
        assert r.status_code == 202, r.text
        suites.append((who, r.json()["id"]))
        sub_jobs.setdefault(who, []).append({s["job_id"] for s in r.json()["suite"]["sub_jobs"]})
    try:
        assert sub_jobs["alice"][0] and not sub_jobs["alice"][0] & sub_jobs["bob"][0]
        assert sub_jobs["alice"][1] == sub_jobs["alice"][0]
        with Session(make_engine(auth_pg)) as session:
            owners = dict(
                session.execute(select(Job.id, Job.owner).where(Job.id.in_(sub_jobs["bob"][0]))).all()
            )
        assert set(owners.values()) == {"bob"}
    finally:
        for who, suite_id in reversed(suites):
            api.post(f"/jobs/{suite_id}/cancel", headers=_h(keys[who]))


def test_no_key_and_bad_keys_are_401_with_a_challenge(api: httpx.Client, auth_pg: str) -> None:
    before = _rows(auth_pg)
    for headers in ({}, _h("ctrw_not-a-key"), {"Authorization": "Basic YWxpY2U6eA=="}):
        for method, path in (("GET", "/jobs"), ("POST", "/jobs/train"), ("POST", "/admin/requeue-stale")):
            r = api.request(method, path, headers=headers, json=TINY_TRAIN if path == "/jobs/train" else None)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert "key" in r.json()["detail"]
    assert _rows(auth_pg) == before
    # Probes and the docs stay open (orchestrators and browsers call them without a key).
    assert api.get("/healthz").status_code == 200
    assert api.get("/openapi.json").status_code == 200


def test_admin_routes_need_an_admin_key(api: httpx.Client, keys: dict[str, str]) -> None:
    r = api.post("/admin/requeue-stale", headers=_h(keys["alice"]))
    assert r.status_code == 403 and "admin" in r.json()["detail"], r.text
    assert api.post("/admin/requeue-stale", headers=_h(keys["root"])).status_code == 200


def test_keys_cli_and_revocation_takes_effect_at_once(
    api: httpx.Client, settings: Settings, auth_pg: str
) -> None:
    env = settings_env(settings)
    cli = str(BIN / "ctrw-service")
    out = subprocess.run([cli, "keys", "create", "--owner", "carol"], env=env, capture_output=True, text=True,
                         timeout=60, check=True)  # fmt: skip
    key = out.stdout.strip()
    assert key.startswith(auth.KEY_PREFIX) and len(key) > 40
    with Session(make_engine(auth_pg)) as session:
        row = session.scalar(select(ApiKey).where(ApiKey.owner == "carol"))
        assert row is not None and row.key_hash == hashlib.sha256(key.encode()).hexdigest()
        stored = " ".join(str(v) for v in session.execute(select(ApiKey.__table__)).all())
    assert key not in stored  # only the hash
    listed = subprocess.run(
        [cli, "keys", "list"], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert row.id in listed.stdout and key not in listed.stdout
    assert api.get("/jobs", headers=_h(key)).status_code == 200
    subprocess.run([cli, "keys", "revoke", row.id], env=env, capture_output=True, timeout=60, check=True)
    r = api.get("/jobs", headers=_h(key))  # the very next request
    assert r.status_code == 401 and "revoked" in r.json()["detail"], r.text


def test_quota_is_429_and_changes_nothing(settings: Settings, auth_pg: str, keys: dict[str, str]) -> None:
    with in_process_api(settings.model_copy(update={"max_active_jobs_per_owner": QUOTA})) as api:
        created = []
        try:
            for _ in range(QUOTA):
                r = api.post("/jobs/train", json=TINY_TRAIN, headers=_h(keys["dora"]))
                assert r.status_code == 202, r.text
                created.append(r.json()["id"])
            before = _rows(auth_pg)
            for path, body in (("/jobs/train", TINY_TRAIN), ("/jobs/suite", {"suite": "fig3b", "smoke": True})):  # fmt: skip
                r = api.post(path, json=body, headers=_h(keys["dora"]))
                assert r.status_code == 429, r.text
                assert (
                    f"{QUOTA} unfinished jobs" in r.json()["detail"]
                    and "CTRW_MAX_ACTIVE_JOBS_PER_OWNER" in r.json()["detail"]
                )
            assert _rows(auth_pg) == before
            # Another owner is not affected; a finished job frees a place.
            r = api.post("/jobs/train", json=TINY_TRAIN, headers=_h(keys["bob"]))
            assert r.status_code == 202, r.text
            api.post(f"/jobs/{r.json()['id']}/cancel", headers=_h(keys["bob"]))
            assert api.post(f"/jobs/{created.pop()}/cancel", headers=_h(keys["dora"])).status_code == 202
            r = api.post("/jobs/train", json=TINY_TRAIN, headers=_h(keys["dora"]))
            assert r.status_code == 202, r.text
            created.append(r.json()["id"])
        finally:
            for job_id in created:
                api.post(f"/jobs/{job_id}/cancel", headers=_h(keys["dora"]))


def test_rate_limit_is_429_per_key_and_changes_nothing(
    settings: Settings, auth_pg: str, keys: dict[str, str]
) -> None:
    with in_process_api(settings.model_copy(update={"rate_limit_per_minute": 4})) as client:
        for _ in range(4):
            assert client.get("/jobs", headers=_h(keys["bob"])).status_code == 200
        before = _rows(auth_pg)
        r = client.post("/jobs/train", json=TINY_TRAIN, headers=_h(keys["bob"]))
        assert r.status_code == 429, r.text
        assert "rate limit" in r.json()["detail"] and int(r.headers["Retry-After"]) >= 1
        assert _rows(auth_pg) == before
        assert client.get("/jobs", headers=_h(keys["alice"])).status_code == 200  # per key


def test_serve_refuses_a_public_address_without_keys(tmp_path: Path, fast_settings: Any) -> None:
    settings = fast_settings(tmp_path)
    out = subprocess.run(
        [str(BIN / "ctrw-service"), "serve", "--host", "0.0.0.0", "--port", "1", "--no-worker"],
        env=settings_env(settings), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "refusing to listen on 0.0.0.0 without API keys" in out.stderr
    assert "ctrw-service keys create" in out.stderr


def test_loopback_without_keys_needs_none_and_jobs_are_the_local_owners(
    processes: Any, tmp_path: Path, fast_settings: Any
) -> None:
    """The zero-setup default (SQLite, embedded, no keys): no key needed; `CTRW_AUTH=required`
    asks for one even there."""
    settings = fast_settings(tmp_path)
    client = processes.api(settings)
    r = client.post("/jobs/train", json=TINY_TRAIN)
    assert r.status_code == 202, r.text
    assert client.post(f"/jobs/{r.json()['id']}/cancel").status_code == 202
    assert client.post("/admin/requeue-stale").status_code == 200
    with Session(make_engine(settings.database_url)) as session:
        assert session.get(Job, r.json()["id"]).owner == auth.LOCAL_OWNER  # type: ignore[union-attr]
    strict = processes.api(settings.model_copy(update={"auth": "required"}))
    r = strict.get("/jobs")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer"), r.text


def test_bootstrap_admin_key_is_stored_by_migrate(processes: Any, tmp_path: Path, fast_settings: Any) -> None:
    """docker-compose's first key: CTRW_BOOTSTRAP_ADMIN_KEY from .env, stored (hashed) by `migrate`."""
    key = "ctrw_" + uuid.uuid4().hex + uuid.uuid4().hex
    settings = fast_settings(tmp_path, bootstrap_admin_key=key)
    for _ in range(2):  # idempotent: a restarted migrate adds nothing
        subprocess.run(
            [str(BIN / "ctrw-service"), "migrate"], env=settings_env(settings), check=True, timeout=120
        )
    with Session(make_engine(settings.database_url)) as session:
        (row,) = auth.list_keys(session=session)
    assert (row.owner, row.admin, row.key_hash) == ("admin", True, hashlib.sha256(key.encode()).hexdigest())
    client = processes.api(settings)
    assert client.get("/jobs").status_code == 401  # a key exists: required now, even on loopback
    assert client.post("/admin/requeue-stale", headers=_h(key)).status_code == 200


def _outside_address() -> str | None:
    """A non-loopback address of this machine (None where it has none)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("203.0.113.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if auth.is_loopback(address) else address


def test_uvicorn_started_by_hand_on_all_interfaces_still_wants_a_key_from_the_network(
    processes: Any, tmp_path: Path, fast_settings: Any, wait_for: Any
) -> None:
    """Without `serve` (no refusal at start) and with no keys: a request that reaches the API on a
    non-loopback address is 401; one on loopback is the zero-setup local owner."""
    outside = _outside_address()
    if outside is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    settings = fast_settings(tmp_path)
    upgrade(settings)
    port = processes.free_port()
    args = [
        str(BIN / "uvicorn"),
        "--factory",
        "app.main:create_app",
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
    ]
    proc = processes.start("uvicorn", args, settings)

    def up() -> bool:
        assert proc.poll() is None, processes.logs()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, timeout=60, what="uvicorn")
    assert httpx.get(f"http://127.0.0.1:{port}/jobs").status_code == 200
    r = httpx.get(f"http://{outside}:{port}/jobs")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer"), r.text
