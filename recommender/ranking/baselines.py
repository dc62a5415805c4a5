"""The baselines every served method is reported beside: what a data scientist would write in
an afternoon, so that a figure of the project means something on a bank never seen.

- ``recent_popularity``: the take-up rate of each product over the last few months (a trend
  beats popularity over all history; skipping owned products is left to the evaluation);
- ``PlainGBDT``: LightGBM with its default parameters on the same information the project
  has (current holdings, profile columns, the bank's extra features), one row per product a
  customer added, no feature engineering, no tuning.

They are deliberately plain: neither is ever served.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data import columns as C
from ..data.interactions import acquisitions
from .config import available_cpus
from .features import segment_codes

RECENT_MONTHS = 3
_PROFILE_COLUMNS = (C.AGE, C.INCOME, C.TENURE_MONTHS)


def recent_popularity(snapshots: list[sp.csr_matrix], presence: np.ndarray,
                      months: int = RECENT_MONTHS) -> np.ndarray:
    """(n_products,) share of present customers who added each product, over the last
    ``months`` transitions of ``snapshots`` (oldest first); holding shares with one snapshot."""
    if len(snapshots) < 2:
        latest = snapshots[-1]
        return np.asarray((latest > 0).sum(axis=0), dtype=np.float64).ravel() / max(
            latest.shape[0], 1)
    added = np.zeros(snapshots[-1].shape[1])
    exposure = 0
    for t in range(max(1, len(snapshots) - months), len(snapshots)):
        was = presence[:, t - 1]
        added += np.asarray(acquisitions(snapshots[t - 1], snapshots[t], was).sum(axis=0)).ravel()
        exposure += int(was.sum())
    return added / max(exposure, 1)


def plain_features(held: sp.csr_matrix, held_before: sp.csr_matrix | None,
                   profiles: pd.DataFrame, segments: tuple[str, ...],
                   extra: np.ndarray | None = None) -> np.ndarray:
    """Holdings 0/1 now and a month before (missing without history), age, income, tenure,
    the segment's position in ``segments`` (those of the training customers, so that every
    frame encodes a segment alike), then ``extra``."""
    segment = segment_codes(profiles, segments)
    before = (np.full(held.shape, np.nan, dtype=np.float32) if held_before is None
              else (held_before > 0).toarray().astype(np.float32))
    parts = [(held > 0).toarray().astype(np.float32), before,
             profiles[list(_PROFILE_COLUMNS)].to_numpy(dtype=np.float32), segment[:, None]]
    if extra is not None and extra.shape[1]:
        parts.append(np.asarray(extra, dtype=np.float32))
    return np.hstack(parts)


class PlainGBDT:
    """LightGBM's defaults, one binary model per product: among customers who added
    something, did they add this one. (Its multiclass objective with the default parameters
    diverges on classes of a few examples, as banks' rare products are: on Santander it fell
    below popularity even on its own training rows; one-vs-rest does not.)"""

    def __init__(self, random_state: int = 42) -> None:
        self.random_state = random_state
        self.boosters: list[lgb.Booster | None] = []
        self.shares: np.ndarray | None = None

    def fit(self, features: np.ndarray, added: sp.csr_matrix) -> PlainGBDT:
        """``features`` of customers before a month, ``added`` what they added in it."""
        labels = (sp.csr_matrix(added) > 0).toarray()
        self.shares = labels.mean(axis=0) if len(labels) else np.zeros(labels.shape[1])
        params = {"objective": "binary", "seed": self.random_state, "deterministic": True,
                  "verbose": -1, "num_threads": available_cpus()}
        self.boosters = [
            lgb.train(params, lgb.Dataset(features, labels[:, j].astype(np.float32)), 100)
            if 2 <= labels[:, j].sum() <= len(labels) - 2 else None
            for j in range(labels.shape[1])]
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(n_customers x n_products) P(the product | the customer adds one); a product
        (almost) never or always added gets its share."""
        out = np.tile(self.shares.astype(np.float32), (len(features), 1))
        for j, booster in enumerate(self.boosters):
            if booster is not None and len(features):
                out[:, j] = booster.predict(features, num_threads=available_cpus())
        return out
