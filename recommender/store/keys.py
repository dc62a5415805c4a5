"""API keys of the HTTP service: one per client, with a role, stored hashed in a TOML file.

A key is ``nbo_`` + 32 random bytes (256 bits, URL-safe base64). The file holds only its
SHA-256: a slow password hash (bcrypt, scrypt) exists to slow guessing of low-entropy secrets
people choose; a 256-bit random key cannot be guessed, so a fast hash is as strong and keeps
every request cheap. Each key also has a short random public ``id`` (``k_`` + 8 hex digits),
the only thing logs and the CLI show.

``create_key``, ``revoke_key`` rewrite the file under an exclusive lock, through a temporary
file and ``os.replace`` (mode 0600), so concurrent writers never lose a key and readers never
see half a file. ``KeyStore`` re-reads the file when it changes, so new and revoked keys take
effect in a running service without a restart.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..data.tomlfiles import duplicated, toml_document
from ..exceptions import ConfigError, RecommenderError

log = logging.getLogger(__name__)

ROLES = ("teller", "mobile", "campaign", "admin")
KEY_PREFIX = "nbo_"
RECHECK_SECONDS = 1.0  # how often a KeyStore looks at the file's stat (at most)
_FIELDS = {"id", "role", "name", "hash", "created_at", "expires_at"}
_HEADER = ("# API keys of the NBO service. Written by `nbo keys create/revoke`; holds only\n"
           "# SHA-256 hashes of the keys. Comments added by hand are not kept.\n")


class KeysFileError(ConfigError):
    """The API keys file is malformed; the message names the file and the entry."""


class InvalidKeyError(RecommenderError):
    """A request's key is missing, malformed or not in the keys file."""


class ExpiredKeyError(InvalidKeyError):
    """The key is known but past its ``expires_at``; ``key`` is the expired key."""

    def __init__(self, message: str, key: ApiKey) -> None:
        super().__init__(message)
        self.key = key


class UnknownKeyIdError(RecommenderError, LookupError):
    """No key with this id in the keys file (revoking)."""


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


# --------------------------------------------------------------------------- reading


def _parse(text: str, source: str) -> list[_Record]:
    document = toml_document(text, source, KeysFileError, top_level={"keys"})
    entries = document.get("keys", [])
    if not isinstance(entries, list):
        raise KeysFileError(f"{source}: 'keys' must be an array of tables ([[keys]])")
    records = [_record(entry, f"{source}: keys[{n}]") for n, entry in enumerate(entries)]
    for what, values in (("id", [r.key.id for r in records]),
                         ("hash", [r.hash for r in records])):
        if dup := duplicated(values):
            shown = dup if what == "id" else f"{len(dup)} hash(es)"
            raise KeysFileError(f"{source}: duplicate key {what} {shown}; each key must be "
                                "listed once")
    return records


def _record(entry: Any, where: str) -> _Record:
    if not isinstance(entry, dict):
        raise KeysFileError(f"{where}: must be a table ([[keys]])")
    if isinstance(entry.get("id"), str):
        where = f"{where} (id {entry['id']!r})"
    if unknown := sorted(set(entry) - _FIELDS):
        raise KeysFileError(f"{where}: unknown fields {unknown}; allowed: {sorted(_FIELDS)}")
    if missing := [f for f in ("id", "role", "hash", "created_at") if f not in entry]:
        raise KeysFileError(f"{where}: missing fields {missing}")
    for field in ("id", "role", "hash", "name"):
        if not isinstance(entry.get(field, ""), str):
            raise KeysFileError(f"{where}: {field} must be a string")
    if entry["role"] not in ROLES:
        raise KeysFileError(f"{where}: role {entry['role']!r} is not one of {list(ROLES)}")
    digest = entry["hash"].removeprefix("sha256:")
    if not entry["hash"].startswith("sha256:") or len(digest) != 64 or not all(
            c in "0123456789abcdef" for c in digest):
        raise KeysFileError(f"{where}: hash must be 'sha256:' and 64 lowercase hex digits")
    times = {f: _timestamp(entry.get(f), f, where) for f in ("created_at", "expires_at")}
    key = ApiKey(entry["id"], entry["role"], entry.get("name", ""), times["created_at"],
                 times["expires_at"])
    return _Record(key, entry["hash"])


def _timestamp(value: Any, field: str, where: str) -> datetime | None:
    if value is None and field == "expires_at":
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise KeysFileError(f"{where}: {field} must be a date-time with an offset, "
                            f"like 2026-12-28T20:00:00Z (got {value!r})")
    return value.astimezone(UTC)


def _read(path: Path) -> list[_Record]:
    """The records of ``path``; a missing file has none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise KeysFileError(f"{path}: cannot read the API keys file: {exc}") from exc
    return _parse(text, str(path))


# --------------------------------------------------------------------------- writing


def _toml_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _toml(records: list[_Record]) -> str:
    parts = [_HEADER]
    for r in records:
        k = r.key
        lines = ["", "[[keys]]", f"id = {json.dumps(k.id)}", f"role = {json.dumps(k.role)}",
                 # JSON string escapes are valid TOML; control characters are refused earlier
                 f"name = {json.dumps(k.name, ensure_ascii=False)}",
                 f"hash = {json.dumps(r.hash)}", f"created_at = {_toml_time(k.created_at)}"]
        if k.expires_at is not None:
            lines.append(f"expires_at = {_toml_time(k.expires_at)}")
        parts.append("\n".join(lines) + "\n")
    return "".join(parts)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive lock for a read-modify-write of ``path`` (threads and processes alike).

    The lock is a separate file because ``path`` itself is replaced on every write.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _write(path: Path, records: list[_Record]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(_toml(records))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def create_key(path: str | Path, role: str, name: str = "",
               expires_days: int | None = None) -> tuple[str, ApiKey]:
    """A new key of ``role`` added to the file at ``path`` (created if missing).

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
    path = Path(path)
    clear = KEY_PREFIX + secrets.token_urlsafe(32)
    now = datetime.now(UTC).replace(microsecond=0)
    expires = now + timedelta(days=expires_days) if expires_days else None
    with _locked(path):
        records = _read(path)  # a malformed file stops here: existing keys are never lost
        taken = {r.key.id for r in records}
        key_id = f"k_{secrets.token_hex(4)}"
        while key_id in taken:
            key_id = f"k_{secrets.token_hex(4)}"
        key = ApiKey(key_id, role, name, now, expires)
        _write(path, [*records, _Record(key, hash_key(clear))])
    log.info("created API key %s (role %s) in %s", key.id, role, path)
    return clear, key


def list_keys(path: str | Path) -> list[ApiKey]:
    """The keys in the file, in the order they were created; none if the file is missing."""
    return [r.key for r in _read(Path(path))]


def revoke_key(path: str | Path, key_id: str) -> ApiKey:
    """Remove the key ``key_id`` from the file; returns what it was."""
    path = Path(path)
    with _locked(path):
        records = _read(path)
        kept = [r for r in records if r.key.id != key_id]
        if len(kept) == len(records):
            raise UnknownKeyIdError(f"no API key with id {key_id!r} in {path}; "
                                    "`nbo keys list` shows the ids")
        _write(path, kept)
    revoked = next(r.key for r in records if r.key.id == key_id)
    log.info("revoked API key %s (role %s) in %s", revoked.id, revoked.role, path)
    return revoked


# --------------------------------------------------------------------------- the store


class KeyStore:
    """The keys of one file, answering ``authenticate``; follows changes to the file.

    At most once every ``recheck_seconds`` an ``authenticate`` stats the file, and re-reads
    it when it changed. A file made malformed after startup (by a hand edit) fails closed:
    ``authenticate`` raises ``KeysFileError`` until the file is fixed, rather than keep
    honouring keys an edit may have meant to revoke.
    """

    def __init__(self, path: str | Path, *, recheck_seconds: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self.recheck_seconds = RECHECK_SECONDS if recheck_seconds is None else recheck_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._by_hash: dict[str, ApiKey] = {}
        self._signature: tuple | None = ("not read yet",)
        self._error: KeysFileError | None = None
        self._checked_at = float("-inf")
        self.refresh()
        if self._error is not None:
            raise self._error

    @property
    def exists(self) -> bool:
        """Whether the file existed when last looked at."""
        return self._signature is not None

    def __len__(self) -> int:
        return len(self._by_hash)

    def refresh(self) -> None:
        """Look at the file now (not waiting for ``recheck_seconds``), re-read if changed."""
        with self._lock:
            self._checked_at = self._clock()
            try:
                st = self.path.stat()
                signature = (st.st_ino, st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                signature = None
            if signature == self._signature:
                return
            try:
                records = _read(self.path) if signature is not None else []
            except KeysFileError as exc:
                self._error = exc
                log.error("API keys file unusable, refusing every key until it is fixed: %s",
                          exc)
            else:
                self._by_hash = {r.hash: r.key for r in records}
                self._error = None
                log.info("loaded %d API key(s) from %s", len(records), self.path)
            self._signature = signature

    def authenticate(self, token: str, *, now: datetime | None = None) -> ApiKey:
        """The key whose clear form is ``token``.

        Raises ``InvalidKeyError`` for an unknown key, ``ExpiredKeyError`` for an expired one,
        and ``KeysFileError`` while the file is malformed.
        """
        if self._clock() - self._checked_at >= self.recheck_seconds:
            self.refresh()
        if self._error is not None:
            raise self._error
        key = self._by_hash.get(hash_key(token))  # a lookup by hash leaks nothing of the key
        if key is None:
            raise InvalidKeyError("unknown API key" if self._by_hash else
                                  "no API keys are configured")
        if key.expired(now):
            raise ExpiredKeyError(f"API key {key.id} expired at {_toml_time(key.expires_at)}",
                                  key)
        return key
