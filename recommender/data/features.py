"""The bank's own customer columns as model features: their types, and their encoding.

A column is ``numeric`` (numbers as they are, missing stays missing) or ``category`` (a code
per value seen at training, fixed then: a value never seen, or none, is missing). A
``FeatureSchema`` is inferred from the extract or declared, fitted on the training customers
(which freezes the categories), stored with the model as plain values, and encodes any frame
of customers the same way, a frame without the column (a customer described in a request)
included.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..exceptions import DataValidationError
from . import columns as C
from .value_checks import date_column, fail_if

log = logging.getLogger(__name__)

KINDS = ("numeric", "category")
MAX_CATEGORIES = 200  # more distinct values than this is an identifier or free text


@dataclass(frozen=True)
class FeatureColumn:
    name: str
    kind: str  # "numeric" | "category"
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeatureSchema:
    """The bank's further columns, in a fixed order."""

    columns: tuple[FeatureColumn, ...] = field(default_factory=tuple)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def fit(self, frame: pd.DataFrame) -> FeatureSchema:
        """This schema with each category column's categories fixed to the values of
        ``frame`` (sorted): what a model trained on ``frame`` knows."""
        fitted = []
        for column in self.columns:
            if column.kind == "category":
                values = (frame[column.name].dropna().astype(str).unique()
                          if column.name in frame else [])
                column = FeatureColumn(column.name, "category", tuple(sorted(values)))
            fitted.append(column)
        return FeatureSchema(tuple(fitted))

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """(n x len(columns)) float32: numbers as they are, categories as their code among
        the fitted ones; missing, unseen or absent values are NaN."""
        out = np.full((len(frame), len(self.columns)), np.nan, dtype=np.float32)
        for j, column in enumerate(self.columns):
            if column.name not in frame:
                continue
            values = frame[column.name]
            if column.kind == "numeric":
                out[:, j] = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float32)
            else:
                codes = category_codes(values, column.categories)
                out[:, j] = np.where(codes >= 0, codes, np.nan)
        return out

    def to_state(self) -> dict[str, Any]:
        return {"columns": [{"name": c.name, "kind": c.kind, "categories": list(c.categories)}
                            for c in self.columns]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FeatureSchema:
        return cls(tuple(FeatureColumn(c["name"], c["kind"], tuple(c.get("categories", ())))
                         for c in state.get("columns", [])))


def category_codes(values: pd.Series, categories: tuple[str, ...]) -> np.ndarray:
    """The position of each value among ``categories``, -1 when missing or not among them.

    Values that arrive as numbers (a request's JSON number, a part of the extract whose
    column happened to hold only digits) match the category that reads as the same number,
    so ``3`` finds ``"3"`` rather than missing it as ``"3.0"``.
    """
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = pd.to_numeric(pd.Series(categories, dtype=object), errors="coerce")
        numbers = numbers[numbers.notna()].drop_duplicates()  # "3" and "03": the first
        if numbers.empty:
            return np.full(len(values), -1, dtype=np.int64)
        found = pd.Index(numbers.to_numpy(dtype=np.float64)).get_indexer(
            values.to_numpy(dtype=np.float64, na_value=np.nan))
        return np.where(found >= 0, numbers.index.to_numpy()[np.maximum(found, 0)], -1)
    text = values.astype("string").str.strip().fillna("\x00").astype(str)
    return pd.Index(categories, dtype=object).get_indexer(text)


def inferred_kind(all_numbers: bool, distinct: int, present: int) -> str | None:
    """The type of a column whose ``present`` non-empty values are all numbers, or hold
    ``distinct`` texts: None for one that identifies rows rather than describing them (more
    than ``MAX_CATEGORIES`` values, or a different value on nearly every row)."""
    if all_numbers:
        return "numeric"
    if distinct > MAX_CATEGORIES or (distinct > 50 and distinct >= 0.9 * present):
        return None
    return "category"


def extra_columns(frame: pd.DataFrame, known: Iterable[str], source: str,
                  declared: Mapping[str, str] | None = None, key_columns: Iterable[str] = (),
                  quiet: bool = False) -> tuple[pd.DataFrame, FeatureSchema]:
    """The columns of ``frame`` beyond ``known`` (and ``key_columns``), validated, and their
    schema: declared types first (``numeric`` / ``category`` / ``ignore``), else inferred.

    Inferred: a column whose non-empty values all read as numbers is numeric, any other a
    category. A category with more than ``MAX_CATEGORIES`` values, or a different value on
    nearly every row, identifies rows rather than describing them: it is left out, with a
    warning (none when ``quiet``: a part of an extract already read whole). Protected
    attributes (``columns.PROTECTED``) are never features.
    """
    declared = dict(declared or {})
    skip = set(known) | set(key_columns) | set(C.PROTECTED)
    values, schema = {}, []
    for name in frame.columns:
        if name in skip or declared.get(name) == "ignore":
            continue
        raw = frame[name]
        text = raw.astype("string").str.strip()
        present = text.notna() & (text != "")
        numbers = pd.to_numeric(raw.where(present.to_numpy(dtype=bool)), errors="coerce")
        kind = declared.get(name)
        if kind == "numeric":
            fail_if((numbers.isna() & present).to_numpy(dtype=bool),
                    "is not a number (declared numeric)", source, name)
        elif kind is None:
            all_numbers = not (numbers.isna() & present).any()
            distinct = 0 if all_numbers else text[present].nunique()
            kind = inferred_kind(all_numbers, distinct, int(present.sum()))
            if kind is None:
                if not quiet:
                    log.warning("%s: column %r has %d distinct values: an identifier or "
                                "free text, not a feature; left out (declare it in bank.toml "
                                "[features] to use it)", source, name, distinct)
                continue
        if kind == "numeric":
            values[name] = numbers.astype(np.float64).to_numpy()
        else:
            values[name] = text.where(present, None).astype(object).to_numpy()
        schema.append(FeatureColumn(name, kind))
    if schema and not quiet:
        log.info("%s: %d further columns used as features: %s", source, len(schema),
                 ", ".join(f"{c.name} ({c.kind})" for c in schema))
    return pd.DataFrame(values, index=frame.index), FeatureSchema(tuple(schema))


def validate_customer_features(frame: pd.DataFrame, customer_ids: pd.Index, source: str,
                               declared: Mapping[str, str] | None = None, quiet: bool = False
                               ) -> tuple[pd.DataFrame, FeatureSchema]:
    """The time-varying extract (``customer_id, snapshot_date, <columns>``), validated: known
    customers, dates, one row per customer and date; its columns typed as ``extra_columns``
    types them. Returned sorted by date, the customer as a categorical over ``customer_ids``."""
    missing = [c for c in (C.CUSTOMER_ID, C.SNAPSHOT_DATE) if c not in frame.columns]
    if missing:
        raise DataValidationError(f"missing required columns {missing}", source=source)
    frame = frame.reset_index(drop=True)
    codes = customer_ids.get_indexer(frame[C.CUSTOMER_ID].astype("string").str.strip()
                                     .astype(str))
    fail_if(codes < 0, "names a customer that is not in the customers extract", source,
            C.CUSTOMER_ID)
    dates = date_column(frame, C.SNAPSHOT_DATE, source)
    key = pd.DataFrame({"c": codes, "d": dates})
    fail_if(key.duplicated(keep="first").to_numpy(),
            "repeats a (customer_id, snapshot_date) pair", source, C.SNAPSHOT_DATE)
    values, schema = extra_columns(frame, (), source, declared,
                                   key_columns=(C.CUSTOMER_ID, C.SNAPSHOT_DATE), quiet=quiet)
    out = pd.concat([pd.DataFrame({
        C.CUSTOMER_ID: pd.Categorical.from_codes(codes.astype(np.int32), categories=customer_ids),
        C.SNAPSHOT_DATE: dates}), values], axis=1)
    return out.sort_values(C.SNAPSHOT_DATE, kind="stable").reset_index(drop=True), schema


def features_at(features: pd.DataFrame, n_customers: int, date: pd.Timestamp) -> pd.DataFrame:
    """One row per customer (in the customers' order): each time-varying column's value at
    the latest snapshot on or before ``date``; missing where the customer has none."""
    names = [c for c in features.columns if c not in (C.CUSTOMER_ID, C.SNAPSHOT_DATE)]
    known = features[features[C.SNAPSHOT_DATE] <= date]
    latest = known.drop_duplicates(C.CUSTOMER_ID, keep="last")  # sorted by date
    rows = latest[C.CUSTOMER_ID].cat.codes.to_numpy()
    out = {}
    for name in names:
        column = latest[name].to_numpy()
        numeric = pd.api.types.is_numeric_dtype(latest[name])
        full = np.full(n_customers, np.nan if numeric else None,
                       dtype=np.float64 if numeric else object)
        full[rows] = column
        out[name] = full
    return pd.DataFrame(out)
