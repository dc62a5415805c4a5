"""Training configuration: small frozen dataclasses that reject unknown keys and bad values."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .exceptions import ConfigError

CF_KINDS = ("als", "item_knn")
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
class TrainConfig:
    """How a model is trained and how its scores are blended into offers.

    ``cf_weight`` is the weight of the CF score next to the log of the life-stage take-up
    prior in the served score; 0 serves the life-stage prior alone.
    """

    cf: CFConfig = field(default_factory=CFConfig)
    cf_weight: float = 1.0
    prior_smoothing: float = 50.0
    eval_k: int = 5

    def __post_init__(self) -> None:
        for name in ("cf_weight", "prior_smoothing"):
            _check(_is_number(getattr(self, name)), name,
                   f"must be a number, got {getattr(self, name)!r}")
        _check(isinstance(self.cf, CFConfig), "cf", "must be a [cf] table")
        _check(self.cf_weight >= 0, "cf_weight", "must not be negative")
        _check(self.prior_smoothing >= 0, "prior_smoothing", "must not be negative")
        _check(isinstance(self.eval_k, int) and not isinstance(self.eval_k, bool)
               and self.eval_k >= 1, "eval_k",
               "must be a positive integer")

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config") -> TrainConfig:
        values = dict(values)
        cf = values.pop("cf", {})
        if not isinstance(cf, dict):
            raise ConfigError(f"{where}: [cf] must be a table")
        return _from_mapping(cls, {**values, "cf": _from_mapping(CFConfig, cf, f"{where} [cf]")},
                             where)

    @classmethod
    def from_toml(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"training config file not found: {path}")
        try:
            return cls.from_dict(tomllib.loads(path.read_text(encoding="utf-8")), str(path))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
