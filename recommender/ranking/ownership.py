"""Propensity to own: for a bank with one snapshot of holdings, which customers look like the
holders of each product.

With one snapshot nothing is ever seen being taken up, so the only honest question is "how
likely is a customer like this to hold X", learned from the other holdings, the profile and
the bank's extra features. One LightGBM binary model per product and per fold of customers
(a stable hash of the customer id picks the fold): a customer is always scored by the models
of the folds they are not in, so no customer's score comes from a model that saw their own
holding of the product. Each product's out-of-fold scores are calibrated (isotonic), so the
figure served is a probability of holding the product, and it is called that: never a
monthly take-up rate.
"""

from __future__ import annotations

import logging
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data import columns as C
from ..data.features import FeatureSchema
from ..exceptions import InsufficientDataError, NotFittedError
from .calibration import Calibrator, fit_calibrator
from .config import available_cpus
from .features import segment_codes, segments_of

log = logging.getLogger(__name__)

FOLDS = 5
TRAIN_SAMPLE = 200_000  # customers a fold's models learn from, at most
_ROUNDS, _STOP = 400, 30
_PROFILE_COLUMNS = (C.AGE, C.INCOME, C.TENURE_MONTHS, C.DEPENDANTS)


def folds_of(customer_ids: np.ndarray, folds: int = FOLDS) -> np.ndarray:
    """Each customer's fold: a stable 64-bit hash of the id, the same on every machine."""
    hashes = pd.util.hash_array(np.asarray(customer_ids, dtype=object).astype(str))
    return (hashes % np.uint64(folds)).astype(np.int64)


def ownership_features(held: sp.csr_matrix, profiles: pd.DataFrame, stage_codes: np.ndarray,
                       segments: tuple[str, ...], extra: np.ndarray | None = None) -> np.ndarray:
    """Holdings 0/1, profile numbers, segment and life stage codes, then the extra features."""
    n = held.shape[0]
    numbers = np.column_stack([
        profiles[c].to_numpy(dtype=np.float32) if c in profiles else np.full(n, np.nan)
        for c in _PROFILE_COLUMNS])
    parts = [(held > 0).toarray().astype(np.float32), numbers,
             segment_codes(profiles, segments)[:, None],
             np.asarray(stage_codes, dtype=np.float32)[:, None]]
    if extra is not None and extra.shape[1]:
        parts.append(np.asarray(extra, dtype=np.float32))
    return np.hstack(parts)


class OwnershipModel:
    """Per product and per fold, P(customer holds the product | everything else known)."""

    name = "ownership"

    def __init__(self, folds: int = FOLDS, random_state: int = 42) -> None:
        self.folds, self.random_state = folds, random_state
        self.products: tuple[str, ...] = ()
        self.segments: tuple[str, ...] = ()
        self.extra = FeatureSchema()
        self.boosters: list[list[lgb.Booster | None]] = []  # [product][fold]
        self.constants: np.ndarray | None = None  # holding share where no model was fitted
        self.calibrators: list[Calibrator | None] = []
        self.out_of_fold: np.ndarray | None = None  # calibrated, of the training customers

    @property
    def is_fitted(self) -> bool:
        return self.constants is not None

    def _params(self, n: int) -> dict[str, Any]:
        min_leaf = min(50, max(5, n // 200))
        return {"objective": "binary", "learning_rate": 0.05, "num_leaves": 31,
                "min_data_in_leaf": min_leaf, "feature_fraction": 0.8,
                "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
                "seed": self.random_state, "deterministic": True, "verbose": -1,
                "num_threads": available_cpus()}

    def fit(self, held: sp.csr_matrix, profiles: pd.DataFrame, stage_codes: np.ndarray,
            customer_ids: np.ndarray, products: list[str],
            extra: FeatureSchema | None = None) -> OwnershipModel:
        """Fit on one snapshot; keep the calibrated out-of-fold scores of every customer.
        ``extra`` declares the bank's further columns of ``profiles``, used as features."""
        n, n_products = held.shape
        if n < 2 * self.folds:
            raise InsufficientDataError(
                f"a propensity-to-own model needs at least {2 * self.folds} customers, got {n}")
        self.products = tuple(products)
        self.segments = segments_of(profiles)
        self.extra = (extra or FeatureSchema()).fit(profiles)
        x = ownership_features(held, profiles, stage_codes, self.segments,
                               self.extra.encode(profiles))
        labels = (held > 0).toarray()
        fold = folds_of(customer_ids, self.folds)
        self.constants = labels.mean(axis=0).astype(np.float32)
        raw = np.broadcast_to(self.constants, (n, n_products)).copy()
        self.boosters = [[None] * self.folds for _ in range(n_products)]
        for j in range(n_products):
            positives = int(labels[:, j].sum())
            if positives < 2 * self.folds or positives > n - 2 * self.folds:
                log.warning("product %s: %d of %d customers hold it, too few on one side "
                            "to learn from; its holding share is used", products[j], positives, n)
                continue
            xj = x.copy()
            xj[:, j] = np.nan  # the label itself is never a feature
            for f in range(self.folds):
                booster = self._fit_one(xj, labels[:, j], fold != f)
                self.boosters[j][f] = booster
                rows = fold == f
                raw[rows, j] = booster.predict(xj[rows], num_threads=available_cpus())
        self.calibrators = [fit_calibrator(raw[:, j], labels[:, j])
                            if self.boosters[j][0] is not None else None
                            for j in range(n_products)]
        self.out_of_fold = self._calibrated(raw)
        log.info("propensity to own: %d products x %d folds fitted on %d customers",
                 sum(b[0] is not None for b in self.boosters), self.folds, n)
        return self

    def _fit_one(self, x: np.ndarray, y: np.ndarray, train: np.ndarray) -> lgb.Booster:
        rows = np.flatnonzero(train)
        if len(rows) > TRAIN_SAMPLE:
            rng = np.random.default_rng(self.random_state)
            rows = np.sort(rng.choice(rows, TRAIN_SAMPLE, replace=False))
        stop = np.zeros(len(rows), dtype=bool)
        stop[np.random.default_rng(self.random_state).random(len(rows)) < 0.1] = True
        if y[rows[stop]].min() == y[rows[stop]].max():  # a stopping set of one class
            stop[:] = False
        params = self._params(len(rows))
        fit_rows = rows[~stop]
        train_set = lgb.Dataset(x[fit_rows], y[fit_rows].astype(np.float32))
        if stop.any():
            valid = lgb.Dataset(x[rows[stop]], y[rows[stop]].astype(np.float32),
                                reference=train_set)
            booster = lgb.train(params, train_set, _ROUNDS, valid_sets=[valid],
                                callbacks=[lgb.early_stopping(_STOP, verbose=False)])
            return lgb.Booster(model_str=booster.model_to_string(
                num_iteration=max(booster.best_iteration, 1)))
        return lgb.train(params, train_set, 100)

    def _calibrated(self, raw: np.ndarray) -> np.ndarray:
        out = raw.astype(np.float32, copy=True)
        for j, calibrator in enumerate(self.calibrators):
            if calibrator is not None:
                out[:, j] = calibrator.predict(raw[:, j].astype(np.float64))
        return out

    def predict(self, held: sp.csr_matrix, profiles: pd.DataFrame, stage_codes: np.ndarray,
                customer_ids: np.ndarray) -> np.ndarray:
        """(n_customers x n_products) calibrated P(holds the product), each customer scored
        by the models of the fold their id hashes to (models that never saw them)."""
        if not self.is_fitted:
            raise NotFittedError("the propensity-to-own model is not fitted")
        n = held.shape[0]
        raw = np.broadcast_to(self.constants, (n, len(self.products))).astype(np.float64)
        if n == 0:
            return raw.astype(np.float32)
        x = ownership_features(held, profiles, stage_codes, self.segments,
                               self.extra.encode(profiles))
        fold = folds_of(customer_ids, self.folds)
        threads = available_cpus() if n >= 10_000 else 1
        for j, boosters in enumerate(self.boosters):
            if boosters[0] is None:
                continue
            xj = x.copy()
            xj[:, j] = np.nan
            for f in np.unique(fold):
                rows = fold == f
                raw[rows, j] = boosters[f].predict(xj[rows], num_threads=threads)
        return self._calibrated(raw)

    def to_state(self) -> dict[str, Any]:
        """Plain values: boosters as LightGBM's text format, never a pickle."""
        if not self.is_fitted:
            raise NotFittedError("the propensity-to-own model is not fitted")
        return {
            "folds": self.folds, "random_state": self.random_state,
            "products": list(self.products), "segments": list(self.segments),
            "extra": self.extra.to_state(),
            "constants": self.constants.tolist(),
            "boosters": [[None if b is None else b.model_to_string() for b in row]
                         for row in self.boosters],
            "calibrators": [None if c is None else c.to_state() for c in self.calibrators],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> OwnershipModel:
        model = cls(int(state["folds"]), int(state["random_state"]))
        model.products = tuple(state["products"])
        model.segments = tuple(state["segments"])
        model.extra = FeatureSchema.from_state(state.get("extra") or {})
        model.constants = np.asarray(state["constants"], dtype=np.float32)
        try:
            model.boosters = [[None if b is None else lgb.Booster(model_str=b) for b in row]
                              for row in state["boosters"]]
        except lgb.basic.LightGBMError as exc:
            raise ValueError(f"a stored LightGBM model cannot be read: {exc}") from exc
        model.calibrators = [None if c is None else Calibrator.from_state(c)
                             for c in state["calibrators"]]
        return model
