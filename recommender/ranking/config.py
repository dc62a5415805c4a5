"""Training configuration: small frozen dataclasses that reject unknown keys and bad values."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..data.tomlfiles import toml_document, toml_text
from ..exceptions import ConfigError

CF_KINDS = ("als", "item_knn")
RANKERS = ("auto", "hybrid", "acquisition", "ownership")
WEIGHTINGS = ("binary", "months_held")


def _check(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{name}: {message}")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _from_mapping(cls, values: dict[str, Any], where: str):
    unknown = sorted(set(values) - {f.name for f in fields(cls)})
    if unknown:
        allowed = sorted(f.name for f in fields(cls))
        raise ConfigError(f"{where}: unknown keys {unknown}; allowed: {allowed}")
    return cls(**values)


def available_cpus() -> int:
    """The CPUs this process may use: its affinity mask (which a container's cpuset or
    ``taskset`` narrows) where the platform has one, else every CPU of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


@dataclass(frozen=True)
class CFConfig:
    """Collaborative filtering on holdings (implicit)."""

    kind: str = "als"
    factors: int = 8
    regularization: float = 0.1
    alpha: float = 1.0
    iterations: int = 15
    neighbours: int = 20
    weighting: str = "binary"
    random_state: int = 42

    def __post_init__(self) -> None:
        _check(self.kind in CF_KINDS, "cf.kind", f"must be one of {CF_KINDS}, got {self.kind!r}")
        _check(self.weighting in WEIGHTINGS, "cf.weighting",
               f"must be one of {WEIGHTINGS}, got {self.weighting!r}")
        for name in ("factors", "iterations", "neighbours", "random_state"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool), f"cf.{name}",
                   f"must be an integer, got {value!r}")
        for name in ("regularization", "alpha"):
            _check(_is_number(getattr(self, name)), f"cf.{name}",
                   f"must be a number, got {getattr(self, name)!r}")
        _check(self.factors >= 1, "cf.factors", "must be at least 1")
        _check(self.iterations >= 1, "cf.iterations", "must be at least 1")
        _check(self.neighbours >= 1, "cf.neighbours", "must be at least 1")
        _check(self.regularization >= 0, "cf.regularization", "must not be negative")
        _check(self.alpha > 0, "cf.alpha", "must be positive")


@dataclass(frozen=True)
class AcquisitionConfig:
    """The acquisition ranker: gradient-boosted take-up model on month-to-month transitions.

    The most recent transition is the validation month for early stopping; the
    ``train_months`` transitions before it are the training examples. ``refit`` adds the
    validation month to the training data afterwards (measured on Santander: it hurts,
    because the month next to the test month is the one most shaped by selection).
    While those months hold fewer than ``min_examples`` additions, earlier months join them
    (a small bank's window reaches back as far as its history; 0 keeps ``train_months``).
    ``num_threads`` is LightGBM's threads for training and batch scoring; 0 means the CPUs
    this process may use (``available_cpus``).
    """

    n_lags: int = 4
    train_months: int = 1
    min_examples: int = 5_000
    refit: bool = False
    learning_rate: float = 0.1
    num_leaves: int = 15
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.7
    bagging_fraction: float = 0.8
    lambda_l2: float = 5.0
    max_rounds: int = 2000
    early_stopping_rounds: int = 100
    random_state: int = 42
    num_threads: int = 0

    def __post_init__(self) -> None:
        for name in ("n_lags", "train_months", "min_examples", "num_leaves", "min_data_in_leaf",
                     "max_rounds", "early_stopping_rounds", "random_state", "num_threads"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool), f"acquisition.{name}",
                   f"must be an integer, got {value!r}")
        _check(self.n_lags >= 2, "acquisition.n_lags", "must be at least 2")
        _check(self.train_months >= 1, "acquisition.train_months", "must be at least 1")
        _check(self.min_examples >= 0, "acquisition.min_examples", "must not be negative")
        _check(self.num_leaves >= 2, "acquisition.num_leaves", "must be at least 2")
        _check(self.max_rounds >= 1, "acquisition.max_rounds", "must be at least 1")
        _check(self.num_threads >= 0, "acquisition.num_threads",
               "must not be negative (0 = the CPUs this process may use)")
        _check(isinstance(self.refit, bool), "acquisition.refit", "must be true or false")
        for name in ("learning_rate", "feature_fraction", "bagging_fraction", "lambda_l2"):
            _check(_is_number(getattr(self, name)), f"acquisition.{name}",
                   f"must be a number, got {getattr(self, name)!r}")
        _check(0 < self.learning_rate <= 1, "acquisition.learning_rate", "must be in (0, 1]")
        for name in ("feature_fraction", "bagging_fraction"):
            _check(0 < getattr(self, name) <= 1, f"acquisition.{name}", "must be in (0, 1]")


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained and how its scores are blended into offers.

    ``cf_weight`` is the weight of the CF score next to the log of the life-stage take-up
    prior in the hybrid score; 0 serves the life-stage prior alone. ``ranker`` chooses what
    is served: ``auto`` serves whichever of the hybrid and the acquisition ranker scores the
    higher MAP@k on the held-out month.
    """

    cf: CFConfig = field(default_factory=CFConfig)
    acquisition: AcquisitionConfig = field(default_factory=AcquisitionConfig)
    ranker: str = "auto"
    cf_weight: float = 1.0
    prior_smoothing: float = 50.0
    eval_k: int = 5

    def __post_init__(self) -> None:
        for name in ("cf_weight", "prior_smoothing"):
            _check(_is_number(getattr(self, name)), name,
                   f"must be a number, got {getattr(self, name)!r}")
        _check(isinstance(self.cf, CFConfig), "cf", "must be a [cf] table")
        _check(isinstance(self.acquisition, AcquisitionConfig), "acquisition",
               "must be an [acquisition] table")
        _check(self.ranker in RANKERS, "ranker", f"must be one of {RANKERS}, got {self.ranker!r}")
        _check(self.cf_weight >= 0, "cf_weight", "must not be negative")
        _check(self.prior_smoothing >= 0, "prior_smoothing", "must not be negative")
        _check(isinstance(self.eval_k, int) and not isinstance(self.eval_k, bool)
               and self.eval_k >= 1, "eval_k",
               "must be a positive integer")

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config") -> TrainConfig:
        values = dict(values)
        tables = {}
        for key, table_cls in (("cf", CFConfig), ("acquisition", AcquisitionConfig)):
            table = values.pop(key, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{where}: [{key}] must be a table")
            tables[key] = _from_mapping(table_cls, table, f"{where} [{key}]")
        return _from_mapping(cls, {**values, **tables}, where)

    @classmethod
    def from_toml(cls, path: str | Path) -> TrainConfig:
        text, source = toml_text(path, "", ConfigError, "training config")
        # from_dict refuses unknown keys itself, naming the allowed ones
        return cls.from_dict(toml_document(text, source, ConfigError), source)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
