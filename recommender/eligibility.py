"""Eligibility: which products a customer may be offered at all, as boolean masks.

One vectorised step, used by the single-customer path and the batch path alike, so an
offer the API would refuse can never appear in a campaign list (and vice versa).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import columns as C
from .catalog import Catalog


def age_mask(age: np.ndarray, catalog: Catalog) -> np.ndarray:
    """Boolean (n_customers x n_products): the customer's age is within the product's limits."""
    age = np.asarray(age, dtype=np.float64)[:, None]
    return (age >= catalog.column("min_age")[None, :]) & (age <= catalog.column("max_age")[None, :])


def income_mask(income: np.ndarray, catalog: Catalog) -> np.ndarray:
    """Income at least the product's minimum; an unknown income meets no minimum above zero."""
    income = np.asarray(income, dtype=np.float64)[:, None]
    minimum = catalog.column("min_income")[None, :]
    return (income >= minimum) | (minimum <= 0)


def residency_mask(codes: np.ndarray, residencies: Sequence[str], catalog: Catalog) -> np.ndarray:
    """The customer's residency (``residencies[code]``) is one the product accepts: one lookup
    per distinct value, not per customer."""
    accepts = np.array([[value in p.residency for p in catalog.products] for value in residencies],
                       dtype=bool).reshape(len(residencies), len(catalog))
    return accepts[codes]


def eligibility_mask(customers: pd.DataFrame, catalog: Catalog) -> np.ndarray:
    """Boolean (n_customers x n_products): age, income and residency rules of the catalog."""
    residencies, codes = np.unique(customers[C.RESIDENCY].to_numpy().astype(str),
                                   return_inverse=True)
    return (age_mask(customers[C.AGE].to_numpy(dtype=np.float64), catalog)
            & income_mask(customers[C.INCOME].to_numpy(dtype=np.float64), catalog)
            & residency_mask(codes.reshape(len(customers)), residencies.tolist(), catalog))


def prerequisites_met(held: sp.csr_matrix | np.ndarray, catalog: Catalog) -> np.ndarray:
    """Boolean (n_customers x n_products): every prerequisite of the product is held."""
    required = catalog.prerequisite_matrix()
    held_f = held.astype(np.float32)
    count = held_f @ required.astype(np.float32)
    count = np.asarray(count.todense()) if sp.issparse(count) else np.asarray(count)
    return count >= required.sum(axis=0)[None, :]


def offerable_mask(customers: pd.DataFrame, held: sp.csr_matrix | np.ndarray,
                   catalog: Catalog) -> np.ndarray:
    """Products that may be offered: eligible, prerequisites held, and not held already."""
    held_dense = held.toarray() if sp.issparse(held) else np.asarray(held)
    return eligibility_mask(customers, catalog) & prerequisites_met(held, catalog) & ~(
        held_dense > 0
    )

