"""The decision log: every decision served (API and batch), kept to be explained and replayed.

It lives in the service's database (``recommender.store.database``): an SQLite file in WAL mode
on one machine, where gunicorn workers and batch jobs write while others read, or PostgreSQL
shared by several replicas, so that an auditor finds every replica's decisions in one place.
Inputs and
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
import itertools
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken

from . import tables as T
from .database import Database, StoreError, open_database
from .decision_queue import DecisionQueue
from .decision_records import (
    canonical_json,
    encoded_answer,
    fingerprint,
    jsonable,
    list_pack,
    listed_answers,
)

log = logging.getLogger(__name__)

SOURCES = ("api", "batch")
_HASH_CONTEXT = b"recommender.decisions customer_hash v1"
_KEY_CHECK_CONTEXT = b"recommender.decisions key check v1"
_KEY_CHECK = "decision_key_check"  # service_settings: which key the log is written with
# decisions.policy_hash ties each decision to the exact policy text it was served under, even if
# a policy_version label is ever reused for an edited text. Decisions of a batch job share one
# encrypted pack (their inputs and outputs, column-wise); each row points at its pack and row.
_D, _P, _K = T.decisions, T.policies, T.decision_packs
_INSERT = sa.insert(_D)
_INSERT_PACK = sa.insert(_K)
_SELECT = (sa.select(_D.c.id, _D.c.created_at, _D.c.source, _D.c.customer_hash,
                     _D.c.model_version, _D.c.policy_version, _D.c.inputs_fingerprint,
                     _D.c.payload, _P.c.policy_text, _D.c.pack_row, _K.c.digest, _K.c.payload)
           .select_from(_D.outerjoin(_P, _P.c.policy_hash == _D.c.policy_hash)
                        .outerjoin(_K, _K.c.id == _D.c.pack_id)))
_ROW = ("id", "created_at", "source", "customer_hash", "model_version", "policy_version",
        "inputs_fingerprint", "payload", "policy_hash", "pack_id", "pack_row")


class DecisionLogError(StoreError):
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
    """32 hex digits: the time in ms (so ids, and the index on them, grow in time order), a
    counter of this process (so its ids of one millisecond keep the order they were made in:
    the newest-first order of decisions recorded at the same instant), then 56 random bits
    (so workers and replicas never need to agree on ids)."""
    return (f"{time.time_ns() // 1_000_000:012x}{next(_COUNTER) & 0xFFFFFF:06x}"
            f"{os.urandom(7).hex()}")


_COUNTER = itertools.count()


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
    """Append-only record of served decisions in the service's database, shared by threads,
    workers and replicas.

    ``database``: a ``Database`` shared with the other stores, or a URL or an SQLite file's
    path of its own (``owns_database``: close a given ``Database`` with the log).

    With ``flush_seconds`` > 0, ``record`` checks the decision, encodes it as JSON (what the
    caller changes afterwards is not recorded), queues it and returns its id at once; a
    background thread of each process writes the queue every ``flush_seconds`` as one
    compressed, encrypted pack (one encryption and one commit for hundreds of answers, not
    one each), and so do ``close``, any read, and the process's exit. A flush that cannot
    reach the database keeps the queue and tries again. The price: a process killed outright
    (SIGKILL, power cut) loses the decisions of its last ``flush_seconds``, and a NaN or
    infinity in a queued decision is recorded as null. With 0 (the default) each decision is
    committed before ``record`` returns.
    """

    fingerprint = staticmethod(fingerprint)

    def __init__(self, database: Database | str | Path, key: bytes,
                 flush_seconds: float = 0.0, *, owns_database: bool = False) -> None:
        if not flush_seconds >= 0:
            raise ValueError(f"flush_seconds must be >= 0, got {flush_seconds!r}")
        try:
            self._fernet = Fernet(key)
        except (TypeError, ValueError) as exc:
            raise DecisionLogError(f"the key for decision log {database} is not a valid "
                                   "Fernet key; get it from load_or_create_key") from exc
        self.database, self._owned = open_database(database)
        self._owned = self._owned or owns_database  # closed with the log
        self.flush_seconds = float(flush_seconds)
        self._queue = DecisionQueue(self)
        # A derived key, so the hashing key is never the encryption key itself; keyed once,
        # then copied for each customer (half the cost of hmac.digest).
        raw = base64.urlsafe_b64decode(key)
        self._customer_hmac = hmac.new(hmac.digest(raw, _HASH_CONTEXT, "sha256"),
                                       digestmod=hashlib.sha256)
        self._key_check = hmac.digest(raw, _KEY_CHECK_CONTEXT, "sha256").hex()
        self._closed = False

    @property
    def path(self) -> str:
        """Where the log is: the database, as its URL without the password."""
        return self.database.name

    def check_key(self, *, first_use: bool = True) -> None:
        """Refuse a key other than the one the log was written with (a replica given another
        key would write decisions nobody can read); the first user records its key's check
        value. ``first_use=False``: a log with decisions but no recorded key is refused too
        (its key file is lost)."""
        with self.database.begin(write=True) as conn:
            found = conn.execute(sa.select(T.service_settings.c.value).where(
                T.service_settings.c.name == _KEY_CHECK)).scalar()
            if found is None:
                if not first_use and conn.execute(sa.select(_D.c.id).limit(1)).first():
                    raise DecisionLogError(
                        f"the decision log in {self.path} holds decisions but no key was "
                        "recorded for it: restore the key file it was written with")
                T.insert_new(conn, T.service_settings, [{"name": _KEY_CHECK,
                                                         "value": self._key_check}])
            elif not hmac.compare_digest(found, self._key_check):
                raise DecisionLogError(
                    f"the decision log in {self.path} was written with another key: give this "
                    "service the same decision.key file as every other replica (a new key "
                    "could not read the log)")

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
        if self._closed:
            raise DecisionLogError(f"decision log {self.path} is closed; open a new DecisionLog")
        with self.database.begin(write=True) as conn:
            if pack is not None:
                conn.execute(_INSERT_PACK, {"id": pack[0], "digest": pack[1],
                                            "payload": pack[2]})
            T.insert_new(conn, _P, [{"policy_version": v, "policy_hash": h, "policy_text": t}
                                    for v, h, t in policies])
            conn.execute(_INSERT, [dict(zip(_ROW, row, strict=True)) for row in rows])

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

    def _rows(self, query: sa.Select) -> list[sa.Row]:
        if self._closed:
            raise DecisionLogError(f"decision log {self.path} is closed; open a new DecisionLog")
        self.flush()
        with self.database.connect() as conn:
            return conn.execute(query).all()

    def get(self, decision_id: str) -> Decision:
        """One decision by id, decrypted: to explain or replay an answer already given."""
        rows = self._rows(_SELECT.where(_D.c.id == decision_id))
        if not rows:
            raise DecisionLogError(f"no decision {decision_id} in {self.path}")
        return self._decision(tuple(rows[0]))

    def for_customer(self, customer_id: str, limit: int = 20) -> list[Decision]:
        """A customer's latest decisions, newest first: what an audit or complaint asks for."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive int, got {limit!r}")
        rows = self._rows(_SELECT.where(_D.c.customer_hash == self.customer_hash(customer_id))
                          .order_by(_D.c.created_at.desc(), _D.c.id.desc()).limit(limit))
        return [self._decision(tuple(row)) for row in rows]

    def count(self) -> int:
        """How many decisions are recorded."""
        return int(self._rows(sa.select(sa.func.count()).select_from(_D))[0][0])

    @property
    def closed(self) -> bool:
        """Whether ``close`` has been called: a closed log refuses to be used."""
        return self._closed

    def close(self) -> None:
        """Write what is queued and refuse further use; a database the log opened itself is
        closed too. Call it once no thread still uses the log."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            if self._owned:
                self.database.dispose()

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

