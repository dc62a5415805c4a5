"""Features of the acquisition ranker: the project's data model and the bank's own columns.

For a target month, the inputs are the holdings snapshots before it (``lags``, most recent
first), the customer profile and the life stage, then the bank's extra columns as its
``FeatureSchema`` encodes them (numbers as they are, categories as codes fixed at training),
so the same function serves training (earlier transitions), evaluation and live scoring. A
lag at which the customer was not a customer yet is missing (NaN), not zero; so is an extra
column a customer has no value for (one described in a request has none).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data import columns as C
from ..data.features import FeatureSchema


def segments_of(profiles: pd.DataFrame) -> tuple[str, ...]:
    """The segments of the training customers, in a fixed order: the codes a model learns."""
    return tuple(sorted(profiles[C.SEGMENT].astype(str).unique()))


def segment_codes(profiles: pd.DataFrame, segments: tuple[str, ...]) -> np.ndarray:
    """(n,) float64: each customer's segment as its position in ``segments``; a segment the
    model never saw is missing (NaN), not another segment's code."""
    codes = pd.Index(segments).get_indexer(profiles[C.SEGMENT].astype(str))
    return np.where(codes >= 0, codes, np.nan)


@dataclass(frozen=True)
class FeatureSpace:
    """Names and encodings fixed at training time, so scoring builds identical columns."""

    products: tuple[str, ...]
    n_lags: int
    segments: tuple[str, ...]
    extra: FeatureSchema = field(default_factory=FeatureSchema)

    @property
    def names(self) -> list[str]:
        names = [f"{p}_lag{j}" for j in range(1, self.n_lags + 1) for p in self.products]
        names += [f"{p}_dropped" for p in self.products]
        names += [f"{p}_months_held" for p in self.products]
        names += ["n_held", "n_held_lag2", "n_added", "n_dropped", "months_known",
                  C.AGE, C.INCOME, C.TENURE_MONTHS, C.SEGMENT, C.LIFE_STAGE]
        return names + [f"bank_{name}" for name in self.extra.names]

    @classmethod
    def fit(cls, products: list[str], n_lags: int, profiles: pd.DataFrame,
            extra: FeatureSchema | None = None) -> FeatureSpace:
        """``extra``: the bank's further columns; their categories are fixed here."""
        schema = (extra or FeatureSchema()).fit(profiles)
        return cls(products=tuple(products), n_lags=n_lags, segments=segments_of(profiles),
                   extra=schema)

    def build(self, lags: list[sp.csr_matrix], present: np.ndarray, profiles: pd.DataFrame,
              stage_codes: np.ndarray) -> np.ndarray:
        """(n_customers x n_features) float32.

        ``lags[0]`` is the latest snapshot; ``present[:, j]`` says who was a customer at
        ``lags[j]``. Lags beyond those given are missing.
        """
        n, n_products = len(profiles), len(self.products)
        dense = np.full((self.n_lags, n, n_products), np.nan, dtype=np.float32)
        for j, lag in enumerate(lags[: self.n_lags]):
            known = np.asarray(present[:, j], dtype=bool)
            dense[j][known] = lag[known].toarray() > 0
        latest, before = dense[0], dense[1]
        with np.errstate(invalid="ignore"):
            dropped = np.where(np.isnan(before) | np.isnan(latest), np.nan,
                               (before > 0) & (latest == 0))
            added = np.where(np.isnan(before) | np.isnan(latest), np.nan,
                             (latest > 0) & (before == 0))
        known = ~np.isnan(dense[:, :, 0])
        columns = [dense.transpose(1, 0, 2).reshape(n, self.n_lags * n_products), dropped,
                   np.nansum(dense, axis=0) if n else np.zeros((0, n_products)),
                   np.column_stack([
                       np.nansum(latest, axis=1), np.nansum(before, axis=1),
                       np.nansum(added, axis=1), np.nansum(dropped, axis=1),
                       known.sum(axis=0),
                       profiles[C.AGE].to_numpy(dtype=np.float64),
                       profiles[C.INCOME].to_numpy(dtype=np.float64),
                       profiles[C.TENURE_MONTHS].to_numpy(dtype=np.float64),
                       segment_codes(profiles, self.segments),
                       np.asarray(stage_codes, dtype=np.float64),
                   ])]
        if self.extra.columns:
            columns.append(self.extra.encode(profiles))
        return np.hstack(columns).astype(np.float32)
