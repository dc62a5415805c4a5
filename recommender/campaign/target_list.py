"""Target lists: the best customers for one product, the classic list a product team asks
for, through the same offer engine and policy as the API (no quotas, no other products)."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from ..policy.offers import OfferEngine
from ..policy.rules import DecisionContext
from .progress import with_progress
from .run import Customers


def top_customers(engine: OfferEngine, customers: Customers, product_id: str, n: int,
                  channel: str = "branch", chunk_size: int = 100_000,
                  progress=sys.stderr) -> pd.DataFrame:
    """The ``n`` best customers for one product (the classic target list), policy applied."""
    column = engine.catalog.ids.position(product_id)
    context = DecisionContext(channel=channel)
    names = ("ids", "propensity", "priority", "expected_value")
    best = {name: np.empty(0, dtype=object if name == "ids" else np.float64) for name in names}
    for batch in with_progress(customers.chunks(chunk_size), len(customers), progress):
        scored = engine.score(batch, 1, context)
        ok = np.isfinite(scored.priority[:, column]) & (scored.slots > 0)
        chunk = {"ids": batch.customer_ids[ok].astype(object),
                 "propensity": scored.propensity[ok, column],
                 "priority": scored.priority[ok, column],
                 "expected_value": scored.expected_gain[ok, column]}
        merged = {name: np.concatenate([best[name], chunk[name]]) for name in names}
        order = np.lexsort((merged["ids"].astype(str), -merged["expected_value"]))[:n]
        best = {name: values[order] for name, values in merged.items()}
    return pd.DataFrame({
        "customer_id": best["ids"].astype(str),
        "product_id": product_id, "rank": np.arange(1, len(best["ids"]) + 1),
        "propensity": best["propensity"].astype(np.float64),
        "priority": best["priority"].astype(np.float64),
        "expected_value": best["expected_value"].astype(np.float64),
        "reason_code": "target_list",
    })
