"""The decision policy's configuration (TOML), strict: unknown keys and bad values are refused."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.tomlfiles import toml_document, toml_text
from ..exceptions import ConfigError
from .adaptive import AdaptiveSettings
from .experiment import ExperimentSettings

DEFAULT_POLICY = "policy.toml"
CHANNELS = ("branch", "mobile", "call_center", "email")
_SECTIONS = {
    "suitability": {"risk_assessment_valid_days", "investment_categories", "credit_categories"},
    "contact": {"decline_cooldown_days", "max_unanswered_shows", "unanswered_window_days",
                "daily_caps"},
    "arbitration": {"contact_cost", "default_channel", "business_levers", "channel", "intent"},
}
_ACTION_KEYS = {"id", "name_en", "name_zh", "text_en", "text_zh"}


@dataclass(frozen=True)
class ServiceAction:
    """A mandatory service step offered instead of (or before) sales offers."""

    id: str
    name_en: str
    name_zh: str
    text_en: str
    text_zh: str

    def to_dict(self, lang: str = "en") -> dict[str, str]:
        return {"id": self.id, "kind": "service_action",
                "name": self.name_zh if lang == "zh" else self.name_en,
                "text": self.text_zh if lang == "zh" else self.text_en,
                "name_en": self.name_en, "name_zh": self.name_zh,
                "text_en": self.text_en, "text_zh": self.text_zh}


@dataclass(frozen=True)
class PolicyConfig:
    version: str
    text: str = field(repr=False)
    risk_assessment_valid_days: int = 365
    investment_categories: tuple[str, ...] = ("wealth", "investment")
    credit_categories: tuple[str, ...] = ("credit",)
    decline_cooldown_days: int = 90
    max_unanswered_shows: int = 3
    unanswered_window_days: int = 60
    daily_caps: dict[str, int] = field(default_factory=dict)
    contact_cost: float = 0.002
    default_channel: str = "branch"
    business_levers: dict[str, float] = field(default_factory=dict)
    channel_weights: dict[str, dict[str, float]] = field(default_factory=dict)
    intent_weights: dict[str, dict[str, float]] = field(default_factory=dict)
    service_actions: dict[str, ServiceAction] = field(default_factory=dict)
    adaptive: AdaptiveSettings | None = None  # None: the offline propensity as it is
    experiment: ExperimentSettings | None = None

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def intents(self) -> tuple[str, ...]:
        return tuple(self.intent_weights)

    @property
    def history_days(self) -> int:
        """How far back the contact rules read recorded responses (cooldown, unanswered)."""
        return max(self.decline_cooldown_days, self.unanswered_window_days, 1)

    def cap(self, channel: str) -> int:
        return self.daily_caps.get(channel, 10**9)


def _number(value: Any, where: str, minimum: float = 0.0, integer: bool = False) -> Any:
    kinds = int if integer else (int, float)
    if (isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value)
            or value < minimum):
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{where} must be {kind} >= {minimum}, got {value!r}")
    return value


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table, got {value!r}")
    return value


def _names(value: Any, where: str) -> tuple[str, ...]:
    """A list of names; a bare string would silently become a list of letters."""
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of names, got {value!r}")
    return tuple(value)


def _weights(table: Any, where: str) -> dict[str, float]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table of name = weight")
    return {str(k): float(_number(v, f"{where}.{k}")) for k, v in table.items()}


def parse_policy(text: str, source: str = "<string>") -> PolicyConfig:
    """Policy from TOML text; errors name the source and the key."""
    doc = toml_document(text, source, ConfigError,
                        {"version", "service_action", "adaptive", "experiment", *_SECTIONS})
    values: dict[str, Any] = {}
    for section, keys in _SECTIONS.items():
        table = doc.get(section, {})
        unknown = sorted(set(table) - keys)
        if unknown:
            raise ConfigError(f"{source}: [{section}] has unknown keys {unknown}; "
                              f"allowed: {sorted(keys)}")
        values.update({f"{section}.{k}": v for k, v in table.items()})
    where = f"{source}:"
    caps = _table(values.get("contact.daily_caps", {}), f"{where} [contact.daily_caps]")
    bad_channels = sorted(set(caps) - set(CHANNELS))
    if bad_channels:
        raise ConfigError(f"{where} [contact.daily_caps] names unknown channels {bad_channels}; "
                          f"channels are {list(CHANNELS)}")
    channel_weights = {str(c): _weights(t, f"{where} [arbitration.channel.{c}]")
                       for c, t in _table(values.get("arbitration.channel", {}),
                                          f"{where} [arbitration.channel]").items()}
    if set(channel_weights) - set(CHANNELS):
        raise ConfigError(f"{where} [arbitration.channel] names unknown channels "
                          f"{sorted(set(channel_weights) - set(CHANNELS))}")
    default_channel = values.get("arbitration.default_channel", "branch")
    if default_channel not in CHANNELS:
        raise ConfigError(f"{where} arbitration.default_channel {default_channel!r} is not one of "
                          f"{list(CHANNELS)}")
    actions = {}
    intents = _table(values.get("arbitration.intent", {}), f"{where} [arbitration.intent]")
    for i, table in enumerate(doc.get("service_action", [])):
        missing, unknown = _ACTION_KEYS - set(table), set(table) - _ACTION_KEYS
        if missing or unknown:
            raise ConfigError(f"{where} service_action #{i + 1}: missing {sorted(missing)}, "
                              f"unknown {sorted(unknown)}")
        if table["id"] in actions:
            raise ConfigError(f"{where} service_action {table['id']!r} is defined twice")
        actions[table["id"]] = ServiceAction(**{k: str(table[k]) for k in _ACTION_KEYS})
    for required in ("resolve_complaint", "update_risk_assessment"):
        if required not in actions:
            raise ConfigError(f"{where} the service action {required!r} must be defined")
    return PolicyConfig(
        version=str(doc.get("version", "unversioned")), text=text,
        risk_assessment_valid_days=_number(values.get(
            "suitability.risk_assessment_valid_days", 365), f"{where} risk_assessment_valid_days",
            1, integer=True),
        investment_categories=_names(values.get("suitability.investment_categories",
                                                ("wealth", "investment")),
                                     f"{where} investment_categories"),
        credit_categories=_names(values.get("suitability.credit_categories", ("credit",)),
                                 f"{where} credit_categories"),
        decline_cooldown_days=_number(values.get("contact.decline_cooldown_days", 90),
                                      f"{where} decline_cooldown_days", 0, integer=True),
        max_unanswered_shows=_number(values.get("contact.max_unanswered_shows", 3),
                                     f"{where} max_unanswered_shows", 1, integer=True),
        unanswered_window_days=_number(values.get("contact.unanswered_window_days", 60),
                                       f"{where} unanswered_window_days", 1, integer=True),
        daily_caps={c: _number(v, f"{where} daily_caps.{c}", 0, integer=True)
                    for c, v in caps.items()},
        contact_cost=float(_number(values.get("arbitration.contact_cost", 0.002),
                                   f"{where} contact_cost")),
        default_channel=default_channel,
        business_levers=_weights(values.get("arbitration.business_levers", {}),
                                 f"{where} [arbitration.business_levers]"),
        channel_weights=channel_weights,
        intent_weights={str(i): _weights(t, f"{where} [arbitration.intent.{i}]")
                        for i, t in intents.items()},
        service_actions=actions,
        adaptive=(AdaptiveSettings.from_table(_table(doc["adaptive"], f"{where} [adaptive]"),
                                              where) if "adaptive" in doc else None),
        experiment=(ExperimentSettings.from_table(
            _table(doc["experiment"], f"{where} [experiment]"), where)
            if "experiment" in doc else None),
    )


def load_policy(path: str | Path | None = None) -> PolicyConfig:
    """Load a policy file, or the packaged demo-bank policy when ``path`` is None."""
    return parse_policy(*toml_text(path, DEFAULT_POLICY, ConfigError, "policy"))
