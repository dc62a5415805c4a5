"""The durable store of customers' responses to offers: shown, accepted, declined.

The contact policy reads it so that a customer is not offered the same thing again and again,
and an audit reads it to see what was offered, so a response is committed before ``record``
returns. It lives in the service's database (``recommender.store.database``): an SQLite file
for one machine, PostgreSQL shared by several replicas, so that a decline recorded on one is
seen by all at their next read and contact caps count across them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from ..data import columns as C
from ..exceptions import RecommenderError
from ..policy.config import CHANNELS
from .database import Database, StoreError, open_database
from .tables import responses as _table

log = logging.getLogger(__name__)

OUTCOMES = ("shown", "accepted", "declined")
HISTORY_COLUMNS = (C.CUSTOMER_ID, C.PRODUCT_ID, "outcome", "channel", "recorded_at")
EXPOSURE_COLUMNS = ("model_version", "life_stage", "arm", "propensity", "factor")
NANOS = 1_000_000_000  # the unit of ``evidence``'s expected accepts
_CHUNK = 900  # ids per query: stays below 999, the variable limit of SQLite before 3.32
_COLUMNS = [_table.c[name] for name in HISTORY_COLUMNS]
_INSERT = sa.insert(_table).returning(_table.c.id)
_FOR_CUSTOMER = (sa.select(_table.c.id, *_COLUMNS)
                 .where(_table.c.customer_id == sa.bindparam("customer_id"))
                 .order_by(_table.c.recorded_at.desc(), _table.c.id.desc()))
_ANY_SINCE = sa.select(sa.literal(1)).where(
    _table.c.customer_id == sa.bindparam("customer_id"),
    _table.c.recorded_at >= sa.bindparam("since")).limit(1)
_HISTORY_ORDER = (_table.c.customer_id, _table.c.recorded_at, _table.c.id)


class ResponseError(RecommenderError, ValueError):
    """A response (or a query of responses) has a missing or invalid field."""


class ResponseStoreError(StoreError):
    """The store is closed, or its database holds no response store."""


@dataclass(frozen=True)
class Exposure:
    """What the service knew of the customer when an offer was answered: the model version,
    life stage and experiment arm, the propensity the model predicted (before any adaptive
    correction: the prior the correction is measured against) and the factor in use. The
    adaptive correction, the experiment report and the monitor read these."""

    model_version: str
    life_stage: str
    arm: str
    propensity: float
    factor: float = 1.0

    def __post_init__(self) -> None:
        for name in ("propensity", "factor"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not (
                    math.isfinite(value) and value >= 0):
                raise ResponseError(f"exposure {name} must be a finite number >= 0, "
                                    f"got {value!r}")
        if self.propensity > 1:
            raise ResponseError(f"exposure propensity must be at most 1, got {self.propensity}")


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
    """ISO 8601 UTC ending in Z, with microseconds: what the API shows."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _utc(at: datetime) -> datetime:
    """A stored time as aware UTC (SQLite gives it back naive, PostgreSQL in its zone)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


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


def _response(row: sa.Row) -> Response:
    return Response(*row[:5], recorded_at=_utc(row[5]))


class ResponseStore:
    """Responses in the service's database, safe to share between threads and processes.

    ``database``: a ``Database`` (shared with the other stores), or a URL or an SQLite file's
    path of its own. ``product_ids``, when given, is the catalog: responses to other products
    are refused. Nothing is read until the first call, so a service may start while its
    database is away (and report itself not ready).
    """

    def __init__(self, database: Database | str | Path,
                 product_ids: Collection[str] | None = None) -> None:
        self.database, self._owned = open_database(database)
        self.product_ids = None if product_ids is None else frozenset(product_ids)
        self._closed = False

    @property
    def path(self) -> str:
        """Where the responses are: the database, as its URL without the password."""
        return self.database.name

    def _check_open(self) -> None:
        if self._closed:
            raise ResponseStoreError(f"the response store in {self.database.name} is closed")

    def record(self, customer_id: str, product_id: str, outcome: str, channel: str,
               at: datetime | None = None, exposure: Exposure | None = None) -> Response:
        """Store one response (``at`` defaults to now) and return it as stored, with its id;
        ``exposure``: what the service knew when it was answered (evidence for learning)."""
        customer_id = _text_id(customer_id, "customer_id")
        product_id = _text_id(product_id, "product_id")
        if self.product_ids is not None:
            _one_of(product_id, "product_id", self.product_ids)
        when = (datetime.now(UTC) if at is None else _aware(at, "at")).astimezone(UTC)
        row = {"customer_id": customer_id, "product_id": product_id,
               "outcome": _one_of(outcome, "outcome", OUTCOMES),
               "channel": _one_of(channel, "channel", CHANNELS),
               # microseconds, as both databases keep them; SQLite stores UTC as it is given
               "recorded_at": when.replace(tzinfo=None) if self.database.is_sqlite else when}
        if exposure is not None:
            row.update(asdict(exposure))
        self._check_open()
        with self.database.begin() as conn:
            new_id = conn.execute(_INSERT, row).scalar_one()
        log.debug("recorded response %d (%s via %s)", new_id, row["outcome"], row["channel"])
        return Response(new_id, customer_id, product_id, row["outcome"], row["channel"], when)

    def for_customer(self, customer_id: str, limit: int | None = None) -> list[Response]:
        """A customer's responses, newest first (ties: the later recorded first)."""
        query = _FOR_CUSTOMER
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise ResponseError(f"limit must be None or a whole number >= 0, got {limit!r}")
            query = query.limit(limit)
        params = {"customer_id": _text_id(customer_id, "customer_id")}
        self._check_open()
        with self.database.connect() as conn:
            return [_response(row) for row in conn.execute(query, params)]

    def contact_history(self, customer_ids: Sequence[str], since: datetime) -> pd.DataFrame:
        """Responses of these customers recorded at or after ``since``: what the contact policy
        reads. One indexed query per chunk of ids, all in one read transaction (one snapshot).
        """
        if isinstance(customer_ids, str):
            raise ResponseError("customer_ids must be a sequence of ids, not one string")
        ids = sorted({_text_id(c, "customer_ids") for c in customer_ids})
        start, rows = self._bound(since), []
        self._check_open()
        with self.database.begin() as conn:
            for i in range(0, len(ids), _CHUNK):
                rows += conn.execute(
                    sa.select(*_COLUMNS).where(_table.c.customer_id.in_(ids[i:i + _CHUNK]),
                                               _table.c.recorded_at >= start)
                    .order_by(*_HISTORY_ORDER)).all()
        return _history_frame(rows)

    def history_since(self, since: datetime) -> pd.DataFrame:
        """Every response recorded at or after ``since`` (``contact_history`` of every
        customer): what a batch job ships to workers that cannot reach the database."""
        start = self._bound(since)
        self._check_open()
        with self.database.begin() as conn:
            rows = conn.execute(sa.select(*_COLUMNS).where(_table.c.recorded_at >= start)
                                .order_by(*_HISTORY_ORDER)).all()
        return _history_frame(rows)

    def any_since(self, customer_id: str, since: datetime) -> bool:
        """Whether the customer has a response recorded at or after ``since``: one indexed
        lookup, so the usual answer (no history) costs no table of history."""
        params = {"customer_id": _text_id(customer_id, "customer_id"),
                  "since": self._bound(since)}
        self._check_open()
        with self.database.connect() as conn:
            return conn.execute(_ANY_SINCE, params).first() is not None

    def evidence(self, since: datetime, until: datetime) -> pd.DataFrame:
        """Offers answered in [since, until) with a predicted propensity, counted per
        product, channel, life stage and UTC day: ``shows``, ``expected_nanos`` (the sum of
        the propensities predicted for the shows, in billionths: integers add up the same in
        any order, so counts summed in steps equal counts read at once) and ``accepts``.
        One grouped scan of the time index: what the adaptive correction is refreshed from.

        Every model version's answers count: the ratio says how far the bank's models
        over- or under-predict a product, which a retrain on last month's holdings does not
        change (a deposit that stopped selling stays corrected across a new version)."""
        day = (sa.func.substr(_table.c.recorded_at, 1, 10) if self.database.is_sqlite
               else sa.func.to_char(sa.func.timezone("UTC", _table.c.recorded_at),
                                    "YYYY-MM-DD"))
        shown = _table.c.outcome == "shown"
        query = (sa.select(
            _table.c.product_id, _table.c.channel, _table.c.life_stage, day.label("day"),
            sa.func.sum(sa.case((shown, 1), else_=0)).label("shows"),
            sa.func.sum(sa.case((shown, sa.func.round(_table.c.propensity * NANOS)),
                                else_=0)).label("expected_nanos"),
            sa.func.sum(sa.case((_table.c.outcome == "accepted", 1), else_=0)).label("accepts"))
            .where(_table.c.propensity.is_not(None),
                   _table.c.recorded_at >= self._bound(since),
                   _table.c.recorded_at < self._bound(until))
            .group_by(_table.c.product_id, _table.c.channel, _table.c.life_stage, day))
        self._check_open()
        with self.database.connect() as conn:
            rows = conn.execute(query).all()
        frame = pd.DataFrame(rows, columns=["product_id", "channel", "life_stage", "day",
                                            "shows", "expected_nanos", "accepts"])
        return frame.astype({"shows": np.int64, "expected_nanos": np.int64,
                             "accepts": np.int64})

    def answered(self, since: datetime, until: datetime | None = None) -> pd.DataFrame:
        """Every response recorded in [since, until) with what was known when it was
        answered (``Exposure``'s columns, null for responses recorded without it): what the
        experiment report and the monitor read."""
        columns = [*_COLUMNS, *(_table.c[name] for name in EXPOSURE_COLUMNS)]
        query = sa.select(*columns).where(_table.c.recorded_at >= self._bound(since))
        if until is not None:
            query = query.where(_table.c.recorded_at < self._bound(until))
        self._check_open()
        with self.database.connect() as conn:
            rows = conn.execute(query.order_by(_table.c.recorded_at, _table.c.id)).all()
        frame = pd.DataFrame(rows, columns=[*HISTORY_COLUMNS, *EXPOSURE_COLUMNS])
        frame["recorded_at"] = pd.to_datetime(frame["recorded_at"], utc=True)
        return frame.astype({"propensity": np.float64, "factor": np.float64})

    def count(self) -> int:
        """How many responses the store holds."""
        self._check_open()
        with self.database.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(_table)).scalar())

    def _bound(self, since: datetime) -> datetime:
        at = _aware(since, "since").astimezone(UTC)
        return at.replace(tzinfo=None) if self.database.is_sqlite else at

    def close(self) -> None:
        """Refuse further use; a database the store opened itself is closed too."""
        self._closed = True
        if self._owned:
            self.database.dispose()

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
    frame["recorded_at"] = pd.to_datetime(frame["recorded_at"], utc=True).astype(
        "datetime64[ns, UTC]")
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
