"""Offers: from ranker scores, through the decision policy, to explained offers.

The same ``OfferEngine`` decides for one customer at the counter and for a batch of
customers in a campaign, so the two can never disagree. Every decision lists its mandatory
service actions first, then at most ``limit`` sales offers, each with its reasons; a
customer may get no offer at all when nothing is suitable or worth the contact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..data import columns as C
from ..data.book import CustomerBatch
from ..data.catalog import Product
from ..data.life_stages import LifeStage
from ..ranking.artifacts import TrainedModel
from ..ranking.ranker import RankerScores, served_ranker
from .adaptive import Adjustment
from .config import PolicyConfig, ServiceAction, load_policy
from .reasons import (
    Reason,
    bundle_reason,
    held_products_reason,
    look_alike_reason,
    next_product_reason,
    popular_overall_reason,
    recently_held_reason,
    stage_popularity_reason,
    suitability_reason,
    take_up_reason,
)
from .rules import ContactState, DecisionContext, allowed, arbitrate, priority_order, rule_masks

MAX_OFFERS = 20
NOTICES = {
    "non_personalised": ("You did not consent to profiling: these offers are the same for "
                         "every customer and use none of your personal data.",
                         "您未同意个性化分析：以下推荐对所有客户相同，未使用您的个人信息。"),
    "open_complaint": ("An open complaint is being handled: no sales offers until it is "
                       "resolved.", "您有未结投诉正在处理：处理完毕前不进行产品推荐。"),
    "no_offer": ("No product is suitable and worth offering right now.",
                 "目前没有适合您且值得推荐的产品。"),
    "channel_cap_reached": ("The daily number of offers on this channel has been reached.",
                            "今日该渠道的推荐次数已达上限。"),
}


# Keys of an answer that hold wording, in either language: the catalog of the model version
# and the policy regenerate them from what was decided (``decided``).
WORDING = frozenset({"name", "name_en", "name_zh", "text", "text_en", "text_zh",
                     "talking_points", "description"})


def decided(answer: Any) -> Any:
    """What a decision record keeps of an answer: the products, ranks, scores, sources,
    reason codes with their evidence, notices and actions; not their wording (the texts are
    four fifths of an answer's bytes, and ``nbo replay`` shows them again)."""
    if isinstance(answer, dict):
        return {k: decided(v) for k, v in answer.items() if k not in WORDING}
    if isinstance(answer, list):
        return [decided(item) for item in answer]
    return answer


def _notice(code: str, lang: str) -> dict[str, str]:
    english, chinese = NOTICES[code]
    return {"code": code, "text": chinese if lang == "zh" else english, "text_en": english,
            "text_zh": chinese}


@dataclass(frozen=True)
class Offer:
    product: Product
    score: float
    rank: int
    source: str
    reasons: tuple[Reason, ...]
    propensity: float = 0.0
    priority: float = 0.0
    expected_gain: float = 0.0
    factor: float | None = None  # the adaptive correction used; None: none configured

    def to_dict(self, lang: str = "en") -> dict[str, Any]:
        p = self.product
        adaptive = {} if self.factor is None else {"factor": round(self.factor, 6)}
        return {
            "product_id": p.id, "name": p.name(lang), "name_en": p.name_en, "name_zh": p.name_zh,
            "category": p.category, "risk_grade": p.risk_grade, "score": round(self.score, 6),
            "rank": self.rank, "source": self.source,
            "propensity": round(self.propensity, 6), "value_weight": p.value_weight,
            "priority": round(self.priority, 6), "expected_gain": round(self.expected_gain, 6),
            **adaptive, "reasons": [r.to_dict(lang) for r in self.reasons],
            "talking_points": list(p.talking_points(lang)),
        }


@dataclass(frozen=True)
class OfferList:
    customer_id: str
    life_stage: LifeStage
    source: str
    offers: tuple[Offer, ...]
    service_actions: tuple[ServiceAction, ...] = ()
    notices: tuple[str, ...] = ()
    context: DecisionContext = field(default_factory=DecisionContext)

    @property
    def personalised(self) -> bool:
        return self.source != "popularity"

    def to_dict(self, lang: str = "en") -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "life_stage": {"id": self.life_stage.id, "name": self.life_stage.name(lang),
                           "name_en": self.life_stage.name_en, "name_zh": self.life_stage.name_zh},
            "source": self.source, "personalised": self.personalised,
            "context": {"channel": self.context.channel, "intent": self.context.intent},
            "notices": [_notice(code, lang) for code in self.notices],
            "service_actions": [a.to_dict(lang) for a in self.service_actions],
            "offers": [o.to_dict(lang) for o in self.offers],
        }


@dataclass(frozen=True)
class Scored:
    """Everything the policy computed for a batch, kept for explanations (why-not)."""

    scores: np.ndarray
    sources: np.ndarray
    propensity: np.ndarray
    masks: dict[str, np.ndarray]
    priority: np.ndarray
    expected_gain: np.ndarray
    slots: np.ndarray  # (n,) number of sales offers allowed
    adjustment: Adjustment | None = None  # the adaptive correction applied to propensity

    @cached_property
    def order(self) -> np.ndarray:
        """Products by priority (``priority_order``), sorted when first read."""
        return priority_order(self.priority)

    def chosen(self, i: int) -> list[int]:
        """Customer ``i``'s offers, best first: the first ``slots[i]`` products by priority
        that are offerable (a row of ``OfferEngine.offered``, without whole-batch steps)."""
        priority = self.priority[i].tolist()
        return [p for p in self.order[i, :self.slots[i]].tolist() if math.isfinite(priority[p])]


@dataclass(frozen=True)
class _FixedReasons:
    """Reasons for one product that depend only on the customer's life stage and risk grade
    (``bundle`` and ``stage_popularity`` are None when they do not hold)."""

    suitability: Reason
    bundle: Reason | None
    popular_overall: Reason
    stage_popularity: Reason | None
    take_up: Reason


class OfferEngine:
    """Ranks, filters, arbitrates and explains offers with one trained model and one policy."""

    def __init__(self, model: TrainedModel, policy: PolicyConfig | None = None) -> None:
        self.model = model
        self.policy = policy or load_policy()
        self.catalog, self.stages = model.catalog, model.stages
        self.ranker = served_ranker(model)
        self._fixed: dict[tuple[int, int, str], _FixedReasons] = {}

    def propensity(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated monthly take-up probabilities (softmax share when uncalibrated)."""
        if self.model.calibrator is not None:
            return self.model.calibrator.predict(scores)
        finite = np.where(np.isfinite(scores), scores, -np.inf)
        shifted = np.exp(finite - np.max(finite, axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def score(self, batch: CustomerBatch, limit: int, context: DecisionContext,
              contact: ContactState | None = None,
              masks: dict[str, np.ndarray] | None = None,
              ranked: RankerScores | None = None,
              adjustment: Adjustment | None = None) -> Scored:
        """Scores, rule masks and arbitration for a batch (vectorised).

        ``masks`` are this batch's ``rule_masks`` and ``ranked`` its ranker scores (from a
        ``ScoreTable``) when the caller has them already; ``adjustment`` corrects the
        propensities with what customers answered (``adaptive``).
        """
        n, n_products = batch.held.shape
        contact = contact or ContactState.empty(n, n_products)
        ranked = ranked if ranked is not None else self.ranker.score(batch)
        propensity = self.propensity(ranked.scores)
        if adjustment is not None:
            propensity = adjustment.apply(propensity)
        if masks is None:
            masks = rule_masks(batch, self.catalog, self.policy, contact, context)
        arbitration = arbitrate(propensity, allowed(masks), self.catalog, self.policy, context)
        return Scored(ranked.scores, ranked.sources, propensity, masks, arbitration.priority,
                      arbitration.expected_gain, self.slots(batch, limit, context, contact),
                      adjustment)

    def slots(self, batch: CustomerBatch, limit: int, context: DecisionContext,
              contact: ContactState) -> np.ndarray:
        """(n,) how many sales offers each customer may get: ``limit`` (1 to MAX_OFFERS), no
        more than the channel's daily cap leaves, none during an open complaint."""
        remaining = np.maximum(self.policy.cap(context.channel) - contact.shown_today, 0)
        slots = np.minimum(max(1, min(int(limit), MAX_OFFERS)), remaining)
        slots[batch.profile_arrays.open_complaint] = 0
        return slots

    def offered(self, scored: Scored) -> np.ndarray:
        """(n x MAX_OFFERS) product positions offered, best first, -1 padded (no reasons)."""
        width = int(scored.slots.max()) if len(scored.slots) else 0
        top = scored.order[:, :width]
        keep = np.isfinite(scored.priority[np.arange(len(top))[:, None], top])
        keep &= np.arange(width)[None, :] < scored.slots[:, None]
        return np.where(keep, top, -1)

    def offers(self, batch: CustomerBatch, limit: int = 5,
               context: DecisionContext | None = None,
               contact: ContactState | None = None,
               ranked: RankerScores | None = None,
               adjustment: Adjustment | None = None) -> list[OfferList]:
        """One decision per customer of the batch: service actions, offers, notices."""
        context = context or DecisionContext(channel=self.policy.default_channel)
        scored = self.score(batch, limit, context, contact, ranked=ranked,
                            adjustment=adjustment)
        # Per batch, not per customer: numpy calls cost more than their work on one row.
        complaint = scored.masks["open_complaint"].any(axis=1).tolist()
        outdated = scored.masks["risk_assessment_outdated"].any(axis=1).tolist()
        lists = []
        for i in range(len(batch)):
            source = str(scored.sources[i])
            offers = self._offers_of(batch, scored, i, scored.chosen(i), source)
            lists.append(OfferList(
                str(batch.customer_ids[i]), self.stages.stages[int(batch.stages[i])], source,
                offers, self._service_actions(complaint[i], outdated[i]),
                self._notices(source, complaint[i], int(scored.slots[i]), offers), context))
        return lists

    def _offers_of(self, batch: CustomerBatch, scored: Scored, i: int, chosen: list[int],
                   source: str) -> tuple[Offer, ...]:
        """Customer ``i``'s offers of the ``chosen`` products, best first, with reasons."""
        if not chosen:
            return ()
        stage_index, grade = int(batch.stages[i]), risk_grade(batch, i)
        scores, propensity, priority, gain = (values[i].tolist() for values in (
            scored.scores, scored.propensity, scored.priority, scored.expected_gain))
        factors = (scored.adjustment.factors[i].tolist() if scored.adjustment is not None
                   else [None] * len(scores))
        # Only the acquisition ranker's reasons read last month's holdings and its
        # probabilities (its scores are log-probabilities: one exp for the row, not per offer).
        held_before, likely = frozenset(), scores  # not read for the other sources
        if source in ("acquisition", "ownership"):
            if len(batch.lags) > 1:
                held_before = _held(batch.lags[1], i)
            likely = np.exp(scored.scores[i], dtype=np.float64).tolist()
        return tuple(
            Offer(product=self.catalog.products[pos], score=scores[pos], rank=r + 1,
                  source=source,
                  reasons=self._reasons(batch, i, pos, source,
                                        self._fixed_reasons(pos, stage_index, grade),
                                        likely[pos], pos in held_before),
                  propensity=propensity[pos], priority=priority[pos],
                  expected_gain=gain[pos], factor=factors[pos])
            for r, pos in enumerate(chosen))

    def _service_actions(self, complaint: bool, outdated: bool) -> tuple[ServiceAction, ...]:
        actions = []
        if complaint:
            actions.append(self.policy.service_actions["resolve_complaint"])
        if outdated:
            actions.append(self.policy.service_actions["update_risk_assessment"])
        return tuple(actions)

    def _notices(self, source: str, complaint: bool, slots: int,
                 offers: tuple[Offer, ...]) -> tuple[str, ...]:
        notices = []
        if source == "popularity":
            notices.append("non_personalised")
        if complaint:
            notices.append("open_complaint")
        elif slots == 0:
            notices.append("channel_cap_reached")
        elif not offers:
            notices.append("no_offer")
        return tuple(notices)

    def _reasons(self, batch: CustomerBatch, i: int, pos: int, source: str,
                 fixed: _FixedReasons, likely: float, held_before: bool) -> tuple[Reason, ...]:
        """Why the product is offered; ``likely``: the acquisition ranker's probability,
        ``held_before``: the customer held the product a month ago (both read for that
        ranker's offers only)."""
        if source == "popularity":
            return (fixed.popular_overall, fixed.suitability)
        product = self.catalog.products[pos]
        if source == "acquisition":
            candidates = (
                recently_held_reason(product) if held_before else None,
                next_product_reason(product, likely),
                fixed.bundle,
            )
        elif source == "ownership":
            candidates = (look_alike_reason(product, likely), fixed.bundle)
        else:
            contributors = []
            if source in ("cf", "cf_fold_in"):
                contributors = [(self.catalog.products[held], weight) for held, weight
                                in self.model.cf.explain(batch.confidence[i], pos, n=3)]
            candidates = (
                fixed.bundle,
                held_products_reason(product, contributors),
                fixed.stage_popularity,
            )
        reasons = tuple([r for r in candidates if r is not None])  # faster than a generator
        return (reasons or (fixed.take_up,)) + (fixed.suitability,)

    def _fixed_reasons(self, pos: int, stage_index: int, grade: str) -> _FixedReasons:
        """The reasons for product ``pos`` that depend only on the customer's life stage and
        risk grade, built once per engine: reasons are immutable, and building them costs
        more than the rest of an offer."""
        key = (pos, stage_index, grade)
        fixed = self._fixed.get(key)
        if fixed is None:
            product, stage = self.catalog.products[pos], self.stages.stages[stage_index]
            overall = float(self.model.rates.overall[pos])
            stage_rate = float(self.model.rates.by_stage[stage_index, pos])
            holding = self.model.rates.kind == "holding"  # one snapshot: no take-up seen
            fixed = self._fixed[key] = _FixedReasons(
                suitability=suitability_reason(product, grade),
                bundle=bundle_reason(product, stage),
                popular_overall=popular_overall_reason(product, overall, holding),
                stage_popularity=stage_popularity_reason(product, stage, stage_rate, overall,
                                                         holding),
                take_up=take_up_reason(product, stage, stage_rate, holding))
        return fixed


def _held(lag: sp.csr_matrix, i: int) -> frozenset[int]:
    """Products row ``i`` of a holdings snapshot holds (entries > 0)."""
    start, end = lag.indptr[i:i + 2].tolist()
    return frozenset(lag.indices[start:end][lag.data[start:end] > 0].tolist())


def risk_grade(batch: CustomerBatch, i: int) -> str:
    """Customer ``i``'s risk grade (C1-C5), from the decoded profile: no table needed."""
    return C.RISK_GRADES[int(batch.profile_arrays.risk_level[i]) - 1]

