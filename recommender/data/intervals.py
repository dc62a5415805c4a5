"""Holdings kept as intervals, the way core banking systems keep them, as month-end snapshots.

A core system knows when each product was opened and closed (``opened_on``, ``closed_on``;
empty ``closed_on``: still held); everything downstream reads monthly snapshots. The rule:

* the month-ends run from that of the earliest ``opened_on`` to that of the latest date in
  ``opened_on`` / ``closed_on`` (or of ``as_of`` when given), and are at most ``max_months``
  of them: the latest and the ``max_months - 1`` before it;
* a product is held at month-end ``M`` when ``opened_on <= M`` and (``closed_on`` is empty or
  ``closed_on > M``), compared as calendar days. Opened on the month-end itself: held at it;
  closed on the month-end itself: not held at it; opened and closed within one month: never
  held at a month-end.

Validation (file, column, rows) is the extracts module's; this module only does the
arithmetic, vectorised: one row per (interval, month-end held), nothing larger.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from ..exceptions import DataValidationError
from . import columns as C

OPENED_ON = "opened_on"
CLOSED_ON = "closed_on"
DEFAULT_MAX_MONTHS = 24  # two years of month-ends: what acquisition lags and CF need, and more
SNAPSHOTS, INTERVALS = "snapshots", "intervals"
_EXPECTED = (f"monthly snapshots ({C.CUSTOMER_ID}, {C.PRODUCT_ID}, {C.SNAPSHOT_DATE}) or "
             f"intervals ({C.CUSTOMER_ID}, {C.PRODUCT_ID}, {OPENED_ON}, and {CLOSED_ON} empty "
             "while still held)")


def holdings_form(columns: Iterable[str], source: str = "<holdings>") -> str:
    """``SNAPSHOTS`` or ``INTERVALS``, from a holdings extract's columns; both or neither is an
    error naming the file and the columns expected."""
    names = set(columns)
    has_snapshots = C.SNAPSHOT_DATE in names
    interval_columns = sorted(names & {OPENED_ON, CLOSED_ON})
    if has_snapshots and interval_columns:
        raise DataValidationError(
            f"has both {C.SNAPSHOT_DATE!r} and {interval_columns}: a holdings extract holds "
            f"either {_EXPECTED}; drop the columns of the other form", source=source)
    if has_snapshots:
        return SNAPSHOTS
    if OPENED_ON in names:
        return INTERVALS
    raise DataValidationError(
        f"missing required columns [{C.SNAPSHOT_DATE!r}] (or [{OPENED_ON!r}] for intervals): "
        f"a holdings extract holds {_EXPECTED}", source=source)


def month_end(date: pd.Timestamp | str) -> pd.Timestamp:
    """The last day of ``date``'s month, at midnight (a month-end is its own month-end)."""
    return pd.Timestamp(date).normalize() + pd.offsets.MonthEnd(0)


def month_ends(opened: pd.Series, closed: pd.Series, *, as_of: pd.Timestamp | str | None = None,
               max_months: int = DEFAULT_MAX_MONTHS) -> np.ndarray:
    """The month-ends (``datetime64[ns]``, ascending) the intervals are snapshotted at.

    ``opened`` / ``closed`` are parsed dates (``closed`` NaT while still held). The last is
    the month-end of ``as_of`` if given, else of the latest date of either column.
    """
    if isinstance(max_months, bool) or not isinstance(max_months, int | np.integer) or \
            max_months < 1:
        raise ValueError(f"max_months must be a whole number of months >= 1, not {max_months!r}")
    if len(opened) == 0:
        return np.empty(0, dtype="datetime64[ns]")
    if as_of is not None:
        latest = pd.Timestamp(as_of)
    else:
        latest = opened.max() if closed.isna().all() else max(opened.max(), closed.max())
    last = pd.Period(latest, "M")
    first = max(pd.Period(opened.min(), "M"), last - (int(max_months) - 1))
    if first > last:  # every interval opens after as_of
        return np.empty(0, dtype="datetime64[ns]")
    starts = pd.period_range(first, last, freq="M").to_timestamp(how="start")
    return (starts + pd.offsets.MonthEnd(0)).to_numpy().astype("datetime64[ns]")


def held_months(opened: pd.Series | np.ndarray, closed: pd.Series | np.ndarray,
                ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, months)``: interval ``rows[i]`` is held at month-end ``ends[months[i]]``.

    One pair per (interval, month-end held), grouped by interval; nothing larger is built.
    Dates are compared as calendar days (times of day are dropped).
    """
    ends = np.asarray(ends, dtype="datetime64[ns]")
    opened = pd.to_datetime(pd.Series(opened)).dt.normalize().to_numpy("datetime64[ns]")
    closed = pd.to_datetime(pd.Series(closed)).dt.normalize().to_numpy("datetime64[ns]")
    first = np.searchsorted(ends, opened, side="left")  # the first month-end >= opened_on
    # month-ends strictly before closed_on; all of them while still held
    stop = np.where(np.isnat(closed), len(ends), np.searchsorted(ends, closed, side="left"))
    counts = np.maximum(stop - first, 0)
    rows = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    # each interval's run of months counts up from its first month-end
    months = np.arange(len(rows), dtype=np.int64)
    months -= np.repeat(np.cumsum(counts) - counts - first, counts)
    return rows, months.astype(np.int32)
