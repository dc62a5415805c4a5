"""The CF wrapper: shapes, fit state, determinism, fold-in, explanations, recommendations.

Data: 26 customers x 5 products A-E. Ten hold {A, B}, ten hold {C, D}, U20-U21 hold only A,
U22-U23 only C, U24 holds {A, B, E}, U25 {C, D, E}.
"""

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.data.ids import IdMap
from recommender.exceptions import NotFittedError, UnknownIdError
from recommender.ranking.cf import CFModel
from recommender.ranking.config import CFConfig
from recommender.ranking.topk import NOT_OFFERABLE

pytestmark = pytest.mark.numerics  # compares numbers two code paths compute

A, B, C, D, E = range(5)


def _user_items() -> sp.csr_matrix:
    matrix = np.zeros((26, 5), dtype=np.float32)
    matrix[0:10, [A, B]] = 1
    matrix[10:20, [C, D]] = 1
    matrix[20:22, A] = 1
    matrix[22:24, C] = 1
    matrix[24, [A, B, E]] = 1
    matrix[25, [C, D, E]] = 1
    return sp.csr_matrix(matrix)


CUSTOMERS = IdMap([f"U{i:02d}" for i in range(26)], "customer")
PRODUCTS = IdMap(list("ABCDE"), "product")


def _fit(**config) -> CFModel:
    """Fit with 2 factors, one per group, so the groups are what ALS learns (pinned so that
    tuning the default does not change these known answers)."""
    return CFModel(CFConfig(**{"factors": 2, **config})).fit(_user_items(), CUSTOMERS, PRODUCTS)


@pytest.fixture(scope="module")
def als() -> CFModel:
    return _fit(iterations=50)


@pytest.fixture(scope="module")
def knn() -> CFModel:
    return _fit(kind="item_knn")


def test_factor_shapes_follow_the_id_maps(als):
    """user_factors has one row per customer, item_factors one per product."""
    state = als.to_state()
    assert state["user_factors"].shape[0] == 26
    assert state["item_factors"].shape[0] == 5
    assert state["user_factors"].shape[1] == state["item_factors"].shape[1] >= 2
    assert state["user_items"].shape == (26, 5)
    assert als.scores(np.arange(26)).shape == (26, 5)
    assert als.is_fitted


def test_fit_refuses_a_matrix_of_the_wrong_shape():
    """A products x customers matrix (implicit's old orientation) is an error, not a model."""
    with pytest.raises(ValueError, match=r"shape \(5, 26\), expected \(26, 5\)"):
        CFModel().fit(_user_items().T.tocsr(), CUSTOMERS, PRODUCTS)


@pytest.mark.parametrize("call", [
    lambda m: m.scores(np.array([0])),
    lambda m: m.fold_in_scores(_user_items()[:1]),
    lambda m: m.explain(_user_items()[0], 1),
    lambda m: m.recommend(["U00"]),
    lambda m: m.to_state(),
])
def test_not_fitted_error_before_fit(call):
    model = CFModel()
    assert not model.is_fitted
    with pytest.raises(NotFittedError, match="not fitted"):
        call(model)


def test_refit_with_the_same_seed_is_identical():
    """Same data, same seed: bit-identical scores (reproducible models)."""
    first, second = _fit(), _fit()
    np.testing.assert_array_equal(first.scores(np.arange(26)), second.scores(np.arange(26)))
    other = _fit(random_state=7)
    assert not np.array_equal(first.scores(np.arange(26)), other.scores(np.arange(26)))


def test_fold_in_of_an_unchanged_customer_ranks_like_scores(als):
    """Recomputing a customer's factors from unchanged holdings gives (nearly) their scores."""
    stored = als.scores(np.arange(26))
    folded = als.fold_in_scores(_user_items())
    assert folded.shape == (26, 5)
    np.testing.assert_allclose(folded, stored, atol=0.01)
    held = _user_items().toarray() > 0
    best_stored = np.where(held, -np.inf, stored).argmax(axis=1)
    best_folded = np.where(held, -np.inf, folded).argmax(axis=1)
    np.testing.assert_array_equal(best_folded[20:24], best_stored[20:24])


def test_co_held_product_scores_highest(als):
    """A-only customers are closest to the {A, B} group: B is their best unheld product."""
    scores = als.scores(CUSTOMERS.to_internal(["U20", "U22"]))
    assert scores[0, B] > max(scores[0, C], scores[0, D], scores[0, E])
    assert scores[1, D] > max(scores[1, A], scores[1, B], scores[1, E])


def test_fold_in_of_a_new_customer(als):
    """A customer the model never saw, holding only C, looks like the {C, D} group."""
    new = sp.csr_matrix(np.array([[0, 0, 1, 0, 0]], dtype=np.float32))
    scores = als.fold_in_scores(new)[0]
    assert scores[D] > max(scores[A], scores[B], scores[E])


@pytest.mark.parametrize("model_name", ["als", "knn"])
def test_explain_returns_held_products_with_positive_contributions(request, model_name):
    """Every reason is a product the customer holds, arguing for the offer (weight > 0)."""
    model = request.getfixturevalue(model_name)
    user_items = _user_items()
    non_empty = 0
    for row in range(26):
        held = set(user_items[row].indices)
        for product in range(5):
            pairs = model.explain(user_items[row], product, n=3)
            assert len(pairs) <= 3
            assert all(item in held for item, _ in pairs)
            assert all(weight > 0 for _, weight in pairs)
            assert [w for _, w in pairs] == sorted((w for _, w in pairs), reverse=True)
            non_empty += bool(pairs)
    assert non_empty > 0
    # known answer: an A-only customer is offered B because of A
    pairs = model.explain(user_items[20], B)
    assert [item for item, _ in pairs] == [A]


def test_explain_without_holdings_is_empty(als):
    assert als.explain(sp.csr_matrix((1, 5), dtype=np.float32), B) == []


def test_item_knn_scores_and_recommends(knn):
    """item-kNN: scores are holdings x cosine similarity; A-only customers get B first."""
    state = knn.to_state()
    assert state["similarity"].shape == (5, 5) and "user_factors" not in state
    scores = knn.scores(np.arange(26))
    assert scores.shape == (26, 5)
    np.testing.assert_allclose(knn.fold_in_scores(_user_items()), scores, rtol=1e-6)
    top = knn.recommend(["U20", "U22"], k=1)
    assert top["product_id"].tolist() == ["B", "D"]


@pytest.mark.parametrize("model_name", ["als", "knn"])
def test_recommend_never_offers_held_products_or_sentinels(request, model_name):
    """Held products are excluded and no -3.4e38 / -inf score escapes."""
    model = request.getfixturevalue(model_name)
    ids = CUSTOMERS.external_ids.tolist()
    frame = model.recommend(ids, k=5)
    assert list(frame.columns) == ["customer_id", "product_id", "score", "rank"]
    held = {(c, p) for c in ids for p in PRODUCTS.to_external(
        _user_items()[CUSTOMERS.position(c)].indices)}
    assert not held & set(zip(frame["customer_id"], frame["product_id"], strict=True))
    assert np.isfinite(frame["score"]).all() and (frame["score"] > NOT_OFFERABLE).all()
    # each customer gets exactly the products they do not hold, ranked 1..n
    counts = frame.groupby("customer_id")["rank"].max()
    assert counts["U00"] == 3 and counts["U24"] == 2 and counts["U20"] == 4
    assert (frame.groupby("customer_id")["score"].is_monotonic_decreasing).all()


def test_recommend_unknown_customer(als):
    with pytest.raises(UnknownIdError, match="U99"):
        als.recommend(["U00", "U99"])


def test_state_round_trip(als):
    """from_state(to_state()) scores exactly like the original."""
    rebuilt = CFModel.from_state(als.to_state(), CUSTOMERS, PRODUCTS)
    np.testing.assert_array_equal(rebuilt.scores(np.arange(26)), als.scores(np.arange(26)))
    assert rebuilt.config == als.config


def test_state_with_other_id_maps_is_refused(als):
    with pytest.raises(ValueError, match="stored matrix has shape"):
        CFModel.from_state(als.to_state(), CUSTOMERS.add_ids(["U99"]), PRODUCTS)


def test_fold_in_and_explanations_are_implicits_computed_reproducibly(als):
    """The reproducible solves give what implicit's recalculate_user and explain give."""
    user_items = _user_items()
    implicit_als = als._als
    rows = np.arange(user_items.shape[0])
    np.testing.assert_allclose(als.fold_in_factors(user_items),
                               implicit_als.recalculate_user(rows, user_items), atol=1e-5)
    every = user_items.shape[1]  # every contribution: no cut at the n-th to disagree on
    for row in rows[user_items.getnnz(axis=1) > 0]:
        for product in range(every):
            _, theirs, _ = implicit_als.explain(0, user_items[row], product, N=every)
            expected = {int(i): s for i, s in theirs if s > 1e-6}
            got = {i: s for i, s in als.explain(user_items[row], product, n=every) if s > 1e-6}
            assert got.keys() == expected.keys(), (row, product)
            np.testing.assert_allclose([got[i] for i in expected], list(expected.values()),
                                       rtol=1e-4, atol=1e-6)
