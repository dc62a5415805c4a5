"""Champion / challenger report: does a challenger arm take up more offers than the champion,
or only seem to?

Per arm: shows, accepts, the accept rate with its Wilson score interval (unlike the normal
one it stays inside [0, 1] and keeps its coverage near 0, where offer take-up lives), and the
value to the bank per offer shown. Per challenger: the difference of its rate from the
champion's with Newcombe's hybrid score interval (method 10 of Newcombe 1998, Statistics in
Medicine 17:873-890), built from the two Wilson intervals, so it keeps its coverage with the
small counts and low rates where the Wald interval is too narrow. A difference is significant
when its interval leaves out 0.

Pure: counts from a frame of responses in, numbers out; no store, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from ..data.columns import PRODUCT_ID
from ..exceptions import ConfigError, DataValidationError

ARM = "arm"
OUTCOME = "outcome"
OUTCOMES = ("shown", "accepted", "declined")


@dataclass(frozen=True)
class ArmResult:
    """One arm's counts. Rates, intervals and value per show are NaN when it showed nothing."""

    arm: str
    shows: int
    accepts: int
    accept_rate: float
    rate_low: float
    rate_high: float
    value: float
    value_per_show: float


@dataclass(frozen=True)
class Difference:
    """A challenger's rate less the champion's (``against``), with its interval; NaN, and
    not significant, when either arm showed nothing."""

    arm: str
    against: str
    rate_difference: float
    low: float
    high: float
    significant: bool
    value_per_show_difference: float


@dataclass(frozen=True)
class ExperimentReport:
    """Every arm (the champion first) and every challenger's difference from the champion."""

    level: float
    arms: tuple[ArmResult, ...]
    differences: tuple[Difference, ...]

    @property
    def champion(self) -> ArmResult:
        return self.arms[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN (nothing shown) becomes None, which JSON can carry."""
        return {"level": self.level, "champion": self.champion.arm,
                "arms": [_json_ready(asdict(arm)) for arm in self.arms],
                "differences": [_json_ready(asdict(d)) for d in self.differences]}

    def to_text(self, lang: str = "en") -> str:
        """A plain table for a console or an e-mail: the arms, then the challengers."""
        if lang != "en":
            raise ValueError(f"the experiment report is written in English only ('en'), "
                             f"got lang={lang!r}")
        level = f"{100 * self.level:g}%"
        arms = _table(["arm", "shows", "accepts", "rate", f"{level} interval", "value",
                       "value/show"],
                      [[a.arm, f"{a.shows:,}", f"{a.accepts:,}", _percent(a.accept_rate),
                        _interval(a.rate_low, a.rate_high, "{:.1%}"), f"{a.value:,.2f}",
                        _number(a.value_per_show, "{:,.2f}")] for a in self.arms])
        lines = [f"Champion/challenger report, champion {self.champion.arm!r}, "
                 f"{level} intervals", *arms]
        if self.differences:
            lines += ["", *_table(
                ["challenger", "against", "rate diff (pp)", f"{level} interval (pp)",
                 "significant", "value/show diff"],
                [[d.arm, d.against, _number(100 * d.rate_difference, "{:+.1f}"),
                  _interval(100 * d.low, 100 * d.high, "{:+.1f}"),
                  "yes" if d.significant else "no",
                  _number(d.value_per_show_difference, "{:+,.2f}")]
                 for d in self.differences], names=2)]
        return "\n".join(lines)


def wilson_interval(successes: np.ndarray, trials: np.ndarray,
                    level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of each rate successes / trials: NaN where trials is 0.

    More successes than trials (inconsistent data) count as a rate of 1.
    """
    z = _z(level)
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    if np.any(k < 0) or np.any(n < 0):
        raise ValueError("the Wilson interval needs counts of 0 or more")
    p = _rate(k, n)
    n1 = np.where(n > 0, n, 1.0)  # NaN rates carry through; no 0 / 0 warning
    centre = (p + z * z / (2 * n1)) / (1 + z * z / n1)
    half = z / (1 + z * z / n1) * np.sqrt(p * (1 - p) / n1 + z * z / (4 * n1 * n1))
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def newcombe_interval(successes1: np.ndarray, trials1: np.ndarray, successes2: np.ndarray,
                      trials2: np.ndarray, level: float = 0.95,
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Newcombe's hybrid score interval of rate 1 less rate 2: NaN where either has no trials.

    Each side takes the distance from each rate to the Wilson bound in the difference's
    direction and adds the two in quadrature.
    """
    p1, p2 = _rate(successes1, trials1), _rate(successes2, trials2)
    low1, high1 = wilson_interval(successes1, trials1, level)
    low2, high2 = wilson_interval(successes2, trials2, level)
    low = p1 - p2 - np.hypot(p1 - low1, high2 - p2)
    high = p1 - p2 + np.hypot(high1 - p1, p2 - low2)
    return np.clip(low, -1.0, 1.0), np.clip(high, -1.0, 1.0)


def experiment_report(frame: pd.DataFrame, arms: Sequence[str], values: Mapping[str, float],
                      level: float = 0.95) -> ExperimentReport:
    """The report of an experiment from its responses: one row per response with ``arm``,
    ``outcome`` (shown, accepted, declined) and ``product_id``.

    ``arms`` are in order, the champion first; an arm with no rows gets zeros, and rows of an
    arm not listed are left out. ``values`` is each product's value to the bank of one
    take-up; every product accepted needs one, or the value columns would quietly be short.
    """
    arms = _check_arms(arms)
    _z(level)
    missing = sorted({ARM, OUTCOME, PRODUCT_ID} - set(frame.columns))
    if missing:
        raise ValueError(f"the responses lack column(s) {missing}; they need "
                         f"{[ARM, OUTCOME, PRODUCT_ID]}")
    listed = frame[ARM].isin(arms).to_numpy()
    rows = frame[listed]
    outcome = rows[OUTCOME].to_numpy()
    unknown = ~np.isin(outcome, OUTCOMES)
    if unknown.any():
        raise DataValidationError(
            f"outcomes must be one of {list(OUTCOMES)}; found "
            f"{sorted(map(str, set(outcome[unknown])))[:5]}", column=OUTCOME,
            rows=tuple(np.flatnonzero(listed)[unknown][:5].tolist()))
    codes = pd.Index(arms).get_indexer(rows[ARM])
    shown, accepted = outcome == "shown", outcome == "accepted"
    weights = _value_weights(rows[PRODUCT_ID].to_numpy()[accepted], values)
    shows = np.bincount(codes[shown], minlength=len(arms))
    accepts = np.bincount(codes[accepted], minlength=len(arms))
    value = np.bincount(codes[accepted], weights=weights, minlength=len(arms))
    rate = _rate(accepts, shows)
    low, high = wilson_interval(accepts, shows, level)
    per_show = np.divide(value, shows, out=np.full(len(arms), np.nan), where=shows > 0)
    results = tuple(ArmResult(arms[i], int(shows[i]), int(accepts[i]), float(rate[i]),
                              float(low[i]), float(high[i]), float(value[i]),
                              float(per_show[i])) for i in range(len(arms)))
    d_low, d_high = newcombe_interval(accepts[1:], shows[1:], accepts[0], shows[0], level)
    differences = tuple(
        Difference(arms[i], arms[0], float(rate[i] - rate[0]), float(d_low[i - 1]),
                   float(d_high[i - 1]), bool(d_low[i - 1] > 0 or d_high[i - 1] < 0),
                   float(per_show[i] - per_show[0])) for i in range(1, len(arms)))
    return ExperimentReport(float(level), results, differences)


def _z(level: float) -> float:
    """The two-sided normal quantile of ``level``, once the level is known to be one."""
    if not isinstance(level, int | float) or isinstance(level, bool) or not 0 < level < 1:
        raise ConfigError(f"the confidence level must be a number between 0 and 1 "
                          f"(0.95 for 95%), got {level!r}")
    return float(norm.ppf(0.5 + level / 2))


def _rate(successes: np.ndarray, trials: np.ndarray) -> np.ndarray:
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    rate = np.divide(k, n, out=np.full(np.broadcast(k, n).shape, np.nan), where=n > 0)
    return np.minimum(rate, 1.0)


def _check_arms(arms: Sequence[str]) -> list[str]:
    if isinstance(arms, str) or not all(isinstance(arm, str) for arm in arms):
        raise ConfigError(f"arms must be a sequence of arm names, the champion first; "
                          f"got {arms!r}")
    arms = list(arms)
    if not arms or len(set(arms)) != len(arms):
        raise ConfigError(f"arms must be one or more distinct names, the champion first; "
                          f"got {arms}")
    return arms


def _value_weights(products: np.ndarray, values: Mapping[str, float]) -> np.ndarray:
    weights = pd.Series(dict(values), dtype=np.float64).reindex(pd.Index(products))
    lacking = ~np.isfinite(weights.to_numpy())
    if lacking.any():
        raise DataValidationError(
            f"accepted product(s) {sorted(map(str, set(products[lacking])))[:10]} have no "
            "value weight (or not a finite one); give each a value, 0 if it brings none",
            column=PRODUCT_ID)
    return weights.to_numpy()


def _json_ready(row: dict[str, Any]) -> dict[str, Any]:
    return {key: None if isinstance(v, float) and math.isnan(v) else v
            for key, v in row.items()}


def _number(x: float, form: str) -> str:
    return "n/a" if math.isnan(x) else form.format(x)


def _percent(x: float) -> str:
    return _number(x, "{:.1%}")


def _interval(low: float, high: float, form: str) -> str:
    return "n/a" if math.isnan(low) else f"[{form.format(low)}, {form.format(high)}]"


def _table(header: list[str], rows: list[list[str]], names: int = 1) -> list[str]:
    """Columns as wide as their widest cell: the first ``names`` (arm names) on the left,
    numbers on the right."""
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    return ["  ".join(cell.ljust(w) if c < names else cell.rjust(w)
                      for c, (cell, w) in enumerate(zip(r, widths, strict=True))).rstrip()
            for r in [header, *rows]]
