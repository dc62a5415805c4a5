"""Has the population moved since training? The population stability index per feature.

A model is only as good as the resemblance of today's customers to those it learned from.
PSI compares the share of customers per bin of a feature, reference (training) against
current: sum((current - reference) * ln(current / reference)). By the usual reading, below
0.1 is stable, 0.1 to 0.2 worth a look, above 0.2 a shift that calls for retraining.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..data.columns import CUSTOMER_ID
from ..exceptions import DataValidationError

logger = logging.getLogger(__name__)

FLOOR = 1e-4  # least share of a bin: an empty bin would make ln(cur / ref) infinite
DRIFT_COLUMNS = ("feature", "psi", "flagged")


def psi(reference: pd.Series, current: pd.Series, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference``.

    Numbers (and dates) are cut at the reference's quantiles: ``bins`` bins of equal
    reference count, fewer where quantiles tie, the first and last open-ended so values past
    the reference's range still land somewhere. Booleans, strings and categoricals count per
    reference category, with categories the reference never saw in one 'other' bin. Missing
    values are a bin of their own either way: a feature going missing is drift too.
    """
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise ValueError(f"bins must be a positive whole number, got {bins!r}")
    label = reference.name if reference.name is not None else current.name
    name = "" if label is None else str(label)
    if not len(reference) or not len(current):
        raise DataValidationError("PSI needs values in both the reference and the current "
                                  "sample; one of them is empty", column=name)
    kinds = {_is_numeric(side) for side in (reference, current) if not side.isna().all()}
    if len(kinds) > 1:
        raise DataValidationError(
            f"the column holds {reference.dtype} in the reference but {current.dtype} now; "
            "fix the extract's type before comparing populations", column=name)
    if True in kinds:
        ref_bins, cur_bins, width = _numeric_bins(_as_float(reference), _as_float(current), bins)
    else:
        ref_bins, cur_bins, width = _category_bins(reference, current)
    ref_share = np.maximum(np.bincount(ref_bins, minlength=width) / len(ref_bins), FLOOR)
    cur_share = np.maximum(np.bincount(cur_bins, minlength=width) / len(cur_bins), FLOOR)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def drift_table(reference: pd.DataFrame, current: pd.DataFrame, threshold: float = 0.2,
                exclude: Sequence[str] = (CUSTOMER_ID,), bins: int = 10) -> pd.DataFrame:
    """PSI of every column the two frames share (but ``exclude``), largest first.

    Columns: feature, psi, flagged (psi > threshold). Columns found in only one frame have
    no PSI; they are listed in ``table.attrs["missing"]`` as {"reference_only": [...],
    "current_only": [...]} and logged as a warning, since a feature appearing or vanishing
    is a schema change to look at, not a number on the drift scale.
    """
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a non-negative number, got {threshold!r}")
    skip = set(exclude)
    current_columns = set(current.columns)
    shared = [c for c in reference.columns if c in current_columns and c not in skip]
    missing = {
        "reference_only": [str(c) for c in reference.columns
                           if c not in current_columns and c not in skip],
        "current_only": [str(c) for c in current.columns
                         if c not in set(reference.columns) and c not in skip],
    }
    if missing["reference_only"] or missing["current_only"]:
        logger.warning("columns not in both populations, no PSI: only in the reference %s, "
                       "only in the current %s", missing["reference_only"],
                       missing["current_only"])
    values = np.array([psi(reference[c], current[c], bins) for c in shared], dtype=np.float64)
    table = pd.DataFrame({"feature": [str(c) for c in shared], "psi": values,
                          "flagged": values > threshold})
    table = table.sort_values("psi", ascending=False, kind="stable").reset_index(drop=True)
    table.attrs["missing"] = missing
    flagged = table.loc[table["flagged"], "feature"].tolist()
    if flagged:
        logger.info("PSI above %s for %d feature(s): %s", threshold, len(flagged), flagged)
    return table


def _is_numeric(values: pd.Series) -> bool:
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return False
    return pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_datetime64_any_dtype(dtype)


def _as_float(values: pd.Series) -> np.ndarray:
    """Numbers as float64 with NaN for missing; dates as nanoseconds since the epoch."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        stamps = values.dt.tz_convert(None) if values.dt.tz is not None else values
        missing = stamps.isna().to_numpy()
        numbers = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
        numbers[missing] = np.nan
        return numbers
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _numeric_bins(reference: np.ndarray, current: np.ndarray,
                  bins: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Bin numbers of each value: 0..len(edges) between the reference's inner quantiles,
    then one for NaN."""
    finite = reference[np.isfinite(reference)]
    if len(finite):
        edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    else:
        edges = np.empty(0)
    nan_bin = len(edges) + 1

    def assign(values: np.ndarray) -> np.ndarray:
        found = np.searchsorted(edges, values, side="right")
        found[np.isnan(values)] = nan_bin
        return found

    return assign(reference), assign(current), nan_bin + 1


def _category_bins(reference: pd.Series,
                   current: pd.Series) -> tuple[np.ndarray, np.ndarray, int]:
    """Bin numbers: one per reference category, then 'other' (unseen), then missing."""
    ref_codes, categories = pd.factorize(_plain(reference), use_na_sentinel=True)
    other, missing = len(categories), len(categories) + 1
    cur_codes = pd.Index(categories).get_indexer(_plain(current))
    ref_bins = np.where(ref_codes < 0, missing, ref_codes)
    cur_bins = np.where(current.isna().to_numpy(), missing,
                        np.where(cur_codes < 0, other, cur_codes))
    return ref_bins, cur_bins, missing + 1


def _plain(values: pd.Series) -> pd.Series:
    """Categorical values as plain values, so categories match by value, not by code."""
    return values.astype(object) if isinstance(values.dtype, pd.CategoricalDtype) else values
