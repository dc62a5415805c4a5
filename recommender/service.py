"""The offer service: one trained model plus the current customer book, answering requests.

The HTTP layer and the CLI call these methods and only format what they return.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import artifacts
from . import columns as C
from .book import CustomerBook, profile_batch
from .data import load_bank
from .offers import MAX_OFFERS, OfferEngine

log = logging.getLogger(__name__)

LANGUAGES = ("en", "zh")
_PROFILE_FIELDS = (C.AGE, C.INCOME, C.MARITAL_STATUS, C.DEPENDANTS, C.TENURE_MONTHS, C.SEGMENT,
                   C.RISK_GRADE, C.RESIDENCY, C.CONSENT_PROFILING)


@dataclass
class OfferService:
    engine: OfferEngine
    book: CustomerBook

    @property
    def catalog(self):
        return self.engine.catalog

    @property
    def stages(self):
        return self.engine.stages

    def offers(self, customer_id: str, limit: int = 5, lang: str = "en") -> dict[str, Any]:
        """Ranked offers with reasons for a customer of the book (UnknownCustomerError if not)."""
        batch = self.book.batch(np.array([self.book.position(customer_id)]))
        result = self.engine.offers(batch, limit)[0].to_dict(lang)
        result["model_version"] = self.engine.model.version
        return result

    def offers_for_profile(self, profile: dict[str, Any], holdings: list[str], limit: int = 5,
                           lang: str = "en") -> dict[str, Any]:
        """Offers for a customer described in the request (validated like the extract)."""
        batch = profile_batch(profile, holdings, self.catalog, self.stages)
        result = self.engine.offers(batch, limit)[0].to_dict(lang)
        result["model_version"] = self.engine.model.version
        return result

    def profile(self, customer_id: str, lang: str = "en") -> dict[str, Any]:
        """Life stage, holdings and the attributes the rules use (never the protected ones)."""
        position = self.book.position(customer_id)
        row = self.book.profiles.iloc[position]
        stage = self.stages.stages[int(self.book.stage_codes[position])]
        attributes = {f: _plain(row[f]) for f in _PROFILE_FIELDS}
        if C.RISK_ASSESSED_ON in row.index:
            attributes[C.RISK_ASSESSED_ON] = str(row[C.RISK_ASSESSED_ON].date())
        holdings = [{"product_id": pid, "name": self.catalog[pid].name(lang)}
                    for pid in self.book.held_product_ids(position)]
        return {
            "customer_id": customer_id,
            "life_stage": {"id": stage.id, "name": stage.name(lang), "name_en": stage.name_en,
                           "name_zh": stage.name_zh},
            **attributes,
            "holdings": holdings,
            "as_of": str(self.book.snapshot.date()) if self.book.snapshot is not None else None,
        }

    def products(self, lang: str = "en") -> list[dict[str, Any]]:
        return [{
            "product_id": p.id, "name": p.name(lang), "name_en": p.name_en, "name_zh": p.name_zh,
            "category": p.category, "risk_grade": p.risk_grade, "value_weight": p.value_weight,
            "eligibility": {"min_age": p.min_age, "max_age": p.max_age,
                            "min_income": p.min_income, "residency": list(p.residency)},
            "prerequisites": list(p.prerequisites), "life_stages": list(p.life_stages),
            "talking_points": list(p.talking_points(lang)),
        } for p in self.catalog.products]

    def life_stages(self, lang: str = "en") -> list[dict[str, Any]]:
        counts = np.bincount(self.book.stage_codes, minlength=len(self.stages.stages))
        return [{
            "id": s.id, "name": s.name(lang), "name_en": s.name_en, "name_zh": s.name_zh,
            "description": s.description(lang), "rules": dict(s.when),
            "bundle": self.catalog.bundle(s.id), "customers": int(counts[i]),
        } for i, s in enumerate(self.stages.stages)]

    def model_info(self) -> dict[str, Any]:
        manifest = self.engine.model.manifest
        return {key: manifest.get(key) for key in ("version", "created_at", "data", "metrics")}


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def load_service(data_dir: str | Path, models_dir: str | Path,
                 version: str = artifacts.CURRENT) -> OfferService:
    """Load the model version and the bank's current extracts, validated with its catalog."""
    model = artifacts.load(models_dir, version)
    bank = load_bank(data_dir, model.catalog)
    book = CustomerBook(bank, model.catalog, model.stages, model.config.cf.weighting,
                        model.config.acquisition.n_lags)
    log.info("serving model %s for %d customers", model.version, len(book))
    return OfferService(engine=OfferEngine(model), book=book)


__all__ = ["LANGUAGES", "MAX_OFFERS", "OfferService", "load_service"]
