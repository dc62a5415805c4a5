"""The bank's extracts in parts, so a job over every customer holds one part at a time.

A campaign over ten million customers must not hold ten million customers in memory. One
streaming pass splits the customers and holdings extracts by a hash of the customer id into
parts of about ``part_size`` customers (a customer and all their holdings land in the same
part), keeping only the latest snapshots the model reads. Each part is then read, validated
and scored on its own, with the snapshot dates of the whole extract so every part sees the
same months. Peak memory depends on the part size, not on the number of customers.

Interval holdings (``opened_on``, ``closed_on``) are turned into the same month-end snapshot
rows as ``load_bank`` makes of them, batch by batch as they are split: the month-ends come
from one first pass over the two date columns, which also checks them.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ..exceptions import DataValidationError
from . import columns as C
from .book import CustomerBatch, CustomerBook
from .catalog import Catalog
from .extracts import (
    CUSTOMERS_FILE,
    HOLDINGS_FILE,
    BankData,
    extract_columns,
    find_extract,
    interval_dates,
    validate_customers,
    validate_holdings,
)
from .intervals import (
    CLOSED_ON,
    DEFAULT_MAX_MONTHS,
    INTERVALS,
    OPENED_ON,
    held_months,
    holdings_form,
    month_ends,
)
from .life_stages import LifeStageRules

log = logging.getLogger(__name__)

DEFAULT_PART_SIZE = 100_000
CHILD_ABOVE = 200_000  # customers: larger extracts are split in a child process
_BATCH_ROWS = 500_000


def part_of(customer_ids, parts: int) -> np.ndarray:
    """The part each customer id belongs to: a stable hash, the same in every process."""
    values = pc.utf8_trim_whitespace(pa.array(np.asarray(customer_ids, dtype=object),
                                              pa.string()))
    hashed = pd.util.hash_array(values.to_numpy(zero_copy_only=False))
    return (hashed % np.uint64(parts)).astype(np.int64)


def _read_batches(path: Path, columns: list[str] | None = None,
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


class _Owners:
    """The part of each row's customer. Extracts written by pandas repeat one dictionary of
    customer ids in every row group: it is hashed once, then rows only look it up."""

    def __init__(self, parts: int) -> None:
        self.parts, self._dictionary, self._owner = parts, None, None

    def __call__(self, ids: pa.Array) -> np.ndarray:
        if not pa.types.is_dictionary(ids.type):
            return part_of(ids.to_numpy(zero_copy_only=False), self.parts)
        if self._dictionary is None or not ids.dictionary.equals(self._dictionary):
            self._dictionary = ids.dictionary
            step = 1 << 18  # as Python strings a slice at a time: the dictionary may be huge
            self._owner = np.concatenate([np.empty(0, np.int32)] + [
                part_of(ids.dictionary[i:i + step].to_numpy(zero_copy_only=False),
                        self.parts).astype(np.int32)
                for i in range(0, len(ids.dictionary), step)])
        return self._owner[ids.indices.to_numpy(zero_copy_only=False)]


def _compact(column: pa.Array) -> pa.Array:
    """A dictionary column with only the values its rows use (a part needs its own ids)."""
    if not pa.types.is_dictionary(column.type):
        return column
    used, codes = np.unique(column.indices.to_numpy(zero_copy_only=False), return_inverse=True)
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)),
                                          column.dictionary.take(pa.array(used)))


@dataclass
class PartedBank:
    """Customers and recent holdings split into parts on disk; iterate, then ``close``."""

    folder: Path
    parts: int
    customers: int
    snapshots: tuple[pd.Timestamp, ...]
    source: str
    owns_folder: bool = True

    def __enter__(self) -> PartedBank:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.owns_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _path(self, name: str, part: int) -> Path:
        return self.folder / f"{name}-{part:05d}.parquet"

    def read(self, part: int, catalog: Catalog, customer_ids=None) -> BankData:
        """One part, validated like the whole extracts; only ``customer_ids`` if given."""
        where = None if customer_ids is None else pc.field(C.CUSTOMER_ID).isin(
            pa.array(np.asarray(customer_ids, dtype=object), pa.string()))
        frames = []
        for name in (CUSTOMERS_FILE, HOLDINGS_FILE):
            path = self._path(name, part)
            frames.append(ds.dataset(path).to_table(filter=where).to_pandas()
                          if path.exists() else None)
        raw_customers, raw_holdings = frames
        as_of = self.snapshots[-1] if self.snapshots else None
        customers = validate_customers(raw_customers, f"{self.source} {CUSTOMERS_FILE}", as_of)
        if raw_holdings is None:
            raw_holdings = pd.DataFrame({C.CUSTOMER_ID: pd.Series([], dtype=str),
                                         C.PRODUCT_ID: pd.Series([], dtype=str),
                                         C.SNAPSHOT_DATE: pd.Series([], dtype="datetime64[ns]")})
        holdings = validate_holdings(raw_holdings, catalog, pd.Index(customers[C.CUSTOMER_ID]),
                                     f"{self.source} {HOLDINGS_FILE}")
        return BankData(customers, holdings, as_of=as_of, months=self.snapshots)


def split_bank(data_dir: str | Path, last_snapshots: int | None,
               part_size: int = DEFAULT_PART_SIZE, folder: str | Path | None = None,
               in_child: bool | None = None, max_months: int = DEFAULT_MAX_MONTHS) -> PartedBank:
    """Split the extracts of ``data_dir`` into parts of about ``part_size`` customers.

    Holdings keep only the latest ``last_snapshots`` snapshot dates (all with None); interval
    holdings become month-end snapshots as in ``load_bank`` (at most ``max_months``). The parts
    go to ``folder`` (a new temporary folder by default, removed by ``close``). The split runs
    in a child process (``in_child``; by default for more than ``CHILD_ABOVE`` customers):
    reading an extract's id dictionaries takes memory that grows with the bank, and a child
    gives all of it back before the campaign scores anyone.
    """
    customers_path = find_extract(data_dir, CUSTOMERS_FILE)
    holdings_path = find_extract(data_dir, HOLDINGS_FILE)
    columns = extract_columns(holdings_path)
    intervals = holdings_form(columns, str(holdings_path)) == INTERVALS
    dates = (_interval_month_ends(holdings_path, columns, max_months) if intervals
             else _snapshot_dates(holdings_path))
    keep = dates[-last_snapshots:] if last_snapshots else dates
    n_customers = _count_rows(customers_path)
    parts = max(1, math.ceil(n_customers / part_size))
    owns = folder is None
    out = Path(tempfile.mkdtemp(prefix="nbo-parts-") if owns else folder)
    out.mkdir(parents=True, exist_ok=True)
    bank = PartedBank(out, parts, n_customers, tuple(keep), str(data_dir), owns)
    dates = keep if last_snapshots or intervals else None  # intervals: the month-ends to make
    if in_child is None:
        in_child = n_customers > CHILD_ABOVE
    try:
        if in_child:
            _split_in_child(customers_path, holdings_path, dates, parts, bank, intervals)
        else:
            _split_files(customers_path, holdings_path, dates, parts, bank, intervals)
    except BaseException:
        bank.close()
        raise
    log.info("split %d customers of %s into %d parts (%d snapshots kept)", n_customers,
             data_dir, parts, len(keep))
    return bank


def _split_files(customers_path: Path, holdings_path: Path, dates: list[pd.Timestamp] | None,
                 parts: int, bank: PartedBank, intervals: bool = False) -> None:
    _split_file(customers_path, None, parts, bank, CUSTOMERS_FILE)
    _split_file(holdings_path, dates, parts, bank, HOLDINGS_FILE, intervals)
    pa.default_memory_pool().release_unused()


def _split_in_child(customers_path: Path, holdings_path: Path,
                    dates: list[pd.Timestamp] | None, parts: int, bank: PartedBank,
                    intervals: bool = False) -> None:
    """``_split_files`` in a new Python process (``python -m recommender.data.partition``): not a
    fork, which would copy the caller's loaded models, and not multiprocessing's spawn,
    which re-imports the caller's main module. Its error comes back as the caller's."""
    job = {"customers": str(customers_path), "holdings": str(holdings_path), "parts": parts,
           "dates": None if dates is None else [d.isoformat() for d in dates],
           "folder": str(bank.folder), "snapshots": [d.isoformat() for d in bank.snapshots],
           "n": bank.customers, "source": bank.source, "intervals": intervals}
    done = subprocess.run([sys.executable, "-m", "recommender.data.partition", json.dumps(job)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise DataValidationError(f"splitting the extracts failed: {lines[-1]}",
                                  source=str(bank.source))
    log.info("split in a child process; its peak memory: %s", done.stdout.strip() or "unknown")


def _split_job(job: dict) -> None:
    """The child's side of ``_split_in_child``."""
    snapshots = tuple(pd.Timestamp(d) for d in job["snapshots"])
    bank = PartedBank(Path(job["folder"]), job["parts"], job["n"], snapshots, job["source"],
                      owns_folder=False)
    dates = None if job["dates"] is None else [pd.Timestamp(d) for d in job["dates"]]
    _split_files(Path(job["customers"]), Path(job["holdings"]), dates, job["parts"], bank,
                 job["intervals"])


def _count_rows(path: Path) -> int:
    if path.suffix.lower() == ".parquet":
        return pq.ParquetFile(path).metadata.num_rows
    return sum(batch.num_rows for batch in _read_batches(path, columns=[C.CUSTOMER_ID]))


def _snapshot_dates(path: Path) -> list[pd.Timestamp]:
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
    for batch in _read_batches(path, columns=[C.SNAPSHOT_DATE]):
        seen.update(pc.unique(batch.column(0)).to_pylist())
    unique = pd.Series(sorted(seen, key=str), dtype=object)
    parsed = pd.to_datetime(unique, errors="coerce")
    if parsed.isna().any():
        bad = unique[parsed.isna()].head(3).tolist()
        raise DataValidationError(f"snapshot_date values {bad} are not dates", source=str(path),
                                  column=C.SNAPSHOT_DATE)
    return [pd.Timestamp(d) for d in np.sort(parsed.unique())]


def _interval_month_ends(path: Path, columns: list[str], max_months: int) -> list[pd.Timestamp]:
    """The month-ends of an interval holdings extract, as ``load_bank`` chooses them, from one
    pass over its date columns; bad dates name the file, the column and the rows."""
    firsts, lasts, offset = [], [], 0
    for batch in _read_batches(path, columns=[c for c in (OPENED_ON, CLOSED_ON) if c in columns]):
        frame = batch.to_pandas()
        try:
            opened, closed = interval_dates(frame, str(path))
        except DataValidationError as exc:  # rows of the whole file, not of the batch
            raise DataValidationError(exc.reason, source=exc.source, column=exc.column,
                                      rows=tuple(r + offset for r in exc.rows),
                                      problem=exc.problem) from None
        offset += len(frame)
        if len(frame):
            firsts.append(opened.min())
            lasts.append(opened.max() if closed.isna().all() else max(opened.max(),
                                                                       closed.max()))
    ends = month_ends(pd.Series(firsts, dtype="datetime64[ns]"),
                      pd.Series(lasts, dtype="datetime64[ns]"), max_months=max_months)
    return [pd.Timestamp(d) for d in ends]


def _as_snapshots(batch: pa.RecordBatch, months: list[pd.Timestamp]) -> pa.RecordBatch:
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


def _split_file(path: Path, dates: list[pd.Timestamp] | None, parts: int, bank: PartedBank,
                name: str, intervals: bool = False) -> None:
    writers: dict[int, pq.ParquetWriter] = {}
    owners = _Owners(parts)
    try:
        for batch in _read_batches(path, dates=None if intervals else dates):
            if intervals:
                batch = _as_snapshots(batch, dates)
            if C.CUSTOMER_ID not in batch.schema.names:
                raise DataValidationError(f"missing required columns {[C.CUSTOMER_ID]}",
                                          source=str(path))
            if batch.num_rows == 0:
                continue
            owner = owners(batch.column(C.CUSTOMER_ID))
            order = np.argsort(owner, kind="stable")
            bounds = np.searchsorted(owner[order], np.arange(parts + 1))
            id_column = batch.schema.get_field_index(C.CUSTOMER_ID)
            for part in range(parts):
                lo, hi = bounds[part], bounds[part + 1]
                if lo == hi:
                    continue
                piece = pa.Table.from_batches([batch.take(pa.array(order[lo:hi]))])
                piece = piece.set_column(id_column, C.CUSTOMER_ID,
                                         _compact(piece.column(id_column).combine_chunks()))
                if part not in writers:
                    writers[part] = pq.ParquetWriter(bank._path(name, part), piece.schema)
                writers[part].write_table(piece.cast(writers[part].schema))
    finally:
        for writer in writers.values():
            writer.close()


def iter_books(bank: PartedBank, catalog: Catalog, stages: LifeStageRules,
               weighting: str, n_lags: int) -> Iterator[CustomerBook]:
    """Each part's customer book, one at a time."""
    for part in range(bank.parts):
        if bank._path(CUSTOMERS_FILE, part).exists():
            yield CustomerBook(bank.read(part, catalog), catalog, stages, weighting, n_lags)


class PartedCustomers:
    """Every customer of a parted bank, in batches: what campaigns iterate over."""

    def __init__(self, bank: PartedBank, catalog: Catalog, stages: LifeStageRules,
                 weighting: str = "binary", n_lags: int = 4) -> None:
        self.bank, self.catalog, self.stages = bank, catalog, stages
        self.weighting, self.n_lags = weighting, n_lags
        self.snapshot = bank.snapshots[-1] if bank.snapshots else None

    def __len__(self) -> int:
        return self.bank.customers

    def __enter__(self) -> PartedCustomers:
        return self

    def __exit__(self, *exc) -> None:
        self.bank.close()

    def chunks(self, chunk_size: int) -> Iterator[CustomerBatch]:
        for book in iter_books(self.bank, self.catalog, self.stages, self.weighting,
                               self.n_lags):
            yield from book.chunks(chunk_size)

    def batches_of(self, customer_ids: np.ndarray, chunk_size: int) -> Iterator[CustomerBatch]:
        """Batches of exactly these customers, read part by part."""
        customer_ids = np.asarray(customer_ids, dtype=object)
        owner = part_of(customer_ids, self.bank.parts)
        for part in np.unique(owner):
            wanted = customer_ids[owner == part]
            book = CustomerBook(self.bank.read(int(part), self.catalog, wanted), self.catalog,
                                self.stages, self.weighting, self.n_lags)
            yield from book.batches_of(wanted, chunk_size)


def open_customers(data_dir: str | Path, model, part_size: int = DEFAULT_PART_SIZE,
                   folder: str | Path | None = None) -> PartedCustomers:
    """The bank's customers in parts, for a trained model: only the months it reads."""
    config = model.config
    binary = config.cf.weighting == "binary"
    bank = split_bank(data_dir, config.acquisition.n_lags if binary else None, part_size, folder)
    return PartedCustomers(bank, model.catalog, model.stages, config.cf.weighting,
                           config.acquisition.n_lags)


def _own_peak() -> str:
    """This process's own peak resident memory (VmHWM: since its exec, unlike ru_maxrss,
    which also counts the parent's pages a fork shared)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return f"{int(line.split()[1]) / 1024:.0f} MB"
    except (OSError, ValueError):
        pass
    return "unknown"


if __name__ == "__main__":  # the split child: python -m recommender.data.partition '<job json>'
    try:
        _split_job(json.loads(sys.argv[1]))
    except (DataValidationError, OSError, ValueError) as exc:
        sys.stderr.write(f"{exc}\n")
        sys.exit(2)
    sys.stdout.write(_own_peak() + "\n")
