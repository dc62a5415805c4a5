"""A bank's customers extract as it is: only customer_id is required; every absent column
has a documented default and one warning; further columns are features."""

import logging

import numpy as np
import pandas as pd
import pytest

from recommender.data import columns as C
from recommender.data.bank_config import DEFAULTS, parse_bank_config
from recommender.data.catalog import parse_catalog
from recommender.data.customers import (
    OPTIONAL_CUSTOMER_COLUMNS,
    customer_schema,
    validate_customers,
)
from recommender.data.eligibility import eligibility_mask
from recommender.data.extracts import load_bank
from recommender.data.features import FeatureColumn, FeatureSchema
from recommender.exceptions import ConfigError, DataValidationError

CATALOG = parse_catalog("""
version = "t"
[[product]]
id = "card"
name_en = "Card"
category = "credit"
risk_grade = "R1"
[[product]]
id = "fund"
name_en = "Fund"
category = "investment"
risk_grade = "R3"
min_age = 18
""", "<catalog>")


def _interval_bank(folder, customers: pd.DataFrame, bank_toml: str | None = None):
    folder.mkdir()
    customers.to_csv(folder / "customers.csv", index=False)
    pd.DataFrame({"customer_id": ["A", "A", "B"], "product_id": ["card", "fund", "card"],
                  "opened_on": ["2026-01-15", "2026-03-02", "2026-02-20"],
                  "closed_on": ["", "", "2026-03-10"]}).to_csv(folder / "holdings.csv",
                                                               index=False)
    if bank_toml is not None:
        (folder / "bank.toml").write_text(bank_toml, encoding="utf-8")
    return load_bank(folder, CATALOG)


def test_customer_id_and_interval_holdings_are_enough(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        bank = _interval_bank(tmp_path / "bank", pd.DataFrame({"customer_id": ["A", "B", "C"]}))
    customers = bank.customers
    assert customers["customer_id"].tolist() == ["A", "B", "C"]
    assert customers["age"].isna().all() and customers["income"].isna().all()
    assert (customers["marital_status"] == "unknown").all()
    assert (customers["dependants"] == 0).all() and (customers["segment"] == "unknown").all()
    assert (customers["risk_grade"] == "C1").all() and customers["consent_profiling"].all()
    assert (customers["residency"] == "resident").all()
    # tenure counted from the first month-end held: A from January, B from February
    assert customers["tenure_months"].tolist() == [2, 1, 0]
    for column in OPTIONAL_CUSTOMER_COLUMNS:
        assert caplog.text.count(f"no {column} column") == 1, column
    # an unknown age meets no age limit: the fund (min_age 18) is not offered, the card is
    assert eligibility_mask(customers, CATALOG).tolist() == [[True, False]] * 3


def test_bank_toml_sets_the_defaults_and_the_warnings_say_so(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        bank = _interval_bank(tmp_path / "bank", pd.DataFrame({"customer_id": ["A", "B"]}),
                              '[defaults]\nrisk_grade = "C4"\nconsent_profiling = false\n')
    assert (bank.customers["risk_grade"] == "C4").all()
    assert not bank.customers["consent_profiling"].any()
    assert "every customer has risk grade C4" in caplog.text
    assert "no customer has consented to profiling" in caplog.text


@pytest.mark.parametrize(("text", "message"), [
    ('[defaults]\nrisk = "C2"\n', "[defaults] risk: not a column with a default"),
    ('[defaults]\nrisk_grade = "C9"\n', "[defaults] risk_grade: must be one of"),
    ('[defaults]\nconsent_profiling = "yes"\n', "consent_profiling: must be true or false"),
    ('[features]\nbalance = "float"\n', "[features] balance: must be one of"),
    ('[features]\ngender = "category"\n', "a protected attribute is kept for audits only"),
    ('[extras]\n', "unknown top-level keys ['extras']"),
])
def test_a_bad_bank_toml_names_the_file_and_key(text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_bank_config(text, "data/bank.toml")


def test_further_columns_become_typed_features(caplog):
    n = 300
    frame = pd.DataFrame({
        "customer_id": [f"K{i}" for i in range(n)],
        "balance": [str(i * 10) if i % 7 else "" for i in range(n)],  # numbers, some empty
        "region": ["north", "south", "east"] * 100,
        "branch": [str(i % 4) for i in range(n)],  # digits, declared a category below
        "email": [f"k{i}@bank.example" for i in range(n)],  # an identifier: left out
        "gender": ["F", "M"] * 150,  # protected: audit only
        "nationality": ["CN"] * n,  # protected too
    })
    config = parse_bank_config('[features]\nbranch = "category"\n', "bank.toml")
    with caplog.at_level(logging.WARNING):
        customers = validate_customers(frame, "customers.csv", config=config)
    assert "column 'email' has 300 distinct values" in caplog.text
    schema = customer_schema(customers, config)
    assert schema.columns == (FeatureColumn("balance", "numeric"),
                              FeatureColumn("region", "category"),
                              FeatureColumn("branch", "category"))
    assert customers["balance"].iloc[1] == 10.0 and np.isnan(customers["balance"].iloc[0])
    fitted = schema.fit(customers)
    assert fitted.columns[1].categories == ("east", "north", "south")
    encoded = fitted.encode(pd.DataFrame({"balance": [5.0], "region": ["west"]}))
    assert encoded[0, 0] == 5.0 and np.isnan(encoded[0, 1]) and np.isnan(encoded[0, 2])
    assert FeatureSchema.from_state(fitted.to_state()) == fitted


def test_a_declared_numeric_column_with_text_names_the_rows():
    frame = pd.DataFrame({"customer_id": ["A", "B", "C"], "balance": ["1", "lots", "3"]})
    config = parse_bank_config('[features]\nbalance = "numeric"\n', "bank.toml")
    with pytest.raises(DataValidationError) as info:
        validate_customers(frame, "customers.csv", config=config)
    assert info.value.column == "balance" and info.value.rows == (1,)
    assert "is not a number (declared numeric)" in str(info.value)


def test_the_defaults_are_the_documented_ones():
    assert DEFAULTS == {"marital_status": "unknown", "dependants": 0, "segment": "unknown",
                        "risk_grade": "C1", "residency": "resident",
                        "consent_profiling": True}
    assert C.NATIONALITY in C.PROTECTED
