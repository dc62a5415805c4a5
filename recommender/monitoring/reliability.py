"""Is the model still calibrated? Predicted propensities against what customers did.

A ranker can keep its order while its probabilities drift: arbitration multiplies them by
value, so a product predicted at twice its real acceptance wins offers it should not. These
tables put the predicted mean beside the observed rate with a 95% Wilson interval, and flag
the groups whose prediction lies outside it: sampling noise alone would rarely put it there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..data.columns import LIFE_STAGE, PRODUCT_ID
from ..exceptions import DataValidationError

CHANNEL = "channel"
PREDICTED = "predicted"
ACCEPTED = "accepted"
GROUP_COLUMNS = (PRODUCT_ID, CHANNEL, LIFE_STAGE)
Z95 = 1.959963984540054  # two-sided 95% normal quantile, scipy.stats.norm.ppf(0.975)

RATE_COLUMNS = ("shows", "accepts", "predicted", "observed", "observed_over_predicted",
                "low", "high", "flag")
BIN_COLUMNS = ("bin", "shows", "accepts", "predicted", "observed")
TAKE_UP_COLUMNS = (PRODUCT_ID, "expected", "observed", "predicted_rate", "observed_rate",
                   "ratio", "low", "high", "z", "flag")


def wilson_interval(successes: np.ndarray, trials: np.ndarray,
                    z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial rate: unlike the normal one, it stays inside
    [0, 1] and keeps its coverage when the rate is near 0, as offer acceptance is."""
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    if np.any(n <= 0) or np.any(k < 0) or np.any(k > n):
        raise ValueError("Wilson interval needs 0 <= successes <= trials and trials > 0")
    rate = k / n
    z2 = z * z
    centre = (rate + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * np.sqrt(rate * (1 - rate) / n + z2 / (4 * n * n))
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def reliability_table(frame: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Predicted against observed acceptance per group of ``by`` (a subset of product_id,
    channel, life_stage; empty for one overall row), one row per group present.

    ``frame`` holds one row per offer shown, with ``predicted`` (the propensity when shown)
    and ``accepted``. Columns: the ``by`` columns, then shows, accepts, predicted (mean),
    observed (accept rate), observed_over_predicted (NaN when the mean prediction is 0),
    low/high (95% Wilson interval on observed), flag (predicted outside [low, high]).
    Missing group values (NaN) form a group of their own rather than vanish.
    """
    by = list(by)
    unknown = [column for column in by if column not in GROUP_COLUMNS]
    if unknown or len(set(by)) != len(by):
        raise ValueError(f"by must be distinct columns among {list(GROUP_COLUMNS)}, got {by}")
    predicted, accepted = _outcomes(frame, by)
    outcomes = pd.DataFrame({PREDICTED: predicted, ACCEPTED: accepted.astype(np.int64)})
    if by:
        keys = {column: frame[column].to_numpy() for column in by}
        grouped = outcomes.assign(**keys).groupby(by, sort=True, dropna=False, observed=True)
        counts = grouped.agg(shows=(PREDICTED, "size"), accepts=(ACCEPTED, "sum"),
                             predicted=(PREDICTED, "mean")).reset_index()
    else:
        counts = pd.DataFrame({"shows": [len(outcomes)], "accepts": [int(accepted.sum())],
                               "predicted": [predicted.mean() if len(outcomes) else np.nan]})
        counts = counts[counts["shows"] > 0].reset_index(drop=True)
    return _with_rates(counts, by)


def reliability_bins(frame: pd.DataFrame, bins: int = 10) -> pd.DataFrame:
    """The calibration curve: shows, accepts, mean predicted and observed rate per quantile
    bin of ``predicted`` (deciles by default).

    Equal-count bins put the same evidence behind each point. Tied quantiles (many equal
    predictions) merge their bins, so fewer than ``bins`` rows can come back; ``bin``
    numbers the rows from the lowest predictions, 0-based.
    """
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise ValueError(f"bins must be a positive whole number, got {bins!r}")
    predicted, accepted = _outcomes(frame, [])
    if not len(predicted):
        return _empty(BIN_COLUMNS)
    edges = np.unique(np.quantile(predicted, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    bin_of = np.searchsorted(edges, predicted, side="right")
    width = len(edges) + 1
    shows = np.bincount(bin_of, minlength=width)
    accepts = np.bincount(bin_of, weights=accepted, minlength=width).astype(np.int64)
    sums = np.bincount(bin_of, weights=predicted, minlength=width)
    used = shows > 0
    return pd.DataFrame({
        "bin": np.arange(int(used.sum())), "shows": shows[used], "accepts": accepts[used],
        "predicted": sums[used] / shows[used], "observed": accepts[used] / shows[used],
    })


def take_up_moments(propensity: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Expected take-ups per product and their variance, from a customer x product frame of
    monthly propensities (columns are product ids).

    Each customer is an independent Bernoulli trial, so the count is Poisson-binomial: mean
    sum p, variance sum p(1-p). Both add up over chunks of customers (``a.add(b)``), so a
    bank too large for one frame can be summed chunk by chunk.
    """
    values = propensity.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(values) | (values < 0) | (values > 1)
    if bad.any():
        column = propensity.columns[int(np.flatnonzero(bad.any(axis=0))[0])]
        raise DataValidationError(
            f"{int(bad.sum())} propensities are missing or outside [0, 1]; score every "
            "customer for every product first", column=str(column))
    index = pd.Index(propensity.columns, name=PRODUCT_ID)
    return (pd.Series(values.sum(axis=0), index=index, name="expected"),
            pd.Series((values * (1 - values)).sum(axis=0), index=index, name="variance"))


def take_up_check(expected: pd.Series, variance: pd.Series, observed: pd.Series,
                  customers: int, z: float = Z95) -> pd.DataFrame:
    """Predicted against observed take-up per product in the newest extract.

    ``expected`` and ``variance`` (indexed by product, as ``take_up_moments`` returns them)
    describe the predicted count of take-ups among ``customers``; ``observed`` counts the
    take-ups seen, indexed by product (a product absent from it had none). The count is
    flagged when it falls outside expected +- z * sqrt(variance), the normal approximation
    of the Poisson-binomial: good for the thousands of customers a bank has, not for tens.
    Columns: product_id, expected, observed, predicted_rate, observed_rate, ratio (observed
    / expected, NaN when nothing was expected), low, high (the band, in counts), z, flag.
    """
    if isinstance(customers, bool) or not isinstance(customers, int | np.integer) \
            or customers < 1:
        raise ValueError(f"customers must be a positive whole number, got {customers!r}")
    for name, series in (("expected", expected), ("variance", variance),
                         ("observed", observed)):
        if not series.index.is_unique:
            raise DataValidationError(f"{name} lists a product twice; sum it per product",
                                      column=name)
    if set(variance.index) != set(expected.index):
        raise DataValidationError("variance and expected must list the same products; pass "
                                  "both from take_up_moments", column="variance")
    unscored = sorted(map(str, set(observed.index) - set(expected.index)))
    if unscored:
        raise DataValidationError(
            f"products {unscored} were taken up but have no prediction; score them or leave "
            "them out of observed", column="observed")
    mean = expected.to_numpy(dtype=np.float64)
    spread = variance.reindex(expected.index).to_numpy(dtype=np.float64)
    seen = observed.reindex(expected.index, fill_value=0).to_numpy(dtype=np.float64)
    for name, values, high in (("expected", mean, customers), ("variance", spread, customers),
                               ("observed", seen, customers)):
        if np.isnan(values).any() or (values < 0).any() or (values > high).any():
            raise DataValidationError(
                f"{name} must be counts between 0 and customers ({customers})", column=name)
    sd = np.sqrt(spread)
    low, high = mean - z * sd, mean + z * sd
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(mean > 0, seen / mean, np.nan)
        score = np.where(sd > 0, (seen - mean) / sd, np.nan)
    return pd.DataFrame({
        PRODUCT_ID: expected.index.to_numpy(), "expected": mean, "observed": seen.astype(np.int64),
        "predicted_rate": mean / customers, "observed_rate": seen / customers, "ratio": ratio,
        "low": low, "high": high, "z": score, "flag": (seen < low) | (seen > high),
    })


def _outcomes(frame: pd.DataFrame, by: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``predicted`` as floats in [0, 1] and ``accepted`` as booleans, checked."""
    missing = [column for column in (*by, PREDICTED, ACCEPTED) if column not in frame.columns]
    if missing:
        raise DataValidationError(
            f"the shows frame lacks column(s) {missing}; it needs one row per offer shown "
            f"with {[*by, PREDICTED, ACCEPTED]}", column=missing[0])
    raw = frame[PREDICTED]
    if not pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_bool_dtype(raw):
        raise DataValidationError("predicted must be numbers (propensities in [0, 1])",
                                  column=PREDICTED)
    predicted = raw.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(predicted) | (predicted < 0) | (predicted > 1)
    if bad.any():
        raise DataValidationError(f"{int(bad.sum())} predicted value(s) are missing or "
                                  "outside [0, 1]", column=PREDICTED,
                                  rows=tuple(np.flatnonzero(bad)[:5].tolist()))
    flags = frame[ACCEPTED]
    if pd.api.types.is_bool_dtype(flags) and not flags.hasnans:
        return predicted, flags.to_numpy(dtype=bool)
    values = pd.to_numeric(flags, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        raise DataValidationError(f"{int(bad.sum())} accepted value(s) are not true/false",
                                  column=ACCEPTED, rows=tuple(np.flatnonzero(bad)[:5].tolist()))
    return predicted, values == 1.0


def _with_rates(counts: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    if counts.empty:
        return _empty((*by, *RATE_COLUMNS))
    shows = counts["shows"].to_numpy(dtype=np.float64)
    accepts = counts["accepts"].to_numpy(dtype=np.float64)
    predicted = counts["predicted"].to_numpy(dtype=np.float64)
    observed = accepts / shows
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(predicted > 0, observed / predicted, np.nan)
    low, high = wilson_interval(accepts, shows)
    return counts.assign(
        shows=counts["shows"].astype(np.int64), accepts=counts["accepts"].astype(np.int64),
        observed=observed, observed_over_predicted=ratio, low=low, high=high,
        flag=(predicted < low) | (predicted > high),
    )[[*by, *RATE_COLUMNS]]


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=_DTYPES.get(column, np.float64))
                         for column in columns})


_DTYPES = {"shows": np.int64, "accepts": np.int64, "bin": np.int64, "flag": bool,
           PRODUCT_ID: object, CHANNEL: object, LIFE_STAGE: object}
