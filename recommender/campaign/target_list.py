"""Target lists: the best customers for one product, the classic list a product team asks
for, through the same offer engine and policy as the API (no quotas, no other products).

Customers are ranked by the product's own propensity (the calibrated take-up probability;
for a bank of one snapshot, the calibrated probability of holding it), not by expected
value: a product team asks who is most likely to take the product up. Ties
are broken by a stable hash of the customer id (``ties``), so the list does not depend on
the order of the bank's files.
"""

from __future__ import annotations

import difflib
import logging
import sys
from collections import Counter
from collections.abc import Iterable

import numpy as np
import pandas as pd

from ..data.book import CustomerBatch
from ..exceptions import ConfigError, InsufficientDataError
from ..policy.offers import OfferEngine, Scored
from ..policy.rules import DecisionContext
from ..ranking.ranker import SOURCES, source_codes
from .progress import with_progress
from .run import Customers
from .ties import tie_codes

log = logging.getLogger(__name__)

COLUMNS = ("customer_id", "product_id", "rank", "propensity", "priority", "expected_value",
           "life_stage", "source", "reason_code")
_KNOWN_SHOWN = 6  # product ids an error about an unknown product lists


def check_product(engine: OfferEngine, product_id: str) -> int:
    """The product's catalog position; ``ConfigError`` naming it and a few known products
    when the model's catalog does not hold it (checked before any customer is read)."""
    if product_id in engine.catalog.ids:
        return engine.catalog.ids.position(product_id)
    known = [str(p) for p in engine.catalog.ids.external_ids]
    close = difflib.get_close_matches(str(product_id), known, n=3)
    shown = close + [p for p in known if p not in close][:_KNOWN_SHOWN - len(close)]
    more = f", ... ({len(known)} in all)" if len(known) > len(shown) else ""
    raise ConfigError(f"product {product_id!r} is not in the model's catalog; known products: "
                      f"{', '.join(shown)}{more}")


def score_column(engine: OfferEngine) -> str:
    """``propensity`` when the model is calibrated (a take-up probability), else ``score``."""
    return "propensity" if engine.model.calibrator is not None else "score"


def target_column(engine: OfferEngine, product_id: str) -> int:
    """The product's catalog position (``check_product``), with a warning when the model is
    uncalibrated: its list then ranks by a share of each customer's scores."""
    column = check_product(engine, product_id)
    if score_column(engine) == "score":
        log.warning("model %s has no calibrator: the target list's 'score' column ranks "
                    "customers for %s, but it is a share of each customer's scores over all "
                    "products, not a calibrated take-up probability", engine.model.version,
                    product_id)
    return column


def top_customers(engine: OfferEngine, customers: Customers, product_id: str, n: int | None,
                  channel: str = "branch", chunk_size: int = 100_000,
                  progress=sys.stderr) -> pd.DataFrame:
    """The ``n`` customers (every one when ``n`` is None) most likely to take the product up,
    among those the policy lets it through for (COLUMNS; ``score`` for ``propensity`` when
    the model is uncalibrated). Raises ``InsufficientDataError`` saying why when no customer
    is eligible."""
    column = target_column(engine, product_id)
    context = DecisionContext(channel=channel)
    batches = with_progress(customers.chunks(chunk_size), len(customers), progress)
    kept, why_not = target_candidates(engine, batches, column, n, context)
    return target_frame(engine, [] if kept is None else [kept], n, product_id, channel, why_not)


def target_candidates(engine: OfferEngine, batches: Iterable[CustomerBatch], column: int,
                      n: int | None, context: DecisionContext
                      ) -> tuple[dict[str, np.ndarray] | None, Counter[str]]:
    """The best ``n`` (all with None) eligible customers of these batches for the product at
    ``column``, and why the others are left out; None when there are no batches. The parts
    of a bank (Spark partitions) each give theirs, and ``target_frame`` merges them."""
    kept: list[dict[str, np.ndarray]] = []
    why_not: Counter[str] = Counter()
    for batch in batches:
        scored = engine.score(batch, 1, context)
        ok = np.isfinite(scored.priority[:, column]) & (scored.slots > 0)
        why_not.update(_why_not(scored, column, ok, len(batch)))
        kept.append({"ids": batch.customer_ids[ok].astype(object),
                     "propensity": scored.propensity[ok, column].astype(np.float64),
                     "priority": scored.priority[ok, column].astype(np.float64),
                     "expected_value": scored.expected_gain[ok, column].astype(np.float64),
                     "stages": np.asarray(batch.stages)[ok],
                     "sources": source_codes(np.asarray(scored.sources)[ok])})
        if n is not None:  # only the n best can still be in the list
            kept = [best_of(kept, n)]
    return (best_of(kept, n) if kept else None), why_not


def target_frame(engine: OfferEngine, parts: list[dict[str, np.ndarray]], n: int | None,
                 product_id: str, channel: str, why_not: Counter[str]) -> pd.DataFrame:
    """The target list (COLUMNS) of the best ``n`` of the parts' candidates; raises
    ``InsufficientDataError`` saying why when there are none."""
    best = best_of(parts, n) if parts else None
    if best is None or not len(best["ids"]):
        raise InsufficientDataError(_nobody_message(product_id, channel, why_not))
    return pd.DataFrame({
        "customer_id": best["ids"].astype(str),
        "product_id": product_id, "rank": np.arange(1, len(best["ids"]) + 1),
        score_column(engine): best["propensity"], "priority": best["priority"],
        "expected_value": best["expected_value"],
        "life_stage": np.asarray(engine.stages.ids.external_ids, dtype=str)[best["stages"]],
        "source": np.asarray(SOURCES)[best["sources"]],
        "reason_code": "target_list",
    })


def best_of(parts: list[dict[str, np.ndarray]], n: int | None) -> dict[str, np.ndarray]:
    """The parts' rows by decreasing propensity (ties: hash of the customer id), first n:
    the same rows whichever parts they came in, in whatever order."""
    merged = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    order = np.lexsort((tie_codes(merged["ids"]), -merged["propensity"]))[:n]
    return {name: values[order] for name, values in merged.items()}


def _why_not(scored: Scored, column: int, ok: np.ndarray, n: int) -> Counter[str]:
    """Why the product is not offered: customers holding it, then, among the others left
    out, how many each rule blocks (a customer may count under several), how many have no
    offer slot, and how many only miss a gain over the contact cost."""
    held = scored.masks["already_held"][:, column]
    left = ~ok & ~held
    counts: Counter[str] = Counter({"customers": n, "already_held": int(held.sum())})
    blocked = np.zeros(len(left), dtype=bool)
    for code, mask in scored.masks.items():
        if code != "already_held":
            counts[code] += int((left & mask[:, column]).sum())
            blocked |= mask[:, column]
    no_slot = scored.slots == 0
    counts["no_offer_slot"] += int((left & no_slot).sum())
    counts["gain_below_contact_cost"] += int((left & ~blocked & ~no_slot).sum())
    return counts


def _nobody_message(product_id: str, channel: str, why_not: Counter[str]) -> str:
    total, held = why_not["customers"], why_not["already_held"]
    start = f"no customer is eligible for {product_id} on the {channel} channel: "
    if total == 0:
        return start + "the bank has no customers"
    if held == total:
        return start + f"every customer ({total:,}) holds it already"
    reasons = sorted(((count, code) for code, count in why_not.items()
                      if code not in ("customers", "already_held") and count), reverse=True)
    named = ", ".join(f"{code} {count:,}" for count, code in reasons[:4])
    excluded = (f"{held:,} of {total:,} customers hold it and the policy excludes the other "
                f"{total - held:,}" if held else f"the policy excludes all {total:,} customers")
    return (start + f"{excluded} (customers each reason leaves out: {named}); check the "
            "product's eligibility in the catalog, the policy and the channel")
