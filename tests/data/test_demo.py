"""The demo bank: reproducible, valid extracts that obey the catalog's rules."""

import numpy as np
import pandas as pd
import pytest

from recommender.data.customers import OPTIONAL_CUSTOMER_COLUMNS, validate_customers
from recommender.data.demo import LAST_SNAPSHOT, generate
from recommender.data.eligibility import eligibility_mask, prerequisites_met
from recommender.data.extracts import BankData, load_bank, write_bank
from recommender.data.interactions import snapshot_matrix


@pytest.fixture(scope="module")
def small(packaged_catalog, life_stages):
    return generate(400, 3, 5, packaged_catalog, life_stages)


def test_same_seed_gives_identical_data(small, packaged_catalog, life_stages):
    again = generate(400, 3, 5, packaged_catalog, life_stages)
    pd.testing.assert_frame_equal(again.customers, small.customers)
    pd.testing.assert_frame_equal(again.holdings, small.holdings)


def test_different_seed_gives_different_data(small, packaged_catalog, life_stages):
    other = generate(400, 3, 6, packaged_catalog, life_stages)
    assert not other.customers["age"].equals(small.customers["age"])
    assert not other.customers["income"].equals(small.customers["income"])
    assert not other.holdings.equals(small.holdings)


def test_customers_have_every_customer_column_and_validate(small):
    """The generated customers pass the same validation as a bank's extract."""
    customers = small.customers
    for column in (*OPTIONAL_CUSTOMER_COLUMNS, "age"):
        assert column in customers.columns, column
    validated = validate_customers(customers, "<demo>")
    assert len(validated) == 400 and validated["customer_id"].is_unique
    assert validated["age"].between(16, 90).all()
    assert set(validated["risk_grade"]) <= {"C1", "C2", "C3", "C4", "C5"}
    assert set(validated["residency"]) <= {"resident", "non_resident"}


def test_written_demo_bank_loads_back(small, packaged_catalog, tmp_path):
    """demo-data writes Parquet that load_bank reads and validates unchanged."""
    write_bank(BankData(small.customers, small.holdings), tmp_path)
    bank = load_bank(tmp_path, packaged_catalog)
    assert bank.customers["customer_id"].tolist() == small.customers["customer_id"].tolist()
    assert len(bank.holdings) == len(small.holdings)
    for column in (*OPTIONAL_CUSTOMER_COLUMNS, "age"):
        assert column in bank.customers.columns


def test_monthly_snapshots_end_at_the_last_snapshot(small):
    dates = sorted(pd.unique(small.holdings["snapshot_date"]))
    assert [str(pd.Timestamp(d).date()) for d in dates] == ["2026-08-31", "2026-09-30",
                                                            "2026-10-31"]
    assert pd.Timestamp(dates[-1]) == LAST_SNAPSHOT


def test_every_customer_holds_a_current_account_and_only_allowed_products(small,
                                                                          packaged_catalog):
    """Holdings respect eligibility and prerequisites, as the catalog says."""
    shape = (len(small.customers), len(packaged_catalog))
    held = snapshot_matrix(small.holdings, shape, LAST_SNAPSHOT)
    dense = held.toarray() > 0
    assert dense[:, packaged_catalog.ids.position("current_account")].all()
    eligible = eligibility_mask(small.customers, packaged_catalog)
    assert not (dense & ~eligible).any()
    assert not (dense & ~prerequisites_met(held, packaged_catalog)).any()
    assert dense.sum(axis=1).mean() > 1.5  # cross-selling happened


def test_customers_acquire_products_between_months(small, packaged_catalog):
    shape = (len(small.customers), len(packaged_catalog))
    dates = sorted(pd.unique(small.holdings["snapshot_date"]))
    before, after = (snapshot_matrix(small.holdings, shape, pd.Timestamp(d))
                     for d in dates[-2:])
    assert ((after.toarray() > 0) & ~(before.toarray() > 0)).sum() > 0


def test_too_short_a_history_is_refused(packaged_catalog, life_stages):
    with pytest.raises(ValueError, match="at least 1 customer and 2 months"):
        generate(10, 1, 0, packaged_catalog, life_stages)
    with pytest.raises(ValueError):
        generate(0, 4, 0, packaged_catalog, life_stages)


def test_life_stage_bundles_shape_take_up(demo_bank, packaged_catalog, life_stages):
    """Retired customers hold time deposits more often than students do (bundle lift)."""
    stages = life_stages.assign_ids(demo_bank.customers)
    held = snapshot_matrix(demo_bank.holdings, (len(stages), len(packaged_catalog)),
                           LAST_SNAPSHOT).toarray() > 0
    deposit = held[:, packaged_catalog.ids.position("time_deposit")]
    assert deposit[stages == "retired"].mean() > 2 * deposit[stages == "student"].mean()
    assert np.isin(stages, [s.id for s in life_stages.stages]).all()
