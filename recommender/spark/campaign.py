"""Campaign and target lists on Spark: the same lists as on one machine, scored in parts.

Each part (``extracts.SparkBank``) is scored in an executor by the single-machine code: a
campaign part by ``CampaignPlan.candidates`` chunk by chunk, pruned to the candidates that
could still win a quota place (``CandidatePool``); a target-list part by
``target_candidates``. The driver merges what the parts send back (a bounded pool, or each
part's best ``n``) and decides once, with ``assign_offers`` or ``target_frame``: quotas stay
global, and the list is the one the local engine makes, customer for customer.

Recorded responses reach the executors as a table of the contacts within the policy's
window (``ContactHistory``): the response store is a file on the driver's machine.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..campaign.run import CampaignPlan, assign_offers, contact_since, log_decisions
from ..campaign.spec import CampaignSpec
from ..campaign.target_list import best_of, target_candidates, target_column, target_frame
from ..data.book import model_book
from ..data.extracts import BankData
from ..policy.offers import OfferEngine
from ..policy.rules import DecisionContext
from ..store.responses import ContactHistory
from .extracts import SparkBank, part_results
from .session import ShippedModel, executor_engine

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 100_000  # customers scored at once within a part, as on one machine

BeforePart = Callable[[int], None]  # called in the executor before a part is scored


def run_campaign_spark(spark: SparkSession, engine: OfferEngine, shipped: ShippedModel,
                       bank: SparkBank, spec: CampaignSpec, responses=None,
                       chunk_size: int = DEFAULT_CHUNK, decisions=None,
                       before_part: BeforePart | None = None) -> pd.DataFrame:
    """``campaign.run.run_campaign`` over a bank on Spark: the same list (OUTPUT_COLUMNS, and
    ``decision_id`` with a decision log). ``engine`` is the driver's; the executors build
    theirs from ``shipped``."""
    plan = CampaignPlan.of(engine, spec)
    history = _history(engine, spec, plan.context, responses)
    as_of = bank.layout.as_of
    started = time.perf_counter()

    def score(part: int, part_bank: BankData) -> Iterator[pd.DataFrame]:
        if before_part is not None:
            before_part(part)
        mine = executor_engine(shipped)
        pool = plan.pool()
        for chunk in model_book(part_bank, mine.model).chunks(chunk_size):
            pool.add(**plan.candidates(mine, chunk, history, as_of))
        if pool.size:
            pool.prune()  # only what could still win a place leaves the executor
            yield pd.DataFrame(pool.merged())

    pool, received = plan.pool(), 0
    for rows in part_results(bank.map_parts(score)):  # pruned as it grows: bounded
        pool.add(ids=rows["ids"].to_numpy(dtype=object), **{
            name: rows[name].to_numpy() for name in rows.columns if name != "ids"})
        received += len(rows)
    result = assign_offers(engine, pool, plan)
    log.info("campaign %s on Spark: %d offers to %d customers in %.1f s (%d candidates from "
             "%d parts)", spec.name, len(result), result["customer_id"].nunique(),
             time.perf_counter() - started, received, bank.parts)
    if decisions is not None:
        reached = model_book(bank.rows_of(spark, result["customer_id"].unique()), engine.model)
        result = log_decisions(engine, reached, plan, result, responses, decisions, chunk_size)
    return result


def top_customers_spark(engine: OfferEngine, shipped: ShippedModel, bank: SparkBank,
                        product_id: str, n: int | None, channel: str = "branch",
                        chunk_size: int = DEFAULT_CHUNK,
                        before_part: BeforePart | None = None) -> pd.DataFrame:
    """``campaign.target_list.top_customers`` over a bank on Spark: each part sends back
    its best ``n`` (every eligible customer with None) and why it left the others out."""
    column = target_column(engine, product_id)
    context = DecisionContext(channel=channel)

    def score(part: int, part_bank: BankData) -> Iterator[pd.DataFrame]:
        if before_part is not None:
            before_part(part)
        mine = executor_engine(shipped)
        chunks = model_book(part_bank, mine.model).chunks(chunk_size)
        kept, why_not = target_candidates(mine, chunks, column, n, context)
        yield pd.DataFrame({"why_not": [json.dumps(dict(why_not))]})
        if kept is not None and len(kept["ids"]):
            yield pd.DataFrame(kept)

    parts: list[dict[str, np.ndarray]] = []
    why_not: Counter[str] = Counter()
    for rows in part_results(bank.map_parts(score)):
        if "why_not" in rows.columns:
            why_not.update(json.loads(rows["why_not"].iloc[0]))
        else:
            parts.append({name: rows[name].to_numpy(dtype=object if name == "ids" else None)
                          for name in rows.columns})
            if n is not None:  # only the n best can still be in the list
                parts = [best_of(parts, n)]
    return target_frame(engine, parts, n, product_id, channel, why_not)


def _history(engine: OfferEngine, spec: CampaignSpec, context: DecisionContext,
             responses) -> ContactHistory | None:
    """The contacts the policy and the campaign's window read, for the executors."""
    if responses is None:
        return None
    return ContactHistory(responses.history_since(contact_since(engine, spec, context)))
