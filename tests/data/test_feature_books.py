"""The bank's further columns and time-varying values reach every customer book: the one
built from the extracts, the memory-mapped one the server reads, and the parts a campaign
reads; and a customer of unknown age is handled where age is used."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from recommender.audit import age_band
from recommender.data import extract_batches
from recommender.data.book import CustomerBook
from recommender.data.catalog import parse_catalog
from recommender.data.customers import CUSTOMER_COLUMNS, customer_schema, validate_customers
from recommender.data.extracts import load_bank
from recommender.data.features import FeatureColumn, FeatureSchema
from recommender.data.life_stages import parse_life_stages
from recommender.data.mapped_book import MappedBook, book_key, save_book
from recommender.data.partition import PartedCustomers, column_kinds, split_bank

CATALOG_TOML = """
version = "t"
[[product]]
id = "card"
name_en = "Card"
category = "credit"
risk_grade = "R1"
"""
CATALOG = parse_catalog(CATALOG_TOML, "<catalog>")
STAGES = parse_life_stages("""
version = "t"
[[stage]]
id = "young"
name_en = "Young"
when = { age_max = 30 }
[[stage]]
id = "everyone"
name_en = "Everyone"
""", "<stages>")

CUSTOMERS = pd.DataFrame({
    "customer_id": ["A", "B", "C", "D"],
    "region": ["north", "", "south", "north"],  # a category with a missing value
    "branch": ["12", "12", "7", "x9"],  # mostly digits, but a category
    "balance": ["10.5", "", "3", "0"],  # numeric, one missing
})
HOLDINGS = pd.DataFrame({"customer_id": ["A", "B", "A", "C"], "product_id": "card",
                         "snapshot_date": ["2026-01-31", "2026-01-31", "2026-02-28",
                                           "2026-02-28"]})
FEATURES = pd.DataFrame({  # D has no row; C's only row is after the latest snapshot
    "customer_id": ["A", "A", "B", "C"],
    "snapshot_date": ["2026-01-31", "2026-02-28", "2026-01-31", "2026-03-31"],
    "logins": ["3", "8", "5", "1"],
    "channel": ["app", "branch", "app", "app"],
})
# What every book says of A, B, C, D as of February.
EXPECTED = {
    "region": ["north", None, "south", "north"],
    "branch": ["12", "12", "7", "x9"],
    "balance": [10.5, np.nan, 3.0, 0.0],
    "logins": [8.0, 5.0, np.nan, np.nan],
    "channel": ["branch", "app", None, None],
}


@pytest.fixture
def bank_dir(tmp_path):
    folder = tmp_path / "bank"
    folder.mkdir()
    CUSTOMERS.to_csv(folder / "customers.csv", index=False)
    HOLDINGS.to_csv(folder / "holdings.csv", index=False)
    FEATURES.to_csv(folder / "customer_features.csv", index=False)
    return folder


def _check(profiles: pd.DataFrame, ids: list[str]) -> None:
    rows = ["ABCD".index(i) for i in ids]
    assert profiles["customer_id"].tolist() == ids
    for column, expected in EXPECTED.items():
        want = [expected[r] for r in rows]
        got = profiles[column].tolist()
        if column in ("balance", "logins"):
            np.testing.assert_array_equal(np.asarray(got, dtype=float), np.asarray(want, float))
        else:
            assert [None if pd.isna(v) else v for v in got] == want, column


def test_book_batches_carry_further_and_time_varying_columns(bank_dir):
    bank = load_bank(bank_dir, CATALOG)
    assert bank.schema.columns == (
        FeatureColumn("region", "category"), FeatureColumn("branch", "category"),
        FeatureColumn("balance", "numeric"), FeatureColumn("logins", "numeric"),
        FeatureColumn("channel", "category"))
    book = CustomerBook(bank, CATALOG, STAGES)
    _check(book.profiles, ["A", "B", "C", "D"])
    batch = book.batch(np.array([3, 0]))
    _check(batch.profiles, ["D", "A"])
    schema = bank.schema.fit(book.profiles)
    assert schema.columns[1].categories == ("12", "7", "x9")
    encoded = schema.encode(batch.profiles)
    np.testing.assert_array_equal(encoded, np.array([
        [0, 2, 0.0, np.nan, np.nan],  # D: north, x9, balance 0, no logins, no channel
        [0, 0, 10.5, 8.0, 1],  # A: north, 12, 10.5, 8 logins, branch
    ], dtype=np.float32))
    assert batch.profile_records([1])[0]["channel"] == "branch"


def test_the_mapped_book_carries_them_and_reads_missing_text_as_none(bank_dir, tmp_path):
    book = CustomerBook(load_bank(bank_dir, CATALOG), CATALOG, STAGES)
    mapped = MappedBook(save_book(book, tmp_path / "cache"), CATALOG, STAGES)
    positions = np.array([1, 3, 0, 2])
    _check(mapped.profiles_at(positions), ["B", "D", "A", "C"])
    record = mapped.profile_records(np.array([1]))[0]
    assert record["region"] is None and record["balance"] is None
    assert record["branch"] == "12" and record["logins"] == 5.0
    schema = load_bank(bank_dir, CATALOG).schema.fit(book.profiles)
    np.testing.assert_array_equal(schema.encode(mapped.batch(positions).profiles),
                                  schema.encode(book.batch(positions).profiles))


def test_the_cached_book_follows_bank_toml_and_the_features_extract(bank_dir):
    model = SimpleNamespace(config=SimpleNamespace(acquisition=SimpleNamespace(n_lags=2),
                                                   cf=SimpleNamespace(weighting="binary")),
                            catalog_text=CATALOG_TOML, stages_text="")
    first = book_key(bank_dir, model)
    (bank_dir / "bank.toml").write_text('[features]\nbranch = "ignore"\n', encoding="utf-8")
    second = book_key(bank_dir, model)
    FEATURES.iloc[:2].to_csv(bank_dir / "customer_features.csv", index=False)
    assert len({first, second, book_key(bank_dir, model)}) == 3


@pytest.mark.parametrize("in_child", [False, True])
def test_campaign_parts_carry_them_typed_as_the_whole(bank_dir, in_child):
    with PartedCustomers(split_bank(bank_dir, None, part_size=2, in_child=in_child),
                         CATALOG, STAGES) as customers:
        assert customers.bank.parts == 2
        frames = [batch.profiles for batch in customers.chunks(10)]
        whole = pd.concat(frames).sort_values("customer_id").reset_index(drop=True)
        _check(whole, ["A", "B", "C", "D"])
        # A and C alone: their branches are digits, still the category the whole column is
        few = pd.concat([b.profiles for b in customers.batches_of(np.array(["C", "A"]), 10)])
        few = few.set_index("customer_id").loc[["A", "C"]].reset_index()
        _check(few, ["A", "C"])
        assert few["branch"].tolist() == ["12", "7"]


def test_numbers_find_the_category_that_reads_as_them():
    schema = FeatureSchema((FeatureColumn("branch", "category", ("03", "12", "x9")),))
    got = schema.encode(pd.DataFrame({"branch": [3, 12, 5, np.nan]}))
    np.testing.assert_array_equal(got[:, 0], [0, 1, np.nan, np.nan])
    got = schema.encode(pd.DataFrame({"branch": [" x9", "3", None]}))
    np.testing.assert_array_equal(got[:, 0], [2, np.nan, np.nan])  # text is matched as text


def test_a_customer_of_unknown_age_gets_the_fallback_stage_and_band(bank_dir):
    customers = load_bank(bank_dir, CATALOG).customers
    assert customers["age"].isna().all()
    assert STAGES.assign_ids(customers).tolist() == ["everyone"] * 4
    known = customers.assign(age=[25.0, np.nan, 40.0, 30.0])
    assert STAGES.assign_ids(known).tolist() == ["young", "everyone", "everyone", "young"]
    assert age_band(known["age"].to_numpy()).tolist() == ["25-34", "unknown", "35-44",
                                                          "25-34"]


def test_parts_type_columns_as_the_whole_extract_does(tmp_path, monkeypatch):
    """The streaming count of distinct values decides as the whole table read at once does."""
    n = 400
    frame = pd.DataFrame({
        "customer_id": [f"K{i:03d}" for i in range(n)],
        "email": [f"k{i}@bank.example" for i in range(n)],  # one per customer: left out
        "city": [f"city{i % 150}" for i in range(n)],  # 150 values: a category
        "score": [str(i) if i % 9 else "" for i in range(n)],  # numbers, some empty
        "code": [str(i % 5) for i in range(n - 1)] + ["Z"],  # digits but one: a category
        "gender": ["F", "M"] * (n // 2),  # protected: never typed
    })
    path = tmp_path / "customers.parquet"
    frame.to_parquet(path, index=False)
    monkeypatch.setattr(extract_batches, "_BATCH_ROWS", 7)  # 58 batches
    kinds = column_kinds(path, CUSTOMER_COLUMNS, {"score": "numeric"})
    assert kinds == {"email": "ignore", "city": "category", "code": "category"}
    whole = customer_schema(validate_customers(frame, "c", quiet=True))
    assert {c.name: c.kind for c in whole.columns} == {"city": "category", "score": "numeric",
                                                      "code": "category"}
