"""The propensity-to-own model (one snapshot): known answers, out-of-fold scoring, storage."""

import logging

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recommender.data import columns as C
from recommender.ranking.evaluation import auc
from recommender.ranking.ownership import OwnershipModel, folds_of

N = 2_000
PRODUCTS = ["account", "card", "loan", "lottery"]


def _bank(seed: int = 5) -> tuple[sp.csr_matrix, pd.DataFrame, np.ndarray, np.ndarray]:
    """Everyone holds an account; a card goes with an income over 50k (90%); a loan with a
    card (80%); the lottery product is held at random (20%), related to nothing."""
    rng = np.random.default_rng(seed)
    income = rng.uniform(0, 100_000, N)
    card = np.where(income > 50_000, rng.random(N) < 0.9, rng.random(N) < 0.05)
    loan = np.where(card, rng.random(N) < 0.8, rng.random(N) < 0.05)
    held = np.column_stack([np.ones(N, bool), card, loan, rng.random(N) < 0.2])
    profiles = pd.DataFrame({C.AGE: rng.integers(20, 70, N).astype(float), C.INCOME: income,
                             C.TENURE_MONTHS: rng.integers(0, 100, N),
                             C.DEPENDANTS: np.zeros(N, int), C.SEGMENT: "mass"})
    ids = np.array([f"K{i:05d}" for i in range(N)])
    return sp.csr_matrix(held.astype(np.float32)), profiles, np.zeros(N, np.int64), ids


@pytest.fixture(scope="module")
def fitted():
    held, profiles, stages, ids = _bank()
    return OwnershipModel(folds=4).fit(held, profiles, stages, ids, PRODUCTS), held


def test_folds_come_from_a_stable_hash_of_the_id_not_the_order():
    ids = np.array([f"C{i}" for i in range(1000)])
    folds = folds_of(ids, 5)
    assert set(folds) == {0, 1, 2, 3, 4}
    shuffled = np.random.default_rng(0).permutation(1000)
    np.testing.assert_array_equal(folds_of(ids[shuffled], 5), folds[shuffled])
    assert 150 < np.bincount(folds).min() <= np.bincount(folds).max() < 250


def test_it_finds_who_holds_what_out_of_fold(fitted):
    model, held = fitted
    labels = (held > 0).toarray()
    scores = model.out_of_fold
    assert auc(scores[:, 1], labels[:, 1]) > 0.9  # income tells card holders
    assert auc(scores[:, 2], labels[:, 2]) > 0.85  # the card tells loan holders
    assert 0.4 < auc(scores[:, 3], labels[:, 3]) < 0.6  # nothing tells the lottery
    assert model.boosters[0][0] is None  # everyone holds an account: its share, no model
    np.testing.assert_allclose(scores[:, 0], 1.0)


def test_scores_are_calibrated_probabilities_of_holding(fitted):
    model, held = fitted
    labels = (held > 0).toarray()
    scores = model.out_of_fold
    assert scores.min() >= 0 and scores.max() <= 1
    for j in (1, 2, 3):  # isotonic on the out-of-fold scores: the means agree
        assert scores[:, j].mean() == pytest.approx(labels[:, j].mean(), abs=0.01)


def test_a_customer_is_never_scored_by_a_model_that_saw_them(fitted):
    """Flip one customer's card: the models of every other fold change, the model of that
    customer's own fold (the one that scores them) does not."""
    model, _ = fitted
    held, profiles, stages, ids = _bank()
    dense = held.toarray()
    dense[7, 1] = 1 - dense[7, 1]
    flipped = OwnershipModel(folds=4).fit(sp.csr_matrix(dense), profiles, stages, ids, PRODUCTS)
    own = folds_of(ids[7:8], 4)[0]
    for f in range(4):
        same = (flipped.boosters[1][f].model_to_string()
                == model.boosters[1][f].model_to_string())
        assert same == (f == own), f


def test_predict_scores_known_customers_as_out_of_fold(fitted):
    model, held = fitted
    _, profiles, stages, ids = _bank()
    again = model.predict(held, profiles, stages, ids)
    np.testing.assert_allclose(again, model.out_of_fold, rtol=1e-5, atol=1e-6)


def test_state_round_trip_predicts_the_same(fitted):
    model, held = fitted
    _, profiles, stages, ids = _bank()
    loaded = OwnershipModel.from_state(model.to_state())
    np.testing.assert_array_equal(loaded.predict(held[:50], profiles.iloc[:50], stages[:50],
                                                 ids[:50]),
                                  model.predict(held[:50], profiles.iloc[:50], stages[:50],
                                                ids[:50]))


def test_a_product_too_rare_to_learn_gets_its_holding_share_and_a_warning(caplog):
    held, profiles, stages, ids = _bank()
    dense = held.toarray()
    dense[:, 3] = 0
    dense[:3, 3] = 1  # three holders: fewer than two per fold
    with caplog.at_level(logging.WARNING):
        model = OwnershipModel(folds=4).fit(sp.csr_matrix(dense), profiles, stages, ids,
                                            PRODUCTS)
    assert "product lottery: 3 of 2000 customers hold it" in caplog.text
    assert model.boosters[3] == [None] * 4
    np.testing.assert_allclose(model.out_of_fold[:, 3], 3 / N)
