"""The campaign's candidate pool: pruning keeps every pair the greedy takes, ties included,
and knowing which customers' holdings changed since training."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.campaign.assignment import greedy_assign
from recommender.campaign.run import CandidatePool
from recommender.campaign.ties import tie_codes
from recommender.ranking.ranker import changed_rows


def _greedy_pairs(ids, cols, values, quotas, per_customer) -> set[tuple[str, int]]:
    codes = tie_codes(ids)  # ties between customers: the hash of their id
    chosen = greedy_assign(codes, cols, values, quotas, per_customer)
    return {(str(ids[i]), int(cols[i])) for i in chosen}


@pytest.mark.parametrize("seed", range(10))
def test_pruning_in_any_chunks_keeps_what_the_greedy_takes_among_many_ties(seed):
    """Calibrated propensities come in steps, so most values tie: pruning must keep the pairs
    the greedy meets first (value, then the hash of the customer id), whatever the chunks."""
    rng = np.random.default_rng(seed)
    n_customers, products = 400, np.array([2, 5, 7])
    ids = rng.permutation(np.array([f"K{i:04d}" for i in range(n_customers)], dtype=object))
    pairs = [(c, p) for c in range(n_customers) for p in products if rng.random() < 0.7]
    customers = ids[[c for c, _ in pairs]]
    cols = np.array([p for _, p in pairs])
    values = rng.integers(1, 4, len(pairs)) / 8.0  # three values only
    quotas = {2: 30, 5: 10, 7: 25}
    per_customer = int(rng.integers(1, 3))
    expected = _greedy_pairs(customers, cols, values, quotas, per_customer)

    pool = CandidatePool(keep={c: sum(quotas.values()) for c in quotas})
    for part in np.array_split(rng.permutation(len(pairs)), 7):
        pool.add(ids=customers[part], cols=cols[part], values=values[part])
        pool.prune()
    kept = pool.merged()
    assert len(kept["cols"]) < len(pairs)  # pruning did remove pairs
    assert _greedy_pairs(kept["ids"], kept["cols"], kept["values"], quotas,
                         per_customer) == expected


def test_changed_rows_compares_the_sets_of_held_products():
    current = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0], [2, 0, 0]],
                                     dtype=np.float32))
    trained = sp.csr_matrix(np.array([[1, 0, 3], [1, 0, 0], [1, 1, 1], [0, 0, 0], [1, 0, 0]],
                                     dtype=np.float32))
    trained.data[trained.data == 3] = 0  # an explicit zero is not a holding
    np.testing.assert_array_equal(changed_rows(current, trained),
                                  [True, True, True, False, False])


def test_changed_rows_agrees_with_dense_comparison_on_random_matrices():
    rng = np.random.default_rng(4)
    for _ in range(50):
        a = (rng.random((30, 6)) < 0.3) * rng.choice([0.0, 1.0, 2.0], (30, 6))
        b = np.where(rng.random((30, 6)) < 0.1, rng.choice([0.0, 1.0], (30, 6)), a)
        expected = ((a > 0) != (b > 0)).any(axis=1)
        got = changed_rows(sp.csr_matrix(a, dtype=np.float32), sp.csr_matrix(b, dtype=np.float32))
        np.testing.assert_array_equal(got, expected)
