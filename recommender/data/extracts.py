"""Loading and validating the bank's extracts (customers, holdings) from CSV or Parquet.

Every check is vectorised and every failure raises ``DataValidationError`` naming the file,
the column and the first offending rows, so that a bad extract is fixed at its source rather
than half-loaded. Holdings come as monthly snapshots or as intervals (opened, closed), told
apart by their columns; intervals become month-end snapshots here (see ``intervals``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ..exceptions import DataValidationError
from . import columns as C
from .bank_config import BankConfig, load_bank_config
from .catalog import Catalog
from .customers import (
    CUSTOMER_COLUMNS,
    customer_schema,
    tenure_from_holdings,
    validate_customers,
)
from .features import (
    FeatureSchema,
    features_at,
    validate_customer_features,
)
from .intervals import (
    CLOSED_ON,
    DEFAULT_MAX_MONTHS,
    INTERVALS,
    OPENED_ON,
    held_months,
    holdings_form,
    month_end,
    month_ends,
)
from .value_checks import date_column, fail_if

log = logging.getLogger(__name__)

CUSTOMERS_FILE = "customers"
HOLDINGS_FILE = "holdings"
FEATURES_FILE = "customer_features"
@dataclass(frozen=True)
class BankData:
    """Validated extracts: one row per customer, one row per (customer, product, snapshot).

    ``as_of`` is the date the customers extract describes (tenure is counted to it): the
    latest snapshot unless the holdings were cut short for an evaluation. ``months`` are the
    snapshot dates of the whole extract when this is one part of it (see partition).
    """

    customers: pd.DataFrame
    holdings: pd.DataFrame
    as_of: pd.Timestamp | None = None
    months: tuple[pd.Timestamp, ...] | None = None
    schema: FeatureSchema = field(default_factory=FeatureSchema)
    customer_features: pd.DataFrame | None = None  # time-varying: customer, date, columns

    def customers_at(self, date: pd.Timestamp) -> pd.DataFrame:
        """The customers with each time-varying column as it stood at ``date``."""
        if self.customer_features is None:
            return self.customers
        values = features_at(self.customer_features, len(self.customers), date)
        return self.customers.assign(**{c: values[c].to_numpy() for c in values.columns})

    @property
    def snapshots(self) -> list[pd.Timestamp]:
        if self.months is not None:
            return list(self.months)
        return [pd.Timestamp(d) for d in sorted(pd.unique(self.holdings[C.SNAPSHOT_DATE]))]

    @property
    def reference_date(self) -> pd.Timestamp | None:
        if self.as_of is not None:
            return self.as_of
        snapshots = self.snapshots
        return snapshots[-1] if snapshots else None


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame; ids and text stay strings."""
    path = Path(path)
    if not path.is_file():
        raise DataValidationError("file not found", source=str(path))
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataValidationError(f"cannot read the file: {exc}", source=str(path)) from exc
    raise DataValidationError(
        f"unsupported file type {suffix!r}; use .csv or .parquet", source=str(path)
    )


def extract_columns(path: str | Path) -> list[str]:
    """The column names of a CSV or Parquet extract, without reading its rows."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            schema = pq.read_schema(path)
            # A DataFrame written with its index keeps it as a column pandas reads back as
            # the index: not a column of the extract.
            index = {c for c in (schema.pandas_metadata or {}).get("index_columns", [])
                     if isinstance(c, str)}
            return [name for name in schema.names if name not in index]
        return list(pd.read_csv(path, nrows=0).columns)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataValidationError(f"cannot read the file: {exc}", source=str(path)) from exc


def find_extract(data_dir: str | Path, name: str) -> Path:
    """``<data_dir>/<name>.parquet`` or ``.csv``, whichever exists."""
    for suffix in (".parquet", ".csv"):
        candidate = Path(data_dir) / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    raise DataValidationError(
        f"no {name}.parquet or {name}.csv in the data folder", source=str(data_dir)
    )


def optional_extract(data_dir: str | Path, name: str) -> Path | None:
    """``find_extract`` for an extract a bank may leave out: None when it has none."""
    try:
        return find_extract(data_dir, name)
    except DataValidationError:
        return None


def validate_holdings(frame: pd.DataFrame, catalog: Catalog, customer_ids: pd.Index,
                      source: str = "<holdings>") -> pd.DataFrame:
    """Holdings with categorical ids aligned to the customers and the catalog.

    Repeated (customer, product, snapshot) rows, e.g. two time deposits, are one holding.
    """
    missing = [c for c in (C.CUSTOMER_ID, C.PRODUCT_ID, C.SNAPSHOT_DATE) if c not in frame]
    if missing:
        raise DataValidationError(f"missing required columns {missing}", source=source)
    frame = frame.reset_index(drop=True)
    customers, products = _holding_ids(frame, catalog, customer_ids, source)
    out = pd.DataFrame({
        C.CUSTOMER_ID: customers, C.PRODUCT_ID: products,
        C.SNAPSHOT_DATE: date_column(frame, C.SNAPSHOT_DATE, source),
    })
    # One integer key per (customer, product, snapshot): far cheaper than hashing the rows.
    dates = out[C.SNAPSHOT_DATE].to_numpy().astype(np.int64)
    date_codes = np.unique(dates, return_inverse=True)[1]
    key = (customers.codes.astype(np.int64) * len(catalog) + products.codes) * (
        int(date_codes.max()) + 1 if len(date_codes) else 1) + date_codes
    _, first = np.unique(key, return_index=True)
    if len(first) == len(out):
        return out
    return out.iloc[np.sort(first)].reset_index(drop=True)


def validate_interval_holdings(frame: pd.DataFrame, catalog: Catalog, customer_ids: pd.Index,
                               source: str = "<holdings>", *,
                               as_of: pd.Timestamp | str | None = None,
                               max_months: int = DEFAULT_MAX_MONTHS) -> pd.DataFrame:
    """Interval holdings (``opened_on``, ``closed_on``) as the month-end snapshot rows
    ``validate_holdings`` gives, ordered by snapshot, customer and product.

    Month-ends and the held-at rule are those of ``intervals``: up to the month-end of
    ``as_of`` (default: of the latest date), at most ``max_months`` of them. Overlapping
    intervals of one customer and product count once.
    """
    missing = [c for c in (C.CUSTOMER_ID, C.PRODUCT_ID, OPENED_ON) if c not in frame]
    if missing:
        raise DataValidationError(f"missing required columns {missing}", source=source)
    frame = frame.reset_index(drop=True)
    customers, products = _holding_ids(frame, catalog, customer_ids, source)
    opened, closed = interval_dates(frame, source)
    ends = month_ends(opened, closed, as_of=as_of, max_months=max_months)
    rows, months = held_months(opened, closed, ends)
    # One key per (snapshot, customer, product), sorted in place, repeats dropped (np.unique
    # hashes first, several times slower at tens of millions of keys).
    n_customers, n_products = max(len(customer_ids), 1), max(len(catalog), 1)
    key = months.astype(np.int64) * n_customers
    key += customers.codes[rows]
    key *= n_products
    key += products.codes[rows]
    del rows, months
    key.sort()
    if len(key) > 1:
        key = key[np.concatenate(([True], key[1:] != key[:-1]))]
    product_codes = (key % n_products).astype(np.int32)
    key //= n_products
    customer_codes = (key % n_customers).astype(np.int32)
    return pd.DataFrame({
        C.CUSTOMER_ID: pd.Categorical.from_codes(customer_codes, categories=customer_ids),
        C.PRODUCT_ID: pd.Categorical.from_codes(
            product_codes, categories=pd.Index(catalog.ids.external_ids)),
        C.SNAPSHOT_DATE: ends[key // n_customers],
    })


def interval_dates(frame: pd.DataFrame, source: str) -> tuple[pd.Series, pd.Series]:
    """``opened_on`` and ``closed_on`` (NaT while held; all NaT without the column) as
    calendar days, checked: dates, plausible, and no closing before the opening. A blank
    ``closed_on`` is empty in Parquet text too, as it is in CSV."""
    opened = date_column(frame, OPENED_ON, source).dt.normalize()
    if CLOSED_ON not in frame:
        return opened, pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")
    raw = frame[CLOSED_ON]
    if not pd.api.types.is_datetime64_any_dtype(raw):
        blank = raw.astype("string").str.strip().eq("").fillna(False).to_numpy(dtype=bool)
        raw = raw.mask(blank)
    closed = date_column(pd.DataFrame({CLOSED_ON: raw}), CLOSED_ON, source,
                         allow_missing=True).dt.normalize()
    fail_if((closed < opened).to_numpy(dtype=bool), f"is before {OPENED_ON}", source, CLOSED_ON)
    return opened, closed


def _holding_ids(frame: pd.DataFrame, catalog: Catalog, customer_ids: pd.Index,
                 source: str) -> tuple[pd.Categorical, pd.Categorical]:
    """The customer and product of each holdings row; unknown ones name the rows."""
    customers = _aligned_categorical(frame[C.CUSTOMER_ID], customer_ids)
    fail_if(customers.codes < 0, "names a customer that is not in the customers extract",
             source, C.CUSTOMER_ID)
    products = _aligned_categorical(frame[C.PRODUCT_ID], pd.Index(catalog.ids.external_ids))
    fail_if(products.codes < 0, f"is not a product of the catalog {catalog.source}", source,
             C.PRODUCT_ID)
    return customers, products


def _aligned_categorical(values: pd.Series, categories: pd.Index) -> pd.Categorical:
    """Categorical over ``categories``; unknown values get code -1. Fast on dictionary input."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        mapping = categories.get_indexer(values.cat.categories.astype(str))
        codes = np.where(values.cat.codes.to_numpy() < 0, -1,
                         mapping[values.cat.codes.to_numpy()])
    else:
        codes = categories.get_indexer(values.astype("string").str.strip().astype(str))
    return pd.Categorical.from_codes(codes.astype(np.int32), categories=categories)


def _recent_holdings(path: Path, last_snapshots: int,
                     until: pd.Timestamp | None = None) -> pd.DataFrame:
    """Only the latest ``last_snapshots`` snapshots (up to ``until``) of a Parquet holdings
    file: a server or a campaign needs a few months, not the whole history, in memory."""
    try:
        dates = pd.to_datetime(pd.read_parquet(path, columns=[C.SNAPSHOT_DATE])[C.SNAPSHOT_DATE],
                               errors="coerce")
    except (OSError, ValueError, KeyError) as exc:
        raise DataValidationError(f"cannot read the file: {exc}", source=str(path)) from exc
    if dates.isna().any():  # let the full validation report the bad rows
        return read_table(path)
    unique = np.sort(dates.unique())
    if until is not None:
        unique = unique[unique <= until]
    keep = [pd.Timestamp(d) for d in unique[-last_snapshots:]]
    return pd.read_parquet(path, filters=[(C.SNAPSHOT_DATE, "in", keep)])


def load_bank(data_dir: str | Path, catalog: Catalog, last_snapshots: int | None = None, *,
              as_of: pd.Timestamp | str | None = None,
              max_months: int = DEFAULT_MAX_MONTHS) -> BankData:
    """Read and validate ``customers`` and ``holdings`` (Parquet or CSV) from a folder.

    Holdings are monthly snapshots or intervals, told apart by their columns; intervals
    become month-end snapshots (at most ``max_months`` of them, see ``intervals``).
    ``as_of`` ends the holdings at its month-end: interval snapshots run to it, later
    snapshots are dropped. ``last_snapshots`` keeps only the latest snapshots (what serving
    and campaigns need). Ages from birth dates are taken at the latest snapshot.
    """
    customers_path = find_extract(data_dir, CUSTOMERS_FILE)
    holdings_path = find_extract(data_dir, HOLDINGS_FILE)
    source = str(holdings_path)
    until = None if as_of is None else month_end(as_of)
    intervals = holdings_form(extract_columns(holdings_path), source) == INTERVALS
    if last_snapshots and not intervals and holdings_path.suffix == ".parquet":
        holdings_raw = _recent_holdings(holdings_path, last_snapshots, until)
    else:
        holdings_raw = read_table(holdings_path)
    config = load_bank_config(data_dir)
    raw_customers = read_table(customers_path)
    customers = validate_customers(raw_customers, str(customers_path),
                                   _latest_snapshot(holdings_raw, intervals, until), config)
    customer_ids = pd.Index(customers[C.CUSTOMER_ID])
    if intervals:  # the latest month-ends only: they are the latest snapshots
        months = min(max_months, last_snapshots) if last_snapshots else max_months
        holdings = validate_interval_holdings(holdings_raw, catalog, customer_ids, source,
                                              as_of=as_of, max_months=months)
    else:
        holdings = validate_holdings(holdings_raw, catalog, customer_ids, source)
        if until is not None:
            holdings = holdings[holdings[C.SNAPSHOT_DATE] <= until].reset_index(drop=True)
    if C.TENURE_MONTHS not in raw_customers.columns:
        customers[C.TENURE_MONTHS] = tenure_from_holdings(holdings, len(customers))
    features = _customer_features(data_dir, customer_ids, config)
    log.info("loaded %d customers and %d holding rows over %d snapshots from %s",
             len(customers), len(holdings), holdings[C.SNAPSHOT_DATE].nunique(), data_dir)
    bank = BankData(customers=customers, holdings=holdings, customer_features=features)
    if features is not None:  # the book describes customers as of the latest snapshot
        latest = bank.reference_date if bank.reference_date is not None else pd.Timestamp.max
        bank = replace(bank, customers=bank.customers_at(latest))
    return replace(bank, schema=customer_schema(bank.customers, config))


def _customer_features(data_dir: str | Path, customer_ids: pd.Index,
                       config: BankConfig) -> pd.DataFrame | None:
    """The optional time-varying extract, validated, or None."""
    path = optional_extract(data_dir, FEATURES_FILE)
    if path is None:
        return None
    clash = [c for c in extract_columns(path) if c in CUSTOMER_COLUMNS
             and c != C.CUSTOMER_ID]
    if clash:
        raise DataValidationError(f"columns {clash} belong to the customers extract, not to "
                                  "the time-varying features", source=str(path))
    features, _ = validate_customer_features(read_table(path), customer_ids, str(path),
                                             config.features)
    return features


def _latest_snapshot(raw: pd.DataFrame, intervals: bool,
                     until: pd.Timestamp | None) -> pd.Timestamp | None:
    """The date ages are taken at: the latest snapshot, read leniently (validation follows)."""
    if intervals:
        if until is not None:
            return until
        dates = [pd.to_datetime(raw[c], errors="coerce").max()
                 for c in (OPENED_ON, CLOSED_ON) if c in raw]
        latest = max((d for d in dates if pd.notna(d)), default=None)
        return None if latest is None else month_end(latest)
    latest = pd.to_datetime(raw[C.SNAPSHOT_DATE], errors="coerce").max()
    if pd.isna(latest):
        return None
    return latest if until is None else min(latest, until)


def write_bank(bank: BankData, out_dir: str | Path) -> None:
    """Write both extracts as Parquet; each file appears whole or not at all."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in ((CUSTOMERS_FILE, bank.customers), (HOLDINGS_FILE, bank.holdings)):
        final = out_dir / f"{name}.parquet"
        partial = out_dir / f".{name}.parquet.partial"
        try:
            frame.to_parquet(partial, index=False)
            partial.replace(final)
        finally:
            partial.unlink(missing_ok=True)
