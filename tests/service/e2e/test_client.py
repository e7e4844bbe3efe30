"""`ctrw.client` and `ctrw-service submit/status/results` against the real service, in both modes:
embedded (SQLite + the local worker process) and Celery (PostgreSQL + Redis + a Celery worker)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctrw.client import APIError, Client, Job
from tests.support.processes import BIN
from tests.support.timing import TIME_SCALE

pytestmark = [pytest.mark.service, pytest.mark.slow]


@pytest.fixture(params=["embedded", "celery"])
def client(request: pytest.FixtureRequest, processes: Any, fast_settings: Any) -> Client:
    if request.param == "embedded":
        api = processes.api(fast_settings(processes.tmp), embedded_worker=True)
    else:
        settings = fast_settings(
            processes.tmp,
            database_url=request.getfixturevalue("pg_migrated"),
            broker_url=request.getfixturevalue("redis_url"),
        )
        processes.celery_worker(settings, "w1")
        api = processes.api(settings)
    with Client(str(api.base_url), timeout=30) as c:
        yield c


def test_train_wait_results_checkpoint(
    client: Client, tiny_train: dict[str, Any], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    job = client.train(tiny_train)
    assert isinstance(job, Job) and job.status == "queued"
    job.wait(progress=True, timeout=240 * TIME_SCALE, interval=0.2)
    assert job.status == "succeeded", job.data["error"]
    bar = capfd.readouterr().err  # tqdm's bar, one per phase, with an ETA
    assert f"{job.id[:8]} done" in bar and "100%" in bar and "eta 00:" in bar

    results = job.results()
    rows = {r["column"]: r for r in results.rows}
    assert set(rows) == {"clean (paper)", "pgd3 (paper)"}
    for row in rows.values():
        assert row["model"] == "small_cnn (width 0.25)" and row["variant"] == "ctrw"
        assert 0.0 <= row["ci_low"] <= row["accuracy"] <= row["ci_high"] <= 1.0 and row["n"] == 64
    assert isinstance(results.diagnostics, list)
    assert [e["epoch"] for e in job.epochs()] == [1, 2, 3]
    sigma = job.sigma()
    assert len(sigma["epochs"]) == 3 and sigma["layers"]

    path = job.download_checkpoint(tmp_path / "best.safetensors")
    served = client.request("GET", f"/jobs/{job.id}/checkpoint")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == served.headers["X-Content-SHA256"]
    assert path.read_bytes() == served.content
    assert not (tmp_path / "best.safetensors.partial").exists()


def test_errors_carry_status_message_and_fields(client: Client, tiny_train: dict[str, Any]) -> None:
    with pytest.raises(APIError) as err:
        client.train({**tiny_train, "optim": {**tiny_train["optim"], "epochs": -1}})
    assert err.value.status_code == 422
    assert err.value.fields == ["body.optim.epochs"]
    assert "body.optim.epochs" in err.value.message
    with pytest.raises(APIError) as err:
        client.job("0123456789abcdef")
    assert err.value.status_code == 404 and "not found" in err.value.message


def test_jobs_pages_and_cancel(client: Client, tiny_train: dict[str, Any]) -> None:
    # Three jobs that wait long enough to be cancelled (the worker takes one at a time).
    slow = {**tiny_train, "optim": {**tiny_train["optim"], "epochs": 200, "milestones": [100]}}
    submitted = [client.train({**slow, "seed": i}) for i in range(3)]
    try:
        # Newest first, one job a page, following next_cursor (the session's database may hold
        # older jobs of other tests: they come after ours, each once).
        listed = [j.id for j in client.jobs(kind="train", page_size=1)]
        assert listed[:3] == [j.id for j in reversed(submitted)] and len(set(listed)) == len(listed)
        assert [j.id for j in client.jobs(page_size=2, limit=2)] == listed[:2]
        # A job that has not finished has no results yet: 409 with its status.
        with pytest.raises(APIError) as err:
            submitted[-1].results()
        assert err.value.status_code == 409 and err.value.job_status in ("queued", "running")
    finally:
        for job in submitted:
            job.cancel()
    for job in submitted:
        job.wait(progress=False, timeout=60 * TIME_SCALE, interval=0.2, check=False)
        assert job.status == "cancelled"


def test_cli_submit_status_results(client: Client, tiny_train: dict[str, Any], tmp_path: Path) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(tiny_train))
    env = {**os.environ, "CTRW_API_URL": client.url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "ctrw-service"), *args], env=env, capture_output=True, text=True,
                              timeout=300 * TIME_SCALE)  # fmt: skip

    out = cli("submit", str(config), "--wait")
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.split()[0]
    status = json.loads(cli("status", job_id).stdout)
    assert status["id"] == job_id and status["status"] == "succeeded"
    table = cli("results", job_id, "--format", "markdown").stdout
    assert "| small_cnn (width 0.25) | ctrw | best |" in table
    rows = json.loads(cli("results", job_id, "--format", "json").stdout)["rows"]
    assert rows[0]["cells"]["clean (paper)"]["n"] == 64
    assert cli("results", job_id, "--format", "csv").stdout.count("\n") >= 2

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**tiny_train, "optim": {"epochs": "many"}}))
    out = cli("submit", str(bad))
    assert out.returncode == 2 and "optim.epochs" in out.stderr
    out = cli("status", "0123456789abcdef")
    assert out.returncode == 1 and "error 404" in out.stderr


def test_keys_go_out_as_bearer_and_errors_say_why(
    processes: Any, fast_settings: Any, tiny_train: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With keys stored, the client's key (argument or CTRW_API_KEY) reaches the service as
    `Authorization: Bearer KEY`: its owner's jobs are visible, others' are 404, no key is 401."""
    from sqlalchemy.orm import Session

    from app.core.db import make_engine
    from app.services import auth

    settings = fast_settings(processes.tmp)
    url = str(processes.api(settings).base_url)  # no worker: the job stays queued
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        alice = auth.create_key(session=session, owner="alice")[1]
        bob = auth.create_key(session=session, owner="bob")[1]
    engine.dispose()
    with Client(url, key=alice) as a, Client(url, key=bob) as b:
        job = a.train(tiny_train)
        try:
            assert a.job(job.id).data["owner"] == "alice"
            with pytest.raises(APIError) as err:
                b.job(job.id)
            assert err.value.status_code == 404
            assert [j.id for j in b.jobs()] == []
            monkeypatch.setenv("CTRW_API_KEY", alice)
            with Client(url) as from_env:
                assert from_env.job(job.id).id == job.id
            monkeypatch.delenv("CTRW_API_KEY")
            with Client(url) as anonymous, pytest.raises(APIError) as err:
                anonymous.job(job.id)
            assert err.value.status_code == 401 and "API key" in err.value.message
        finally:
            assert job.cancel().status == "cancelled"
