"""reliability and limits: dispatch marker, attempt cap, cost estimate, list indexes

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa  # noqa: F401  (used by the sections below)
from alembic import op  # noqa: F401

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # --- dispatch / reconciliation (lost messages) ---
    # --- resource limits (cost estimate) ---
    # --- listing at scale (indexes) ---
    pass


def downgrade() -> None:
    # Reverse order of upgrade().
    # --- listing at scale (indexes) ---
    # --- resource limits (cost estimate) ---
    # --- dispatch / reconciliation (lost messages) ---
    pass
