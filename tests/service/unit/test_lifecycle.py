"""The job state machine in-process (SQLite in a temporary directory, no service processes):
every (from, to) pair of statuses through the one `transition`, allowed or refused."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import session_factory
from app.core.migrate import upgrade
from app.core.settings import Settings
from app.models import Job, JobKind, JobStatus, utcnow
from app.services.lifecycle import ACTIVE, ALLOWED_TRANSITIONS, TERMINAL, transition

W, Q, R = JobStatus.WAITING, JobStatus.QUEUED, JobStatus.RUNNING
S, F, C = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED
# Written out once more on purpose: a change to the state machine must be a change to this too.
EDGES = {
    (W, Q), (W, C), (W, F),  # its dependencies finished (failed: nothing to attack), or cancelled
    (Q, R), (Q, C), (Q, F),  # claimed, cancelled, or the broker was unreachable at submission
    (R, S), (R, F), (R, C), (R, Q),  # finished, or requeued (lost worker, shutdown)
    (F, Q), (F, W), (C, Q), (C, W),  # retried by a resubmitted suite
}  # fmt: skip
PAIRS = list(itertools.product(JobStatus, JobStatus))


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> sessionmaker[Session]:
    url = f"sqlite:///{tmp_path_factory.mktemp('lifecycle') / 'ctrw.db'}"
    upgrade(Settings(database_url=url, broker_url=None))
    return session_factory(url)


@pytest.fixture
def new_job(sessions: sessionmaker[Session]) -> Callable[..., str]:
    def make(status: JobStatus, **values: object) -> str:
        with sessions() as session:
            job = Job(kind=JobKind.TRAIN, status=status, config={}, config_hash="0" * 64, **values)
            session.add(job)
            session.commit()
            return job.id

    return make


def test_the_table_is_the_documented_one() -> None:
    assert {(a, b) for a, targets in ALLOWED_TRANSITIONS.items() for b in targets} == EDGES
    assert set(ALLOWED_TRANSITIONS) == set(JobStatus)
    assert TERMINAL == {S, F, C} and ACTIVE == (W, Q, R)
    assert not ALLOWED_TRANSITIONS[S]  # a succeeded job never changes again


@pytest.mark.parametrize(("start", "to"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_transition(
    start: JobStatus, to: JobStatus, sessions: sessionmaker[Session], new_job: Callable[..., str]
) -> None:
    job_id = new_job(start)
    with sessions() as session:
        moved = transition(session=session, job_id=job_id, to=to)
        assert moved is ((start, to) in EDGES)
        assert session.get(Job, job_id, populate_existing=True).status is (to if moved else start)


def test_stamps(sessions: sessionmaker[Session], new_job: Callable[..., str]) -> None:
    then = utcnow()
    job_id = new_job(Q, dispatched_at=then)
    with sessions() as session:

        def job() -> Job:
            return session.get(Job, job_id, populate_existing=True)

        assert transition(session=session, job_id=job_id, to=R)
        started = job().started_at
        assert started is not None and job().heartbeat_at is not None and job().finished_at is None
        assert transition(session=session, job_id=job_id, to=Q)  # requeued: a new stay in the queue
        assert job().heartbeat_at is None and job().dispatched_at is None
        assert transition(session=session, job_id=job_id, to=R)
        assert job().started_at == started  # the first start is kept
        assert transition(session=session, job_id=job_id, to=F, error="boom")
        assert job().finished_at is not None and job().heartbeat_at is None and job().error == "boom"


def test_conditions_and_the_callers_transaction(
    sessions: sessionmaker[Session], new_job: Callable[..., str]
) -> None:
    job_id = new_job(Q)
    with sessions() as session:
        # An extra condition that does not hold (another attempt's claim): nothing moves.
        assert not transition(session=session, job_id=job_id, to=R, where=(Job.attempts == 7,))
        # commit=False: the caller's transaction decides.
        assert transition(session=session, job_id=job_id, to=C, commit=False)
        session.rollback()
        assert session.get(Job, job_id, populate_existing=True).status is Q
    with sessions() as session:
        assert not transition(session=session, job_id="0" * 32, to=R)  # no such job
