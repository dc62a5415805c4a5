"""The back-test: which ranker is served, and how well it ranks months it has not seen.

Two held-out months, so that the figure reported is not the one the choice was made on:

- **selection**: every method is fitted on the snapshots up to the third-last month and
  ranks what customers added in the second-last; the servable method with the best MAP@k
  there is served (unless the config names one);
- **report**: every method is fitted up to the second-last month and ranks the additions of
  the last one. These are the figures recorded with the model.

With only three snapshots there is no month to spare: the choice is made on the reported
month, and the result says so (``selection.month``). Every method, baselines included,
ranks the same customers (everyone present at the cutoff, at most
``fitting.CALIBRATION_SAMPLE`` of them) under the catalog rules serving applies. Nothing
fitted sees the month it is tested on: the extracts are cut before anything is built.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data.book import CustomerBatch
from ..data.catalog import Catalog
from ..data.extracts import BankData
from ..data.interactions import acquisitions
from ..data.life_stages import LifeStageRules
from ..exceptions import InsufficientDataError
from . import artifacts
from .artifacts import TrainedModel
from .baselines import PlainGBDT, plain_features, recent_popularity
from .calibration import reliability
from .config import TrainConfig
from .evaluation import breakdown, product_metrics, ranking_metrics
from .features import segments_of
from .fitting import History, calibrate, fit, history, transition_batch, upto
from .ranker import AcquisitionScorer, HybridRanker, log_rates, served_ranker
from .topk import top_k

log = logging.getLogger(__name__)

BASELINES = ("popularity", "recent_popularity", "plain_gbdt")
MIN_SNAPSHOTS = 3


def evaluate(bank: BankData, catalog: Catalog, stages: LifeStageRules, config: TrainConfig,
             k: int | None = None) -> dict[str, Any]:
    """Choose the served method on a validation month, report every method on the last."""
    snapshots = bank.snapshots
    if len(snapshots) < MIN_SNAPSHOTS:
        raise InsufficientDataError(
            f"a back-test needs at least {MIN_SNAPSHOTS} monthly snapshots (fit on the "
            f"earlier ones, rank the additions of the last), the holdings have "
            f"{len(snapshots)}")
    started = time.perf_counter()
    k = k or config.eval_k
    report = month_figures(bank, catalog, stages, config, snapshots[-2], snapshots[-1], k)
    if len(snapshots) > MIN_SNAPSHOTS:
        selection = month_figures(bank, catalog, stages, config, snapshots[-3], snapshots[-2],
                                  k, details=False)
    else:
        log.warning("only %d snapshots: the served method is chosen on the month it is "
                    "reported on, so its figure is optimistic", len(snapshots))
        selection = report
    candidates = [m for m in artifacts.SERVABLE if m in selection["methods"]]
    chosen = max(candidates, key=lambda m: selection["methods"][m][f"map@{k}"])
    served = chosen if config.ranker == "auto" else config.ranker
    if served not in report["methods"]:
        raise InsufficientDataError(f"the configured ranker {served!r} could not be fitted "
                                    "on the months before the reported month")
    methods = report["methods"]
    best_baseline = max(BASELINES, key=lambda m: methods[m][f"map@{k}"])
    result = {
        "protocol": f"fit on snapshots up to {snapshots[-2].date()}, rank the acquisitions of "
                    f"{snapshots[-1].date()} (MAP@{k} over customers who added a product; "
                    "AUC and lift per product over every customer present); eligibility "
                    "applied to every method",
        "metric": f"map@{k}", "k": k, "served": served,
        "selection": {"month": str(selection["month"].date()),
                      "separate_from_report": selection is not report,
                      "methods": {m: v[f"map@{k}"] for m, v in selection["methods"].items()}},
        "baselines": list(BASELINES), "best_baseline": best_baseline,
        "test_customers": report["test_customers"], "methods": methods,
        "by_life_stage": report["by_life_stage"], "by_product": report["by_product"],
        "calibration": _reliability(report["model"], served, bank, snapshots[-2],
                                    snapshots[-1]),
        "served_beats_popularity": methods[served][f"map@{k}"]
        > methods["popularity"][f"map@{k}"],
        "seconds": round(time.perf_counter() - started, 2),
    }
    log.info("back-test on %s: %s", snapshots[-1].date(),
             {m: round(v[f"map@{k}"], 4) for m, v in methods.items()})
    return result


def month_figures(bank: BankData, catalog: Catalog, stages: LifeStageRules,
                  config: TrainConfig, cutoff: pd.Timestamp, test_month: pd.Timestamp, k: int,
                  details: bool = True) -> dict[str, Any]:
    """Every method fitted on the extracts up to ``cutoff``, ranking ``test_month``."""
    past = upto(bank, cutoff)
    batch, added, allowed = transition_batch(bank, catalog, stages, config, cutoff, test_month,
                                             config.cf.random_state)
    if not added.any():
        raise InsufficientDataError(
            f"no customer took up a product in the held-out month {test_month.date()} (against "
            f"{cutoff.date()}): nothing to rank. Identical snapshots, or a month with no "
            "take-up, cannot tell which product a customer takes next")
    try:
        model = fit(past, catalog, stages, config, served="acquisition")
    except InsufficientDataError as exc:
        if config.ranker == "acquisition":
            raise
        log.warning("acquisition ranker left out of the back-test of %s, fitted on the %d "
                    "snapshots up to %s (the later ones are held out): %s", test_month.date(),
                    len(past.snapshots), cutoff.date(), exc)
        model = fit(past, catalog, stages, config)
    knn = fit(past, catalog, stages, replace(config, ranker="hybrid"), cf_kind="item_knn")
    hybrid = HybridRanker(model.cf, model.rates, config.cf_weight).score(batch)
    months = history(past, len(past.customers), len(catalog))  # read by both baselines
    scores = {
        "popularity": np.broadcast_to(log_rates(model.rates.overall), allowed.shape),
        "recent_popularity": np.broadcast_to(
            log_rates(recent_popularity(months.snapshots, months.presence)), allowed.shape),
        "plain_gbdt": _plain_gbdt(past, months, config, batch),
        "life_stage_prior": log_rates(model.rates.for_stages(batch.stages)),
        "als": np.nan_to_num(hybrid.cf_scores, nan=-1e6),
        "item_knn": np.nan_to_num(
            HybridRanker(knn.cf, knn.rates, config.cf_weight).score(batch).cf_scores, nan=-1e6),
        "hybrid": hybrid.scores,
    }
    if model.acquisition is not None:
        scores["acquisition"] = AcquisitionScorer(model.acquisition, model.rates).score(
            batch).scores
    products = catalog.ids.external_ids
    stage_ids = stages.ids.to_external(batch.stages)
    methods, by_stage, by_product = {}, {}, {}
    for name, method_scores in scores.items():
        ranked = np.where(allowed, method_scores, -np.inf)
        top = top_k(ranked, k)[0]
        per_product = product_metrics(ranked, added, allowed, products)
        methods[name] = {**ranking_metrics(top, added, k), "mean_auc": per_product["mean_auc"],
                         "mean_lift@0.1": per_product["mean_lift@0.1"]}
        if details:
            by_stage[name], by_product[name] = breakdown(top, added, k, stage_ids, products)
            for product, figures in per_product["by_product"].items():
                by_product[name][product].update(auc=figures["auc"],
                                                 lift=figures["lift@0.1"])
    return {"month": test_month, "methods": methods, "by_life_stage": by_stage,
            "by_product": by_product, "model": model,
            "test_customers": int(added.any(axis=1).sum())}


def _plain_gbdt(past: BankData, months: History, config: TrainConfig,
                batch: CustomerBatch) -> np.ndarray:
    """The plain LightGBM baseline, fitted on the last transitions up to the cutoff."""
    snapshots, presence = months.snapshots, months.presence
    features, labels = [], []
    profiles = past.customers
    schema, segments = past.schema.fit(profiles), segments_of(profiles)
    for t in range(max(1, len(snapshots) - 3), len(snapshots)):
        added = acquisitions(snapshots[t - 1], snapshots[t], presence[:, t - 1])
        rows = np.flatnonzero(np.diff(added.indptr) > 0)
        if len(rows):
            earlier = snapshots[t - 2][rows] if t >= 2 else None
            features.append(plain_features(snapshots[t - 1][rows], earlier, profiles.iloc[rows],
                                           segments, schema.encode(profiles.iloc[rows])))
            labels.append(added[rows])
    if not features:
        return np.zeros(batch.held.shape, dtype=np.float32)
    model = PlainGBDT(config.acquisition.random_state).fit(np.vstack(features),
                                                           sp.vstack(labels).tocsr())
    earlier = batch.lags[1] if len(batch.lags) > 1 else None
    return model.predict(plain_features(batch.held, earlier, batch.profiles, segments,
                                        schema.encode(batch.profiles)))


def _reliability(model: TrainedModel, served: str, bank: BankData, cutoff: pd.Timestamp,
                 test_month: pd.Timestamp) -> dict[str, Any] | None:
    """Calibrate on the month before the cutoff, check on the held-out month (all customers
    present, every allowed product)."""
    model = replace(model, served=served)
    try:
        calibrator = calibrate(model, upto(bank, cutoff))
    except InsufficientDataError as exc:
        log.warning("no reliability table for the held-out month: %s", exc)
        return None
    if calibrator is None:
        return None
    batch, added, allowed = transition_batch(bank, model.catalog, model.stages, model.config,
                                             cutoff, test_month, model.config.cf.random_state)
    probabilities = calibrator.predict(served_ranker(model).score(batch).scores)
    return reliability(probabilities[allowed], added[allowed])
