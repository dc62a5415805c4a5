"""The rankers that can be served, with one interface: ``score(batch) -> RankerScores``.

``HybridRanker`` blends collaborative filtering on holdings with a life-stage prior:

score = log(monthly take-up rate of the product in the customer's life stage)
        + cf_weight * CF score

``AcquisitionScorer`` serves the gradient-boosted acquisition ranker (``acquisition``):
score = log P(product | the customer takes up a product next month).

Which one is served is decided by the held-out evaluation (``training``). Each customer's
scores come from one source, reported with every offer:

- ``cf``: the customer is known to the model and holds what they held at training;
- ``cf_fold_in``: their holdings changed, or they are new but hold products: the CF
  factors are recomputed from current holdings (implicit's ``recalculate_user``);
- ``life_stage_prior``: no holdings at all, so CF has nothing to go on (its scores would be
  all zero in arbitrary order): the life-stage prior alone ranks;
- ``acquisition``: the acquisition ranker, from recent holdings history and profile;
- ``ownership``: one snapshot only: the calibrated probability that a customer like this
  holds the product (``ownership``), a look-alike score, not a take-up rate;
- ``popularity``: the customer did not consent to profiling: the bank-wide take-up rates,
  the same for everyone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..data.book import CustomerBatch, csr_rows
from ..data.eligibility import holding_sets
from .acquisition import AcquisitionRanker
from .cf import CFModel
from .ownership import OwnershipModel
from .popularity import AcquisitionRates

# Stored as codes (positions) in score tables: new sources are added at the end.
SOURCES = ("cf", "cf_fold_in", "life_stage_prior", "acquisition", "popularity", "ownership")
_RATE_FLOOR = 1e-5


@dataclass(frozen=True)
class RankerScores:
    scores: np.ndarray  # (n_customers x n_products)
    sources: np.ndarray  # (n_customers,) one of SOURCES
    cf_scores: np.ndarray | None = None  # hybrid only: NaN rows where CF was not used


def log_rates(rates: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(rates, _RATE_FLOOR))


def changed_rows(current: sp.spmatrix, trained: sp.spmatrix) -> np.ndarray:
    """Rows whose set of held products (entries > 0) differs between two aligned matrices."""
    current, trained = sp.csr_matrix(current), sp.csr_matrix(trained)
    if (np.array_equal(current.indptr, trained.indptr)  # as when the book is the extract
            and np.array_equal(current.indices, trained.indices)  # the model was trained on
            and (current.data > 0).all() and (trained.data > 0).all()):
        return np.zeros(current.shape[0], dtype=bool)
    return (holding_sets(current) != holding_sets(trained)).any(axis=0)


def source_codes(sources: np.ndarray) -> np.ndarray:
    """Each row's source as its position in ``SOURCES``: a byte per row, not a string (a
    campaign's pairs, a score table on disk)."""
    codes = np.zeros(len(sources), dtype=np.int8)  # SOURCES[0]
    rest = np.flatnonzero(sources != SOURCES[0])  # most rows: then the others are few
    for code, source in enumerate(SOURCES[1:], start=1):
        found = sources[rest] == source
        codes[rest[found]] = code
        rest = rest[~found]
    if len(rest):
        raise ValueError(f"unknown ranker sources {sorted(set(sources[rest]))}")
    return codes


class HybridRanker:
    """Scores customers for every product; eligibility is applied afterwards by the caller."""

    name = "hybrid"
    # Scoring a customer costs less than copying them out of a batch: a campaign scores its
    # whole chunks rather than only the customers its rules let through.
    scores_cheaply = True

    def __init__(self, cf: CFModel, rates: AcquisitionRates, cf_weight: float = 1.0) -> None:
        self.cf, self.rates, self.cf_weight = cf, rates, cf_weight

    def score(self, batch: CustomerBatch, products: np.ndarray | None = None) -> RankerScores:
        """Scores of every product, or only of ``products`` (catalog positions; the same
        values as those columns of all scores): a campaign reads its few products only."""
        cols = slice(None) if products is None else np.asarray(products)
        # A log per stage, not per row.
        scores = np.take(log_rates(self.rates.by_stage)[:, cols], batch.stages, axis=0)
        n, width = scores.shape
        cf_scores = np.full((n, width), np.nan, dtype=np.float32)
        sources = np.full(n, "life_stage_prior")

        has_holdings = np.diff(batch.held.indptr) > 0
        model_rows = batch.rows_in(self.cf.customers)
        unchanged = np.zeros(n, dtype=bool)
        if (known := (model_rows >= 0) & has_holdings).any():
            idx = np.flatnonzero(model_rows >= 0)  # usually every row: no copy of ``held``
            current = batch.held if len(idx) == n else batch.held[idx]
            same = ~changed_rows(current, csr_rows(self.cf.user_items, model_rows[idx]))
            unchanged[idx] = same & known[idx]
        if unchanged.any():
            cf_scores[unchanged] = self.cf.scores(model_rows[unchanged])[:, cols]
            sources[unchanged] = "cf"
        fold = has_holdings & ~unchanged
        if fold.any():
            cf_scores[fold] = self.cf.fold_in_scores(batch.confidence[fold])[:, cols]
            sources[fold] = "cf_fold_in"
        with_cf = unchanged | fold
        np.add(scores, self.cf_weight * cf_scores, out=scores, where=with_cf[:, None])

        no_consent = _without_consent(batch, scores, sources, self.rates, cols)
        cf_scores[no_consent] = np.nan
        return RankerScores(scores=scores.astype(np.float32, copy=False), sources=sources,
                            cf_scores=cf_scores)


def _without_consent(batch: CustomerBatch, scores: np.ndarray, sources: np.ndarray,
                     rates: AcquisitionRates, cols: slice | np.ndarray = slice(None)) -> np.ndarray:
    """Replace the scores of customers who opted out of profiling by bank-wide take-up."""
    no_consent = ~batch.profile_arrays.consent
    scores[no_consent] = log_rates(rates.overall)[cols][None, :]
    sources[no_consent] = "popularity"
    return no_consent


class AcquisitionScorer:
    """Serves the acquisition ranker on customer batches."""

    name = "acquisition"
    scores_cheaply = False  # a thousand times CF's cost: score only whom the rules let through

    def __init__(self, model: AcquisitionRanker, rates: AcquisitionRates) -> None:
        self.model, self.rates = model, rates

    def score(self, batch: CustomerBatch, products: np.ndarray | None = None) -> RankerScores:
        """Scores of every product, or only of ``products`` (catalog positions)."""
        probabilities = self.model.predict(list(batch.lags), batch.present, batch.profiles,
                                           batch.stages)
        return _probability_scores(probabilities, self.name, batch, self.rates, products)


class OwnershipScorer:
    """Serves the propensity-to-own model: score = log P(customer holds the product)."""

    name = "ownership"
    scores_cheaply = False  # a booster per product: score only whom the rules let through

    def __init__(self, model: OwnershipModel, rates: AcquisitionRates) -> None:
        self.model, self.rates = model, rates

    def score(self, batch: CustomerBatch, products: np.ndarray | None = None) -> RankerScores:
        """Scores of every product, or only of ``products`` (catalog positions)."""
        probabilities = self.model.predict(batch.held, batch.profiles, batch.stages,
                                           batch.customer_ids)
        return _probability_scores(probabilities, self.name, batch, self.rates, products)


def _probability_scores(probabilities: np.ndarray, source: str, batch: CustomerBatch,
                        rates: AcquisitionRates, products: np.ndarray | None) -> RankerScores:
    """Log-probabilities as scores from ``source``, popularity for those without consent."""
    scores = log_rates(probabilities)
    sources = np.full(len(batch), source, dtype=object)
    _without_consent(batch, scores, sources, rates)
    if products is not None:
        scores = scores[:, products]
    return RankerScores(scores=scores.astype(np.float32), sources=sources.astype(str))


def served_ranker(model) -> HybridRanker | AcquisitionScorer | OwnershipScorer:
    """The ranker a trained model serves (``model.served``)."""
    if model.served == "acquisition":
        return AcquisitionScorer(model.acquisition, model.rates)
    if model.served == "ownership":
        return OwnershipScorer(model.ownership, model.rates)
    return HybridRanker(model.cf, model.rates, model.config.cf_weight)
