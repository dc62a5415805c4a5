"""A bank's description of its own extracts (``bank.toml`` in the data folder, optional).

Only ``customer_id`` and the holdings are required. ``[defaults]`` gives the value of each
optional customer column the extract does not have (else the conservative default of
``DEFAULTS``); ``[features]`` declares the type of the bank's further columns
(``numeric``, ``category`` or ``ignore``) where inference would guess wrong::

    [defaults]
    risk_grade = "C2"
    consent_profiling = false

    [features]
    branch_code = "category"     # digits, but a code, not a quantity
    balance = "numeric"
    free_text_notes = "ignore"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import ConfigError
from . import columns as C
from .tomlfiles import toml_document

BANK_FILE = "bank.toml"
FEATURE_TYPES = ("numeric", "category", "ignore")
# The value of each optional column a customers extract may leave out, and what that means.
DEFAULTS: dict[str, Any] = {
    C.MARITAL_STATUS: "unknown",
    C.DEPENDANTS: 0,
    C.SEGMENT: "unknown",
    C.RISK_GRADE: "C1",  # the lowest: only products of the lowest risk grade are suitable
    C.RESIDENCY: "resident",
    C.CONSENT_PROFILING: True,
}
_ALLOWED = {C.MARITAL_STATUS: C.MARITAL_STATUSES, C.RISK_GRADE: C.RISK_GRADES,
            C.RESIDENCY: C.RESIDENCIES}


@dataclass(frozen=True)
class BankConfig:
    """Defaults of absent customer columns and declared feature types."""

    defaults: dict[str, Any] = field(default_factory=lambda: dict(DEFAULTS))
    features: dict[str, str] = field(default_factory=dict)
    source: str = "<defaults>"

    def default(self, column: str) -> Any:
        return self.defaults[column]


def parse_bank_config(text: str, source: str) -> BankConfig:
    document = toml_document(text, source, ConfigError, {"defaults", "features"})
    defaults = dict(DEFAULTS)
    given = document.get("defaults", {})
    if not isinstance(given, dict):
        raise ConfigError(f"{source}: [defaults] must be a table")
    for key, value in given.items():
        where = f"{source} [defaults] {key}"
        if key not in DEFAULTS:
            raise ConfigError(f"{where}: not a column with a default; allowed: "
                              f"{sorted(DEFAULTS)}")
        if key in _ALLOWED and value not in _ALLOWED[key]:
            raise ConfigError(f"{where}: must be one of {list(_ALLOWED[key])}, got {value!r}")
        if key == C.CONSENT_PROFILING and not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false, got {value!r}")
        if key == C.DEPENDANTS and (isinstance(value, bool) or not isinstance(value, int)
                                    or not 0 <= value <= 30):
            raise ConfigError(f"{where}: must be a whole number 0-30, got {value!r}")
        if key == C.SEGMENT and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"{where}: must be a non-empty text, got {value!r}")
        defaults[key] = value
    features = document.get("features", {})
    if not isinstance(features, dict):
        raise ConfigError(f"{source}: [features] must be a table")
    for key, value in features.items():
        if value not in FEATURE_TYPES:
            raise ConfigError(f"{source} [features] {key}: must be one of "
                              f"{list(FEATURE_TYPES)}, got {value!r}")
        if key in C.PROTECTED and value != "ignore":
            raise ConfigError(f"{source} [features] {key}: a protected attribute is kept for "
                              "audits only and is never a model feature")
    return BankConfig(defaults=defaults, features=dict(features), source=source)


def load_bank_config(data_dir: str | Path) -> BankConfig:
    """``<data_dir>/bank.toml`` when there is one, else the defaults."""
    path = Path(data_dir) / BANK_FILE
    if not path.is_file():
        return BankConfig()
    return parse_bank_config(path.read_text(encoding="utf-8"), str(path))
