"""SQLAlchemy models: the database is the source of truth for every job's state and results."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ApiKey",
    "Artifact",
    "Base",
    "Epoch",
    "Job",
    "JobKind",
    "JobStatus",
    "Result",
    "SigmaStat",
    "SuiteMember",
    "utcnow",
]

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return uuid.uuid4().hex


class JobStatus(enum.StrEnum):
    # Waiting for other jobs: a suite for its sub-jobs, a suite's attack sub-job for its train job.
    WAITING = "waiting"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobKind(enum.StrEnum):
    TRAIN = "train"
    ATTACK = "attack"
    # A paper reproduction suite: fans out into train/attack sub-jobs, then assembles their results.
    SUITE = "suite"


def _enum(cls: type[enum.StrEnum], name: str) -> Enum:
    # VARCHAR + CHECK on both backends: adding a status later needs no ALTER TYPE.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda e: [m.value for m in e],
    )


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONType, datetime: DateTime(timezone=True)}


class Job(Base):
    __tablename__ = "job"
    # GET /jobs filters by nothing, status, kind or both, newest first (created_at, id): an index
    # per filter in that order (app.services.views.list_jobs). parent_id has its own below.
    __table_args__ = (
        Index("ix_job_created_at_id", "created_at", "id"),
        Index("ix_job_status_created_at_id", "status", "created_at", "id"),
        Index("ix_job_kind_created_at_id", "kind", "created_at", "id"),
        Index("ix_job_kind_status_created_at_id", "kind", "status", "created_at", "id"),
        # A non-admin key's list (app.services.auth): its owner's jobs, newest first.
        Index("ix_job_owner_created_at_id", "owner", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=_new_id)
    kind: Mapped[JobKind] = mapped_column(_enum(JobKind, "job_kind"))
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus, "job_status"), default=JobStatus.QUEUED)
    # The validated config with every default filled in, and its sha256 (ctrw.config.config_hash).
    config: Mapped[dict[str, Any]]
    config_hash: Mapped[str] = mapped_column(String(64), index=True)
    # Who submitted it (an API key's owner; "local" without keys): only that owner and admins see it.
    owner: Mapped[str] = mapped_column(String(64), default="local", server_default="local")
    # Attack jobs evaluate this training job's checkpoint.
    train_job_id: Mapped[str | None] = mapped_column(ForeignKey("job.id", ondelete="RESTRICT"), index=True)
    # The suite that created this job (a suite's cancel cancels only the jobs it created).
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("job.id", ondelete="SET NULL"), index=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Attempts that ended with the worker lost (stale heartbeat); the job fails at max_attempts.
    worker_losses: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # When the job's current Celery message was sent (NULL: none sent since it became queued).
    # The reconciliation resends a queued job's message that the broker no longer holds.
    dispatched_at: Mapped[datetime | None]
    worker: Mapped[str | None] = mapped_column(String(255))
    # {phase, epoch, epochs, batch, batches, percent, eta_seconds, last_metrics}
    progress: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    # Library versions, device name, code revision of the attempt that produced the results.
    environment: Mapped[dict[str, Any] | None]
    # Training summary and evaluation diagnostics.
    summary: Mapped[dict[str, Any] | None]
    # Estimated cost at submission (ctrw.cost), PFLOP; a suite: the sum over its sub-jobs.
    cost_pflop: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]


class Epoch(Base):
    """One finished training epoch (the training curve)."""

    __tablename__ = "epoch"
    __table_args__ = (UniqueConstraint("job_id", "epoch", name="uq_epoch_job_id_epoch"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    lr: Mapped[float | None] = mapped_column(Float)
    train_loss: Mapped[float | None] = mapped_column(Float)
    train_clean_acc: Mapped[float | None] = mapped_column(Float)
    train_adv_acc: Mapped[float | None] = mapped_column(Float)
    val_clean_acc: Mapped[float | None] = mapped_column(Float)
    val_pgd_acc: Mapped[float | None] = mapped_column(Float)
    sigma_sum: Mapped[float | None] = mapped_column(Float)
    sigma_min: Mapped[float | None] = mapped_column(Float)
    sigma_mean: Mapped[float | None] = mapped_column(Float)
    sigma_max: Mapped[float | None] = mapped_column(Float)
    bound_lower: Mapped[float | None] = mapped_column(Float)
    bound_upper: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float | None] = mapped_column(Float)
    is_best: Mapped[bool] = mapped_column(Boolean, default=False)
    # Whatever else the library reports per epoch.
    extra: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Result(Base):
    """One cell column of the robust-accuracy table: an attack under a protocol."""

    __tablename__ = "result"
    __table_args__ = (
        UniqueConstraint("job_id", "attack", "protocol", name="uq_result_job_id_attack_protocol"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"))
    attack: Mapped[str] = mapped_column(String(64))  # column label, e.g. "pgd20"
    name: Mapped[str] = mapped_column(String(32))  # attack family, e.g. "pgd"
    protocol: Mapped[str] = mapped_column(String(16))
    accuracy: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    ci_low: Mapped[float] = mapped_column(Float)
    ci_high: Mapped[float] = mapped_column(Float)
    std: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float | None] = mapped_column(Float)
    params: Mapped[dict[str, Any] | None]
    repeats: Mapped[list[float] | None] = mapped_column(JSONType)
    scoring: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SigmaStat(Base):
    """σ statistics of one random-weight layer of a trained model."""

    __tablename__ = "sigma_stat"
    __table_args__ = (UniqueConstraint("job_id", "layer", name="uq_sigma_stat_job_id_layer"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"))
    layer: Mapped[str] = mapped_column(String(255))
    numel: Mapped[int] = mapped_column(BigInteger)
    sigma_sum: Mapped[float] = mapped_column(Float)
    sigma_min: Mapped[float] = mapped_column(Float)
    sigma_mean: Mapped[float] = mapped_column(Float)
    sigma_max: Mapped[float] = mapped_column(Float)
    mu_mean: Mapped[float | None] = mapped_column(Float)
    bound_lower: Mapped[float | None] = mapped_column(Float)
    bound_upper: Mapped[float | None] = mapped_column(Float)
    hist_sigma: Mapped[dict[str, Any] | None]
    hist_mu: Mapped[dict[str, Any] | None]
    table6: Mapped[dict[str, Any] | None]
    grad_cos: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SuiteMember(Base):
    """A sub-job of a suite, under its key in the suite (``ctrw.paper.SubJob.key``).

    A job can belong to several suites (the same model asked for by two suites is trained once,
    and a resubmitted suite reuses the jobs of the first); ``Job.parent_id`` names the one that
    created it.
    """

    __tablename__ = "suite_member"
    __table_args__ = (UniqueConstraint("suite_id", "key", name="uq_suite_member_suite_id_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    suite_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="RESTRICT"), index=True)
    label: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Artifact(Base):
    """A file a job produced (checkpoints, a suite's figures), with its checksum for integrity checks."""

    __tablename__ = "artifact"
    __table_args__ = (UniqueConstraint("job_id", "kind", name="uq_artifact_job_id_kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(
        String(32)
    )  # "best_checkpoint" | "last_checkpoint" | "figure:fig3b.png"
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """An API key: only its SHA-256 is stored (app.services.auth says why that suffices)."""

    __tablename__ = "api_key"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=_new_id)
    owner: Mapped[str] = mapped_column(String(64))
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The key's first characters, to tell keys apart in `ctrw-service keys list`.
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
