"""Popularity of recent acquisitions, overall and within each life stage.

The overall figure is the baseline every ranking must beat; the per-stage figure is the
cold-start prior for customers CF knows nothing about, and the life-stage half of the
served hybrid score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..data.interactions import acquisitions


@dataclass(frozen=True)
class AcquisitionRates:
    """Monthly take-up rate of each product, overall and per life stage."""

    overall: np.ndarray  # (n_products,)
    by_stage: np.ndarray  # (n_stages, n_products)
    kind: str = "take_up"  # "holding": one snapshot, holding shares stand in for rates

    def for_stages(self, stage_codes: np.ndarray) -> np.ndarray:
        """(n_customers x n_products) prior rates for customers of the given stages."""
        return self.by_stage[np.asarray(stage_codes, dtype=np.int64)]


def acquisition_rates(snapshots: list[sp.csr_matrix], stage_codes: np.ndarray, n_stages: int,
                      smoothing: float = 50.0) -> AcquisitionRates:
    """Take-up rates from consecutive snapshots (oldest first).

    Stage rates are shrunk toward the overall rate with ``smoothing`` pseudo-customers, so a
    small stage does not get a noisy prior. With a single snapshot there are no transitions;
    holding rates stand in for take-up rates.
    """
    n_customers, n_products = snapshots[-1].shape
    stage_codes = np.asarray(stage_codes, dtype=np.int64)
    by_stage_sum = sp.csr_matrix(
        (np.ones(n_customers, dtype=np.float64), (stage_codes, np.arange(n_customers))),
        shape=(n_stages, n_customers),
    )
    counts = np.zeros((n_stages, n_products), dtype=np.float64)
    exposure = np.zeros(n_stages, dtype=np.float64)
    pairs = list(zip(snapshots[:-1], snapshots[1:], strict=True))
    for before, after in pairs or [(None, snapshots[-1])]:
        if before is None:
            events, present = after, np.ones(n_customers, dtype=np.float64)
        else:
            events, present = acquisitions(before, after), np.diff(before.indptr) > 0
        counts += (by_stage_sum @ events).toarray()
        exposure += by_stage_sum @ present.astype(np.float64)
    overall = counts.sum(axis=0) / max(exposure.sum(), 1.0)
    weight = exposure[:, None] + smoothing
    with np.errstate(invalid="ignore", divide="ignore"):
        by_stage = np.where(weight > 0, (counts + smoothing * overall) / weight, overall)
    return AcquisitionRates(overall=overall.astype(np.float32),
                            by_stage=by_stage.astype(np.float32),
                            kind="take_up" if pairs else "holding")
