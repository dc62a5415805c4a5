"""The memory-mapped customer book answers exactly like the book built from the extracts."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from recommender.data import columns as C
from recommender.data.book import load_book
from recommender.data.mapped_book import MappedBook, book_key, open_book
from recommender.exceptions import ArtifactError, UnknownCustomerError
from recommender.policy.rules import ContactState, DecisionContext
from recommender.ranking import artifacts
from recommender.store.replay import batch_decision_inputs, decision_inputs

pytestmark = pytest.mark.numerics  # compares numbers two code paths compute


@pytest.fixture(scope="module")
def model(served_demo_bank):
    return artifacts.load(served_demo_bank["MODELS_DIR"])


def test_batches_equal_the_book_built_from_the_extracts(served_demo_bank, model, tmp_path):
    data = served_demo_bank["DATA_DIR"]
    book = load_book(data, model)
    mapped = open_book(data, model, tmp_path)
    assert isinstance(mapped, MappedBook) and len(mapped) == len(book)
    assert mapped.snapshot == book.snapshot
    positions = np.random.default_rng(3).permutation(len(book))[:300]
    expected, got = book.batch(positions), mapped.batch(positions)
    assert got.customer_ids.tolist() == expected.customer_ids.tolist()
    pd.testing.assert_frame_equal(got.profiles, expected.profiles, check_dtype=True)
    for a, b in zip((got.held, got.confidence, *got.lags),
                    (expected.held, expected.confidence, *expected.lags), strict=True):
        assert (a != b).nnz == 0
    assert np.array_equal(got.stages, expected.stages)
    assert np.array_equal(got.present, expected.present)
    for position in positions[:50]:
        customer = str(expected.customer_ids[positions.tolist().index(position)])
        assert mapped.position(customer) == book.position(customer) == position
        assert mapped.held_product_ids(position) == book.held_product_ids(position)
        one, same = mapped.batch(np.array([position])), book.batch(np.array([position]))
        for a, b in zip((one.held, one.confidence, *one.lags),
                        (same.held, same.confidence, *same.lags), strict=True):
            assert a.shape == b.shape and (a != b).nnz == 0  # the one-row fast path
        pd.testing.assert_frame_equal(one.profiles, same.profiles)
    assert np.array_equal(np.asarray(mapped.stage_codes), book.stage_codes)
    with pytest.raises(UnknownCustomerError, match="C99999999"):
        mapped.position("C99999999")
    assert "C99999999" not in mapped


def test_the_cache_is_reused_and_follows_new_extracts(served_demo_bank, model, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(served_demo_bank["DATA_DIR"], data)
    first = open_book(data, model, tmp_path / "cache").folder
    assert open_book(data, model, tmp_path / "cache").folder == first  # not rebuilt
    holdings = data / "holdings.parquet"
    os.utime(holdings, ns=(holdings.stat().st_atime_ns, holdings.stat().st_mtime_ns + 10**9))
    assert book_key(data, model) != first.name  # a new extract: a new book
    second = open_book(data, model, tmp_path / "cache").folder
    assert second != first and second.exists()


def test_a_damaged_or_foreign_cache_is_refused(served_demo_bank, model, tmp_path):
    folder = open_book(served_demo_bank["DATA_DIR"], model, tmp_path).folder
    (folder / "book.json").write_text("{", encoding="utf-8")
    with pytest.raises(ArtifactError, match="not a saved customer book"):
        MappedBook(folder, model.catalog, model.stages)
    (folder / "book.json").write_text('{"format": 1, "products": ["x"]}', encoding="utf-8")
    with pytest.raises(ArtifactError, match="another format or catalog"):
        MappedBook(folder, model.catalog, model.stages)


def test_plain_profile_records_and_decoded_arrays_equal_the_extracts(served_demo_bank, model,
                                                                      tmp_path):
    """What a decision records and what the rules read, without building a profiles table."""
    data = tmp_path / "data"
    shutil.copytree(served_demo_bank["DATA_DIR"], data)
    customers = pd.read_parquet(data / "customers.parquet")
    customers.loc[::7, "risk_assessed_on"] = None  # never assessed: a missing date
    customers.loc[::5, "income"] = np.nan  # not declared
    customers.to_parquet(data / "customers.parquet", index=False)
    book = load_book(data, model)
    mapped = open_book(data, model, tmp_path / "cache")
    positions = np.arange(len(book))
    expected, got = book.batch(positions), mapped.batch(positions)
    records = got.profile_records(list(range(len(book))))
    assert records == expected.profile_records(list(range(len(book))))
    assert all(type(v) in (str, int, float, bool, type(None))
               for record in records for v in record.values())
    assert records[7]["risk_assessed_on"] is None and records[0]["income"] is None  # not NaT
    assert isinstance(records[1]["risk_assessed_on"], str)
    for name, values in vars(expected.profile_arrays).items():
        if isinstance(values, np.ndarray):
            assert np.array_equal(getattr(got.profile_arrays, name), values, equal_nan=True), name
        else:
            assert getattr(got.profile_arrays, name) == values, name
    one = mapped.batch(np.array([7]))
    assert one.profile_records([0]) == [records[7]]
    assert "profiles" not in vars(one)  # the table is built only when something reads it
    pd.testing.assert_frame_equal(one.profiles, book.batch(np.array([7])).profiles)


def test_a_one_customer_row_is_the_row_scipy_cuts(served_demo_bank, model, tmp_path):
    """The answer's rows skip scipy's constructor: the same arrays, dtypes and attributes."""
    mapped = open_book(served_demo_bank["DATA_DIR"], model, tmp_path)
    counts = np.diff(mapped.held.indptr)
    for position in [int(np.argmin(counts)), int(np.argmax(counts)), len(mapped) - 1]:
        one = mapped.batch(np.array([position]))
        for row, matrix in zip((*one.lags, one.confidence), (*mapped.lags, mapped.confidence),
                               strict=True):
            cut = matrix[[position]]
            assert set(vars(cut)) <= set(vars(row))  # nothing scipy sets is missing
            for name in ("data", "indices", "indptr"):
                got, expected = getattr(row, name), getattr(cut, name)
                assert got.dtype == expected.dtype and np.array_equal(got, expected), name
                assert got.flags.writeable  # copies, not views of the mapped file
            assert row.shape == cut.shape and row.has_sorted_indices
            row.check_format(full_check=True)
            assert (row != cut).nnz == 0
    if model.config.cf.weighting == "binary":  # CF confidence is the holdings: read once
        assert mapped.confidence is mapped.held and one.confidence is one.held


def test_decision_inputs_are_the_same_for_one_customer_a_batch_and_the_extracts(
        served_demo_bank, model, tmp_path):
    """The one-customer fast paths record exactly what the general ones do, as JSON too."""
    data = served_demo_bank["DATA_DIR"]
    book, mapped = load_book(data, model), open_book(data, model, tmp_path)
    positions = np.random.default_rng(5).permutation(len(book))[:6]
    n, products = len(positions), len(model.catalog)
    rng = np.random.default_rng(6)
    contact = ContactState(*(rng.random((n, products)) < 0.2 for _ in range(3)),
                           shown_today=rng.integers(0, 3, n))
    context = DecisionContext("branch", None, datetime(2026, 1, 15, 9, tzinfo=UTC))
    rows = [4, 1, 1]
    many = batch_decision_inputs(mapped.batch(positions), model.catalog, contact, context, 5,
                                 rows)
    extracts = batch_decision_inputs(book.batch(positions), model.catalog, contact, context, 5,
                                     rows)
    single = [decision_inputs(mapped.batch(positions[[i]]), 0, model.catalog,
                              contact.take(np.array([i])), context, 5) for i in rows]
    assert json.dumps(many) == json.dumps(extracts) == json.dumps(single)
    assert many == extracts == single
    assert all(C.GENDER not in inputs["profile"] for inputs in many)  # never recorded
