"""A bank's extracts as Spark data, in parts that executors turn into validated banks.

The extracts are where the bank keeps them: a data folder as ``nbo`` reads it on one machine,
or each extract named on its own as a Parquet file or dataset, a path Spark reads
(``hdfs://``, ``s3a://``) or a table of the session's catalog (Hive). The driver checks what
it can without reading rows (columns, holdings form) and reads what every part must share
(the snapshot dates kept, the type of each further column); each part is then validated in
an executor by ``data.bank_parts``, as the parts of a split extract are on one machine.

Parts are made by a hash of the trimmed customer id (``xxhash64``), so a customer's rows
(customer, holdings, time-varying values) meet in one part. Which part a customer lands in
changes nothing downstream: campaign and target lists are ordered by scores and id hashes.
"""

from __future__ import annotations

import logging
import math
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from ..data import columns as C
from ..data.bank_config import BankConfig, load_bank_config
from ..data.bank_parts import KindTally, PartLayout, part_bank
from ..data.catalog import Catalog
from ..data.customers import CUSTOMER_COLUMNS
from ..data.extract_batches import (
    as_snapshots,
    interval_span,
    month_ends_of_spans,
    parse_snapshot_dates,
)
from ..data.extracts import (
    CUSTOMERS_FILE,
    FEATURES_FILE,
    HOLDINGS_FILE,
    BankData,
    find_extract,
    optional_extract,
)
from ..data.intervals import DEFAULT_MAX_MONTHS, INTERVALS, holdings_form
from ..exceptions import DataValidationError, RecommenderError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

PART = "_part"  # the part a row belongs to
ROWS = "_rows"  # what a part sends back, as Arrow (see ``part_results``)
ERROR = "_error"  # a task's named error, pickled
_TABLE = "_table"  # holdings or features, in the union of both
_FEATURE_KEYS = (C.CUSTOMER_ID, C.SNAPSHOT_DATE)


@dataclass(frozen=True)
class ExtractLocations:
    """Where each extract is: a path or URI Spark reads, or a table name. ``source`` names
    the bank in errors; ``config`` is its ``bank.toml`` (defaults when there is none)."""

    customers: str
    holdings: str
    features: str | None = None
    source: str = ""
    config: BankConfig = BankConfig()

    @classmethod
    def of(cls, data: str | None = None, customers: str | None = None,
           holdings: str | None = None, features: str | None = None) -> ExtractLocations:
        """A local data folder (its ``customers``, ``holdings`` and optional
        ``customer_features`` files, and ``bank.toml``), with any extract named on its own
        instead; or, without a folder, the customers and holdings named."""
        if data is not None and not Path(data).is_dir() and "://" not in data:
            data = None  # no such folder: the extracts are named one by one
        config, source = BankConfig(), data or customers or ""
        if data is not None and Path(data).is_dir():
            config = load_bank_config(data)
            customers = customers or str(find_extract(data, CUSTOMERS_FILE))
            holdings = holdings or str(find_extract(data, HOLDINGS_FILE))
            if features is None:
                found = optional_extract(data, FEATURES_FILE)
                features = None if found is None else str(found)
        elif data is not None:  # a folder Spark reads: hdfs://, s3a://
            customers = customers or f"{data.rstrip('/')}/{CUSTOMERS_FILE}.parquet"
            holdings = holdings or f"{data.rstrip('/')}/{HOLDINGS_FILE}.parquet"
        if not customers or not holdings:
            raise DataValidationError("name the customers and holdings extracts (a data folder, "
                                      "or --customers and --holdings)", source=source)
        return cls(customers, holdings, features, source, config)


def read_extract(spark: SparkSession, location: str) -> DataFrame:
    """An extract as a Spark DataFrame: a CSV file (every value text, as on one machine), a
    Parquet file or dataset, or a table of the session's catalog."""
    from pyspark.errors import AnalysisException

    is_path = "/" in location or ":" in location or Path(location).exists()
    try:
        if not is_path:
            frame = spark.read.table(location)
        elif location.lower().endswith(".csv"):
            frame = spark.read.csv(location, header=True, inferSchema=False)
        else:
            frame = spark.read.parquet(location)
    except AnalysisException as exc:
        what = "table not found" if not is_path else "file not found"
        raise DataValidationError(f"{what}: {str(exc).splitlines()[0]}",
                                  source=location) from exc
    index = [c for c in frame.columns if c.startswith("__index_level_")]  # pandas' index
    return frame.drop(*index) if index else frame


@dataclass
class SparkBank:
    """A bank's customers and their rows, keyed by part (``PART``); ``map_parts`` runs a
    function on each part's validated ``BankData`` in the executors."""

    customers: DataFrame
    events: DataFrame  # holdings, and the time-varying values when the bank has them
    layout: PartLayout
    parts: int
    n_customers: int
    holdings_columns: tuple[str, ...]
    intervals: bool
    catalog: Catalog

    def map_parts(self, fn: Callable[[int, BankData], Iterator[pd.DataFrame]]) -> DataFrame:
        """``fn(part, bank)``'s frames, one row per part: the frames in Arrow (``ROWS``), or
        a named error of the project (``ERROR``) rather than a failed task, since bad data
        fails every retry alike. ``part_results`` reads them on the driver."""
        bank_of = self.reader  # not self: the closure goes to the executors, DataFrames do not

        def run(key, customers: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
            part, rows, error = int(key[0]), None, None
            if not customers.empty:  # else holdings of no known customer: as locally, skipped
                try:
                    bank = bank_of(customers.drop(columns=[PART]), events.drop(columns=[PART]))
                    rows = pickle.dumps([_to_arrow(frame) for frame in fn(part, bank)])
                except RecommenderError as exc:
                    error = pickle.dumps(exc)
            return pd.DataFrame({PART: [part], ROWS: [rows], ERROR: [error]})

        return (self.customers.groupBy(PART).cogroup(self.events.groupBy(PART))
                .applyInPandas(run, f"{PART} int, {ROWS} binary, {ERROR} binary"))

    def rows_of(self, spark: SparkSession, customer_ids: np.ndarray) -> BankData:
        """These customers' rows on the driver, validated as one part (a few customers: a
        campaign's reached ones, for its decision log)."""
        from pyspark.sql import functions as F

        wanted = F.broadcast(spark.createDataFrame(
            pd.DataFrame({"_wanted": pd.Series(np.asarray(customer_ids, dtype=object),
                                               dtype=object)}), schema="_wanted string"))
        mine = part_key() == F.col("_wanted")
        return self.reader(
            self.customers.join(wanted, mine, "left_semi").drop(PART).toPandas(),
            self.events.join(wanted, mine, "left_semi").drop(PART).toPandas())

    @property
    def reader(self) -> PartReader:
        return PartReader(self.layout, self.holdings_columns, self.intervals, self.catalog)


@dataclass(frozen=True)
class PartReader:
    """Turns some customers' raw rows (all of each one's) into a validated bank: in an
    executor for a part, on the driver for the customers a campaign reached."""

    layout: PartLayout
    holdings_columns: tuple[str, ...]
    intervals: bool
    catalog: Catalog

    def __call__(self, customers: pd.DataFrame, events: pd.DataFrame) -> BankData:
        holdings, values = split_events(events, self.holdings_columns,
                                        self.layout.feature_columns)
        if self.intervals:
            holdings = _as_snapshots(holdings, self.layout.snapshots)
        return part_bank(customers, holdings, values, self.layout, self.catalog)


def part_results(frame: DataFrame) -> Iterator[pd.DataFrame]:
    """The frames of ``map_parts`` on the driver, a part at a time (each part's frames come
    as compressed Arrow, turned into pandas only when its turn comes); then the named error of
    the first part that had one, raised as it was raised in the executor."""
    errors = []
    for row in frame.collect():
        if row[ERROR] is not None:
            errors.append((row[PART], row[ERROR]))
        elif row[ROWS] is not None:
            yield from map(_from_arrow, pickle.loads(row[ROWS]))
    if errors:
        raise pickle.loads(min(errors)[1])


def _to_arrow(frame: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_arrow(data: bytes) -> pd.DataFrame:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all().to_pandas()


def part_key(column: str = C.CUSTOMER_ID):
    """What a customer's part is hashed from: the id as trimmed text (an integer id and its
    text agree)."""
    from pyspark.sql import functions as F

    return F.trim(F.col(column).cast("string"))


def split_events(events: pd.DataFrame, holdings_columns: tuple[str, ...],
                  feature_columns: tuple[str, ...] | None
                  ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The holdings rows and the time-varying rows (None: the bank has none) of ``events``,
    each with its own extract's columns."""
    if feature_columns is None:
        return events[list(holdings_columns)], None
    table = events[_TABLE].to_numpy()
    return (events.loc[table == HOLDINGS_FILE, list(holdings_columns)].reset_index(drop=True),
            events.loc[table == FEATURES_FILE,
                       [*_FEATURE_KEYS, *feature_columns]].reset_index(drop=True))


def _as_snapshots(holdings: pd.DataFrame, months: tuple[pd.Timestamp, ...]) -> pd.DataFrame:
    """Interval holdings as their month-end snapshot rows, as a split extract makes them."""
    batch = pa.RecordBatch.from_pandas(holdings, preserve_index=False)
    return as_snapshots(batch, list(months)).to_pandas()


def open_bank(spark: SparkSession, where: ExtractLocations, catalog: Catalog,
              last_snapshots: int | None, part_size: int,
              max_months: int = DEFAULT_MAX_MONTHS) -> SparkBank:
    """The bank's extracts in parts of about ``part_size`` customers, holdings cut to the
    latest ``last_snapshots`` snapshots (all with None), as ``data.partition.split_bank``
    cuts them on one machine. Reads the snapshot dates and counts the customers (two small
    jobs); the columns' types are tallied in one more."""
    from pyspark.sql import functions as F

    customers = read_extract(spark, where.customers)
    holdings = read_extract(spark, where.holdings)
    if C.CUSTOMER_ID not in customers.columns:
        raise DataValidationError(f"missing required columns {[C.CUSTOMER_ID]}",
                                  source=where.customers)
    intervals = holdings_form(holdings.columns, where.holdings) == INTERVALS
    if intervals:
        dates = _interval_month_ends(holdings, where.holdings, max_months)
    else:
        values = _snapshot_values(holdings, where.holdings)
        dates = sorted(set(values.values()))
    keep = tuple(dates[-last_snapshots:] if last_snapshots else dates)
    if not intervals and last_snapshots:
        kept = set(keep)
        kind = dict(holdings.dtypes)[C.SNAPSHOT_DATE]  # literals of the column's own type:
        holdings = holdings.where(F.col(C.SNAPSHOT_DATE).isin(  # Parquet skips other months
            [F.lit(text).cast(kind) for text, date in values.items() if date in kept]))
    declared = where.config.features
    kinds = _kinds(customers, CUSTOMER_COLUMNS, declared)
    events, feature_columns = holdings, None
    if where.features is not None:
        features = read_extract(spark, where.features)
        feature_columns = tuple(c for c in features.columns if c not in _FEATURE_KEYS)
        kinds.update(_kinds(features, _FEATURE_KEYS, declared))
        events = _union(holdings, features)
    n_customers = customers.count()
    parts = max(1, math.ceil(n_customers / part_size))
    part = F.pmod(F.xxhash64(part_key()), F.lit(parts)).cast("int")
    layout = PartLayout(keep, where.source,
                        replace(where.config, features={**kinds, **declared}), feature_columns)
    log.info("reading %d customers of %s in %d parts (%d snapshots kept)", n_customers,
             where.source, parts, len(keep))
    return SparkBank(customers.withColumn(PART, part), events.withColumn(PART, part), layout,
                     parts, n_customers, tuple(holdings.columns), intervals, catalog)


def _snapshot_values(holdings: DataFrame, source: str) -> dict[str, pd.Timestamp]:
    """Each distinct snapshot value as text (Spark's own cast, which Spark casts back for
    ``isin``: no Python timestamp, which the machine's time zone would shift), and the date
    it reads as; a value that is no date names the extract. Integers are nanoseconds (Parquet
    written by pandas) and are read as numbers, as on one machine."""
    from pyspark.sql import functions as F

    numeric = dict(holdings.dtypes)[C.SNAPSHOT_DATE] in ("bigint", "int")
    value = F.col("value")  # the distinct values first: a few, then cast
    rows = (holdings.select(F.col(C.SNAPSHOT_DATE).alias("value")).distinct()
            .select(value.cast("string").alias("text"),
                    value if numeric else value.cast("string").alias("value")).collect())
    rows = [row for row in rows if row["text"] is not None]
    values = [row["value"] for row in rows]
    parse_snapshot_dates(values, source)  # the error a bad value gets on one machine
    dates = pd.to_datetime(pd.Series(values, dtype=object))
    return {row["text"]: pd.Timestamp(date) for row, date in zip(rows, dates, strict=True)}


def _interval_month_ends(holdings: DataFrame, source: str,
                         max_months: int) -> list[pd.Timestamp]:
    """The month-ends of interval holdings, as ``data.extract_batches.interval_month_ends``
    chooses them: the earliest and latest date of each Spark partition, then the span."""
    dates = [c for c in ("opened_on", "closed_on") if c in holdings.columns]

    def span(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in frames:
            try:
                found = interval_span(frame, source)
            except DataValidationError as exc:
                yield pd.DataFrame({"first": [pd.NaT], "last": [pd.NaT],
                                    ERROR: [pickle.dumps(exc)]})
                continue
            if found is not None:
                yield pd.DataFrame({"first": [found[0]], "last": [found[1]], ERROR: [None]})

    spans = holdings.select(*dates).mapInPandas(
        span, f"first timestamp_ntz, last timestamp_ntz, {ERROR} binary").toPandas()
    failed = spans[spans[ERROR].notna()]
    if len(failed):
        raise pickle.loads(failed[ERROR].iloc[0])
    return month_ends_of_spans(zip(spans["first"], spans["last"], strict=True), max_months)


def _kinds(frame: DataFrame, skip, declared) -> dict[str, str]:
    """The type of each undeclared further column, tallied over the whole extract in the
    executors (``KindTally``), as on one machine."""
    names = [c for c in frame.columns if c not in {*skip, *C.PROTECTED} and c not in declared]
    if not names:
        return {}

    def tally(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        counted = KindTally(names)
        for part in frames:
            counted.add(part)
        yield pd.DataFrame({"tally": [pickle.dumps(counted)]})

    whole = KindTally(names)
    for row in frame.select(*names).mapInPandas(tally, "tally binary").collect():
        whole.merge(pickle.loads(row[0]))
    return whole.kinds()


def _union(holdings: DataFrame, features: DataFrame) -> DataFrame:
    """Holdings and time-varying values in one frame, told apart by ``_TABLE``: a part
    needs both, and Spark groups two frames together (cogroup), not three."""
    from pyspark.sql import functions as F

    left = holdings.withColumn(_TABLE, F.lit(HOLDINGS_FILE))
    right = features.withColumn(_TABLE, F.lit(FEATURES_FILE))
    types = dict(left.dtypes)
    for column, kind in right.dtypes:  # a key typed differently in the two: as text in both
        if column in types and types[column] != kind:
            left = left.withColumn(column, _as_text(column, types[column]))
            right = right.withColumn(column, _as_text(column, kind))
    return left.unionByName(right, allowMissingColumns=True)


def _as_text(column: str, kind: str):
    """A column as text the extract checks read as they read the column itself: a snapshot
    date held as nanoseconds (Parquet written by pandas) as its ISO date and time."""
    from pyspark.sql import functions as F

    if column == C.SNAPSHOT_DATE and kind in ("bigint", "int"):
        return F.timestamp_micros(F.floor(F.col(column) / 1000)).cast("string")
    return F.col(column).cast("string")
