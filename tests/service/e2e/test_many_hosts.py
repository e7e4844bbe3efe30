"""Many hosts: the API and two Celery workers that share nothing but PostgreSQL, Redis and an S3 store
(a real SeaweedFS; each "host" has its own runs directory, `CTRW_ARTIFACTS_URL=s3://...`). A worker
SIGKILLed mid-training loses nothing: the other host resumes the job from the checkpoint in the
store, to the numbers of an uninterrupted run, and the API serves the artifacts from the store."""

from __future__ import annotations

import hashlib
import json
import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.artifacts import make_store
from app.core.db import session_factory
from app.core.settings import Settings
from app.services import records
from tests.support.servers import S3Server

pytestmark = [pytest.mark.service, pytest.mark.slow]

TERMINAL = ("succeeded", "failed", "cancelled")


def _host(processes: Any, fast_settings: Any, name: str, **shared: Any) -> Settings:
    """One host's settings: its own runs and data directories, the shared services."""
    root = processes.tmp / name
    return fast_settings(root, runs_dir=root / "runs", data_dir=root / "data", **shared)


def _finished(api: httpx.Client, job_id: str, wait_for: Callable[..., Any]) -> dict[str, Any]:
    return wait_for(lambda: (j := api.get(f"/jobs/{job_id}").json())["status"] in TERMINAL and j,
                    timeout=240, what=f"job {job_id}")  # fmt: skip


def _outcome(url: str, job_id: str) -> dict[str, Any]:
    """What a job computed, without timings: per-epoch metrics, result rows, σ statistics."""
    with session_factory(url)() as session:
        epochs = [(e.epoch, e.lr, e.train_loss, e.train_adv_acc, e.val_clean_acc, e.val_pgd_acc, e.sigma_sum)
                  for e in records.list_epochs(session=session, job_id=job_id)]  # fmt: skip
        rows = [
            (r.attack, r.protocol, r.accuracy, r.n)
            for r in records.list_results(session=session, job_id=job_id)
        ]
        sigma = [(s.layer, s.sigma_sum) for s in records.list_sigma_stats(session=session, job_id=job_id)]
        artifacts = {
            a.kind: (a.path, a.sha256) for a in records.list_artifacts(session=session, job_id=job_id)
        }
    return {"epochs": epochs, "rows": rows, "sigma": sigma, "artifacts": artifacts}


def test_killed_host_job_finishes_on_another_from_the_store(
    pg_migrated: str,
    redis_url: str,
    s3_server: S3Server,
    processes: Any,
    fast_settings: Any,
    wait_for: Callable[..., Any],
    slow_train: Any,
) -> None:
    shared = {"database_url": pg_migrated, "broker_url": redis_url, "s3_endpoint_url": s3_server.endpoint_url,
              "artifacts_url": f"s3://{s3_server.bucket}/hosts-{uuid.uuid4().hex[:8]}"}  # fmt: skip
    host_a, host_b = (_host(processes, fast_settings, n, **shared) for n in ("host-a", "host-b"))
    api_host = _host(processes, fast_settings, "api-host", **shared)
    store = make_store(api_host)
    worker_a = processes.celery_worker(host_a, "host-a")
    api = processes.api(api_host)
    epochs = 8

    reference = api.post("/jobs/train", json=slow_train(epochs)).json()["id"]
    assert _finished(api, reference, wait_for)["status"] == "succeeded"

    job_id = api.post("/jobs/train", json=slow_train(epochs)).json()["id"]
    last_url = store.url(f"{job_id}/last.safetensors")
    wait_for(
        lambda: len(api.get(f"/jobs/{job_id}/epochs").json()["data"]) >= 2, timeout=120, what="two epochs"
    )
    # An epoch is reported only once its checkpoint is in the store.
    assert store.exists(last_url)
    worker_a.send_signal(signal.SIGKILL)
    worker_a.wait()
    interrupted = api.get(f"/jobs/{job_id}").json()
    assert interrupted["status"] == "running"
    assert len(api.get(f"/jobs/{job_id}/epochs").json()["data"]) < epochs
    assert not (host_b.runs_dir / job_id).exists()  # nothing of the job on host B's disk

    # Host B finds the heartbeat stale, requeues the job and resumes it from the store's checkpoint.
    processes.celery_worker(host_b, "host-b")
    done = _finished(api, job_id, wait_for)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 2 and done["worker"] != interrupted["worker"]
    log_b = (processes.tmp / "host-b.log").read_text(errors="replace")
    assert f"job {job_id}: resuming from the stored checkpoint of epoch" in log_b, processes.logs()
    mine, theirs = _outcome(pg_migrated, job_id), _outcome(pg_migrated, reference)
    assert {k: mine[k] for k in ("epochs", "rows", "sigma")} == {
        k: theirs[k] for k in ("epochs", "rows", "sigma")
    }
    assert [e[0] for e in mine["epochs"]] == list(range(1, epochs + 1))

    # Every artifact is in the store, recorded with the digest of its bytes there.
    kinds = set(mine["artifacts"])
    assert {"best_checkpoint", "last_checkpoint", "figure:curves.png"} <= kinds, kinds
    for kind, (url, sha256) in mine["artifacts"].items():
        assert url.startswith(shared["artifacts_url"] + f"/{job_id}/"), (kind, url)
        assert store.head(url) is not None and store.head(url).sha256 == sha256, kind
    # The API reads from the store: its own runs directory holds no job.
    for which in ("best", "last"):
        r = api.get(f"/jobs/{job_id}/checkpoint", params={"which": which})
        assert r.status_code == 200, r.text
        assert (
            hashlib.sha256(r.content).hexdigest()
            == r.headers["x-content-sha256"]
            == mine["artifacts"][f"{which}_checkpoint"][1]
        )
    figure = api.get(f"/jobs/{job_id}/figures/curves", params={"format": "png"})
    assert figure.status_code == 200 and figure.content.startswith(b"\x89PNG")
    assert not any(p.is_dir() for p in Path(api_host.runs_dir).glob("*")), list(
        Path(api_host.runs_dir).iterdir()
    )

    # The store alone says what each file is: run.json, written when the job ended.
    def run_record() -> dict[str, Any] | None:
        with session_factory(pg_migrated)() as session:
            found = records.list_artifacts(session=session, job_id=job_id, prefix="metadata")
        return json.loads(b"".join(store.open(found[0].path))) if found else None

    record = wait_for(run_record, timeout=30, what="the run record")
    assert record["status"] == "succeeded" and record["attempts"] == 2
    assert record["artifacts"]["last_checkpoint"]["sha256"] == mine["artifacts"]["last_checkpoint"][1]

    # An attack job on the reference (trained on host A) runs on host B from the stored checkpoint.
    attack = api.post("/jobs/attack", json={"train_job_id": reference, "evaluation": {
        "attacks": [{"name": "clean"}], "n_examples": 16, "score_draws": 1, "diagnostics": False}}).json()  # fmt: skip
    assert _finished(api, attack["id"], wait_for)["status"] == "succeeded"
    cached = host_b.runs_dir / reference / "best.safetensors"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == theirs["artifacts"]["best_checkpoint"][1]
