"""The optional time-varying extract: validated like the others, read as of a date, and
never seen by a back-test beyond its cutoff."""

import numpy as np
import pandas as pd
import pytest

from recommender.data.catalog import parse_catalog
from recommender.data.extracts import load_bank
from recommender.exceptions import DataValidationError
from recommender.ranking.fitting import upto

CATALOG = parse_catalog("""
version = "t"
[[product]]
id = "card"
name_en = "Card"
category = "credit"
""", "<catalog>")


def _folder(tmp_path, features: pd.DataFrame):
    folder = tmp_path / "bank"
    folder.mkdir()
    pd.DataFrame({"customer_id": ["A", "B", "C"]}).to_csv(folder / "customers.csv",
                                                          index=False)
    pd.DataFrame({"customer_id": ["A", "B", "A", "B"], "product_id": "card",
                  "snapshot_date": ["2026-01-31", "2026-01-31", "2026-02-28",
                                    "2026-02-28"]}).to_csv(folder / "holdings.csv",
                                                           index=False)
    features.to_csv(folder / "customer_features.csv", index=False)
    return folder


FEATURES = pd.DataFrame({
    "customer_id": ["A", "A", "B", "C"],
    "snapshot_date": ["2026-01-31", "2026-02-28", "2026-01-31", "2026-03-31"],
    "balance": [100, 150, 7, 9],
    "channel": ["app", "branch", "app", "app"],
})


def test_the_book_sees_the_latest_values_and_a_back_test_those_of_its_cutoff(tmp_path):
    bank = bank_of = load_bank(_folder(tmp_path, FEATURES), CATALOG)
    customers = bank_of.customers
    # as of the latest snapshot (February): A's February balance, B's January one, C none yet
    assert customers["balance"].tolist()[:2] == [150.0, 7.0]
    assert np.isnan(customers["balance"].iloc[2])
    assert customers["channel"].tolist()[:2] == ["branch", "app"]
    assert [c.name for c in bank.schema.columns] == ["balance", "channel"]
    january = upto(bank, pd.Timestamp("2026-01-31")).customers
    assert january["balance"].tolist()[:2] == [100.0, 7.0]


@pytest.mark.parametrize(("change", "column", "message"), [
    ({"customer_id": ["A", "A", "Z", "C"]}, "customer_id", "names a customer that is not in"),
    ({"snapshot_date": ["2026-01-31", "2026-01-31", "2026-01-31", "2026-03-31"]},
     "snapshot_date", "repeats a (customer_id, snapshot_date) pair"),
    ({"snapshot_date": ["2026-01-31", "soon", "2026-01-31", "2026-03-31"]},
     "snapshot_date", "is not a date"),
])
def test_a_bad_features_extract_names_file_column_and_rows(tmp_path, change, column, message):
    with pytest.raises(DataValidationError) as info:
        load_bank(_folder(tmp_path, FEATURES.assign(**change)), CATALOG)
    assert info.value.column == column and message in str(info.value)
    assert info.value.source.endswith("customer_features.csv")
