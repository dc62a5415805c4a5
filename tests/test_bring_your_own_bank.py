"""A bank as it comes: customers with an id only, holdings as account intervals, a catalog
drafted by ``nbo init-catalog``; it trains with the documented commands and serves."""

import numpy as np
import pandas as pd
import pytest

from api import create_app
from recommender.cli import main

from account_intervals import intervals_of


@pytest.fixture(scope="module")
def bare_bank(tmp_path_factory):
    root = tmp_path_factory.mktemp("bare")
    demo = root / "demo"
    assert main(["demo-data", "--customers", "1500", "--months", "4", "--out", str(demo)]) == 0
    customers = pd.read_parquet(demo / "customers.parquet")
    holdings = pd.read_parquet(demo / "holdings.parquet")
    bank = root / "bank"
    bank.mkdir()
    customers[["customer_id"]].to_csv(bank / "customers.csv", index=False)
    intervals_of(holdings).to_csv(bank / "holdings.csv", index=False)
    catalog = root / "catalog.toml"
    assert main(["init-catalog", "--data", str(bank), "--out", str(catalog)]) == 0
    # The bank's edit of the draft: its products are plain deposits of the lowest risk.
    text = catalog.read_text(encoding="utf-8")
    assert 'category = "unclassified"' in text and 'risk_grade = "R5"' in text
    catalog.write_text(text.replace('category = "unclassified"', 'category = "deposit"')
                       .replace('risk_grade = "R5"', 'risk_grade = "R1"'), encoding="utf-8")
    return root, bank, holdings


def test_intervals_reproduce_the_snapshots(bare_bank):
    from recommender.data.catalog import load_catalog
    from recommender.data.extracts import load_bank

    root, bank, holdings = bare_bank
    loaded = load_bank(bank, load_catalog(root / "catalog.toml")).holdings
    key = ["customer_id", "product_id", "snapshot_date"]
    expected = holdings.assign(snapshot_date=pd.to_datetime(holdings["snapshot_date"]))
    pd.testing.assert_frame_equal(
        loaded[key].astype(str).sort_values(key).reset_index(drop=True),
        expected[key].astype(str).sort_values(key).reset_index(drop=True))


def test_an_id_only_bank_trains_and_serves(bare_bank, tmp_path, client_with_key, caplog):
    root, bank, _ = bare_bank
    models = tmp_path / "models"
    assert main(["train", "--data", str(bank), "--catalog", str(root / "catalog.toml"),
                 "--models", str(models)]) == 0
    for column in ("age", "income", "risk_grade", "consent_profiling", "tenure_months"):
        assert f"no {column} column" in caplog.text, column
    app = create_app({"DATA_DIR": str(bank), "MODELS_DIR": str(models),
                      "STATE_DIR": str(tmp_path / "state")})
    client = client_with_key(app)
    customer = pd.read_csv(bank / "customers.csv")["customer_id"].iloc[3]
    response = client.get(f"/v1/customers/{customer}/offers")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["customer_id"] == customer
    profile = client.get(f"/v1/customers/{customer}").get_json()
    assert profile["age"] is None and profile["risk_grade"] == "C1"
    assert body["offers"] and np.isfinite([o["propensity"] for o in body["offers"]]).all()
