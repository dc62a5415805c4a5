"""Ranking metrics on hand-computed examples (Kaggle AP@k, precision, recall, NDCG)."""

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.ranking.evaluation import auc, lift, product_metrics, ranking_metrics

LOG2_3 = np.log2(3)


def test_hand_computed_example():
    """Customer A added {0, 2}, ranked [1, 2, 0]: hits at ranks 2 and 3.
    Customer B added {3}, ranked [1, 2] and a pad: no hit. Customer C added nothing: skipped.

    AP(A) = (1/2 + 2/3) / min(2, 3) = 7/12; AP(B) = 0.
    NDCG(A) = (1/log2(3) + 1/log2(4)) / (1 + 1/log2(3)); NDCG(B) = 0.
    """
    top = np.array([[1, 2, 0], [1, 2, -1], [0, 1, 2]])
    added = np.array([[1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    metrics = ranking_metrics(top, added, 3)
    ndcg_a = (1 / LOG2_3 + 0.5) / (1 + 1 / LOG2_3)
    assert metrics["customers"] == 2
    assert metrics["map@3"] == pytest.approx((7 / 12) / 2)
    assert metrics["precision@3"] == pytest.approx((2 / 3) / 2)
    assert metrics["recall@3"] == pytest.approx(0.5)
    assert metrics["ndcg@3"] == pytest.approx(ndcg_a / 2)
    assert metrics["coverage"] == pytest.approx(3 / 4)  # products 0, 1, 2 offered


def test_perfect_ranking_scores_one():
    top = np.array([[2, 0, 1]])
    added = np.array([[1, 0, 1]])
    metrics = ranking_metrics(top, added, 3)
    assert metrics["map@3"] == pytest.approx(1.0)
    assert metrics["ndcg@3"] == pytest.approx(1.0)
    assert metrics["recall@3"] == pytest.approx(1.0)
    assert metrics["precision@3"] == pytest.approx(2 / 3)


def test_ap_divides_by_k_when_more_were_added_than_offered():
    """Three acquisitions, two offers, both hits: AP@2 = (1 + 1) / min(3, 2) = 1; recall 2/3."""
    top = np.array([[0, 1]])
    added = np.array([[1, 1, 1, 0]])
    metrics = ranking_metrics(top, added, 2)
    assert metrics["map@2"] == pytest.approx(1.0)
    assert metrics["recall@2"] == pytest.approx(2 / 3)
    assert metrics["ndcg@2"] == pytest.approx(1.0)


def test_single_late_hit():
    """One relevant product at rank 3: AP = 1/3, NDCG = 1/log2(4) = 0.5."""
    metrics = ranking_metrics(np.array([[0, 1, 2]]), np.array([[0, 0, 1]]), 3)
    assert metrics["map@3"] == pytest.approx(1 / 3)
    assert metrics["ndcg@3"] == pytest.approx(0.5)
    assert metrics["precision@3"] == pytest.approx(1 / 3)


def test_only_the_first_k_positions_count():
    top = np.array([[3, 2, 1, 0]])
    added = np.array([[1, 0, 0, 0]])
    assert ranking_metrics(top, added, 3)["map@3"] == 0.0
    assert ranking_metrics(top, added, 4)["map@4"] == pytest.approx(1 / 4)


def test_padding_never_counts_as_a_hit():
    """-1 pads short lists; it must not be read as product -1 (the last column)."""
    metrics = ranking_metrics(np.array([[-1, -1]]), np.array([[0, 1]]), 2)
    assert metrics["map@2"] == 0.0 and metrics["recall@2"] == 0.0
    assert metrics["coverage"] == 0.0


def test_sparse_labels_and_weights_are_accepted():
    """Labels may be a CSR matrix with any positive values."""
    top = np.array([[1, 2, 0]])
    dense = ranking_metrics(top, np.array([[1, 0, 1]]), 3)
    assert ranking_metrics(top, sp.csr_matrix(np.array([[2.0, 0, 5.0]])), 3) == dense


def test_no_customer_with_acquisitions():
    metrics = ranking_metrics(np.array([[0, 1]]), np.zeros((1, 3)), 2)
    assert metrics == {"customers": 0, "map@2": 0.0, "map@1": 0.0, "precision@2": 0.0,
                       "recall@2": 0.0,
                       "ndcg@2": 0.0, "coverage": 0.0}


def test_fewer_ranked_columns_than_k():
    """Two products offered with k = 5: missing ranks count as misses."""
    metrics = ranking_metrics(np.array([[0, 1]]), np.array([[0, 1]]), 5)
    assert metrics["map@5"] == pytest.approx(0.5)
    assert metrics["recall@5"] == pytest.approx(1.0)


def test_map_at_1_counts_the_first_offer_only():
    top = np.array([[1, 0], [0, 1]])
    added = np.array([[1, 0], [1, 0]])
    assert ranking_metrics(top, added, 2)["map@1"] == pytest.approx(0.5)


def test_auc_hand_computed_with_a_tie():
    """Positives scored 3 and 1, negatives 2 and 1: pairs (3>2, 3>1, 1<2, 1=1) = 2.5 / 4."""
    scores = np.array([3.0, 1.0, 2.0, 1.0])
    labels = np.array([True, True, False, False])
    assert auc(scores, labels) == pytest.approx(2.5 / 4)
    assert auc(scores, np.ones(4, dtype=bool)) is None


def test_lift_counts_ties_at_the_cut_by_their_share():
    """Top 2 of 4 when the 2nd to 4th are tied: one sure hit plus 1/3 of the tied group's
    one hit, over a base rate of 2/4."""
    scores = np.array([5.0, 1.0, 1.0, 1.0])
    labels = np.array([1, 1, 0, 0])
    expected = ((1 + 1 / 3) / 2) / 0.5
    assert lift(scores, labels, share=0.5) == pytest.approx(expected)
    shuffled = np.array([0, 3, 2, 1])
    assert lift(scores[shuffled], labels[shuffled], share=0.5) == pytest.approx(expected)


def test_product_metrics_only_rank_a_products_candidates():
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.3], [0.0, 0.4]])
    labels = np.array([[1, 0], [0, 1], [0, 0], [0, 1]], dtype=bool)
    candidates = np.array([[1, 1], [1, 1], [1, 0], [0, 1]], dtype=bool)
    result = product_metrics(scores, labels, candidates, ["a", "b"], share=0.5)
    assert result["by_product"]["a"]["auc"] == pytest.approx(1.0)
    assert result["by_product"]["b"]["candidates"] == 3
    assert result["by_product"]["b"]["auc"] == pytest.approx(1.0)  # 0.2, 0.4 over 0.1
    assert result["mean_auc"] == pytest.approx(1.0)
