"""Stores a state folder kept before there was one database, brought into it whole.

Before the stores shared a database named by a URL, a state folder held ``responses.db`` and
``decisions.db`` (SQLite files of their own), ``api_keys.toml`` and ``served-version``. A
service meeting them would otherwise start on an empty database and forget every decline it
recorded, so it refuses to start (``check_no_legacy``) and ``nbo db upgrade`` imports them
(``import_legacy``): everything in one transaction, then each file is renamed ``*.imported``,
never deleted. A failed import changes nothing.
"""

from __future__ import annotations

import logging
import sqlite3
import tomllib
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from . import tables as T
from .database import Database, SchemaOutdatedError, StoreError
from .keys import ROLES
from .settings import SERVED_VERSION

log = logging.getLogger(__name__)

RESPONSES, DECISIONS, KEYS, SERVED = ("responses.db", "decisions.db", "api_keys.toml",
                                      "served-version")
_BATCH = 10_000


class LegacyImportError(StoreError):
    """A store file of an older state folder cannot be read; nothing was imported."""


def legacy_files(state_dir: str | Path) -> list[Path]:
    """The older stores present in ``state_dir``."""
    state = Path(state_dir)
    return [state / name for name in (RESPONSES, DECISIONS, KEYS, SERVED)
            if (state / name).is_file()]


def check_no_legacy(state_dir: str | Path) -> None:
    """Refuse to run beside stores not yet imported (they would be silently forgotten)."""
    if found := legacy_files(state_dir):
        names = ", ".join(p.name for p in found)
        raise SchemaOutdatedError(
            f"the state folder {state_dir} holds stores from before the database ({names}): "
            f"run `nbo db upgrade --state {state_dir}` (with the --database the service "
            "uses) to import them")


def import_legacy(database: Database, state_dir: str | Path) -> dict[str, int]:
    """Import the older stores of ``state_dir`` into ``database`` (at this code's schema);
    returns how many rows of each came in."""
    state = Path(state_dir)
    found = legacy_files(state)
    if not found:
        return {}
    counts: dict[str, int] = {}
    with database.begin(write=True) as conn:
        if (state / RESPONSES).is_file():
            counts["responses"] = _import_responses(conn, database, state / RESPONSES)
        if (state / DECISIONS).is_file():
            counts.update(_import_decisions(conn, state / DECISIONS))
        if (state / KEYS).is_file():
            counts["api_keys"] = _import_keys(conn, database, state / KEYS)
        if (state / SERVED).is_file():
            version = (state / SERVED).read_text(encoding="utf-8").strip()
            if version:
                conn.execute(sa.delete(T.service_settings).where(
                    T.service_settings.c.name == SERVED_VERSION))
                conn.execute(sa.insert(T.service_settings),
                             {"name": SERVED_VERSION, "value": version})
                counts["served_version"] = 1
    for path in found:  # committed: the files are kept, renamed, never deleted
        for part in (path, *[path.with_name(path.name + s) for s in ("-wal", "-shm")]):
            if part.exists():
                part.rename(part.with_name(part.name + ".imported"))
    log.info("imported the stores of %s into %s: %s", state, database.name, counts)
    return counts


def _rows(path: Path, query: str) -> Iterator[list[tuple]]:
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            cursor = conn.execute(query)
            while batch := cursor.fetchmany(_BATCH):
                yield batch
    except sqlite3.Error as exc:
        raise LegacyImportError(f"{path}: cannot be read as a store of an older state "
                                f"folder: {exc}; nothing was imported") from exc


def _utc(text: str, database: Database) -> datetime:
    at = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    return at.replace(tzinfo=None) if database.is_sqlite else at


def _import_responses(conn: sa.Connection, database: Database, path: Path) -> int:
    n = 0
    for batch in _rows(path, "SELECT customer_id, product_id, outcome, channel, recorded_at "
                             "FROM responses ORDER BY id"):
        conn.execute(sa.insert(T.responses), [
            {"customer_id": c, "product_id": p, "outcome": o, "channel": ch,
             "recorded_at": _utc(at, database)} for c, p, o, ch, at in batch])
        n += len(batch)
    return n


def _import_decisions(conn: sa.Connection, path: Path) -> dict[str, int]:
    """Policies, packs and decisions; a log from before packs existed has neither the packs
    table nor their two columns (the old code added them when it opened the log)."""
    present = _columns_present(path)
    counts = {}
    for table, columns in ((T.policies, ("policy_version", "policy_hash", "policy_text")),
                           (T.decision_packs, ("id", "digest", "payload")),
                           (T.decisions, ("id", "created_at", "source", "customer_hash",
                                          "model_version", "policy_version",
                                          "inputs_fingerprint", "payload", "policy_hash",
                                          "pack_id", "pack_row"))):
        counts[table.name] = 0
        if table.name not in present:
            continue
        selected = ", ".join(c if c in present[table.name] else f"NULL AS {c}" for c in columns)
        for batch in _rows(path, f"SELECT {selected} FROM {table.name} ORDER BY rowid"):
            T.insert_new(conn, table, [dict(zip(columns, row, strict=True)) for row in batch])
            counts[table.name] += len(batch)
    return counts


def _columns_present(path: Path) -> dict[str, set[str]]:
    """Each table of the SQLite file at ``path``, with its columns."""
    present: dict[str, set[str]] = {}
    for batch in _rows(path, "SELECT name FROM sqlite_master WHERE type = 'table'"):
        for (name,) in batch:
            present[name] = {row[1] for part in _rows(path, f"PRAGMA table_info({name})")
                             for row in part}
    return present


def _import_keys(conn: sa.Connection, database: Database, path: Path) -> int:
    try:
        entries = tomllib.loads(path.read_text(encoding="utf-8")).get("keys", [])
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise LegacyImportError(f"{path}: cannot read the API keys file: {exc}; nothing was "
                                "imported") from exc
    rows = []
    for n, entry in enumerate(entries if isinstance(entries, list) else [None]):
        where = f"{path}: keys[{n}]"
        if not isinstance(entry, dict) or not all(
                isinstance(entry.get(f), str) for f in ("id", "role", "hash")):
            raise LegacyImportError(f"{where}: needs id, role and hash; nothing was imported")
        if entry["role"] not in ROLES or not entry["hash"].startswith("sha256:"):
            raise LegacyImportError(f"{where} (id {entry['id']!r}): role or hash is not valid; "
                                    "nothing was imported")
        times = {}
        for field in ("created_at", "expires_at"):
            value = entry.get(field)
            if value is not None and not (isinstance(value, datetime) and value.tzinfo):
                raise LegacyImportError(f"{where} (id {entry['id']!r}): {field} must be a "
                                        "date-time with an offset; nothing was imported")
            times[field] = None if value is None else _utc(value.isoformat(), database)
        if times["created_at"] is None:
            raise LegacyImportError(f"{where} (id {entry['id']!r}): created_at is missing; "
                                    "nothing was imported")
        rows.append({"id": entry["id"], "role": entry["role"], "name": entry.get("name", ""),
                     "hash": entry["hash"], **times})
    T.insert_new(conn, T.api_keys, rows)
    return len(rows)
