"""suites: job kind 'suite', status 'waiting', job.parent_id, suite_member

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KINDS = ("train", "attack")
_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _checks(batch_op: object, kinds: Sequence[str], statuses: Sequence[str]) -> None:
    # kind and status are VARCHAR + CHECK (native_enum=False): a new value is a new CHECK.
    batch_op.drop_constraint("job_kind", type_="check")  # type: ignore[attr-defined]
    batch_op.drop_constraint("job_status", type_="check")  # type: ignore[attr-defined]
    batch_op.create_check_constraint("job_kind", _in("kind", kinds))  # type: ignore[attr-defined]
    batch_op.create_check_constraint("job_status", _in("status", statuses))  # type: ignore[attr-defined]


def upgrade() -> None:
    with op.batch_alter_table("job") as batch_op:
        _checks(batch_op, (*_KINDS, "suite"), ("waiting", *_STATUSES))
        batch_op.add_column(sa.Column("parent_id", sa.String(length=32), nullable=True))
        batch_op.create_foreign_key("job_parent_id_fkey", "job", ["parent_id"], ["id"], ondelete="SET NULL")
        batch_op.create_index("ix_job_parent_id", ["parent_id"])
    op.create_table(
        "suite_member",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("suite_id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column(
            "label",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["suite_id"], ["job.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("suite_id", "key", name="uq_suite_member_suite_id_key"),
    )
    with op.batch_alter_table("suite_member") as batch_op:
        batch_op.create_index("ix_suite_member_job_id", ["job_id"])


def downgrade() -> None:
    with op.batch_alter_table("suite_member") as batch_op:
        batch_op.drop_index("ix_suite_member_job_id")
    op.drop_table("suite_member")
    with op.batch_alter_table("job") as batch_op:
        batch_op.drop_index("ix_job_parent_id")
        batch_op.drop_constraint("job_parent_id_fkey", type_="foreignkey")
        batch_op.drop_column("parent_id")
        _checks(batch_op, _KINDS, _STATUSES)
