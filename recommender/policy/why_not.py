"""Why not: which rule removes a product for a customer, or why it ranks below the offers made.

The answer reads the same ``Scored`` batch the offers come from (rule masks, arbitration,
slots), so an explanation can never disagree with the decision it explains.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.book import CustomerBatch
from ..data.catalog import Catalog, Product
from ..ranking.ranker import RankerScores
from .adaptive import Adjustment
from .offers import NOTICES, OfferEngine, risk_grade
from .rules import RULES, ContactState, DecisionContext, rule_text


def why_not(engine: OfferEngine, batch: CustomerBatch, product_id: str, limit: int,
            context: DecisionContext, contact: ContactState | None = None,
            lang: str = "en", ranked: RankerScores | None = None,
            adjustment: Adjustment | None = None) -> dict[str, Any]:
    """Which rules remove one product for the (single) customer of the batch, or why it
    ranks below the offers made (with the adaptive ``adjustment`` the offers had)."""
    product = engine.catalog[product_id]
    pos = engine.catalog.ids.position(product_id)
    scored = engine.score(batch, limit, context, contact, ranked=ranked, adjustment=adjustment)
    customer_grade = risk_grade(batch, 0)
    owned = scored.masks["already_held"][0] | scored.masks["accepted_pending"][0]
    rules = []
    for code in RULES:
        if scored.masks[code][0, pos]:
            rules.append(_rule(engine.catalog, code, pos, customer_grade, owned, lang))
    chosen = scored.chosen(0)
    rank = chosen.index(pos) + 1 if pos in chosen else None
    if not rules and rank is None:
        if scored.expected_gain[0, pos] <= 0:
            rules.append(_why("no_positive_gain",
                              f"{product.name_en} is not worth the contact now: its "
                              "expected gain is not positive.",
                              f"{product.name_zh}目前的预期收益不足以覆盖联系成本。", lang))
        elif scored.slots[0] == 0:
            rules.append(_why("channel_cap_reached", *NOTICES["channel_cap_reached"], lang))
        else:
            better = len([p for p in chosen if p != pos])
            rules.append(_why("ranked_lower",
                              f"{product.name_en} is suitable but {better} other offers "
                              "rank higher for you.",
                              f"{product.name_zh}适合您，但有{better}个产品排名更靠前。",
                              lang))
    return {"customer_id": str(batch.customer_ids[0]), "product_id": product_id,
            "name": product.name(lang), "offered": rank is not None, "rank": rank,
            "propensity": round(float(scored.propensity[0, pos]), 6), "rules": rules}


def _rule(catalog: Catalog, code: str, pos: int, grade: str, owned: np.ndarray,
          lang: str) -> dict[str, str]:
    """One rule's explanation; names the products behind prerequisite and exclusion."""
    product = catalog.products[pos]
    involved: list[Product] = []
    if code == "prerequisite":
        involved = [catalog[p] for p in product.prerequisites
                    if not owned[catalog.ids.position(p)]]
    elif code == "excluded_by_holding":
        holders = np.flatnonzero(catalog.exclusion_matrix()[:, pos] & owned)
        involved = [catalog.products[q] for q in holders]
    detail_en = ", ".join(p.name_en for p in involved)
    detail_zh = "、".join(p.name_zh for p in involved)
    if code == "risk_grade_too_high":
        detail_en = detail_zh = f"{product.risk_grade} > {grade}"
    return _why(code, rule_text(code, product.name_en, detail_en, "en"),
                rule_text(code, product.name_zh, detail_zh, "zh"), lang)


def _why(code: str, text_en: str, text_zh: str, lang: str) -> dict[str, str]:
    return {"code": code, "text": text_zh if lang == "zh" else text_en, "text_en": text_en,
            "text_zh": text_zh}
