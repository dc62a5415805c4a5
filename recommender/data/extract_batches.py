"""Extract files read a batch at a time: a bank too large for memory is streamed, never loaded.

Parquet is read one row group at a time (two decoding at once) and CSV as strings, as
``read_table`` reads it; only the rows of the snapshot dates asked for are kept. Snapshot
dates and, for interval holdings, the month-ends come from one pass over the date columns,
and a batch of intervals becomes its snapshot rows. ``partition`` splits extracts with these.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..exceptions import DataValidationError
from . import columns as C
from .extracts import interval_dates
from .intervals import CLOSED_ON, OPENED_ON, held_months, month_ends

_BATCH_ROWS = 500_000


def read_batches(path: Path, columns: list[str] | None = None,
                  dates: list[pd.Timestamp] | None = None) -> Iterator[pa.RecordBatch]:
    """Record batches of a Parquet or CSV extract, only the rows of ``dates`` if given.

    CSV values stay strings, as read_table reads them. Parquet is read one row group at a
    time (skipping those whose statistics hold none of ``dates``): extracts written from
    pandas repeat the whole customer dictionary in every row group, and streaming readers
    keep those dictionaries, so memory grew with the number of customers.
    """
    if path.suffix.lower() == ".csv":
        with path.open("rb") as handle:
            names = pacsv.open_csv(handle).schema.names
        reader = pacsv.open_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, strings_can_be_null=True,
            include_columns=columns))
        for batch in reader:
            yield _on_dates(batch, dates)
        return
    file = pq.ParquetFile(path)
    column = file.schema_arrow.get_field_index(C.SNAPSHOT_DATE)
    wanted = None if dates is None else {d.to_datetime64() for d in dates}
    groups = []
    for group in range(file.metadata.num_row_groups):
        stats = file.metadata.row_group(group).column(column).statistics if (
            wanted is not None and column >= 0) else None
        if stats is None or not stats.has_min_max or any(
                np.datetime64(stats.min) <= d <= np.datetime64(stats.max) for d in wanted):
            groups.append(group)

    def read(group: int) -> pa.Table:  # one reader per call: readers are not shared
        return pq.ParquetFile(path).read_row_group(group, columns=columns)

    # Two row groups decode at once (both cores; Arrow releases the GIL), never more.
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending: deque = deque()
        for group in groups:
            pending.append(pool.submit(read, group))
            if len(pending) == 2:
                yield from _batches(pending.popleft().result(), dates)
        while pending:
            yield from _batches(pending.popleft().result(), dates)


def _batches(table: pa.Table, dates: list[pd.Timestamp] | None) -> Iterator[pa.RecordBatch]:
    for batch in table.to_batches(max_chunksize=_BATCH_ROWS):
        yield _on_dates(batch, dates)


def _on_dates(batch: pa.RecordBatch, dates: list[pd.Timestamp] | None) -> pa.RecordBatch:
    """The rows whose snapshot date is one of ``dates`` (compared as dates, whatever the
    file's type: a CSV's strings or a Parquet timestamp of any unit)."""
    if dates is None or C.SNAPSHOT_DATE not in batch.schema.names:
        return batch
    column = batch.column(C.SNAPSHOT_DATE)
    if pa.types.is_timestamp(column.type):  # Parquet: compare in the file's own unit
        wanted = pa.array([d.to_datetime64() for d in dates]).cast(column.type)
        return batch.filter(pc.is_in(column, value_set=wanted))
    parsed = pd.to_datetime(column.to_pandas(), errors="coerce")
    return batch.filter(pa.array(parsed.isin(dates).to_numpy()))


def count_rows(path: Path) -> int:
    if path.suffix.lower() == ".parquet":
        return pq.ParquetFile(path).metadata.num_rows
    return sum(batch.num_rows for batch in read_batches(path, columns=[C.CUSTOMER_ID]))


def snapshot_dates(path: Path) -> list[pd.Timestamp]:
    """Every snapshot date of the holdings extract, in order; a bad date names the file."""
    seen: set = set()
    if path.suffix.lower() == ".parquet":  # one date per row group: the footer says which
        meta = pq.ParquetFile(path).metadata
        column = meta.schema.to_arrow_schema().get_field_index(C.SNAPSHOT_DATE)
        stats = [meta.row_group(i).column(column).statistics
                 for i in range(meta.num_row_groups)] if column >= 0 else [None]
        if all(s is not None and s.has_min_max and s.min == s.max and s.null_count == 0
               for s in stats):
            return [pd.Timestamp(d) for d in sorted({s.min for s in stats})]
    for batch in read_batches(path, columns=[C.SNAPSHOT_DATE]):
        seen.update(pc.unique(batch.column(0)).to_pylist())
    return parse_snapshot_dates(seen, str(path))


def parse_snapshot_dates(values, source: str) -> list[pd.Timestamp]:
    """The distinct snapshot dates among ``values`` (as an extract holds them), in order; a
    value that is no date names the extract."""
    unique = pd.Series(sorted(set(values), key=str), dtype=object)
    parsed = pd.to_datetime(unique, errors="coerce")
    if parsed.isna().any():
        bad = unique[parsed.isna()].head(3).tolist()
        raise DataValidationError(f"snapshot_date values {bad} are not dates", source=source,
                                  column=C.SNAPSHOT_DATE)
    return [pd.Timestamp(d) for d in np.sort(parsed.unique())]


def interval_month_ends(path: Path, columns: list[str], max_months: int) -> list[pd.Timestamp]:
    """The month-ends of an interval holdings extract, as ``load_bank`` chooses them, from one
    pass over its date columns; bad dates name the file, the column and the rows."""
    spans, offset = [], 0
    for batch in read_batches(path, columns=[c for c in (OPENED_ON, CLOSED_ON) if c in columns]):
        frame = batch.to_pandas()
        try:
            spans.append(interval_span(frame, str(path)))
        except DataValidationError as exc:  # rows of the whole file, not of the batch
            raise DataValidationError(exc.reason, source=exc.source, column=exc.column,
                                      rows=tuple(r + offset for r in exc.rows),
                                      problem=exc.problem) from None
        offset += len(frame)
    return month_ends_of_spans(spans, max_months)


def interval_span(frame: pd.DataFrame, source: str) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """The earliest and the latest date of a batch of interval holdings, its dates checked
    (None for no rows): what the month-ends of the whole extract are chosen from."""
    opened, closed = interval_dates(frame, source)
    if not len(frame):
        return None
    return opened.min(), (opened.max() if closed.isna().all() else max(opened.max(),
                                                                       closed.max()))


def month_ends_of_spans(spans, max_months: int) -> list[pd.Timestamp]:
    """The month-ends ``load_bank`` chooses for the batches' spans (``interval_span``)."""
    spans = [span for span in spans if span is not None]
    ends = month_ends(pd.Series([first for first, _ in spans], dtype="datetime64[ns]"),
                      pd.Series([last for _, last in spans], dtype="datetime64[ns]"),
                      max_months=max_months)
    return [pd.Timestamp(d) for d in ends]


def as_snapshots(batch: pa.RecordBatch, months: list[pd.Timestamp]) -> pa.RecordBatch:
    """A batch of interval holdings as its snapshot rows at the month-ends ``months``
    (repeated rows of overlapping intervals go when a part is validated)."""
    ends = np.array([d.to_datetime64() for d in months], dtype="datetime64[ns]")
    names = batch.schema.names
    closed = (batch.column(CLOSED_ON).to_pandas() if CLOSED_ON in names
              else pd.Series(pd.NaT, index=range(batch.num_rows)))
    rows, held = held_months(pd.to_datetime(batch.column(OPENED_ON).to_pandas(), errors="coerce"),
                             pd.to_datetime(closed, errors="coerce"), ends)
    ids = [n for n in (C.CUSTOMER_ID, C.PRODUCT_ID) if n in names]
    return pa.RecordBatch.from_arrays(
        [batch.column(n).take(pa.array(rows)) for n in ids] + [pa.array(ends[held])],
        names=[*ids, C.SNAPSHOT_DATE])
