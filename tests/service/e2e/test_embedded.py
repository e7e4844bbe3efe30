"""The embedded default: `ctrw-service serve` with SQLite and its own local worker process."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = [pytest.mark.service, pytest.mark.slow]


def test_serve_trains_and_reports(
    processes: Any, fast_settings: Any, wait_for: Callable[..., Any], tiny_train: dict[str, Any]
) -> None:
    settings = fast_settings(processes.tmp)
    assert settings.embedded and settings.database_url.startswith("sqlite")
    api = processes.api(settings, embedded_worker=True)
    assert api.get("/readyz").json() == {"status": "ok", "checks": {"database": "ok"}}
    job_id = api.post("/jobs/train", json=tiny_train).json()["id"]
    job = wait_for(lambda: (j := api.get(f"/jobs/{job_id}").json())["status"] not in ("queued", "running") and j,
                   timeout=240, what="the embedded job")  # fmt: skip
    assert job["status"] == "succeeded", job["error"]
    table = api.get(f"/jobs/{job_id}/results").json()
    assert [c["key"] for c in table["columns"]] == ["clean (paper)", "pgd3 (paper)"]
    markdown = api.get(f"/jobs/{job_id}/results", params={"format": "markdown"}).text
    assert "| small_cnn (width 0.25) | ctrw | best |" in markdown
    sigma = api.get(f"/jobs/{job_id}/sigma").json()
    assert len(sigma["epochs"]) == 3 and sigma["layers"]


def test_stopping_the_service_requeues_and_restart_resumes(
    processes: Any, fast_settings: Any, wait_for: Callable[..., Any], slow_train: Any
) -> None:
    settings = fast_settings(processes.tmp)
    api = processes.api(settings, embedded_worker=True)
    epochs = 10
    job_id = api.post("/jobs/train", json={**slow_train(epochs), "evaluation": None}).json()["id"]
    wait_for(lambda: api.get(f"/jobs/{job_id}/epochs").json()["count"] >= 2, timeout=120, what="two epochs")
    serve = processes.procs[-1][0]
    serve.send_signal(signal.SIGTERM)  # the worker stops at the next batch and requeues its job
    serve.wait(timeout=60)

    api = processes.api(settings, embedded_worker=True)
    stopped = api.get(f"/jobs/{job_id}").json()
    assert stopped["attempts"] == 1 and stopped["status"] in ("queued", "running")
    job = wait_for(lambda: (j := api.get(f"/jobs/{job_id}").json())["status"] == "succeeded" and j,
                   timeout=240, what="the resumed job")  # fmt: skip
    assert job["attempts"] == 2
    assert [e["epoch"] for e in api.get(f"/jobs/{job_id}/epochs").json()["data"]] == list(
        range(1, epochs + 1)
    )
