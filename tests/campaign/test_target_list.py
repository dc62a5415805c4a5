"""One product's target list (``nbo campaign --for-product``): customers by the product's
propensity, ties by a stable hash of the customer id, never by the order of the bank's files;
the product checked before the bank is read; an empty list refused, saying why."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from recommender.campaign.run import run_campaign
from recommender.campaign.spec import CampaignSpec
from recommender.campaign.target_list import COLUMNS, top_customers
from recommender.cli import main
from recommender.data import columns as C
from recommender.data.book import CustomerBook
from recommender.data.customers import validate_customers
from recommender.data.extracts import BankData, validate_holdings
from recommender.exceptions import ConfigError, InsufficientDataError
from recommender.policy.offers import OfferEngine
from recommender.policy.rules import DecisionContext

from tolerance import assert_close, assert_same_frame

pytestmark = pytest.mark.numerics  # compares numbers two code paths compute

PRODUCT = "bond_fund"


def _hash(ids) -> np.ndarray:
    """The tie order written out: pandas' 64-bit hash of each id."""
    return pd.util.hash_array(np.asarray(ids, dtype=object))


def _eligible(engine: OfferEngine, book: CustomerBook, product: str = PRODUCT):
    """Every customer's scores for the product, and who the policy lets it through for."""
    scored = engine.score(book.batch(np.arange(len(book))), 1, DecisionContext("branch"))
    column = engine.catalog.ids.position(product)
    return scored, column, np.isfinite(scored.priority[:, column]) & (scored.slots > 0)


def test_every_eligible_customer_by_propensity_then_hash(bank_and_engine):
    _, engine, book = bank_and_engine
    every = top_customers(engine, book, PRODUCT, None, chunk_size=700, progress=None)
    scored, column, ok = _eligible(engine, book)
    rows = np.flatnonzero(ok)
    ids = book.ids.to_external(rows)
    order = np.lexsort((_hash(ids), -scored.propensity[rows, column]))
    rows = rows[order]
    assert list(every.columns) == list(COLUMNS)
    assert 100 < len(every) < len(book)  # some hold it or are excluded
    assert every["customer_id"].tolist() == ids[order].tolist()
    assert every["rank"].tolist() == list(range(1, len(every) + 1))
    assert (every["product_id"] == PRODUCT).all()
    assert (np.diff(every["propensity"]) <= 0).all()
    assert_close(every["propensity"].to_numpy(), scored.propensity[rows, column])
    assert_close(every["priority"].to_numpy(), scored.priority[rows, column])
    assert_close(every["expected_value"].to_numpy(), scored.expected_gain[rows, column])
    np.testing.assert_array_equal(every["source"], scored.sources[rows])
    np.testing.assert_array_equal(
        every["life_stage"], book.stages.ids.to_external(book.stage_codes[rows]))
    assert set(every["source"]) <= {"cf", "cf_fold_in", "life_stage_prior", "popularity",
                                    "acquisition", "ownership"}
    top = top_customers(engine, book, PRODUCT, 25, chunk_size=97, progress=None)
    assert_same_frame(top, every.head(25))


def test_tied_propensities_are_ordered_by_the_hash_of_the_id_not_the_id(bank_and_engine):
    _, engine, book = bank_and_engine
    every = top_customers(engine, book, PRODUCT, None, progress=None)
    sizes = every["propensity"].value_counts()
    assert sizes.max() > 50  # calibrated propensities come in steps: many customers tie
    tied = every[every["propensity"] == sizes.idxmax()]["customer_id"].to_numpy()
    assert tied.tolist() == tied[np.argsort(_hash(tied))].tolist()
    assert tied.tolist() != sorted(tied.tolist())  # the id order would differ


def test_the_order_of_rows_in_the_customers_file_changes_nothing(bank_and_engine, tmp_path):
    from recommender.data.partition import open_customers

    root, engine, book = bank_and_engine
    expected = top_customers(engine, book, PRODUCT, None, progress=None)
    customers = pd.read_parquet(root / "data" / "customers.parquet")
    holdings = pd.read_parquet(root / "data" / "holdings.parquet")
    shuffled = customers.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert shuffled["customer_id"].tolist() != customers["customer_id"].tolist()
    profiles = validate_customers(shuffled, "<shuffled customers>")
    in_memory = CustomerBook(BankData(profiles, validate_holdings(
        holdings, engine.catalog, pd.Index(profiles[C.CUSTOMER_ID]))), engine.catalog,
        engine.stages)
    assert in_memory.ids.external_ids.tolist() == shuffled["customer_id"].tolist()
    assert_same_frame(top_customers(engine, in_memory, PRODUCT, None, chunk_size=500,
                                    progress=None), expected)
    (tmp_path / "data").mkdir()
    shuffled.to_parquet(tmp_path / "data" / "customers.parquet", index=False)
    holdings.sample(frac=1.0, random_state=4).to_parquet(tmp_path / "data" / "holdings.parquet",
                                                         index=False)
    with open_customers(tmp_path / "data", engine.model, part_size=700) as parted:
        assert parted.bank.parts > 1
        assert_same_frame(top_customers(engine, parted, PRODUCT, None, progress=None),
                          expected)


def test_an_uncalibrated_model_gives_scores_and_says_so(bank_and_engine, caplog):
    _, engine, book = bank_and_engine
    plain = OfferEngine(replace(engine.model, calibrator=None), engine.policy)
    with caplog.at_level(logging.WARNING):
        every = top_customers(plain, book, PRODUCT, None, progress=None)
    assert list(every.columns) == [c if c != "propensity" else "score" for c in COLUMNS]
    assert "not a calibrated take-up probability" in caplog.text
    scored, column, ok = _eligible(plain, book)
    rows = np.flatnonzero(ok)
    order = np.lexsort((_hash(book.ids.to_external(rows)), -scored.propensity[rows, column]))
    assert every["customer_id"].tolist() == book.ids.to_external(rows[order]).tolist()


def test_an_unknown_product_is_refused_naming_close_ones(bank_and_engine):
    _, engine, book = bank_and_engine
    with pytest.raises(ConfigError, match=r"'bnd_fund' is not in the model's catalog.*bond_fund"):
        top_customers(engine, book, "bnd_fund", 10, progress=None)


def test_an_empty_list_is_refused_saying_why(bank_and_engine):
    root, engine, book = bank_and_engine
    everyone = r"no customer is eligible for current_account.*every customer \(3,000\) holds it"
    with pytest.raises(InsufficientDataError, match=everyone):
        top_customers(engine, book, "current_account", None, progress=None)
    customers = pd.read_parquet(root / "data" / "customers.parquet")
    holdings = pd.read_parquet(root / "data" / "holdings.parquet")
    complaining = CustomerBook(BankData(customers.assign(**{C.OPEN_COMPLAINT: True}), holdings),
                               engine.catalog, engine.stages)
    with pytest.raises(InsufficientDataError,
                       match=r"of 3,000 customers hold it and the policy excludes the other .*"
                             r"open_complaint 2,5\d\d"):
        top_customers(engine, complaining, PRODUCT, 10, progress=None)


def test_quota_places_among_tied_customers_go_by_the_hash(bank_and_engine):
    """A campaign whose quota cuts through customers of equal expected value takes those
    whose id hashes lowest (not the lowest ids, not the first rows)."""
    _, engine, book = bank_and_engine
    every = top_customers(engine, book, PRODUCT, None, progress=None)
    value = every["expected_value"]
    tie = value.value_counts().idxmax()
    above = every[value > tie]["customer_id"].tolist()
    tied = every[value == tie]["customer_id"].to_numpy()
    quota = len(above) + len(tied) // 2
    spec = CampaignSpec(name="ties", channel="branch", products=(PRODUCT,),
                        quotas={PRODUCT: quota})
    chosen = set(run_campaign(engine, book, spec, chunk_size=600, progress=None)["customer_id"])
    winners = tied[np.argsort(_hash(tied))][:len(tied) // 2]
    assert chosen == set(above) | set(winners)
    assert set(winners) != set(sorted(tied)[:len(tied) // 2])


# --------------------------------------------------------------------------- the command


def _run(root, *extra) -> int:
    return main(["campaign", "--data", str(root / "data"), "--models", str(root / "models"),
                 *extra])


def test_nbo_campaign_for_a_product_with_all(bank_and_engine, tmp_path, capsys):
    root, engine, book = bank_and_engine
    out = tmp_path / "targets.csv"
    assert _run(root, "--for-product", PRODUCT, "--all", "--out", str(out)) == 0
    written = pd.read_csv(out, dtype={"customer_id": str})
    expected = top_customers(engine, book, PRODUCT, None, progress=None)
    assert list(written.columns) == list(COLUMNS)
    assert written["customer_id"].tolist() == expected["customer_id"].tolist()
    assert f"{len(expected):,} customers for {PRODUCT} written" in capsys.readouterr().out


def test_nbo_campaign_refuses_an_unknown_product_before_reading_the_bank(
        bank_and_engine, tmp_path, monkeypatch, caplog):
    import recommender.data.partition as partition

    def no_reading(*args, **kwargs):
        raise AssertionError("the bank was opened")

    monkeypatch.setattr(partition, "open_customers", no_reading)
    root, _, _ = bank_and_engine
    out = tmp_path / "t.csv"
    assert _run(root, "--for-product", "bnd_fund", "--top", "5", "--out", str(out)) == 2
    assert "'bnd_fund' is not in the model's catalog" in caplog.text
    assert "bond_fund" in caplog.text
    assert _run(root, "--for-product", PRODUCT, "--spec", "c.toml", "--out", str(out)) == 2
    assert "one of them" in caplog.text
    assert not out.exists()


def test_nbo_campaign_fails_on_an_empty_list_and_writes_nothing(bank_and_engine, tmp_path,
                                                                caplog):
    root, _, _ = bank_and_engine
    out = tmp_path / "t.parquet"
    assert _run(root, "--for-product", "current_account", "--all", "--out", str(out)) == 2
    assert "no customer is eligible for current_account" in caplog.text
    assert "holds it already" in caplog.text
    assert not out.exists()
