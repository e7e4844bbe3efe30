"""The Alembic migrations build exactly the schema the models declare, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from app.core.db import make_engine
from app.core.migrate import alembic_config, head_revision, upgrade
from app.core.settings import Settings
from app.models import Base

pytestmark = pytest.mark.service


def _diff(url: str) -> list:
    with make_engine(url).connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), Base.metadata)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    return request.getfixturevalue("pg_migrated")


def test_models_and_migrations_agree(database_url: str) -> None:
    upgrade(Settings(database_url=database_url))
    assert _diff(database_url) == []
    with make_engine(database_url).connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head_revision()


def test_downgrade_and_upgrade_again(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'd.db'}")
    upgrade(settings)
    command.downgrade(alembic_config(settings), "base")
    assert set(inspect(make_engine(settings.database_url)).get_table_names()) <= {"alembic_version"}
    upgrade(settings)
    assert _diff(settings.database_url) == []
