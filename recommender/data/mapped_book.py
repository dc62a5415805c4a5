"""The customer book as plain arrays on disk, memory-mapped by every server worker.

Building the book from the extracts takes seconds and gigabytes per process at a million
customers; gunicorn runs several workers and reloads them. The book is therefore built once
per extract and model shape into a cache folder of ``.npy`` files (ids sorted for lookup,
profile columns as codes, holdings as CSR arrays), and workers open it with
``mmap_mode="r"``: the operating system keeps one copy in its page cache for all of them, and
a worker touches only the pages of the customers it serves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..exceptions import ArtifactError, UnknownCustomerError
from . import columns as C
from .bank_config import BANK_FILE
from .book import CustomerBatch, CustomerBook, load_book
from .cache_folders import prune_siblings, written_whole
from .catalog import Catalog
from .extracts import CUSTOMERS_FILE, FEATURES_FILE, HOLDINGS_FILE, find_extract
from .life_stages import LifeStageRules
from .profiles import ProfileArrays, plain_value

log = logging.getLogger(__name__)

FORMAT = 3  # 2: the decoded ProfileArrays are saved too; 3: customer ids are not categories
_META = "book.json"
_DECODED = ("age", "income", "residency", "risk_level", "assessed_on", "consent", "vulnerable",
            "open_complaint")  # the ProfileArrays fields that are arrays


def book_key(data_dir: str | Path, model) -> str:
    """Names the cached book: the extracts (path, size, modification time), the bank's
    ``bank.toml`` and what the model reads from them. A new extract, a new ``bank.toml`` or a
    model with other lags gets a new folder."""
    parts = {"format": FORMAT, "lags": model.config.acquisition.n_lags,
             "weighting": model.config.cf.weighting,
             "catalog": hashlib.sha256(model.catalog_text.encode()).hexdigest(),
             "stages": hashlib.sha256(model.stages_text.encode()).hexdigest()}
    paths = {name: find_extract(data_dir, name) for name in (CUSTOMERS_FILE, HOLDINGS_FILE)}
    optional = [Path(data_dir) / BANK_FILE] + [Path(data_dir) / f"{FEATURES_FILE}{suffix}"
                                               for suffix in (".parquet", ".csv")]
    paths.update({path.name: path for path in optional if path.is_file()})
    for name, path in paths.items():
        stat = path.stat()
        parts[name] = [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def save_book(book: CustomerBook, folder: str | Path) -> Path:
    """Write ``book`` as arrays under ``folder``, whole or not at all."""
    with written_whole(folder, _META) as partial:
        ids = book.ids.external_ids.astype(str)
        order = np.argsort(ids, kind="stable")
        arrays = {"ids": ids.astype(np.bytes_), "sorted_ids": ids[order].astype(np.bytes_),
                  "sorted_positions": order.astype(np.int64), "stages": book.stage_codes,
                  "present": book.present}
        columns = {}
        for name in book.profiles.columns:
            values = book.profiles[name]
            if name == C.CUSTOMER_ID:  # the ids array already: no million categories
                columns[name] = {"kind": "ids"}
            elif getattr(values.dtype, "kind", "O") not in "biufM":  # text: codes + categories
                codes, categories = _text_codes(values)
                arrays[f"profile.{name}"] = codes
                columns[name] = {"kind": "category", "categories": categories}
            else:
                arrays[f"profile.{name}"] = values.to_numpy()
                columns[name] = {"kind": "values", "dtype": str(values.dtype)}
        decoded = book.profile_arrays  # what the rules read, decoded once here, not per answer
        arrays.update({f"decoded.{name}": getattr(decoded, name) for name in _DECODED})
        matrices = {f"lag{k}": lag for k, lag in enumerate(book.lags)}
        matrices["confidence"] = book.confidence
        for name, matrix in matrices.items():
            csr = sp.csr_matrix(matrix)
            csr.sort_indices()
            arrays.update({f"{name}.indptr": csr.indptr.astype(np.int64),
                           f"{name}.indices": csr.indices.astype(np.int32),
                           f"{name}.data": csr.data.astype(np.float32)})
        for name, values in arrays.items():
            np.save(partial / f"{name}.npy", np.ascontiguousarray(values), allow_pickle=False)
        meta = {"format": FORMAT, "customers": len(book), "lags": len(book.lags),
                "weighting": book.weighting, "columns": columns,
                "residencies": list(decoded.residencies),
                "snapshot": None if book.snapshot is None else book.snapshot.isoformat(),
                "products": book.catalog.ids.external_ids.tolist()}
        (partial / _META).write_text(json.dumps(meta), encoding="utf-8")
    return Path(folder)


def _text_codes(values: pd.Series) -> tuple[np.ndarray, list[str | None]]:
    """Codes into the sorted distinct texts of a column; missing (a further column of the
    bank's may have empty values) is a category of its own, saved as null, read as None."""
    codes, uniques = pd.factorize(values.astype("string"), sort=True, use_na_sentinel=False)
    return codes.astype(np.int32), [None if pd.isna(v) else str(v) for v in uniques]


class MappedBook:
    """A saved customer book, memory-mapped; answers like ``CustomerBook`` for serving."""

    def __init__(self, folder: str | Path, catalog: Catalog, stages: LifeStageRules) -> None:
        self.folder, self.catalog, self.stages = Path(folder), catalog, stages
        try:
            meta = json.loads((self.folder / _META).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{self.folder}: not a saved customer book ({exc})") from exc
        if meta.get("format") != FORMAT or meta.get("products") != \
                catalog.ids.external_ids.tolist():
            raise ArtifactError(f"{self.folder}: saved for another format or catalog")
        self.weighting, self._columns = meta["weighting"], meta["columns"]
        self.snapshot = pd.Timestamp(meta["snapshot"]) if meta["snapshot"] else None
        self._n = int(meta["customers"])

        def load(name: str) -> np.ndarray:
            # A plain ndarray over the mapping: slices of an np.memmap are memmaps again,
            # whose bookkeeping costs more than reading one customer's row.
            return np.asarray(np.load(self.folder / f"{name}.npy", mmap_mode="r",
                                      allow_pickle=False))

        self._ids, self._sorted = load("ids"), load("sorted_ids")
        self._sorted_positions, self.stage_codes, self.present = (
            load("sorted_positions"), load("stages"), load("present"))
        self._profile = {name: load(f"profile.{name}") for name, spec in self._columns.items()
                         if spec["kind"] != "ids"}
        self.profile_arrays = ProfileArrays(
            residencies=tuple(meta["residencies"]),
            **{name: load(f"decoded.{name}") for name in _DECODED})
        self._categories = {name: np.asarray(spec["categories"], dtype=object)
                            for name, spec in self._columns.items()
                            if spec["kind"] == "category"}
        self._readers = {name: self._reader(name, spec) for name, spec in self._columns.items()
                         if name not in C.PROTECTED}
        shape = (self._n, len(catalog))
        self.lags = tuple(self._matrix(load, f"lag{k}", shape) for k in range(meta["lags"]))
        if self.lags and self.weighting == "binary":  # then CF confidence is the holdings
            self.confidence = self.lags[0]  # (confidence_matrix): one row to read, not two
        else:
            self.confidence = self._matrix(load, "confidence", shape)
        self.held = self.lags[0] if self.lags else self.confidence
        # What scipy's checked constructor sets on an empty row of this book (``_one_row``).
        self._row_attributes = vars(sp.csr_matrix((1, len(catalog)), dtype=np.float32))

    @staticmethod
    def _matrix(load, name: str, shape: tuple[int, int]) -> sp.csr_matrix:
        return sp.csr_matrix((load(f"{name}.data"), load(f"{name}.indices"),
                              load(f"{name}.indptr")), shape=shape, copy=False)

    def __len__(self) -> int:
        return self._n

    def __contains__(self, customer_id: str) -> bool:
        return self._find(customer_id) >= 0

    def _find(self, customer_id: str) -> int:
        key = np.bytes_(str(customer_id).encode())
        i = int(np.searchsorted(self._sorted, key))
        if i < self._n and self._sorted[i] == key:
            return int(self._sorted_positions[i])
        return -1

    def position(self, customer_id: str) -> int:
        position = self._find(customer_id)
        if position < 0:
            raise UnknownCustomerError(f"customer {customer_id!r} is not in the customer book")
        return position

    def profiles_at(self, positions: np.ndarray) -> pd.DataFrame:
        """Profile rows, with the dtypes the validated extract has."""
        return pd.DataFrame({name: self._column(name, spec, positions)
                             for name, spec in self._columns.items()})

    def _column(self, name: str, spec: dict[str, Any], positions: np.ndarray) -> np.ndarray:
        """One profile column at ``positions``: text as str objects, else its own dtype."""
        if spec["kind"] == "ids":
            return np.array(self._id_texts(positions), dtype=object)
        values = self._profile[name][positions]
        return self._categories[name][values] if spec["kind"] == "category" else values

    def _id_texts(self, positions: np.ndarray | slice) -> list[str]:
        """The customer ids at ``positions`` (saved as ASCII bytes), as ``str``."""
        return [value.decode("ascii") for value in self._ids[positions].tolist()]

    def profile_records(self, positions: np.ndarray) -> list[dict[str, Any]]:
        """Profiles as plain values (``CustomerBatch.profile_records``), without pandas."""
        at = _index(np.asarray(positions))
        columns = [read(at) for read in self._readers.values()]
        return [dict(zip(self._readers, row, strict=True)) for row in zip(*columns, strict=True)]

    def _reader(self, name: str, spec: dict[str, Any],
                ) -> Callable[[np.ndarray | slice], list[Any]]:
        """Reads a profile column at some positions as the values ``plain_value`` gives: set
        up once per book, as a decision reads one customer and lookups or pandas would cost
        more than the read."""
        if spec["kind"] == "ids":
            return self._id_texts
        values = self._profile[name]
        if spec["kind"] == "category":
            categories = self._categories[name].tolist()
            return lambda positions: [categories[code] for code in values[positions].tolist()]
        if values.dtype.kind == "M":  # a few thousand distinct days: each one's text made once
            unit = np.datetime_data(values.dtype)[0]
            text = lru_cache(maxsize=4096)(
                lambda value: plain_value(pd.Timestamp(np.datetime64(value, unit))))
            return lambda positions: [text(value) for value in values[positions].tolist()]
        if values.dtype.kind == "f":  # NaN is missing, as for plain_value
            return lambda positions: [None if math.isnan(value) else value
                                      for value in values[positions].tolist()]
        return lambda positions: values[positions].tolist()

    def batch(self, positions: np.ndarray) -> CustomerBatch:
        """These customers; their profiles table is built only if something reads it."""
        positions = np.asarray(positions, dtype=np.int64)
        at = _index(positions)
        rows: Callable[[sp.csr_matrix], sp.csr_matrix] = (
            partial(self._one_row, position=at.start) if isinstance(at, slice)
            else lambda matrix: matrix[positions])
        lags = tuple(map(rows, self.lags))
        held = lags[0] if lags else rows(self.held)
        confidence = held if self.confidence is self.held else rows(self.confidence)
        return CustomerBatch(
            customer_ids=np.array(self._id_texts(at), dtype=object),
            profile_frame=partial(self.profiles_at, positions), held=held,
            confidence=confidence, stages=self.stage_codes[at], lags=lags,
            present=self.present[at], records=lambda rows: self.profile_records(positions[rows]),
            arrays=self.profile_arrays.take(at))

    def _one_row(self, matrix: sp.csr_matrix, position: int) -> sp.csr_matrix:
        """One customer's row, straight from the mapped arrays.

        scipy's slicing and even its constructor cost more than the rest of the answer
        (index dtype and format checks, five rows per answer). A row cut from the book's
        checked matrix needs none of them: it gets the attributes of a checked empty row,
        then copies of this row's arrays (int32 indices, as saved and as scipy would choose).
        """
        lo, hi = matrix.indptr[position:position + 2].tolist()
        row = sp.csr_matrix.__new__(sp.csr_matrix)
        row.__dict__.update(self._row_attributes)
        row.data, row.indices = matrix.data[lo:hi].copy(), matrix.indices[lo:hi].copy()
        row.indptr = np.array((0, hi - lo), dtype=row.indices.dtype)
        row.has_sorted_indices = True  # as saved (save_book): no check per answer
        return row

    def held_product_ids(self, position: int) -> list[str]:
        row = self.held[position]
        return self.catalog.ids.to_external(np.sort(row.indices)).tolist()


def _index(positions: np.ndarray) -> np.ndarray | slice:
    """``positions`` to index the book's arrays with: one position (an answer) as a slice,
    which numpy reads without gathering. Its rows are views then, read-only: nothing writes
    the arrays of a batch."""
    if len(positions) == 1:
        return slice(int(positions[0]), int(positions[0]) + 1)
    return positions


def open_book(data_dir: str | Path, model, cache_dir: str | Path) -> MappedBook:
    """The model's customer book from the cache, built from the extracts if missing."""
    folder = Path(cache_dir) / book_key(data_dir, model)
    if not (folder / _META).exists():
        log.info("building the customer book cache %s from %s", folder, data_dir)
        folder.parent.mkdir(parents=True, exist_ok=True)
        save_book(load_book(data_dir, model), folder)
        prune_siblings(folder)
    return MappedBook(folder, model.catalog, model.stages)


__all__ = ["MappedBook", "book_key", "open_book", "save_book"]
