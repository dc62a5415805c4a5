"""Adaptive propensity: the offline model's calibrated propensity corrected by what customers
actually did when offered.

The offline propensity is the prior. For each product x channel (and product x channel x
life stage) the evidence is the accepts observed against the accepts expected, the sum of the
propensities predicted for the offers shown. Their ratio, observed over expected, is the
correction; a Gamma-Poisson posterior keeps it honest when evidence is thin:

- product x channel: Gamma(k + accepts, k + expected), a prior of mean 1 worth ``k``
  expected accepts (``prior_strength``), so with no evidence the factor is exactly 1 and it
  moves half-way to the observed ratio once ``k`` accepts were expected;
- a life stage within it: Gamma(k m + accepts, k + expected), where ``m`` is the factor the
  product x channel's other life stages give: a thin life stage follows its product and
  channel, a well-observed one its own ratio (partial pooling instead of a hard threshold).
  With one life stage, or all evidence in one, this is the product x channel posterior.

The factor used is the posterior mean, kept within ``[min_factor, max_factor]``. A product
nobody answered yet in a channel has only the prior; ``thompson_factors`` draws its factor
from the posterior instead, which is how exploration gives new products a chance.

Everything here is arrays: ``Evidence`` is counted with one ``np.add.at`` over the responses,
and the factors of a whole batch are one fancy-indexed read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ..exceptions import ConfigError


@dataclass(frozen=True)
class AdaptiveSettings:
    """How far responses may move the offline propensity, and how fast.

    ``prior_strength``: expected accepts the prior is worth (the factor is half-way to the
    observed ratio at this much evidence). ``min_factor``/``max_factor``: bounds of the
    correction. ``exploration_share``: share of decisions in which a product without
    responses in the channel is scored with a Thompson draw. ``refresh_seconds``: how often
    the service reads the evidence again.
    """

    prior_strength: float = 20.0
    min_factor: float = 0.25
    max_factor: float = 2.0
    exploration_share: float = 0.05
    refresh_seconds: float = 60.0

    def __post_init__(self) -> None:
        where = "[adaptive] in the policy"
        for name in ("prior_strength", "min_factor", "max_factor", "refresh_seconds"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
                raise ConfigError(f"{where}: {name} must be a number above 0, got {value!r}")
        if not self.min_factor <= 1 <= self.max_factor:
            raise ConfigError(f"{where}: min_factor ({self.min_factor}) and max_factor "
                              f"({self.max_factor}) must bracket 1, the factor of no evidence")
        share = self.exploration_share
        if not isinstance(share, int | float) or isinstance(share, bool) or not 0 <= share <= 1:
            raise ConfigError(f"{where}: exploration_share must be between 0 and 1, "
                              f"got {share!r}")


@dataclass(frozen=True)
class Evidence:
    """Accepts observed and accepts expected per product x channel x life stage.

    ``shows`` counts the offers answered (shown, accepted or declined) that carry a predicted
    propensity: a cell with no shows has no evidence at all.
    """

    products: tuple[str, ...]
    channels: tuple[str, ...]
    stages: tuple[str, ...]
    accepts: np.ndarray   # float64 [product, channel, stage]
    expected: np.ndarray  # float64 [product, channel, stage]
    shows: np.ndarray     # int64 [product, channel, stage]

    @classmethod
    def empty(cls, products: Sequence[str], channels: Sequence[str],
              stages: Sequence[str]) -> Evidence:
        shape = (len(products), len(channels), len(stages))
        return cls(tuple(products), tuple(channels), tuple(stages), np.zeros(shape),
                   np.zeros(shape), np.zeros(shape, dtype=np.int64))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, products: Sequence[str],
                   channels: Sequence[str], stages: Sequence[str]) -> Evidence:
        """Count a frame of offers shown: ``product_id``, ``channel``, ``life_stage``,
        ``propensity`` (as predicted when shown) and ``accepted`` (bool).

        Rows of a product, channel or life stage not listed are left out: a product removed
        from the catalog teaches nothing about the others.
        """
        missing = {"product_id", "channel", "life_stage", "propensity", "accepted"} - set(frame)
        if missing:
            raise ValueError(f"the evidence frame lacks column(s) {sorted(missing)}")
        propensity = frame["propensity"].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(propensity) | (propensity < 0) | (propensity > 1)
        if bad.any():
            raise ValueError(f"{int(bad.sum())} propensity value(s) outside [0, 1], "
                             f"first at row {int(np.flatnonzero(bad)[0])}")
        codes = [pd.Index(list(known)).get_indexer(frame[column])  # -1: not listed
                 for column, known in (("product_id", products), ("channel", channels),
                                       ("life_stage", stages))]
        known = (codes[0] >= 0) & (codes[1] >= 0) & (codes[2] >= 0)
        index = tuple(c[known] for c in codes)
        evidence = cls.empty(products, channels, stages)
        np.add.at(evidence.accepts, index,
                  frame["accepted"].to_numpy(dtype=bool)[known].astype(np.float64))
        np.add.at(evidence.expected, index, propensity[known])
        np.add.at(evidence.shows, index, 1)
        return evidence


@dataclass(frozen=True)
class Corrections:
    """The posterior of the observed-over-expected ratio of every cell, and its factor."""

    evidence: Evidence
    settings: AdaptiveSettings
    alpha: np.ndarray  # [product, channel, stage]: Gamma shape
    beta: np.ndarray   # [product, channel, stage]: Gamma rate

    @classmethod
    def fit(cls, evidence: Evidence, settings: AdaptiveSettings) -> Corrections:
        k = settings.prior_strength
        others_accepts = evidence.accepts.sum(axis=2, keepdims=True) - evidence.accepts
        others_expected = evidence.expected.sum(axis=2, keepdims=True) - evidence.expected
        # each stage's prior: the other stages of its product x channel, shrunk to 1 (its own
        # responses are not counted twice, in its prior and its evidence)
        parent = (k + others_accepts) / (k + others_expected)
        alpha = k * parent + evidence.accepts
        beta = k + evidence.expected
        return cls(evidence, settings, alpha, beta)

    @property
    def factors(self) -> np.ndarray:
        """Posterior mean ratio per cell, within the settings' bounds."""
        return np.clip(self.alpha / self.beta, self.settings.min_factor,
                       self.settings.max_factor)

    @property
    def untested(self) -> np.ndarray:
        """[product, channel]: no answered offer of the product in the channel yet."""
        return self.evidence.shows.sum(axis=2) == 0

    def interval(self, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Equal-tailed credible interval of each cell's ratio (unbounded): what a report
        shows next to the factor."""
        tail = (1 - level) / 2
        return (stats.gamma.ppf(tail, self.alpha, scale=1 / self.beta),
                stats.gamma.ppf(1 - tail, self.alpha, scale=1 / self.beta))

    def thompson_factors(self, rng: np.random.Generator) -> np.ndarray:
        """One draw per cell from its posterior, within the bounds: a product's factor when
        it is explored."""
        return np.clip(rng.gamma(self.alpha, 1 / self.beta), self.settings.min_factor,
                       self.settings.max_factor)

    def lookup(self, products: np.ndarray, channel: str, stages: np.ndarray) -> np.ndarray:
        """Factors for position arrays of products and life stages in one channel."""
        try:
            c = self.evidence.channels.index(channel)
        except ValueError:
            raise ValueError(f"unknown channel {channel!r}; known: "
                             f"{list(self.evidence.channels)}") from None
        return self.factors[products, c, stages]
