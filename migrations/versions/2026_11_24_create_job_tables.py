"""create job tables

Revision ID: 0001
Revises:
Create Date: 2026-11-24 15:37:54.550932
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def _created_at() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)


def _job_id() -> list:
    return [
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], ondelete="CASCADE"),
    ]


def upgrade() -> None:
    op.create_table(
        "job",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", _enum("job_kind", "train", "attack"), nullable=False),
        sa.Column(
            "status",
            _enum("job_status", "queued", "running", "succeeded", "failed", "cancelled"),
            nullable=False,
        ),
        sa.Column("config", _json(), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("train_job_id", sa.String(length=32), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("progress", _json(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("environment", _json(), nullable=True),
        sa.Column("summary", _json(), nullable=True),
        _created_at(),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["train_job_id"], ["job.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("job") as batch_op:
        batch_op.create_index("ix_job_config_hash", ["config_hash"])
        batch_op.create_index("ix_job_kind", ["kind"])
        batch_op.create_index("ix_job_status_created_at", ["status", "created_at"])
        batch_op.create_index("ix_job_train_job_id", ["train_job_id"])

    op.create_table(
        "artifact",
        sa.Column("id", sa.Integer(), nullable=False),
        *_job_id(),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "kind", name="uq_artifact_job_id_kind"),
    )
    op.create_table(
        "epoch",
        sa.Column("id", sa.Integer(), nullable=False),
        *_job_id(),
        sa.Column("epoch", sa.Integer(), nullable=False),
        *(
            sa.Column(name, sa.Float(), nullable=True)
            for name in (
                "lr",
                "train_loss",
                "train_clean_acc",
                "train_adv_acc",
                "val_clean_acc",
                "val_pgd_acc",
                "sigma_sum",
                "sigma_min",
                "sigma_mean",
                "sigma_max",
                "bound_lower",
                "bound_upper",
                "seconds",
            )  # fmt: skip
        ),
        sa.Column("is_best", sa.Boolean(), nullable=False),
        sa.Column("extra", _json(), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "epoch", name="uq_epoch_job_id_epoch"),
    )
    op.create_table(
        "result",
        sa.Column("id", sa.Integer(), nullable=False),
        *_job_id(),
        sa.Column("attack", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("protocol", sa.String(length=16), nullable=False),
        sa.Column("accuracy", sa.Float(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("ci_low", sa.Float(), nullable=False),
        sa.Column("ci_high", sa.Float(), nullable=False),
        sa.Column("std", sa.Float(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("params", _json(), nullable=True),
        sa.Column("repeats", _json(), nullable=True),
        sa.Column("scoring", _json(), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "attack", "protocol", name="uq_result_job_id_attack_protocol"),
    )
    op.create_table(
        "sigma_stat",
        sa.Column("id", sa.Integer(), nullable=False),
        *_job_id(),
        sa.Column("layer", sa.String(length=255), nullable=False),
        sa.Column("numel", sa.BigInteger(), nullable=False),
        sa.Column("sigma_sum", sa.Float(), nullable=False),
        sa.Column("sigma_min", sa.Float(), nullable=False),
        sa.Column("sigma_mean", sa.Float(), nullable=False),
        sa.Column("sigma_max", sa.Float(), nullable=False),
        sa.Column("mu_mean", sa.Float(), nullable=True),
        sa.Column("bound_lower", sa.Float(), nullable=True),
        sa.Column("bound_upper", sa.Float(), nullable=True),
        sa.Column("hist_sigma", _json(), nullable=True),
        sa.Column("hist_mu", _json(), nullable=True),
        sa.Column("table6", _json(), nullable=True),
        sa.Column("grad_cos", _json(), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "layer", name="uq_sigma_stat_job_id_layer"),
    )


def downgrade() -> None:
    for table in ("sigma_stat", "result", "epoch", "artifact"):
        op.drop_table(table)
    with op.batch_alter_table("job") as batch_op:
        for index in ("ix_job_train_job_id", "ix_job_status_created_at", "ix_job_kind", "ix_job_config_hash"):
            batch_op.drop_index(index)
    op.drop_table("job")
