"""Customer batches: chunks, decoded profiles and the model's customer map give the same
answers as batches built the slow way."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from recommender.data import columns as C
from recommender.data.book import CustomerBook, load_book, profile_batch
from recommender.data.extracts import load_bank
from recommender.data.profiles import ProfileArrays
from recommender.exceptions import DataValidationError
from recommender.policy.offers import OfferEngine
from recommender.policy.rules import DecisionContext
from recommender.ranking import artifacts

from tolerance import assert_close

pytestmark = pytest.mark.numerics  # compares numbers two code paths compute


@pytest.fixture(scope="module")
def model(served_demo_bank):
    return artifacts.load(served_demo_bank["MODELS_DIR"])


@pytest.fixture(scope="module")
def book(served_demo_bank, model):
    return load_book(served_demo_bank["DATA_DIR"], model)


def _assert_same_arrays(a: ProfileArrays, b: ProfileArrays) -> None:
    for name in ("age", "income", "risk_level", "assessed_on", "consent", "vulnerable",
                 "open_complaint"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert (np.asarray(a.residencies)[a.residency] == np.asarray(b.residencies)[b.residency]).all()


def test_chunks_equal_batches_of_the_same_positions(book):
    chunks = list(book.chunks(400))
    assert sum(len(c) for c in chunks) == len(book)
    chunk = chunks[1]
    expected = book.batch(np.arange(400, 800))
    assert chunk.customer_ids.tolist() == expected.customer_ids.tolist()
    pd.testing.assert_frame_equal(chunk.profiles, expected.profiles)
    for a, b in zip((chunk.held, chunk.confidence, *chunk.lags),
                    (expected.held, expected.confidence, *expected.lags), strict=True):
        assert a.shape == b.shape and (a != b).nnz == 0
    np.testing.assert_array_equal(chunk.positions, np.arange(400, 800))
    _assert_same_arrays(chunk.profile_arrays, expected.profile_arrays)


def test_profiles_decoded_by_the_book_equal_profiles_decoded_by_the_batch(book):
    rows = np.random.default_rng(0).permutation(len(book))[:300]
    batch = book.batch(rows).take(np.arange(0, 300, 2))
    _assert_same_arrays(batch.profile_arrays, ProfileArrays.of(batch.profiles))


def test_a_batch_whose_profiles_are_replaced_decodes_the_new_ones(book):
    batch = book.batch(np.arange(50))
    assert batch.profile_arrays.consent.any()
    refused = replace(batch, profile_frame=batch.profiles.assign(**{C.CONSENT_PROFILING: False}))
    assert not refused.profile_arrays.consent.any()


def test_a_profile_batch_decodes_its_own_profile(book):
    profile = book.profiles.iloc[7].to_dict()
    batch = profile_batch(profile, book.held_product_ids(7), book.catalog, book.stages)
    _assert_same_arrays(batch.profile_arrays, book.batch(np.array([7])).profile_arrays)


def test_the_book_shares_the_models_customer_map_and_scores_alike(served_demo_bank, model, book):
    """load_book reuses the model's map (no lookups by id); a book with a map of its own finds
    the same rows by id and gets the same decisions."""
    assert book.ids is model.cf.customers
    bank = load_bank(served_demo_bank["DATA_DIR"], model.catalog)
    own = CustomerBook(bank, model.catalog, model.stages)
    assert own.ids is not model.cf.customers
    rows = np.random.default_rng(1).permutation(len(book))[:200]
    shared, looked_up = book.batch(rows), own.batch(rows)
    np.testing.assert_array_equal(shared.rows_in(model.cf.customers),
                                  looked_up.rows_in(model.cf.customers))
    engine, context = OfferEngine(model), DecisionContext(channel="branch")
    a, b = engine.score(shared, 5, context), engine.score(looked_up, 5, context)
    assert_close(a.priority, b.priority)
    np.testing.assert_array_equal(a.sources, b.sources)
    np.testing.assert_array_equal(a.order, b.order)


def test_a_described_customer_is_refused_by_the_field_of_the_request(book):
    """A request body is no file: its errors name the body's field."""
    profile = book.profiles.iloc[7].to_dict()
    with pytest.raises(DataValidationError, match=r"\(field 'holdings'\)") as refused:
        profile_batch(profile, ["no_such_product"], book.catalog, book.stages)
    assert "file" not in str(refused.value) and refused.value.field == "holdings"
    with pytest.raises(DataValidationError, match=r"\(field 'customer.age'\)") as refused:
        profile_batch({**profile, C.AGE: -3}, [], book.catalog, book.stages)
    assert "file" not in str(refused.value) and "column" not in str(refused.value)
