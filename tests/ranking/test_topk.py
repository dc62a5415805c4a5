"""top_k: best first, ties by position, not-offerable entries come back as -1."""

import numpy as np

from recommender.ranking.topk import NOT_OFFERABLE, top_k


def test_best_first():
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [3.0, 1.0, 2.0, 0.0]])
    positions, chosen = top_k(scores, 3)
    assert positions.tolist() == [[1, 3, 2], [0, 2, 1]]
    np.testing.assert_array_equal(chosen, [[0.9, 0.7, 0.5], [3.0, 2.0, 1.0]])
    assert positions.dtype == np.int64


def test_ties_are_broken_by_position():
    scores = np.array([[1.0, 2.0, 1.0, 2.0, 1.0]])
    assert top_k(scores, 4)[0].tolist() == [[1, 3, 0, 2]]


def test_not_offerable_entries_are_minus_one():
    """-inf and implicit's -3.4e38 sentinel never come out as real product positions."""
    scores = np.array([[-np.inf, 0.5, -3.4e38, NOT_OFFERABLE]], dtype=np.float64)
    positions, chosen = top_k(scores, 4)
    assert positions.tolist() == [[1, -1, -1, -1]]
    assert chosen[0, 0] == 0.5


def test_k_larger_than_products_and_k_zero():
    scores = np.array([[0.2, 0.1]])
    assert top_k(scores, 10)[0].tolist() == [[0, 1]]
    positions, chosen = top_k(scores, 0)
    assert positions.shape == (1, 0) and chosen.shape == (1, 0)


def test_many_products_take_the_partial_sort_path():
    """Over 64 products an argpartition is used; the best k are still right and ordered."""
    rng = np.random.default_rng(0)
    scores = rng.random((20, 200))
    positions, chosen = top_k(scores, 5)
    expected = np.argsort(-scores, axis=1)[:, :5]
    np.testing.assert_array_equal(positions, expected)
    np.testing.assert_array_equal(chosen, np.take_along_axis(scores, expected, axis=1))
    scores[3, :] = -np.inf
    scores[4, 2:] = -np.inf
    positions, _ = top_k(scores, 3)
    assert positions[3].tolist() == [-1, -1, -1]
    assert positions[4].tolist() == list(np.argsort(-scores[4, :2])) + [-1]


def test_ties_by_position_with_many_products():
    """The documented tie rule holds whatever the number of products."""
    scores = np.zeros((1, 100))
    scores[0, 99] = 1.0
    assert top_k(scores, 3)[0].tolist() == [[99, 0, 1]]
