"""Customer x product matrices from holdings snapshots, and acquisitions between snapshots."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recommender.data.interactions import (
    acquisitions,
    confidence_matrix,
    row_sets_equal,
    snapshot_matrix,
)

# customers C001..C006 are rows 0..5; products current_account, credit_card, mortgage,
# home_insurance, equity_fund are columns 0..4 (see conftest).
LAST = np.array([
    [1, 0, 0, 0, 0],
    [1, 0, 1, 1, 0],
    [1, 0, 0, 0, 1],
    [1, 1, 1, 1, 0],
    [1, 1, 0, 0, 0],
    [1, 1, 0, 0, 1],
], dtype=np.float32)


def test_snapshot_matrix_shape_and_content(tiny_bank):
    """Rows are customers, columns products, 1.0 where held at that snapshot."""
    first, _, last = tiny_bank.snapshots
    held = snapshot_matrix(tiny_bank.holdings, (6, 5), last)
    assert sp.isspmatrix_csr(held) and held.shape == (6, 5) and held.dtype == np.float32
    np.testing.assert_array_equal(held.toarray(), LAST)
    early = snapshot_matrix(tiny_bank.holdings, (6, 5), first).toarray()
    assert early[4].sum() == 0  # C005 had not joined yet
    assert early[1].tolist() == [1, 0, 0, 0, 0]  # C002 before the mortgage


def test_snapshot_without_holdings_is_empty(tiny_bank):
    empty = snapshot_matrix(tiny_bank.holdings, (6, 5), pd.Timestamp("2020-01-31"))
    assert empty.shape == (6, 5) and empty.nnz == 0


def test_duplicate_rows_still_give_binary_values(tiny_bank):
    doubled = pd.concat([tiny_bank.holdings, tiny_bank.holdings], ignore_index=True)
    held = snapshot_matrix(doubled, (6, 5), tiny_bank.snapshots[-1])
    np.testing.assert_array_equal(held.toarray(), LAST)


def test_binary_confidence_is_the_snapshot(tiny_bank):
    last = tiny_bank.snapshots[-1]
    np.testing.assert_array_equal(
        confidence_matrix(tiny_bank.holdings, (6, 5), last).toarray(), LAST)


def test_months_held_weighting(tiny_bank):
    """1 + log(1 + snapshots held so far): 3 months > 2 months > 1 month > not held."""
    weighted = confidence_matrix(tiny_bank.holdings, (6, 5), tiny_bank.snapshots[-1],
                                 "months_held").toarray()
    one, two, three = 1 + np.log(2), 1 + np.log(3), 1 + np.log(4)
    np.testing.assert_allclose(weighted[1], [three, 0, two, one, 0], rtol=1e-6)  # C002
    np.testing.assert_allclose(weighted[4], [two, one, 0, 0, 0], rtol=1e-6)  # C005
    assert weighted.dtype == np.float32
    # at the first snapshot, every holding is one month old
    first = confidence_matrix(tiny_bank.holdings, (6, 5), tiny_bank.snapshots[0],
                              "months_held").toarray()
    np.testing.assert_allclose(first[first > 0], one, rtol=1e-6)


def test_months_held_ignores_later_snapshots(tiny_bank):
    middle = confidence_matrix(tiny_bank.holdings, (6, 5), tiny_bank.snapshots[1],
                               "months_held").toarray()
    assert middle[1, 0] == pytest.approx(1 + np.log(3))  # two months, not three
    assert middle[1, 3] == 0  # home insurance only came later


def test_unknown_weighting_is_refused(tiny_bank):
    with pytest.raises(ValueError, match="unknown weighting 'tenure'"):
        confidence_matrix(tiny_bank.holdings, (6, 5), tiny_bank.snapshots[-1], "tenure")


def test_acquisitions_between_snapshots(tiny_bank):
    """New products of customers present before; customers absent before are left out."""
    first, middle, last = (snapshot_matrix(tiny_bank.holdings, (6, 5), s)
                           for s in tiny_bank.snapshots)
    added = acquisitions(first, middle).toarray()
    expected = np.zeros((6, 5), dtype=np.float32)
    expected[1, 2] = 1  # C002 took a mortgage; C005's account opening is not a cross-sell
    np.testing.assert_array_equal(added, expected)

    added = acquisitions(middle, last).toarray()
    expected = np.zeros((6, 5), dtype=np.float32)
    expected[1, 3] = expected[4, 1] = expected[5, 4] = 1  # home cover, card, fund
    np.testing.assert_array_equal(added, expected)


def test_acquisitions_ignore_closed_products():
    before = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0]], dtype=np.float32))
    after = sp.csr_matrix(np.array([[1, 0, 1], [0, 0, 0]], dtype=np.float32))
    added = acquisitions(before, after)
    assert sp.isspmatrix_csr(added) and added.dtype == np.float32
    np.testing.assert_array_equal(added.toarray(), [[0, 0, 1], [0, 0, 0]])


def test_row_sets_equal():
    a = sp.csr_matrix(np.array([[1, 0, 2], [0, 1, 0]], dtype=np.float32))
    b = sp.csr_matrix(np.array([[3, 0, 1], [1, 0, 0]], dtype=np.float32))
    assert row_sets_equal(a, 0, b, 0)  # values are ignored
    assert not row_sets_equal(a, 1, b, 1)
