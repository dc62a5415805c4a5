"""Cross-validation for a bank with too few snapshots to back-test (one or two months).

Nothing is seen being taken up over time, so what is measured is how well each method ranks
the customers who hold a product above those who do not, with that holding hidden: per
product AUC and top-decile lift, over the customers the product may be offered to, averaged
over products (``mean_auc``). The propensity-to-own model is scored out of fold (its own
folds by customer-id hash); the plain GBDT baseline gets the same folds. The served method
is the propensity-to-own model unless the life-stage prior ranks better.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import lightgbm as lgb
import numpy as np

from ..data.book import CustomerBook
from ..data.catalog import Catalog
from ..data.eligibility import eligibility_mask
from ..data.extracts import BankData
from ..data.features import FeatureSchema
from ..data.life_stages import LifeStageRules
from ..exceptions import InsufficientDataError
from .baselines import plain_features
from .config import TrainConfig, available_cpus
from .evaluation import product_metrics
from .features import segments_of
from .ownership import FOLDS, OwnershipModel, folds_of
from .popularity import acquisition_rates

log = logging.getLogger(__name__)

BASELINES = ("popularity", "plain_gbdt")


def evaluate(bank: BankData, catalog: Catalog, stages: LifeStageRules,
             config: TrainConfig) -> dict[str, Any]:
    """Cross-validated AUC and lift per product of the propensity to own and its baselines."""
    return cross_validate(bank, catalog, stages, config)[0]


def cross_validate(bank: BankData, catalog: Catalog, stages: LifeStageRules,
                   config: TrainConfig) -> tuple[dict[str, Any], OwnershipModel]:
    """``evaluate``'s figures and the propensity-to-own model behind them (fitted on every
    customer, scored out of fold)."""
    started = time.perf_counter()
    snapshots = bank.snapshots
    book = CustomerBook(bank, catalog, stages, config.cf.weighting, 1)
    held = book.held
    labels = (held > 0).toarray()
    if not labels.any():
        raise InsufficientDataError("nobody holds any product in the latest snapshot: there "
                                    "is nothing to learn who holds what from")
    candidates = eligibility_mask(book.profiles, catalog)
    ids = book.ids.external_ids
    products = list(catalog.ids.external_ids)
    model = OwnershipModel(random_state=config.acquisition.random_state).fit(
        held, book.profiles, book.stage_codes, ids, products, bank.schema)
    rates = acquisition_rates([held], book.stage_codes, len(stages.stages),
                              config.prior_smoothing)
    n = len(book)
    scores = {
        "popularity": np.broadcast_to(rates.overall, (n, len(products))),
        "plain_gbdt": _plain_gbdt(held, book.profiles, bank.schema, ids, labels,
                                  config.acquisition.random_state),
        "life_stage_prior": rates.for_stages(book.stage_codes),
        "ownership": model.out_of_fold,
    }
    methods, by_product = {}, {}
    for name, method_scores in scores.items():
        figures = product_metrics(np.asarray(method_scores), labels, candidates, products)
        methods[name] = {"mean_auc": figures["mean_auc"],
                         "mean_lift@0.1": figures["mean_lift@0.1"]}
        by_product[name] = figures["by_product"]
    ranked = {m: v["mean_auc"] or 0.0 for m, v in methods.items()}
    served = "ownership" if ranked["ownership"] >= ranked["life_stage_prior"] else "hybrid"
    if config.ranker not in ("auto", "ownership"):
        served = config.ranker
    result = {
        "protocol": f"{FOLDS}-fold cross-validation by customer on the snapshot of "
                    f"{snapshots[-1].date()}: for each product, rank the customers it may be "
                    "offered to by how likely they hold it, their own holding hidden (AUC and "
                    "top-decile lift per product, averaged over products)",
        "metric": "mean_auc", "served": served, "evaluation": "cross_validation",
        "baselines": list(BASELINES),
        "best_baseline": max(BASELINES, key=lambda m: ranked[m]),
        "customers": n, "methods": methods, "by_product": by_product,
        "seconds": round(time.perf_counter() - started, 2),
    }
    log.info("cross-validation (%d snapshot%s, no take-up to back-test): mean AUC %s",
             len(snapshots), "" if len(snapshots) == 1 else "s",
             {m: round(v, 4) for m, v in ranked.items()})
    return result, model


def _plain_gbdt(held, profiles, schema: FeatureSchema, ids: np.ndarray, labels: np.ndarray,
                seed: int) -> np.ndarray:
    """LightGBM's defaults, one binary model per product and fold, the holding hidden."""
    x = plain_features(held, None, profiles, segments_of(profiles),
                       schema.fit(profiles).encode(profiles))
    fold = folds_of(ids)
    out = np.broadcast_to(labels.mean(axis=0), labels.shape).astype(np.float32).copy()
    params = {"objective": "binary", "seed": seed, "deterministic": True, "verbose": -1,
              "num_threads": available_cpus()}
    for j in range(labels.shape[1]):
        if labels[:, j].all() or not labels[:, j].any():
            continue
        xj = x.copy()
        xj[:, j] = np.nan
        for f in range(FOLDS):
            train = fold != f
            booster = lgb.train(params, lgb.Dataset(xj[train], labels[train, j]), 100)
            out[~train, j] = booster.predict(xj[~train])
    return out
