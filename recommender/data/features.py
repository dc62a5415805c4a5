"""The bank's own customer columns as model features: their types, and their encoding.

A column is ``numeric`` (numbers as they are, missing stays missing) or ``category`` (a code
per value seen at training, fixed then: a value never seen, or none, is missing). A
``FeatureSchema`` is inferred from the extract or declared, fitted on the training customers
(which freezes the categories), stored with the model as plain values, and encodes any frame
of customers the same way, a frame without the column (a customer described in a request)
included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

KINDS = ("numeric", "category")


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
                codes = pd.Index(column.categories).get_indexer(values.astype("string")
                                                                .fillna("\x00").astype(str))
                out[:, j] = np.where(codes >= 0, codes, np.nan)
        return out

    def to_state(self) -> dict[str, Any]:
        return {"columns": [{"name": c.name, "kind": c.kind, "categories": list(c.categories)}
                            for c in self.columns]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FeatureSchema:
        return cls(tuple(FeatureColumn(c["name"], c["kind"], tuple(c.get("categories", ())))
                         for c in state.get("columns", [])))
