"""The acquisition ranker: its features, a known-answer win-back, its contracts, the proof that
the held-out month never reaches fitting, and serving it end to end (artifacts, offers, API).

No real data: hand-made matrices with known answers, a simulated "win-back" bank, and a small
demo bank (3,000 customers, 6 months) generated once for the module.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from api import create_app
from recommender.data import columns as C
from recommender.data.book import CustomerBook, profile_batch
from recommender.data.catalog import Catalog, catalog_text, parse_catalog
from recommender.data.customers import validate_customers
from recommender.data.demo import generate
from recommender.data.eligibility import eligibility_mask, offerable_mask
from recommender.data.extracts import BankData, load_bank, validate_holdings, write_bank
from recommender.data.life_stages import LifeStageRules, life_stages_text, parse_life_stages
from recommender.exceptions import ArtifactError, InsufficientDataError, NotFittedError
from recommender.policy.offers import OfferEngine
from recommender.ranking import acquisition, artifacts, backtest
from recommender.ranking.acquisition import AcquisitionRanker
from recommender.ranking.backtest import evaluate
from recommender.ranking.config import AcquisitionConfig, TrainConfig
from recommender.ranking.features import FeatureSpace
from recommender.ranking.fitting import fit, history, upto
from recommender.ranking.ranker import AcquisitionScorer, HybridRanker
from recommender.ranking.training import train
from recommender.service import load_service

from tolerance import assert_close

DEMO_CUSTOMERS, DEMO_MONTHS, DEMO_SEED = 3000, 6, 20260531
ACQUISITION_REASONS = {"likely_next_product", "recently_held", "life_stage_bundle",
                       "suitability"}
PROFILE = {
    "age": 31, "income": 180000, "marital_status": "married", "dependants": 1,
    "tenure_months": 24, "segment": "mass", "risk_grade": "C3", "residency": "resident",
    "consent_profiling": True,
}


# =========================================================================== features

_PRODUCTS = ("a", "b", "c")


def _csr(rows: list[list[int]]) -> sp.csr_matrix:
    return sp.csr_matrix(np.array(rows, dtype=np.float32))


def _profiles(segments: list[str]) -> pd.DataFrame:
    n = len(segments)
    return pd.DataFrame({
        C.AGE: [30, 40, 50][:n], C.INCOME: [1000.0, 2000.0, np.nan][:n],
        C.TENURE_MONTHS: [10, 1, 20][:n], C.SEGMENT: segments,
    })


@pytest.fixture
def space() -> FeatureSpace:
    return FeatureSpace.fit(list(_PRODUCTS), 3, _profiles(["mass", "affluent"]))


def _features(space: FeatureSpace, lags, present, profiles, stages) -> dict[str, np.ndarray]:
    x = space.build(lags, present, profiles, stages)
    assert x.dtype == np.float32
    assert x.shape == (len(profiles), len(space.names))
    return {name: x[:, j] for j, name in enumerate(space.names)}


# Three customers over three months (lag1 is the latest):
#   0: lag1 {a, b}, lag2 {a, c}, lag3 {c}   -> added b, dropped c
#   1: lag1 {a}, not a customer at lag2 and lag3 (joined last month)
#   2: lag1 {},  lag2 {b},    lag3 {b}      -> dropped b
_LAG1 = [[1, 1, 0], [1, 0, 0], [0, 0, 0]]
_LAG2 = [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
_LAG3 = [[0, 0, 1], [0, 0, 0], [0, 1, 0]]
_PRESENT = np.array([[True, True, True], [True, False, False], [True, True, True]])


def test_feature_space_fixes_names_and_segments(space):
    assert space.segments == ("affluent", "mass")  # sorted, so the codes are stable
    names = space.names
    assert len(names) == 3 * 3 + 3 + 3 + 10 == len(set(names))
    assert names[:4] == ["a_lag1", "b_lag1", "c_lag1", "a_lag2"]
    assert names[9:15] == ["a_dropped", "b_dropped", "c_dropped",
                           "a_months_held", "b_months_held", "c_months_held"]
    assert names[15:] == ["n_held", "n_held_lag2", "n_added", "n_dropped", "months_known",
                          C.AGE, C.INCOME, C.TENURE_MONTHS, C.SEGMENT, C.LIFE_STAGE]


def test_features_known_answers(space):
    nan = np.nan
    f = _features(space, [_csr(_LAG1), _csr(_LAG2), _csr(_LAG3)], _PRESENT,
                  _profiles(["mass", "affluent", "mass"]), np.array([4, 0, 2]))
    eq = np.testing.assert_array_equal
    # lag values; a lag at which the customer was not a customer yet is missing, not zero
    eq(f["a_lag1"], [1, 1, 0])
    eq(f["b_lag1"], [1, 0, 0])
    eq(f["a_lag2"], [1, nan, 0])
    eq(f["b_lag2"], [0, nan, 1])
    eq(f["c_lag2"], [1, nan, 0])
    eq(f["c_lag3"], [1, nan, 0])
    eq(f["b_lag3"], [0, nan, 1])
    # dropped: held at lag2, not at lag1 (an addition is not a drop); unknown without lag2
    eq(f["a_dropped"], [0, nan, 0])
    eq(f["b_dropped"], [0, nan, 1])
    eq(f["c_dropped"], [1, nan, 0])
    # months held among the known lags
    eq(f["a_months_held"], [2, 1, 0])
    eq(f["b_months_held"], [1, 0, 2])
    eq(f["c_months_held"], [2, 0, 0])
    eq(f["n_held"], [2, 1, 0])
    eq(f["months_known"], [3, 1, 3])
    for name, expected in (("n_held_lag2", [2, 1]), ("n_added", [1, 0]),
                           ("n_dropped", [1, 1])):
        eq(f[name][[0, 2]], expected, err_msg=name)
    # profile columns, segment codes in the sorted order, life-stage codes as given
    eq(f[C.AGE], [30, 40, 50])
    eq(f[C.INCOME], [1000, 2000, nan])
    eq(f[C.TENURE_MONTHS], [10, 1, 20])
    eq(f[C.SEGMENT], [1, 0, 1])
    eq(f[C.LIFE_STAGE], [4, 0, 2])


def test_lags_not_given_are_missing(space):
    """Scoring with the latest month only (a customer described in a request)."""
    f = _features(space, [_csr(_LAG1)], np.ones((3, 1), dtype=bool),
                  _profiles(["mass", "affluent", "mass"]), np.zeros(3))
    for p in _PRODUCTS:
        assert np.isnan(f[f"{p}_lag2"]).all() and np.isnan(f[f"{p}_lag3"]).all()
        assert np.isnan(f[f"{p}_dropped"]).all()
    np.testing.assert_array_equal(f["a_months_held"], [1, 1, 0])
    np.testing.assert_array_equal(f["months_known"], [1, 1, 1])


def test_features_of_no_customers(space):
    x = space.build([_csr(np.zeros((0, 3))), _csr(np.zeros((0, 3)))], np.ones((0, 2), bool),
                    _profiles([]), np.zeros(0))
    assert x.shape == (0, len(space.names))


def test_unseen_segment_is_missing(space):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = _features(space, [_csr(_LAG1), _csr(_LAG2)], _PRESENT[:, :2],
                      _profiles(["mass", "affluent", "private"]), np.zeros(3))
    np.testing.assert_array_equal(f[C.SEGMENT], [1, 0, np.nan])


# =========================================================================== a win-back bank

WB_PRODUCTS = [f"p{i}" for i in range(10)]
WB_X = 2  # the product customers close and take back the month after


def _winback_history(n: int, months: int, seed: int) -> list[np.ndarray]:
    """Monthly holdings (customers x products, bool), oldest first.

    Each month some holdings are closed (product X more often), 20% of customers add one
    product (half the time the popular p0, otherwise any), and every customer who closed X
    the month before takes it back: the only pattern in the data beyond popularity.
    """
    rng = np.random.default_rng(seed)
    closure = np.full(len(WB_PRODUCTS), 0.08)
    closure[WB_X] = 0.10
    months_held = [rng.random((n, len(WB_PRODUCTS))) < 0.2]
    for _ in range(1, months):
        prev = months_held[-1]
        prev2 = months_held[-2] if len(months_held) > 1 else prev
        won_back = prev2[:, WB_X] & ~prev[:, WB_X]
        new = prev & ~(rng.random(prev.shape) < closure)
        adders = rng.random(n) < 0.2
        choice = np.where(rng.random(n) < 0.5, 0, rng.integers(0, len(WB_PRODUCTS), n))
        new[adders, choice[adders]] = True
        new[won_back, WB_X] = True
        months_held.append(new)
    return months_held


@dataclass(frozen=True)
class WinBack:
    held: list[np.ndarray]
    snapshots: list[sp.csr_matrix]
    presence: np.ndarray
    profiles: pd.DataFrame
    stages: np.ndarray

    @property
    def lags(self) -> list[sp.csr_matrix]:
        return self.snapshots[::-1][:4]

    def predict(self, ranker: AcquisitionRanker) -> np.ndarray:
        n = len(self.profiles)
        return ranker.predict(self.lags, np.ones((n, len(self.lags)), bool), self.profiles,
                              self.stages)


def _winback(seed: int, n: int = 3000, months: int = 6) -> WinBack:
    held = _winback_history(n, months, seed)
    rng = np.random.default_rng(seed + 1)
    profiles = pd.DataFrame({C.AGE: rng.integers(20, 70, n), C.INCOME: rng.normal(5e4, 1e4, n),
                             C.TENURE_MONTHS: rng.integers(12, 100, n), C.SEGMENT: "mass"})
    return WinBack(held, [sp.csr_matrix(h.astype(np.float32)) for h in held],
                   np.ones((n, months), dtype=bool), profiles, np.zeros(n, dtype=np.int64))


def _fit(data: WinBack, config: AcquisitionConfig | None = None,
         snapshots: list[sp.csr_matrix] | None = None) -> AcquisitionRanker:
    snapshots = data.snapshots if snapshots is None else snapshots
    return AcquisitionRanker(config).fit(snapshots, data.presence[:, :len(snapshots)],
                                         WB_PRODUCTS, data.profiles, data.stages)


@pytest.fixture(scope="module")
def winback() -> WinBack:
    return _winback(7)


@pytest.fixture(scope="module")
def winback_ranker(winback) -> AcquisitionRanker:
    return _fit(winback)


@pytest.mark.parametrize("seed", [7, 31])
def test_a_customer_who_just_closed_a_product_is_offered_it_back(seed):
    data = _winback(seed)
    probabilities = data.predict(_fit(data))
    closed = data.held[-2][:, WB_X] & ~data.held[-1][:, WB_X]
    not_held = ~data.held[-2][:, WB_X] & ~data.held[-1][:, WB_X]
    assert closed.sum() >= 30 and not_held.sum() >= 1000
    top = probabilities.argmax(axis=1)
    assert (top[closed] == WB_X).all(), np.bincount(top[closed])
    # the pattern, not X's popularity: every closer is surer of X than any non-holder
    assert probabilities[closed, WB_X].min() > probabilities[not_held, WB_X].max()


def test_fit_needs_three_snapshots(winback):
    with pytest.raises(InsufficientDataError, match="at least 3 monthly snapshots, got 2"):
        _fit(winback, snapshots=winback.snapshots[:2])


def test_fit_without_any_addition_is_refused(winback):
    still = [winback.snapshots[0]] * 4
    with pytest.raises(InsufficientDataError, match="nothing to learn"):
        _fit(winback, snapshots=still)


def test_not_fitted():
    ranker = AcquisitionRanker()
    assert not ranker.is_fitted
    with pytest.raises(NotFittedError):
        ranker.predict([_csr(_LAG1)], np.ones((3, 1), bool), _profiles(["a", "b", "c"]),
                       np.zeros(3))
    with pytest.raises(NotFittedError):
        ranker.to_state()


def test_refit_with_the_same_seed_is_identical(winback, winback_ranker):
    again = _fit(winback)
    assert again.booster.model_to_string() == winback_ranker.booster.model_to_string()
    assert again.best_iteration == winback_ranker.best_iteration
    np.testing.assert_array_equal(winback.predict(again), winback.predict(winback_ranker))
    # the seed is used: bagging and feature sampling change with it
    other = _fit(winback, AcquisitionConfig(random_state=1))
    assert other.booster.model_to_string() != winback_ranker.booster.model_to_string()
    assert not np.array_equal(winback.predict(other), winback.predict(winback_ranker))


def test_state_round_trip_predicts_identically(winback, winback_ranker, tmp_path):
    state = winback_ranker.to_state()
    assert isinstance(state["model"], str)  # LightGBM's text format, never a pickle
    assert state["products"] == WB_PRODUCTS and state["n_lags"] == 4
    joblib.dump(state, tmp_path / "state.joblib")
    restored = AcquisitionRanker.from_state(joblib.load(tmp_path / "state.joblib"))
    assert restored.is_fitted and restored.config == winback_ranker.config
    assert restored.best_iteration == winback_ranker.best_iteration
    assert restored.space == winback_ranker.space
    np.testing.assert_array_equal(winback.predict(restored), winback.predict(winback_ranker))


def test_a_state_saved_before_num_threads_existed_loads(winback, winback_ranker):
    """Artifacts written before ``num_threads`` was a key have no such key: the default."""
    state = winback_ranker.to_state()
    del state["config"]["num_threads"]
    restored = AcquisitionRanker.from_state(state)
    assert restored.config.num_threads == 0 and restored.config == winback_ranker.config
    np.testing.assert_array_equal(winback.predict(restored), winback.predict(winback_ranker))


@pytest.mark.parametrize(("configured", "available", "expected"), [
    (0, 8, 8),    # 0: the CPUs this process may use
    (3, 8, 3),
    (16, 8, 8),   # never more than there are: a model may be loaded on a smaller machine
    (0, 1, 1),
])
def test_lightgbm_threads_follow_the_config(monkeypatch, configured, available, expected):
    monkeypatch.setattr(acquisition, "available_cpus", lambda: available)
    params = AcquisitionRanker(AcquisitionConfig(num_threads=configured))._params(10, 10_000)
    assert params["num_threads"] == expected
    assert params["deterministic"] is True


def test_fit_trains_with_the_configured_threads(winback, monkeypatch):
    seen = []
    real_train = acquisition.lgb.train

    def spy(params, *args, **kwargs):
        seen.append(params["num_threads"])
        return real_train(params, *args, **kwargs)

    monkeypatch.setattr(acquisition, "available_cpus", lambda: 6)
    monkeypatch.setattr(acquisition.lgb, "train", spy)
    _fit(winback, AcquisitionConfig(num_threads=3, max_rounds=5, refit=True))
    assert seen == [3, 3]  # early stopping, then the refit


def test_batches_predict_with_the_configured_threads_and_one_customer_with_one(
        winback, winback_ranker, monkeypatch):
    """A server scores one customer per request in each of several workers: one thread."""
    seen = []
    real_predict = acquisition.lgb.Booster.predict

    def spy(self, data, *args, num_threads=None, **kwargs):
        seen.append((len(data), num_threads))
        return real_predict(self, data, *args, num_threads=num_threads, **kwargs)

    monkeypatch.setattr(acquisition, "available_cpus", lambda: 4)
    monkeypatch.setattr(acquisition.lgb.Booster, "predict", spy)
    copies = -(-acquisition._PARALLEL_ROWS // len(winback.profiles))  # a batch at the threshold
    big = winback_ranker.predict(
        [sp.vstack([m] * copies, format="csr") for m in winback.lags],
        np.ones((copies * len(winback.profiles), len(winback.lags)), bool),
        pd.concat([winback.profiles] * copies, ignore_index=True),
        np.tile(winback.stages, copies))
    one = winback_ranker.predict([m[:1] for m in winback.lags],
                                 np.ones((1, len(winback.lags)), bool),
                                 winback.profiles.iloc[:1], winback.stages[:1])
    assert seen == [(copies * len(winback.profiles), 4), (1, 1)]
    # a row's probabilities do not depend on the threads that computed it
    np.testing.assert_array_equal(one[0], big[0])


def test_predictions_are_probabilities(winback, winback_ranker):
    probabilities = winback.predict(winback_ranker)
    assert probabilities.shape == (len(winback.profiles), len(WB_PRODUCTS))
    assert probabilities.dtype == np.float32
    assert (probabilities >= 0).all() and (probabilities <= 1).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    none = winback_ranker.predict([m[:0] for m in winback.lags], np.ones((0, 4), bool),
                                  winback.profiles.iloc[:0], winback.stages[:0])
    assert none.shape == (0, len(WB_PRODUCTS))


def test_fit_reads_only_the_months_its_lags_reach(winback):
    """Six months, one training transition (the fifth month) and two lags: the first two
    months are never read, while four lags do read them (the window kept to one month)."""
    changed = list(winback.snapshots)
    changed[0] = sp.csr_matrix(np.ones_like(winback.held[0], dtype=np.float32))
    changed[1] = sp.csr_matrix(np.zeros_like(winback.held[0], dtype=np.float32))
    for n_lags, same in ((2, True), (4, False)):
        config = AcquisitionConfig(n_lags=n_lags, min_examples=0)
        original = _fit(winback, config).booster.model_to_string()
        assert (_fit(winback, config, changed).booster.model_to_string() == original) is same


# =========================================================================== the demo bank


@dataclass(frozen=True)
class Demo:
    bank: BankData
    catalog: Catalog
    stages: LifeStageRules
    data_dir: Path
    catalog_text: str
    stages_text: str

    def book(self, bank: BankData | None = None, n_lags: int = 4) -> CustomerBook:
        return CustomerBook(bank or self.bank, self.catalog, self.stages, "binary", n_lags)

    def train(self, models_dir: Path, config: TrainConfig, bank: BankData | None = None):
        return train(bank or self.bank, self.catalog, self.stages, config, models_dir,
                     self.catalog_text, self.stages_text)


@pytest.fixture(scope="module")
def demo(tmp_path_factory, packaged_catalog, life_stages) -> Demo:
    """The demo bank written as Parquet and read back, as the service reads it."""
    root = tmp_path_factory.mktemp("acquisition_demo")
    made = generate(DEMO_CUSTOMERS, DEMO_MONTHS, DEMO_SEED, packaged_catalog, life_stages)
    write_bank(BankData(made.customers, made.holdings), root / "data")
    bank = load_bank(root / "data", packaged_catalog)
    assert len(bank.snapshots) == DEMO_MONTHS
    return Demo(bank, packaged_catalog, life_stages, root / "data", catalog_text()[0],
                life_stages_text()[0])


def _with_last_snapshot(bank: BankData, last: pd.DataFrame) -> BankData:
    earlier = bank.holdings[bank.holdings[C.SNAPSHOT_DATE] < bank.snapshots[-1]]
    holdings = pd.concat([earlier, last], ignore_index=True)
    return BankData(bank.customers, holdings.astype(bank.holdings.dtypes))


def _permute_last_snapshot(bank: BankData, seed: int = 0) -> BankData:
    """The last month's holdings handed to a random permutation of the customers."""
    h = bank.holdings
    last = h[h[C.SNAPSHOT_DATE] == bank.snapshots[-1]]
    ids = h[C.CUSTOMER_ID].cat.categories
    permutation = np.random.default_rng(seed).permutation(len(ids))
    codes = permutation[last[C.CUSTOMER_ID].cat.codes.to_numpy()]
    moved = last.assign(**{C.CUSTOMER_ID: pd.Categorical.from_codes(codes, categories=ids)})
    return _with_last_snapshot(bank, moved)


def _extra_additions(demo: Demo, seed: int = 0) -> tuple[BankData, int]:
    """One more product in the last month for every customer who added one then, so the test
    customers stay the same and only their labels change."""
    bank = demo.bank
    n, p = len(bank.customers), len(demo.catalog)
    past = history(bank, n, p)
    before, after = (s.toarray() > 0 for s in past.snapshots[-2:])
    adders = np.flatnonzero(((after & ~before).any(axis=1)) & past.presence[:, -2])
    rng = np.random.default_rng(seed)
    rows = []
    for i in adders:
        free = np.flatnonzero(~before[i] & ~after[i])
        if len(free):
            rows.append((bank.customers[C.CUSTOMER_ID].iloc[i], demo.catalog.ids.external_ids[
                rng.choice(free)], bank.snapshots[-1]))
    extra = pd.DataFrame(rows, columns=[C.CUSTOMER_ID, C.PRODUCT_ID, C.SNAPSHOT_DATE])
    h = bank.holdings
    last = pd.concat([h[h[C.SNAPSHOT_DATE] == bank.snapshots[-1]].astype(str), extra.astype(str)])
    last = validate_holdings(last, demo.catalog, pd.Index(bank.customers[C.CUSTOMER_ID]))
    return _with_last_snapshot(bank, last), len(rows)


def _last_month_sets(bank: BankData) -> dict[str, frozenset[str]]:
    h = bank.holdings
    at = h[h[C.SNAPSHOT_DATE] == bank.snapshots[-1]]
    return {c: frozenset(g.astype(str)) for c, g in
            at.groupby(at[C.CUSTOMER_ID].astype(str), observed=True)[C.PRODUCT_ID]}


def test_the_scrambles_change_only_the_last_month(demo):
    permuted = _permute_last_snapshot(demo.bank)
    extra, n_extra = _extra_additions(demo)
    cutoff = demo.bank.snapshots[-2]
    for scrambled in (permuted, extra):
        assert scrambled.snapshots == demo.bank.snapshots
        original, changed = upto(demo.bank, cutoff).holdings, upto(scrambled, cutoff).holdings
        pd.testing.assert_frame_equal(original.reset_index(drop=True),
                                      changed.reset_index(drop=True))
    before, moved = _last_month_sets(demo.bank), _last_month_sets(permuted)
    assert sorted(map(sorted, before.values())) == sorted(map(sorted, moved.values()))
    assert sum(before.get(c) != moved.get(c) for c in set(before) | set(moved)) > 1000
    assert n_extra > 100
    assert len(extra.holdings) == len(demo.bank.holdings) + n_extra


def _fit_all(demo: Demo, bank: BankData):
    return fit(bank, demo.catalog, demo.stages, TrainConfig(), served="acquisition")


def _scores(demo: Demo, model, bank: BankData):
    """(acquisition probabilities, hybrid CF scores, hybrid scores) for every customer."""
    batch = demo.book(bank).batch(np.arange(len(bank.customers)))
    hybrid = HybridRanker(model.cf, model.rates, model.config.cf_weight).score(batch)
    return (model.acquisition.predict(list(batch.lags), batch.present, batch.profiles,
                                      batch.stages), hybrid.cf_scores, hybrid.scores)


def test_fitting_up_to_the_cutoff_never_sees_the_last_month(demo):
    """Scrambling the last month (the test month of ``evaluate``) changes nothing fitted on
    the months before it: the same trees, CF factors, take-up rates and scores."""
    cutoff = demo.bank.snapshots[-2]
    pasts = [upto(b, cutoff) for b in (demo.bank, _permute_last_snapshot(demo.bank))]
    original, scrambled = (_fit_all(demo, past) for past in pasts)
    assert (original.acquisition.booster.model_to_string()
            == scrambled.acquisition.booster.model_to_string())
    np.testing.assert_array_equal(original.cf.to_state()["user_factors"],
                                  scrambled.cf.to_state()["user_factors"])
    np.testing.assert_array_equal(original.rates.by_stage, scrambled.rates.by_stage)
    for a, b in zip(_scores(demo, original, pasts[0]), _scores(demo, scrambled, pasts[1]),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_same_scramble_is_seen_when_the_last_month_is_fitted(demo):
    """The control that makes the test above able to fail: fitted on every month, the
    scramble changes the trees, the CF scores and the rates."""
    original = _fit_all(demo, demo.bank)
    scrambled_bank = _permute_last_snapshot(demo.bank)
    scrambled = _fit_all(demo, scrambled_bank)
    assert (original.acquisition.booster.model_to_string()
            != scrambled.acquisition.booster.model_to_string())
    assert not np.array_equal(original.rates.by_stage, scrambled.rates.by_stage)
    for a, b in zip(_scores(demo, original, demo.bank),
                    _scores(demo, scrambled, scrambled_bank), strict=True):
        assert not np.array_equal(a, b)


@pytest.fixture
def captured_rankings(monkeypatch):
    """Every (top-k ranking, labels) ``evaluate`` scores, method by method."""
    calls: list[tuple[np.ndarray, np.ndarray]] = []
    original = backtest.ranking_metrics

    def capture(top, labels, k):
        calls.append((np.array(top), np.asarray(labels).copy()))
        return original(top, labels, k)

    monkeypatch.setattr(backtest, "ranking_metrics", capture)
    return calls


def test_evaluate_differs_only_through_the_labels(demo, captured_rankings):
    """Extra additions in the test month change the labels of the same test customers; every
    method ranks them exactly as before. The selection month, before it, is untouched."""
    config = TrainConfig()
    first = evaluate(demo.bank, demo.catalog, demo.stages, config)
    n_calls = len(captured_rankings)
    extra, n_extra = _extra_additions(demo)
    second = evaluate(extra, demo.catalog, demo.stages, config)
    n_methods = len(first["methods"])
    assert list(first["methods"]) == list(second["methods"])
    assert "acquisition" in first["methods"] and n_calls == 2 * n_methods == 16
    assert first["selection"]["separate_from_report"]
    assert first["selection"] == second["selection"]
    assert first["test_customers"] == second["test_customers"]
    for i, ((top_a, labels_a), (top_b, labels_b)) in enumerate(
            zip(captured_rankings[:n_calls], captured_rankings[n_calls:], strict=True)):
        np.testing.assert_array_equal(top_a, top_b)
        reported_month = i < n_methods  # the report comes first, then the selection month
        expected = np.count_nonzero(labels_a) + (n_extra if reported_month else 0)
        assert np.count_nonzero(labels_b) == expected
    assert first["methods"] != second["methods"]


# =========================================================================== served, end to end


@dataclass(frozen=True)
class Served:
    models_dir: Path
    model: artifacts.TrainedModel  # as returned by train


@pytest.fixture(scope="module")
def served(demo, tmp_path_factory) -> Served:
    models_dir = tmp_path_factory.mktemp("acquisition_models")
    model = demo.train(models_dir, TrainConfig(ranker="acquisition"))
    return Served(models_dir, model)


def test_train_saves_and_serves_the_acquisition_ranker(served):
    folder = served.models_dir / "current"
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["served"] == "acquisition"
    assert (folder / "acquisition.joblib").is_file()
    assert "acquisition.joblib" in manifest["files"]
    assert manifest["metrics"]["served"] == "acquisition"
    assert "acquisition" in manifest["metrics"]["methods"]
    assert manifest["parameters"]["ranker"] == "acquisition"


def test_save_then_load_predicts_identically(demo, served):
    loaded = artifacts.load(served.models_dir)
    assert loaded.served == "acquisition" and loaded.acquisition is not None
    assert (loaded.acquisition.booster.model_to_string()
            == served.model.acquisition.booster.model_to_string())
    batch = demo.book().batch(np.arange(len(demo.bank.customers)))
    args = (list(batch.lags), batch.present, batch.profiles, batch.stages)
    np.testing.assert_array_equal(loaded.acquisition.predict(*args),
                                  served.model.acquisition.predict(*args))


@pytest.fixture(scope="module")
def demo_offers(demo, served):
    engine = OfferEngine(artifacts.load(served.models_dir))
    book = demo.book()
    batch = book.batch(np.arange(len(book)))
    return engine, batch, engine.offers(batch, 5)


def test_offers_come_from_the_acquisition_ranker_with_its_reasons(demo, demo_offers):
    engine, batch, lists = demo_offers
    assert isinstance(engine.ranker, AcquisitionScorer)
    consent = batch.profiles[C.CONSENT_PROFILING].to_numpy()
    closed = _closed_last_month(demo.bank)
    codes_seen = set()
    for i in np.flatnonzero(consent):
        offer_list = lists[i]
        assert offer_list.source == "acquisition"
        priorities = [o.priority for o in offer_list.offers]  # arbitration orders offers
        assert priorities == sorted(priorities, reverse=True)
        scores = [o.score for o in offer_list.offers]
        assert all(s <= 0.0 for s in scores)  # log probabilities
        for offer in offer_list.offers:
            assert offer.source == "acquisition"
            codes = [r.code for r in offer.reasons]
            assert set(codes) <= ACQUISITION_REASONS, codes
            codes_seen |= set(codes)
            for reason in offer.reasons:
                assert reason.text_en.strip() and reason.text_zh.strip()
            likely = [r for r in offer.reasons if r.code == "likely_next_product"]
            assert len(likely) == 1
            probability = likely[0].evidence["probability"]
            assert probability == pytest.approx(np.exp(offer.score), abs=1e-6)
            won_back = (offer_list.customer_id, offer.product.id) in closed
            assert ("recently_held" in codes) == won_back
            stage = demo.stages.stages[int(batch.stages[i])].id
            assert ("life_stage_bundle" in codes) == (stage in offer.product.life_stages)
    assert codes_seen == ACQUISITION_REASONS


def _closed_last_month(bank: BankData) -> set[tuple[str, str]]:
    """(customer, product) held at the second-last snapshot and not at the last."""
    h = bank.holdings
    at = {d: set(zip(g[C.CUSTOMER_ID].astype(str), g[C.PRODUCT_ID].astype(str), strict=True))
          for d, g in h[h[C.SNAPSHOT_DATE] >= bank.snapshots[-2]].groupby(C.SNAPSHOT_DATE)}
    return at[bank.snapshots[-2]] - at[bank.snapshots[-1]]


def test_no_held_or_ineligible_product_is_offered(demo, demo_offers):
    _, batch, lists = demo_offers
    held = _last_month_sets(demo.bank)
    eligible = eligibility_mask(batch.profiles, demo.catalog)
    allowed = offerable_mask(batch.profiles, batch.held, demo.catalog)
    for i, offer_list in enumerate(lists):
        ids = [o.product.id for o in offer_list.offers]
        assert not set(ids) & held.get(offer_list.customer_id, frozenset())
        positions = demo.catalog.ids.to_internal(ids)
        assert eligible[i, positions].all() and allowed[i, positions].all()
        # the policy may offer fewer (suitability, positive gain), never more
        assert len(ids) <= min(5, int(allowed[i].sum())) and len(ids) == len(set(ids))


def test_customers_without_consent_get_popularity(demo, demo_offers):
    engine, batch, lists = demo_offers
    no_consent = np.flatnonzero(~batch.profiles[C.CONSENT_PROFILING].to_numpy())
    assert len(no_consent) > 50
    overall = engine.model.rates.overall
    for i in no_consent:
        offer_list = lists[i]
        assert offer_list.source == "popularity"
        for offer in offer_list.offers:
            assert offer.source == "popularity"
            assert [r.code for r in offer.reasons] == ["popular_overall", "suitability"]
        # scored by bank-wide take-up, the same for everyone; ordered by arbitration priority
        rates = [overall[demo.catalog.ids.position(o.product.id)] for o in offer_list.offers]
        assert np.allclose([o.score for o in offer_list.offers], np.log(rates))
        priorities = [o.priority for o in offer_list.offers]
        assert priorities == sorted(priorities, reverse=True)


def _winback_bank(seed: int = 7) -> tuple[BankData, Catalog, LifeStageRules, str, str]:
    """The win-back history as extracts, with a 10-product catalog and a single life stage."""
    product = ('[[product]]\nid = "{id}"\nname_en = "Product {id}"\nname_zh = "产品{id}"\n'
               'category = "x"\nrisk_grade = "R1"\nvalue_weight = 1.0\n')
    cat_text = 'version = "winback"\n' + "".join(product.format(id=p) for p in WB_PRODUCTS)
    st_text = '[[stage]]\nid = "everyone"\nname_en = "Everyone"\nname_zh = "所有人"\n'
    held = _winback_history(3000, 6, seed)
    dates = pd.date_range(end="2026-10-31", periods=len(held), freq="ME")
    ids = [f"W{i:05d}" for i in range(len(held[0]))]
    rows = [(ids[c], WB_PRODUCTS[p], d) for h, d in zip(held, dates, strict=True)
            for c, p in zip(*np.nonzero(h), strict=True)]
    customers = validate_customers(pd.DataFrame({
        "customer_id": ids, "age": 40, "income": 50000.0, "marital_status": "single",
        "dependants": 0, "tenure_months": 120, "segment": "mass", "risk_grade": "C3",
        "residency": "resident", "consent_profiling": True}))
    catalog = parse_catalog(cat_text, "<winback>")
    holdings = validate_holdings(pd.DataFrame(rows, columns=[C.CUSTOMER_ID, C.PRODUCT_ID,
                                                             C.SNAPSHOT_DATE]),
                                 catalog, pd.Index(ids))
    return (BankData(customers, holdings), catalog, parse_life_stages(st_text), cat_text,
            st_text)


def test_auto_serves_the_better_ranker_on_the_demo_bank(demo, tmp_path):
    model = demo.train(tmp_path, TrainConfig())
    maps = {m: model.manifest["metrics"]["methods"][m]["map@5"] for m in ("hybrid",
                                                                          "acquisition")}
    best = max(maps, key=maps.get)
    assert maps["hybrid"] != maps["acquisition"]
    assert model.served == model.manifest["served"] == model.manifest["metrics"]["served"] == best
    assert artifacts.load(tmp_path).served == best
    assert ((tmp_path / "current" / "acquisition.joblib").is_file()
            == (best == "acquisition"))


def test_auto_serves_the_acquisition_ranker_where_history_matters(tmp_path):
    """On the win-back bank only the acquisition ranker sees who closed X last month."""
    bank, catalog, stages, cat_text, st_text = _winback_bank()
    model = train(bank, catalog, stages, TrainConfig(), tmp_path, cat_text, st_text)
    methods = model.manifest["metrics"]["methods"]
    assert methods["acquisition"]["map@5"] > methods["hybrid"]["map@5"]
    assert model.manifest["served"] == "acquisition"
    loaded = artifacts.load(tmp_path)
    assert isinstance(OfferEngine(loaded).ranker, AcquisitionScorer)


def test_hybrid_training_stores_no_acquisition_ranker(demo, tmp_path):
    model = demo.train(tmp_path, TrainConfig(ranker="hybrid"))
    assert model.served == "hybrid" and model.acquisition is None
    assert "acquisition.joblib" not in model.manifest["files"]
    assert not (tmp_path / "current" / "acquisition.joblib").exists()
    assert isinstance(OfferEngine(artifacts.load(tmp_path)).ranker, HybridRanker)


@pytest.mark.numerics
def test_served_scores_use_the_lags_the_model_was_trained_with(demo, tmp_path):
    config = TrainConfig(ranker="acquisition", acquisition=AcquisitionConfig(n_lags=5))
    demo.train(tmp_path, config)
    service = load_service(demo.data_dir, tmp_path, state_dir=tmp_path / "state")
    everyone = np.arange(len(service.book))
    served_scores = service.engine.ranker.score(service.book.batch(everyone)).scores
    expected = service.engine.ranker.score(demo.book(n_lags=5).batch(everyone)).scores
    assert_close(served_scores, expected)


# =========================================================================== the API


@pytest.fixture(scope="module")
def client(demo, served, client_with_key):
    app = create_app({"DATA_DIR": str(demo.data_dir), "MODELS_DIR": str(served.models_dir),
                      "STATE_DIR": str(served.models_dir.parent / "state")})
    return client_with_key(app)


def _customer(demo: Demo, consent: bool) -> str:
    held = _last_month_sets(demo.bank)
    c = demo.bank.customers
    ids = c.loc[c[C.CONSENT_PROFILING] == consent, C.CUSTOMER_ID]
    return next(i for i in ids if len(held.get(i, ())) >= 2)


def test_api_offers_of_a_customer_come_from_the_acquisition_ranker(demo, served, client):
    customer_id = _customer(demo, consent=True)
    resp = client.get(f"/v1/customers/{customer_id}/offers?limit=7")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["source"] == "acquisition" and body["customer_id"] == customer_id
    held = _last_month_sets(demo.bank)[customer_id]
    for offer in body["offers"]:
        assert offer["source"] == "acquisition" and offer["product_id"] not in held
        assert {r["code"] for r in offer["reasons"]} <= ACQUISITION_REASONS
        assert all(r["text_en"] and r["text_zh"] for r in offer["reasons"])
    book = demo.book()
    expected = OfferEngine(artifacts.load(served.models_dir)).offers(
        book.batch(np.array([book.position(customer_id)])), 7)[0]
    assert len(expected.offers) >= 3
    assert [o["product_id"] for o in body["offers"]] == [o.product.id for o in expected.offers]
    other = _customer(demo, consent=False)
    assert client.get(f"/v1/customers/{other}/offers").get_json()["source"] == "popularity"


@pytest.mark.numerics
def test_api_scores_a_described_customer(demo, served, client):
    """Only current holdings are known: the ranker scores with the earlier months missing,
    exactly as the offer engine does for the same one-customer batch."""
    holdings = ["current_account", "mobile_banking", "payroll_service"]
    resp = client.post("/v1/offers/score", json={"customer": PROFILE, "holdings": holdings,
                                                  "limit": 5})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["source"] == "acquisition" and len(body["offers"]) == 5
    for offer in body["offers"]:
        assert offer["source"] == "acquisition" and offer["product_id"] not in holdings
        codes = {r["code"] for r in offer["reasons"]}
        assert "likely_next_product" in codes and "recently_held" not in codes
    batch = profile_batch({"customer_id": "request", **PROFILE}, holdings, demo.catalog,
                          demo.stages)
    expected = OfferEngine(artifacts.load(served.models_dir)).offers(batch, 5)[0]
    assert [o["product_id"] for o in body["offers"]] == [o.product.id for o in expected.offers]
    assert_close([o["score"] for o in body["offers"]], [round(o.score, 6) for o in expected.offers])


# =========================================================================== corrupt artifacts


@pytest.fixture
def model_copy(served, tmp_path) -> Path:
    """A private copy of the served model's folder; returns the version folder."""
    shutil.copytree(served.models_dir, tmp_path / "models", symlinks=True)
    return (tmp_path / "models" / "current").resolve()


def _record_checksum(folder: Path, name: str = "acquisition.joblib") -> None:
    """Make the manifest agree with the file, so the loader must check the content itself."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if (folder / name).exists():
        manifest["files"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    else:
        manifest["files"].pop(name, None)
    path.write_text(json.dumps(manifest), encoding="utf-8")


def test_the_copy_loads(model_copy):
    assert artifacts.load(model_copy.parent).served == "acquisition"


def test_a_changed_acquisition_file_fails_its_checksum(model_copy):
    path = model_copy / "acquisition.joblib"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="acquisition.joblib does not match its checksum"):
        artifacts.load(model_copy.parent)


def test_a_missing_acquisition_file_is_refused(model_copy):
    (model_copy / "acquisition.joblib").unlink()
    with pytest.raises(ArtifactError, match="acquisition.joblib is missing"):
        artifacts.load(model_copy.parent)
    _record_checksum(model_copy)  # no longer listed, but still served
    with pytest.raises(ArtifactError, match="serves 'acquisition', which this folder lacks"):
        artifacts.load(model_copy.parent)


@pytest.mark.parametrize("corrupt", ["truncated", "not a dict", "no model", "other products"])
def test_a_corrupt_acquisition_file_is_refused(model_copy, corrupt):
    path = model_copy / "acquisition.joblib"
    if corrupt == "truncated":
        path.write_bytes(path.read_bytes()[:200])
        expected = "cannot load"
    elif corrupt == "not a dict":
        joblib.dump(["not", "a", "state"], path)
        expected = "holds list, expected dict"
    else:
        state = joblib.load(path)
        if corrupt == "no model":
            del state["model"]
            expected = "acquisition.joblib is inconsistent"
        else:
            state["products"] = state["products"][::-1]
            expected = "products do not match"
        joblib.dump(state, path)
    _record_checksum(model_copy)
    with pytest.raises(ArtifactError, match=expected):
        artifacts.load(model_copy.parent)


def test_a_corrupt_booster_is_refused_with_an_artifact_error(model_copy):
    path = model_copy / "acquisition.joblib"
    state = joblib.load(path)
    state["model"] = state["model"][:40]
    joblib.dump(state, path)
    _record_checksum(model_copy)
    with pytest.raises(ArtifactError):
        artifacts.load(model_copy.parent)


@pytest.mark.parametrize(("examples", "min_leaf", "leaves"), [
    (57, 5, 5),           # a small bank: leaves of 5 examples, as many as they fill
    (10_000, 50, 15),     # enough: the configured values
    (2_000, 20, 15),
])
def test_tree_sizes_follow_the_number_of_examples(examples, min_leaf, leaves):
    params = AcquisitionRanker(AcquisitionConfig())._params(10, examples)
    assert (params["min_data_in_leaf"], params["num_leaves"]) == (min_leaf, leaves)


def test_a_small_banks_window_reaches_back_until_it_has_enough_examples(winback):
    """The same six months: with one month's additions below ``min_examples``, the earlier
    months join the training window, so changing the first month changes the model."""
    changed = list(winback.snapshots)
    changed[1] = sp.csr_matrix(np.zeros_like(winback.held[0], dtype=np.float32))
    small = AcquisitionConfig(n_lags=2, min_examples=0)
    grown = AcquisitionConfig(n_lags=2, min_examples=10**6)
    assert (_fit(winback, small).booster.model_to_string()
            == _fit(winback, small, changed).booster.model_to_string())
    assert (_fit(winback, grown).booster.model_to_string()
            != _fit(winback, grown, changed).booster.model_to_string())
