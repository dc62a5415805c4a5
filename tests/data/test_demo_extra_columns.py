"""The demo bank's extra columns: balances and the like that shape take-up, so that the
bank's own columns can be shown to help; without them the demo bank is unchanged."""

import numpy as np
import pandas as pd

from recommender.data.demo import extra_columns, generate


def test_without_extra_columns_the_demo_bank_is_unchanged(packaged_catalog, life_stages):
    plain = generate(300, 3, 5, packaged_catalog, life_stages)
    again = generate(300, 3, 5, packaged_catalog, life_stages, extra=0)
    pd.testing.assert_frame_equal(plain.customers, again.customers)
    pd.testing.assert_frame_equal(plain.holdings, again.holdings)


def test_twenty_columns_four_numbers_and_a_region_carry_signal(packaged_catalog):
    columns, shift = extra_columns(2000, 20, 7, packaged_catalog)
    assert len(columns.columns) == 20
    assert list(columns.columns[:5]) == ["savings_balance", "card_spend", "app_logins",
                                         "investment_visits", "region"]
    assert all(c.startswith("attribute_") for c in columns.columns[5:])
    credit = [i for i, p in enumerate(packaged_catalog.products) if p.category == "credit"]
    spend = np.log(columns["card_spend"].to_numpy())
    # card spend raises the log-odds of every credit product, and nothing else does
    assert np.corrcoef(spend, shift[:, credit[0]])[0, 1] > 0.5
    noise = columns["attribute_01"].to_numpy()
    assert abs(np.corrcoef(noise, shift[:, credit[0]])[0, 1]) < 0.1
