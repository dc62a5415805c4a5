"""Reasons for an offer, in plain English and Chinese, with the evidence behind them.

A teller reads the text to the customer; an auditor reads the code and the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..data.catalog import Product
from ..data.life_stages import LifeStage


@dataclass(frozen=True)
class Reason:
    code: str
    text_en: str
    text_zh: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def text(self, lang: str) -> str:
        return self.text_zh if lang == "zh" else self.text_en

    def to_dict(self, lang: str = "en") -> dict[str, Any]:
        # A copy of the evidence: an engine shares its reasons between answers.
        return {"code": self.code, "text": self.text(lang), "text_en": self.text_en,
                "text_zh": self.text_zh, "evidence": dict(self.evidence)}


def _percent(rate: float) -> str:
    return f"{100 * rate:.1f}%"


def bundle_reason(product: Product, stage: LifeStage) -> Reason | None:
    """The product belongs to the customer's life-stage bundle."""
    if stage.id not in product.life_stages:
        return None
    return Reason(
        code="life_stage_bundle",
        text_en=f"{product.name_en} is part of the '{stage.name_en}' bundle: "
                f"{stage.description_en}",
        text_zh=f"{product.name_zh}属于“{stage.name_zh}”阶段的产品组合：{stage.description_zh}",
        evidence={"life_stage": stage.id},
    )


def held_products_reason(product: Product,
                         contributors: list[tuple[Product, float]]) -> Reason | None:
    """Held products that make this one likely (CF explanation)."""
    if not contributors:
        return None
    names = [p.name_en for p, _ in contributors]
    names_en = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    names_zh = "、".join(p.name_zh for p, _ in contributors)
    return Reason(
        code="held_products",
        text_en=f"Customers who hold {names_en}, as you do, often also take {product.name_en}",
        text_zh=f"与您一样持有{names_zh}的客户，常常也会选择{product.name_zh}",
        evidence={"products": [p.id for p, _ in contributors],
                  "contributions": [round(float(w), 4) for _, w in contributors]},
    )


def stage_popularity_reason(product: Product, stage: LifeStage, stage_rate: float,
                            overall_rate: float, holding: bool = False) -> Reason | None:
    """The product is taken up (``holding``: held) more often in this life stage than
    overall."""
    if stage_rate <= overall_rate:
        return None
    lift = stage_rate / overall_rate if overall_rate > 0 else float("inf")
    verb_en, verb_zh, rate = (("hold", "持有", "holding_share") if holding
                              else ("take up", "办理", "monthly_take_up"))
    return Reason(
        code="popular_in_life_stage",
        text_en=f"Customers in the '{stage.name_en}' stage {verb_en} {product.name_en} "
                f"{lift:.1f} times as often as customers overall",
        text_zh=f"处于“{stage.name_zh}”阶段的客户{verb_zh}{product.name_zh}的比例是全体客户的"
                f"{lift:.1f}倍",
        evidence={"life_stage": stage.id, f"{rate}_stage": round(stage_rate, 6),
                  f"{rate}_overall": round(overall_rate, 6)},
    )


def popular_overall_reason(product: Product, overall_rate: float,
                           holding: bool = False) -> Reason:
    """Non-personalised: the customer did not consent to profiling."""
    if holding:
        return Reason(
            code="popular_overall",
            text_en=f"One of the bank's most held products ({_percent(overall_rate)} of "
                    "customers hold it); not personalised, as you did not consent to profiling",
            text_zh=f"本行持有人数最多的产品之一（{_percent(overall_rate)}的客户持有）；"
                    "因您未同意个性化分析，此推荐未使用您的个人信息",
            evidence={"holding_share_overall": round(overall_rate, 6), "personalised": False},
        )
    return Reason(
        code="popular_overall",
        text_en=f"One of the bank's most taken-up products ({_percent(overall_rate)} of "
                "customers a month); not personalised, as you did not consent to profiling",
        text_zh=f"本行最受欢迎的产品之一（每月{_percent(overall_rate)}的客户办理）；"
                "因您未同意个性化分析，此推荐未使用您的个人信息",
        evidence={"monthly_take_up_overall": round(overall_rate, 6), "personalised": False},
    )


def take_up_reason(product: Product, stage: LifeStage, stage_rate: float,
                   holding: bool = False) -> Reason:
    """Fallback that always holds: how often customers of this stage take the product up
    (``holding``: hold it, when one snapshot shows no take-up)."""
    if holding:
        return Reason(
            code="holding_share",
            text_en=f"{_percent(stage_rate)} of customers in the '{stage.name_en}' stage hold "
                    f"{product.name_en}",
            text_zh=f"{_percent(stage_rate)}的“{stage.name_zh}”阶段客户持有{product.name_zh}",
            evidence={"life_stage": stage.id, "holding_share_stage": round(stage_rate, 6)},
        )
    return Reason(
        code="take_up_rate",
        text_en=f"{_percent(stage_rate)} of customers in the '{stage.name_en}' stage take up "
                f"{product.name_en} each month",
        text_zh=f"每月有{_percent(stage_rate)}的“{stage.name_zh}”阶段客户办理{product.name_zh}",
        evidence={"life_stage": stage.id, "monthly_take_up_stage": round(stage_rate, 6)},
    )


def next_product_reason(product: Product, probability: float) -> Reason:
    """The acquisition ranker's estimate, in words."""
    percent = _percent(probability)
    return Reason(
        code="likely_next_product",
        text_en=f"Among customers whose products and profile resemble yours, "
                f"{percent} of what they take up next is {product.name_en}",
        text_zh=f"与您的产品组合和客户特征相似的客户，下一步办理的产品中{percent}是{product.name_zh}",
        evidence={"probability": round(probability, 6)},
    )


def look_alike_reason(product: Product, probability: float) -> Reason:
    """The propensity-to-own model's estimate (one snapshot): customers like this one hold
    the product; nothing is said about taking it up."""
    percent = _percent(probability)
    return Reason(
        code="customers_like_you_hold",
        text_en=f"Customers like you hold {product.name_en}: {percent} of customers whose "
                "products and profile resemble yours hold it",
        text_zh=f"与您相似的客户持有{product.name_zh}：产品组合和客户特征与您相似的客户中，"
                f"{percent}持有该产品",
        evidence={"probability_of_holding": round(probability, 6)},
    )


def recently_held_reason(product: Product) -> Reason:
    """The customer closed this product last month: a win-back."""
    return Reason(
        code="recently_held",
        text_en=f"You held {product.name_en} until last month",
        text_zh=f"您上个月之前一直持有{product.name_zh}",
        evidence={"held_until_last_month": True},
    )


def suitability_reason(product: Product, customer_grade: str) -> Reason:
    """The product's risk is within the customer's assessed risk tolerance."""
    return Reason(
        code="suitability",
        text_en=f"Risk {product.risk_grade} is within your risk tolerance {customer_grade}",
        text_zh=f"产品风险等级{product.risk_grade}在您的风险承受能力{customer_grade}范围内",
        evidence={"product_risk": product.risk_grade, "customer_risk": customer_grade},
    )
