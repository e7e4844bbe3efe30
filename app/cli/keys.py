"""`ctrw-service keys create|list|revoke`, and the access checks of `serve` and `migrate`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from app.core.db import session_scope
from app.core.settings import Settings
from app.services import auth

__all__ = ["COMMANDS", "add_parsers", "bootstrap_admin_key", "refuse_unprotected"]


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("keys", help="API keys: create (printed once), list, revoke")
    keys = p.add_subparsers(dest="keys_command", required=True)
    c = keys.add_parser("create", help="create a key for an owner and print it (only its hash is stored)")
    c.add_argument("--owner", required=True, help="owner name: the key sees only this owner's jobs")
    c.add_argument("--admin", action="store_true", help="an admin key: sees every job, may call /admin")
    keys.add_parser("list", help="list keys (id, prefix, owner, admin, created, revoked)")
    r = keys.add_parser("revoke", help="revoke a key now (by its id or its shown prefix)")
    r.add_argument("key_id")


def _session(settings: Settings) -> Any:
    return session_scope(settings.database_url)


def _keys(args: argparse.Namespace, settings: Settings) -> int:
    gen = _session(settings)
    session = next(gen)
    try:
        if args.keys_command == "create":
            owner = args.owner.strip()
            if not owner or len(owner) > 64:
                print("--owner: 1 to 64 characters", file=sys.stderr)
                return 2
            row, key = auth.create_key(session=session, owner=owner, admin=args.admin)
            print(key)
            print(
                f"key {row.id} for owner {row.owner!r}{' (admin)' if row.admin else ''}: shown once, "
                "only its hash is stored. Send it as `Authorization: Bearer KEY`.",
                file=sys.stderr,
            )
            return 0
        if args.keys_command == "list":
            print(f"{'id':32}  {'prefix':12}  {'owner':16}  admin  {'created':25}  revoked")
            for k in auth.list_keys(session=session):
                created = k.created_at.isoformat(timespec="seconds")
                revoked = k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "-"
                print(
                    f"{k.id:32}  {k.prefix:12}  {k.owner:16}  {'yes' if k.admin else 'no ':5}  {created:25}  {revoked}"
                )
            return 0
        if auth.revoke_key(session=session, key_id=args.key_id):
            print(f"revoked {args.key_id}")
            return 0
        print(f"no single active key with id or prefix {args.key_id!r}", file=sys.stderr)
        return 1
    finally:
        gen.close()


COMMANDS = {"keys": _keys}


def bootstrap_admin_key(settings: Settings) -> None:
    """Store CTRW_BOOTSTRAP_ADMIN_KEY (owner "admin") if it is set and not stored yet."""
    if settings.bootstrap_admin_key:
        gen = _session(settings)
        try:
            auth.ensure_key(session=next(gen), key=settings.bootstrap_admin_key, owner="admin", admin=True)
        finally:
            gen.close()


def demo_key(settings: Settings) -> tuple[str | None, str | None]:
    """The key `demo` sends, and the id of a key to revoke when it ends. No key while the service
    has none (loopback requests need none then); CTRW_BOOTSTRAP_ADMIN_KEY where set; otherwise a
    temporary key of owner "demo" (once any key exists, requests without one get 401)."""
    if settings.bootstrap_admin_key:
        return settings.bootstrap_admin_key, None
    gen = _session(settings)
    try:
        session = next(gen)
        if not auth.any_keys(session=session):
            return None, None
        row, key = auth.create_key(session=session, owner="demo")
        return key, row.id
    finally:
        gen.close()


def revoke(settings: Settings, key_id: str) -> None:
    gen = _session(settings)
    try:
        auth.revoke_key(session=next(gen), key_id=key_id)
    finally:
        gen.close()


def refuse_unprotected(host: str, settings: Settings) -> str | None:
    """Why `serve` must not listen on `host` (None: it may): beyond loopback, keys must exist."""
    if auth.is_loopback(host):
        return None
    gen = _session(settings)
    try:
        if auth.any_active_keys(session=next(gen)):
            return None
    finally:
        gen.close()
    return (
        f"refusing to listen on {host} without API keys: anyone who can reach the port could run and "
        "read every job. Create one first (`ctrw-service keys create --owner NAME --admin`, or set "
        "CTRW_BOOTSTRAP_ADMIN_KEY), or listen on 127.0.0.1."
    )
