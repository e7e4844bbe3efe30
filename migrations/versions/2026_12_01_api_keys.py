"""access control: API keys (hashes only) and an owner on every job

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_key",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    # Jobs from before keys existed belong to the local owner.
    with op.batch_alter_table("job") as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(64), server_default="local", nullable=False))
    op.create_index("ix_job_owner_created_at_id", "job", ["owner", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_job_owner_created_at_id", table_name="job")
    with op.batch_alter_table("job") as batch_op:
        batch_op.drop_column("owner")
    op.drop_table("api_key")
