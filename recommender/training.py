"""Training and evaluation: from validated extracts to a ``TrainedModel`` and its metrics.

``evaluate`` holds out the last snapshot: the model is fitted on data up to the month
before, and ranks what customers then added in the last month. ``train`` records those
metrics and refits on everything, so the served model has seen the latest month.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import artifacts
from . import columns as C
from .artifacts import TrainedModel
from .book import CustomerBook
from .catalog import Catalog
from .cf import CFModel
from .config import TrainConfig
from .data import BankData
from .eligibility import offerable_mask
from .evaluation import ranking_metrics
from .exceptions import DataValidationError
from .interactions import acquisitions, confidence_matrix, snapshot_matrix
from .offers import OfferEngine
from .popularity import acquisition_rates
from .ranker import log_rates
from .segments import LifeStageRules
from .topk import top_k

log = logging.getLogger(__name__)

SERVED = "hybrid"


def fingerprint(bank: BankData) -> str:
    """Content hash of the extracts, recorded in the manifest to tie a model to its data."""
    digest = hashlib.sha256()
    for frame in (bank.customers, bank.holdings):
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def upto(bank: BankData, snapshot: pd.Timestamp) -> BankData:
    """The extracts as they stood at ``snapshot``: later holdings snapshots removed."""
    holdings = bank.holdings[bank.holdings[C.SNAPSHOT_DATE] <= snapshot].reset_index(drop=True)
    return BankData(customers=bank.customers, holdings=holdings)


def fit(bank: BankData, catalog: Catalog, stages: LifeStageRules, config: TrainConfig,
        catalog_text: str = "", stages_text: str = "") -> TrainedModel:
    """Fit CF on the latest snapshot and take-up rates on every month-to-month transition."""
    snapshots = bank.snapshots
    if not snapshots:
        raise DataValidationError("the holdings extract has no rows: nothing to train on")
    book = CustomerBook(bank, catalog, stages, config.cf.weighting)
    shape = (len(book), len(catalog))
    history = [snapshot_matrix(bank.holdings, shape, s) for s in snapshots]
    user_items = confidence_matrix(bank.holdings, shape, snapshots[-1], config.cf.weighting)
    cf = CFModel(config.cf).fit(user_items, book.ids, catalog.ids)
    rates = acquisition_rates(history, book.stage_codes, len(stages.stages),
                              config.prior_smoothing)
    return TrainedModel(cf=cf, rates=rates, catalog=catalog, stages=stages, config=config,
                        catalog_text=catalog_text, stages_text=stages_text)


def evaluate(bank: BankData, catalog: Catalog, stages: LifeStageRules,
             config: TrainConfig) -> dict[str, Any]:
    """Fit up to the second-last snapshot; rank last-month acquisitions, method by method."""
    snapshots = bank.snapshots
    if len(snapshots) < 3:
        raise DataValidationError(
            f"evaluation needs at least 3 monthly snapshots, the holdings have {len(snapshots)}"
        )
    started = time.perf_counter()
    cutoff, test_month = snapshots[-2], snapshots[-1]
    past = upto(bank, cutoff)
    model = fit(past, catalog, stages, config)
    book = CustomerBook(past, catalog, stages, config.cf.weighting)
    after = snapshot_matrix(bank.holdings, book.held.shape, test_month)
    added = acquisitions(book.held, after)
    test = np.flatnonzero(np.diff(added.indptr) > 0)
    # Rankings are compared on every test customer; the consent policy (non-personalised
    # offers for those who opted out) is a policy applied after ranking, not a ranking.
    batch, labels, k = book.batch(test), added[test], config.eval_k
    batch = replace(batch, profiles=batch.profiles.assign(**{C.CONSENT_PROFILING: True}))

    engine = OfferEngine(model)
    allowed = offerable_mask(batch.profiles, batch.held, catalog)
    ranked = engine.ranker.score(batch)
    raw = {
        "popularity": np.broadcast_to(log_rates(model.rates.overall), allowed.shape),
        "life_stage_prior": log_rates(model.rates.for_stages(batch.stages)),
        "cf": np.nan_to_num(ranked.cf_scores, nan=-1e6),
    }
    methods = {name: ranking_metrics(top_k(np.where(allowed, s, -np.inf), k)[0], labels, k)
               for name, s in raw.items()}
    methods[SERVED] = ranking_metrics(engine.rank(batch, k)[0], labels, k)
    result = {
        "protocol": f"fit on snapshots up to {cutoff.date()}, rank acquisitions of "
                    f"{test_month.date()} among customers who added at least one product"
                    " (eligibility applied to every method)",
        "k": k, "served": SERVED, "test_customers": int(len(test)),
        "methods": methods,
        "served_beats_popularity": methods[SERVED][f"map@{k}"] > methods["popularity"][f"map@{k}"],
        "seconds": round(time.perf_counter() - started, 2),
    }
    log.info("evaluation: %s", {m: round(v[f"map@{k}"], 4) for m, v in methods.items()})
    return result


def train(bank: BankData, catalog: Catalog, stages: LifeStageRules, config: TrainConfig,
          models_dir: str | Path, catalog_text: str, stages_text: str,
          run_evaluation: bool = True) -> TrainedModel:
    """Evaluate on a held-out month, refit on all data, save a new version and make it current."""
    catalog.check_life_stages([s.id for s in stages.stages])
    metrics = evaluate(bank, catalog, stages, config) if run_evaluation and len(
        bank.snapshots) >= 3 else {}
    model = fit(bank, catalog, stages, config, catalog_text, stages_text)
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
