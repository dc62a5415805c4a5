"""API keys of the HTTP service: one per client, with a role, stored hashed in its database.

A key is ``nbo_`` + 32 random bytes (256 bits, URL-safe base64). The database holds only its
SHA-256: a slow password hash (bcrypt, scrypt) exists to slow guessing of low-entropy secrets
people choose; a 256-bit random key cannot be guessed, so a fast hash is as strong and keeps
every request cheap. Each key also has a short random public ``id`` (``k_`` + 8 hex digits),
the only thing logs and the CLI show.

Keys live in the service's database (``recommender.store.database``), so a key created or
revoked on one machine holds on every replica: ``KeyStore`` reads the keys again at most once
a second.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from ..exceptions import ConfigError, RecommenderError
from .database import Database, StoreUnavailableError, open_database
from .tables import api_keys as _table

log = logging.getLogger(__name__)

ROLES = ("teller", "mobile", "campaign", "admin")
KEY_PREFIX = "nbo_"
RECHECK_SECONDS = 1.0  # how often a KeyStore reads the keys again (at most)
_SELECT = sa.select(_table.c.id, _table.c.role, _table.c.name, _table.c.created_at,
                    _table.c.expires_at, _table.c.hash).order_by(_table.c.created_at,
                                                                 _table.c.id)


class InvalidKeyError(RecommenderError):
    """A request's key is missing, malformed or not in the keys file."""


class ExpiredKeyError(InvalidKeyError):
    """The key is known but past its ``expires_at``; ``key`` is the expired key."""

    def __init__(self, message: str, key: ApiKey) -> None:
        super().__init__(message)
        self.key = key


class UnknownKeyIdError(RecommenderError, LookupError):
    """No key with this id in the database (revoking)."""


@dataclass(frozen=True)
class ApiKey:
    """What the service knows about a client's key; never the key or its hash."""

    id: str
    role: str
    name: str
    created_at: datetime
    expires_at: datetime | None = None

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and (now or datetime.now(UTC)) >= self.expires_at


@dataclass(frozen=True)
class _Record:
    key: ApiKey
    hash: str


def hash_key(key: str) -> str:
    """The form a key is stored and looked up in: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _utc(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _stored(database: Database, at: datetime | None) -> datetime | None:
    """A time as the database keeps it: aware for PostgreSQL, naive UTC for SQLite."""
    if at is None or not database.is_sqlite:
        return at
    return at.astimezone(UTC).replace(tzinfo=None)


def _records(database: Database) -> list[_Record]:
    with database.connect() as conn:
        rows = conn.execute(_SELECT).all()
    return [_Record(ApiKey(r.id, r.role, r.name, _utc(r.created_at), _utc(r.expires_at)),
                    r.hash) for r in rows]


def create_key(database: Database | str | Path, role: str, name: str = "",
               expires_days: int | None = None) -> tuple[str, ApiKey]:
    """A new key of ``role`` stored (hashed) in ``database``.

    Returns the clear key, the only time it exists outside the client, and its record.
    """
    if role not in ROLES:
        raise ConfigError(f"role {role!r} is not one of {list(ROLES)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ConfigError("the key name must not contain control characters (newlines, tabs)")
    if expires_days is not None and (isinstance(expires_days, bool) or
                                     not isinstance(expires_days, int) or expires_days < 1):
        raise ConfigError(f"expires_days must be a whole number of days >= 1, got "
                          f"{expires_days!r}")
    database, owned = open_database(database)
    clear = KEY_PREFIX + secrets.token_urlsafe(32)
    now = datetime.now(UTC)  # to the microsecond: keys list in the order they were made
    expires = now + timedelta(days=expires_days) if expires_days else None
    try:
        with database.begin(write=True) as conn:
            taken = set(conn.execute(sa.select(_table.c.id)).scalars())
            key_id = f"k_{secrets.token_hex(4)}"
            while key_id in taken:
                key_id = f"k_{secrets.token_hex(4)}"
            key = ApiKey(key_id, role, name, now, expires)
            conn.execute(sa.insert(_table), {
                "id": key_id, "role": role, "name": name, "hash": hash_key(clear),
                "created_at": _stored(database, now), "expires_at": _stored(database, expires)})
    finally:
        if owned:
            database.dispose()
    log.info("created API key %s (role %s) in %s", key.id, role, database.name)
    return clear, key


def list_keys(database: Database | str | Path) -> list[ApiKey]:
    """The keys in the database, in the order they were created."""
    database, owned = open_database(database)
    try:
        return [r.key for r in _records(database)]
    finally:
        if owned:
            database.dispose()


def revoke_key(database: Database | str | Path, key_id: str) -> ApiKey:
    """Remove the key ``key_id``; returns what it was."""
    database, owned = open_database(database)
    try:
        with database.begin(write=True) as conn:
            row = conn.execute(_SELECT.where(_table.c.id == key_id)).first()
            if row is None:
                raise UnknownKeyIdError(f"no API key with id {key_id!r} in {database.name}; "
                                        "`nbo keys list` shows the ids")
            conn.execute(sa.delete(_table).where(_table.c.id == key_id))
    finally:
        if owned:
            database.dispose()
    revoked = ApiKey(row.id, row.role, row.name, _utc(row.created_at), _utc(row.expires_at))
    log.info("revoked API key %s (role %s) in %s", revoked.id, revoked.role, database.name)
    return revoked


# --------------------------------------------------------------------------- the store


class KeyStore:
    """The keys of one database, answering ``authenticate``; follows changes to them.

    At most once every ``recheck_seconds`` an ``authenticate`` reads the keys again, so a key
    created or revoked anywhere holds here within that time. While the database cannot be
    reached the keys last read stay in force (none can be revoked meanwhile: revoking needs
    the database); before any were read, ``authenticate`` raises ``StoreUnavailableError``.
    """

    def __init__(self, database: Database | str | Path, *,
                 recheck_seconds: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.database, self._owned = open_database(database)
        self.recheck_seconds = RECHECK_SECONDS if recheck_seconds is None else recheck_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._by_hash: dict[str, ApiKey] | None = None  # None: never read
        self._checked_at = float("-inf")
        self._failing = False

    def __len__(self) -> int:
        return len(self._by_hash or {})

    def close(self) -> None:
        """Close the database if the store opened it itself (a URL or a path)."""
        if self._owned:
            self.database.dispose()

    def refresh(self) -> None:
        """Read the keys now (not waiting for ``recheck_seconds``).

        Raises ``StoreUnavailableError`` when the database cannot be reached.
        """
        with self._lock:
            self._checked_at = self._clock()
            try:
                records = _records(self.database)
            except StoreUnavailableError as exc:
                if not self._failing:
                    log.error("cannot read the API keys (%s); %s", exc,
                              "keeping the keys last read" if self._by_hash is not None else
                              "refusing every key until the database answers")
                self._failing = True
                raise
            by_hash = {r.hash: r.key for r in records}
            if by_hash != self._by_hash:
                log.info("loaded %d API key(s) from %s", len(by_hash), self.database.name)
            self._by_hash, self._failing = by_hash, False

    def authenticate(self, token: str, *, now: datetime | None = None) -> ApiKey:
        """The key whose clear form is ``token``.

        Raises ``InvalidKeyError`` for an unknown key, ``ExpiredKeyError`` for an expired one,
        and ``StoreUnavailableError`` while no keys could ever be read.
        """
        if self._clock() - self._checked_at >= self.recheck_seconds:
            try:
                self.refresh()
            except StoreUnavailableError:
                if self._by_hash is None:
                    raise
        keys = self._by_hash
        if keys is None:  # failed within the last recheck: still unknown, not "no keys"
            raise StoreUnavailableError(
                f"the API keys of {self.database.name} could not be read yet")
        key = keys.get(hash_key(token))  # a lookup by hash leaks nothing of the key
        if key is None:
            raise InvalidKeyError("unknown API key" if keys else "no API keys are configured")
        if key.expired(now):
            raise ExpiredKeyError(f"API key {key.id} expired at "
                                  f"{key.expires_at.strftime('%Y-%m-%dT%H:%M:%SZ')}",
                                  key)
        return key
