"""The decision log: every decision served (API and batch), kept to be explained and replayed.

One SQLite file in WAL mode, so gunicorn workers and batch jobs write while others read; each
thread (and each process after a fork) uses its own connection, as SQLite requires. Inputs and
output are stored only as a Fernet token, the customer only as an HMAC keyed from the same secret
(a bare SHA-256 of an id is reversed by hashing every possible id). Policy texts are configuration,
not customer data: each distinct text is stored once, in clear, under its hash.

Decision ids start with the time (ms) and end with 80 random bits: unique without coordination
between workers, and new rows append to the id index instead of rewriting pages all over it.

The key file lives in ``decision_key``, the queue that writes decisions behind ``record`` in
``decision_queue``, and how a decision is written down (JSON, fingerprints, packs) in
``decision_records``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from ..exceptions import RecommenderError
from .decision_queue import DecisionQueue
from .decision_records import (
    canonical_json,
    encoded_answer,
    fingerprint,
    jsonable,
    list_pack,
    listed_answers,
)
from .sqlite_files import use_wal

log = logging.getLogger(__name__)

SOURCES = ("api", "batch")
BUSY_SECONDS = 30.0  # how long a write waits for another writer before giving up
_HASH_CONTEXT = b"recommender.decisions customer_hash v1"
# decisions.policy_hash ties each decision to the exact policy text it was served under, even if
# a policy_version label is ever reused for an edited text.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (id TEXT PRIMARY KEY, created_at TEXT NOT NULL,
    source TEXT NOT NULL, customer_hash TEXT NOT NULL, model_version TEXT NOT NULL,
    policy_version TEXT NOT NULL, inputs_fingerprint TEXT NOT NULL, payload BLOB NOT NULL,
    policy_hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS decisions_by_customer ON decisions (customer_hash, created_at);
CREATE TABLE IF NOT EXISTS policies (policy_version TEXT NOT NULL, policy_hash TEXT PRIMARY KEY,
    policy_text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decision_packs (id TEXT PRIMARY KEY, digest TEXT NOT NULL,
    payload BLOB NOT NULL);
"""
# Decisions of a batch job share one encrypted pack (their inputs and outputs, column-wise);
# each row points at its pack and its row in it. Added to logs created before packs existed.
_PACK_COLUMNS = (("pack_id", "TEXT"), ("pack_row", "INTEGER"))
_INSERT = ("INSERT INTO decisions (id, created_at, source, customer_hash, model_version, "
           "policy_version, inputs_fingerprint, payload, policy_hash, pack_id, pack_row) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_SELECT = ("SELECT d.id, d.created_at, d.source, d.customer_hash, d.model_version, "
           "d.policy_version, d.inputs_fingerprint, d.payload, p.policy_text, d.pack_row, "
           "k.digest, k.payload FROM decisions d "
           "LEFT JOIN policies p ON p.policy_hash = d.policy_hash "
           "LEFT JOIN decision_packs k ON k.id = d.pack_id")


class DecisionLogError(RecommenderError, RuntimeError):
    """The decision log or its key is unusable: wrong key, unknown decision, closed log."""


@dataclass(frozen=True)
class Decision:
    """One recorded decision, decrypted: what was served, from what, under which versions."""

    id: str
    created_at: datetime
    source: str
    customer_hash: str
    model_version: str
    policy_version: str
    inputs_fingerprint: str
    inputs: dict
    output: dict
    policy_text: str
    pack: bytes | None = None  # a batch job's shared inputs; replay.unpacked reads row pack_row
    pack_row: int = -1


def _new_id() -> str:
    """32 hex digits: the time in ms (so ids, and the index on them, grow in time order), then
    80 random bits (so workers never need to agree on ids)."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def _timestamp(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def _customer_checked(customer_id: Any) -> str:
    if not isinstance(customer_id, str):
        raise TypeError(f"customer_id must be a str, got {type(customer_id).__name__}")
    if not customer_id:
        raise ValueError("customer_id is empty")
    return customer_id


def _checked(source: str, model_version: str, policy_version: str, policy_text: str,
             inputs: Any, output: Any, at: datetime | None) -> datetime:
    """The decision's time (now if ``at`` is None), once its arguments pass the checks."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if not all(isinstance(text, str) and text
               for text in (model_version, policy_version, policy_text)):
        raise ValueError("model_version, policy_version and policy_text must be non-empty str")
    when = datetime.now(UTC) if at is None else at
    if when.tzinfo is None:
        raise ValueError("at must be timezone-aware (UTC); got a naive datetime")
    if not isinstance(inputs, Mapping) or not isinstance(output, Mapping):
        raise TypeError("inputs and output must be dicts")
    return when


class DecisionLog:
    """Append-only record of served decisions in one SQLite file, shared by threads and workers.

    With ``flush_seconds`` > 0, ``record`` checks the decision, encodes it as JSON (what the
    caller changes afterwards is not recorded), queues it and returns its id at once; a
    background thread of each process writes the queue every ``flush_seconds`` as one
    compressed, encrypted pack (one encryption and one commit for hundreds of answers, not one
    each), and so do ``close``, any read, and the process's exit. The price: a process killed
    outright (SIGKILL, power cut) loses the decisions of its last ``flush_seconds``, and a NaN
    or infinity in a queued decision is recorded as null. With 0 (the default) each decision
    is on disk before ``record`` returns.
    """

    fingerprint = staticmethod(fingerprint)

    def __init__(self, path: str | Path, key: bytes, flush_seconds: float = 0.0) -> None:
        self.path = Path(path)
        if not flush_seconds >= 0:
            raise ValueError(f"flush_seconds must be >= 0, got {flush_seconds!r}")
        self.flush_seconds = float(flush_seconds)
        self._queue = DecisionQueue(self)
        try:
            self._fernet = Fernet(key)
        except (TypeError, ValueError) as exc:
            raise DecisionLogError(f"the key for decision log {self.path} is not a valid Fernet "
                                   "key; get it from load_or_create_key") from exc
        # A derived key, so the hashing key is never the encryption key itself; keyed once,
        # then copied for each customer (half the cost of hmac.digest).
        raw = base64.urlsafe_b64decode(key)
        self._customer_hmac = hmac.new(hmac.digest(raw, _HASH_CONTEXT, "sha256"),
                                       digestmod=hashlib.sha256)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[tuple[threading.Thread, int, sqlite3.Connection]] = []
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        setup = self._connect()  # closed at once: a process that forks must not hold one
        try:
            # Workers starting at once open a new log together: one of them creates or
            # upgrades the schema while the others wait (a second ALTER TABLE would fail),
            # then each asks for WAL, which the file keeps.
            setup.execute("BEGIN IMMEDIATE")
            try:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    setup.execute(statement)
                present = {row[1] for row in setup.execute("PRAGMA table_info(decisions)")}
                for name, kind in _PACK_COLUMNS:
                    if name not in present:
                        setup.execute(f"ALTER TABLE decisions ADD COLUMN {name} {kind}")
                setup.execute("COMMIT")
            finally:
                if setup.in_transaction:
                    setup.execute("ROLLBACK")
            if use_wal(setup, BUSY_SECONDS) != "wal":
                log.warning("decision log %s cannot use WAL mode; writers will block readers",
                            self.path)
        finally:
            setup.close()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_SECONDS * 1000)}")  # wait, do not fail
        conn.execute("PRAGMA synchronous = FULL")  # an audit record survives a power cut too
        # Checkpoint at 40 MB of WAL, not 4: a pack's rows touch pages all over the customer
        # index, and the right-hand pages of the others again and again; the fewer checkpoints,
        # the fewer copies of them (a quarter less CPU to write packs of 60 answers).
        conn.execute("PRAGMA wal_autocheckpoint = 10000")
        return conn

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection; SQLite connections must not cross threads or forks."""
        if self._closed:
            raise DecisionLogError(f"decision log {self.path} is closed; open a new DecisionLog")
        pid = os.getpid()
        if getattr(self._local, "pid", None) == pid:
            return self._local.conn
        conn = self._connect()
        self._local.conn, self._local.pid = conn, pid
        with self._lock:  # close connections of ended threads; never touch a parent's (fork)
            for entry in [e for e in self._open if e[1] == pid and not e[0].is_alive()]:
                entry[2].close()
                self._open.remove(entry)
            self._open.append((threading.current_thread(), pid, conn))
        return conn

    def customer_hash(self, customer_id: str) -> str:
        """Keyed hash of a customer id: finds their decisions without storing the id."""
        keyed = self._customer_hmac.copy()
        keyed.update(_customer_checked(customer_id).encode())
        return keyed.hexdigest()

    def _prepare(self, *, customer_id: str, source: str, model_version: str, policy_version: str,
                 policy_text: str, inputs: dict, output: dict, at: datetime | None = None
                 ) -> tuple[tuple, tuple[str, str, str]]:
        when = _checked(source, model_version, policy_version, policy_text, inputs, output, at)
        plain = {"inputs": jsonable(inputs, "inputs"), "output": jsonable(output, "output")}
        policy_hash = hashlib.sha256(policy_text.encode()).hexdigest()
        row = (_new_id(), _timestamp(when), source, self.customer_hash(customer_id),
               model_version, policy_version,
               hashlib.sha256(canonical_json(plain["inputs"])).hexdigest(),
               self._fernet.encrypt(canonical_json(plain)), policy_hash, None, None)
        return row, (policy_version, policy_hash, policy_text)

    def record(self, *, customer_id: str, source: str, model_version: str, policy_version: str,
               policy_text: str, inputs: dict, output: dict, at: datetime | None = None) -> str:
        """Record one served decision; returns its id, for the response to carry."""
        if self.flush_seconds > 0:
            return self._enqueue(customer_id, source, model_version, policy_version, policy_text,
                                 inputs, output, at)
        row, policy = self._prepare(
            customer_id=customer_id, source=source, model_version=model_version, at=at,
            policy_version=policy_version, policy_text=policy_text, inputs=inputs, output=output)
        self._write([row], [policy])
        return row[0]

    def record_many(self, rows: Iterable[Mapping[str, Any]]) -> list[str]:
        """Record a batch (rows of ``record``'s arguments) in one transaction: all or nothing."""
        prepared, policies = [], {}
        for number, arguments in enumerate(rows):
            try:
                row, policy = self._prepare(**arguments)
            except (TypeError, ValueError) as exc:
                exc.add_note(f"in decision row {number}")
                raise
            prepared.append(row)
            policies[policy[1]] = policy
        if prepared:
            self._write(prepared, list(policies.values()))
        return [row[0] for row in prepared]

    def record_pack(self, customer_ids: Sequence[str], pack: bytes, *, source: str,
                    model_version: str, policy_version: str, policy_text: str,
                    at: datetime | None = None) -> list[str]:
        """Record one decision per customer of a batch whose inputs and outputs share ``pack``.

        A campaign logs a hundred thousand decisions a chunk: one encryption of one pack,
        not one per customer. Row ``i`` of the pack belongs to ``customer_ids[i]``.
        """
        ids = [str(c) for c in customer_ids]
        if not ids:
            return []
        row, policy = self._prepare(customer_id=ids[0], source=source,
                                    model_version=model_version, policy_version=policy_version,
                                    policy_text=policy_text, inputs={}, output={}, at=at)
        digest, pack_id = hashlib.sha256(pack).hexdigest(), _new_id()
        created, policy_hash = row[1], row[8]
        # Ids follow the pack's (unique) id: in order, so the inserts append to the index.
        rows = [(f"{pack_id}-{i:07d}", created, source, self.customer_hash(cid), model_version,
                 policy_version, f"{digest}:{i}", b"", policy_hash, pack_id, i)
                for i, cid in enumerate(ids)]
        self._write(rows, [policy], (pack_id, digest, self._fernet.encrypt(pack)))
        return [r[0] for r in rows]

    def _enqueue(self, customer_id: str, source: str, model_version: str, policy_version: str,
                 policy_text: str, inputs: dict, output: dict, at: datetime | None) -> str:
        """Check and encode the decision now (as ``record`` does), queue it, name it. What
        needs no check (the customer's hash, the time as text) waits for the flush, whose loop
        over a pack costs less than the same steps once per answer, between other work."""
        when = _checked(source, model_version, policy_version, policy_text, inputs, output, at)
        queued = (_new_id(), when, source, _customer_checked(customer_id), model_version,
                  policy_version, policy_text, encoded_answer(inputs, output))
        self._queue.put(queued)
        return queued[0]

    def flush(self) -> None:
        """Write the queued decisions now, as one pack (nothing to do without a queue)."""
        self._queue.flush(self._write_queued)

    def _write_queued(self, queued: list[tuple]) -> None:
        """One compressed, encrypted pack of the queued answers; one row per decision."""
        pack = list_pack([q[7] for q in queued])
        digest, pack_id = hashlib.sha256(pack).hexdigest(), _new_id()
        policies: dict[tuple[str, str], str] = {}
        rows = []
        for i, (decision_id, when, source, customer_id, model, version, text, _) in \
                enumerate(queued):
            policy_hash = policies.get((version, text))
            if policy_hash is None:
                policy_hash = policies[version, text] = hashlib.sha256(text.encode()).hexdigest()
            rows.append((decision_id, _timestamp(when), source, self.customer_hash(customer_id),
                         model, version, f"{digest}:{i}", b"", policy_hash, pack_id, i))
        self._write(rows, [(v, h, t) for (v, t), h in policies.items()],
                    (pack_id, digest, self._fernet.encrypt(pack)))

    def _write(self, rows: list[tuple], policies: list[tuple[str, str, str]],
               pack: tuple[str, str, bytes] | None = None) -> None:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")  # take the write lock first: two writers never deadlock
        try:
            if pack is not None:
                conn.execute("INSERT INTO decision_packs (id, digest, payload) VALUES (?, ?, ?)",
                             pack)
            conn.executemany("INSERT OR IGNORE INTO policies (policy_version, policy_hash, "
                             "policy_text) VALUES (?, ?, ?)", policies)
            conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _decision(self, row: tuple) -> Decision:
        (decision_id, created, source, customer, model, version, digest, payload, text,
         pack_row, pack_digest, pack_payload) = row
        if not payload and pack_payload is None:
            raise DecisionLogError(f"decision {decision_id} in {self.path} is inconsistent: the "
                                   "pack holding its inputs is missing")
        try:
            if pack_payload is not None:
                pack = self._fernet.decrypt(pack_payload)
                plain = {"inputs": {}, "output": {}}
            else:
                pack, plain = None, json.loads(self._fernet.decrypt(payload))
        except InvalidToken as exc:
            raise DecisionLogError(f"decision {decision_id} in {self.path} cannot be decrypted: "
                                   "the key does not match the one it was recorded with") from exc
        if pack is not None:
            consistent = (hashlib.sha256(pack).hexdigest() == pack_digest
                          and digest == f"{pack_digest}:{pack_row}")
            if consistent and (answers := listed_answers(pack)) is not None:
                plain, pack = answers[pack_row], None
        else:
            consistent = pack_payload is None and fingerprint(plain["inputs"]) == digest
        if text is None or not consistent:
            raise DecisionLogError(f"decision {decision_id} in {self.path} is inconsistent: its "
                                   "inputs or policy text do not match what was recorded")
        return Decision(id=decision_id, created_at=datetime.fromisoformat(created), source=source,
                        customer_hash=customer, model_version=model, policy_version=version,
                        inputs_fingerprint=digest, inputs=plain["inputs"], output=plain["output"],
                        policy_text=text, pack=pack,
                        pack_row=-1 if pack_row is None else int(pack_row))

    def get(self, decision_id: str) -> Decision:
        """One decision by id, decrypted: to explain or replay an answer already given."""
        self.flush()
        row = self._connection().execute(f"{_SELECT} WHERE d.id = ?", (decision_id,)).fetchone()
        if row is None:
            raise DecisionLogError(f"no decision {decision_id} in {self.path}")
        return self._decision(row)

    def for_customer(self, customer_id: str, limit: int = 20) -> list[Decision]:
        """A customer's latest decisions, newest first: what an audit or complaint asks for."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive int, got {limit!r}")
        self.flush()
        rows = self._connection().execute(
            f"{_SELECT} WHERE d.customer_hash = ? ORDER BY d.created_at DESC, d.rowid DESC "
            "LIMIT ?", (self.customer_hash(customer_id), limit)).fetchall()
        return [self._decision(row) for row in rows]

    def count(self) -> int:
        """How many decisions are recorded."""
        self.flush()
        return self._connection().execute("SELECT COUNT(*) FROM decisions").fetchone()[0]

    @property
    def closed(self) -> bool:
        """Whether ``close`` has been called: a closed log refuses to be used."""
        return self._closed

    def close(self) -> None:
        """Write what is queued and close this process's connections; call it once no thread
        still uses the log."""
        if not self._closed:
            self.flush()
        with self._lock:
            mine = [entry for entry in self._open if entry[1] == os.getpid()]
            for entry in mine:
                entry[2].close()
                self._open.remove(entry)
            self._closed = True

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

