"""GET /jobs at scale: keyset pages (no duplicates or gaps while jobs are added), the filters,
summary rows without the config, the capped count, and the list queries' use of the list indexes
on PostgreSQL. The service layer runs on SQLite and PostgreSQL, the HTTP API on PostgreSQL."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, delete, event, insert, select, text
from sqlalchemy.engine import make_url

from app.core.db import make_engine, session_factory
from app.core.migrate import upgrade
from app.core.settings import Settings
from app.models import Job, JobKind, JobStatus, utcnow
from app.services import views
from ctrw.config import AttackJobConfig, TrainConfig
from tests.support.api import in_process_api
from tests.support.processes import PG_ADMIN_URL

pytestmark = pytest.mark.service

Inserter = Callable[..., str]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'list.db'}"
        upgrade(Settings(database_url=url))
        return url
    return request.getfixturevalue("pg_migrated")


@pytest.fixture(scope="module")
def api(
    pg_migrated: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory, fast_settings: Any
) -> Iterator[httpx.Client]:
    """The API in-process (TestClient) on the session's PostgreSQL and Redis; no worker."""
    with in_process_api(fast_settings(tmp_path_factory.mktemp("api"), database_url=pg_migrated,
                                      broker_url=redis_url)) as client:  # fmt: skip
        yield client


def _train_config(**overrides: Any) -> dict[str, Any]:
    return TrainConfig.model_validate(overrides).model_dump(mode="json")


@pytest.fixture
def add_job(request: pytest.FixtureRequest) -> Iterator[Callable[[str], Inserter]]:
    """add_job(url)(kind=..., status=..., created_at=..., ...) inserts a job row and returns its id;
    the rows are deleted at the end (attack jobs first: they reference their train job)."""
    made: list[tuple[str, str, str]] = []

    def for_url(url: str) -> Inserter:
        def add(*, kind: JobKind = JobKind.TRAIN, status: JobStatus = JobStatus.SUCCEEDED,
                created_at: datetime | None = None, config: dict[str, Any] | None = None,
                **values: Any) -> str:  # fmt: skip
            job_id = uuid.uuid4().hex
            when = created_at or utcnow()
            row = {"id": job_id, "kind": kind, "status": status, "config": config or {"name": "t"},
                   "config_hash": job_id * 2, "created_at": when, "updated_at": when, **values}  # fmt: skip
            with session_factory(url)() as session:
                session.execute(insert(Job), [row])
                session.commit()
            made.append((url, kind, job_id))
            return job_id

        return add

    yield for_url
    for url in {u for u, _, _ in made}:
        with session_factory(url)() as session:
            for kinds in ((JobKind.ATTACK,), (JobKind.TRAIN,), (JobKind.SUITE,)):
                ids = [i for u, k, i in made if u == url and k in kinds]
                if ids:
                    session.execute(delete(Job).where(Job.id.in_(ids)))
            session.commit()


def _walk(
    url: str, limit: int, between_pages: Callable[[], None] = lambda: None, **filters: Any
) -> list[str]:
    """Every page with next_cursor; `between_pages` runs after each page."""
    out: list[str] = []
    cursor = None
    while True:
        with session_factory(url)() as session:
            page = views.list_jobs(session=session, limit=limit, cursor=cursor, **filters)
        assert len(page.rows) <= limit
        out += [r["id"] for r in page.rows]
        between_pages()
        if page.next_cursor is None:
            return out
        assert len(page.rows) == limit
        cursor = page.next_cursor


def _newest_first(url: str, *where: Any) -> list[str]:
    with session_factory(url)() as session:
        return list(
            session.scalars(select(Job.id).where(*where).order_by(Job.created_at.desc(), Job.id.desc()))
        )


def test_cursor_pages_have_no_duplicates_or_gaps_while_jobs_are_added(
    database_url: str, add_job: Callable[[str], Inserter]
) -> None:
    add = add_job(database_url)
    suite = add(kind=JobKind.SUITE, status=JobStatus.RUNNING, config={"suite": "table1"})
    base = utcnow() - timedelta(hours=1)
    # Three jobs share each timestamp: the id breaks the tie, or a page boundary in a tie would
    # repeat or drop a job.
    for i in range(40):
        add(created_at=base - timedelta(seconds=i // 3), parent_id=suite)
    expected = _newest_first(database_url, Job.parent_id == suite)
    assert len(expected) == 40

    added: list[str] = []

    def two_more() -> None:  # jobs submitted while a client pages through the list
        added.extend(add(parent_id=suite, status=JobStatus.QUEUED) for _ in range(2))

    assert _walk(database_url, 6, two_more, parent_id=suite) == expected
    assert len(added) == 14
    # The whole table too (other tests' jobs included), pages of 7.
    everything = _newest_first(database_url)
    assert _walk(database_url, 7, two_more) == everything
    assert len(set(everything)) == len(everything)


def test_filters_on_every_page(database_url: str, add_job: Callable[[str], Inserter]) -> None:
    add = add_job(database_url)
    suite = add(kind=JobKind.SUITE, status=JobStatus.WAITING, config={"suite": "table4"})
    base = utcnow() - timedelta(minutes=30)
    mine: dict[str, tuple[JobKind, JobStatus]] = {}
    statuses = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.QUEUED, JobStatus.RUNNING)
    trains = []
    for i in range(24):
        status = statuses[i % 4]
        job_id = add(created_at=base + timedelta(seconds=i), status=status, parent_id=suite)
        mine[job_id] = (JobKind.TRAIN, status)
        trains.append(job_id)
    for i in range(12):
        status = statuses[i % 3]
        job_id = add(kind=JobKind.ATTACK, status=status, created_at=base + timedelta(seconds=i, milliseconds=5),
                     train_job_id=trains[0], parent_id=suite, config={"evaluation": {}})  # fmt: skip
        mine[job_id] = (JobKind.ATTACK, status)

    cases: list[dict[str, Any]] = [
        {"status": JobStatus.FAILED},
        {"kind": JobKind.ATTACK},
        {"status": JobStatus.QUEUED, "kind": JobKind.TRAIN},
        {"status": JobStatus.SUCCEEDED, "kind": JobKind.ATTACK},
        {"status": JobStatus.CANCELLED},
    ]
    for filters in cases:
        expected = [
            j
            for j in _newest_first(database_url, Job.parent_id == suite)
            if filters.get("kind", mine[j][0]) == mine[j][0]
            and filters.get("status", mine[j][1]) == mine[j][1]
        ]
        assert _walk(database_url, 4, parent_id=suite, **filters) == expected, filters
        # Without parent_id: the whole table's matches, this test's among them.
        where = [getattr(Job, k) == v for k, v in filters.items()]
        walked = _walk(database_url, 5, **filters)
        assert walked == _newest_first(database_url, *where), filters
        assert set(expected) <= set(walked)
    assert _walk(database_url, 50, parent_id=suite) == [j for j in _newest_first(database_url) if j in mine]


def test_count_stops_at_the_cap_and_ignores_cursor_and_offset(
    database_url: str, add_job: Callable[[str], Inserter]
) -> None:
    add = add_job(database_url)
    suite = add(kind=JobKind.SUITE, status=JobStatus.RUNNING, config={"suite": "table1"})
    base = utcnow() - timedelta(minutes=10)
    rows = [
        {"id": uuid.uuid4().hex, "kind": JobKind.TRAIN, "status": JobStatus.SUCCEEDED, "config": {},
         "config_hash": "0" * 64, "parent_id": suite, "created_at": base + timedelta(milliseconds=i),
         "updated_at": base}
        for i in range(views.LIST_COUNT_CAP + 3)
    ]  # fmt: skip
    rows[0]["status"] = rows[1]["status"] = JobStatus.FAILED
    with session_factory(database_url)() as session:
        try:
            session.execute(insert(Job), rows)
            session.commit()

            def page(**kw: Any) -> views.JobPage:
                return views.list_jobs(session=session, parent_id=suite, **kw)

            first = page(limit=10)
            assert (first.count, first.count_exact) == (views.LIST_COUNT_CAP, False)
            second = page(limit=10, cursor=first.next_cursor)
            assert (second.count, second.count_exact, len(second.rows)) == (views.LIST_COUNT_CAP, False, 10)
            failed = page(status=JobStatus.FAILED, limit=1)
            assert (failed.count, failed.count_exact, len(failed.rows)) == (2, True, 1)
            after = page(status=JobStatus.FAILED, limit=1, cursor=failed.next_cursor)
            assert (after.count, len(after.rows), after.next_cursor) == (2, 1, None)
            past_the_end = page(status=JobStatus.FAILED, limit=5, offset=7)
            assert (past_the_end.rows, past_the_end.count, past_the_end.count_exact) == ([], 2, True)
        finally:
            session.rollback()
            session.execute(delete(Job).where(Job.id.in_([r["id"] for r in rows])))
            session.commit()


def test_list_rows_are_summaries_and_the_job_page_keeps_the_config(
    api: httpx.Client, pg_migrated: str, add_job: Callable[[str], Inserter]
) -> None:
    add = add_job(pg_migrated)
    suite = add(kind=JobKind.SUITE, status=JobStatus.WAITING,
                config={"suite": "table2", "model": "wrn34_10", "dataset": None, "smoke": False})  # fmt: skip
    train_cfg = _train_config(name="wrn-c100", variant="unconstrained", model={"name": "wrn34_10"},
                              data={"dataset": "cifar100", "num_classes": 100})  # fmt: skip
    progress = {"phase": "train", "epoch": 3, "epochs": 200, "batch": 10, "batches": 352, "percent": 1.5,
                "eta_seconds": 9000.0, "last_metrics": {"val_pgd_acc": 0.41}}  # fmt: skip
    train = add(config=train_cfg, parent_id=suite, status=JobStatus.RUNNING, progress=progress,
                environment={"torch": "2.5.1"}, summary={"best_epoch": 2})  # fmt: skip
    attack = add(kind=JobKind.ATTACK, status=JobStatus.QUEUED, train_job_id=train, parent_id=suite,
                 config={**AttackJobConfig().model_dump(mode="json"), "train_job_id": train})  # fmt: skip

    listed = api.get("/jobs", params={"parent_id": suite}).json()
    assert listed["count"] == 2 and listed["count_exact"] is True and listed["next_cursor"] is None
    rows = {r["id"]: r for r in listed["data"]}
    assert list(rows) == [attack, train]
    for row in rows.values():
        assert not {"config", "environment", "summary", "heartbeat_at"} & set(row), row.keys()
        assert row["links"]["self"] == f"/jobs/{row['id']}"
    label = {"name": "wrn-c100", "model": "wrn34_10", "dataset": "cifar100", "variant": "unconstrained",
             "suite": None}  # fmt: skip
    assert {k: rows[train][k] for k in label} == label
    assert {k: rows[attack][k] for k in label} == label  # an attack job shows the job it attacks
    assert rows[train]["progress"] == {**progress, "detail": ""}
    assert rows[attack]["train_job_id"] == train and rows[attack]["parent_id"] == suite

    suites = api.get("/jobs", params={"kind": "suite", "status": "waiting", "limit": 500}).json()["data"]
    row = next(r for r in suites if r["id"] == suite)
    assert {k: row[k] for k in label} == {"name": None, "model": "wrn34_10", "dataset": None, "variant": None,
                                          "suite": "table2"}  # fmt: skip

    full = api.get(f"/jobs/{train}").json()
    assert full["config"] == train_cfg and full["summary"] == {"best_epoch": 2}

    # Pages of one through the API: the cursor carries the position, the filters stay in the query.
    seen, params = [], {"parent_id": suite, "limit": 1}
    while True:
        page = api.get("/jobs", params=params).json()
        seen += [r["id"] for r in page["data"]]
        if page["next_cursor"] is None:
            break
        params = {"parent_id": suite, "limit": 1, "cursor": page["next_cursor"]}
    assert seen == [attack, train]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"cursor": "not a cursor"}, "query.cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"yesterday|abc").decode()}, "query.cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"2026-01-01T00:00:00|ABC").decode()}, "query.cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"9999-12-31T23:59:59-05:00|ab").decode()}, "query.cursor"),
        ({"cursor": "x" * 201}, "query.cursor"),
        ({"offset": views.LIST_MAX_OFFSET + 1}, "query.offset"),
        ({"offset": 2**63}, "query.offset"),
        ({"limit": 0}, "query.limit"),
        ({"limit": 501}, "query.limit"),
    ],
    ids=["garbage", "bad-time", "naive-time-upper-id", "past-year-9999", "too-long", "offset-cap",
         "offset-2^63", "limit-0", "limit-501"],
)  # fmt: skip
def test_bad_list_parameters_are_422_naming_the_field(
    api: httpx.Client, params: dict[str, Any], field: str
) -> None:
    r = api.get("/jobs", params=params)
    assert r.status_code == 422, r.text
    assert field in r.json()["message"]


# The index each filter combination should use for its page (PostgreSQL). parent_id uses its own
# index and sorts a suite's few sub-jobs.
INDEX_FOR = [
    ({}, "ix_job_created_at_id"),
    ({"status": JobStatus.SUCCEEDED}, "ix_job_status_created_at_id"),
    ({"kind": JobKind.ATTACK}, "ix_job_kind_created_at_id"),
    ({"status": JobStatus.RUNNING, "kind": JobKind.TRAIN}, "ix_job_kind_status_created_at_id"),
]


@pytest.fixture(scope="module")
def plan_db() -> Iterator[str]:
    """A PostgreSQL database of its own whose job table has fixed statistics: 2,000 jobs over four
    weeks, mostly cancelled suites, every 50th one of each filtered kind and status, then ANALYZE.
    The planner's choice depends on the statistics; the session database's depend on the tests that
    ran before (after the suite tests most jobs have succeeded, and for `status=succeeded` a
    backward scan of ix_job_created_at_id with a filter costs the same as the status index)."""
    name = f"ctrw_list_plan_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(Settings(database_url=url))
        now, rare = utcnow(), [(JobKind.TRAIN, JobStatus.SUCCEEDED), (JobKind.ATTACK, JobStatus.QUEUED),
                               (JobKind.TRAIN, JobStatus.RUNNING)]  # fmt: skip
        rows = []
        for i in range(2000):
            kind, status = rare[i // 50 % 3] if i % 50 == 0 else (JobKind.SUITE, JobStatus.CANCELLED)
            job_id, when = uuid.uuid4().hex, now - timedelta(minutes=20 * i)
            rows.append({"id": job_id, "kind": kind, "status": status, "config": {"name": "t"},
                         "config_hash": job_id * 2, "created_at": when, "updated_at": when})  # fmt: skip
        with session_factory(url)() as session:
            session.execute(insert(Job), rows)
            session.commit()
        with make_engine(url).begin() as conn:
            conn.exec_driver_sql("ANALYZE job")
        yield url
    finally:
        make_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


@pytest.mark.parametrize(("filters", "index"), INDEX_FOR, ids=["none", "status", "kind", "status+kind"])
@pytest.mark.parametrize("deep", [False, True], ids=["first-page", "cursor-page"])
def test_list_pages_are_read_from_the_list_indexes(
    plan_db: str, filters: dict[str, Any], index: str, deep: bool
) -> None:
    """The page's rows come from a backward range scan of the filter's index under the LIMIT,
    not a sort of every match. Sequential and bitmap scans are switched off for the EXPLAIN, and
    the table's statistics are fixed (``plan_db``: every filter selective, the cursor a day back
    with weeks of jobs behind it), so that the plan does not depend on what the database holds:
    without a fitting index the planner would have to sort or filter most of the table."""
    engine = make_engine(plan_db)
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
        statements.append((statement, parameters))

    cursor = views.encode_cursor(utcnow() - timedelta(days=1), "0" * 32) if deep else None
    event.listen(engine, "before_cursor_execute", capture)
    try:
        with session_factory(plan_db)() as session:
            views.list_jobs(session=session, limit=50, cursor=cursor, **filters)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    statement, parameters = next((s, p) for s, p in statements if "ORDER BY" in s)
    with engine.connect() as conn:
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
        plan = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters).scalar()
        conn.rollback()
    nodes = list(_plan_nodes(plan[0]["Plan"]))
    page_scans = [
        child
        for node in nodes
        if node["Node Type"] == "Limit"
        for child in node.get("Plans", [])
        if child.get("Index Name") == index and child.get("Scan Direction") == "Backward"
    ]
    assert page_scans, f"no backward scan of {index} under a LIMIT:\n{plan}"
    if deep:
        assert "ROW(created_at, id) <" in page_scans[0]["Index Cond"], page_scans[0]
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], plan
