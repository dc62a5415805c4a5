"""The customer book: the bank's current customers, their life stage and latest holdings.

Built once from the validated extracts, it answers "who is this customer and what do they
hold now" in O(1) for the API, and hands out batches of customers for vectorised scoring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import columns as C
from .catalog import Catalog
from .data import BankData, validate_customers
from .exceptions import DataValidationError, UnknownCustomerError
from .ids import IdMap
from .interactions import confidence_matrix, snapshot_matrix
from .segments import LifeStageRules


@dataclass(frozen=True)
class CustomerBatch:
    """Customers to score together: profiles, holdings and stages, row-aligned."""

    customer_ids: np.ndarray
    profiles: pd.DataFrame
    held: sp.csr_matrix  # binary, customers x products
    confidence: sp.csr_matrix  # CF input weighting of ``held``
    stages: np.ndarray

    def __len__(self) -> int:
        return len(self.customer_ids)


class CustomerBook:
    """Customers of the bank as of the latest holdings snapshot."""

    def __init__(self, bank: BankData, catalog: Catalog, stages: LifeStageRules,
                 weighting: str = "binary") -> None:
        self.catalog, self.stages, self.weighting = catalog, stages, weighting
        self.profiles = bank.customers.reset_index(drop=True)
        self.ids = IdMap(self.profiles[C.CUSTOMER_ID].to_numpy(), "customer")
        shape = (len(self.ids), len(catalog))
        self.snapshot = max(bank.snapshots) if len(bank.holdings) else None
        if self.snapshot is None:
            self.held = sp.csr_matrix(shape, dtype=np.float32)
            self.confidence = self.held
        else:
            self.held = snapshot_matrix(bank.holdings, shape, self.snapshot)
            self.confidence = confidence_matrix(bank.holdings, shape, self.snapshot, weighting)
        self.stage_codes = stages.assign(self.profiles)

    def __len__(self) -> int:
        return len(self.ids)

    def position(self, customer_id: str) -> int:
        if customer_id not in self.ids:
            raise UnknownCustomerError(f"customer {customer_id!r} is not in the customer book")
        return self.ids.position(customer_id)

    def batch(self, positions: np.ndarray) -> CustomerBatch:
        positions = np.asarray(positions, dtype=np.int64)
        return CustomerBatch(
            customer_ids=self.ids.to_external(positions),
            profiles=self.profiles.iloc[positions].reset_index(drop=True),
            held=self.held[positions], confidence=self.confidence[positions],
            stages=self.stage_codes[positions],
        )

    def held_product_ids(self, position: int) -> list[str]:
        row = self.held[position]
        return self.catalog.ids.to_external(np.sort(row.indices)).tolist()


def profile_batch(profile: dict, held_product_ids: list[str], catalog: Catalog,
                  stages: LifeStageRules, source: str = "request") -> CustomerBatch:
    """A one-customer batch for a customer described in a request, not in the book.

    The profile is validated by the same rules as the customers extract.
    """
    profiles = validate_customers(pd.DataFrame([profile]), source=source)
    unknown = [p for p in held_product_ids if p not in catalog.ids]
    if unknown:
        raise DataValidationError(f"unknown product ids {unknown}", source=source,
                                  column="holdings")
    cols = catalog.ids.to_internal(sorted(set(held_product_ids)))
    held = sp.csr_matrix((np.ones(len(cols), dtype=np.float32), (np.zeros(len(cols)), cols)),
                         shape=(1, len(catalog)))
    return CustomerBatch(
        customer_ids=profiles[C.CUSTOMER_ID].to_numpy(), profiles=profiles, held=held,
        confidence=held, stages=stages.assign(profiles),
    )
