"""The acquisition ranker: which product a customer takes up next, learned from transitions.

Each training example is a (customer, month) in which the customer added a product: the
features describe the months before (``features``), the label is the product added. A
LightGBM multiclass model learns P(product | customer adds something); early stopping
watches the most recent transition, so the number of trees is chosen out of time, and
the test month (in evaluation) or the future (in serving) is never seen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data.features import FeatureSchema
from ..data.interactions import acquisitions
from ..exceptions import InsufficientDataError, NotFittedError
from .config import AcquisitionConfig, available_cpus
from .features import FeatureSpace

log = logging.getLogger(__name__)

_PARALLEL_ROWS = 10_000
FEW_EXAMPLES = 500  # below this a warning says the model can have learned little


def _examples(space: FeatureSpace, snapshots: list[sp.csr_matrix], presence: np.ndarray,
              target: int, profiles: pd.DataFrame,
              stage_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features before snapshot ``target`` and the products added at it, one row per addition."""
    added = acquisitions(snapshots[target - 1], snapshots[target],
                         presence[:, target - 1]).tocoo()
    before = [t for t in range(target - 1, target - 1 - space.n_lags, -1) if t >= 0]
    rows = np.unique(added.row)
    features = space.build([snapshots[t][rows] for t in before], presence[rows][:, before],
                           profiles.iloc[rows], stage_codes[rows])
    position = np.searchsorted(rows, added.row)
    return features[position], added.col.astype(np.int32)


class AcquisitionRanker:
    """Multiclass gradient boosting over the products a customer may add next."""

    name = "acquisition"

    def __init__(self, config: AcquisitionConfig | None = None) -> None:
        self.config = config or AcquisitionConfig()
        self.space: FeatureSpace | None = None
        self.booster: lgb.Booster | None = None
        self.best_iteration = 0
        self.validation_loss: float | None = None

    @property
    def is_fitted(self) -> bool:
        return self.booster is not None

    @property
    def num_threads(self) -> int:
        """LightGBM's threads for training and batch scoring: ``config.num_threads``, 0 (or
        more than there are) meaning the CPUs this process may use.

        Read when used, not when the model was trained: a model trained on a large machine
        and loaded on a small one must not start more threads than the small one has.
        """
        available = available_cpus()
        wanted = self.config.num_threads
        return available if wanted == 0 else min(wanted, available)

    def _params(self, n_products: int, n_examples: int) -> dict[str, Any]:
        """LightGBM's parameters, the leaf sizes following the data: the configured
        ``min_data_in_leaf`` of 50 on 57 examples would grow one leaf per tree and learn
        nothing. A leaf keeps at least 1% of the examples (and 5), and a tree has no more
        leaves than the examples can fill."""
        cfg = self.config
        min_leaf = min(cfg.min_data_in_leaf, max(5, n_examples // 100))
        leaves = min(cfg.num_leaves, max(4, n_examples // (2 * min_leaf)))
        return {
            "objective": "multiclass", "num_class": n_products,
            "learning_rate": cfg.learning_rate, "num_leaves": leaves,
            "min_data_in_leaf": min_leaf, "feature_fraction": cfg.feature_fraction,
            "bagging_fraction": cfg.bagging_fraction, "bagging_freq": 1,
            "lambda_l2": cfg.lambda_l2, "seed": cfg.random_state, "deterministic": True,
            "num_threads": self.num_threads, "verbose": -1,
        }

    def fit(self, snapshots: list[sp.csr_matrix], presence: np.ndarray, products: list[str],
            profiles: pd.DataFrame, stage_codes: np.ndarray,
            extra: FeatureSchema | None = None,
            profiles_at: Callable[[int], pd.DataFrame] | None = None) -> AcquisitionRanker:
        """Fit on monthly snapshots (oldest first) that end with the latest month known.

        ``presence[:, t]`` says who was a customer at snapshot ``t``; ``extra`` declares the
        bank's further columns of ``profiles``, used as features too; ``profiles_at(t)``, when
        the bank has time-varying columns, gives the profiles as they stood at snapshot ``t``
        (the examples of a month see the features of the month before).
        """
        profiles_at = profiles_at or (lambda t: profiles)
        cfg = self.config
        if len(snapshots) < 3:
            raise InsufficientDataError(
                f"the acquisition ranker needs at least 3 monthly snapshots, got {len(snapshots)}"
            )
        self.space = FeatureSpace.fit(products, cfg.n_lags, profiles, extra)
        last = len(snapshots) - 1
        parts = self._window(snapshots, presence, profiles_at, stage_codes)
        x_train = np.vstack([p[0] for p in parts])
        y_train = np.concatenate([p[1] for p in parts])
        x_valid, y_valid = _examples(self.space, snapshots, presence, last,
                                     profiles_at(last - 1), stage_codes)
        if len(y_train) == 0 or len(y_valid) == 0:
            raise InsufficientDataError("no product was added in the training or validation "
                                        "months: the acquisition ranker has nothing to learn")
        if len(y_train) < FEW_EXAMPLES or len(y_valid) < FEW_EXAMPLES // 5:
            log.warning("the acquisition ranker learns from %d additions (and %d to stop "
                        "on): with so few it can have learned little; the back-test decides "
                        "whether it is served", len(y_train), len(y_valid))
        params = self._params(len(products), len(y_train))
        names = self.space.names
        train = lgb.Dataset(x_train, y_train, feature_name=names, free_raw_data=False)
        valid = lgb.Dataset(x_valid, y_valid, reference=train, feature_name=names)
        booster = lgb.train(params, train, cfg.max_rounds, valid_sets=[valid],
                            callbacks=[lgb.early_stopping(cfg.early_stopping_rounds,
                                                          verbose=False)])
        self.best_iteration = max(booster.best_iteration, 1)
        self.validation_loss = float(booster.best_score["valid_0"]["multi_logloss"])
        if cfg.refit:
            everything = lgb.Dataset(np.vstack([x_train, x_valid]),
                                     np.concatenate([y_train, y_valid]), feature_name=names)
            booster = lgb.train(params, everything, self.best_iteration)
        self.booster = booster
        log.info("acquisition ranker: %d training and %d validation examples, %d trees per "
                 "product, validation log-loss %.4f", len(y_train), len(y_valid),
                 self.best_iteration, self.validation_loss)
        return self

    def _window(self, snapshots: list[sp.csr_matrix], presence: np.ndarray,
                profiles_at: Callable[[int], pd.DataFrame], stage_codes: np.ndarray) -> list:
        """Examples of the ``train_months`` transitions before the validation month, and of
        earlier ones while there are fewer than ``min_examples``: a small bank's window
        reaches back as far as its history does."""
        last = len(snapshots) - 1
        parts, n_examples = [], 0
        for t in range(last - 1, 0, -1):
            if len(parts) >= self.config.train_months and n_examples >= self.config.min_examples:
                break
            part = _examples(self.space, snapshots, presence, t, profiles_at(t - 1),
                             stage_codes)
            parts.insert(0, part)
            n_examples += len(part[1])
        return parts

    def predict(self, lags: list[sp.csr_matrix], present: np.ndarray, profiles: pd.DataFrame,
                stage_codes: np.ndarray) -> np.ndarray:
        """(n_customers x n_products) P(product | the customer adds a product next month)."""
        if not self.is_fitted:
            raise NotFittedError("the acquisition ranker is not fitted")
        features = self.space.build(lags, present, profiles, stage_codes)
        if len(features) == 0:
            return np.zeros((0, len(self.space.products)), dtype=np.float32)
        # One thread for small batches: a server scores one customer per request in each of
        # several workers, and OpenMP threads competing for the cores slow everything down.
        # Batch scoring (evaluation, campaigns) is alone on the machine and uses num_threads.
        # Each row is scored by one thread, so the thread count never changes a probability.
        threads = self.num_threads if len(features) >= _PARALLEL_ROWS else 1
        probabilities = self.booster.predict(features, num_iteration=self.best_iteration,
                                             num_threads=threads)
        return np.asarray(probabilities, dtype=np.float32).reshape(len(features), -1)

    def to_state(self) -> dict[str, Any]:
        """Plain values: the booster as LightGBM's own text format, never a pickle."""
        if not self.is_fitted:
            raise NotFittedError("the acquisition ranker is not fitted")
        return {
            "config": self.config.__dict__.copy(), "model": self.booster.model_to_string(),
            "best_iteration": self.best_iteration, "validation_loss": self.validation_loss,
            "products": list(self.space.products), "n_lags": self.space.n_lags,
            "segments": list(self.space.segments), "extra": self.space.extra.to_state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AcquisitionRanker:
        ranker = cls(AcquisitionConfig(**state["config"]))
        ranker.space = FeatureSpace(tuple(state["products"]), int(state["n_lags"]),
                                    tuple(state["segments"]),
                                    FeatureSchema.from_state(state.get("extra") or {}))
        try:
            ranker.booster = lgb.Booster(model_str=state["model"])
        except lgb.basic.LightGBMError as exc:
            raise ValueError(f"the stored LightGBM model cannot be read: {exc}") from exc
        ranker.best_iteration = int(state["best_iteration"])
        ranker.validation_loss = state["validation_loss"]
        return ranker
