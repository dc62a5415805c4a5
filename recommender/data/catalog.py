"""The product catalog: what the bank sells, to whom it may be offered, and how to talk about it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from ..exceptions import CatalogError
from .columns import PRODUCT_RISK_GRADES, RESIDENCIES
from .ids import IdMap
from .tomlfiles import duplicated, toml_document, toml_text

log = logging.getLogger(__name__)

DEFAULT_CATALOG = "catalog.toml"

# What the rules cannot do without: the category decides which suitability rules apply
# (investment, credit) and has no safe default, so it stays required with the id and name.
_REQUIRED = ("id", "name_en", "category")
# An ungraded product is treated as the riskiest (R5): it is offered only to customers whose
# risk tolerance is the highest (C5), never to someone it might not suit.
DEFAULT_RISK_GRADE = PRODUCT_RISK_GRADES[-1]
# Every product worth the same to the bank: no product is favoured for its value.
DEFAULT_VALUE_WEIGHT = 1.0
NO_AGE_LIMIT = (0, 200)  # a product's age limits when its entry sets none
_OPTIONAL = {
    "risk_grade": DEFAULT_RISK_GRADE, "value_weight": DEFAULT_VALUE_WEIGHT,
    "min_age": NO_AGE_LIMIT[0], "max_age": NO_AGE_LIMIT[1], "min_income": 0.0,
    "residency": tuple(RESIDENCIES),
    "prerequisites": (), "exclusions": (), "life_stages": (), "talking_points_en": (),
}
# Chinese wording, when absent, is the English one (key -> the key it falls back to).
_FALLBACKS = {"name_zh": "name_en", "talking_points_zh": "talking_points_en"}


@dataclass(frozen=True)
class Product:
    """One product line of the catalog."""

    id: str
    name_en: str
    name_zh: str
    category: str
    risk_grade: str
    value_weight: float
    min_age: int = 0
    max_age: int = 200
    min_income: float = 0.0
    residency: tuple[str, ...] = tuple(RESIDENCIES)
    prerequisites: tuple[str, ...] = ()
    exclusions: tuple[str, ...] = ()
    life_stages: tuple[str, ...] = ()
    talking_points_en: tuple[str, ...] = ()
    talking_points_zh: tuple[str, ...] = ()

    def name(self, lang: str) -> str:
        return self.name_zh if lang == "zh" else self.name_en

    def talking_points(self, lang: str) -> tuple[str, ...]:
        return self.talking_points_zh if lang == "zh" else self.talking_points_en

    @property
    def risk_level(self) -> int:
        """Risk grade as a number, R1 -> 1 ... R5 -> 5."""
        return int(self.risk_grade[1])


@dataclass(frozen=True)
class Catalog:
    """All products, in catalog order, with the arrays the vectorised rules need."""

    products: tuple[Product, ...]
    version: str = "unversioned"
    source: str = "<memory>"
    ids: IdMap = field(init=False, repr=False, compare=False)
    _columns: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False,
                                            compare=False)
    _residencies: dict[tuple[str, ...], np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", IdMap([p.id for p in self.products], "product"))
        for product in self.products:
            for key in ("prerequisites", "exclusions"):
                unknown = [p for p in getattr(product, key) if p not in self.ids]
                if unknown:
                    raise CatalogError(
                        f"{self.source}: product {product.id!r} has unknown {key} {unknown}"
                    )
            if product.id in product.prerequisites:
                raise CatalogError(f"{self.source}: product {product.id!r} requires itself")

    def __len__(self) -> int:
        return len(self.products)

    def __getitem__(self, product_id: str) -> Product:
        return self.products[self.ids.position(product_id)]

    def column(self, name: str) -> np.ndarray:
        """One attribute of every product as an array in catalog order. Read-only, built once
        per attribute: a decision for one customer reads several, and building one costs
        more than using it."""
        column = self._columns.get(name)
        if column is None:
            column = np.array([getattr(p, name) for p in self.products])
            column.setflags(write=False)
            self._columns[name] = column
        return column

    def residency_matrix(self, residencies: tuple[str, ...]) -> np.ndarray:
        """Boolean (len(residencies) x n_products): the product accepts the residency.
        Read-only, built once per tuple of values (a book decodes one for all its customers)."""
        accepts = self._residencies.get(residencies)
        if accepts is None:
            accepts = np.array([[value in p.residency for p in self.products]
                                for value in residencies],
                               dtype=bool).reshape(len(residencies), len(self))
            accepts.setflags(write=False)
            self._residencies[residencies] = accepts
        return accepts

    def prerequisite_matrix(self) -> np.ndarray:
        """Boolean (n_products x n_products): ``[i, j]`` is True when ``j`` requires ``i``.
        Read-only, built once: every decision reads it."""
        return self._matrices[0]

    def exclusion_matrix(self) -> np.ndarray:
        """Boolean (n_products x n_products): holding ``i`` excludes ``j`` (made symmetric).
        Read-only, built once."""
        return self._matrices[1]

    @cached_property
    def _matrices(self) -> tuple[np.ndarray, np.ndarray]:
        requires = np.zeros((len(self), len(self)), dtype=bool)
        excludes = np.zeros((len(self), len(self)), dtype=bool)
        for j, product in enumerate(self.products):
            requires[self.ids.to_internal(list(product.prerequisites)), j] = True
            excludes[self.ids.to_internal(list(product.exclusions)), j] = True
        excludes = excludes | excludes.T
        for matrix in (requires, excludes):
            matrix.setflags(write=False)
        return requires, excludes

    def bundle(self, stage_id: str) -> list[str]:
        """Product ids in the life-stage bundle, in catalog order."""
        return [p.id for p in self.products if stage_id in p.life_stages]

    def check_life_stages(self, stage_ids: list[str]) -> None:
        """Every bundle must name a defined life stage."""
        for product in self.products:
            unknown = sorted(set(product.life_stages) - set(stage_ids))
            if unknown:
                raise CatalogError(
                    f"{self.source}: product {product.id!r} names unknown life stages {unknown};"
                    f" defined stages are {sorted(stage_ids)}"
                )


def _product_from_table(table: dict, position: int, source: str) -> Product:
    where = f"{source}: product #{position + 1} ({table.get('id', 'no id')!r})"
    missing = [key for key in _REQUIRED if key not in table]
    if missing:
        raise CatalogError(f"{where} is missing required keys {missing}")
    unknown = sorted(set(table) - set(_REQUIRED) - set(_OPTIONAL) - set(_FALLBACKS))
    if unknown:
        raise CatalogError(f"{where} has unknown keys {unknown}")
    for key in ("id", "name_en", "name_zh", "category"):
        if key in table and (not isinstance(table[key], str) or not table[key].strip()):
            raise CatalogError(f"{where}: {key} must be a non-empty string, got {table[key]!r}")
    values = {**_OPTIONAL, **table}
    for key, fallback in _FALLBACKS.items():
        values.setdefault(key, values[fallback])
    if values["risk_grade"] not in PRODUCT_RISK_GRADES:
        raise CatalogError(
            f"{where}: risk_grade {values['risk_grade']!r} is not one of {PRODUCT_RISK_GRADES}"
        )
    for key in ("value_weight", "min_age", "max_age", "min_income"):
        if isinstance(values[key], bool) or not isinstance(values[key], int | float):
            raise CatalogError(f"{where}: {key} must be a number, got {values[key]!r}")
        if values[key] < 0:
            raise CatalogError(f"{where}: {key} must not be negative, got {values[key]!r}")
    if values["min_age"] > values["max_age"]:
        raise CatalogError(
            f"{where}: min_age {values['min_age']} exceeds max_age {values['max_age']}"
        )
    bad_residency = sorted(set(values["residency"]) - set(RESIDENCIES))
    if bad_residency:
        raise CatalogError(f"{where}: residency {bad_residency} not in {RESIDENCIES}")
    for key in ("residency", "prerequisites", "exclusions", "life_stages", "talking_points_en",
                "talking_points_zh"):
        if not isinstance(values[key], list | tuple):
            raise CatalogError(f"{where}: {key} must be a list, got {values[key]!r}")
        values[key] = tuple(str(v) for v in values[key])
    return Product(**{k: values[k] for k in Product.__dataclass_fields__})


def parse_catalog(text: str, source: str = "<string>") -> Catalog:
    """Catalog from TOML text; errors name the source, the product and the key.

    Only ``id``, ``name_en`` and ``category`` are required; the other keys have the defaults
    above (an ungraded product is R5, logged as a warning so that it is not missed)."""
    document = toml_document(text, source, CatalogError, {"version", "currency", "product"})
    tables = document.get("product", [])
    if not tables:
        raise CatalogError(f"{source}: no [[product]] entries")
    products = tuple(_product_from_table(t, i, source) for i, t in enumerate(tables))
    dupes = duplicated([p.id for p in products])
    if dupes:
        raise CatalogError(f"{source}: duplicate product ids {dupes}")
    ungraded = [t["id"] for t in tables if "risk_grade" not in t]
    if ungraded:
        log.warning("%s: no risk_grade for %s: treated as %s, offered only to customers of the"
                    " highest risk tolerance", source, ungraded, DEFAULT_RISK_GRADE)
    return Catalog(products, version=str(document.get("version", "unversioned")), source=source)


def catalog_text(path: str | Path | None = None) -> tuple[str, str]:
    """(TOML text, source name) of a catalog file, or of the packaged default."""
    return toml_text(path, DEFAULT_CATALOG, CatalogError, "catalog")


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load a catalog file (TOML), or the packaged demo-bank catalog when ``path`` is None."""
    return parse_catalog(*catalog_text(path))


UNCLASSIFIED = "unclassified"  # the category a drafted catalog gives every product
_DRAFT_HEADER = """\
# Starting catalog drafted by `nbo init-catalog` from the products in {source}.
# EDIT BEFORE USE. Every product below has placeholder values, chosen to be safe, not right:
#   name_en      the product id; set the name staff and customers see (name_zh, when left
#                out, is name_en)
#   category     "{unclassified}": until you set one, both category rules apply (an up-to-date
#                risk assessment is needed, and it is never offered to vulnerable customers);
#                set the categories your policy names ("investment"/"wealth", "credit", ...)
#   risk_grade   "{risk}", the highest: offered only to customers of risk tolerance C5
#   value_weight {value}: every product worth the same to the bank
#   min_age, max_age, min_income, residency: no eligibility limit; set the bank's rules
# Optional keys: prerequisites, exclusions (product ids), life_stages (bundles),
# talking_points_en / talking_points_zh. See the README, "Data formats".
version = "draft"
"""


def _toml_string(value: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's (quotes, backslashes, controls)."""
    return json.dumps(value, ensure_ascii=False)


def draft_catalog_text(product_ids: Iterable[str], source: str = "the holdings") -> str:
    """A starting catalog (TOML) for a bank to edit: one product per id, sorted, with the
    required keys and the conservative defaults written out. It parses with ``parse_catalog``
    as it is, so that a first model can be trained before the bank has finished editing."""
    ids = sorted({str(i) for i in product_ids})
    if not ids:
        raise CatalogError(f"no product ids in {source}: nothing to draft a catalog from")
    residency = "[" + ", ".join(_toml_string(r) for r in RESIDENCIES) + "]"
    parts = [_DRAFT_HEADER.format(source=" ".join(source.split()), unclassified=UNCLASSIFIED,
                                  risk=DEFAULT_RISK_GRADE, value=DEFAULT_VALUE_WEIGHT)]
    for product_id in ids:
        parts.append(
            f"\n[[product]]\nid = {_toml_string(product_id)}\n"
            f"name_en = {_toml_string(product_id)}\n"
            f"category = {_toml_string(UNCLASSIFIED)}\n"
            f"risk_grade = {_toml_string(DEFAULT_RISK_GRADE)}\n"
            f"value_weight = {DEFAULT_VALUE_WEIGHT}\n"
            f"min_age = {_OPTIONAL['min_age']}\nmax_age = {_OPTIONAL['max_age']}\n"
            f"min_income = {_OPTIONAL['min_income']}\nresidency = {residency}\n"
        )
    return "".join(parts)
