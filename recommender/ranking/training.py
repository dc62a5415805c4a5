"""Training a model version: back-test, refit on everything, calibrate, save.

``train`` records the back-test's figures (``backtest``), serves the method it chose (or
the one the config names), and refits on all the data, so the served model has seen the
latest month.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data import columns as C
from ..data.catalog import Catalog
from ..data.extracts import BankData
from ..data.life_stages import LifeStageRules
from ..exceptions import InsufficientDataError
from . import artifacts, crossval
from .artifacts import TrainedModel
from .backtest import MIN_SNAPSHOTS, evaluate
from .config import TrainConfig
from .fitting import calibrate, fit
from .ownership import OwnershipModel

log = logging.getLogger(__name__)


def fingerprint(bank: BankData) -> str:
    """Content hash of the extracts, recorded in the manifest to tie a model to its data."""
    digest = hashlib.sha256()
    for frame in (bank.customers, bank.holdings):
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def train(bank: BankData, catalog: Catalog, stages: LifeStageRules, config: TrainConfig,
          models_dir: str | Path, catalog_text: str, stages_text: str,
          run_evaluation: bool = True) -> TrainedModel:
    """Evaluate on a held-out month, refit on all data with the ranker that won (or the one
    the config names), save a new version and make it current."""
    catalog.check_life_stages([s.id for s in stages.stages])
    check_take_up(bank)
    metrics, ownership = _assess(bank, catalog, stages, config) if run_evaluation else ({},
                                                                                      None)
    if metrics:
        served = metrics["served"]
    elif len(bank.snapshots) < MIN_SNAPSHOTS:
        served = "ownership"
    else:
        served = "hybrid" if config.ranker == "auto" else config.ranker
    model = fit(bank, catalog, stages, config, catalog_text, stages_text, served=served,
                ownership=ownership)
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


def assess(bank: BankData, catalog: Catalog, stages: LifeStageRules, config: TrainConfig,
           k: int | None = None) -> dict[str, Any]:
    """The back-test with enough history, else cross-validation of the propensity to own;
    the log says which, and why."""
    return _assess(bank, catalog, stages, config, k)[0]


def _assess(bank: BankData, catalog: Catalog, stages: LifeStageRules, config: TrainConfig,
            k: int | None = None) -> tuple[dict[str, Any], OwnershipModel | None]:
    """``assess``'s figures, and the propensity-to-own model the cross-validation fitted on
    all the data: the very model ``fit`` would fit again, so ``train`` serves it as it is."""
    snapshots = bank.snapshots
    if len(snapshots) >= MIN_SNAPSHOTS:
        return evaluate(bank, catalog, stages, config, k), None
    log.warning("%d snapshot%s of holdings: no held-out month to back-test a take-up model "
                "on (it needs %d); serving the propensity to own, evaluated by "
                "cross-validation", len(snapshots), "" if len(snapshots) == 1 else "s",
                MIN_SNAPSHOTS)
    return crossval.cross_validate(bank, catalog, stages, config)


def check_take_up(bank: BankData) -> None:
    """Refuse history in which nobody ever took a product up (identical snapshots): it
    holds nothing to learn a take-up from, and would be learned as "never"."""
    snapshots = bank.snapshots
    if len(snapshots) < 2:
        return
    holdings = bank.holdings
    keys = _codes(holdings[C.CUSTOMER_ID]) * (int(_codes(holdings[C.PRODUCT_ID]).max()) + 1)
    keys += _codes(holdings[C.PRODUCT_ID])
    first = (holdings[C.SNAPSHOT_DATE] == snapshots[0]).to_numpy()
    if not np.isin(keys[~first], keys[first]).all():
        return
    raise InsufficientDataError(
        f"the {len(snapshots)} holdings snapshots ({snapshots[0].date()} .. "
        f"{snapshots[-1].date()}) show no customer taking up any product: identical "
        "snapshots hold nothing to learn take-up from. Give months in which customers "
        "added products, or one snapshot only to learn a propensity to own")


def _codes(column: pd.Series) -> np.ndarray:
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy().astype(np.int64)
    return pd.factorize(column)[0].astype(np.int64)


def with_overrides(config: TrainConfig, **cf_overrides: Any) -> TrainConfig:
    """A copy of ``config`` with some CF parameters changed (None values are ignored)."""
    changes = {k: v for k, v in cf_overrides.items() if v is not None}
    return replace(config, cf=replace(config.cf, **changes)) if changes else config
