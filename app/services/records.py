"""What a job produces: epochs, results, σ statistics, artifacts. Writes are idempotent upserts,
so a redelivered or resumed job never duplicates a row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.core.artifacts import StoredObject, sha256_file
from app.models import Artifact, Base, Epoch, Result, SigmaStat
from app.services.errors import NotFoundError
from ctrw import records

__all__ = [
    "stored_rows",
    "get_artifact",
    "list_artifacts",
    "list_epochs",
    "list_results",
    "list_sigma_stats",
    "record_artifact",
    "replace_sigma_stats",
    "sha256_file",
    "upsert_artifact",
    "upsert_epoch",
    "upsert_result",
]

# The columns are the records' fields (tests/service/unit/test_records_contract.py checks the models).
# An epoch's other fields go to its JSON column ``extra``.
_EPOCH_COLUMNS = tuple(f for f in records.EpochMetrics.model_fields if f not in ("epoch", "is_best"))
_RESULT_COLUMNS = tuple(f for f in records.ResultRow.model_fields if f not in ("attack", "protocol"))
_SIGMA_COLUMNS = tuple(records.SigmaLayerStats.model_fields)


def _upsert(session: Session, model: type[Base], values: dict[str, Any], keys: tuple[str, ...]) -> None:
    # Both dialects' Insert constructs offer the same ON CONFLICT DO UPDATE API.
    dialect_insert: Any = {"postgresql": pg_insert, "sqlite": sqlite_insert}[session.get_bind().dialect.name]
    stmt = dialect_insert(model).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(keys), set_={k: stmt.excluded[k] for k in values if k not in keys}
    )
    session.execute(stmt)
    session.commit()


def upsert_epoch(*, session: Session, job_id: str, record: dict[str, Any]) -> None:
    known = {k: record.get(k) for k in _EPOCH_COLUMNS}
    extra = {k: v for k, v in record.items() if k not in _EPOCH_COLUMNS and k not in ("epoch", "is_best")}
    values = {
        "job_id": job_id,
        "epoch": int(record["epoch"]),
        "is_best": bool(record.get("is_best")),
        "extra": extra or None,
        **known,
    }
    _upsert(session, Epoch, values, ("job_id", "epoch"))


def upsert_result(*, session: Session, job_id: str, row: dict[str, Any]) -> None:
    values = {
        "job_id": job_id,
        "attack": row["attack"],
        "protocol": row["protocol"],
        **{k: row.get(k) for k in _RESULT_COLUMNS},
    }
    _upsert(session, Result, values, ("job_id", "attack", "protocol"))


def replace_sigma_stats(*, session: Session, job_id: str, layers: list[dict[str, Any]]) -> None:
    session.execute(delete(SigmaStat).where(SigmaStat.job_id == job_id))
    if layers:
        session.execute(
            insert(SigmaStat),
            [
                {"job_id": job_id, "layer": layer["name"], **{k: layer.get(k) for k in _SIGMA_COLUMNS}}
                for layer in layers
            ],
        )
    session.commit()


def upsert_artifact(*, session: Session, job_id: str, kind: str, path: Path) -> None:
    """Record a local file as the job's ``kind`` artifact (see ``record_artifact``)."""
    path = Path(path)
    record_artifact(
        session=session,
        job_id=job_id,
        kind=kind,
        stored=StoredObject(str(path), sha256_file(path), path.stat().st_size),
    )


def record_artifact(*, session: Session, job_id: str, kind: str, stored: StoredObject) -> None:
    """Record a stored artifact (``app.core.artifacts``): its URL or path, SHA-256 and size."""
    values = {
        "job_id": job_id,
        "kind": kind,
        "path": stored.url,
        "sha256": stored.sha256,
        "size_bytes": stored.size_bytes,
    }
    _upsert(session, Artifact, values, ("job_id", "kind"))


def stored_rows(*, session: Session, job_id: str) -> list[dict[str, Any]]:
    """Result rows already stored, as the library reports them: a resumed evaluation skips their
    (attack, protocol) pairs and hands them to the diagnostics."""
    return [
        {"attack": r.attack, "protocol": r.protocol, **{k: getattr(r, k) for k in _RESULT_COLUMNS}}
        for r in list_results(session=session, job_id=job_id)
    ]


def list_epochs(*, session: Session, job_id: str) -> list[Epoch]:
    return list(session.scalars(select(Epoch).where(Epoch.job_id == job_id).order_by(Epoch.epoch)))


def list_results(*, session: Session, job_id: str) -> list[Result]:
    return list(session.scalars(select(Result).where(Result.job_id == job_id).order_by(Result.id)))


def list_sigma_stats(*, session: Session, job_id: str) -> list[SigmaStat]:
    return list(session.scalars(select(SigmaStat).where(SigmaStat.job_id == job_id).order_by(SigmaStat.id)))


def get_artifact(*, session: Session, job_id: str, kind: str) -> Artifact:
    artifact = session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == kind))
    if artifact is None:
        raise NotFoundError(f"job {job_id} has no {kind.replace('_', ' ')}")
    return artifact


def list_artifacts(*, session: Session, job_id: str, prefix: str = "") -> list[Artifact]:
    return list(
        session.scalars(
            select(Artifact)
            .where(Artifact.job_id == job_id, Artifact.kind.startswith(prefix))
            .order_by(Artifact.kind)
        )
    )
