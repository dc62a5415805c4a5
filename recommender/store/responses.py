"""The durable store of customers' responses to offers: shown, accepted, declined.

The contact policy reads it so that a customer is not offered the same thing again and again,
and an audit reads it to see what was offered, so a response is on disk before ``record``
returns. SQLite in WAL mode lets several gunicorn workers (processes, each with threads) write
at once while readers never wait; each thread gets its own connection because a sqlite3
connection must not be used by two threads at once, nor carried across a fork.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ..data import columns as C
from ..exceptions import RecommenderError
from ..policy.config import CHANNELS
from .sqlite_files import use_wal

log = logging.getLogger(__name__)

OUTCOMES = ("shown", "accepted", "declined")
SCHEMA_VERSION = 1  # PRAGMA user_version of a store this module wrote
HISTORY_COLUMNS = (C.CUSTOMER_ID, C.PRODUCT_ID, "outcome", "channel", "recorded_at")
BUSY_SECONDS = 10.0  # how long a write waits for another writer before giving up
_CHUNK = 900  # ids per query: stays below 999, the variable limit of SQLite before 3.32
_HEADER = b"SQLite format 3\x00"
_COLUMNS = ("id", *HISTORY_COLUMNS)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM responses"
_SCHEMA = (
    "CREATE TABLE responses (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " customer_id TEXT NOT NULL, product_id TEXT NOT NULL, outcome TEXT NOT NULL"
    f" CHECK (outcome IN ({', '.join(repr(o) for o in OUTCOMES)})),"
    " channel TEXT NOT NULL, recorded_at TEXT NOT NULL)",
    "CREATE INDEX responses_by_customer_time ON responses (customer_id, recorded_at)",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)


class ResponseError(RecommenderError, ValueError):
    """A response (or a query of responses) has a missing or invalid field."""


class ResponseStoreError(RecommenderError, RuntimeError):
    """The store's file is not a response store, cannot be opened, or stays locked."""


@dataclass(frozen=True)
class Response:
    """One stored response; ``recorded_at`` is timezone-aware UTC."""

    id: int
    customer_id: str
    product_id: str
    outcome: str
    channel: str
    recorded_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``recorded_at`` as ISO 8601 UTC ending in Z."""
        return {**asdict(self), "recorded_at": _to_text(self.recorded_at)}


def _to_text(at: datetime) -> str:
    """Fixed-width UTC text with microseconds, so that text order is time order."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _aware(at: object, field: str) -> datetime:
    if not isinstance(at, datetime):
        raise ResponseError(f"{field} must be a datetime, got {type(at).__name__}")
    if at.utcoffset() is None:
        raise ResponseError(f"{field} must be timezone-aware (e.g. datetime.now(UTC)); "
                            f"a naive time {at.isoformat()} is ambiguous")
    return at


def _text_id(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ResponseError(f"{field} must be a non-empty string, got {value!r}")
    return value.strip()


def _one_of(value: object, field: str, allowed: Collection[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ResponseError(f"{field} must be one of {sorted(allowed)}, got {value!r}")
    return value


def _first_bytes(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.read(len(_HEADER))


def _columns(conn: sqlite3.Connection) -> tuple[str, ...]:
    return tuple(row[1] for row in conn.execute("PRAGMA table_info(responses)"))


def _response(row: tuple) -> Response:
    return Response(*row[:5], recorded_at=datetime.fromisoformat(row[5]))


class ResponseStore:
    """Responses in one SQLite file, safe to share between threads and processes.

    ``product_ids``, when given, is the catalog: responses to other products are refused.
    """

    def __init__(self, path: str | Path, product_ids: Collection[str] | None = None) -> None:
        self.path = Path(path)
        self.product_ids = None if product_ids is None else frozenset(product_ids)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._inherited: list[sqlite3.Connection] = []  # a parent's, kept but never touched
        self._closed = False
        _STORES.add(self)
        try:
            self._open_or_create()
        except BaseException:
            self.close()
            raise

    def _open_or_create(self) -> None:
        if self.path.is_dir() or (self.path.is_file() and self.path.stat().st_size
                                  and _first_bytes(self.path) != _HEADER):
            raise ResponseStoreError(f"{self.path} exists but is not an SQLite database; "
                                     "point the response store at a new file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._transaction("BEGIN IMMEDIATE") as conn:  # processes starting at once
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # create it once
            if version == 0 and not conn.execute("SELECT 1 FROM sqlite_master").fetchone():
                for statement in _SCHEMA:
                    conn.execute(statement)
                log.info("created the response store %s", self.path)
            elif version != SCHEMA_VERSION or _columns(conn) != _COLUMNS:
                raise ResponseStoreError(
                    f"{self.path} is an SQLite database but not a response store of schema "
                    f"version {SCHEMA_VERSION} (user_version {version}, responses columns "
                    f"{list(_columns(conn))}); point the response store at a new file")
            conn.execute("COMMIT")
        with self._transaction(None) as conn:  # the mode persists in the file, for every user
            mode = use_wal(conn, BUSY_SECONDS)
        if mode != "wal":  # e.g. a network file system: still correct, but writers block readers
            log.warning("response store %s could not use WAL (journal mode %s)", self.path, mode)

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        if self._closed:
            raise ResponseStoreError(f"the response store {self.path} is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # check_same_thread=False only so that close() may close every thread's connection
            conn = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_SECONDS * 1000)}")
            # FULL syncs the WAL at every commit: NORMAL may lose the last responses on power
            # loss, and a lost "declined" means the customer is pestered again. Writes are few.
            conn.execute("PRAGMA synchronous = FULL")
            with self._lock:  # connections of threads that have ended are closed, not leaked
                for thread, old in self._connections:
                    if not thread.is_alive():
                        old.close()
                self._connections = [(t, c) for t, c in self._connections if t.is_alive()]
                self._connections.append((threading.current_thread(), conn))
            self._local.conn = conn
        return conn

    @contextmanager
    def _transaction(self, begin: str | None = "BEGIN") -> Iterator[sqlite3.Connection]:
        """This thread's connection inside ``begin`` (None: autocommit); rolls back whatever
        the block did not commit, and names the store's file in any database error."""
        conn = None
        try:
            conn = self._connection()
            if begin:
                conn.execute(begin)
            yield conn
        except sqlite3.Error as exc:
            raise ResponseStoreError(f"response store {self.path}: {exc}") from exc
        finally:
            if conn is not None and conn.in_transaction:
                conn.execute("ROLLBACK")

    def _after_fork(self) -> None:
        self._inherited += [conn for _, conn in self._connections]
        self._connections, self._local, self._lock = [], threading.local(), threading.Lock()

    def record(self, customer_id: str, product_id: str, outcome: str, channel: str,
               at: datetime | None = None) -> Response:
        """Store one response (``at`` defaults to now) and return it as stored, with its id."""
        customer_id = _text_id(customer_id, "customer_id")
        product_id = _text_id(product_id, "product_id")
        if self.product_ids is not None:
            _one_of(product_id, "product_id", self.product_ids)
        row = (customer_id, product_id, _one_of(outcome, "outcome", OUTCOMES),
               _one_of(channel, "channel", CHANNELS),
               _to_text(datetime.now(UTC) if at is None else _aware(at, "at")))
        with self._transaction(None) as conn:
            cursor = conn.execute("INSERT INTO responses (customer_id, product_id, outcome, "
                                  "channel, recorded_at) VALUES (?, ?, ?, ?, ?)", row)
        log.debug("recorded response %d (%s via %s)", cursor.lastrowid, row[2], row[3])
        return _response((cursor.lastrowid, *row))

    def for_customer(self, customer_id: str, limit: int | None = None) -> list[Response]:
        """A customer's responses, newest first (ties: the later recorded first)."""
        sql, params = f"{_SELECT} WHERE customer_id = ? ORDER BY recorded_at DESC, id DESC", [
            _text_id(customer_id, "customer_id")]
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise ResponseError(f"limit must be None or a whole number >= 0, got {limit!r}")
            sql, params = f"{sql} LIMIT ?", [*params, limit]
        with self._transaction(None) as conn:
            return [_response(row) for row in conn.execute(sql, params)]

    def contact_history(self, customer_ids: Sequence[str], since: datetime) -> pd.DataFrame:
        """Responses of these customers recorded at or after ``since``: what the contact policy
        reads. One indexed query per chunk of ids, all in one read transaction (one snapshot).
        """
        if isinstance(customer_ids, str):
            raise ResponseError("customer_ids must be a sequence of ids, not one string")
        ids = sorted({_text_id(c, "customer_ids") for c in customer_ids})
        start, rows = _to_text(_aware(since, "since")), []
        with self._transaction("BEGIN") as conn:
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i:i + _CHUNK]
                rows += conn.execute(
                    f"SELECT {', '.join(HISTORY_COLUMNS)} FROM responses WHERE customer_id "
                    f"IN ({', '.join('?' * len(chunk))}) AND recorded_at >= ? "
                    "ORDER BY customer_id, recorded_at, id", (*chunk, start)).fetchall()
        return _history_frame(rows)

    def history_since(self, since: datetime) -> pd.DataFrame:
        """Every response recorded at or after ``since`` (``contact_history`` of every
        customer): what a batch job ships to workers that cannot reach this file."""
        start = _to_text(_aware(since, "since"))
        with self._transaction("BEGIN") as conn:
            rows = conn.execute(
                f"SELECT {', '.join(HISTORY_COLUMNS)} FROM responses WHERE recorded_at >= ? "
                "ORDER BY customer_id, recorded_at, id", (start,)).fetchall()
        return _history_frame(rows)

    def any_since(self, customer_id: str, since: datetime) -> bool:
        """Whether the customer has a response recorded at or after ``since``: one indexed
        lookup, so the usual answer (no history) costs no table of history."""
        with self._transaction(None) as conn:
            return conn.execute("SELECT 1 FROM responses WHERE customer_id = ? AND "
                                "recorded_at >= ? LIMIT 1",
                                (_text_id(customer_id, "customer_id"),
                                 _to_text(_aware(since, "since")))).fetchone() is not None

    def count(self) -> int:
        """How many responses the store holds."""
        with self._transaction(None) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        """Close every thread's connection; call it when no thread is using the store."""
        with self._lock:
            self._closed = True
            for _, conn in self._connections:
                conn.close()
            self._connections = []

    def __enter__(self) -> ResponseStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _history_frame(rows: list[tuple]) -> pd.DataFrame:
    if not rows:  # most customers, most of the time: skip the conversions
        return _EMPTY_HISTORY.copy()
    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    for column in HISTORY_COLUMNS[:-1]:
        frame[column] = frame[column].astype(str)
    frame["recorded_at"] = pd.to_datetime(frame["recorded_at"], utc=True,
                                          format="ISO8601").astype("datetime64[ns, UTC]")
    return frame


class ContactHistory:
    """Responses recorded since a date, held in memory, answering ``contact_history`` as the
    store does: a batch job's workers read this instead of the store's file."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    def contact_history(self, customer_ids: Sequence[str], since: datetime) -> pd.DataFrame:
        mine = self.frame[self.frame[C.CUSTOMER_ID].isin(list(customer_ids))
                          & (self.frame["recorded_at"] >= pd.Timestamp(_aware(since, "since")))]
        return mine.reset_index(drop=True) if len(mine) else _EMPTY_HISTORY.copy()


_EMPTY_HISTORY = pd.DataFrame({
    **{column: pd.Series([], dtype=object) for column in HISTORY_COLUMNS[:-1]},
    "recorded_at": pd.Series([], dtype="datetime64[ns, UTC]")})

# A forked child (gunicorn --preload) must open its own connections, never use its parent's.
_STORES: weakref.WeakSet[ResponseStore] = weakref.WeakSet()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: [store._after_fork() for store in _STORES])
