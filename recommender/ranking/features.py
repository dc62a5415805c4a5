"""Features of the acquisition ranker, computed from the project's data model alone.

For a target month, the inputs are the holdings snapshots before it (``lags``, most recent
first), the customer profile and the life stage, so the same function serves training
(earlier transitions), evaluation and live scoring. A lag at which the customer was not a
customer yet is missing (NaN), not zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data import columns as C


@dataclass(frozen=True)
class FeatureSpace:
    """Names and encodings fixed at training time, so scoring builds identical columns."""

    products: tuple[str, ...]
    n_lags: int
    segments: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        names = [f"{p}_lag{j}" for j in range(1, self.n_lags + 1) for p in self.products]
        names += [f"{p}_dropped" for p in self.products]
        names += [f"{p}_months_held" for p in self.products]
        return names + ["n_held", "n_held_lag2", "n_added", "n_dropped", "months_known",
                        C.AGE, C.INCOME, C.TENURE_MONTHS, C.SEGMENT, C.LIFE_STAGE]

    @classmethod
    def fit(cls, products: list[str], n_lags: int, profiles: pd.DataFrame) -> FeatureSpace:
        segments = tuple(sorted(profiles[C.SEGMENT].astype(str).unique()))
        return cls(products=tuple(products), n_lags=n_lags, segments=segments)

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
        segment = pd.Index(self.segments).get_indexer(profiles[C.SEGMENT].astype(str))
        columns = [dense.transpose(1, 0, 2).reshape(n, self.n_lags * n_products), dropped,
                   np.nansum(dense, axis=0) if n else np.zeros((0, n_products)),
                   np.column_stack([
                       np.nansum(latest, axis=1), np.nansum(before, axis=1),
                       np.nansum(added, axis=1), np.nansum(dropped, axis=1),
                       known.sum(axis=0),
                       profiles[C.AGE].to_numpy(dtype=np.float64),
                       profiles[C.INCOME].to_numpy(dtype=np.float64),
                       profiles[C.TENURE_MONTHS].to_numpy(dtype=np.float64),
                       np.where(segment >= 0, segment, np.nan),  # unseen segment: missing
                       np.asarray(stage_codes, dtype=np.float64),
                   ])]
        return np.hstack(columns).astype(np.float32)
