"""The Santander importer on the real data, and the proof that May-2016 labels never reach fitting.

The data lives outside the repository, in ``../shared/data/santander/``; without it every test
here is skipped, naming the missing path. Known answers are derived from the files themselves
(csv module, pandas), never from the importer under test.
"""

from __future__ import annotations

import csv
import re
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recommender.data import columns as C
from recommender.data import santander
from recommender.data.book import CustomerBook
from recommender.exceptions import DataValidationError
from recommender.ranking.config import TrainConfig
from recommender.ranking.fitting import fit, history, upto

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "santander"
RAW = DATA / "raw_2015-01_first10k.csv"
ADDERS = DATA / santander.ADDERS_FILE

pytestmark = pytest.mark.skipif(not DATA.is_dir(),
                                reason=f"Santander data folder not found: {DATA}")
needs_raw = pytest.mark.skipif(not RAW.is_file(), reason=f"Santander file not found: {RAW}")
needs_adders = pytest.mark.skipif(not ADDERS.is_file(),
                                  reason=f"Santander file not found: {ADDERS}")

APRIL, MAY = pd.Timestamp("2016-04-28"), pd.Timestamp("2016-05-28")
N_ADDERS, N_ADDITIONS = 27_875, 35_843
SEGMENTS = {"01 - TOP": "top", "02 - PARTICULARES": "particulares",
            "03 - UNIVERSITARIO": "universitario"}


def _product(column: str) -> str:
    """Product id from a column name, by plain string surgery (independent of the importer)."""
    name = column.split("_Tminus")[0].removeprefix("ind_").removesuffix("_ult1")
    return name.removesuffix("_fin")


# ============================================================================ product ids


@pytest.mark.parametrize("column, expected", [
    ("ind_cco_fin_ult1", "cco"),
    ("ind_nom_pens_ult1", "nom_pens"),
    ("ind_nomina_ult1", "nomina"),
    ("ind_recibo_ult1_Tminus3", "recibo"),
    ("ind_tjcr_fin_ult1_Tminus1", "tjcr"),
])
def test_product_id(column, expected):
    assert santander.product_id(column) == expected


@pytest.mark.parametrize("column", ["ncodpers", "ind_empleado", "renta",
                                    "sum_products_Tminus1", "ind__ult1x", ""])
def test_product_id_refuses_other_columns(column):
    with pytest.raises(ValueError, match="not a Santander product column"):
        santander.product_id(column)


# ============================================================================ the raw format


@pytest.fixture(scope="module")
def raw_rows() -> list[dict[str, str]]:
    if not RAW.is_file():
        pytest.skip(f"Santander file not found: {RAW}")
    with RAW.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def raw_bank() -> santander.SantanderBank:
    if not RAW.is_file():
        pytest.skip(f"Santander file not found: {RAW}")
    return santander.load_raw(RAW)


def _holdings_by_customer(holdings: pd.DataFrame) -> dict[str, set[str]]:
    held = defaultdict(set)
    for customer, product in zip(holdings[C.CUSTOMER_ID].astype(str),
                                 holdings[C.PRODUCT_ID].astype(str), strict=True):
        held[customer].add(product)
    return dict(held)


@needs_raw
def test_raw_file_customers_and_snapshot(raw_rows, raw_bank):
    bank = raw_bank.bank
    assert len(raw_rows) == 9_999
    ids = {r["ncodpers"].strip() for r in raw_rows}
    assert len(bank.customers) == len(ids)
    assert set(bank.customers[C.CUSTOMER_ID]) == ids
    assert bank.snapshots == [pd.Timestamp("2015-01-28")]
    assert len(raw_bank.catalog) == 24
    assert set(bank.holdings[C.PRODUCT_ID].astype(str)) <= set(raw_bank.catalog.ids.external_ids)


@needs_raw
def test_raw_holdings_are_the_ones_in_the_file(raw_rows, raw_bank):
    """Every cell "1" (space-padded or not) is a holding; "0" and "NA" are not."""
    product_columns = [c for c in raw_rows[0] if re.fullmatch(r"ind_.+_ult1", c)]
    assert len(product_columns) == 24
    expected = defaultdict(set)
    for row in raw_rows:
        for column in product_columns:
            if row[column].strip() == "1":
                expected[row["ncodpers"].strip()].add(_product(column))
    assert sum(map(len, expected.values())) == len(raw_bank.bank.holdings) == 11_999
    assert _holdings_by_customer(raw_bank.bank.holdings) == dict(expected)


@needs_raw
def test_raw_numbers_are_stripped(raw_rows, raw_bank):
    customers = raw_bank.bank.customers.set_index(C.CUSTOMER_ID)
    assert pd.api.types.is_integer_dtype(customers[C.AGE])
    assert pd.api.types.is_integer_dtype(customers[C.TENURE_MONTHS])
    known = [r for r in raw_rows if r["age"].strip() != "NA"]
    assert len(known) == 9_949
    ages = dict(zip(customers.index, customers[C.AGE], strict=True))
    assert all(ages[r["ncodpers"].strip()] == int(r["age"].strip()) for r in known)
    # a missing age is the median of the others
    median = round(statistics.median(int(r["age"].strip()) for r in known))
    assert {ages[r["ncodpers"]] for r in raw_rows if r["age"].strip() == "NA"} == {median}


@needs_raw
def test_raw_first_customer(raw_rows, raw_bank):
    first = raw_rows[0]
    customers = raw_bank.bank.customers.set_index(C.CUSTOMER_ID)
    row = customers.loc[first["ncodpers"].strip()]
    assert row[C.AGE] == int(first["age"].strip()) == 35
    assert row[C.TENURE_MONTHS] == int(first["antiguedad"].strip()) == 6
    assert row[C.INCOME] == pytest.approx(float(first["renta"]))
    assert row[C.SEGMENT] == SEGMENTS[first["segmento"]] == "particulares"
    assert row[C.RESIDENCY] == ("resident" if first["indresi"] == "S" else "non_resident")
    assert row[C.GENDER] == first["sexo"]
    assert row[C.CONSENT_PROFILING]
    held = {_product(c) for c, v in first.items()
            if re.fullmatch(r"ind_.+_ult1", c) and v.strip() == "1"}
    assert held == {"cco"}
    assert _holdings_by_customer(raw_bank.bank.holdings)[first["ncodpers"]] == held


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@needs_raw
def test_raw_file_without_the_needed_columns_is_refused(tmp_path):
    path = _write(tmp_path / "short.csv", ['"fecha_dato","ncodpers","age"',
                                           "2015-01-28,1375586, 35"])
    missing = r"missing columns \['renta', 'segmento'\]"
    with pytest.raises(DataValidationError, match=missing) as exc:
        santander.load_raw(path)
    assert exc.value.source == str(path) and str(path) in str(exc.value)


@needs_raw
def test_raw_file_with_a_bad_date_is_refused(tmp_path):
    lines = RAW.read_text(encoding="utf-8").splitlines()[:4]
    lines[2] = lines[2].replace("2015-01-28", "2015-13-45", 1)
    path = _write(tmp_path / "bad_date.csv", lines)
    with pytest.raises(DataValidationError, match="fecha_dato is not a date") as exc:
        santander.load_raw(path)
    assert exc.value.source == str(path) and str(path) in str(exc.value)
    assert exc.value.column == "fecha_dato" and exc.value.rows == (1,)


@needs_raw
def test_raw_file_not_found(tmp_path):
    with pytest.raises(DataValidationError, match="file not found") as exc:
        santander.load_raw(tmp_path / "nowhere.csv")
    assert exc.value.source == str(tmp_path / "nowhere.csv")


# ============================================================================ the May-2016 adders


@pytest.fixture(scope="module")
def adders_frame() -> pd.DataFrame:
    if not ADDERS.is_file():
        pytest.skip(f"Santander file not found: {ADDERS}")
    return pd.read_parquet(ADDERS)


@pytest.fixture(scope="module")
def adders() -> santander.SantanderBank:
    if not ADDERS.is_file():
        pytest.skip(f"Santander file not found: {ADDERS}")
    return santander.load_adders(DATA)


def _pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return {(str(c), _product(p)) for c, p in zip(frame["ncodpers"], frame["added_products"],
                                                  strict=True)}


def _may_additions(sb: santander.SantanderBank) -> set[tuple[str, str]]:
    """Products added between the last two snapshots by customers present in April."""
    from recommender.data.interactions import acquisitions

    bank = sb.bank
    past = history(bank, len(bank.customers), len(sb.catalog))
    added = acquisitions(past.snapshots[-2], past.snapshots[-1], past.presence[:, -2]).tocoo()
    ids, products = bank.customers[C.CUSTOMER_ID].to_numpy(), sb.catalog.ids.external_ids
    return set(zip(ids[added.row], products[added.col], strict=True))


@needs_adders
def test_adders_shape(adders, adders_frame):
    bank = adders.bank
    assert len(bank.customers) == adders_frame["ncodpers"].nunique() == N_ADDERS
    assert len(adders.catalog) == 24
    assert bank.snapshots == list(pd.date_range("2015-12-28", "2016-05-28",
                                                freq=pd.DateOffset(months=1)))
    assert bank.reference_date == MAY


@needs_adders
def test_may_additions_are_the_files_pairs(adders, adders_frame):
    expected = _pairs(adders_frame)
    assert len(expected) == len(adders_frame) == N_ADDITIONS
    assert _may_additions(adders) == expected


@needs_adders
def test_may_holds_april_plus_the_additions(adders, adders_frame):
    by_month = {d: _holdings_by_customer(g)
                for d, g in adders.bank.holdings.groupby(C.SNAPSHOT_DATE)}
    april = by_month[APRIL]
    expected = defaultdict(set, {c: set(p) for c, p in april.items()})
    for customer, product in _pairs(adders_frame):
        expected[customer].add(product)
    assert by_month[MAY] == dict(expected)
    # April is the file's Tminus1 columns
    lag1 = [c for c in adders_frame.columns if c.startswith("ind_") and c.endswith("_Tminus1")]
    first = adders_frame.drop_duplicates("ncodpers")
    held = first[lag1].to_numpy() == 1
    assert sum(map(len, april.values())) == int(held.sum())


@pytest.fixture(scope="module")
def shuffled(adders_frame, tmp_path_factory) -> santander.SantanderBank:
    """The adders file with its May labels permuted across rows, loaded by the importer."""
    frame = adders_frame.copy()
    rng = np.random.default_rng(20160528)
    frame["added_products"] = rng.permutation(frame["added_products"].to_numpy())
    folder = tmp_path_factory.mktemp("shuffled_santander")
    frame.to_parquet(folder / santander.ADDERS_FILE, index=False)
    return santander.load_adders(folder)


def _fit(sb: santander.SantanderBank, until: pd.Timestamp | None = None):
    bank = upto(sb.bank, until) if until is not None else sb.bank
    return fit(bank, sb.catalog, sb.stages, TrainConfig(), served="acquisition")


def _predictions(sb: santander.SantanderBank, model, until: pd.Timestamp) -> np.ndarray:
    bank = upto(sb.bank, until)
    book = CustomerBook(bank, sb.catalog, sb.stages, "binary", model.acquisition.space.n_lags)
    batch = book.batch(np.arange(len(book)))
    return model.acquisition.predict(list(batch.lags), batch.present, batch.profiles,
                                     batch.stages)


@needs_adders
def test_shuffled_labels_differ(adders, shuffled):
    original, changed = _may_additions(adders), _may_additions(shuffled)
    assert len(original ^ changed) > 10_000
    pd.testing.assert_frame_equal(adders.bank.customers, shuffled.bank.customers)


@needs_adders
def test_may_labels_never_reach_the_fitted_models(adders, shuffled):
    """The leakage proof: fitted up to April, the acquisition ranker, the life-stage take-up
    rates and the CF factors are bit-identical whatever the May labels say."""
    original, changed = _fit(adders, APRIL), _fit(shuffled, APRIL)
    assert (original.acquisition.booster.model_to_string()
            == changed.acquisition.booster.model_to_string())
    assert original.acquisition.best_iteration == changed.acquisition.best_iteration
    np.testing.assert_array_equal(_predictions(adders, original, APRIL),
                                  _predictions(shuffled, changed, APRIL))
    np.testing.assert_array_equal(original.rates.overall, changed.rates.overall)
    np.testing.assert_array_equal(original.rates.by_stage, changed.rates.by_stage)
    for key in ("user_factors", "item_factors"):
        np.testing.assert_array_equal(original.cf.to_state()[key], changed.cf.to_state()[key])


@needs_adders
def test_the_shuffle_is_seen_when_may_is_fitted(adders, shuffled):
    """The control: fitted on every month, the shuffled labels change the ranker and the
    rates, so the identity above is not an accident of a shuffle nothing could see."""
    original, changed = _fit(adders), _fit(shuffled)
    assert (original.acquisition.booster.model_to_string()
            != changed.acquisition.booster.model_to_string())
    assert not np.array_equal(original.rates.overall, changed.rates.overall)
