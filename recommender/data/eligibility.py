"""Eligibility: which products a customer may be offered at all, as boolean masks.

One vectorised step, used by the single-customer path and the batch path alike, so an
offer the API would refuse can never appear in a campaign list (and vice versa).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import columns as C
from .catalog import NO_AGE_LIMIT, Catalog

# Every mask below has one column per catalog product, or, given ``products`` (catalog
# positions), one per product listed: a campaign asks about its few products only. Masks are
# computed product by product, as the transpose of a products x customers array: each
# product is then a contiguous pass over the customers, several times faster than rows of a
# few products each when customers are many.
Products = np.ndarray | None
T = TypeVar("T")


def product_columns(values: np.ndarray, products: Products) -> np.ndarray:
    """Per-product values (products on the last axis) restricted to ``products``; masks
    computed product by product stay so (each product's customers contiguous)."""
    return values if products is None else values.T.take(products, axis=0).T


def age_mask(age: np.ndarray, catalog: Catalog, products: Products = None) -> np.ndarray:
    """Boolean (n_customers x n_products): the customer's age is within the product's limits."""
    age = np.asarray(age, dtype=np.float64)[None, :]
    low = product_columns(catalog.column("min_age"), products)[:, None]
    high = product_columns(catalog.column("max_age"), products)[:, None]
    # An unknown age (a bank without the column) meets no limit: only unlimited products.
    no_limit = (low <= NO_AGE_LIMIT[0]) & (high >= NO_AGE_LIMIT[1])
    return ((age >= low) & (age <= high) | (np.isnan(age) & no_limit)).T


def income_mask(income: np.ndarray, catalog: Catalog, products: Products = None) -> np.ndarray:
    """Income at least the product's minimum; an unknown income meets no minimum above zero."""
    income = np.asarray(income, dtype=np.float64)[None, :]
    minimum = product_columns(catalog.column("min_income"), products)[:, None]
    return ((income >= minimum) | (minimum <= 0)).T


def residency_mask(codes: np.ndarray, residencies: Sequence[str], catalog: Catalog,
                   products: Products = None) -> np.ndarray:
    """The customer's residency (``residencies[code]``) is one the product accepts: one lookup
    per distinct value, not per customer."""
    accepts = catalog.residency_matrix(tuple(residencies))
    return product_columns(accepts, products).T.take(codes, axis=1).T


def eligibility_mask(customers: pd.DataFrame, catalog: Catalog) -> np.ndarray:
    """Boolean (n_customers x n_products): age, income and residency rules of the catalog."""
    residencies, codes = np.unique(customers[C.RESIDENCY].to_numpy().astype(str),
                                   return_inverse=True)
    return (age_mask(customers[C.AGE].to_numpy(dtype=np.float64), catalog)
            & income_mask(customers[C.INCOME].to_numpy(dtype=np.float64), catalog)
            & residency_mask(codes.reshape(len(customers)), residencies.tolist(), catalog))


_WORD = 64  # products per word of a holding set (bit p & 63 of word p >> 6)
_BITS = np.uint64(1) << np.arange(_WORD, dtype=np.uint64)  # bit b of a word: _BITS[b]
_FEW = 64  # customers: up to this many, holding sets are read from a dense matrix


def holding_sets(held: sp.spmatrix | np.ndarray) -> np.ndarray:
    """Each customer's held products (entries > 0) as bits: (n_words x n_customers) uint64,
    product p being bit p % 64 of word p // 64. The holdings rules are then a few integer
    operations per product, not dense customers x products matrices."""
    if held.shape[0] <= _FEW:  # a decision for one customer: fewer steps through dense bits
        dense = held.toarray() if sp.issparse(held) else np.asarray(held)
        return _words(dense > 0)
    if not (sp.issparse(held) and held.format == "csr"):
        held = sp.csr_matrix(held)
    if not (held.data > 0).all():
        held = _summed(held)
    sets = _bit_sums(held)
    # Distinct bits add up without carries: the popcount is then the number of entries.
    if (np.bitwise_count(sets).sum(axis=0, dtype=np.int64) != np.diff(held.indptr)).any():
        sets = _bit_sums(_summed(held))  # a product listed twice in a row
    return sets


def _summed(held: sp.csr_matrix) -> sp.csr_matrix:
    """One entry per held product: duplicates summed, what is not > 0 dropped."""
    held = held.copy()
    held.sum_duplicates()
    held.data = (held.data > 0).astype(np.float32)
    held.eliminate_zeros()
    return held


def _bit_sums(held: sp.csr_matrix) -> np.ndarray:
    """Per row and word, the sum of 2 ** (product % 64) over the row's entries: a running
    sum differenced at the row starts, several times faster than a reduction per row
    (uint64 arithmetic wraps, and stays exact for the difference)."""
    indices = held.indices.astype(np.uint64)
    sets = np.empty((-(-held.shape[1] // _WORD), held.shape[0]), dtype=np.uint64)
    for word in range(len(sets)):
        bits = np.uint64(1) << (indices & np.uint64(_WORD - 1))
        if len(sets) > 1:
            bits[indices >> np.uint64(6) != word] = 0  # 2 ** 6 == _WORD
        running = np.concatenate([np.zeros(1, np.uint64), np.cumsum(bits, dtype=np.uint64)])
        sets[word] = running[held.indptr[1:]] - running[held.indptr[:-1]]
    return sets


def holds(sets: np.ndarray, products: np.ndarray) -> np.ndarray:
    """Boolean (n_customers x len(products)): the customer holds the product."""
    words, bits = _derived(np.asarray(products, dtype=np.intp), _word_and_bit)
    return ((sets[words] & bits) != 0).T


def _word_and_bit(products: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each product's word in a holding set, and its bit in that word (a column)."""
    return products // _WORD, _BITS[products % _WORD][:, None]


# holds_all and holds_any compare every word at once, (n_words x n_columns x n_customers):
# a catalog has one word or a few, and one call per word would cost more than its work
# when a decision is for one customer.

def holds_all(sets: np.ndarray, words: np.ndarray) -> np.ndarray:
    """Boolean (n_customers x n_columns): the customer holds every product marked in the
    column of ``words`` (``product_words`` of a products x columns matrix)."""
    marked = words[:, :, None]
    return np.logical_and.reduce((sets[:, None, :] & marked) == marked, axis=0).T


def holds_any(sets: np.ndarray, words: np.ndarray) -> np.ndarray:
    """Boolean (n_customers x n_columns): the customer holds a product marked in the column."""
    return np.logical_or.reduce((sets[:, None, :] & words[:, :, None]) != 0, axis=0).T


_DERIVED: dict[tuple[int, Callable], tuple[np.ndarray, Any]] = {}
_MAX_DERIVED = 64  # a few arrays per catalog; reloads bring new catalogs, the old go


def _derived(array: np.ndarray, derive: Callable[[np.ndarray], T]) -> T:
    """``derive(array)``, computed once for a read-only array: a catalog builds its arrays
    once, read-only, and a decision for one customer needs what they give every time."""
    cached = _DERIVED.get((id(array), derive))
    if cached is not None and cached[0] is array:
        return cached[1]
    value = derive(array)
    if not array.flags.writeable:
        if len(_DERIVED) >= _MAX_DERIVED:
            _DERIVED.clear()
        _DERIVED[(id(array), derive)] = (array, value)
    return value


def product_words(marked: np.ndarray) -> np.ndarray:
    """(n_words x n_columns) uint64: the products marked in each column of ``marked``
    (n_products x n_columns bool) as bits; once for a catalog's (read-only) matrices."""
    return _derived(marked, _column_words)


def _column_words(marked: np.ndarray) -> np.ndarray:
    return _words(np.asarray(marked, dtype=bool).T)  # 0/1 integers would sum as floats


def _words(rows: np.ndarray) -> np.ndarray:
    """(n_words x n_rows) uint64: the products marked in each row of ``rows`` (n_rows x
    n_products bool) as bits. Distinct powers of two add up to their bitwise or: one
    product of matrices, fewer steps than packing bytes."""
    return (rows @ _word_bits(rows.shape[1])).T


@functools.cache
def _word_bits(n_products: int) -> np.ndarray:
    """(n_products x n_words) uint64: product p's bit in its word, 0 in the other words."""
    products = np.arange(n_products)
    bits = np.zeros((n_products, -(-n_products // _WORD)), dtype=np.uint64)
    bits[products, products // _WORD] = _BITS[products % _WORD]
    bits.setflags(write=False)
    return bits


def prerequisites_met(held: sp.spmatrix | np.ndarray, catalog: Catalog,
                      products: Products = None) -> np.ndarray:
    """Boolean (n_customers x n_products): every prerequisite of the product is held."""
    words = product_words(catalog.prerequisite_matrix())
    return holds_all(holding_sets(held), product_columns(words, products))


def offerable_mask(customers: pd.DataFrame, held: sp.csr_matrix | np.ndarray,
                   catalog: Catalog) -> np.ndarray:
    """Products the catalog's rules let be offered, as serving applies them: eligible,
    prerequisites held, no excluding product held, and not held already."""
    held_dense = held.toarray() if sp.issparse(held) else np.asarray(held)
    excluded = holds_any(holding_sets(held), product_words(catalog.exclusion_matrix()))
    return (eligibility_mask(customers, catalog) & prerequisites_met(held, catalog)
            & ~excluded & ~(held_dense > 0))

