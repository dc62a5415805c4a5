"""Eligibility masks: age, income, residency, prerequisites and products already held.

Tiny catalog columns: current_account, credit_card, mortgage, home_insurance, equity_fund.
"""

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recommender.data.eligibility import (
    eligibility_mask,
    holding_sets,
    holds,
    holds_all,
    holds_any,
    offerable_mask,
    prerequisites_met,
    product_words,
)

PRODUCTS = ["current_account", "credit_card", "mortgage", "home_insurance", "equity_fund"]


def _held(tiny_catalog, *rows) -> sp.csr_matrix:
    matrix = np.zeros((len(rows), len(tiny_catalog)), dtype=np.float32)
    for i, products in enumerate(rows):
        matrix[i, tiny_catalog.ids.to_internal(products)] = 1.0
    return sp.csr_matrix(matrix)


def _eligible(mask_row) -> list[str]:
    return [p for p, ok in zip(PRODUCTS, mask_row, strict=True) if ok]


def test_eligibility_known_answers(customers, tiny_catalog):
    """Age, income and residency rules of the six fixture customers."""
    mask = eligibility_mask(customers, tiny_catalog)
    assert mask.shape == (6, 5) and mask.dtype == bool
    # C001, 20, income 10000: too poor for a card, too young and poor for a mortgage
    assert _eligible(mask[0]) == ["current_account", "equity_fund"]
    # C002, 30, 80000, resident: everything
    assert _eligible(mask[1]) == PRODUCTS
    # C003, 70: over the card (65) and mortgage (60) limits, exactly at the fund limit (70)
    assert _eligible(mask[2]) == ["current_account", "home_insurance", "equity_fund"]
    # C005, 27, 40000, non-resident: card yes; mortgage needs residency and 60000
    assert _eligible(mask[4]) == ["current_account", "credit_card", "home_insurance",
                                  "equity_fund"]


def _person(age, income, residency="resident") -> pd.DataFrame:
    return pd.DataFrame({"age": [age], "income": [income], "residency": [residency]})


def test_age_bounds_are_inclusive(tiny_catalog):
    mortgage = tiny_catalog.ids.position("mortgage")
    assert eligibility_mask(_person(22, 60000.0), tiny_catalog)[0, mortgage]
    assert eligibility_mask(_person(60, 60000.0), tiny_catalog)[0, mortgage]
    assert not eligibility_mask(_person(21, 60000.0), tiny_catalog)[0, mortgage]
    assert not eligibility_mask(_person(61, 60000.0), tiny_catalog)[0, mortgage]


def test_income_threshold(tiny_catalog):
    card = tiny_catalog.ids.position("credit_card")
    assert eligibility_mask(_person(30, 36000.0), tiny_catalog)[0, card]
    assert not eligibility_mask(_person(30, 35999.0), tiny_catalog)[0, card]


def test_unknown_income_meets_no_income_minimum(tiny_catalog):
    """NaN income: products with a minimum income are not offered; others still are."""
    mask = eligibility_mask(_person(30, np.nan), tiny_catalog)[0]
    assert _eligible(mask) == ["current_account", "home_insurance", "equity_fund"]


def test_residency_rule(tiny_catalog):
    mortgage = tiny_catalog.ids.position("mortgage")
    assert eligibility_mask(_person(30, 90000.0), tiny_catalog)[0, mortgage]
    assert not eligibility_mask(_person(30, 90000.0, "non_resident"), tiny_catalog)[0, mortgage]


def test_prerequisites_met(tiny_catalog):
    """Home insurance needs a mortgage; card and mortgage need a current account."""
    held = _held(tiny_catalog, [], ["current_account"], ["current_account", "mortgage"])
    met = prerequisites_met(held, tiny_catalog)
    assert _eligible(met[0]) == ["current_account", "equity_fund"]
    assert _eligible(met[1]) == ["current_account", "credit_card", "mortgage", "equity_fund"]
    assert _eligible(met[2]) == PRODUCTS
    np.testing.assert_array_equal(prerequisites_met(held.toarray(), tiny_catalog), met)


def test_offerable_excludes_held_products(customers, tiny_bank, tiny_catalog):
    """Offerable = eligible & prerequisites held & not held, at the last snapshot."""
    from recommender.data.interactions import snapshot_matrix

    held = snapshot_matrix(tiny_bank.holdings, (6, 5), tiny_bank.snapshots[-1])
    offerable = offerable_mask(customers, held, tiny_catalog)
    assert _eligible(offerable[0]) == ["equity_fund"]  # C001: card needs more income
    assert _eligible(offerable[1]) == ["credit_card", "equity_fund"]  # C002 holds the home set
    assert _eligible(offerable[2]) == []  # C003: everything held, too old or no mortgage
    assert _eligible(offerable[3]) == ["equity_fund"]  # C004
    assert _eligible(offerable[4]) == ["equity_fund"]  # C005: no mortgage, so no home cover
    assert _eligible(offerable[5]) == ["mortgage"]  # C006: card and fund held
    np.testing.assert_array_equal(offerable_mask(customers, held.toarray(), tiny_catalog),
                                  offerable)


def test_holdings_rules_of_a_few_customers_against_dense_counts():
    """Up to 64 customers, holding sets are read from a dense matrix; 70 products: two words."""
    rng = np.random.default_rng(1)
    held = rng.random((5, 70)) < 0.3
    marked = rng.random((70, 9)) < 0.05
    sets = holding_sets(sp.csr_matrix(held.astype(np.float32)))
    words = product_words(marked)
    count = held.astype(int) @ marked.astype(int)
    np.testing.assert_array_equal(holds_all(sets, words), count == marked.sum(axis=0))
    np.testing.assert_array_equal(holds_any(sets, words), count > 0)
    np.testing.assert_array_equal(holds(sets, np.arange(70)), held)


def test_product_words_are_kept_for_read_only_matrices_only():
    """A catalog's matrices are read-only: their bits are computed once. Any other matrix
    may change between calls, and is read again."""
    marked = np.eye(3, dtype=bool)
    assert product_words(marked)[0].tolist() == [0b001, 0b010, 0b100]
    marked[0, 1] = True
    assert product_words(marked)[0].tolist() == [0b001, 0b011, 0b100]
    marked.setflags(write=False)
    assert product_words(marked) is product_words(marked)


def test_catalog_arrays_are_built_once_and_read_only(tiny_catalog):
    ages = tiny_catalog.column("min_age")
    assert tiny_catalog.column("min_age") is ages and not ages.flags.writeable
    accepts = tiny_catalog.residency_matrix(("resident", "nan"))
    assert tiny_catalog.residency_matrix(("resident", "nan")) is accepts
    assert not accepts.flags.writeable
    assert accepts[0].all() and not accepts[1].any()  # "nan": a value no product lists


def test_offerable_applies_the_catalogs_exclusions_as_serving_does(packaged_catalog):
    """The packaged car loan is excluded by a consumer loan: whoever holds one is never
    offered the other, in evaluation as in serving (policy rule ``excluded_by_holding``)."""
    import pandas as pd

    ids = packaged_catalog.ids
    customers = pd.DataFrame({"customer_id": ["A", "B"], "age": [40, 40],
                              "income": [300_000.0, 300_000.0], "residency": "resident"})
    held = np.zeros((2, len(ids)), dtype=np.float32)
    held[:, ids.position("current_account")] = 1
    held[0, ids.position("consumer_loan")] = 1
    offerable = offerable_mask(customers, held, packaged_catalog)
    car = ids.position("car_loan")
    assert not offerable[0, car] and offerable[1, car]
