"""Calibration: ranker scores -> the probability that the customer takes the product up next month.

Arbitration multiplies propensities by value, so they must be probabilities, not ranks.
A monotone (isotonic: scipy's pool-adjacent-violators) map is fitted on one month-to-month
transition over all customers present, and checked on a later month with a reliability
table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import isotonic_regression

_MAX_BINS = 200


@dataclass(frozen=True)
class Calibrator:
    """Piecewise-linear monotone map from score to take-up probability."""

    knots: np.ndarray  # increasing scores
    values: np.ndarray  # non-decreasing probabilities

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """Take-up probabilities; 0 where a score is not finite (a product not to offer)."""
        out = np.interp(scores, self.knots, self.values)
        out[~np.isfinite(scores)] = 0.0
        return out.astype(np.float32)

    def score_floor(self, passes: Callable[[np.ndarray], np.ndarray]) -> float:
        """A score under which no probability ``predict`` gives passes ``passes`` (a test of
        float32 probabilities that, once true, stays true for larger ones).

        The map is monotone, so a campaign can drop the pairs scored under the floor before
        calibrating any, then test the few left exactly: the floor is never too high, and
        within a billionth of a knot interval of the lowest passing score. Below a score
        ``x``, ``predict`` gives at most its value at ``x`` up to a few float64 roundings, so
        the floor is a score whose value, rounded up to float32 with room to spare, fails.
        """
        def fails_below(scores: np.ndarray) -> np.ndarray:
            values = np.interp(scores, self.knots, self.values) * (1 + 1e-9)
            return ~passes(np.nextafter(values.astype(np.float32), np.float32(np.inf)))

        points, floor = self.knots, None
        for _ in range(3):  # the knots, then twice a finer grid in the interval found
            passing = np.flatnonzero(~fails_below(points))
            if len(passing) == 0:  # beyond the last knot the value stays the last one
                return np.inf if floor is None else float(points[-1])
            if passing[0] == 0:  # only on the knots: a grid starts where it failed
                return -np.inf
            floor = points[passing[0] - 1]
            points = np.linspace(floor, points[passing[0]], 1025)
        return float(floor)

    def to_state(self) -> dict:
        return {"knots": self.knots.tolist(), "values": self.values.tolist()}

    @classmethod
    def from_state(cls, state: dict) -> Calibrator:
        return cls(np.asarray(state["knots"], dtype=np.float64),
                   np.asarray(state["values"], dtype=np.float64))


def fit_calibrator(scores: np.ndarray, taken: np.ndarray) -> Calibrator:
    """Isotonic fit on (score, taken-up?) pairs; scores that are not finite are ignored."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    taken = np.asarray(taken, dtype=np.float64).ravel()
    keep = np.isfinite(scores)
    scores, taken = scores[keep], taken[keep]
    if len(scores) == 0:
        return Calibrator(np.array([0.0, 1.0]), np.array([0.0, 0.0]))
    # Equal scores must get one probability whatever their order: aggregate them first, then
    # cut the distinct scores into bins of about equal numbers of pairs.
    distinct, inverse = np.unique(scores, return_inverse=True)
    counts = np.bincount(inverse).astype(np.float64)
    positives = np.bincount(inverse, weights=taken)
    weighted_scores = np.bincount(inverse, weights=scores)
    edges = np.searchsorted(np.cumsum(counts), np.linspace(0, counts.sum(), _MAX_BINS + 1)[1:-1],
                            side="right")
    groups = [g for g in np.split(np.arange(len(distinct)), np.unique(edges)) if len(g)]
    weights = np.array([counts[g].sum() for g in groups])
    centres = np.array([weighted_scores[g].sum() for g in groups]) / weights
    rates = np.array([positives[g].sum() for g in groups]) / weights
    fitted = isotonic_regression(rates, weights=weights, increasing=True).x
    return Calibrator(centres, np.maximum.accumulate(fitted))


def reliability(probabilities: np.ndarray, taken: np.ndarray, bins: int = 10) -> dict:
    """Predicted vs observed take-up by bins of predicted probability (equal counts)."""
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    y = np.asarray(taken, dtype=np.float64).ravel()
    order = np.argsort(p, kind="stable")
    table = [{"predicted": float(p[b].mean()), "observed": float(y[b].mean()),
              "pairs": int(len(b))} for b in np.array_split(order, bins) if len(b)]
    return {"bins": table, "brier": float(np.mean((p - y) ** 2)) if len(p) else None,
            "mean_predicted": float(p.mean()) if len(p) else None,
            "mean_observed": float(y.mean()) if len(y) else None}
