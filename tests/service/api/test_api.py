"""The HTTP API in-process (TestClient) against real PostgreSQL and Redis (no worker: jobs stay queued here)."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from app.core.db import make_engine, session_factory
from app.models import Artifact, Epoch, Job, JobStatus, Result, SigmaStat, SuiteMember, utcnow
from app.services import execution
from tests.support.api import in_process_api
from tests.support.processes import free_port

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def api(
    pg_migrated: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory, fast_settings: Any
) -> Iterator[httpx.Client]:
    """The API in-process (TestClient) on the session's PostgreSQL and Redis; no worker."""
    with in_process_api(fast_settings(tmp_path_factory.mktemp("api"), database_url=pg_migrated,
                                      broker_url=redis_url)) as client:  # fmt: skip
        yield client


def _row_counts(url: str) -> dict[str, int]:
    with make_engine(url).connect() as conn:
        return {
            m.__tablename__: conn.scalar(select(func.count()).select_from(m))
            for m in (Job, Epoch, Result, SigmaStat, Artifact)
        }


def _with(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    *parents, leaf = path.split(".")
    node = body
    for key in parents:
        node = node[key] if not key.isdigit() else node[int(key)]
    node[int(leaf) if leaf.isdigit() else leaf] = value
    return body


def test_health_and_ready(api: httpx.Client) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/jobs/{id}"), ("get", "/jobs/{id}/results"), ("get", "/jobs/{id}/sigma"), ("get", "/jobs/{id}/epochs"),
     ("get", "/jobs/{id}/checkpoint"), ("post", "/jobs/{id}/cancel")],
)  # fmt: skip
def test_unknown_job_is_404(api: httpx.Client, method: str, path: str) -> None:
    r = api.request(method, path.format(id="0123456789abcdef"))
    assert r.status_code == 404
    assert "not found" in r.json()["detail"]


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("optim.epochs", "many", "body.optim.epochs"),
        ("optim.batch_size", [64], "body.optim.batch_size"),
        ("optim.epochs", 10**6, "body.optim.epochs"),
        ("attack.eps", -0.1, "body.attack.eps"),
        ("evaluation.attacks.1.eps", -1.0, "body.evaluation.attacks.1.eps"),
        ("evaluation.attacks.1.name", "telepathy", "body.evaluation.attacks.1.name"),
        ("model.name", "vgg99", "body.model.name"),
        ("optim.epoch", 3, "body.optim.epoch"),
        ("evaluation.attacks.0.steps", 5, "body.evaluation.attacks.0"),
        ("model", {"name": "resnet50", "width": 0.25}, "body.model"),
        ("device", "warp-drive", "body.device"),
    ],
    ids=["wrong-type", "wrong-type-list", "huge-epochs", "negative-eps", "negative-attack-eps", "unknown-attack",
         "unknown-model", "unknown-field", "param-of-other-attack", "resnet50-width", "unknown-device"],
)  # fmt: skip
def test_bad_train_body_is_422_naming_the_field(
    api: httpx.Client, pg_migrated: str, tiny_train: dict[str, Any], path: str, value: Any, field: str
) -> None:
    before = _row_counts(pg_migrated)
    r = api.post("/jobs/train", json=_with(tiny_train, path, value))
    assert r.status_code == 422, r.text
    assert field in r.json()["message"]
    assert _row_counts(pg_migrated) == before


def test_malformed_and_oversized_bodies(
    api: httpx.Client, pg_migrated: str, tiny_train: dict[str, Any]
) -> None:
    before = _row_counts(pg_migrated)
    r = api.post("/jobs/train", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    big = {**tiny_train, "pad": "x" * 100_000}
    r = api.post("/jobs/train", json=big)
    assert r.status_code == 413 and "exceeds" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the streamed size is what counts
        yield b'{"name": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    r = api.post("/jobs/train", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert _row_counts(pg_migrated) == before


def test_submit_follow_conflict_and_cancel_queued(
    api: httpx.Client, pg_migrated: str, tiny_train: dict[str, Any]
) -> None:
    r = api.post("/jobs/train", json=tiny_train)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/jobs/{job['id']}" == job["links"]["self"]
    assert job["status"] == "queued" and job["kind"] == "train" and job["attempts"] == 0
    assert job["config"]["optim"]["epochs"] == 3 and len(job["config_hash"]) == 64
    assert job["created_at"].endswith("Z") or "+00:00" in job["created_at"]

    listed = api.get("/jobs", params={"status": "queued", "kind": "train", "limit": 1}).json()
    assert listed["count"] >= 1 and len(listed["data"]) == 1
    assert job["id"] in {j["id"] for j in api.get("/jobs", params={"limit": 500}).json()["data"]}
    assert api.get("/jobs", params={"status": "bogus"}).status_code == 422

    r = api.get(f"/jobs/{job['id']}/results")
    assert r.status_code == 409 and r.json()["status"] == "queued"
    before = _row_counts(pg_migrated)
    r = api.post(
        "/jobs/attack", json={"train_job_id": job["id"], "evaluation": {"attacks": [{"name": "fgsm"}]}}
    )
    assert r.status_code == 409 and "queued" in r.json()["detail"]
    r = api.post("/jobs/attack", json={"train_job_id": "nope", "evaluation": {"attacks": [{"name": "fgsm"}]}})
    assert r.status_code == 404
    r = api.post("/jobs/attack", json={"train_job_id": job["id"], "evaluation": {"attacks": []}})
    assert r.status_code == 422 and "body.evaluation.attacks" in r.json()["message"]
    assert _row_counts(pg_migrated) == before

    # A queued job is cancelled at once and never starts (its message becomes a no-op).
    cancelled = api.post(f"/jobs/{job['id']}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] and cancelled["started_at"] is None
    assert api.post(f"/jobs/{job['id']}/cancel").status_code == 409
    table = api.get(f"/jobs/{job['id']}/results").json()
    assert table["status"] == "cancelled" and table["rows"] == []
    assert api.get(f"/jobs/{job['id']}/checkpoint").status_code == 404


def test_per_example_layers_refuse_subset_attacks_under_the_paper_protocol(
    api: httpx.Client, pg_migrated: str, tiny_train: dict[str, Any]
) -> None:
    """A fixed per-example draw fits one batch size; DeepFool and AutoAttack forward shrinking
    subsets. The combination is refused at submission, not after training."""
    body = {**tiny_train, "random_weight": {"per_example": True}}
    body["evaluation"] = {"attacks": [{"name": "pgd", "steps": 2}, {"name": "deepfool"}]}
    before = _row_counts(pg_migrated)
    r = api.post("/jobs/train", json=body)
    assert r.status_code == 422 and "evaluation.attacks.1: deepfool cannot run" in r.json()["message"]
    assert _row_counts(pg_migrated) == before

    body["evaluation"]["attacks"][1]["protocol"] = "adaptive"
    train_id = api.post("/jobs/train", json=body).json()["id"]
    with session_factory(pg_migrated)() as session:  # as if a worker had trained it
        session.execute(update(Job).where(Job.id == train_id).values(status=JobStatus.SUCCEEDED))
        session.commit()
    before = _row_counts(pg_migrated)
    attacks = [{"name": "fgsm"}, {"name": "autoattack"}]
    r = api.post("/jobs/attack", json={"train_job_id": train_id, "evaluation": {"attacks": attacks}})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "evaluation", "attacks", 1, "protocol"]
    assert "autoattack cannot run" in r.json()["message"]
    assert _row_counts(pg_migrated) == before
    attacks[1]["protocol"] = "adaptive"
    r = api.post("/jobs/attack", json={"train_job_id": train_id, "evaluation": {"attacks": attacks}})
    assert r.status_code == 202, r.text
    assert api.post(f"/jobs/{r.json()['id']}/cancel").json()["status"] == "cancelled"


def test_identical_suites_submitted_at_once_share_their_sub_jobs(api: httpx.Client, pg_migrated: str) -> None:
    """Suites reuse sub-jobs by config hash; submitted at the same instant, they must not both
    miss each other's jobs and create duplicates (hours of duplicate training at paper scale)."""
    body = {"suite": "table7", "smoke": True, "seed": 4242}  # a seed no other test uses
    n = 4
    barrier = threading.Barrier(n)

    def submit(_: int) -> httpx.Response:
        barrier.wait()  # the app runs each request in its own thread: n transactions at once
        return api.post("/jobs/suite", json=body)

    with ThreadPoolExecutor(n) as pool:
        responses = list(pool.map(submit, range(n)))
    assert [r.status_code for r in responses] == [202] * n, [r.text for r in responses]
    suite_ids = [r.json()["id"] for r in responses]
    with session_factory(pg_migrated)() as session:
        rows = session.execute(
            select(SuiteMember.suite_id, SuiteMember.key, Job.id, Job.config_hash)
            .join(Job, Job.id == SuiteMember.job_id)
            .where(SuiteMember.suite_id.in_(suite_ids))
        ).all()
    jobs_per_hash: dict[str, set[str]] = {}
    for _suite, _key, job_id, digest in rows:
        jobs_per_hash.setdefault(digest, set()).add(job_id)
    assert len(rows) == n * len(jobs_per_hash) > 0
    assert all(len(ids) == 1 for ids in jobs_per_hash.values()), jobs_per_hash
    for suite_id in suite_ids:  # no worker here: leave nothing queued behind
        api.post(f"/jobs/{suite_id}/cancel")


def test_openapi_documents_the_job_routes(api: httpx.Client) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    for path in ("/jobs/train", "/jobs/attack", "/jobs", "/jobs/{job_id}", "/jobs/{job_id}/results",
                 "/jobs/{job_id}/sigma", "/jobs/{job_id}/epochs", "/jobs/{job_id}/checkpoint",
                 "/jobs/{job_id}/cancel", "/healthz", "/readyz"):  # fmt: skip
        assert path in paths


def test_unreachable_broker_fails_the_job_with_503(
    pg_migrated: str, tmp_path: Path, fast_settings: Any, tiny_train: dict[str, Any]
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with in_process_api(fast_settings(tmp_path, database_url=pg_migrated, broker_url=dead)) as api:
        ready = api.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["broker"].startswith("unreachable")
        r = api.post("/jobs/train", json=tiny_train)
        assert r.status_code == 503 and "broker" in r.json()["detail"]
        failed = api.get("/jobs", params={"status": "failed", "limit": 1}).json()["data"][0]
        assert "broker" in failed["error"]
        # A suite: neither it nor the sub-jobs it created are left waiting for a message never sent.
        r = api.post("/jobs/suite", json={"suite": "table7", "smoke": True, "seed": 503})
        assert r.status_code == 503 and "broker" in r.json()["detail"]
        suite = api.get("/jobs", params={"kind": "suite", "status": "failed", "limit": 1}).json()["data"][0]
        children = api.get("/jobs", params={"parent_id": suite["id"]}).json()
        assert children["count"] == 4 and {j["status"] for j in children["data"]} == {"failed"}


def test_admin_requeues_a_job_whose_worker_died(
    api: httpx.Client, pg_migrated: str, tiny_train: dict[str, Any]
) -> None:
    job_id = api.post("/jobs/train", json=tiny_train).json()["id"]
    with session_factory(pg_migrated)() as session:
        assert execution.claim_job(session=session, job_id=job_id, worker="gone:1")
        session.execute(
            update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(hours=1))
        )
        session.commit()
    assert job_id in api.post("/admin/requeue-stale").json()["requeued"]
    job = api.get(f"/jobs/{job_id}").json()
    assert job["status"] == "queued" and job["attempts"] == 1
    assert api.post(f"/jobs/{job_id}/cancel").json()["status"] == "cancelled"  # no later worker runs it


def test_result_cells_carry_worst_case_majority_and_what_the_ci_covers(
    api: httpx.Client, pg_migrated: str, tiny_train: dict[str, Any]
) -> None:
    """GET /jobs/{id}/results shows the scoring numbers the CLI's JSON has, from rows as the
    evaluation summarizes them (two batches: the CI covers the attack; one batch: it says not)."""
    import torch  # the test process only; the API process never imports torch

    from app.services import records
    from ctrw.evaluation.scoring import RepeatScores, summarize

    def row(attack: str, name: str, batch_sizes: list[int]) -> dict[str, Any]:
        parts = []
        for size in batch_sizes:
            # Draw k misjudges example j when (j + k) % 4 == 0: a quarter of the examples have one
            # wrong draw of K = 3 (worst case 1/4), none loses the vote (majority 1).
            hits = (torch.arange(size) + torch.arange(3).view(3, 1)) % 4 != 0  # (K, B)
            parts.append(RepeatScores.of_batch(hits, hits.sum(0) >= 2, None))
        summary = summarize([RepeatScores.concat(parts)], draws=3, protocol="adaptive", seeds=[0])
        return {
            "attack": attack,
            "name": name,
            "protocol": "adaptive",
            **summary,
            "params": {},
            "seconds": 1.0,
        }

    body = {**tiny_train, "evaluation": {"attacks": [{"name": "pgd", "steps": 2}, {"name": "fgsm"}]}}
    job_id = api.post("/jobs/train", json=body).json()["id"]
    rows = [row("pgd2", "pgd", [16, 16]), row("fgsm", "fgsm", [32])]
    with session_factory(pg_migrated)() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.SUCCEEDED))
        session.commit()
        for r in rows:
            records.upsert_result(session=session, job_id=job_id, row=r)
    cells = api.get(f"/jobs/{job_id}/results").json()["rows"][0]["cells"]
    for r in rows:
        cell = cells[f"{r['attack']} (adaptive)"]
        s = r["scoring"]
        assert (cell["worst_case"], cell["majority"], cell["draws"]) == (s["worst_case"], s["majority"], 3)
        assert cell["worst_case"] == 0.25 and cell["majority"] == 1.0
    assert cells["pgd2 (adaptive)"]["ci_covers_attack_randomness"] is True
    assert cells["fgsm (adaptive)"]["ci_covers_attack_randomness"] is False
