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
- ``popularity``: the customer did not consent to profiling: the bank-wide take-up rates,
  the same for everyone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .acquisition import AcquisitionRanker
from .book import CustomerBatch
from .cf import CFModel
from .popularity import AcquisitionRates

SOURCES = ("cf", "cf_fold_in", "life_stage_prior", "acquisition", "popularity")
_RATE_FLOOR = 1e-5


@dataclass(frozen=True)
class RankerScores:
    scores: np.ndarray  # (n_customers x n_products)
    sources: np.ndarray  # (n_customers,) one of SOURCES
    cf_scores: np.ndarray | None = None  # hybrid only: NaN rows where CF was not used


def log_rates(rates: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(rates, _RATE_FLOOR))


def changed_rows(current: sp.csr_matrix, trained: sp.csr_matrix) -> np.ndarray:
    """Rows whose set of held products differs between two aligned matrices."""
    a, b = _held_positions(current), _held_positions(trained)
    count_a, count_b = np.diff(a.indptr), np.diff(b.indptr)
    changed = count_a != count_b
    # Rows holding as many products in both: compare their sorted positions one by one.
    same_count = ~changed
    rows = np.repeat(np.flatnonzero(same_count), count_a[same_count])
    differs = (a.indices[np.repeat(same_count, count_a)]
               != b.indices[np.repeat(same_count, count_b)])
    changed[rows[differs]] = True
    return changed


def _held_positions(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """The positive entries of each row, positions sorted (what ``changed_rows`` compares)."""
    matrix = sp.csr_matrix(matrix)
    if not matrix.has_canonical_format or not (matrix.data > 0).all():
        matrix = sp.csr_matrix(matrix > 0)
        matrix.sum_duplicates()
    return matrix


class HybridRanker:
    """Scores customers for every product; eligibility is applied afterwards by the caller."""

    name = "hybrid"

    def __init__(self, cf: CFModel, rates: AcquisitionRates, cf_weight: float = 1.0) -> None:
        self.cf, self.rates, self.cf_weight = cf, rates, cf_weight

    def score(self, batch: CustomerBatch) -> RankerScores:
        n, n_products = batch.held.shape
        scores = log_rates(self.rates.by_stage)[batch.stages]  # a log per stage, not per row
        cf_scores = np.full((n, n_products), np.nan, dtype=np.float32)
        sources = np.full(n, "life_stage_prior")

        has_holdings = np.diff(batch.held.indptr) > 0
        model_rows = batch.rows_in(self.cf.customers)
        known = (model_rows >= 0) & has_holdings
        unchanged = np.zeros(n, dtype=bool)
        if known.any():
            idx = np.flatnonzero(known)
            same = ~changed_rows(batch.held[idx], self.cf.user_items[model_rows[idx]])
            unchanged[idx[same]] = True
        if unchanged.any():
            cf_scores[unchanged] = self.cf.scores(model_rows[unchanged])
            sources[unchanged] = "cf"
        fold = has_holdings & ~unchanged
        if fold.any():
            cf_scores[fold] = self.cf.fold_in_scores(batch.confidence[fold])
            sources[fold] = "cf_fold_in"
        with_cf = unchanged | fold
        np.add(scores, self.cf_weight * cf_scores, out=scores, where=with_cf[:, None])

        no_consent = _without_consent(batch, scores, sources, self.rates)
        cf_scores[no_consent] = np.nan
        return RankerScores(scores=scores.astype(np.float32, copy=False), sources=sources,
                            cf_scores=cf_scores)


def _without_consent(batch: CustomerBatch, scores: np.ndarray, sources: np.ndarray,
                     rates: AcquisitionRates) -> np.ndarray:
    """Replace the scores of customers who opted out of profiling by bank-wide take-up."""
    no_consent = ~batch.profile_arrays.consent
    scores[no_consent] = log_rates(rates.overall)[None, :]
    sources[no_consent] = "popularity"
    return no_consent


class AcquisitionScorer:
    """Serves the acquisition ranker on customer batches."""

    name = "acquisition"

    def __init__(self, model: AcquisitionRanker, rates: AcquisitionRates) -> None:
        self.model, self.rates = model, rates

    def score(self, batch: CustomerBatch) -> RankerScores:
        probabilities = self.model.predict(list(batch.lags), batch.present, batch.profiles,
                                           batch.stages)
        scores = log_rates(probabilities)
        sources = np.full(len(batch), "acquisition", dtype=object)
        _without_consent(batch, scores, sources, self.rates)
        return RankerScores(scores=scores.astype(np.float32), sources=sources.astype(str))


def served_ranker(model) -> HybridRanker | AcquisitionScorer:
    """The ranker a trained model serves (``model.served``)."""
    if model.served == "acquisition":
        return AcquisitionScorer(model.acquisition, model.rates)
    return HybridRanker(model.cf, model.rates, model.config.cf_weight)
