"""reliability and limits: dispatch marker, attempt cap, cost estimate, list indexes

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The list queries' indexes (GET /jobs).
_LIST_INDEXES = {
    "ix_job_created_at_id": ["created_at", "id"],
    "ix_job_status_created_at_id": ["status", "created_at", "id"],
    "ix_job_kind_created_at_id": ["kind", "created_at", "id"],
    "ix_job_kind_status_created_at_id": ["kind", "status", "created_at", "id"],
}


def upgrade() -> None:
    with op.batch_alter_table("job") as batch_op:
        # Reconciliation of lost messages and the attempt cap.
        batch_op.add_column(sa.Column("worker_losses", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
        # Resource limits: the estimated cost.
        batch_op.add_column(sa.Column("cost_pflop", sa.Float(), nullable=True))
    # Listing at scale: one index per filter of GET /jobs, in its order (newest first by created_at, then id): a
    # page is a short index range, never a sort of the table. They replace (status, created_at)
    # and (kind).
    op.drop_index("ix_job_status_created_at", table_name="job")
    op.drop_index("ix_job_kind", table_name="job")
    for name, columns in _LIST_INDEXES.items():
        op.create_index(name, "job", columns)


def downgrade() -> None:
    for name in reversed(_LIST_INDEXES):
        op.drop_index(name, table_name="job")
    op.create_index("ix_job_kind", "job", ["kind"])
    op.create_index("ix_job_status_created_at", "job", ["status", "created_at"])
    with op.batch_alter_table("job") as batch_op:
        batch_op.drop_column("cost_pflop")
        batch_op.drop_column("dispatched_at")
        batch_op.drop_column("worker_losses")
