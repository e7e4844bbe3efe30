"""`dispatch_ready` in-process (SQLite in a temporary directory, no service processes): what
becomes ready when jobs finish, for an attack waiting for its train job, a suite waiting for its
sub-jobs, and a cancelled train job or suite."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session

from app.core.db import session_factory
from app.core.migrate import upgrade
from app.core.queue import DispatchGroup, make_dispatch_group
from app.core.settings import Settings
from app.models import Job, JobKind, JobStatus, SuiteMember
from app.services import jobs
from app.services.lifecycle import transition
from app.services.scheduling import dispatch_ready

W, Q, R = JobStatus.WAITING, JobStatus.QUEUED, JobStatus.RUNNING
S, F, C = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path_factory.mktemp('sched') / 'ctrw.db'}", broker_url=None
    )
    upgrade(settings)
    return settings


@pytest.fixture
def session(settings: Settings) -> Session:
    with session_factory(settings.database_url)() as session:
        yield session


@pytest.fixture
def send(settings: Settings) -> DispatchGroup:
    # Embedded mode's own dispatcher (the local worker polls the database): nothing to mock.
    return make_dispatch_group(settings)


@pytest.fixture
def add(session: Session) -> Callable[..., str]:
    def make(kind: JobKind, status: JobStatus, **values: object) -> str:
        job = Job(kind=kind, status=status, config={}, config_hash="0" * 64, **values)
        session.add(job)
        session.commit()
        return job.id

    return make


def _status(session: Session, job_id: str) -> JobStatus:
    return session.get(Job, job_id, populate_existing=True).status


def _suite(session: Session, add: Callable[..., str]) -> tuple[str, str, str]:
    """A waiting suite with a running train sub-job and an attack sub-job waiting for it."""
    suite = add(JobKind.SUITE, W)
    train = add(JobKind.TRAIN, R, parent_id=suite)
    attack = add(JobKind.ATTACK, W, parent_id=suite, train_job_id=train)
    session.add_all(
        [
            SuiteMember(suite_id=suite, key="train", job_id=train, label="train"),
            SuiteMember(suite_id=suite, key="attack", job_id=attack, label="attack"),
        ]
    )
    session.commit()
    return suite, train, attack


def test_a_waiting_attack_is_queued_when_its_train_job_succeeds(
    session: Session, add: Callable[..., str], send: DispatchGroup
) -> None:
    train = add(JobKind.TRAIN, R)
    attack = add(JobKind.ATTACK, W, train_job_id=train)
    assert dispatch_ready(session=session, dispatch_group=send, finished=[train]) == []  # still running
    assert _status(session, attack) is W
    assert transition(session=session, job_id=train, to=S)
    assert dispatch_ready(session=session, dispatch_group=send, finished=[train]) == [attack]
    queued = session.get(Job, attack, populate_existing=True)
    assert queued.status is Q and queued.dispatched_at is not None  # its message was sent
    # A second finisher (or the sweeper) finds nothing left to do: one conditional UPDATE won.
    assert dispatch_ready(session=session, dispatch_group=send, finished=[train]) == []
    assert dispatch_ready(session=session, dispatch_group=send, finished=None) == []


def test_without_a_dispatcher_the_ready_job_waits_for_the_reconciliation(
    session: Session, add: Callable[..., str]
) -> None:
    train = add(JobKind.TRAIN, S)
    attack = add(JobKind.ATTACK, W, train_job_id=train)
    assert dispatch_ready(session=session, dispatch_group=None, finished=[train]) == [attack]
    queued = session.get(Job, attack, populate_existing=True)
    assert queued.status is Q and queued.dispatched_at is None


def test_requeued_jobs_are_sent_along(session: Session, add: Callable[..., str], send: DispatchGroup) -> None:
    job = add(JobKind.TRAIN, Q)
    assert dispatch_ready(session=session, dispatch_group=send, queued=[job]) == []  # none promoted
    assert session.get(Job, job, populate_existing=True).dispatched_at is not None


def test_a_suite_is_queued_when_its_last_sub_job_finishes(
    session: Session, add: Callable[..., str], send: DispatchGroup
) -> None:
    suite, train, attack = _suite(session, add)
    assert transition(session=session, job_id=train, to=S)
    assert dispatch_ready(session=session, dispatch_group=send, finished=[train]) == [attack]
    assert _status(session, suite) is W  # its attack sub-job is still to run
    assert transition(session=session, job_id=attack, to=R) and transition(
        session=session, job_id=attack, to=S
    )
    assert dispatch_ready(session=session, dispatch_group=send, finished=[attack]) == [suite]
    assert _status(session, suite) is Q


def test_the_backstop_finds_what_a_dead_worker_left_waiting(
    session: Session, add: Callable[..., str], send: DispatchGroup
) -> None:
    """The worker finished its job and died before dispatching: `finished=None` looks at every
    waiting job (the reconciliation)."""
    suite, train, attack = _suite(session, add)
    assert transition(session=session, job_id=train, to=S)
    assert dispatch_ready(session=session, dispatch_group=send, finished=None) == [attack]
    assert transition(session=session, job_id=attack, to=R) and transition(
        session=session, job_id=attack, to=F
    )
    assert dispatch_ready(session=session, dispatch_group=send, finished=None) == [suite]


def test_a_cancelled_train_job_fails_its_attacks_and_the_suite_assembles(
    session: Session, add: Callable[..., str], send: DispatchGroup
) -> None:
    suite, train, attack = _suite(session, add)
    assert transition(session=session, job_id=train, to=C)
    # One call follows the chain: the attack fails (nothing to attack), so the suite is complete.
    assert dispatch_ready(session=session, dispatch_group=send, finished=[train]) == [suite]
    failed = session.get(Job, attack, populate_existing=True)
    assert failed.status is F and f"train job {train} cancelled: nothing to attack" == failed.error
    assert _status(session, suite) is Q


def test_a_cancelled_suite_cancels_its_waiting_sub_jobs_and_nothing_becomes_ready(
    session: Session, add: Callable[..., str], send: DispatchGroup
) -> None:
    suite, train, attack = _suite(session, add)
    jobs.cancel_job(session=session, job_id=suite, dispatch_group=send)
    assert [_status(session, i) for i in (suite, attack)] == [C, C]
    running = session.get(Job, train, populate_existing=True)
    assert running.status is R and running.cancel_requested  # its worker stops it
    assert transition(session=session, job_id=train, to=C)
    assert dispatch_ready(session=session, dispatch_group=send, finished=[train]) == []
    assert dispatch_ready(session=session, dispatch_group=send, finished=None) == []
    assert [_status(session, i) for i in (suite, attack)] == [C, C]
