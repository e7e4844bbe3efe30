"""API keys, who is asking (`Principal`), and the per-key request rate limit.

A key is 32 random bytes (256 bits) from `secrets`, shown once at creation; the database holds
only its SHA-256. A slow password hash (bcrypt, argon2) exists to make guessing a low-entropy
password expensive; a 256-bit random key cannot be guessed, so a plain SHA-256 is as safe and
lets every request find its key with one indexed lookup. Keys are looked up on every request (no
cache), so a revoked key stops working at once.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import threading
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.models import ApiKey, utcnow

__all__ = [
    "KEY_PREFIX",
    "LOCAL_OWNER",
    "Principal",
    "RateLimiter",
    "any_active_keys",
    "any_keys",
    "create_key",
    "ensure_key",
    "hash_key",
    "is_loopback",
    "is_public_ip",
    "list_keys",
    "lookup_key",
    "revoke_key",
]

KEY_PREFIX = "ctrw_"
# Owner of the jobs submitted without a key (loopback, no keys configured).
LOCAL_OWNER = "local"


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: an owner name; an admin sees every owner's jobs."""

    owner: str
    admin: bool
    key_id: str | None = None

    @property
    def scope(self) -> str | None:
        """The owner whose jobs this principal may touch; None: all (admin)."""
        return None if self.admin else self.owner


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost`; anything else (0.0.0.0, a LAN address) is reachable."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_public_ip(address: str) -> bool:
    """A socket address that is not loopback. A name (an in-process test client's `testserver`)
    is no socket, so False."""
    try:
        return not ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def create_key(*, session: Session, owner: str, admin: bool = False) -> tuple[ApiKey, str]:
    """Store a new key for `owner`; returns its row and the key itself (not stored anywhere)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(id=uuid.uuid4().hex, owner=owner, admin=admin, key_hash=hash_key(key), prefix=key[:12])
    session.add(row)
    session.commit()
    return row, key


def ensure_key(*, session: Session, key: str, owner: str, admin: bool) -> bool:
    """Store `key` (chosen by the operator, e.g. from docker-compose's .env) unless its hash is
    already there. Returns whether it was added."""
    digest = hash_key(key)
    if session.scalar(select(ApiKey.id).where(ApiKey.key_hash == digest)) is not None:
        return False
    session.add(ApiKey(id=uuid.uuid4().hex, owner=owner, admin=admin, key_hash=digest, prefix=key[:12]))
    session.commit()
    return True


def lookup_key(*, session: Session, key: str) -> ApiKey | None:
    """The active (not revoked) key row for this key, or None."""
    return session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None)))


def any_keys(*, session: Session) -> bool:
    """Whether any key was ever created (revoked ones count: revoking the last key must not open
    the service to requests without one)."""
    return session.scalar(select(ApiKey.id).limit(1)) is not None


def any_active_keys(*, session: Session) -> bool:
    """Whether some key still works (`serve` needs one to listen beyond loopback)."""
    return session.scalar(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)) is not None


def list_keys(*, session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def revoke_key(*, session: Session, key_id: str) -> bool:
    """Revoke by id or by the key's shown prefix; returns whether one active key was revoked."""
    rows = session.scalars(
        select(ApiKey.id).where(
            (ApiKey.id == key_id) | (ApiKey.prefix == key_id), ApiKey.revoked_at.is_(None)
        )
    ).all()
    if len(rows) != 1:
        return False
    session.execute(update(ApiKey).where(ApiKey.id == rows[0]).values(revoked_at=utcnow()))
    session.commit()
    return True


class RateLimiter:
    """A token bucket per key: `per_minute` requests a minute, bursts up to that many. In the API
    process's memory: each API process (uvicorn worker, replica) counts on its own."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key_id: str) -> float | None:
        """Take one token; None if allowed, else the seconds until the next token."""
        if self.per_minute <= 0:
            return None
        rate = self.per_minute / 60.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key_id, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[key_id] = (tokens, now)
                return (1.0 - tokens) / rate
            self._buckets[key_id] = (tokens - 1.0, now)
            return None
