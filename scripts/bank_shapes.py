"""Banks of other shapes, built from the data at hand, for ``bench_generalization``.

Each function builds one shape, runs it through the library's own entry points (the extracts
read by ``load_bank`` where they are files, ``assess`` / ``fit`` as ``nbo train`` calls them)
and returns ``{"metric", "served", "methods": {name: value}, "baselines": {name: value}}``.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from recommender.data import columns as C
from recommender.data import santander
from recommender.data.catalog import load_catalog
from recommender.data.demo import generate
from recommender.data.extracts import BankData, load_bank
from recommender.data.life_stages import load_life_stages
from recommender.ranking.baselines import plain_features
from recommender.ranking.config import TrainConfig
from recommender.ranking.evaluation import product_metrics, ranking_metrics
from recommender.ranking.features import segments_of
from recommender.ranking.fitting import fit, transition_batch
from recommender.ranking.ranker import HybridRanker, log_rates, served_ranker
from recommender.ranking.topk import top_k
from recommender.ranking.training import assess

DEMO_MONTHS = 8
EXTRA_COLUMNS = 20
SEED = 20261203


def santander_one_snapshot(folder: Path) -> dict:
    """April 2016 holdings only; rank what each customer added in May (MAP@7 per adder)."""
    bank_of = santander.load_adders(folder)
    bank, catalog, stages = bank_of.bank, bank_of.catalog, bank_of.stages
    april, may = bank.snapshots[-2], bank.snapshots[-1]
    one = replace(bank, holdings=bank.holdings[bank.holdings[C.SNAPSHOT_DATE] == april]
                  .reset_index(drop=True), as_of=april)
    config = TrainConfig()
    served = assess(one, catalog, stages, config)["served"]
    model = fit(one, catalog, stages, config, served=served)
    batch, added, allowed = transition_batch(bank, catalog, stages, config, april, may, SEED)
    held = (batch.held > 0).toarray()
    scores = {
        served: served_ranker(model).score(batch).scores,
        "life_stage_prior": log_rates(model.rates.for_stages(batch.stages)),
        "hybrid": HybridRanker(model.cf, model.rates, config.cf_weight).score(batch).scores,
    }
    baselines = {
        "popularity": np.broadcast_to(held.mean(axis=0), held.shape),
        "plain_gbdt": _plain_own(batch.held, batch.profiles, held),
    }
    return _next_products(scores, baselines, served, added, allowed, 7)


def santander_small(folder: Path, n_customers: int) -> dict:
    """A small bank: ``n_customers`` Santander customers, picked by a hash of the id."""
    bank_of = santander.load_adders(folder)
    bank = bank_of.bank
    ids = bank.customers[C.CUSTOMER_ID].astype(str).to_numpy()
    keep = np.sort(np.argsort(pd.util.hash_array(ids.astype(object)), kind="stable")
                   [:n_customers])
    kept = pd.Index(ids[keep])
    customers = bank.customers.iloc[keep].reset_index(drop=True)
    holdings = bank.holdings[bank.holdings[C.CUSTOMER_ID].astype(str).isin(kept)].copy()
    holdings[C.CUSTOMER_ID] = pd.Categorical(holdings[C.CUSTOMER_ID].astype(str),
                                             categories=kept)
    small = replace(bank, customers=customers, holdings=holdings.reset_index(drop=True))
    return _backtest(small, bank_of.catalog, bank_of.stages, 7)


def demo_history(n_customers: int) -> dict:
    return _backtest(*_demo(n_customers, DEMO_MONTHS, 0), 5)


def demo_features(n_customers: int) -> dict:
    """The demo bank with extra customer columns; the figure without them beside it."""
    with_columns = _backtest(*_demo(n_customers, DEMO_MONTHS, EXTRA_COLUMNS), 5)
    bank, catalog, stages = _demo(n_customers, DEMO_MONTHS, EXTRA_COLUMNS, drop_extra=True)
    without = _backtest(bank, catalog, stages, 5)
    with_columns["without_extra_columns"] = {
        "served": without["served"], "value": without["methods"][without["served"]],
        "baselines": without["baselines"]}
    return with_columns


def demo_one_snapshot(n_customers: int) -> dict:
    """One snapshot with extra columns: cross-validated AUC of who holds each product."""
    bank, catalog, stages = _demo(n_customers, DEMO_MONTHS, EXTRA_COLUMNS, one_snapshot=True)
    result = assess(bank, catalog, stages, TrainConfig())
    values = {m: v["mean_auc"] for m, v in result["methods"].items()}
    return {"metric": "mean_auc", "served": result["served"],
            "methods": {m: v for m, v in values.items() if m not in result["baselines"]},
            "baselines": {m: values[m] for m in result["baselines"]}}


def _backtest(bank: BankData, catalog, stages, k: int) -> dict:
    result = assess(bank, catalog, stages, TrainConfig(), k)
    values = {m: v[f"map@{k}"] for m, v in result["methods"].items()}
    return {"metric": f"map@{k}", "served": result["served"],
            "methods": {m: v for m, v in values.items() if m not in result["baselines"]},
            "baselines": {m: values[m] for m in result["baselines"]},
            "map@1": {m: v["map@1"] for m, v in result["methods"].items()},
            "mean_auc": {m: v["mean_auc"] for m, v in result["methods"].items()},
            "selection": result["selection"]}


def _demo(n_customers: int, months: int, extra: int, one_snapshot: bool = False,
          drop_extra: bool = False) -> tuple[BankData, object, object]:
    """The demo bank written as extracts and read back by ``load_bank``, as a bank's are."""
    catalog, stages = load_catalog(), load_life_stages()
    demo = generate(n_customers, months, SEED, catalog, stages, extra=extra)
    customers, holdings = demo.customers, demo.holdings
    if drop_extra:
        customers = customers.iloc[:, :len(customers.columns) - extra]
    if one_snapshot:
        holdings = holdings[holdings[C.SNAPSHOT_DATE] == holdings[C.SNAPSHOT_DATE].max()]
    with tempfile.TemporaryDirectory() as folder:
        customers.to_parquet(Path(folder) / "customers.parquet", index=False)
        holdings.to_parquet(Path(folder) / "holdings.parquet", index=False)
        bank = load_bank(folder, catalog)
    return bank, catalog, stages


def _next_products(scores: dict, baselines: dict, served: str, added: np.ndarray,
                   allowed: np.ndarray, k: int) -> dict:
    """Per product, the customers who added it ranked above those who did not (mean AUC, the
    use of a one-snapshot model: a target list per product), and MAP@k of each customer's
    products beside it."""
    def figures(values: np.ndarray) -> tuple[float, float]:
        values = np.asarray(values, dtype=np.float64)
        top = top_k(np.where(allowed, values, -np.inf), k)[0]
        per_product = product_metrics(values, added, allowed, np.arange(added.shape[1]))
        return per_product["mean_auc"], ranking_metrics(top, added, k)[f"map@{k}"]

    methods = {m: figures(v) for m, v in scores.items()}
    base = {m: figures(v) for m, v in baselines.items()}
    return {"metric": "mean_auc", "served": served,
            "methods": {m: v[0] for m, v in methods.items()},
            "baselines": {m: v[0] for m, v in base.items()},
            f"map@{k}": {m: v[1] for m, v in {**methods, **base}.items()}}


def _plain_own(held, profiles: pd.DataFrame, labels: np.ndarray) -> np.ndarray:
    """A plain LightGBM per product (its defaults), P(holds it) from the other holdings and
    the profile, fitted on everyone: the afternoon's look-alike model."""
    x = plain_features(held, None, profiles, segments_of(profiles))
    out = np.zeros(labels.shape, dtype=np.float64)
    for j in range(labels.shape[1]):
        if labels[:, j].all() or not labels[:, j].any():
            out[:, j] = labels[:, j].mean()
            continue
        xj = x.copy()
        xj[:, j] = np.nan
        booster = lgb.train({"objective": "binary", "verbose": -1, "seed": SEED},
                            lgb.Dataset(xj, labels[:, j]), 100)
        out[:, j] = booster.predict(xj)
    return out
