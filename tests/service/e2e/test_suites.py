"""Every paper suite end to end in its smoke version on digits, through the API, with PostgreSQL,
Redis and two Celery worker processes: the sub-jobs run in parallel on both workers, the tables
have exactly the paper's cells, the figures are real images, a resubmitted suite reuses its
sub-jobs, a cancelled suite cancels its own sub-jobs and resumes when resubmitted. Plus one suite
in the embedded default (SQLite, the local worker). Over 400 lines: the tests share one module-wide
stack that runs every smoke suite once (minutes); a second module would run it again."""

from __future__ import annotations

import io
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.core.db import make_engine, session_factory
from app.core.migrate import upgrade
from app.core.settings import Settings
from app.models import Job, SuiteMember
from app.services import suites
from ctrw.paper import SUITE_NAMES, SuiteRequest

pytestmark = [pytest.mark.service, pytest.mark.slow]

TERMINAL = ("succeeded", "failed", "cancelled")
FIGURES = {"fig3a": ["fig3a"], "fig3b": ["fig3b"], "fig3c": ["fig3c"], "fig3d": ["fig3d"]}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Rows (labels without the model) and the paper's columns of every suite's table.
ROWS: dict[str, list[tuple[str, ...]]] = {
    "table1": [("baseline",), ("without constrain",), ("fixed std",), ("CTRW (ours)",)],
    "table4": [("in-channels",), ("out-channels",), ("both in- and out-channels",), ("filters",)],
    "table5": [()],
    "table6": [("CIFAR10", "with (ours)"), ("CIFAR10", "without"), ("CIFAR100", "with (ours)"),
               ("CIFAR100", "without")],
    "table7": [("Fixed to lower bound",), ("Fixed to upper bound",), ("Fixed to mid value",), ("CTRW (ours)",)],
    "fig3a": [("1", "CIFAR10", "without"), ("2", "CIFAR100", "without"), ("3", "CIFAR10", "with (CTRW)"),
              ("4", "CIFAR100", "with (CTRW)")],
    "fig3b": [(k,) for k in ("0 x H x W (= 1)", "1/2 x H x W", "1 x H x W", "2 x H x W", "4 x H x W",
                             "6 x H x W", "CTRW (trained)")],
    "fig3c": [("0 (natural)",), ("1",), ("2",), ("3",)],
    "fig3d": [(str(p),) for p in range(6)],
}  # fmt: skip
ROWS["table2"] = ROWS["table1"]
PAPER_COLUMNS = {
    "table1": ["natural", "pgd20", "fgsm", "autoattack", "cw", "mifgsm", "deepfool"],
    "table4": ["natural", "pgd20"],
    "table5": ["natural", "pgd20"],
    "table6": ["positive", "ratio", "min_cos", "acc"],
    "table7": ["pgd20"],
    "fig3a": [],
    "fig3b": ["natural", "pgd20"],
    "fig3c": ["paper"],
    "fig3d": [],
}
PAPER_COLUMNS["table2"] = PAPER_COLUMNS["table1"]
# The suites this module runs: the reproduced tables and figures (the comparison suites, table3,
# imagenet and zoo, have their own module: test_zoo.py).
PAPER_SUITES = tuple(s for s in SUITE_NAMES if s in ROWS)


def _job(api: httpx.Client, job_id: str) -> dict[str, Any]:
    r = api.get(f"/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def _finished(
    api: httpx.Client, ids: list[str], wait_for: Callable[..., Any], timeout: float
) -> dict[str, Any]:
    def all_done() -> dict[str, Any] | None:
        jobs = {i: _job(api, i) for i in ids}
        return jobs if all(j["status"] in TERMINAL for j in jobs.values()) else None

    return wait_for(all_done, timeout=timeout, what=f"{len(ids)} suites", interval=1.0)


def _count(url: str, *kinds: str) -> int:
    with make_engine(url).connect() as conn:
        return conn.scalar(select(func.count()).select_from(Job).where(Job.kind.in_(kinds))) or 0


@pytest.fixture(scope="module")
def stack(pg_migrated: str, redis_url: str, module_processes: Any, fast_settings: Any, wait_for: Any) -> Any:
    """The API and two Celery workers; every smoke suite submitted at once and run to the end."""
    settings = fast_settings(module_processes.tmp, database_url=pg_migrated, broker_url=redis_url)
    with pytest.MonkeyPatch.context() as env:
        # Two workers on two cores: one torch thread each, or their OpenMP threads spin against
        # each other (a GPU host runs one worker per GPU and does not need this).
        env.setenv("OMP_NUM_THREADS", "1")
        module_processes.celery_workers(settings, ["w1", "w2"])
    api = module_processes.api(settings)
    suites = {}
    for name in PAPER_SUITES:
        r = api.post("/jobs/suite", json={"suite": name, "smoke": True})
        assert r.status_code == 202, r.text
        assert r.headers["location"] == f"/jobs/{r.json()['id']}"
        suites[name] = r.json()
    # While it runs: the aggregate progress, and no results yet.
    early = _job(api, suites["fig3b"]["id"])
    assert early["kind"] == "suite" and early["status"] in ("waiting", "queued", "running", "succeeded")
    if early["status"] == "waiting":
        assert early["progress"]["phase"] == "sub-jobs" and 0 <= early["progress"]["percent"] < 100
        assert api.get(f"/jobs/{early['id']}/results").status_code == 409
    assert early["suite"]["total"] == 7 and sum(early["suite"]["counts"].values()) == 7
    try:
        done = _finished(api, [s["id"] for s in suites.values()], wait_for, timeout=420)
    except AssertionError:
        print(module_processes.logs())
        raise
    return {
        "api": api,
        "settings": settings,
        "url": pg_migrated,
        "suites": {n: done[s["id"]] for n, s in suites.items()},
    }


def test_every_suite_succeeds_with_the_papers_cells(stack: Any) -> None:
    api = stack["api"]
    for name, suite in stack["suites"].items():
        assert suite["status"] == "succeeded", (name, suite["error"])
        assert suite["suite"]["counts"] == {"succeeded": suite["suite"]["total"]}
        results = api.get(f"/jobs/{suite['id']}/results")
        assert results.status_code == 200, results.text
        body = results.json()
        assert body["suite"] == name and body["missing"] == [] and body["scale"]["datasets"] == ["digits"]
        assert set(body["sub_jobs"].values()) == {s["job_id"] for s in suite["suite"]["sub_jobs"]}
        (table,) = body["tables"].values()
        labels = [tuple(row["labels"][k] for k in table["row_keys"] if k != "model") for row in table["rows"]]
        assert labels == ROWS[name], name
        assert [c["key"] for c in table["columns"] if c["paper"]] == PAPER_COLUMNS[name], name
        for row in table["rows"]:
            assert row["complete"] and row["labels"]["model"] == "ResNet18"
            for column in table["columns"]:
                cell = row["cells"][column["key"]]
                assert cell["ours"] is not None, (name, row["labels"], column["key"])
                if column["kind"] == "accuracy":
                    assert 0 <= cell["ci_low"] <= cell["ours"] <= cell["ci_high"] <= 100 and cell["n"] == 64
    # The paper's numbers beside ours, and an adaptive column.
    t1 = api.get(f"/jobs/{stack['suites']['table1']['id']}/results").json()["tables"]["table1"]
    ctrw = t1["rows"][3]
    assert ctrw["labels"]["method"] == "CTRW (ours)" and ctrw["cells"]["pgd20"]["paper"] == 69.48
    assert t1["columns"][-1] == {"key": "eotpgd", "label": "EOT-PGD (adaptive)", "kind": "accuracy",
                                 "paper": False, "protocol": "adaptive"}  # fmt: skip
    t5 = api.get(f"/jobs/{stack['suites']['table5']['id']}/results").json()["tables"]["table5"]
    assert (
        t5["rows"][0]["cells"]["pgd20"]["std"] is not None
        and t5["rows"][0]["cells"]["pgd20"]["paper_std"] == 0.28
    )
    t6 = api.get(f"/jobs/{stack['suites']['table6']['id']}/results").json()["tables"]["table6"]
    assert t6["rows"][0]["cells"]["positive"]["n"] == 100_000


def test_formats(stack: Any) -> None:
    api, suite_id = stack["api"], stack["suites"]["table1"]["id"]
    md = api.get(f"/jobs/{suite_id}/results", params={"format": "markdown"})
    assert md.headers["content-type"].startswith("text/markdown")
    assert (
        "| model | method | Natural | Natural [paper] |" in md.text
        and "| ResNet18 | CTRW (ours) |" in md.text
    )
    csv_text = api.get(f"/jobs/{suite_id}/results", params={"format": "csv", "table": "table1"}).text
    assert (
        csv_text.splitlines()[0].startswith("model,method,natural_pct,natural_ci_low_pct")
        and len(csv_text.splitlines()) == 5
    )
    assert r"\toprule" in api.get(f"/jobs/{suite_id}/results", params={"format": "latex"}).text
    # Every row carries its sub-job's diagnostics (CW and DeepFool rows: unbounded_attacks), and the
    # fired ones are noted under the Markdown table.
    table = api.get(f"/jobs/{suite_id}/results").json()["tables"]["table1"]
    sub_jobs = api.get(f"/jobs/{suite_id}/results").json()["sub_jobs"]
    for row in table["rows"]:
        names = {d["name"]: d for d in row["diagnostics"]}
        assert {d["source"] for d in row["diagnostics"]} == set(row["sub_jobs"])
        assert names["unbounded_attacks"]["verdict"] and names["unbounded_attacks"]["applicable"]
        job = api.get(f"/jobs/{sub_jobs[row['sub_jobs'][0]]}/results").json()
        assert [(d["name"], d["fired"]) for d in job["diagnostics"]] == [
            (d["name"], d["fired"]) for d in row["diagnostics"]
        ]
        for d in row["diagnostics"]:
            if d["fired"]:
                assert f"{d['name']} FIRED, sub-job {d['source']}" in md.text
    assert "- Diagnostics: " in md.text
    missing = api.get(f"/jobs/{suite_id}/results", params={"table": "table9"})
    assert missing.status_code == 404 and "table1" in missing.json()["detail"]


def test_figures_are_images(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    import matplotlib.image

    api = stack["api"]
    keep = tmp_path_factory.mktemp("figures")
    for suite, names in FIGURES.items():
        suite_id = stack["suites"][suite]["id"]
        links = _job(api, suite_id)["suite"]["figures"]
        assert sorted(links) == names
        for name in names:
            png = api.get(f"/jobs/{suite_id}/figures/{name}", params={"format": "png"})
            assert png.status_code == 200 and png.headers["content-type"] == "image/png"
            assert png.content.startswith(PNG_SIGNATURE) and len(png.content) > 20_000
            (keep / f"{name}.png").write_bytes(png.content)
            pixels = matplotlib.image.imread(io.BytesIO(png.content))  # (H, W, 4) floats in [0, 1]
            assert pixels.shape[0] >= 400 and pixels.shape[1] >= 700
            drawn = (pixels[..., :3] < 0.9).any(axis=-1).mean()
            colored = (pixels[..., :3].max(axis=-1) - pixels[..., :3].min(axis=-1) > 0.3).mean()
            assert drawn > 0.02 and colored > 0.005, (name, drawn, colored)  # axes, text and colored data
            svg = api.get(f"/jobs/{suite_id}/figures/{name}", params={"format": "svg"})
            assert svg.headers["content-type"].startswith("image/svg+xml")
            assert b"<svg" in svg.content[:1000] and svg.content.count(b"<path") > 20
    assert api.get(f"/jobs/{stack['suites']['fig3b']['id']}/figures/nope").status_code == 404
    print(f"figures kept in {keep}")


def test_sub_jobs_ran_in_parallel_on_both_workers(stack: Any) -> None:
    api = stack["api"]
    sub_ids = {s["job_id"] for suite in stack["suites"].values() for s in suite["suite"]["sub_jobs"]}
    subs = [_job(api, i) for i in sub_ids]
    assert all(s["kind"] in ("train", "attack") for s in subs)
    workers = {s["worker"] for s in subs}
    assert len(workers) == 2, workers

    def interval(job: dict[str, Any]) -> tuple[datetime, datetime]:
        return datetime.fromisoformat(job["started_at"]), datetime.fromisoformat(job["finished_at"])

    overlapping = [
        (a["id"], b["id"])
        for a, b in itertools.combinations(subs, 2)
        if a["worker"] != b["worker"] and interval(a)[0] < interval(b)[1] and interval(b)[0] < interval(a)[1]
    ]
    assert overlapping, "no two sub-jobs ran at the same time"
    # Shared sub-jobs: the CTRW reference model is one job in every suite that uses it.
    ctrw = {s["job_id"] for suite in stack["suites"].values() for s in suite["suite"]["sub_jobs"]
            if s["key"] == "resnet18/digits/ctrw"}  # fmt: skip
    assert len(ctrw) == 1
    # Table 2 on digits is Table 1's models again: attached, not created.
    table2 = stack["suites"]["table2"]["suite"]["sub_jobs"]
    assert not any(s["created_by_suite"] for s in table2)


def test_resubmitting_a_finished_suite_creates_no_jobs(stack: Any, wait_for: Callable[..., Any]) -> None:
    api, url = stack["api"], stack["url"]
    before = _count(url, "train", "attack")
    again = {}
    for name in ("table1", "fig3c"):
        r = api.post("/jobs/suite", json={"suite": name, "smoke": True})
        assert r.status_code == 202, r.text
        again[name] = r.json()
    done = _finished(api, [s["id"] for s in again.values()], wait_for, timeout=60)
    assert _count(url, "train", "attack") == before
    for name, suite in again.items():
        assert done[suite["id"]]["status"] == "succeeded"
        old = {s["key"]: s["job_id"] for s in stack["suites"][name]["suite"]["sub_jobs"]}
        assert {s["key"]: s["job_id"] for s in done[suite["id"]]["suite"]["sub_jobs"]} == old
    first = api.get(f"/jobs/{stack['suites']['table1']['id']}/results").json()["tables"]
    assert api.get(f"/jobs/{again['table1']['id']}/results").json()["tables"] == first


def test_cancel_cancels_own_sub_jobs_and_resubmission_resumes(
    stack: Any, wait_for: Callable[..., Any]
) -> None:
    api, url = stack["api"], stack["url"]
    # Two new suites (seed 1) sharing the CTRW model that the first one creates.
    fig3d = api.post("/jobs/suite", json={"suite": "fig3d", "smoke": True, "seed": 1}).json()
    table4 = api.post("/jobs/suite", json={"suite": "table4", "smoke": True, "seed": 1}).json()
    r = api.post(f"/jobs/{fig3d['id']}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled", r.text
    assert api.post(f"/jobs/{fig3d['id']}/cancel").status_code == 409
    subs = {s["key"]: s for s in r.json()["suite"]["sub_jobs"]}
    shared = subs.pop("resnet18/digits/ctrw")
    assert shared["created_by_suite"]
    own = [s["job_id"] for s in subs.values()]

    def settled() -> bool:
        return all(_job(api, i)["status"] in TERMINAL for i in own)

    wait_for(settled, timeout=60, what="the cancelled suite's sub-jobs")
    statuses = [_job(api, i)["status"] for i in own]
    assert "cancelled" in statuses and set(statuses) <= {"cancelled", "succeeded"}, statuses
    # The shared model belongs to table4 too, which goes on and succeeds.
    done = _finished(api, [table4["id"]], wait_for, timeout=120)[table4["id"]]
    assert done["status"] == "succeeded", done["error"]
    assert _job(api, shared["job_id"])["status"] == "succeeded"
    assert api.get(f"/jobs/{fig3d['id']}/results").status_code == 409

    # Resubmitted, the cancelled suite resumes: the same jobs, retried, no new ones.
    before = _count(url, "train", "attack")
    again = api.post("/jobs/suite", json={"suite": "fig3d", "smoke": True, "seed": 1}).json()
    resumed = _finished(api, [again["id"]], wait_for, timeout=120)[again["id"]]
    assert resumed["status"] == "succeeded", resumed["error"]
    assert _count(url, "train", "attack") == before
    assert {s["key"]: s["job_id"] for s in resumed["suite"]["sub_jobs"]} == {
        **{k: s["job_id"] for k, s in subs.items()}, "resnet18/digits/ctrw": shared["job_id"],
    }  # fmt: skip
    retried = [
        _job(api, i)
        for i in own
        if i in {j for j, st in zip(own, statuses, strict=True) if st == "cancelled"}
    ]
    assert all(j["status"] == "succeeded" and j["parent_id"] == again["id"] for j in retried)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"suite": "table8"}, "body.suite"),
        ({"suite": "table1", "epochs": 0}, "body.epochs"),
        ({"suite": "table1", "smoke": True, "dataset": "cifar10"}, "dataset"),
        ({"suite": "table1", "overrides": {"random_weight": {"position": 2}}}, "body.overrides"),
        ({"suite": "table1", "overrides": {"optim": {"epochs": -1}}}, "overrides: optim.epochs"),
    ],
)
def test_bad_suite_request_is_422_naming_the_field(stack: Any, body: dict[str, Any], field: str) -> None:
    r = stack["api"].post("/jobs/suite", json=body)
    assert r.status_code == 422 and field in r.json()["message"], r.text


def test_embedded_mode_runs_a_suite(processes: Any, fast_settings: Any, wait_for: Callable[..., Any]) -> None:
    """The default deployment (SQLite, `ctrw-service serve` with its local worker) runs a suite too."""
    settings = fast_settings(processes.tmp)
    api = processes.api(settings, embedded_worker=True)
    suite = api.post("/jobs/suite", json={"suite": "table5", "smoke": True}).json()
    done = _finished(api, [suite["id"]], wait_for, timeout=240)[suite["id"]]
    assert done["status"] == "succeeded", done["error"]
    assert [s["kind"] for s in done["suite"]["sub_jobs"]] == ["train", "attack"]
    table = api.get(f"/jobs/{suite['id']}/results").json()["tables"]["table5"]
    assert table["rows"][0]["cells"]["natural"]["paper"] == 83.69
    assert table["rows"][0]["cells"]["natural"]["std"] is not None  # two repeats
    # The row carries its sub-job's diagnostics (the attack job's), as that job reports them.
    (key,) = table["rows"][0]["sub_jobs"]
    sub_id = api.get(f"/jobs/{suite['id']}/results").json()["sub_jobs"][key]
    job_diagnostics = api.get(f"/jobs/{sub_id}/results").json()["diagnostics"]
    row_diagnostics = [(d["source"], d["name"], d["fired"]) for d in table["rows"][0]["diagnostics"]]
    assert job_diagnostics and row_diagnostics == [(key, d["name"], d["fired"]) for d in job_diagnostics]
    markdown = api.get(f"/jobs/{suite['id']}/results", params={"format": "markdown"}).text
    assert f"- Diagnostics: {sum(d['fired'] for d in job_diagnostics)} fired" in markdown


def test_failed_sub_job_fails_its_dependents_and_the_suite_which_resumes(
    tmp_path: Any, fast_settings: Any
) -> None:
    """Lifecycle on SQLite, the worker's function called directly: a train sub-job fails, the
    attack waiting for it fails, the suite is assembled from what there is and fails naming both;
    resubmitted, the suite retries the same jobs instead of creating new ones."""
    from app.core.db import session_factory
    from app.core.migrate import upgrade
    from app.models import JobStatus
    from app.services import execution, jobs, scheduling, suites
    from ctrw.paper import SuiteRequest
    from worker.runner import run_job

    settings = fast_settings(tmp_path)
    upgrade(settings)
    sessions = session_factory(settings.database_url)
    request = SuiteRequest(suite="table5", smoke=True)
    sent: list[list[str]] = []
    with sessions() as session:
        suite = suites.create_suite_job(session=session, job_in=request, dispatch_group=sent.append)
        members = {m.key: m.job_id for m in suites.suite_progress(session=session, suite=suite).sub_jobs}
        train_id, attack_id = members["resnet18/digits/ctrw"], members["resnet18/digits/ctrw+repeats2"]
        assert sent == [[train_id]]  # the attack waits for its train job; the suite for both
        assert [jobs.get_job(session=session, job_id=i).status for i in (suite.id, train_id, attack_id)] == [
            JobStatus.WAITING, JobStatus.QUEUED, JobStatus.WAITING,
        ]  # fmt: skip
        assert jobs.get_job(session=session, job_id=attack_id).train_job_id == train_id

        claimed = execution.claim_job(session=session, job_id=train_id, worker="w")
        assert claimed is not None
        execution.finish_job(session=session, job_id=train_id, attempt=1, status=JobStatus.FAILED, error="boom")
        assert scheduling.dispatch_ready(session=session, dispatch_group=None, finished=[train_id]) == [suite.id]
        attack = jobs.get_job(session=session, job_id=attack_id)
        assert attack.status is JobStatus.FAILED and "nothing to attack" in (attack.error or "")
    assert run_job(suite.id, settings=settings) is JobStatus.FAILED
    with sessions() as session:
        failed = jobs.get_job(session=session, job_id=suite.id)
        assert "2 of 2 sub-jobs did not succeed" in (failed.error or "") and "boom" in (failed.error or "")
        results = suites.get_suite_results(session=session, job_id=suite.id)
        assert (
            results.missing == list(members)
            and results.tables["table5"].rows[0].cells["natural"].ours is None
        )

        sent.clear()
        again = suites.create_suite_job(session=session, job_in=request, dispatch_group=sent.append)
        assert {
            m.key: m.job_id for m in suites.suite_progress(session=session, suite=again).sub_jobs
        } == members
        assert sent == [[train_id]]
        train = jobs.get_job(session=session, job_id=train_id)
        assert train.status is JobStatus.QUEUED and train.error is None and train.parent_id == again.id
        assert jobs.get_job(session=session, job_id=attack_id).status is JobStatus.WAITING
        # Cancelling the resubmitted suite cancels the jobs it now owns.
        jobs.cancel_job(session=session, job_id=again.id)
        assert {jobs.get_job(session=session, job_id=i).status for i in (again.id, train_id, attack_id)} == {
            JobStatus.CANCELLED
        }


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_identical_suites_created_at_once_share_their_sub_jobs(
    backend: str, pg_migrated: str, tmp_path: Any
) -> None:
    """The suite-creation lock on each backend (a PostgreSQL advisory lock; SQLite's write lock),
    without HTTP: four threads, four sessions, one suite request."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'ctrw.db'}"
        upgrade(Settings(database_url=url))
    else:
        url = pg_migrated
    sessions = session_factory(url)
    request = SuiteRequest.model_validate({"suite": "table4", "smoke": True, "seed": 4343})
    n = 4
    barrier = threading.Barrier(n)

    def create(_: int) -> str:
        with sessions() as session:
            barrier.wait()
            return suites.create_suite_job(
                session=session, job_in=request, dispatch_group=lambda ids: None
            ).id

    with ThreadPoolExecutor(n) as pool:
        suite_ids = list(pool.map(create, range(n)))
    with sessions() as session:
        rows = session.execute(
            select(SuiteMember.key, Job.id, Job.config_hash)
            .join(Job, Job.id == SuiteMember.job_id)
            .where(SuiteMember.suite_id.in_(suite_ids))
        ).all()
    jobs_per_hash: dict[str, set[str]] = {}
    for _key, job_id, digest in rows:
        jobs_per_hash.setdefault(digest, set()).add(job_id)
    assert len(rows) == n * len(jobs_per_hash) > 0
    assert all(len(ids) == 1 for ids in jobs_per_hash.values()), jobs_per_hash
