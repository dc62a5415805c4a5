"""Training and evaluation: from validated extracts to a ``TrainedModel`` and its metrics.

``evaluate`` holds out the last snapshot: every method is fitted on data up to the month
before, and ranks what customers then added in the last month. ``train`` records those
metrics, serves the better of the hybrid and the acquisition ranker on them (unless the
config names one), and refits on everything, so the served model has seen the latest month.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data import columns as C
from ..data.book import CustomerBook
from ..data.catalog import Catalog
from ..data.eligibility import offerable_mask
from ..data.extracts import BankData
from ..data.interactions import (
    acquisitions,
    confidence_matrix,
    months_between,
    present_at,
    snapshot_matrix,
)
from ..data.life_stages import LifeStageRules
from ..exceptions import DataValidationError, InsufficientDataError
from . import artifacts
from .acquisition import AcquisitionRanker
from .artifacts import TrainedModel
from .calibration import Calibrator, fit_calibrator, reliability
from .cf import CFModel
from .config import TrainConfig
from .evaluation import breakdown, ranking_metrics
from .popularity import acquisition_rates
from .ranker import AcquisitionScorer, HybridRanker, log_rates, served_ranker
from .topk import top_k

log = logging.getLogger(__name__)

SERVABLE = artifacts.SERVABLE


@dataclass(frozen=True)
class History:
    """Monthly holdings matrices (oldest first) and who was a customer at each."""

    snapshots: list[sp.csr_matrix]
    presence: np.ndarray  # (n_customers x n_snapshots) bool


def history(bank: BankData, n_customers: int, n_products: int) -> History:
    dates = bank.snapshots
    matrices = [snapshot_matrix(bank.holdings, (n_customers, n_products), d) for d in dates]
    tenure = bank.customers[C.TENURE_MONTHS].to_numpy()
    presence = np.column_stack(
        [present_at(m, tenure, months_between(d, bank.reference_date))
         for m, d in zip(matrices, dates, strict=True)]
    ) if dates else np.zeros((n_customers, 0), dtype=bool)
    return History(matrices, presence)


def fingerprint(bank: BankData) -> str:
    """Content hash of the extracts, recorded in the manifest to tie a model to its data."""
    digest = hashlib.sha256()
    for frame in (bank.customers, bank.holdings):
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def upto(bank: BankData, snapshot: pd.Timestamp) -> BankData:
    """The extracts as they stood at ``snapshot``: later holdings snapshots removed."""
    holdings = bank.holdings[bank.holdings[C.SNAPSHOT_DATE] <= snapshot].reset_index(drop=True)
    return BankData(customers=bank.customers, holdings=holdings, as_of=bank.reference_date)


def fit(bank: BankData, catalog: Catalog, stages: LifeStageRules, config: TrainConfig,
        catalog_text: str = "", stages_text: str = "", served: str = "hybrid",
        cf_kind: str | None = None) -> TrainedModel:
    """Fit CF on the latest snapshot, take-up rates on every transition, and (with three or
    more snapshots) the acquisition ranker."""
    snapshots = bank.snapshots
    if not snapshots:
        raise DataValidationError("the holdings extract has no rows: nothing to train on")
    book = CustomerBook(bank, catalog, stages, config.cf.weighting, config.acquisition.n_lags)
    past = history(bank, len(book), len(catalog))
    user_items = confidence_matrix(bank.holdings, book.held.shape, snapshots[-1],
                                   config.cf.weighting)
    cf_config = replace(config.cf, kind=cf_kind) if cf_kind else config.cf
    cf = CFModel(cf_config).fit(user_items, book.ids, catalog.ids)
    rates = acquisition_rates(past.snapshots, book.stage_codes, len(stages.stages),
                              config.prior_smoothing)
    ranker = None
    if served == "acquisition":
        ranker = AcquisitionRanker(config.acquisition).fit(
            past.snapshots, past.presence, list(catalog.ids.external_ids), book.profiles,
            book.stage_codes)
    return TrainedModel(cf=cf, rates=rates, catalog=catalog, stages=stages, config=config,
                        catalog_text=catalog_text, stages_text=stages_text,
                        acquisition=ranker, served=served)


CALIBRATION_SAMPLE = 200_000


def _transition_batch(bank: BankData, catalog: Catalog, stages: LifeStageRules,
                      config: TrainConfig, before: pd.Timestamp, after: pd.Timestamp,
                      seed: int) -> tuple:
    """(batch of customers present at ``before``, their additions at ``after``, allowed mask),
    sampled to at most CALIBRATION_SAMPLE customers, consent ignored (it is a policy)."""
    book = CustomerBook(upto(bank, before), catalog, stages, config.cf.weighting,
                        config.acquisition.n_lags)
    later = snapshot_matrix(bank.holdings, book.held.shape, after)
    present = np.flatnonzero(book.present[:, 0])
    if len(present) > CALIBRATION_SAMPLE:
        rng = np.random.default_rng(seed)
        present = np.sort(rng.choice(present, CALIBRATION_SAMPLE, replace=False))
    batch = book.batch(present)
    batch = replace(batch, profile_frame=batch.profiles.assign(**{C.CONSENT_PROFILING: True}))
    added = acquisitions(batch.held, later[present]).toarray() > 0
    return batch, added, offerable_mask(batch.profiles, batch.held, catalog)


def calibrate(model: TrainedModel, bank: BankData) -> Calibrator | None:
    """Fit the served ranker's score -> take-up probability map on the latest transition.

    Raises InsufficientDataError when nobody took anything up in it: the map would send every
    score to 0, and every list would come out empty with nothing said."""
    snapshots = bank.snapshots
    if len(snapshots) < 2:
        return None
    batch, added, allowed = _transition_batch(bank, model.catalog, model.stages, model.config,
                                              snapshots[-2], snapshots[-1],
                                              model.config.cf.random_state)
    if not added[allowed].any():
        raise InsufficientDataError(
            f"no customer took up a product between the snapshots {snapshots[-2].date()} and "
            f"{snapshots[-1].date()}, the months the take-up probabilities are calibrated on: "
            "identical snapshots, or a last month with no take-up, would make every "
            "propensity 0. Give holdings up to a month in which customers added products")
    scores = served_ranker(model).score(batch).scores
    return fit_calibrator(scores[allowed], added[allowed])


def evaluate(bank: BankData, catalog: Catalog, stages: LifeStageRules, config: TrainConfig,
             k: int | None = None) -> dict[str, Any]:
    """Fit up to the second-last snapshot; rank last-month acquisitions, method by method.

    Nothing fitted here sees the last snapshot: it is cut off before anything is built.
    """
    snapshots = bank.snapshots
    if len(snapshots) < 3:
        raise DataValidationError(
            f"evaluation needs at least 3 monthly snapshots, the holdings have {len(snapshots)}"
        )
    started = time.perf_counter()
    k = k or config.eval_k
    cutoff, test_month = snapshots[-2], snapshots[-1]
    past = upto(bank, cutoff)
    book = CustomerBook(past, catalog, stages, config.cf.weighting, config.acquisition.n_lags)
    after = snapshot_matrix(bank.holdings, book.held.shape, test_month)
    added = acquisitions(book.held, after, book.present[:, 0])
    test = np.flatnonzero(np.diff(added.indptr) > 0)
    if len(test) == 0:
        raise InsufficientDataError(
            f"no customer took up a product in the held-out month {test_month.date()} (against "
            f"{cutoff.date()}): nothing to evaluate a ranking on. Identical snapshots, or a "
            "last month with no take-up, cannot tell which product a customer takes next")
    try:
        model = fit(past, catalog, stages, config, served="acquisition")
    except InsufficientDataError as exc:
        if config.ranker == "acquisition":
            raise
        log.warning("acquisition ranker left out of the evaluation, fitted on the %d "
                    "snapshots before the held-out month %s: %s", len(snapshots) - 1,
                    test_month.date(), exc)
        model = fit(past, catalog, stages, config)
    knn = fit(past, catalog, stages, replace(config, ranker="hybrid"), cf_kind="item_knn")
    # Rankings are compared on every test customer; the consent policy (non-personalised
    # offers for those who opted out) is a policy applied after ranking, not a ranking.
    batch, labels = book.batch(test), added[test]
    batch = replace(batch, profile_frame=batch.profiles.assign(**{C.CONSENT_PROFILING: True}))
    allowed = offerable_mask(batch.profiles, batch.held, catalog)

    hybrid = HybridRanker(model.cf, model.rates, config.cf_weight).score(batch)
    scores = {
        "popularity": np.broadcast_to(log_rates(model.rates.overall), allowed.shape),
        "life_stage_prior": log_rates(model.rates.for_stages(batch.stages)),
        "als": np.nan_to_num(hybrid.cf_scores, nan=-1e6),
        "item_knn": np.nan_to_num(
            HybridRanker(knn.cf, knn.rates, config.cf_weight).score(batch).cf_scores, nan=-1e6),
        "hybrid": hybrid.scores,
    }
    if model.acquisition is not None:
        scores["acquisition"] = AcquisitionScorer(model.acquisition, model.rates).score(
            batch).scores
    methods, by_stage, by_product = {}, {}, {}
    stage_ids = stages.ids.to_external(batch.stages)
    for name, method_scores in scores.items():
        top = top_k(np.where(allowed, method_scores, -np.inf), k)[0]
        methods[name] = ranking_metrics(top, labels, k)
        by_stage[name], by_product[name] = breakdown(top, labels, k, stage_ids,
                                                     catalog.ids.external_ids)
    candidates = [m for m in SERVABLE if m in methods]
    best = max(candidates, key=lambda m: methods[m][f"map@{k}"])
    served = best if config.ranker == "auto" else config.ranker
    calibration = _reliability(replace(model, served=served), bank, past, cutoff, test_month)
    result = {
        "protocol": f"fit on snapshots up to {cutoff.date()}, rank acquisitions of "
                    f"{test_month.date()} among customers who added at least one product"
                    " (eligibility applied to every method)",
        "k": k, "served": served, "test_customers": int(len(test)),
        "methods": methods, "by_life_stage": by_stage, "by_product": by_product,
        "calibration": calibration,
        "served_beats_popularity": methods[served][f"map@{k}"] > methods["popularity"][f"map@{k}"],
        "seconds": round(time.perf_counter() - started, 2),
    }
    log.info("evaluation: %s", {m: round(v[f"map@{k}"], 4) for m, v in methods.items()})
    return result


def _reliability(model: TrainedModel, bank: BankData, past: BankData, cutoff: pd.Timestamp,
                 test_month: pd.Timestamp) -> dict[str, Any] | None:
    """Calibrate on the month before the cutoff, check on the held-out month (all customers
    present, every allowed product)."""
    try:
        calibrator = calibrate(model, past)
    except InsufficientDataError as exc:
        log.warning("no reliability table for the held-out month: %s", exc)
        return None
    if calibrator is None:
        return None
    batch, added, allowed = _transition_batch(bank, model.catalog, model.stages, model.config,
                                              cutoff, test_month, model.config.cf.random_state)
    probabilities = calibrator.predict(served_ranker(model).score(batch).scores)
    return reliability(probabilities[allowed], added[allowed])


def train(bank: BankData, catalog: Catalog, stages: LifeStageRules, config: TrainConfig,
          models_dir: str | Path, catalog_text: str, stages_text: str,
          run_evaluation: bool = True) -> TrainedModel:
    """Evaluate on a held-out month, refit on all data with the ranker that won (or the one
    the config names), save a new version and make it current."""
    catalog.check_life_stages([s.id for s in stages.stages])
    can_evaluate = run_evaluation and len(bank.snapshots) >= 3
    if run_evaluation and not can_evaluate:
        log.warning("no held-out evaluation: it needs at least 3 monthly snapshots (fit on all "
                    "but the last, test on the last), the holdings have %d; the model is "
                    "saved without metrics", len(bank.snapshots))
    metrics = evaluate(bank, catalog, stages, config) if can_evaluate else {}
    served = metrics.get("served") or ("hybrid" if config.ranker == "auto" else config.ranker)
    model = fit(bank, catalog, stages, config, catalog_text, stages_text, served=served)
    model = replace(model, calibrator=calibrate(model, bank))
    snapshots = bank.snapshots
    manifest = {
        "data": {
            "fingerprint": fingerprint(bank), "customers": len(bank.customers),
            "holdings_rows": len(bank.holdings), "first_snapshot": str(snapshots[0].date()),
            "last_snapshot": str(snapshots[-1].date()), "snapshots": len(snapshots),
        },
        "metrics": metrics,
    }
    artifacts.save(model, models_dir, manifest)
    return model


def with_overrides(config: TrainConfig, **cf_overrides: Any) -> TrainConfig:
    """A copy of ``config`` with some CF parameters changed (None values are ignored)."""
    changes = {k: v for k, v in cf_overrides.items() if v is not None}
    return replace(config, cf=replace(config.cf, **changes)) if changes else config
