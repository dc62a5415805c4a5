"""Training and evaluation end to end: metrics, determinism, and known-answer offers."""

import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from recommender.cli import main
from recommender.data import columns as C
from recommender.data.book import CustomerBook, profile_batch
from recommender.data.catalog import catalog_text, parse_catalog
from recommender.data.customers import validate_customers
from recommender.data.eligibility import offerable_mask
from recommender.data.extracts import BankData, validate_holdings
from recommender.data.life_stages import life_stages_text, parse_life_stages
from recommender.exceptions import DataValidationError, InsufficientDataError
from recommender.policy.offers import OfferEngine
from recommender.ranking import artifacts
from recommender.ranking.backtest import evaluate
from recommender.ranking.config import CFConfig, TrainConfig
from recommender.ranking.fitting import fit, upto
from recommender.ranking.training import fingerprint, train

pytestmark = pytest.mark.numerics  # compares numbers two code paths compute

METHODS = {"popularity", "recent_popularity", "plain_gbdt", "life_stage_prior", "als",
           "item_knn", "hybrid", "acquisition"}
METRICS = {"customers", "map@5", "map@1", "precision@5", "recall@5", "ndcg@5", "coverage",
           "mean_auc", "mean_lift@0.1"}


@pytest.fixture(scope="module")
def demo_evaluation(demo_bank, packaged_catalog, life_stages):
    return evaluate(demo_bank, packaged_catalog, life_stages, TrainConfig())


def test_evaluate_reports_every_method(demo_evaluation):
    """Popularity, life-stage prior, CF and the served hybrid, each with MAP@5 and friends."""
    result = demo_evaluation
    assert set(result["methods"]) == METHODS
    assert result["k"] == 5 and result["served"] == "hybrid"
    assert result["test_customers"] > 50
    assert "rank the acquisitions of 2026-10-31" in result["protocol"]
    for name, metrics in result["methods"].items():
        assert set(metrics) == METRICS, name
        assert metrics["customers"] == result["test_customers"]
        for key in METRICS - {"customers", "mean_lift@0.1"}:
            assert 0.0 <= metrics[key] <= 1.0, (name, key)
        assert metrics["mean_lift@0.1"] >= 0.0
    constant = result["methods"]["popularity"]  # the same score for everyone ranks at random
    assert constant["mean_auc"] == pytest.approx(0.5)
    assert constant["mean_lift@0.1"] == pytest.approx(1.0)
    assert result["served_beats_popularity"] == (
        result["methods"]["hybrid"]["map@5"] > result["methods"]["popularity"]["map@5"])


def test_personalised_rankings_beat_popularity_on_the_demo_bank(demo_evaluation):
    """The demo bank's take-up depends on life stage and holdings; ranking by them must help."""
    maps = {name: m["map@5"] for name, m in demo_evaluation["methods"].items()}
    assert maps["life_stage_prior"] > maps["popularity"]
    assert maps["hybrid"] > maps["popularity"]
    assert demo_evaluation["served_beats_popularity"] is True


def test_evaluate_needs_three_snapshots(tiny_bank, tiny_catalog, life_stages):
    two_months = upto(tiny_bank, pd.Timestamp("2026-09-30"))
    with pytest.raises(DataValidationError, match="at least 3 monthly snapshots"):
        evaluate(two_months, tiny_catalog, life_stages, TrainConfig())


def test_evaluate_on_the_tiny_bank(tiny_bank, tiny_catalog, life_stages):
    """Three customers added one product each in October: C002, C005, C006.

    In September each had at most three offerable products, so any top 5 holds the one taken:
    recall 1 and precision 1/5 for every method; offered were 4 of the 5 products.
    """
    result = evaluate(tiny_bank, tiny_catalog, life_stages, TrainConfig(cf=CFConfig(factors=2)))
    assert result["test_customers"] == 3
    for metrics in result["methods"].values():
        assert metrics["recall@5"] == pytest.approx(1.0)
        assert metrics["precision@5"] == pytest.approx(0.2)
        assert metrics["coverage"] == pytest.approx(0.8)
        assert 1 / 3 <= metrics["map@5"] <= 1.0


def test_evaluate_with_k_larger_than_the_catalog(tiny_bank, tiny_catalog, life_stages):
    result = evaluate(tiny_bank, tiny_catalog, life_stages, TrainConfig(eval_k=10))
    assert result["methods"]["hybrid"]["customers"] == 3


def test_fit_without_holdings_is_refused(tiny_bank, tiny_catalog, life_stages):
    empty = BankData(tiny_bank.customers, tiny_bank.holdings.iloc[:0])
    with pytest.raises(DataValidationError, match="no rows"):
        fit(empty, tiny_catalog, life_stages, TrainConfig())


def test_upto_drops_later_snapshots(tiny_bank):
    past = upto(tiny_bank, pd.Timestamp("2026-09-30"))
    assert [str(s.date()) for s in past.snapshots] == ["2026-08-31", "2026-09-30"]
    assert past.customers is tiny_bank.customers


def test_fingerprint_follows_the_data(tiny_bank):
    assert fingerprint(tiny_bank) == fingerprint(BankData(tiny_bank.customers.copy(),
                                                          tiny_bank.holdings.copy()))
    fewer = BankData(tiny_bank.customers, tiny_bank.holdings.iloc[1:])
    assert fingerprint(fewer) != fingerprint(tiny_bank)


def test_training_twice_with_the_same_seed_is_identical(demo_bank, packaged_catalog,
                                                        life_stages):
    """Reproducible models: the same data and seed give bit-identical scores and rates."""
    first = fit(demo_bank, packaged_catalog, life_stages, TrainConfig())
    second = fit(demo_bank, packaged_catalog, life_stages, TrainConfig())
    rows = np.arange(len(demo_bank.customers))
    np.testing.assert_array_equal(first.cf.scores(rows), second.cf.scores(rows))
    np.testing.assert_array_equal(first.rates.by_stage, second.rates.by_stage)
    other = fit(demo_bank, packaged_catalog, life_stages,
                TrainConfig(cf=CFConfig(random_state=1)))
    assert not np.array_equal(first.cf.scores(rows), other.cf.scores(rows))


def test_train_saves_a_current_version_with_metrics(tiny_bank, tiny_catalog, tiny_catalog_toml,
                                                    life_stages, tmp_path):
    model = train(tiny_bank, tiny_catalog, life_stages, TrainConfig(cf=CFConfig(factors=2)),
                  tmp_path, tiny_catalog_toml, life_stages_text()[0])
    assert (tmp_path / "current").resolve().name == model.version
    assert model.manifest["metrics"]["test_customers"] == 3
    assert artifacts.load(tmp_path).manifest["metrics"] == model.manifest["metrics"]


def test_train_checks_bundles_against_life_stages(tiny_bank, tiny_catalog, tiny_catalog_toml,
                                                  tmp_path):
    from recommender.exceptions import CatalogError

    only_one = parse_life_stages('[[stage]]\nid = "all"\nname_en = "All"\nname_zh = "全部"\n')
    with pytest.raises(CatalogError, match="unknown life stages"):
        train(tiny_bank, tiny_catalog, only_one, TrainConfig(), tmp_path, tiny_catalog_toml, "")
    assert not any(tmp_path.iterdir())


def _frozen(raw_holdings: pd.DataFrame, months: int) -> pd.DataFrame:
    """The latest snapshot repeated for ``months`` month-ends: nobody ever adds a product."""
    latest = raw_holdings[raw_holdings["snapshot_date"] == raw_holdings["snapshot_date"].max()]
    dates = pd.date_range(end=pd.Timestamp(latest["snapshot_date"].iloc[0]), periods=months,
                          freq="ME").strftime("%Y-%m-%d")
    return pd.concat([latest.assign(snapshot_date=d) for d in dates], ignore_index=True)


@pytest.mark.parametrize(("months", "refusal"), [
    (2, "the 2 holdings snapshots (2026-09-30 .. 2026-10-31) show no customer taking up"),
    (3, "the 3 holdings snapshots (2026-08-31 .. 2026-10-31) show no customer taking up"),
    (4, "the 4 holdings snapshots (2026-07-31 .. 2026-10-31) show no customer taking up"),
])
def test_identical_snapshots_are_refused_not_learned_as_zero(customers, raw_holdings,
                                                              tiny_catalog, tiny_catalog_toml,
                                                              life_stages, tmp_path, months,
                                                              refusal):
    """Two or more identical months: nobody ever took anything up, refused before anything
    is fitted."""
    holdings = validate_holdings(_frozen(raw_holdings, months), tiny_catalog,
                                 pd.Index(customers["customer_id"]))
    bank = BankData(customers=customers, holdings=holdings)
    with pytest.raises(InsufficientDataError, match=re.escape(refusal)):
        train(bank, tiny_catalog, life_stages, TrainConfig(cf=CFConfig(factors=2)), tmp_path,
              tiny_catalog_toml, life_stages_text()[0])
    assert not any(tmp_path.iterdir())  # no model version written


def test_a_last_month_without_take_up_is_refused(tiny_bank, tiny_catalog, tiny_catalog_toml,
                                                 life_stages, tmp_path):
    """Take-ups in earlier months, none in the last: the propensities would all be 0."""
    holdings = tiny_bank.holdings
    last = holdings[holdings[C.SNAPSHOT_DATE] == holdings[C.SNAPSHOT_DATE].max()]
    again = last.assign(**{C.SNAPSHOT_DATE: pd.Timestamp("2026-11-30")})
    bank = BankData(customers=tiny_bank.customers,
                    holdings=pd.concat([holdings, again], ignore_index=True))
    with pytest.raises(InsufficientDataError, match="no customer took up a product"):
        train(bank, tiny_catalog, life_stages, TrainConfig(cf=CFConfig(factors=2)), tmp_path,
              tiny_catalog_toml, life_stages_text()[0], run_evaluation=False)


def test_nbo_train_on_identical_snapshots_exits_non_zero_and_says_why(
        raw_customers, raw_holdings, write_extracts, tmp_path, tiny_catalog_toml, caplog):
    data = write_extracts(tmp_path / "data", raw_customers, _frozen(raw_holdings, 3))
    (tmp_path / "catalog.toml").write_text(tiny_catalog_toml, encoding="utf-8")
    code = main(["train", "--data", str(data), "--models", str(tmp_path / "models"),
                 "--catalog", str(tmp_path / "catalog.toml"), "--factors", "2"])
    assert code != 0
    assert "show no customer taking up any product: identical snapshots" in caplog.text
    assert not (tmp_path / "models" / "current").exists()


def test_with_two_snapshots_train_cross_validates_the_propensity_to_own(
        demo_bank, packaged_catalog, life_stages, tmp_path, caplog):
    """No month to back-test on: ``train`` says so, cross-validates and serves the
    propensity to own, and records the cross-validated figures."""
    two_months = upto(demo_bank, demo_bank.snapshots[1])
    two_months = replace(two_months, holdings=two_months.holdings[
        two_months.holdings[C.SNAPSHOT_DATE] >= demo_bank.snapshots[0]])
    cat_text, stages_text = catalog_text()[0], life_stages_text()[0]
    model = train(two_months, packaged_catalog, life_stages, TrainConfig(), tmp_path,
                  cat_text, stages_text)
    metrics = model.manifest["metrics"]
    assert "2 snapshots of holdings: no held-out month to back-test" in caplog.text
    assert "evaluated by cross-validation" in caplog.text
    assert metrics["evaluation"] == "cross_validation" and metrics["served"] == "ownership"
    assert model.served == "ownership" and model.rates.kind == "take_up"
    assert metrics["methods"]["ownership"]["mean_auc"] > metrics["methods"]["popularity"][
        "mean_auc"] == pytest.approx(0.5)


# ---------------------------------------------------------------- served offers, end to end


def test_offers_respect_eligibility_and_never_repeat_holdings(demo_bank, packaged_catalog,
                                                              life_stages):
    """On the demo bank every offer is offerable: eligible, prerequisites held, not held."""
    model = fit(demo_bank, packaged_catalog, life_stages, TrainConfig())
    book = CustomerBook(demo_bank, packaged_catalog, life_stages)
    batch = book.batch(np.arange(300))
    allowed = offerable_mask(batch.profiles, batch.held, packaged_catalog)
    for i, offer_list in enumerate(OfferEngine(model).offers(batch, 5)):
        assert len(offer_list.offers) <= min(5, int(allowed[i].sum()))
        assert [o.rank for o in offer_list.offers] == list(range(1, len(offer_list.offers) + 1))
        for offer in offer_list.offers:
            assert allowed[i, packaged_catalog.ids.position(offer.product.id)]
            assert offer.reasons
        priorities = [o.priority for o in offer_list.offers]
        assert priorities == sorted(priorities, reverse=True)


def test_score_sources(tiny_bank, tiny_catalog, life_stages):
    """cf for known unchanged customers, cf_fold_in for changed or new ones with holdings,
    life_stage_prior without holdings, popularity without consent to profiling."""
    model = fit(tiny_bank, tiny_catalog, life_stages, TrainConfig(cf=CFConfig(factors=2)))
    engine = OfferEngine(model)
    book = CustomerBook(tiny_bank, tiny_catalog, life_stages)
    sources = engine.ranker.score(book.batch(np.arange(6))).sources
    assert sources.tolist() == ["cf", "cf", "cf", "cf", "popularity", "cf"]  # C005: no consent

    profile = tiny_bank.customers.iloc[1].to_dict()  # C002, with other holdings now
    changed = profile_batch(profile, ["current_account"], tiny_catalog, life_stages)
    assert engine.ranker.score(changed).sources.tolist() == ["cf_fold_in"]
    new = profile_batch({**profile, "customer_id": "NEW1"}, [], tiny_catalog, life_stages)
    assert engine.ranker.score(new).sources.tolist() == ["life_stage_prior"]


_PAIR_CATALOG = """
version = "pairs"
{products}
"""
_PRODUCT = """
[[product]]
id = "{id}"
name_en = "{name}"
name_zh = "{name}"
category = "x"
risk_grade = "R1"
value_weight = 1.0
"""
_ONE_STAGE = '[[stage]]\nid = "everyone"\nname_en = "Everyone"\nname_zh = "所有人"\n'


def _obvious_next_product_bank(with_history: bool):
    """20 customers hold mortgage + home insurance, 20 hold two funds, 4 hold only a mortgage.

    Catalog order puts the funds first, so if the ranker ignored co-holding the tie on the
    prior would hand the A-only customers a fund. Without history there are no take-ups, so
    the life-stage prior is flat and CF alone must find home insurance. With history the
    mortgage holders took home insurance up one month after the mortgage.
    """
    products = [("fund_c", "Fund C"), ("fund_d", "Fund D"), ("mortgage", "Mortgage"),
                ("home_insurance", "Home insurance")]
    catalog = parse_catalog(_PAIR_CATALOG.format(products="".join(
        _PRODUCT.format(id=i, name=n) for i, n in products)), "<pairs>")
    stages = parse_life_stages(_ONE_STAGE, "<one stage>")
    months = ["2026-08-31", "2026-09-30", "2026-10-31"]
    rows = []
    for i in range(20):
        rows += [(f"AB{i:02d}", "mortgage", m) for m in months]
        took_up = months[1 + i % 2:] if with_history else months
        rows += [(f"AB{i:02d}", "home_insurance", m) for m in took_up]
        rows += [(f"CD{i:02d}", p, m) for p in ("fund_c", "fund_d") for m in months]
    rows += [(f"A{i}", "mortgage", m) for i in range(4) for m in months]
    ids = sorted({r[0] for r in rows})
    customers = validate_customers(pd.DataFrame({
        "customer_id": ids, "age": 35, "income": 100000.0, "marital_status": "married",
        "dependants": 0, "tenure_months": 24, "segment": "mass", "risk_grade": "C3",
        "residency": "resident", "consent_profiling": True}))
    holdings = validate_holdings(pd.DataFrame(rows, columns=["customer_id", "product_id",
                                                             "snapshot_date"]),
                                 catalog, pd.Index(customers["customer_id"]))
    return BankData(customers, holdings), catalog, stages


@pytest.mark.parametrize("with_history", [False, True], ids=["holdings only", "with history"])
@pytest.mark.parametrize("cf", [CFConfig(), CFConfig(factors=2), CFConfig(kind="item_knn")],
                         ids=["default", "als-2", "item_knn"])
def test_obvious_next_product(with_history, cf):
    """Everyone with a mortgage also has home insurance: a mortgage-only customer is offered
    home insurance first, explained by the mortgage they hold."""
    bank, catalog, stages = _obvious_next_product_bank(with_history)
    model = fit(bank, catalog, stages, TrainConfig(cf=cf))
    book = CustomerBook(bank, catalog, stages)
    batch = book.batch(np.array([book.position(f"A{i}") for i in range(4)]))
    for offer_list in OfferEngine(model).offers(batch, 3):
        top = offer_list.offers[0]
        assert top.product.id == "home_insurance", offer_list.to_dict()
        assert top.source == "cf"
        held_reason = [r for r in top.reasons if r.code == "held_products"]
        assert held_reason and held_reason[0].evidence["products"] == ["mortgage"]
        # the funds follow, in that order, as far as they are worth the contact
        rest = [o.product.id for o in offer_list.offers[1:]]
        assert rest == ["fund_c", "fund_d"][: len(rest)]


def test_one_snapshot_fits_the_propensity_to_own_once(demo_bank, packaged_catalog,
                                                      life_stages, tmp_path, monkeypatch):
    """The cross-validation fits the model on every customer; ``train`` serves that model
    rather than fitting the same one again."""
    from recommender.ranking.ownership import OwnershipModel

    calls = []
    original = OwnershipModel.fit

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(OwnershipModel, "fit", counted)
    last = demo_bank.snapshots[-1]
    one = replace(demo_bank, holdings=demo_bank.holdings[
        demo_bank.holdings[C.SNAPSHOT_DATE] == last].reset_index(drop=True))
    model = train(one, packaged_catalog, life_stages, TrainConfig(), tmp_path,
                  catalog_text()[0], life_stages_text()[0])
    assert model.served == "ownership" and len(calls) == 1
    loaded = artifacts.load(tmp_path)
    batch = CustomerBook(one, packaged_catalog, life_stages).batch(np.arange(50))
    np.testing.assert_allclose(  # another path (text model, one thread): last bits may differ
        loaded.ownership.predict(batch.held, batch.profiles, batch.stages, batch.customer_ids),
        model.ownership.out_of_fold[:50], rtol=1e-5, atol=1e-6)
