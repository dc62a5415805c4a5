"""Customer profiles as the plain arrays that rules and rankers read.

Profiles are a table of strings, dates and numbers; the decision policy needs them as
numbers (risk level 1-5, residency code, assessment date). Decoding them costs more than the
rules themselves at a million customers, so a customer book decodes its customers once and
every batch slices the arrays; a batch built any other way decodes its own few rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from . import columns as C


def plain_value(value: Any) -> Any:
    """A numpy or pandas scalar as a plain JSON value; missing values become None."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.isoformat()
    return value


@dataclass(frozen=True)
class ProfileArrays:
    """Row-aligned arrays of the profile columns the policy and the rankers read."""

    age: np.ndarray  # float64
    income: np.ndarray  # float64, NaN when unknown
    residency: np.ndarray  # int64 codes into ``residencies``
    residencies: tuple[str, ...]  # the distinct residency values
    risk_level: np.ndarray  # int64, 1 for C1 ... 5 for C5
    assessed_on: np.ndarray  # datetime64[ns], NaT when never assessed
    consent: np.ndarray  # bool: consented to profiling
    vulnerable: np.ndarray  # bool
    open_complaint: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.age)

    @classmethod
    def of(cls, profiles: pd.DataFrame) -> ProfileArrays:
        """Decode validated profiles; optional columns absent mean never assessed, not
        vulnerable, no complaint."""
        n = len(profiles)
        residency, residencies = _codes(profiles[C.RESIDENCY])
        grade, grades = _codes(profiles[C.RISK_GRADE])
        assessed = (pd.to_datetime(profiles[C.RISK_ASSESSED_ON]).to_numpy(dtype="datetime64[ns]")
                    if C.RISK_ASSESSED_ON in profiles else np.full(n, np.datetime64("NaT", "ns")))
        flags = {f: profiles[f].to_numpy(dtype=bool) if f in profiles else np.zeros(n, bool)
                 for f in (C.VULNERABLE, C.OPEN_COMPLAINT)}
        return cls(
            age=profiles[C.AGE].to_numpy(dtype=np.float64),
            income=profiles[C.INCOME].to_numpy(dtype=np.float64),
            residency=residency, residencies=tuple(residencies.tolist()),
            risk_level=(np.searchsorted(np.asarray(C.RISK_GRADES), grades) + 1)[grade],
            assessed_on=assessed,
            consent=profiles[C.CONSENT_PROFILING].to_numpy(dtype=bool),
            vulnerable=flags[C.VULNERABLE], open_complaint=flags[C.OPEN_COMPLAINT])

    def take(self, rows: np.ndarray | slice) -> ProfileArrays:
        """These rows only, in this order."""
        return ProfileArrays(
            age=self.age[rows], income=self.income[rows], residency=self.residency[rows],
            residencies=self.residencies, risk_level=self.risk_level[rows],
            assessed_on=self.assessed_on[rows], consent=self.consent[rows],
            vulnerable=self.vulnerable[rows], open_complaint=self.open_complaint[rows])


def _codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(int64 codes, distinct values as strings): a string per distinct value, not per row;
    a missing value is the string "nan", as ``astype(str)`` makes it."""
    codes, values = pd.factorize(column, use_na_sentinel=False)
    return codes.astype(np.int64), np.asarray(values, dtype=object).astype(str)
