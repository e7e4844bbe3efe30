"""End to end with PostgreSQL, Redis and real Celery worker processes (`celery -A worker.celery_app
worker -Q gpu -P solo -c 1`): train, evaluate, cancel, and survive a worker killed mid-job."""

from __future__ import annotations

import hashlib
import signal
from collections.abc import Callable
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.service, pytest.mark.slow]

TERMINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture
def settings(pg_migrated: str, redis_url: str, processes: Any, fast_settings: Any) -> Any:
    return fast_settings(processes.tmp, database_url=pg_migrated, broker_url=redis_url)


def _job(api: httpx.Client, job_id: str) -> dict[str, Any]:
    r = api.get(f"/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def _finished(
    api: httpx.Client, job_id: str, wait_for: Callable[..., Any], timeout: float = 240
) -> dict[str, Any]:
    return wait_for(
        lambda: (j := _job(api, job_id))["status"] in TERMINAL and j, timeout=timeout, what=f"job {job_id}"
    )


def _epochs(api: httpx.Client, job_id: str) -> list[int]:
    return [e["epoch"] for e in api.get(f"/jobs/{job_id}/epochs").json()["data"]]


def _check_table(table: dict[str, Any], columns: list[str], n: int) -> None:
    assert [c["key"] for c in table["columns"]] == columns
    (row,) = table["rows"]
    assert row["model"] == "small_cnn (width 0.25)" and row["variant"] == "ctrw"
    for key in columns:
        cell = row["cells"][key]
        assert 0.0 <= cell["ci_low"] <= cell["accuracy"] <= cell["ci_high"] <= 1.0 and cell["n"] == n


def test_train_then_attack_end_to_end(
    settings: Any, processes: Any, wait_for: Callable[..., Any], tiny_train: dict[str, Any]
) -> None:
    processes.celery_worker(settings, "w1")
    api = processes.api(settings)
    job = api.post("/jobs/train", json=tiny_train).json()
    job = _finished(api, job["id"], wait_for)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 1 and job["worker"] and job["started_at"] and job["finished_at"]
    assert job["progress"]["phase"] == "done" and job["progress"]["last_metrics"]["epoch"] == 3
    env = job["environment"]
    assert env["torch"] and env["device"] and "code_revision" in env

    assert _epochs(api, job["id"]) == [1, 2, 3]
    table = api.get(f"/jobs/{job['id']}/results").json()
    _check_table(table, ["clean (paper)", "pgd3 (paper)"], n=64)
    assert table["config_hash"] == job["config_hash"]
    assert table["diagnostics"] and {"name", "fired", "verdict"} <= set(table["diagnostics"][0])
    markdown = api.get(f"/jobs/{job['id']}/results", params={"format": "markdown"}).text
    assert "| small_cnn (width 0.25) | ctrw | best |" in markdown and "pgd3 (paper)" in markdown
    csv = api.get(f"/jobs/{job['id']}/results", params={"format": "csv"}).text.splitlines()
    assert csv[0].startswith("model,variant,checkpoint,clean (paper)_pct,") and len(csv) == 2
    assert r"\toprule" in api.get(f"/jobs/{job['id']}/results", params={"format": "latex"}).text

    sigma = api.get(f"/jobs/{job['id']}/sigma").json()
    assert [e["epoch"] for e in sigma["epochs"]] == [1, 2, 3]
    assert all(e["sigma_sum"] > 0 and e["bound_lower"] <= e["bound_upper"] for e in sigma["epochs"])
    assert sigma["layers"] and sigma["layers"][0]["hist_sigma"]["counts"] and sigma["layers"][0]["table6"]

    weights = api.get(f"/jobs/{job['id']}/checkpoint", params={"which": "last"})
    assert weights.status_code == 200 and len(weights.content) > 1000
    assert hashlib.sha256(weights.content).hexdigest() == weights.headers["x-content-sha256"]

    attack = api.post(
        "/jobs/attack",
        json={"train_job_id": job["id"], "evaluation": {"attacks": [{"name": "fgsm"}], "n_examples": 32,
              "score_draws": 2, "checkpoint": "last", "diagnostics": False}},
    )  # fmt: skip
    assert attack.status_code == 202, attack.text
    attack_job = _finished(api, attack.json()["id"], wait_for)
    assert attack_job["status"] == "succeeded", attack_job["error"]
    assert attack_job["kind"] == "attack" and attack_job["train_job_id"] == job["id"]
    table = api.get(f"/jobs/{attack_job['id']}/results").json()
    _check_table(table, ["fgsm (paper)"], n=32)
    assert table["rows"][0]["checkpoint"] == "last"


def test_cancel_queued_and_running(
    settings: Any, processes: Any, wait_for: Callable[..., Any], tiny_train: dict[str, Any], slow_train: Any
) -> None:
    processes.celery_worker(settings, "w1")
    api = processes.api(settings)
    running = api.post("/jobs/train", json=slow_train(200)).json()
    wait_for(lambda: len(_epochs(api, running["id"])) >= 1, timeout=120, what="a first epoch")
    progress = wait_for(
        lambda: (p := _job(api, running["id"])["progress"]) and p["last_metrics"] and p,
        timeout=30,
        what="progress",
    )
    assert progress["phase"] in ("train", "validate") and progress["epochs"] == 200
    assert 0 < progress["percent"] < 100 and progress["last_metrics"]["epoch"] >= 1
    # The solo worker is busy, so this one waits in the queue.
    queued = api.post("/jobs/train", json=tiny_train).json()
    assert _job(api, queued["id"])["status"] == "queued"

    r = api.post(f"/jobs/{queued['id']}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    r = api.post(f"/jobs/{running['id']}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "running" and r.json()["cancel_requested"]

    stopped = _finished(api, running["id"], wait_for, timeout=60)
    assert stopped["status"] == "cancelled" and stopped["error"] is None
    kept = _epochs(api, running["id"])
    assert 1 <= len(kept) < 200 and kept == list(range(1, len(kept) + 1))
    assert api.get(f"/jobs/{running['id']}/checkpoint", params={"which": "last"}).status_code == 200
    assert api.get(f"/jobs/{running['id']}/results").json()["status"] == "cancelled"

    # The worker then receives the cancelled job's message: a no-op, the job never starts.
    probe = api.post("/jobs/train", json={**tiny_train, "evaluation": None}).json()
    assert _finished(api, probe["id"], wait_for)["status"] == "succeeded"
    never = _job(api, queued["id"])
    assert never["status"] == "cancelled" and never["attempts"] == 0 and never["started_at"] is None
    assert _epochs(api, queued["id"]) == []


def test_killed_worker_job_resumes_on_another(
    settings: Any, processes: Any, wait_for: Callable[..., Any], slow_train: Any
) -> None:
    first = processes.celery_worker(settings, "w1")
    api = processes.api(settings)
    epochs = 10
    job = api.post("/jobs/train", json=slow_train(epochs)).json()
    wait_for(lambda: len(_epochs(api, job["id"])) >= 2, timeout=120, what="two epochs")
    first.send_signal(signal.SIGKILL)
    first.wait()
    interrupted = _job(api, job["id"])
    assert interrupted["status"] == "running" and len(_epochs(api, job["id"])) < epochs

    # The new worker finds the job's heartbeat stale, requeues it and resumes from last.safetensors.
    processes.celery_worker(settings, "w2")
    done = _finished(api, job["id"], wait_for)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 2 and done["worker"] != interrupted["worker"]
    assert _epochs(api, job["id"]) == list(range(1, epochs + 1))
    table = api.get(f"/jobs/{job['id']}/results").json()
    assert [c["key"] for c in table["columns"]] == ["clean (paper)", "pgd3 (paper)"]
    assert set(table["rows"][0]["cells"]) == {"clean (paper)", "pgd3 (paper)"}


def test_both_protocols_with_diagnostics_through_the_api(
    settings: Any, processes: Any, wait_for: Callable[..., Any], tiny_train: dict[str, Any]
) -> None:
    """Issue 4: a CTRW model trained on digits, evaluated under the paper and the adaptive
    protocol side by side, with stochastic scoring and the masking diagnostics in the table."""
    tiny_train["evaluation"] = {
        "attacks": [{"name": "clean"}, {"name": "pgd", "steps": 3},
                    {"name": "eotpgd", "steps": 3, "eot_draws": 2, "protocol": "adaptive"}],
        "protocol": "both", "n_examples": 64, "score_draws": 3,
    }  # fmt: skip
    processes.celery_worker(settings, "w1")
    api = processes.api(settings)
    job = _finished(api, api.post("/jobs/train", json=tiny_train).json()["id"], wait_for)
    assert job["status"] == "succeeded", job["error"]
    table = api.get(f"/jobs/{job['id']}/results").json()
    _check_table(
        table,
        ["clean (paper)", "clean (adaptive)", "pgd3 (paper)", "pgd3 (adaptive)", "eotpgd3 (adaptive)"],
        n=64,
    )
    names = {d["name"] for d in table["diagnostics"]}
    assert {"attack_ordering", "steps_sweep", "protocol_gap", "randomness", "zero_gradients"} <= names
    gap = next(d for d in table["diagnostics"] if d["name"] == "protocol_gap")
    assert gap["verdict"]
    markdown = api.get(f"/jobs/{job['id']}/results", params={"format": "markdown"}).text
    assert "pgd3 (adaptive)" in markdown and "eotpgd3 (adaptive)" in markdown
