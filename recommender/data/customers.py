"""The customers extract: only ``customer_id`` is required, every other column optional.

An optional column the extract does not have gets the bank's default (``bank.toml``) or the
conservative one of ``bank_config.DEFAULTS``, and one warning saying what that changes
(``missing_effects``). Further columns are the bank's own features (``features``). Every
check is vectorised and names the file, the column and the first offending rows.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..exceptions import DataValidationError
from . import columns as C
from .bank_config import BankConfig
from .features import FeatureColumn, FeatureSchema, extra_columns
from .value_checks import RANGES, boolean, categorical, date_column, fail_if, numeric

log = logging.getLogger(__name__)

# Every customer column but the id is optional; these get a default (and a warning) when
# absent. The service flags and the risk assessment date are simply false / never.
OPTIONAL_CUSTOMER_COLUMNS = (
    C.AGE, C.INCOME, C.MARITAL_STATUS, C.DEPENDANTS, C.TENURE_MONTHS, C.SEGMENT, C.RISK_GRADE,
    C.RESIDENCY, C.CONSENT_PROFILING,
)
CUSTOMER_COLUMNS = (C.CUSTOMER_ID, *OPTIONAL_CUSTOMER_COLUMNS, C.BIRTH_DATE,
                    C.RISK_ASSESSED_ON, C.VULNERABLE, C.OPEN_COMPLAINT, C.GENDER)


def validate_customers(frame: pd.DataFrame, source: str = "<customers>",
                       as_of: pd.Timestamp | None = None, config: BankConfig | None = None,
                       quiet: bool = False) -> pd.DataFrame:
    """The customers extract with canonical columns and dtypes, or a DataValidationError.

    Only ``customer_id`` is required. An optional column the extract does not have gets
    ``config``'s default (``bank_config.DEFAULTS`` without one) and one warning saying what
    that changes (``quiet``: no warning, for a customer described in a request); see
    ``missing_effects``. Further columns follow the canonical ones, validated as features
    (``features.extra_columns``).
    """
    config = config or BankConfig()
    if C.CUSTOMER_ID not in frame.columns:
        raise DataValidationError(f"missing required columns {[C.CUSTOMER_ID]}", source=source)
    frame = frame.reset_index(drop=True)
    absent = [c for c in OPTIONAL_CUSTOMER_COLUMNS if c not in frame.columns
              and not (c == C.AGE and C.BIRTH_DATE in frame.columns)]
    if not quiet:
        for column in absent:
            log.warning("%s: no %s column: %s", source, column,
                        missing_effects(config)[column])
    ids = frame[C.CUSTOMER_ID].astype("string").str.strip()
    fail_if((ids.isna() | (ids == "")).to_numpy(dtype=bool), "is empty", source, C.CUSTOMER_ID)
    fail_if(ids.duplicated(keep="first").to_numpy(), "is a duplicate customer id", source,
             C.CUSTOMER_ID)
    out = pd.DataFrame({C.CUSTOMER_ID: ids.astype(str)})
    n = len(frame)
    if C.AGE in frame.columns:
        out[C.AGE] = numeric(frame, C.AGE, source, integer=True)
    elif C.BIRTH_DATE in frame.columns:
        born = date_column(frame, C.BIRTH_DATE, source)
        reference = as_of if as_of is not None else pd.Timestamp.today().normalize()
        before_birthday = (born.dt.month > reference.month) | (
            (born.dt.month == reference.month) & (born.dt.day > reference.day))
        out[C.AGE] = (reference.year - born.dt.year - before_birthday).astype(np.int32)
        youngest, oldest = RANGES[C.AGE]
        fail_if(((out[C.AGE] < youngest) | (out[C.AGE] > oldest)).to_numpy(),
                 "gives an impossible age", source, C.BIRTH_DATE)
    else:
        out[C.AGE] = np.full(n, np.nan)  # unknown: only products without an age limit
    out[C.INCOME] = (numeric(frame, C.INCOME, source, allow_missing=True)
                     if C.INCOME in frame.columns else np.full(n, np.nan))
    out[C.MARITAL_STATUS] = _or_default(frame, C.MARITAL_STATUS, config, lambda: categorical(
        frame, C.MARITAL_STATUS, source, C.MARITAL_STATUSES))
    out[C.DEPENDANTS] = _or_default(frame, C.DEPENDANTS, config, lambda: numeric(
        frame, C.DEPENDANTS, source, integer=True)).astype(np.int32)
    # Until the holdings are read; load_bank counts it from the first snapshot held.
    out[C.TENURE_MONTHS] = (numeric(frame, C.TENURE_MONTHS, source, integer=True)
                            if C.TENURE_MONTHS in frame.columns
                            else np.zeros(n, dtype=np.int32))
    out[C.SEGMENT] = _or_default(frame, C.SEGMENT, config, lambda: _segment(frame, source))
    out[C.RISK_GRADE] = _or_default(frame, C.RISK_GRADE, config, lambda: categorical(
        frame, C.RISK_GRADE, source, C.RISK_GRADES))
    if C.RISK_ASSESSED_ON in frame.columns:
        # Empty for a customer never assessed: the policy treats that as outdated.
        out[C.RISK_ASSESSED_ON] = date_column(frame, C.RISK_ASSESSED_ON, source,
                                              allow_missing=True)
    out[C.RESIDENCY] = _or_default(frame, C.RESIDENCY, config, lambda: categorical(
        frame, C.RESIDENCY, source, C.RESIDENCIES))
    out[C.CONSENT_PROFILING] = _or_default(frame, C.CONSENT_PROFILING, config, lambda: boolean(
        frame, C.CONSENT_PROFILING, source)).astype(bool)
    for flag in (C.VULNERABLE, C.OPEN_COMPLAINT):  # optional service flags, false when absent
        out[flag] = boolean(frame, flag, source) if flag in frame.columns else False
    if C.GENDER in frame.columns:  # audit only: carried, never used by rules or models
        out[C.GENDER] = frame[C.GENDER].astype("string").fillna("").astype(str)
    extra, _ = extra_columns(frame, CUSTOMER_COLUMNS, source, config.features, quiet=quiet)
    return pd.concat([out, extra], axis=1) if len(extra.columns) else out


def customer_schema(customers: pd.DataFrame, config: BankConfig | None = None) -> FeatureSchema:
    """The schema of the further columns of validated customers: numbers are numeric."""
    known = set(CUSTOMER_COLUMNS) | set(C.PROTECTED)
    declared = (config or BankConfig()).features
    return FeatureSchema(tuple(
        FeatureColumn(name, "numeric" if pd.api.types.is_numeric_dtype(customers[name])
                      and declared.get(name) != "category" else "category")
        for name in customers.columns if name not in known))


def missing_effects(config: BankConfig) -> dict[str, str]:
    """What the absence of each optional customer column changes, as the warning says it."""
    d = config.defaults
    return {
        C.AGE: "ages are unknown: only products without an age limit are offered, and "
               "life-stage rules on age do not match",
        C.INCOME: "incomes are unknown: products with a minimum income are not offered",
        C.MARITAL_STATUS: f"every customer's marital status is {d[C.MARITAL_STATUS]!r}",
        C.DEPENDANTS: f"every customer has {d[C.DEPENDANTS]} dependants for the life-stage "
                      "rules",
        C.TENURE_MONTHS: "tenure is counted from each customer's first holdings snapshot",
        C.SEGMENT: f"every customer is in segment {d[C.SEGMENT]!r}",
        C.RISK_GRADE: f"every customer has risk grade {d[C.RISK_GRADE]}: only products up "
                      "to that risk are suitable (set [defaults] risk_grade in bank.toml)",
        C.RESIDENCY: f"every customer is {d[C.RESIDENCY]!r} (set [defaults] residency in "
                     "bank.toml)",
        C.CONSENT_PROFILING: ("every customer is taken to have consented to profiling "
                              "(personalised offers); set [defaults] consent_profiling = "
                              "false in bank.toml if that is not so"
                              if d[C.CONSENT_PROFILING] else
                              "no customer has consented to profiling: every offer is "
                              "non-personalised"),
    }


def _or_default(frame: pd.DataFrame, column: str, config: BankConfig, read) -> pd.Series:
    if column in frame.columns:
        return read()
    return pd.Series(np.full(len(frame), config.default(column), dtype=object
                             if isinstance(config.default(column), str) else None))


def _segment(frame: pd.DataFrame, source: str) -> pd.Series:
    segment = frame[C.SEGMENT].astype("string").str.strip()
    fail_if((segment.isna() | (segment == "")).to_numpy(dtype=bool), "is empty", source,
             C.SEGMENT)
    return segment.astype(str)


def tenure_from_holdings(holdings: pd.DataFrame, n_customers: int) -> np.ndarray:
    """Months from each customer's first holdings snapshot to the latest one (a lower bound
    of the tenure, for a bank whose extract has none); 0 for a customer holding nothing."""
    tenure = np.zeros(n_customers, dtype=np.int32)
    if len(holdings) == 0:
        return tenure
    dates = holdings[C.SNAPSHOT_DATE]
    months = (dates.dt.year * 12 + dates.dt.month).to_numpy(dtype=np.int64)
    codes = holdings[C.CUSTOMER_ID].cat.codes.to_numpy()
    first = np.full(n_customers, np.iinfo(np.int64).max)
    np.minimum.at(first, codes, months)
    held = first < np.iinfo(np.int64).max
    tenure[held] = months.max() - first[held]
    return tenure
