"""Life stages ("Ideal Home" style): transparent, ordered rules over customer attributes.

A life stage is a feature, a cold-start prior and a reporting dimension. Rules use only
age, income, marital status, dependants, tenure and segment: protected attributes such as
gender are refused as conditions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..exceptions import ConfigError
from . import columns as C
from .ids import IdMap
from .tomlfiles import duplicated, toml_document, toml_text

DEFAULT_RULES = "life_stages.toml"

# condition key -> (column, how it is compared)
_CONDITIONS = {
    "age_min": (C.AGE, "ge"), "age_max": (C.AGE, "le"),
    "income_min": (C.INCOME, "ge"), "income_max": (C.INCOME, "le"),
    "dependants_min": (C.DEPENDANTS, "ge"), "dependants_max": (C.DEPENDANTS, "le"),
    "tenure_min": (C.TENURE_MONTHS, "ge"), "tenure_max": (C.TENURE_MONTHS, "le"),
    "marital_status": (C.MARITAL_STATUS, "in"), "segment": (C.SEGMENT, "in"),
}
_STAGE_KEYS = {"id", "name_en", "name_zh", "description_en", "description_zh", "when"}


@dataclass(frozen=True)
class LifeStage:
    id: str
    name_en: str
    name_zh: str
    description_en: str = ""
    description_zh: str = ""
    when: tuple[tuple[str, object], ...] = ()

    def name(self, lang: str) -> str:
        return self.name_zh if lang == "zh" else self.name_en

    def description(self, lang: str) -> str:
        return self.description_zh if lang == "zh" else self.description_en

    def matches(self, customers: pd.DataFrame) -> np.ndarray:
        """Boolean mask of the customers for whom every condition of this stage holds."""
        mask = np.ones(len(customers), dtype=bool)
        for key, bound in self.when:
            column, how = _CONDITIONS[key]
            values = customers[column].to_numpy()
            if how == "ge":
                mask &= values >= bound
            elif how == "le":
                mask &= values <= bound
            else:
                mask &= np.isin(values.astype(str), list(bound))
        return mask


@dataclass(frozen=True)
class LifeStageRules:
    """Ordered stages; the first match wins and the last stage catches everyone."""

    stages: tuple[LifeStage, ...]
    version: str = "unversioned"
    source: str = "<memory>"
    ids: IdMap = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", IdMap([s.id for s in self.stages], "life_stage"))
        if not self.stages:
            raise ConfigError(f"{self.source}: no [[stage]] entries")
        if self.stages[-1].when:
            raise ConfigError(
                f"{self.source}: the last stage {self.stages[-1].id!r} must have no conditions"
                " so that every customer gets a stage"
            )

    def __getitem__(self, stage_id: str) -> LifeStage:
        return self.stages[self.ids.position(stage_id)]

    def assign(self, customers: pd.DataFrame) -> np.ndarray:
        """Stage position (int16) of every customer, vectorised over the whole table."""
        codes = np.full(len(customers), -1, dtype=np.int16)
        for position, stage in enumerate(self.stages):
            unassigned = codes < 0
            codes[unassigned & stage.matches(customers)] = position
        return codes

    def assign_ids(self, customers: pd.DataFrame) -> np.ndarray:
        """Stage id of every customer."""
        return self.ids.to_external(self.assign(customers))


def _stage_from_table(table: dict, position: int, source: str) -> LifeStage:
    where = f"{source}: stage #{position + 1} ({table.get('id', 'no id')!r})"
    unknown = sorted(set(table) - _STAGE_KEYS)
    if unknown:
        raise ConfigError(f"{where} has unknown keys {unknown}")
    for key in ("id", "name_en"):
        if not isinstance(table.get(key), str) or not table[key]:
            raise ConfigError(f"{where} needs a non-empty string {key!r}")
    for key in ("name_zh", "description_en", "description_zh"):
        if key in table and not isinstance(table[key], str):
            raise ConfigError(f"{where}: {key} must be a string, got {table[key]!r}")
    if table.get("name_zh") == "":
        raise ConfigError(f"{where}: name_zh must not be empty; leave it out to use name_en")
    conditions = []
    for key, bound in table.get("when", {}).items():
        if key not in _CONDITIONS:
            raise ConfigError(
                f"{where}: unknown condition {key!r}; allowed: {sorted(_CONDITIONS)}"
                " (protected attributes such as gender cannot be used)"
            )
        if _CONDITIONS[key][1] == "in":
            if not isinstance(bound, list) or not bound:
                raise ConfigError(f"{where}: {key} must be a non-empty list")
            bound = tuple(str(b) for b in bound)
        elif isinstance(bound, bool) or not isinstance(bound, int | float):
            raise ConfigError(f"{where}: {key} must be a number, got {bound!r}")
        conditions.append((key, bound))
    description_en = table.get("description_en", "")
    return LifeStage(  # Chinese wording, when absent, is the English one
        id=table["id"], name_en=table["name_en"], name_zh=table.get("name_zh", table["name_en"]),
        description_en=description_en, description_zh=table.get("description_zh", description_en),
        when=tuple(conditions),
    )


def parse_life_stages(text: str, source: str = "<string>") -> LifeStageRules:
    """Rules from TOML text; errors name the source, the stage and the key.

    A stage needs ``id`` and ``name_en``; ``name_zh`` defaults to ``name_en``, the
    descriptions to ``""`` (Chinese to the English one) and ``when`` to no condition."""
    document = toml_document(text, source, ConfigError, {"version", "stage"})
    stages = tuple(_stage_from_table(t, i, source) for i, t in enumerate(document.get("stage", [])))
    dupes = duplicated([s.id for s in stages])
    if dupes:
        raise ConfigError(f"{source}: duplicate stage ids {dupes}")
    version = str(document.get("version", "unversioned"))
    return LifeStageRules(stages, version=version, source=source)


def life_stages_text(path: str | Path | None = None) -> tuple[str, str]:
    """(TOML text, source name) of a rules file, or of the packaged default."""
    return toml_text(path, DEFAULT_RULES, ConfigError, "life-stage rules")


def load_life_stages(path: str | Path | None = None) -> LifeStageRules:
    """Load life-stage rules (TOML), or the packaged defaults when ``path`` is None."""
    return parse_life_stages(*life_stages_text(path))
