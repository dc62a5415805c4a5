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

Evidence ages: a day's responses weigh ``0.5 ** (age / half_life_days)``, so a product that
stops selling loses its place within days, not at the next retrain.

A product the offline model never saw taken up (launched after its training data) has no
propensity worth correcting: it starts as an average offer of the channel (its observed
accept rate; ``new_product_propensity`` when configured or before there is evidence) and is
only offered in exploring decisions until it has ``min_shows`` shows in the channel.

Everything here is arrays: ``Evidence`` is counted with ``np.add.at`` over the responses,
and the factors of a whole batch are one fancy-indexed read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..exceptions import ConfigError
from .experiment import unit_hash


@dataclass(frozen=True)
class AdaptiveSettings:
    """How far responses may move the offline propensity, and how fast.

    ``prior_strength``: expected accepts the prior is worth (the factor is half-way to the
    observed ratio at this much evidence). ``min_factor``/``max_factor``: bounds of the
    correction. ``exploration_share``: share of decisions in which a product with fewer than
    ``min_shows`` shows in the channel is scored with a Thompson draw. ``refresh_seconds``:
    how often the service reads the evidence again. ``half_life_days``: age at which a
    response weighs half; ``window_days``: how far back responses are read at all.
    ``new_product_propensity``: the prior of a product the model never saw taken up (None:
    the channel's accept rate of the offers shown, or before there is any, the median
    take-up rate of the model's catalog).
    """

    prior_strength: float = 20.0
    min_factor: float = 0.25
    max_factor: float = 2.0
    exploration_share: float = 0.05
    refresh_seconds: float = 60.0
    half_life_days: float = 7.0
    window_days: float = 28.0
    min_shows: int = 100
    new_product_propensity: float | None = None

    def __post_init__(self) -> None:
        where = "[adaptive] in the policy"
        for name in ("prior_strength", "min_factor", "max_factor", "refresh_seconds",
                     "half_life_days", "window_days"):
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
        if not isinstance(self.min_shows, int) or isinstance(self.min_shows, bool) or (
                self.min_shows < 0):
            raise ConfigError(f"{where}: min_shows must be a whole number >= 0, "
                              f"got {self.min_shows!r}")
        prior = self.new_product_propensity
        if prior is not None and (not isinstance(prior, int | float) or isinstance(prior, bool)
                                  or not 0 < prior <= 1):
            raise ConfigError(f"{where}: new_product_propensity must be a probability above 0, "
                              f"got {prior!r}")

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str) -> AdaptiveSettings:
        """Settings from the policy's ``[adaptive]`` table; unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(f"{where} [adaptive] has unknown keys {unknown}; allowed: "
                              f"{sorted(known)}")
        return cls(**table)


@dataclass(frozen=True)
class Evidence:
    """Accepts observed and accepts expected per product x channel x life stage.

    ``shows`` counts the offers shown that carry a predicted propensity (weighted by age,
    like the rest): a cell with no shows has no evidence at all. ``counted`` is the same
    without the weights: what says whether a product has been tried enough.
    """

    products: tuple[str, ...]
    channels: tuple[str, ...]
    stages: tuple[str, ...]
    accepts: np.ndarray   # float64 [product, channel, stage]
    expected: np.ndarray  # float64 [product, channel, stage]
    shows: np.ndarray     # float64 [product, channel, stage]
    counted: np.ndarray   # float64 [product, channel, stage]: shows in the window, unweighted

    @classmethod
    def empty(cls, products: Sequence[str], channels: Sequence[str],
              stages: Sequence[str]) -> Evidence:
        shape = (len(products), len(channels), len(stages))
        return cls(tuple(products), tuple(channels), tuple(stages), np.zeros(shape),
                   np.zeros(shape), np.zeros(shape), np.zeros(shape))

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
        counts = frame[["product_id", "channel", "life_stage"]].assign(
            shows=1.0, expected=propensity,
            accepts=frame["accepted"].to_numpy(dtype=bool).astype(np.float64))
        return cls.from_counts(counts, products, channels, stages)

    @classmethod
    def from_counts(cls, frame: pd.DataFrame, products: Sequence[str],
                    channels: Sequence[str], stages: Sequence[str],
                    as_of: date | None = None, half_life_days: float | None = None,
                    ) -> Evidence:
        """Sum counted rows (``product_id``, ``channel``, ``life_stage``, ``shows``,
        ``expected``, ``accepts``), each weighted ``0.5 ** (age / half_life_days)`` by the
        age in days of its ``day`` (ISO date) before ``as_of`` when both are given: what
        ``ResponseStore.evidence`` returns.

        Rows of a product, channel or life stage not listed are left out: a product removed
        from the catalog teaches nothing about the others.
        """
        missing = {"product_id", "channel", "life_stage", "shows", "expected",
                   "accepts"} - set(frame)
        if missing:
            raise ValueError(f"the evidence counts lack column(s) {sorted(missing)}")
        codes = [pd.Index(list(known)).get_indexer(frame[column])  # -1: not listed
                 for column, known in (("product_id", products), ("channel", channels),
                                       ("life_stage", stages))]
        known = (codes[0] >= 0) & (codes[1] >= 0) & (codes[2] >= 0)
        index = tuple(c[known] for c in codes)
        weight = np.ones(int(known.sum()))
        if as_of is not None and half_life_days is not None:
            days = pd.to_datetime(frame["day"].to_numpy()[known])
            age = (pd.Timestamp(as_of) - days).days.to_numpy(dtype=np.float64)
            weight = 0.5 ** (np.maximum(age, 0.0) / half_life_days)
        evidence = cls.empty(products, channels, stages)
        for name in ("accepts", "expected", "shows"):
            np.add.at(getattr(evidence, name), index,
                      frame[name].to_numpy(dtype=np.float64)[known] * weight)
        np.add.at(evidence.counted, index, frame["shows"].to_numpy(dtype=np.float64)[known])
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

    @cached_property
    def factors(self) -> np.ndarray:
        """Posterior mean ratio per cell, within the settings' bounds (computed once: every
        decision of a refresh interval reads it)."""
        return np.clip(self.alpha / self.beta, self.settings.min_factor,
                       self.settings.max_factor)

    @cached_property
    def untested(self) -> np.ndarray:
        """[product, channel]: fewer than ``min_shows`` shows of the product in the channel
        within the window: exploring decisions draw its factor."""
        return self.evidence.counted.sum(axis=2) < max(self.settings.min_shows, 1e-9)

    def interval(self, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Equal-tailed credible interval of each cell's ratio (unbounded): what a report
        shows next to the factor."""
        tail = (1 - level) / 2
        return (stats.gamma.ppf(tail, self.alpha, scale=1 / self.beta),
                stats.gamma.ppf(1 - tail, self.alpha, scale=1 / self.beta))

    def thompson_factors(self, rng: np.random.Generator) -> np.ndarray:
        """One draw per cell from its posterior, within the bounds: a product's factor when
        it is explored."""
        return self.draw(self.alpha, self.beta, rng)

    def draw(self, alpha: np.ndarray, beta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draws from Gamma(alpha, beta) posteriors (any cells), within the bounds."""
        return np.clip(rng.gamma(alpha, 1 / beta), self.settings.min_factor,
                       self.settings.max_factor)


@dataclass(frozen=True)
class Adjustment:
    """What the adaptive layer does to one batch's propensities, recorded with each decision
    so that ``nbo replay`` reproduces it without the evidence of that minute.

    ``factors`` (n x products) multiply the prior; a factor of 0 withholds a new product
    outside the decisions that explore it. ``priors`` (products,) replace the model's
    propensity of products it never saw taken up (NaN: the model's own).
    """

    factors: np.ndarray
    priors: np.ndarray

    def prior(self, propensity: np.ndarray) -> np.ndarray:
        """The prior the correction multiplies: what a show's ``expected`` counts."""
        return np.where(np.isnan(self.priors), propensity, self.priors)

    def apply(self, propensity: np.ndarray) -> np.ndarray:
        """Corrected propensities, never above 1."""
        return np.minimum(self.prior(propensity) * self.factors, 1.0)

    def record(self, i: int, product_ids: Sequence[str]) -> dict[str, Any]:
        """Row ``i`` as JSON-able data (floats kept exactly: JSON round-trips a float64)."""
        fixed = np.flatnonzero(~np.isnan(self.priors)).tolist()
        return {"factors": dict(zip(product_ids, self.factors[i].tolist(), strict=True)),
                "priors": {product_ids[p]: float(self.priors[p]) for p in fixed}}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], product_ids: Sequence[str]) -> Adjustment:
        """The one-customer adjustment a decision recorded (``record``'s inverse)."""
        factors, priors = record["factors"], record.get("priors", {})
        return cls(np.array([[float(factors.get(p, 1.0)) for p in product_ids]]),
                   np.array([float(priors.get(p, np.nan)) for p in product_ids]))


def new_products(take_up: np.ndarray) -> np.ndarray:
    """(products,) bool: the model's data show no take-up (or holding) of the product: it
    was launched after them, and its propensity says nothing."""
    return np.asarray(take_up) <= 0


@dataclass(frozen=True)
class LearnedPropensity:
    """The corrections of one refresh, as the service applies them.

    ``as_of`` names the refresh (the end of the evidence read): every worker and replica
    that refreshed at the same moment applies the same factors and explores the same
    customers. ``new`` marks the products the model never saw taken up; ``new_priors``
    (per channel) is the propensity they start from: ``new_product_propensity`` when
    configured, else the channel's accept rate of the offers shown (an average offer) once
    it has ``min_shows`` of them, else the median take-up rate of the model's catalog.
    """

    corrections: Corrections
    new: np.ndarray         # (products,) bool
    new_priors: np.ndarray  # (channels,)
    as_of: str

    @classmethod
    def fit(cls, evidence: Evidence, settings: AdaptiveSettings, take_up: np.ndarray,
            as_of: str) -> LearnedPropensity:
        """From the evidence and the model's take-up rates (which say what is new)."""
        new = new_products(take_up)
        known = np.asarray(take_up)[~new]
        fallback = settings.new_product_propensity
        if fallback is None:
            fallback = float(np.median(known)) if len(known) else 0.01
        shows, counted = (evidence.shows[~new].sum(axis=(0, 2)),
                          evidence.counted[~new].sum(axis=(0, 2)))
        accepts = evidence.accepts[~new].sum(axis=(0, 2))
        observed = np.divide(accepts, shows, out=np.zeros_like(shows), where=shows > 0)
        priors = np.where((counted >= max(settings.min_shows, 1)) & (observed > 0)
                          & (settings.new_product_propensity is None), observed, fallback)
        return cls(Corrections.fit(evidence, settings), new, np.minimum(priors, 1.0), as_of)

    @property
    def settings(self) -> AdaptiveSettings:
        return self.corrections.settings

    @cached_property
    def _by_stage(self) -> np.ndarray:
        """[channel, stage, product] factors, contiguous per channel: a decision's row is
        one fancy-indexed read."""
        return np.ascontiguousarray(self.corrections.factors.transpose(1, 2, 0))

    def exploring(self, customer_ids: Sequence[str], channel: str) -> np.ndarray:
        """(n,) bool: the decisions that explore untested products, a stable hash of the
        customer within this refresh (the same answer from every worker)."""
        share = self.settings.exploration_share
        if share <= 0:
            return np.zeros(len(customer_ids), dtype=bool)
        return unit_hash(f"explore/{self.as_of}/{channel}", customer_ids) < share

    def adjustment(self, customer_ids: Sequence[str], stages: np.ndarray,
                   channel: str) -> Adjustment:
        """The factors of a batch's decisions in ``channel``: posterior means; in exploring
        decisions, Thompson draws for untested products; new products withheld elsewhere."""
        c = self.corrections.evidence.channels.index(channel)
        stages = np.asarray(stages, dtype=np.int64)
        factors = self._by_stage[c][stages]  # (n, products), a new array
        untested = self.corrections.untested[:, c]
        new = self.new & untested
        explore = self.exploring(customer_ids, channel)
        if new.any():
            factors[np.ix_(~explore, new)] = 0.0
        rows = np.flatnonzero(explore)
        if len(rows) and untested.any():
            products = np.flatnonzero(untested)
            seed = np.frombuffer(
                f"{self.as_of}/{channel}/{customer_ids[rows[0]]}/{len(rows)}".encode(),
                dtype=np.uint8)
            rng = np.random.default_rng(seed)
            alpha = self.corrections.alpha[products, c][:, stages[rows]].T
            beta = self.corrections.beta[products, c][:, stages[rows]].T
            factors[np.ix_(rows, products)] = self.corrections.draw(alpha, beta, rng)
        return Adjustment(factors, np.where(self.new, self.new_priors[c], np.nan))
