"""Campaign lists: which customer gets which offer, over every customer of the bank.

The same engine and policy as the API score customers chunk by chunk (memory does not grow
with the number of customers). Each chunk keeps only the candidates that could still win a
quota place; a greedy pass then assigns offers by expected value, at most
``max_offers_per_customer`` per customer and ``quotas[product]`` per product.

Greedy assignment: candidate (customer, product) pairs in decreasing expected value (ties:
a stable hash of the customer id, ``ties``), each taken while its customer and its product
have room. It is exact when every customer may get every product they qualify for, and
otherwise within a factor 1/2 of the optimum in theory;
tests/campaign/test_campaign.py compares it with the exact optimum (a linear program, integral for
this bipartite problem) on small cases and states the gap. It is computed in a few
vectorised rounds of deferred acceptance, which reach the same pairs (``assignment``).

Only the campaign's products are looked at: rules, scores and calibration are computed for
their columns only, and a pair whose raw score is under the product's floor (where no
calibrated propensity could pass the minimum propensity and a positive gain) is dropped
before any is calibrated.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import numpy as np
import pandas as pd

from ..data import columns as C
from ..data.book import CustomerBatch
from ..data.extracts import read_table
from ..exceptions import ConfigError
from ..policy.offers import OfferEngine
from ..policy.rules import (
    ContactState,
    DecisionContext,
    allowed,
    arbitrate,
    contact_state,
    rule_masks,
)
from ..ranking.ranker import SOURCES, source_codes
from ..store.replay import pack_decisions
from .assignment import greedy_assign
from .progress import with_progress
from .spec import CampaignSpec
from .ties import tie_codes

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = ("customer_id", "product_id", "rank", "propensity", "priority",
                  "expected_value", "reason_code", "life_stage")


@dataclass
class CandidatePool:
    """Bounded pool of (customer, product) pairs that could still win a place.

    Pruning keeps, per product, its first ``keep[product]`` pairs in the greedy's order,
    so the greedy takes the same pairs from a pruned pool as from every pair: when and how
    often the pool is pruned changes nothing. It is pruned when it holds twice what pruning
    keeps, which bounds memory without a pass over the pool for every chunk.
    """

    keep: dict[int, int]  # catalog position -> pairs kept
    parts: dict[str, list[np.ndarray]] = field(default_factory=dict)
    size: int = 0

    @classmethod
    def for_quotas(cls, quotas: dict[int, int]) -> CandidatePool:
        """The greedy skips a better pair of product p only when p's quota is full or its
        customer is full with other products' pairs, of which there are at most sum(quotas).
        So keeping the best sum(quotas) pairs of each product loses nothing it would take."""
        total = sum(quotas.values())
        return cls(keep={c: max(total, 1) for c in quotas})

    def add(self, **columns: np.ndarray) -> None:
        for name, values in columns.items():
            self.parts.setdefault(name, []).append(values)
        self.size += len(columns["cols"])
        if self.size > 2 * sum(self.keep.values()):
            self.prune()

    def merged(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(values) for name, values in self.parts.items()}

    def prune(self) -> None:
        """Keep, per product, its first ``keep[product]`` pairs in the greedy's order."""
        pool = self.merged()
        keep = np.zeros(self.size, dtype=bool)
        for col, limit in self.keep.items():
            idx = np.flatnonzero(pool["cols"] == col)
            keep[idx[_best(pool["values"][idx], pool["ids"][idx], limit)]] = True
        self.parts = {name: [values[keep]] for name, values in pool.items()}
        self.size = int(keep.sum())


def _best(values: np.ndarray, ids: np.ndarray, limit: int) -> np.ndarray:
    """Positions of the ``limit`` best values, ties by the hash of the customer id (the
    greedy's order)."""
    if len(values) <= limit:
        return np.arange(len(values))
    threshold = np.partition(values, len(values) - limit)[len(values) - limit]
    above = np.flatnonzero(values > threshold)
    tied = np.flatnonzero(values == threshold)
    tied = tied[np.argsort(tie_codes(ids[tied]), kind="stable")[:limit - len(above)]]
    return np.concatenate([above, tied])


class Customers(Protocol):
    """Every customer a campaign looks at: a CustomerBook in memory, or a bank in parts."""

    snapshot: pd.Timestamp | None

    def __len__(self) -> int: ...

    def chunks(self, chunk_size: int) -> Iterator[CustomerBatch]: ...

    def batches_of(self, customer_ids: np.ndarray, chunk_size: int) -> Iterator[CustomerBatch]: ...


def _excluded_ids(spec: CampaignSpec) -> np.ndarray:
    if not spec.exclude_customers:
        return np.empty(0, dtype=object)
    frame = read_table(spec.exclude_customers)
    if C.CUSTOMER_ID not in frame.columns:
        raise ConfigError(f"{spec.exclude_customers}: needs a customer_id column")
    return frame[C.CUSTOMER_ID].astype(str).str.strip().to_numpy(dtype=object)


def contact_since(engine: OfferEngine, spec: CampaignSpec,
                  context: DecisionContext) -> datetime:
    """Since when a campaign reads responses: what the policy reads (as the API does), and
    the campaign's own contact window."""
    days = max(spec.contact_window_days, engine.policy.history_days)
    return context.now() - timedelta(days=days)


def _contact(engine: OfferEngine, responses, batch: CustomerBatch, spec: CampaignSpec,
             context: DecisionContext, snapshot) -> tuple[ContactState, np.ndarray]:
    """The batch's contact state, and who was contacted within the campaign's window."""
    contact = ContactState.empty(len(batch), len(engine.catalog))
    recent = np.zeros(len(batch), dtype=bool)
    if responses is None:
        return contact, recent
    history = responses.contact_history(list(batch.customer_ids),
                                        contact_since(engine, spec, context))
    contact = contact_state(history, batch.customer_ids, engine.catalog, engine.policy, context,
                            snapshot)
    if spec.contact_window_days > 0 and not history.empty:
        window = context.now() - timedelta(days=spec.contact_window_days)
        within = history[pd.to_datetime(history["recorded_at"], utc=True) >= window]
        recent = np.isin(batch.customer_ids, within[C.CUSTOMER_ID].unique())
    return contact, recent


@dataclass(frozen=True)
class CampaignPlan:
    """What every chunk of one campaign shares: its products, quotas, decision time and
    exclusions. It is all a chunk needs besides the engine, so a chunk can be scored in any
    process (a Spark executor) and its candidates merged into one pool."""

    spec: CampaignSpec
    context: DecisionContext
    quotas: dict[int, int]  # catalog position -> quota
    cols: np.ndarray  # catalog positions of the campaign's products, in catalog order
    floors: np.ndarray  # per product: scores under it cannot pass (-inf: uncalibrated)
    excluded_stages: np.ndarray
    excluded_ids: np.ndarray

    @classmethod
    def of(cls, engine: OfferEngine, spec: CampaignSpec,
           context: DecisionContext | None = None) -> CampaignPlan:
        """The plan of a campaign run now (one decision time for the whole campaign, so
        that its log replays as it ran)."""
        spec.check(engine)
        if context is None:
            context = DecisionContext(channel=spec.channel, intent=spec.intent,
                                      at=datetime.now(UTC))
        positions = engine.catalog.ids.to_internal(list(spec.products))
        quotas = {int(c): int(spec.quotas[p])
                  for c, p in zip(positions, spec.products, strict=True)}
        cols = np.sort(positions)
        return cls(spec, context, quotas, cols,
                   _score_floors(engine, cols, spec.min_propensity, context),
                   engine.stages.ids.to_internal_lenient(list(spec.exclude_life_stages)),
                   _excluded_ids(spec))

    def pool(self) -> CandidatePool:
        return CandidatePool.for_quotas(self.quotas)

    def candidates(self, engine: OfferEngine, chunk: CustomerBatch, responses,
                   snapshot: pd.Timestamp | None) -> dict[str, np.ndarray]:
        """The chunk's pairs that could win a place (see ``_candidates``); ``responses`` is
        anything with the ``contact_history`` of a ResponseStore, or None."""
        contact, recent = _contact(engine, responses, chunk, self.spec, self.context, snapshot)
        return _candidates(engine, chunk, contact, recent, self)


def _score_floors(engine: OfferEngine, cols: np.ndarray, min_propensity: float,
                  context: DecisionContext) -> np.ndarray:
    """Per campaign product, the raw score under which its calibrated propensity can pass
    neither the minimum propensity nor a positive gain (the calibration is monotone)."""
    calibrator = engine.model.calibrator
    if calibrator is None:  # a softmax share depends on the other products' scores
        return np.full(len(cols), -np.inf)

    def passes(propensity: np.ndarray, col: int) -> np.ndarray:
        # The tests _candidates applies to every pair, on the same float32 propensities.
        gain = arbitrate(propensity, True, engine.catalog, engine.policy, context,
                         np.full(len(propensity), col))
        return np.isfinite(gain.priority) & (propensity >= min_propensity)

    return np.array([calibrator.score_floor(lambda p, c=int(c): passes(p, c)) for c in cols])


def _reachable(chunk: CustomerBatch, contact: ContactState, recent: np.ndarray,
               plan: CampaignPlan, engine: OfferEngine) -> np.ndarray:
    """Customers the campaign may contact: not recently contacted nor excluded, and with
    a slot left on the channel today (``OfferEngine.slots``, as the API counts them)."""
    ok = ~recent & ~np.isin(chunk.stages, plan.excluded_stages)
    if len(plan.excluded_ids):
        ok &= ~np.isin(chunk.customer_ids, plan.excluded_ids)
    return ok & (engine.slots(chunk, 1, plan.context, contact) > 0)


def _candidates(engine: OfferEngine, chunk: CustomerBatch, contact: ContactState,
                recent: np.ndarray, plan: CampaignPlan) -> dict[str, np.ndarray]:
    """The chunk's pairs the policy lets through, by row then catalog position: what the
    API would offer (``OfferEngine.score``), for the campaign's products only."""
    masks = rule_masks(chunk, engine.catalog, engine.policy, contact, plan.context, plan.cols)
    ok = allowed(masks) & _reachable(chunk, contact, recent, plan, engine)[:, None]
    batch = chunk
    if not engine.ranker.scores_cheaply:  # then only the customers the rules let through
        worth = np.flatnonzero(ok.any(axis=1))
        batch, ok = chunk.take(worth), ok[worth]
    calibrated = engine.model.calibrator is not None
    ranked = engine.ranker.score(batch, plan.cols if calibrated else None)
    if calibrated:
        ok = (ranked.scores >= plan.floors) & ok  # the rest cannot pass: never calibrated
    rows, k = np.divmod(np.flatnonzero(ok), len(plan.cols))  # by row, then column
    if calibrated:
        propensity = engine.propensity(ranked.scores[rows, k])
    else:
        propensity = engine.propensity(ranked.scores)[:, plan.cols][rows, k]
    cols = plan.cols[k]
    arbitration = arbitrate(propensity, True, engine.catalog, engine.policy, plan.context, cols)
    keep = np.isfinite(arbitration.priority) & (propensity >= plan.spec.min_propensity)
    rows = rows[keep]
    return {"ids": batch.customer_ids[rows], "stages": batch.stages[rows], "cols": cols[keep],
            "values": arbitration.expected_gain[keep], "propensity": propensity[keep],
            "priority": arbitration.priority[keep], "sources": source_codes(ranked.sources)[rows]}


def run_campaign(engine: OfferEngine, customers: Customers, spec: CampaignSpec,
                 responses=None, chunk_size: int = 100_000, progress=sys.stderr,
                 decisions=None) -> pd.DataFrame:
    """The campaign list (OUTPUT_COLUMNS), rules and policy applied, quotas respected.

    With a decision log, every customer reached gets a logged decision (source "batch") and
    the list a ``decision_id`` column.
    """
    plan = CampaignPlan.of(engine, spec)
    pool = plan.pool()
    started = time.perf_counter()
    for chunk in with_progress(customers.chunks(chunk_size), len(customers), progress):
        pool.add(**plan.candidates(engine, chunk, responses, customers.snapshot))
    result = assign_offers(engine, pool, plan)
    log.info("campaign %s: %d offers to %d customers in %.1f s", spec.name, len(result),
             result["customer_id"].nunique(), time.perf_counter() - started)
    if decisions is not None:
        result = log_decisions(engine, customers, plan, result, responses, decisions,
                               chunk_size)
    return result


def _id_order(ids: np.ndarray) -> np.ndarray:
    """Codes that sort as the ids do. The pool holds each customer's pairs together, and
    customers come in id order from a book: then no string needs sorting."""
    if len(ids) and (ids[1:] >= ids[:-1]).all():
        return np.r_[0, np.cumsum(ids[1:] != ids[:-1])]
    return np.unique(ids, return_inverse=True)[1].reshape(len(ids))


def assign_offers(engine: OfferEngine, pool: CandidatePool, plan: CampaignPlan) -> pd.DataFrame:
    """The greedy's choice from the pool, as the campaign list: by customer id, then by
    decreasing priority (ties: product id)."""
    candidates = pool.merged()
    if not candidates:
        kinds = ("str", "str", np.int64, float, float, float, "str", "str")  # as below
        return pd.DataFrame({name: pd.Series(dtype=kind)
                             for name, kind in zip(OUTPUT_COLUMNS, kinds, strict=True)})
    # Ties between customers go by the hash of their id, not by id or row order. Each
    # customer's pairs are together and in catalog order, so the pool sorted by tie code is
    # sorted as the greedy's fast path wants it.
    ties = tie_codes(candidates["ids"])
    by_tie = np.argsort(ties, kind="stable")
    chosen = by_tie[greedy_assign(ties[by_tie], candidates["cols"][by_tie],
                                  candidates["values"][by_tie], plan.quotas,
                                  plan.spec.max_offers_per_customer)]
    order_of_id = _id_order(candidates["ids"])
    by_product_id = np.argsort(np.argsort(engine.catalog.ids.external_ids, kind="stable"))
    chosen = chosen[np.lexsort((by_product_id[candidates["cols"][chosen]],
                                -candidates["priority"][chosen], order_of_id[chosen]))]
    pick = {name: values[chosen] for name, values in candidates.items()}
    customer = order_of_id[chosen]
    first = np.r_[True, customer[1:] != customer[:-1]]
    rank = np.arange(len(chosen)) - np.flatnonzero(first)[np.cumsum(first) - 1] + 1
    result = pd.DataFrame({
        "customer_id": pick["ids"].astype(str),
        "product_id": _strings(engine.catalog.ids.external_ids, pick["cols"]),
        "rank": rank,
        "propensity": pick["propensity"].astype(np.float64),
        "priority": pick["priority"].astype(np.float64),
        "expected_value": pick["values"].astype(np.float64),
        "reason_code": _strings([f"ranked_by_{s}" for s in SOURCES], pick["sources"]),
        "life_stage": _strings(engine.stages.ids.external_ids, pick["stages"]),
    })
    return result[list(OUTPUT_COLUMNS)]


def _strings(values, codes: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """``values[codes]`` as a pandas string column, converting each distinct value once."""
    return pd.array(np.asarray(values, dtype=str), dtype="str").take(codes.astype(np.int64))


def log_decisions(engine: OfferEngine, customers: Customers, plan: CampaignPlan,
                  result: pd.DataFrame, responses, decisions, chunk_size: int) -> pd.DataFrame:
    """One logged decision per customer reached: the inputs it was computed from and the
    offers the campaign made, one encrypted pack per batch; ``nbo replay`` recomputes them."""
    reached = np.unique(result["customer_id"].to_numpy(dtype=object))
    ids: dict[str, str] = {}
    positions = engine.catalog.ids.to_internal(result["product_id"].to_numpy())
    spec, context = plan.spec, plan.context
    for batch in customers.batches_of(reached, chunk_size):
        contact, _ = _contact(engine, responses, batch, spec, context, customers.snapshot)
        rows = pd.Index(batch.customer_ids).get_indexer(result["customer_id"])
        mine = rows >= 0
        offers = {"row": rows[mine].astype(np.int32), "product": positions[mine],
                  **{name: result[name].to_numpy()[mine]
                     for name in ("rank", "propensity", "priority", "expected_value")}}
        pack = pack_decisions(batch, contact, context, len(spec.products), engine.catalog,
                              offers, {"campaign": spec.name})
        ids.update(zip(batch.customer_ids, decisions.record_pack(
            batch.customer_ids, pack, source="batch", model_version=engine.model.version,
            policy_version=engine.policy.version, policy_text=engine.policy.text),
            strict=True))
    return result.assign(decision_id=result["customer_id"].map(ids))
