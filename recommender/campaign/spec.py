"""A campaign as its team writes it down: products, quotas and limits, loaded from TOML and
checked against the catalog, policy and life stages before any customer is read."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..data.tomlfiles import toml_document, toml_text
from ..exceptions import ConfigError
from ..policy.config import CHANNELS
from ..policy.offers import OfferEngine

_SPEC_KEYS = {"name", "channel", "intent", "products", "quotas", "max_offers_per_customer",
              "min_propensity", "contact_window_days", "exclude_life_stages",
              "exclude_customers"}


@dataclass(frozen=True)
class CampaignSpec:
    name: str
    channel: str
    products: tuple[str, ...]
    quotas: dict[str, int]
    max_offers_per_customer: int = 1
    min_propensity: float = 0.0
    contact_window_days: int = 0
    exclude_life_stages: tuple[str, ...] = ()
    exclude_customers: str | None = None
    intent: str | None = None
    source: str = field(default="<memory>", compare=False)

    @classmethod
    def from_toml(cls, path: str | Path) -> CampaignSpec:
        text, source = toml_text(path, "", ConfigError, "campaign spec")
        values = toml_document(text, source, ConfigError)
        unknown = sorted(set(values) - _SPEC_KEYS)
        if unknown:
            raise ConfigError(f"{path}: unknown keys {unknown}; allowed: {sorted(_SPEC_KEYS)}")
        missing = [k for k in ("name", "channel", "products", "quotas") if k not in values]
        if missing:
            raise ConfigError(f"{path}: missing keys {missing}")
        return cls(**{**values, "products": tuple(values["products"]),
                      "exclude_life_stages": tuple(values.get("exclude_life_stages", ())),
                      "source": source})

    def check(self, engine: OfferEngine) -> None:
        """Refuse what the catalog, policy or stages do not know, naming the key."""
        where = self.source
        if self.channel not in CHANNELS:
            raise ConfigError(f"{where}: channel {self.channel!r} is not one of {list(CHANNELS)}")
        if self.intent is not None and self.intent not in engine.policy.intents:
            raise ConfigError(f"{where}: intent {self.intent!r} is not one of "
                              f"{list(engine.policy.intents)}")
        unknown = [p for p in self.products if p not in engine.catalog.ids]
        if unknown or not self.products:
            raise ConfigError(f"{where}: products {unknown or '[]'} are not in the catalog")
        if set(self.quotas) != set(self.products):
            raise ConfigError(f"{where}: [quotas] must name exactly the campaign products "
                              f"{list(self.products)}")
        for product, quota in self.quotas.items():
            if isinstance(quota, bool) or not isinstance(quota, int) or quota < 0:
                raise ConfigError(f"{where}: quotas.{product} must be a whole number >= 0")
        if not isinstance(self.max_offers_per_customer, int) or self.max_offers_per_customer < 1:
            raise ConfigError(f"{where}: max_offers_per_customer must be a whole number >= 1")
        stages = [s for s in self.exclude_life_stages if s not in engine.stages.ids]
        if stages:
            raise ConfigError(f"{where}: exclude_life_stages names unknown stages {stages}")
