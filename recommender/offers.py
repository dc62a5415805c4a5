"""Offers: from ranker scores to the top-k eligible products per customer, with reasons.

The same ``OfferEngine`` serves one customer at the counter and a batch of customers, so
the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .artifacts import TrainedModel
from .book import CustomerBatch
from .catalog import Product
from .eligibility import offerable_mask
from .explain import (
    Reason,
    bundle_reason,
    held_products_reason,
    next_product_reason,
    popular_overall_reason,
    recently_held_reason,
    stage_popularity_reason,
    take_up_reason,
)
from .ranker import AcquisitionScorer, HybridRanker
from .segments import LifeStage
from .topk import NOT_OFFERABLE, top_k

MAX_OFFERS = 20


@dataclass(frozen=True)
class Offer:
    product: Product
    score: float
    rank: int
    source: str
    reasons: tuple[Reason, ...]

    def to_dict(self, lang: str = "en") -> dict[str, Any]:
        p = self.product
        return {
            "product_id": p.id, "name": p.name(lang), "name_en": p.name_en, "name_zh": p.name_zh,
            "category": p.category, "risk_grade": p.risk_grade, "score": round(self.score, 6),
            "rank": self.rank, "source": self.source,
            "reasons": [r.to_dict(lang) for r in self.reasons],
            "talking_points": list(p.talking_points(lang)),
        }


@dataclass(frozen=True)
class OfferList:
    customer_id: str
    life_stage: LifeStage
    source: str
    offers: tuple[Offer, ...]

    def to_dict(self, lang: str = "en") -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "life_stage": {"id": self.life_stage.id, "name": self.life_stage.name(lang),
                           "name_en": self.life_stage.name_en, "name_zh": self.life_stage.name_zh},
            "source": self.source,
            "offers": [o.to_dict(lang) for o in self.offers],
        }


class OfferEngine:
    """Ranks, filters and explains offers with one trained model."""

    def __init__(self, model: TrainedModel) -> None:
        self.model = model
        self.catalog, self.stages = model.catalog, model.stages
        self.ranker = (AcquisitionScorer(model.acquisition, model.rates)
                       if model.served == "acquisition"
                       else HybridRanker(model.cf, model.rates, model.config.cf_weight))

    def rank(self, batch: CustomerBatch, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(product positions, scores, sources): top-k offerable products per customer.

        Positions are -1 where a customer has fewer than k offerable products.
        """
        ranked = self.ranker.score(batch)
        allowed = offerable_mask(batch.profiles, batch.held, self.catalog)
        scores = np.where(allowed, ranked.scores, -np.inf)
        positions, top_scores = top_k(scores, k)
        return positions, top_scores, ranked.sources

    def offers(self, batch: CustomerBatch, k: int = 5) -> list[OfferList]:
        """Offer lists with reasons, one per customer of the batch."""
        k = max(1, min(int(k), MAX_OFFERS))
        positions, scores, sources = self.rank(batch, k)
        lists = []
        for i in range(len(batch)):
            stage = self.stages.stages[int(batch.stages[i])]
            offers = tuple(
                Offer(product=self.catalog.products[pos], score=float(scores[i, r]), rank=r + 1,
                      source=str(sources[i]),
                      reasons=self._reasons(batch, i, int(pos), stage, str(sources[i]),
                                            float(scores[i, r])))
                for r, pos in enumerate(positions[i]) if pos >= 0 and scores[i, r] > NOT_OFFERABLE
            )
            lists.append(OfferList(str(batch.customer_ids[i]), stage, str(sources[i]), offers))
        return lists

    def _reasons(self, batch: CustomerBatch, i: int, pos: int, stage: LifeStage,
                 source: str, score: float) -> tuple[Reason, ...]:
        product = self.catalog.products[pos]
        overall = float(self.model.rates.overall[pos])
        if source == "popularity":
            return (popular_overall_reason(product, overall),)
        stage_rate = float(self.model.rates.by_stage[int(batch.stages[i]), pos])
        if source == "acquisition":
            held_before = len(batch.lags) > 1 and batch.lags[1][i, pos] > 0
            candidates = (
                recently_held_reason(product) if held_before else None,
                next_product_reason(product, float(np.exp(score))),
                bundle_reason(product, stage),
            )
            return tuple(r for r in candidates if r is not None)
        contributors = []
        if source in ("cf", "cf_fold_in"):
            contributors = [(self.catalog.products[held], weight) for held, weight
                            in self.model.cf.explain(batch.confidence[i], pos, n=3)]
        candidates = (
            bundle_reason(product, stage),
            held_products_reason(product, contributors),
            stage_popularity_reason(product, stage, stage_rate, overall),
        )
        reasons = tuple(r for r in candidates if r is not None)
        return reasons or (take_up_reason(product, stage, stage_rate),)
