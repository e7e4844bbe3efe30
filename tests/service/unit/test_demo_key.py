"""`ctrw-service demo` against a service that has API keys: it sends a key instead of getting 401."""

from __future__ import annotations

from pathlib import Path

from app.cli import keys as cli_keys
from app.core.db import session_scope
from app.core.migrate import upgrade
from app.core.settings import Settings
from app.services import auth


def _settings(tmp_path: Path, **over: object) -> Settings:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'ctrw.db'}", runs_dir=tmp_path / "runs", **over)
    upgrade(settings)
    return settings


def test_without_keys_the_demo_sends_none(tmp_path: Path) -> None:
    assert cli_keys.demo_key(_settings(tmp_path)) == (None, None)


def test_once_a_key_exists_the_demo_uses_a_temporary_one_and_revokes_it(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    gen = session_scope(settings.database_url)
    session = next(gen)
    auth.create_key(session=session, owner="alice", admin=True)
    key, key_id = cli_keys.demo_key(settings)
    assert key is not None and key_id is not None
    row = auth.lookup_key(session=session, key=key)
    assert row is not None and row.owner == "demo" and not row.admin
    cli_keys.revoke(settings, key_id)
    session.expire_all()
    assert auth.lookup_key(session=session, key=key) is None
    gen.close()


def test_the_bootstrap_admin_key_is_used_where_set(tmp_path: Path) -> None:
    key = "k" * 40
    assert cli_keys.demo_key(_settings(tmp_path, bootstrap_admin_key=key)) == (key, None)
