"""Fault injection on the real stack (API, Celery workers, PostgreSQL, Redis): each failure of
issue 11's "lost jobs" and "jobs that never give up" reproduced with real processes, each now
ending with nothing lost and, where results exist, results identical to an uninterrupted run.

Every test has its own PostgreSQL database and its own redis-server (so that a restart or a
reconciliation touches nothing else), and cleans up what it queued.

Over 400 lines: one catalogue of failures sharing this module's private-stack fixtures and
helpers; splitting it would scatter them. The stand-in servers are in tests/support/servers.py.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.engine import make_url

from app.core.db import make_engine, session_factory
from app.core.migrate import upgrade
from app.core.queue import make_in_flight
from app.core.settings import Settings
from app.models import Job
from app.services import records
from tests.support.configs import QUICK_TRAIN
from tests.support.processes import PG_ADMIN_URL
from tests.support.servers import RedisServer, TcpProxy

pytestmark = [pytest.mark.service, pytest.mark.slow]

TERMINAL = ("succeeded", "failed", "cancelled")
# A job's whole run on 2 quiet CPU cores, with room to spare (wait_for scales it by TIME_SCALE).
JOB_TIMEOUT = 120.0
# Two tiny epochs, results (clean + PGD) and σ statistics: a few seconds.


# --------------------------------------------------------------------------- infrastructure


@pytest.fixture
def db_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test only (the reconciliation sweeps every
    queued job of its database)."""
    name = f"ctrw_faults_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is needed (run scripts/services.sh): {exc}", pytrace=False)
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    upgrade(Settings(database_url=url))
    yield url
    make_engine(url).dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def broker(processes: Any, wait_for: Callable[..., Any]) -> Iterator[RedisServer]:
    server = RedisServer(processes.tmp, wait_for)
    yield server
    server.stop()


@pytest.fixture
def settings(
    db_url: str, broker: RedisServer, processes: Any, fast_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    # Workers on 2 shared cores: one torch thread each (and the same arithmetic in every run).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return fast_settings(processes.tmp, database_url=db_url, broker_url=broker.url, max_attempts=2)


def _row(url: str, job_id: str) -> Job:
    """The job's row as the database has it (worker names and counters the API keeps to admins)."""
    with session_factory(url)() as session:
        job = session.get(Job, job_id, populate_existing=True)
        assert job is not None
        return job


def _status(api: httpx.Client, job_id: str) -> dict[str, Any]:
    r = api.get(f"/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def _finished(api: httpx.Client, job_id: str, wait_for: Callable[..., Any]) -> dict[str, Any]:
    return wait_for(
        lambda: (j := _status(api, job_id))["status"] in TERMINAL and j,
        timeout=JOB_TIMEOUT,
        what=f"job {job_id} to finish",
        interval=0.25,
    )


def _submit(api: httpx.Client, config: dict[str, Any]) -> str:
    r = api.post("/jobs/train", json=config)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def _outcome(url: str, job_id: str) -> dict[str, Any]:
    """Everything a job computed, without timings: per-epoch metrics, result rows, σ statistics."""
    with session_factory(url)() as session:
        epochs = [
            {c: getattr(e, c) for c in ("epoch", "lr", "train_loss", "train_clean_acc", "train_adv_acc",
                                        "val_clean_acc", "val_pgd_acc", "sigma_sum", "bound_lower", "bound_upper")}
            for e in records.list_epochs(session=session, job_id=job_id)
        ]  # fmt: skip
        rows = [
            {
                c: getattr(r, c)
                for c in ("attack", "protocol", "accuracy", "n", "ci_low", "ci_high", "repeats")
            }
            for r in records.list_results(session=session, job_id=job_id)
        ]
        sigma = [
            (s.layer, s.sigma_sum, s.table6) for s in records.list_sigma_stats(session=session, job_id=job_id)
        ]
    return {"epochs": epochs, "rows": rows, "sigma": sigma}


def _worker_pid(url: str, job_id: str) -> int:
    worker = _row(url, job_id).worker
    assert worker is not None
    return int(worker.rsplit(":", 1)[1])  # host:pid


def _cancel_unfinished(api: httpx.Client, job_ids: list[str]) -> None:
    for job_id in job_ids:
        if _status(api, job_id)["status"] not in TERMINAL:
            api.post(f"/jobs/{job_id}/cancel")


# --------------------------------------------------------------------------- lost jobs


def test_redis_restart_without_persistence_loses_no_job(
    settings: Settings, broker: RedisServer, processes: Any, wait_for: Callable[..., Any]
) -> None:
    """Queued jobs whose messages vanished with a Redis restart are resent by the reconciliation
    (here the admin endpoint's; the workers' sweeper runs the same) and run once each, with the
    results of a job whose message was never lost."""
    api = processes.api(settings)
    lost = [_submit(api, QUICK_TRAIN) for _ in range(3)]
    in_flight = make_in_flight(settings)
    assert in_flight is not None and set(lost) <= in_flight()
    broker.restart()  # no persistence: the three messages are gone
    assert not set(lost) & in_flight()
    reference = _submit(api, QUICK_TRAIN)  # sent after the restart: never lost

    # The operator's reconciliation resends the lost messages (once they are CTRW_STALE_AFTER_S
    # old), and only those: the reference's message is in the queue.
    resent: set[str] = set()

    def reconciled() -> bool:
        r = api.post("/admin/requeue-stale")
        assert r.status_code == 200, r.text
        resent.update(r.json()["redispatched"])
        return set(lost) <= resent

    wait_for(reconciled, timeout=60, what="the lost jobs to be resent", interval=0.5)
    assert resent == set(lost) and set(lost) | {reference} <= in_flight()
    processes.celery_workers(settings, ["w1"], unique=True)
    for job_id in [reference, *lost]:
        done = _finished(api, job_id, wait_for)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempts"] == 1  # run once, however many messages it had
    expected = _outcome(settings.database_url, reference)
    assert expected["rows"] and len(expected["epochs"]) == 2
    for job_id in lost:
        assert _row(settings.database_url, job_id).dispatched_at is not None
        assert _outcome(settings.database_url, job_id) == expected


def test_reconciliation_with_the_broker_down_keeps_queued_jobs_for_later(
    settings: Settings, broker: RedisServer, processes: Any
) -> None:
    """With Redis down the reconciliation cannot tell which messages are lost: it answers, sends
    nothing and fails nothing; once Redis is back it resends."""
    api = processes.api(settings)
    job_id = _submit(api, QUICK_TRAIN)
    broker.stop()
    with session_factory(settings.database_url)() as session:  # queued long ago, as far as it knows
        long_ago = datetime.now(UTC) - timedelta(seconds=10 * settings.stale_after_s)
        session.execute(update(Job).where(Job.id == job_id).values(dispatched_at=long_ago))
        session.commit()
    r = api.post("/admin/requeue-stale")
    assert r.status_code == 200 and r.json()["redispatched"] == [], r.text
    assert _row(settings.database_url, job_id).status == "queued"
    broker.start()  # empty: the job's message was lost with it
    r = api.post("/admin/requeue-stale")
    assert r.status_code == 200 and r.json()["redispatched"] == [job_id], r.text
    in_flight = make_in_flight(settings)
    assert in_flight is not None and job_id in in_flight()
    assert api.post(f"/jobs/{job_id}/cancel").status_code == 202


def test_api_killed_between_commit_and_send_loses_no_job(
    settings: Settings, broker: RedisServer, processes: Any, wait_for: Callable[..., Any]
) -> None:
    """The API commits the job, then hangs sending its message (a broker that accepts and never
    answers) and is killed there: the job is queued with no message; the workers send it."""
    hung = TcpProxy(("127.0.0.1", broker.port), blackhole=True)
    api_settings = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{hung.port}/0"})
    api = processes.api(api_settings)
    api_proc = processes.procs[-1][0]
    engine = make_engine(settings.database_url)

    def post() -> None:
        try:
            api.post("/jobs/train", json=QUICK_TRAIN, timeout=JOB_TIMEOUT)
        except httpx.TransportError:
            pass  # the API was killed mid-request

    threading.Thread(target=post, daemon=True).start()
    with engine.connect() as conn:
        job_id = wait_for(lambda: conn.scalar(select(Job.id)), timeout=60, what="the committed job")
    api_proc.send_signal(signal.SIGKILL)
    api_proc.wait()
    hung.cut()
    row = _row(settings.database_url, job_id)
    assert row.status == "queued" and row.dispatched_at is None
    in_flight = make_in_flight(settings)
    assert in_flight is not None and job_id not in in_flight()

    processes.celery_workers(settings, ["w1"], unique=True)
    api = processes.api(settings)
    done = _finished(api, job_id, wait_for)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 1 and _outcome(settings.database_url, job_id)["rows"]


def test_worker_cut_off_from_the_database_does_not_acknowledge(
    settings: Settings, processes: Any, wait_for: Callable[..., Any]
) -> None:
    """A worker whose database is unreachable takes messages but cannot claim their jobs: it must
    give the messages back, not acknowledge them. Once the database answers, the jobs run."""
    pg = make_url(settings.database_url)
    proxy = TcpProxy((pg.host or "127.0.0.1", pg.port or 5432))
    via_proxy = pg.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    worker_settings = settings.model_copy(update={"database_url": via_proxy})
    workers = processes.celery_workers(worker_settings, ["w1"], unique=True)
    log = processes.procs[-1][1]
    api = processes.api(settings)
    reference = _submit(api, QUICK_TRAIN)
    assert _finished(api, reference, wait_for)["status"] == "succeeded"

    proxy.cut()  # the worker's database is gone; the API's is not
    jobs = [_submit(api, QUICK_TRAIN) for _ in range(2)]
    # The worker took both messages (the reference's was the first) and could not claim their jobs.
    wait_for(
        lambda: log.read_text(errors="replace").count("] received") >= 3,
        timeout=60,
        what="the worker to take the messages",
    )
    in_flight = make_in_flight(settings)
    assert in_flight is not None
    # Not acknowledged: each message is back in the queue or held by the worker.
    wait_for(lambda: set(jobs) <= in_flight(), timeout=30, what="the messages in the broker")
    assert all(_row(settings.database_url, j).status == "queued" for j in jobs)
    assert workers["w1"].poll() is None

    proxy.restore()
    for job_id in jobs:
        done = _finished(api, job_id, wait_for)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempts"] == 1
        assert _outcome(settings.database_url, job_id) == _outcome(settings.database_url, reference)


# --------------------------------------------------------------------------- jobs that never give up


def test_job_that_kills_its_worker_fails_after_max_attempts(
    settings: Settings, processes: Any, wait_for: Callable[..., Any], slow_train: Any
) -> None:
    """A job whose worker dies under it (SIGKILL, as the kernel's OOM killer does) is requeued
    until it has lost CTRW_MAX_ATTEMPTS (2 here) workers, then fails with the reason."""
    url = settings.database_url
    workers = processes.celery_workers(settings, ["w1", "w2"], unique=True)
    api = processes.api(settings)
    job_id = _submit(api, slow_train(200))
    for attempt in (1, 2):
        pid = wait_for(
            lambda a=attempt: (
                (r := _row(url, job_id)).status == "running" and r.attempts == a and _worker_pid(url, job_id)
            ),
            timeout=JOB_TIMEOUT,
            what=f"attempt {attempt} running",
        )
        victim = next(p for p in workers.values() if p.pid == pid)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    # Both workers are dead; a new one finds the job stale and gives up on it.
    processes.celery_workers(settings, ["w3"], unique=True)
    failed = _finished(api, job_id, wait_for)
    assert failed["status"] == "failed" and "worker lost 2 times" in failed["error"], failed["error"]
    row = _row(url, job_id)
    assert row.attempts == 2 and row.worker_losses == 2
    # The worker is healthy and the failed job stays failed (its old messages are no-ops).
    probe = _submit(api, {**QUICK_TRAIN, "evaluation": None})
    assert _finished(api, probe, wait_for)["status"] == "succeeded"
    assert _row(url, job_id).attempts == 2


def test_sigterm_requeues_at_once_and_the_job_resumes_identically(
    settings: Settings, processes: Any, wait_for: Callable[..., Any], slow_train: Any
) -> None:
    """A warm shutdown (SIGTERM, `docker stop`) interrupts the running job at its next batch and
    requeues it at once, without counting a lost worker; another worker resumes it from its last
    epoch checkpoint to the results of an uninterrupted run."""
    url, epochs = settings.database_url, 8
    workers = processes.celery_workers(settings, ["w1"], unique=True)
    api = processes.api(settings)
    reference = _submit(api, slow_train(epochs))
    assert _finished(api, reference, wait_for)["status"] == "succeeded"

    job_id = _submit(api, slow_train(epochs))
    wait_for(lambda: len(_outcome(url, job_id)["epochs"]) >= 2, timeout=JOB_TIMEOUT, what="two epochs")
    workers["w1"].send_signal(signal.SIGTERM)
    workers["w1"].wait(timeout=60)
    row = _row(url, job_id)
    assert row.status == "queued", row.status  # not left running for the stale timeout
    assert len(_outcome(url, job_id)["epochs"]) < epochs  # the worker did not finish the job first
    assert row.attempts == 1 and row.worker_losses == 0 and row.error is None
    in_flight = make_in_flight(settings)
    assert in_flight is not None and job_id in in_flight()

    processes.celery_workers(settings, ["w2"], unique=True)
    done = _finished(api, job_id, wait_for)
    assert done["status"] == "succeeded", done["error"]
    assert _row(url, job_id).attempts == 2 and _row(url, job_id).worker_losses == 0
    assert _outcome(url, job_id) == _outcome(url, reference)


# --------------------------------------------------------------------------- cancels


def _freeze_in(
    url: str, job_id: str, worker: subprocess.Popen[bytes], phase: Callable[[Job], bool]
) -> Callable[[], str | None]:
    """A wait_for predicate: once the job is in `phase`, stop the worker (SIGSTOP) so that a
    cancel lands there. Returns "frozen", or "missed" if the job finished first."""

    def check() -> str | None:
        job = _row(url, job_id)
        if job.status in TERMINAL:
            return "missed"
        if not phase(job):
            return None
        worker.send_signal(signal.SIGSTOP)
        if _row(url, job_id).status in TERMINAL:
            worker.send_signal(signal.SIGCONT)
            return "missed"
        return "frozen"

    return check


def _cancel_frozen(api: httpx.Client, job_id: str, worker: subprocess.Popen[bytes]) -> httpx.Response:
    """Cancel while the worker is stopped, then let it go on. The stopped worker may hold the job
    row's lock (it was stopped inside a transaction), so the cancel may wait for it: the worker
    is resumed after a second at most either way."""
    answer: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: answer.append(api.post(f"/jobs/{job_id}/cancel")))
    sender.start()
    sender.join(timeout=1.0)
    worker.send_signal(signal.SIGCONT)
    sender.join()
    assert answer, "the cancel request failed"
    return answer[0]


def _results_stored(url: str, n: int) -> Callable[[Job], bool]:
    def done(job: Job) -> bool:
        with session_factory(url)() as session:
            return job.status == "running" and len(records.list_results(session=session, job_id=job.id)) >= n

    return done


def test_cancel_accepted_after_the_last_result_is_honoured(
    settings: Settings, processes: Any, wait_for: Callable[..., Any]
) -> None:
    """Once its last result is stored a job computes its σ statistics and finishes, and neither
    looked at the cancel flag: a cancel answered 202 there must still end the job cancelled (it
    ended succeeded)."""
    url = settings.database_url
    workers = processes.celery_workers(settings, ["w1"], unique=True)
    api = processes.api(settings)
    attacks = len(QUICK_TRAIN["evaluation"]["attacks"])
    for _ in range(4):  # the tail is short: try again if the job finished before the freeze
        job_id = _submit(api, QUICK_TRAIN)
        tail = _freeze_in(url, job_id, workers["w1"], _results_stored(url, attacks))
        if wait_for(tail, timeout=JOB_TIMEOUT, what="the last result", interval=0.01) == "frozen":
            break
    else:
        pytest.fail("never caught a job between its last result and its end")
    r = _cancel_frozen(api, job_id, workers["w1"])
    assert r.status_code == 202 and r.json()["cancel_requested"], r.text
    done = _finished(api, job_id, wait_for)
    assert done["status"] == "cancelled", done
    assert len(_outcome(url, job_id)["rows"]) == attacks  # what it finished is kept


def test_cancel_accepted_during_suite_assembly_is_honoured(
    settings: Settings, processes: Any, wait_for: Callable[..., Any]
) -> None:
    """A suite cancelled while a worker assembles it ends cancelled (it ended succeeded)."""
    url = settings.database_url
    workers = processes.celery_workers(settings, ["w1"], unique=True)
    api = processes.api(settings)
    request = {"suite": "table5", "smoke": True}
    suites = []
    # A resubmitted suite reuses the finished sub-jobs: each try is only an assembly.
    for _ in range(5):
        r = api.post("/jobs/suite", json=request)
        assert r.status_code == 202, r.text
        suite_id = r.json()["id"]
        suites.append(suite_id)
        assembling = _freeze_in(url, suite_id, workers["w1"], lambda j: j.status == "running")
        if wait_for(assembling, timeout=JOB_TIMEOUT, what="the assembly", interval=0.005) == "frozen":
            break
    else:
        pytest.fail("never caught a suite in its assembly")
    r = _cancel_frozen(api, suite_id, workers["w1"])
    assert r.status_code == 202, r.text
    done = _finished(api, suite_id, wait_for)
    assert done["status"] == "cancelled", done["error"]
    assert api.post(f"/jobs/{suite_id}/cancel").status_code == 409
    _cancel_unfinished(api, suites)


def test_cancelling_every_identical_suite_cancels_their_shared_sub_jobs(
    settings: Settings, processes: Any
) -> None:
    """Identical suites share their sub-jobs; cancelling them all, creator first, must cancel the
    shared sub-jobs once the last suite that needs them is cancelled (no worker: all queued).
    A job submitted on its own and reused by a suite is the client's, and is left alone."""
    api = processes.api(settings)
    request = {"suite": "table5", "smoke": True}
    suites = [api.post("/jobs/suite", json=request).json() for _ in range(3)]
    subs = [s["job_id"] for s in suites[0]["suite"]["sub_jobs"]]
    assert all([s["job_id"] for s in x["suite"]["sub_jobs"]] == subs for x in suites[1:])

    for i, suite in enumerate(suites):
        r = api.post(f"/jobs/{suite['id']}/cancel")
        assert r.status_code == 202 and r.json()["status"] == "cancelled", r.text
        statuses = {_status(api, j)["status"] for j in subs}
        # Still needed by the suites not cancelled yet; cancelled with the last one.
        assert statuses == ({"cancelled"} if i == len(suites) - 1 else {"queued", "waiting"}), (i, statuses)

    # A train job submitted by a client, then reused by a suite: the suite's cancel keeps it.
    train = next(s for s in suites[0]["suite"]["sub_jobs"] if s["kind"] == "train")
    own = _submit(api, _status(api, train["job_id"])["config"])
    suite = api.post("/jobs/suite", json=request).json()
    assert own in {s["job_id"] for s in suite["suite"]["sub_jobs"]}
    assert api.post(f"/jobs/{suite['id']}/cancel").status_code == 202
    assert _status(api, own)["status"] == "queued"
    _cancel_unfinished(api, [own, *(s["job_id"] for s in suite["suite"]["sub_jobs"])])
