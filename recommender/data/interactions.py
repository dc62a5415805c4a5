"""Customer x product matrices from holdings snapshots.

One orientation everywhere: rows are customers (positions in the customers id map), columns
are products (positions in the catalog), CSR float32 with an explicit shape.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import columns as C

Weighting = Literal["binary", "months_held"]


def snapshot_matrix(holdings: pd.DataFrame, shape: tuple[int, int],
                    snapshot: pd.Timestamp) -> sp.csr_matrix:
    """1.0 where the customer holds the product at ``snapshot`` (codes index the id maps)."""
    at = holdings[holdings[C.SNAPSHOT_DATE].to_numpy() == np.datetime64(snapshot)]
    return _binary(at[C.CUSTOMER_ID].cat.codes.to_numpy(), at[C.PRODUCT_ID].cat.codes.to_numpy(),
                   shape)


def _binary(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def confidence_matrix(holdings: pd.DataFrame, shape: tuple[int, int], snapshot: pd.Timestamp,
                      weighting: Weighting = "binary") -> sp.csr_matrix:
    """Holdings at ``snapshot`` weighted for implicit-feedback CF.

    ``binary``: every holding counts 1. ``months_held``: 1 + log(1 + snapshots held up to
    ``snapshot``), so a product kept for a year says more than one opened last month.
    """
    held = snapshot_matrix(holdings, shape, snapshot)
    if weighting == "binary":
        return held
    if weighting != "months_held":
        raise ValueError(f"unknown weighting {weighting!r}; use 'binary' or 'months_held'")
    upto = holdings[holdings[C.SNAPSHOT_DATE].to_numpy() <= np.datetime64(snapshot)]
    months = sp.csr_matrix(
        (np.ones(len(upto), dtype=np.float32),
         (upto[C.CUSTOMER_ID].cat.codes.to_numpy(), upto[C.PRODUCT_ID].cat.codes.to_numpy())),
        shape=shape,
    )
    weighted = held.multiply(months).tocsr()
    weighted.data = 1.0 + np.log1p(weighted.data)
    return weighted.astype(np.float32)


def months_between(earlier: pd.Timestamp, later: pd.Timestamp) -> int:
    return (later.year - earlier.year) * 12 + later.month - earlier.month


def present_at(held: sp.csr_matrix, tenure_months: np.ndarray, months_before: int) -> np.ndarray:
    """Customers who were already customers at a snapshot ``months_before`` the as-of date.

    Holding something proves it; otherwise the tenure (counted to the as-of date) decides,
    so a customer who held nothing that month still counts.
    """
    return (np.diff(held.indptr) > 0) | (np.asarray(tenure_months) >= months_before)


def acquisitions(before: sp.csr_matrix, after: sp.csr_matrix,
                 present: np.ndarray | None = None) -> sp.csr_matrix:
    """Products held in ``after`` but not in ``before``, for customers present in ``before``.

    A customer who had not joined yet at ``before`` is opening accounts, not taking up a
    cross-sell, and is left out. ``present`` says who had joined; by default, whoever held
    something at ``before``.
    """
    if present is None:
        present = np.diff(before.indptr) > 0
    added = (after - after.multiply(before)).tocsr()
    added.eliminate_zeros()
    added = sp.diags(present.astype(np.float32)) @ added
    added.eliminate_zeros()
    added.data[:] = 1.0
    return added.astype(np.float32).tocsr()


def row_sets_equal(a: sp.csr_matrix, row_a: int, b: sp.csr_matrix, row_b: int) -> bool:
    """Whether two CSR rows hold the same products (values ignored)."""
    cols_a = a.indices[a.indptr[row_a]:a.indptr[row_a + 1]]
    cols_b = b.indices[b.indptr[row_b]:b.indptr[row_b + 1]]
    return np.array_equal(np.sort(cols_a), np.sort(cols_b))
