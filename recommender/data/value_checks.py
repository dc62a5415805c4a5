"""Checks of an extract's values, column by column: each failure names the file, the column
and the first offending rows, and says what is wrong (``DataValidationError.problem``).

The bounds are those of a plausible bank customer: a value outside them is a data error,
not an outlier to keep. The API holds a customer described in a request to the same bounds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..exceptions import DataValidationError
from . import columns as C

SHOW_ROWS = 5  # offending rows named in a message
FIRST_DATE, LAST_DATE = pd.Timestamp("1850-01-01"), pd.Timestamp("2200-12-31")
RANGES = {C.AGE: (0, 130), C.INCOME: (0, 1e12), C.DEPENDANTS: (0, 30),
          C.TENURE_MONTHS: (0, 1500)}
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def fail(message: str, source: str, column: str, bad: np.ndarray, problem: str = "") -> None:
    rows = tuple(int(r) for r in np.flatnonzero(bad)[:SHOW_ROWS])
    raise DataValidationError(message, source=source, column=column, rows=rows,
                              problem=problem)


def numeric(frame: pd.DataFrame, column: str, source: str, *, integer: bool = False,
             allow_missing: bool = False) -> pd.Series:
    """``column`` as numbers within ``RANGES[column]``."""
    low, high = RANGES[column]
    raw = frame[column]
    if pd.api.types.is_bool_dtype(raw) or raw.dtype == object:
        # true/false is not a number, even though Python would count it as 1/0
        fail_if(raw.map(lambda v: isinstance(v, bool | np.bool_)).to_numpy(dtype=bool),
                 "is a true/false value, not a number", source, column)
    values = pd.to_numeric(raw, errors="coerce")
    missing_raw = raw.isna().to_numpy()
    fail_if(values.isna().to_numpy() & ~missing_raw, "is not a number", source, column)
    if not allow_missing:
        fail_if(missing_raw, "is missing", source, column)
    finite = values.to_numpy(dtype=np.float64, na_value=np.nan)
    out_of_range = ~np.isnan(finite) & ((finite < low) | (finite > high))
    fail_if(out_of_range, f"is outside the possible range [{low}, {high}]", source, column)
    if integer:
        fail_if(~np.isnan(finite) & (finite != np.round(finite)), "is not a whole number",
                 source, column)
        return values.astype(np.int32)
    return values.astype(np.float64)


def fail_if(bad: np.ndarray, what: str, source: str, column: str) -> None:
    if bad.any():
        fail(f"{int(bad.sum())} value(s) in column {column!r} {what}", source, column, bad,
              what)


def categorical(frame: pd.DataFrame, column: str, source: str,
                 allowed: tuple[str, ...]) -> pd.Series:
    values = frame[column].astype("string").str.strip()
    if column != C.RISK_GRADE:
        values = values.str.lower()
    fail_if(~values.isin(allowed).to_numpy(dtype=bool),
             f"is not one of {list(allowed)}", source, column)
    return values.astype(str)


def boolean(frame: pd.DataFrame, column: str, source: str) -> pd.Series:
    raw = frame[column]
    if pd.api.types.is_bool_dtype(raw):
        return raw.astype(bool)
    text = raw.astype("string").str.strip().str.lower()
    fail_if(~text.isin(_TRUE | _FALSE).to_numpy(dtype=bool),
             "is not a yes/no value (true/false, 1/0, yes/no)", source, column)
    return text.isin(_TRUE).astype(bool)


def date_column(frame: pd.DataFrame, column: str, source: str,
           allow_missing: bool = False) -> pd.Series:
    raw = frame[column]
    parsed = pd.to_datetime(raw, errors="coerce")
    fail_if(parsed.isna().to_numpy() & raw.notna().to_numpy(), "is not a date", source, column)
    if not allow_missing:
        fail_if(raw.isna().to_numpy(), "is missing", source, column)
    # Placeholders such as 9999-12-31 are not real dates (and overflow nanosecond time).
    implausible = ((parsed < FIRST_DATE) | (parsed > LAST_DATE)).to_numpy(dtype=bool)
    fail_if(implausible, f"is outside {FIRST_DATE.date()} .. {LAST_DATE.date()}", source,
             column)
    return parsed.astype("datetime64[ns]")
