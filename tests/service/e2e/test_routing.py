"""Routing end to end (PostgreSQL, Redis, a real Celery worker that serves the cpu and gpu
queues): a job that needs 4 GPUs stays queued, in its own queue, saying what it waits for, while
a one-device job runs; it can be cancelled; bad resources are a 422 naming the field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from app.core.queue import WorkerRegistry, make_in_flight

pytestmark = [pytest.mark.service, pytest.mark.slow]

WAITING = "waiting for a worker with 4 GPUs (queue gpu-x4): none has subscribed"


def test_a_job_no_worker_can_serve_stays_queued_with_a_message_and_can_be_cancelled(
    pg_migrated: str,
    redis_url: str,
    processes: Any,
    fast_settings: Any,
    wait_for: Callable[..., Any],
    tiny_train: dict[str, Any],
) -> None:
    settings = fast_settings(
        processes.tmp, database_url=pg_migrated, broker_url=redis_url, worker_queues="cpu,gpu"
    )
    processes.celery_worker(settings, "w1")
    api = processes.api(settings)
    registry = WorkerRegistry(settings)
    wait_for(lambda: "gpu" in registry.served(), timeout=30, what="the worker's registry entry")

    r = api.post("/jobs/train", json={**tiny_train, "resources": {"gpus": 17}})
    assert r.status_code == 422 and "resources.gpus" in r.json()["message"], r.text

    big = api.post("/jobs/train", json={**tiny_train, "distributed": {"nproc_per_node": 4}})
    assert big.status_code == 202, big.text
    big_id = big.json()["id"]
    assert big.json()["config"]["resources"] == {"gpus": 4, "gpu_kind": None}
    job = api.get(f"/jobs/{big_id}").json()
    assert job["status"] == "queued" and job["progress"]["detail"] == WAITING
    in_flight = make_in_flight(settings)
    assert in_flight is not None and big_id in in_flight()  # its message waits in queue gpu-x4

    small = api.post("/jobs/train", json=tiny_train).json()  # one device: the gpu queue
    done = wait_for(
        lambda: (j := api.get(f"/jobs/{small['id']}").json())["status"] in ("succeeded", "failed") and j,
        timeout=240,
        what="the one-device job",
    )
    assert done["status"] == "succeeded", done["error"]
    job = api.get(f"/jobs/{big_id}").json()
    assert job["status"] == "queued" and job["attempts"] == 0 and job["progress"]["detail"] == WAITING

    r = api.post(f"/jobs/{big_id}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled", r.text
