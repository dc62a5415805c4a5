"""Importer of the Santander product-recommendation data into the project's data model.

Two inputs are understood: the raw competition format (``train_ver2.csv``: space-padded
numbers, quoted strings, ``NA``), and the lagged May-2016 adders file, whose holdings
columns ``<product>_TminusK`` become monthly snapshots. Assumptions, because the data has no
such fields: marital status ``unknown``, no dependants, investor risk grade ``C3``, consent
to profiling given. ``sexo`` is kept as ``gender`` for audits only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..exceptions import DataValidationError
from . import columns as C
from .catalog import Catalog, load_catalog
from .customers import validate_customers
from .extracts import BankData, read_table, validate_holdings
from .life_stages import LifeStageRules, load_life_stages

PACKAGED = Path(__file__).parent  # the packaged TOML files beside this module
CATALOG_FILE = PACKAGED / "santander_catalog.toml"
LIFE_STAGES_FILE = PACKAGED / "santander_life_stages.toml"
ADDERS_FILE = "may2016_adders.parquet"
TEST_MONTH = pd.Timestamp("2016-05-28")
_PRODUCT_COLUMN = re.compile(r"^ind_(?P<id>.+?)(?:_fin)?_ult1$")
_SEGMENTS = {"01 - TOP": "top", "02 - PARTICULARES": "particulares",
             "03 - UNIVERSITARIO": "universitario"}


@dataclass(frozen=True)
class SantanderBank:
    bank: BankData
    catalog: Catalog
    stages: LifeStageRules


def product_id(column: str) -> str:
    """``ind_cco_fin_ult1`` -> ``cco``; ``ind_nom_pens_ult1`` -> ``nom_pens``."""
    match = _PRODUCT_COLUMN.match(column.split("_Tminus")[0])
    if not match:
        raise ValueError(f"not a Santander product column: {column!r}")
    return match.group("id")


def _customers(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Demographic columns in the data model; the extract's own checks then apply."""
    segment = frame["segmento"].map(_SEGMENTS).fillna("unknown")
    tenure = pd.to_numeric(frame["antiguedad"], errors="coerce")
    age = pd.to_numeric(frame["age"], errors="coerce")
    return validate_customers(pd.DataFrame({
        C.CUSTOMER_ID: frame["ncodpers"].astype(str).str.strip(),
        C.AGE: age.fillna(age.median()).round().astype(int),
        C.INCOME: pd.to_numeric(frame["renta"], errors="coerce"),
        C.MARITAL_STATUS: "unknown",
        C.DEPENDANTS: 0,
        # The raw data marks unknown seniority as -999999; count it as new.
        C.TENURE_MONTHS: tenure.where(tenure >= 0, 0).fillna(0).astype(int),
        C.SEGMENT: segment,
        C.RISK_GRADE: "C3",
        C.RESIDENCY: np.where(frame["indresi"].astype(str).str.strip() == "N", "non_resident",
                              "resident"),
        C.CONSENT_PROFILING: True,
        C.GENDER: frame["sexo"].fillna("").astype(str),
    }), source=source)


def _long_holdings(customer_ids: pd.Series, wide: pd.DataFrame, date: pd.Timestamp) -> pd.DataFrame:
    """Rows (customer, product, date) where the wide 0/1 product columns hold 1."""
    values = wide.apply(pd.to_numeric, errors="coerce").to_numpy()
    rows, cols = np.nonzero(values == 1)
    products = np.array([product_id(c) for c in wide.columns])
    return pd.DataFrame({C.CUSTOMER_ID: customer_ids.to_numpy()[rows],
                         C.PRODUCT_ID: products[cols], C.SNAPSHOT_DATE: date})


def load_adders(data_dir: str | Path) -> SantanderBank:
    """The May-2016 adders as monthly snapshots 2015-12 .. 2016-05.

    2016-05 holds the April products plus the products added in May: only the additions of
    that month are ever used, as labels. A customer whose lag is missing (joined later) has
    no holdings at that snapshot.
    """
    path = Path(data_dir) / ADDERS_FILE
    frame = read_table(path)
    catalog = load_catalog(CATALOG_FILE)
    stages = load_life_stages(LIFE_STAGES_FILE)
    first = frame.drop_duplicates("ncodpers").reset_index(drop=True)
    ids = first["ncodpers"].astype(str)
    customers = _customers(first, str(path))
    # Every customer of this file was a customer in April 2016 (the file's definition),
    # even the few whose seniority says 0 and who held nothing that month.
    customers[C.TENURE_MONTHS] = customers[C.TENURE_MONTHS].clip(lower=1)
    parts = []
    for lag in range(5, 0, -1):
        wide = first[[c for c in first.columns if c.endswith(f"_Tminus{lag}")
                      and c.startswith("ind_")]]
        parts.append(_long_holdings(ids, wide, TEST_MONTH - pd.DateOffset(months=lag)))
    added = pd.DataFrame({C.CUSTOMER_ID: frame["ncodpers"].astype(str),
                          C.PRODUCT_ID: frame["added_products"].map(product_id),
                          C.SNAPSHOT_DATE: TEST_MONTH})
    april = parts[-1].assign(**{C.SNAPSHOT_DATE: TEST_MONTH})
    parts += [april, added]
    holdings = validate_holdings(pd.concat(parts, ignore_index=True), catalog,
                                 pd.Index(customers[C.CUSTOMER_ID]), str(path))
    return SantanderBank(BankData(customers, holdings), catalog, stages)


def load_raw(path: str | Path) -> SantanderBank:
    """The original competition format (``train_ver2.csv`` or a part of it).

    Each ``fecha_dato`` becomes a snapshot; demographics are taken from each customer's
    latest row.
    """
    path = Path(path)
    if not path.is_file():
        raise DataValidationError("file not found", source=str(path))
    frame = pd.read_csv(path, dtype=str, skipinitialspace=True, na_values=["NA", ""],
                        keep_default_na=False)
    missing = [c for c in ("fecha_dato", "ncodpers", "age", "renta", "segmento")
               if c not in frame.columns]
    if missing:
        raise DataValidationError(f"not the Santander raw format: missing columns {missing}",
                                  source=str(path))
    frame = frame.apply(lambda s: s.str.strip())
    dates = pd.to_datetime(frame["fecha_dato"], errors="coerce")
    if dates.isna().any():
        bad = tuple(np.flatnonzero(dates.isna())[:5])
        raise DataValidationError("fecha_dato is not a date", source=str(path),
                                  column="fecha_dato", rows=bad)
    catalog = load_catalog(CATALOG_FILE)
    latest = frame.assign(_date=dates).sort_values("_date").drop_duplicates("ncodpers",
                                                                           keep="last")
    customers = _customers(latest.reset_index(drop=True), str(path))
    product_columns = [c for c in frame.columns if _PRODUCT_COLUMN.match(c)]
    parts = [_long_holdings(frame.loc[dates == d, "ncodpers"],
                            frame.loc[dates == d, product_columns], d) for d in dates.unique()]
    holdings = validate_holdings(pd.concat(parts, ignore_index=True), catalog,
                                 pd.Index(customers[C.CUSTOMER_ID]), str(path))
    return SantanderBank(BankData(customers, holdings), catalog,
                         load_life_stages(LIFE_STAGES_FILE))
