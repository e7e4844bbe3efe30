"""The job list: pages of summary rows, newest first, with opaque cursors (GET /jobs)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Integer, Select, bindparam, func, select, tuple_
from sqlalchemy.orm import Session, aliased

from app.models import Job, JobKind, JobStatus
from app.services.errors import InvalidInputError

__all__ = ["LIST_COUNT_CAP", "LIST_MAX_OFFSET", "JobPage", "decode_cursor", "encode_cursor", "list_jobs"]

# Listing: newest first by (created_at, id), which the list indexes hold in that order
# (app.models.Job). A page starts after a cursor, the (created_at, id) of the previous page's last
# row, so a deep page costs what the first does and jobs created meanwhile never shift it; `offset`
# still works but stops at LIST_MAX_OFFSET (an offset walks every index entry it skips). The count
# stops at LIST_COUNT_CAP: counting every match on every request was the cost that grew with the
# table (1,000 index entries cost ~0.2 ms, 10,000 ~2-8 ms on a 2-core machine).
LIST_COUNT_CAP = 1_000
LIST_MAX_OFFSET = 10_000
_JOB_ID = re.compile(r"[0-9a-f]{1,32}")


@dataclass(frozen=True)
class JobPage:
    """One page of the job list: summary rows (no config), the capped count, the next cursor."""

    rows: list[dict[str, Any]]
    count: int
    count_exact: bool
    next_cursor: str | None


def encode_cursor(created_at: datetime, job_id: str) -> str:
    """The opaque cursor of the page after the row (created_at, job_id)."""
    stamp = created_at.replace(tzinfo=UTC) if created_at.tzinfo is None else created_at.astimezone(UTC)
    raw = f"{stamp.isoformat()}|{job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at, id) from a cursor; 422 on query.cursor for anything `encode_cursor` did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, job_id = raw.split("|")
        created_at = datetime.fromisoformat(stamp)
        if created_at.tzinfo is None or not _JOB_ID.fullmatch(job_id):
            raise ValueError(raw)
        created_at = created_at.astimezone(UTC)  # OverflowError at the ends of the calendar
    except (ValueError, OverflowError) as exc:  # binascii.Error, UnicodeDecodeError: ValueErrors
        raise InvalidInputError(
            "not a cursor of this API (pass a next_cursor from a previous page)", loc=("query", "cursor")
        ) from exc
    return created_at, job_id


def list_jobs(
    *,
    session: Session,
    status: JobStatus | None = None,
    kind: JobKind | None = None,
    parent_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
    cursor: str | None = None,
    owner: str | None = None,
) -> JobPage:
    """Jobs newest first, as summary rows (see `_summary`); the full config is on the job's page.

    `cursor` (a previous page's `next_cursor`) starts the page after that page's last row, with
    the same filters. `count` counts the matches (cursor and offset aside) up to LIST_COUNT_CAP.
    """
    # The statements are built once per filter combination (building and keying them cost more
    # CPU than running them); the values travel as bound parameters.
    params: dict[str, Any] = {"limit": limit + 1, "offset": offset}
    for name, value in (("status", status), ("kind", kind), ("parent_id", parent_id), ("owner", owner)):
        if value is not None:
            params[name] = value
    if cursor is not None:
        params["after_created_at"], params["after_id"] = decode_cursor(cursor)
    shape = (status is not None, kind is not None, parent_id is not None, owner is not None)
    rows = session.execute(_page_statement(*shape, cursor is not None), params).all()
    # The count rides on the page's rows; an empty page (past the end) asks for it alone.
    count = rows[0].matches if rows else session.scalar(_count_statement(*shape), params) or 0
    more = len(rows) > limit
    rows = rows[:limit]
    return JobPage(
        rows=[_summary(r._mapping) for r in rows],
        count=min(count, LIST_COUNT_CAP),
        count_exact=count <= LIST_COUNT_CAP,
        next_cursor=encode_cursor(rows[-1].created_at, rows[-1].id) if more else None,
    )


def _list_filters(status: bool, kind: bool, parent_id: bool, owner: bool) -> list[Any]:
    named = (
        ("status", status, Job.status),
        ("kind", kind, Job.kind),
        ("parent_id", parent_id, Job.parent_id),
        ("owner", owner, Job.owner),
    )
    return [column == bindparam(name) for name, wanted, column in named if wanted]


@lru_cache(maxsize=16)
def _count_statement(status: bool, kind: bool, parent_id: bool, owner: bool) -> Select[tuple[int]]:
    capped = select(Job.id).where(*_list_filters(status, kind, parent_id, owner)).limit(LIST_COUNT_CAP + 1)
    return select(func.count()).select_from(capped.subquery())


@lru_cache(maxsize=32)
def _page_statement(status: bool, kind: bool, parent_id: bool, owner: bool, after: bool) -> Select[Any]:
    filters = _list_filters(status, kind, parent_id, owner)
    if after:
        # A row comparison: one index range on both backends (an OR of the two cases is not).
        cursor = tuple_(
            bindparam("after_created_at", type_=Job.__table__.c.created_at.type),
            bindparam("after_id", type_=Job.__table__.c.id.type),
        )
        filters.append(tuple_(Job.created_at, Job.id) < cursor)
    # The page's keys first, from the index alone (an offset skips index entries, not rows); then
    # the summary columns of those rows only.
    order = (Job.created_at.desc(), Job.id.desc())
    keys = (
        select(Job.id)
        .where(*filters)
        .order_by(*order)
        .limit(bindparam("limit", type_=Integer()))
        .offset(bindparam("offset", type_=Integer()))
        .subquery()
    )
    train = aliased(Job)
    config, train_config = Job.config, train.config
    return (
        select(
            *(getattr(Job, c) for c in _SUMMARY_COLUMNS),
            config["name"].as_string().label("name"),
            config["variant"].as_string().label("variant"),
            config[("model", "name")].as_string().label("train_model"),
            config[("data", "dataset")].as_string().label("train_dataset"),
            config["suite"].as_string().label("suite"),
            config["model"].as_string().label("suite_model"),
            config["dataset"].as_string().label("suite_dataset"),
            train_config["name"].as_string().label("of_name"),
            train_config["variant"].as_string().label("of_variant"),
            train_config[("model", "name")].as_string().label("of_model"),
            train_config[("data", "dataset")].as_string().label("of_dataset"),
            _count_statement(status, kind, parent_id, owner).scalar_subquery().label("matches"),
        )
        .join(keys, keys.c.id == Job.id)
        .outerjoin(train, train.id == Job.train_job_id)
        .order_by(*order)
    )


_SUMMARY_COLUMNS = (
    "id", "kind", "status", "owner", "train_job_id", "parent_id", "config_hash", "cancel_requested", "attempts",
    "progress", "error", "created_at", "updated_at", "started_at", "finished_at",
)  # fmt: skip


def _summary(row: Any) -> dict[str, Any]:
    """What the list shows of a job's config: a train job's name, model, data set and variant; an
    attack job shows those of the train job it attacks; a suite its experiment, model and data
    set (None: the paper's)."""
    out = {c: row[c] for c in _SUMMARY_COLUMNS}
    if row["kind"] == JobKind.TRAIN:
        label = (row["name"], row["train_model"], row["train_dataset"], row["variant"], None)
    elif row["kind"] == JobKind.ATTACK:
        label = (row["of_name"], row["of_model"], row["of_dataset"], row["of_variant"], None)
    else:
        label = (None, row["suite_model"], row["suite_dataset"], None, row["suite"])
    return out | dict(zip(("name", "model", "dataset", "variant", "suite"), label, strict=True))
