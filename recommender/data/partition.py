"""The bank's extracts in parts, so a job over every customer holds one part at a time.

A campaign over ten million customers must not hold ten million customers in memory. One
streaming pass splits the customers and holdings extracts by a hash of the customer id into
parts of about ``part_size`` customers (a customer and all their holdings land in the same
part), keeping only the latest snapshots the model reads. Each part is then read, validated
and scored on its own, with the snapshot dates of the whole extract so every part sees the
same months. Peak memory depends on the part size, not on the number of customers.

Interval holdings (``opened_on``, ``closed_on``) are turned into the same month-end snapshot
rows as ``load_bank`` makes of them, batch by batch as they are split: the month-ends come
from one first pass over the two date columns, which also checks them. The optional
time-varying extract (``customer_features``) is split with the customers, and each part's
customers carry its values as of the latest snapshot, as ``load_bank`` gives them.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ..exceptions import DataValidationError
from . import columns as C
from .bank_config import load_bank_config
from .bank_parts import KindTally, PartLayout, part_bank
from .book import CustomerBatch, CustomerBook, months_read
from .catalog import Catalog
from .customers import CUSTOMER_COLUMNS
from .extract_batches import (
    as_snapshots,
    count_rows,
    interval_month_ends,
    read_batches,
    snapshot_dates,
)
from .extracts import (
    CUSTOMERS_FILE,
    FEATURES_FILE,
    HOLDINGS_FILE,
    BankData,
    extract_columns,
    find_extract,
    optional_extract,
)
from .intervals import (
    DEFAULT_MAX_MONTHS,
    INTERVALS,
    holdings_form,
)
from .life_stages import LifeStageRules

log = logging.getLogger(__name__)

DEFAULT_PART_SIZE = 100_000
CHILD_ABOVE = 200_000  # customers: larger extracts are split in a child process


def part_of(customer_ids, parts: int) -> np.ndarray:
    """The part each customer id belongs to: a stable hash, the same in every process."""
    values = pc.utf8_trim_whitespace(pa.array(np.asarray(customer_ids, dtype=object),
                                              pa.string()))
    hashed = pd.util.hash_array(values.to_numpy(zero_copy_only=False))
    return (hashed % np.uint64(parts)).astype(np.int64)


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
    feature_columns: tuple[str, ...] | None = None  # of customer_features; None: no such file
    kinds: dict[str, str] = field(default_factory=dict)  # further columns, as the whole types

    def __enter__(self) -> PartedBank:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.owns_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _path(self, name: str, part: int) -> Path:
        return self.folder / f"{name}-{part:05d}.parquet"

    def _table(self, name: str, part: int, where=None) -> pd.DataFrame | None:
        path = self._path(name, part)
        return ds.dataset(path).to_table(filter=where).to_pandas() if path.exists() else None

    def read(self, part: int, catalog: Catalog, customer_ids=None) -> BankData:
        """One part, validated like the whole extracts (``bank_parts``); only
        ``customer_ids`` if given."""
        where = None if customer_ids is None else pc.field(C.CUSTOMER_ID).isin(
            pa.array(np.asarray(customer_ids, dtype=object), pa.string()))
        return part_bank(self._table(CUSTOMERS_FILE, part, where),
                         self._table(HOLDINGS_FILE, part, where),
                         self._table(FEATURES_FILE, part, where), self.layout(), catalog)

    def layout(self) -> PartLayout:
        """What every part shares; the further columns typed as in the whole extracts."""
        config = load_bank_config(self.source)
        return PartLayout(self.snapshots, self.source,
                          replace(config, features={**self.kinds, **config.features}),
                          self.feature_columns)


def column_kinds(path: Path, skip, declared) -> dict[str, str]:
    """The type of each undeclared further column of a whole extract, as ``extra_columns``
    infers it from the file read at once (``ignore`` for one it leaves out), read a batch at
    a time (``KindTally``)."""
    names = [c for c in extract_columns(path)
             if c not in {*skip, *C.PROTECTED} and c not in declared]
    if not names:
        return {}
    tally = KindTally(names)
    for batch in read_batches(path, columns=names):
        tally.add(batch.to_pandas())
    return tally.kinds()


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
    dates = (interval_month_ends(holdings_path, columns, max_months) if intervals
             else snapshot_dates(holdings_path))
    keep = dates[-last_snapshots:] if last_snapshots else dates
    features_path = optional_extract(data_dir, FEATURES_FILE)
    keys = (C.CUSTOMER_ID, C.SNAPSHOT_DATE)
    feature_columns = None if features_path is None else tuple(
        c for c in extract_columns(features_path) if c not in keys)
    declared = load_bank_config(data_dir).features
    kinds = column_kinds(customers_path, CUSTOMER_COLUMNS, declared)
    if features_path is not None:
        kinds.update(column_kinds(features_path, keys, declared))
    n_customers = count_rows(customers_path)
    parts = max(1, math.ceil(n_customers / part_size))
    owns = folder is None
    out = Path(tempfile.mkdtemp(prefix="nbo-parts-") if owns else folder)
    out.mkdir(parents=True, exist_ok=True)
    bank = PartedBank(out, parts, n_customers, tuple(keep), str(data_dir), owns,
                      feature_columns, kinds)
    dates = keep if last_snapshots or intervals else None  # intervals: the month-ends to make
    if in_child is None:
        in_child = n_customers > CHILD_ABOVE
    try:
        if in_child:
            _split_in_child(customers_path, holdings_path, dates, parts, bank, intervals,
                            features_path)
        else:
            _split_files(customers_path, holdings_path, dates, parts, bank, intervals,
                         features_path)
    except BaseException:
        bank.close()
        raise
    log.info("split %d customers of %s into %d parts (%d snapshots kept)", n_customers,
             data_dir, parts, len(keep))
    return bank


def _split_files(customers_path: Path, holdings_path: Path, dates: list[pd.Timestamp] | None,
                 parts: int, bank: PartedBank, intervals: bool = False,
                 features_path: Path | None = None) -> None:
    _split_file(customers_path, None, parts, bank, CUSTOMERS_FILE)
    _split_file(holdings_path, dates, parts, bank, HOLDINGS_FILE, intervals)
    if features_path is not None:  # every date: a customer's latest value may be old
        _split_file(features_path, None, parts, bank, FEATURES_FILE)
    pa.default_memory_pool().release_unused()


def _split_in_child(customers_path: Path, holdings_path: Path,
                    dates: list[pd.Timestamp] | None, parts: int, bank: PartedBank,
                    intervals: bool = False, features_path: Path | None = None) -> None:
    """``_split_files`` in a new Python process (``python -m recommender.data.partition``): not a
    fork, which would copy the caller's loaded models, and not multiprocessing's spawn,
    which re-imports the caller's main module. Its error comes back as the caller's."""
    job = {"customers": str(customers_path), "holdings": str(holdings_path), "parts": parts,
           "dates": None if dates is None else [d.isoformat() for d in dates],
           "folder": str(bank.folder), "snapshots": [d.isoformat() for d in bank.snapshots],
           "n": bank.customers, "source": bank.source, "intervals": intervals,
           "features": None if features_path is None else str(features_path)}
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
                      owns_folder=False)  # it only writes the parts: no column types needed
    dates = None if job["dates"] is None else [pd.Timestamp(d) for d in job["dates"]]
    _split_files(Path(job["customers"]), Path(job["holdings"]), dates, job["parts"], bank,
                 job["intervals"], None if job["features"] is None else Path(job["features"]))


def _split_file(path: Path, dates: list[pd.Timestamp] | None, parts: int, bank: PartedBank,
                name: str, intervals: bool = False) -> None:
    writers: dict[int, pq.ParquetWriter] = {}
    owners = _Owners(parts)
    try:
        for batch in read_batches(path, dates=None if intervals else dates):
            if intervals:
                batch = as_snapshots(batch, dates)
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
    bank = split_bank(data_dir, months_read(model), part_size, folder)
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
