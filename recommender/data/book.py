"""The customer book: the bank's current customers, their life stage and recent holdings.

Built once from the validated extracts, it answers "who is this customer and what do they
hold now" in O(1) for the API, and hands out batches of customers for vectorised scoring.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import InitVar, dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..exceptions import DataValidationError, UnknownCustomerError
from . import columns as C
from .catalog import Catalog
from .customers import validate_customers
from .extracts import BankData, load_bank
from .ids import IdMap
from .interactions import confidence_matrix, months_between, present_at, snapshot_matrix
from .life_stages import LifeStageRules
from .profiles import ProfileArrays, plain_value

DEFAULT_LAGS = 4


@dataclass(frozen=True)
class CustomerBatch:
    """Customers to score together: profiles, holdings and stages, row-aligned.

    ``lags`` are the latest snapshots, most recent first (``lags[0]`` is ``held``);
    ``present[:, j]`` says who was a customer at ``lags[j]``. A batch from a book also knows
    its customers' ``positions`` in the book's ``id_map`` and gets their ``profile_arrays``
    decoded by the book (``arrays``); any other batch decodes its profiles when first asked.
    ``arrays`` is not kept by ``dataclasses.replace``, so a batch whose profiles are replaced
    decodes the new ones.

    ``profile_frame`` is the profiles table, or a function that builds it: a one-customer
    answer from precomputed scores never needs the table, and building one costs more than
    the rest of the answer. ``records``, when given, reads rows' profiles as plain values
    without the table (``profile_records``).
    """

    customer_ids: np.ndarray
    profile_frame: pd.DataFrame | Callable[[], pd.DataFrame]
    held: sp.csr_matrix  # binary, customers x products
    confidence: sp.csr_matrix  # CF input weighting of ``held``
    stages: np.ndarray
    lags: tuple[sp.csr_matrix, ...] = ()
    present: np.ndarray | None = None
    positions: np.ndarray | None = None  # rows of these customers in ``id_map``
    id_map: IdMap | None = None
    records: Callable[[list[int]], list[dict[str, Any]]] | None = None
    arrays: InitVar[ProfileArrays | None] = None

    def __post_init__(self, arrays: ProfileArrays | None) -> None:
        if arrays is not None:
            object.__setattr__(self, "profile_arrays", arrays)

    @cached_property
    def profiles(self) -> pd.DataFrame:
        """The profiles table, built when first read if the batch was given a function."""
        frame = self.profile_frame
        return frame() if callable(frame) else frame

    def profile_records(self, rows: list[int]) -> list[dict[str, Any]]:
        """These rows' profiles as plain values (str, int, float, bool, ISO dates; None when
        missing), as a decision records them: never the protected attributes."""
        if self.records is not None:
            return self.records(rows)
        frame = self.profiles.iloc[rows].drop(columns=list(C.PROTECTED), errors="ignore")
        return [{name: plain_value(value) for name, value in zip(frame.columns, row, strict=True)}
                for row in frame.to_numpy(dtype=object)]

    @cached_property
    def profile_arrays(self) -> ProfileArrays:
        """The profile columns the policy and rankers read, as arrays."""
        return ProfileArrays.of(self.profiles)

    def __len__(self) -> int:
        return len(self.customer_ids)

    def rows_in(self, ids: IdMap) -> np.ndarray:
        """Positions of these customers in ``ids`` (-1 if unknown): no lookup by id when
        ``ids`` is the map of the book the batch comes from."""
        if self.positions is not None and ids is self.id_map:
            return self.positions
        return ids.to_internal_lenient(self.customer_ids)

    def take(self, rows: np.ndarray) -> CustomerBatch:
        """These rows only, in this order."""
        rows = np.asarray(rows, dtype=np.int64)
        return CustomerBatch(
            customer_ids=self.customer_ids[rows],
            profile_frame=self.profiles.iloc[rows].reset_index(drop=True),
            held=self.held[rows], confidence=self.confidence[rows], stages=self.stages[rows],
            lags=tuple(lag[rows] for lag in self.lags),
            present=None if self.present is None else self.present[rows],
            positions=None if self.positions is None else self.positions[rows],
            id_map=self.id_map, arrays=self.profile_arrays.take(rows))  # no records: rows moved


class CustomerBook:
    """Customers of the bank as of the latest holdings snapshot, with a few months of history."""

    def __init__(self, bank: BankData, catalog: Catalog, stages: LifeStageRules,
                 weighting: str = "binary", n_lags: int = DEFAULT_LAGS) -> None:
        self.catalog, self.stages, self.weighting = catalog, stages, weighting
        self.profiles = bank.customers.reset_index(drop=True)
        self.ids = IdMap(self.profiles[C.CUSTOMER_ID].to_numpy(), "customer")
        shape = (len(self.ids), len(catalog))
        snapshots = bank.snapshots
        self.snapshot = snapshots[-1] if snapshots else None
        recent = snapshots[::-1][:n_lags]
        self.lags = tuple(snapshot_matrix(bank.holdings, shape, s) for s in recent)
        tenure = self.profiles[C.TENURE_MONTHS].to_numpy()
        reference = bank.reference_date
        self.present = np.column_stack(
            [present_at(lag, tenure, months_between(s, reference))
             for lag, s in zip(self.lags, recent, strict=True)]
        ) if recent else np.zeros((shape[0], 0), dtype=bool)
        if self.snapshot is None:
            self.held = self.confidence = sp.csr_matrix(shape, dtype=np.float32)
        else:
            self.held = self.lags[0]
            self.confidence = confidence_matrix(bank.holdings, shape, self.snapshot, weighting)
        self.stage_codes = stages.assign(self.profiles)
        self.profile_arrays = ProfileArrays.of(self.profiles)

    def __len__(self) -> int:
        return len(self.ids)

    def position(self, customer_id: str) -> int:
        if customer_id not in self.ids:
            raise UnknownCustomerError(f"customer {customer_id!r} is not in the customer book")
        return self.ids.position(customer_id)

    def batch(self, positions: np.ndarray) -> CustomerBatch:
        return self._batch(np.asarray(positions, dtype=np.int64))

    def _batch(self, rows: np.ndarray | slice) -> CustomerBatch:
        """The customers at ``rows``; a slice (a chunk) copies no profile rows."""
        positions = np.arange(*rows.indices(len(self))) if isinstance(rows, slice) else rows
        return CustomerBatch(
            customer_ids=self.ids.external_ids[rows],
            profile_frame=self.profiles.iloc[rows].reset_index(drop=True),
            held=csr_rows(self.held, rows), confidence=csr_rows(self.confidence, rows),
            stages=self.stage_codes[rows],
            lags=tuple(csr_rows(lag, rows) for lag in self.lags), present=self.present[rows],
            positions=positions, id_map=self.ids, arrays=self.profile_arrays.take(rows),
        )

    def chunks(self, chunk_size: int) -> Iterator[CustomerBatch]:
        """Every customer, in batches of ``chunk_size``, in book order."""
        for start in range(0, len(self), chunk_size):
            yield self._batch(slice(start, min(start + chunk_size, len(self))))

    def batches_of(self, customer_ids: np.ndarray, chunk_size: int) -> Iterator[CustomerBatch]:
        """Batches of exactly these customers, in the order given."""
        positions = self.ids.to_internal(np.asarray(customer_ids))
        for start in range(0, len(positions), chunk_size):
            yield self.batch(positions[start:start + chunk_size])

    def profiles_at(self, positions: np.ndarray) -> pd.DataFrame:
        return self.profiles.iloc[positions].reset_index(drop=True)

    def held_product_ids(self, position: int) -> list[str]:
        row = self.held[position]
        return self.catalog.ids.to_external(np.sort(row.indices)).tolist()


def csr_rows(matrix: sp.csr_matrix, rows: np.ndarray | slice) -> sp.csr_matrix:
    """``matrix[rows]``; a range of rows (a slice, or positions that follow each other, as a
    book's chunks do) is copied in one piece: scipy's slicing checks each entry."""
    if not isinstance(rows, slice):
        rows = np.asarray(rows)
        if not (len(rows) and rows[-1] - rows[0] == len(rows) - 1
                and (np.diff(rows) == 1).all()):
            return matrix[rows]
        rows = slice(int(rows[0]), int(rows[-1]) + 1)
    start, stop, _ = rows.indices(matrix.shape[0])
    lo, hi = matrix.indptr[start], matrix.indptr[stop]
    return sp.csr_matrix((matrix.data[lo:hi].copy(), matrix.indices[lo:hi].copy(),
                          matrix.indptr[start:stop + 1] - lo),
                         shape=(stop - start, matrix.shape[1]))


def profile_batch(profile: dict, held_product_ids: list[str], catalog: Catalog,
                  stages: LifeStageRules) -> CustomerBatch:
    """A one-customer batch for a customer described in a request, not in the book.

    The profile is validated by the same rules as the customers extract; an error names the
    request's field (``customer.age``, ``holdings``). Only current holdings are known:
    earlier months count as missing history.
    """
    try:
        profiles = validate_customers(pd.DataFrame([profile]), source="request", quiet=True)
    except DataValidationError as exc:
        field = f"customer.{exc.column}" if exc.column else "customer"
        raise DataValidationError(f"{field} {exc.problem}" if exc.problem else exc.reason,
                                  field=field) from None
    unknown = [p for p in held_product_ids if p not in catalog.ids]
    if unknown:
        raise DataValidationError(f"unknown product ids {unknown}", field="holdings")
    cols = catalog.ids.to_internal(sorted(set(held_product_ids)))
    held = sp.csr_matrix((np.ones(len(cols), dtype=np.float32), (np.zeros(len(cols)), cols)),
                         shape=(1, len(catalog)))
    return CustomerBatch(
        customer_ids=profiles[C.CUSTOMER_ID].to_numpy(), profile_frame=profiles, held=held,
        confidence=held, stages=stages.assign(profiles), lags=(held,),
        present=np.ones((1, 1), dtype=bool),
    )


def months_read(model) -> int | None:
    """The latest snapshots a trained model's book needs: its lags, or every month (None)
    when CF confidence counts the months a product was held."""
    config = model.config
    return config.acquisition.n_lags if config.cf.weighting == "binary" else None


def model_book(bank: BankData, model) -> CustomerBook:
    """The customer book of these extracts as a trained model reads it."""
    config = model.config
    return CustomerBook(bank, model.catalog, model.stages, config.cf.weighting,
                        config.acquisition.n_lags)


def load_book(data_dir, model) -> CustomerBook:
    """The customer book a trained model scores, from the bank's current extracts.

    Only the months the model reads are loaded (its lags), unless CF confidence counts
    months held, which needs the whole history.
    """
    book = model_book(load_bank(data_dir, model.catalog, last_snapshots=months_read(model)),
                      model)
    if book.ids == model.cf.customers:  # the customers the model knows: one map, no lookups
        book.ids = model.cf.customers
    return book
