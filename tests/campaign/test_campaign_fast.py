"""The campaign's fast path gives what the plain computations give: the same pairs, and
the same numbers within the project's tolerance (``tests/tolerance.py``).

A campaign computes rules, scores and calibration for its own products only, drops the
pairs scored under a floor before calibrating any, reads holdings as bit sets, and runs the
greedy as rounds of deferred acceptance. Each shortcut is compared here with the plain
computation it replaces, on varied customers: contact histories, vulnerable customers, open
complaints, outdated and missing risk assessments, changed holdings and no consent.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recommender.campaign import run as campaign_module
from recommender.campaign.assignment import greedy_assign
from recommender.campaign.run import CampaignPlan, _candidates
from recommender.campaign.spec import CampaignSpec
from recommender.data import columns as C
from recommender.data.book import CustomerBook
from recommender.data.catalog import load_catalog
from recommender.data.customers import validate_customers
from recommender.data.demo import generate
from recommender.data.eligibility import (
    holding_sets,
    holds,
    holds_all,
    holds_any,
    prerequisites_met,
    product_words,
)
from recommender.data.extracts import BankData, validate_holdings
from recommender.data.life_stages import load_life_stages
from recommender.policy.config import load_policy
from recommender.policy.offers import OfferEngine
from recommender.policy.rules import (
    ContactState,
    DecisionContext,
    allowed,
    contact_state,
    rule_masks,
)
from recommender.ranking import fitting
from recommender.ranking.calibration import Calibrator
from recommender.ranking.config import TrainConfig
from recommender.ranking.ranker import changed_rows

from tolerance import assert_close

pytestmark = pytest.mark.numerics  # compares numbers two code paths compute

CATALOG = load_catalog()
STAGES = load_life_stages()
POLICY = load_policy()
NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
PRODUCTS = ("wmp_conservative", "bond_fund", "time_deposit", "credit_card", "car_loan",
            "pension_account")


def _sequential_greedy(customers, products, values, quotas, per_customer) -> list[int]:
    """The greedy read literally: pairs by decreasing value (ties: customer, product), each
    taken while its customer and its product have room."""
    order = sorted(range(len(values)), key=lambda i: (-values[i], customers[i], products[i]))
    room, taken, chosen = dict(quotas), {}, []
    for i in order:
        c, p = int(customers[i]), int(products[i])
        if room.get(p, 0) > 0 and taken.get(c, 0) < per_customer:
            chosen.append(i)
            taken[c] = taken.get(c, 0) + 1
            room[p] -= 1
    return chosen


@pytest.mark.parametrize("seed", range(40))
def test_greedy_rounds_take_the_pairs_of_the_sequential_greedy_in_its_order(seed):
    rng = np.random.default_rng(seed)
    n_customers, n_products = int(rng.integers(1, 300)), int(rng.integers(1, 7))
    pairs = [(c, p) for c in range(n_customers) for p in range(n_products)
             if rng.random() < rng.uniform(0.2, 1.0)]
    if seed % 4 == 0:
        pairs = [pairs[i] for i in rng.permutation(len(pairs))]  # not sorted by customer
    customers = np.array([c for c, _ in pairs], dtype=np.int64)
    products = np.array([p for _, p in pairs], dtype=np.int64)
    values = rng.integers(1, 5, len(pairs)) / 8.0  # a few values: ties everywhere
    quotas = {p: int(rng.integers(0, 3 * n_customers // n_products + 2))
              for p in range(n_products) if rng.random() < 0.9}  # some products: no quota
    per_customer = int(rng.integers(1, n_products + 2))
    expected = _sequential_greedy(customers, products, values, quotas, per_customer)
    got = greedy_assign(customers, products, values, quotas, per_customer)
    assert got.tolist() == expected


def test_greedy_with_no_pairs():
    empty = np.empty(0, dtype=np.int64)
    assert greedy_assign(empty, empty, np.empty(0), {0: 3}, 1).tolist() == []


# --------------------------------------------------------------------------- holdings as bits


def _bits_as_mask(sets: np.ndarray, n_products: int) -> np.ndarray:
    return holds(sets, np.arange(n_products))


@pytest.mark.parametrize("n", [1, 3, 64, 65, 300])  # few customers: read densely
@pytest.mark.parametrize("n_products", [1, 5, 21, 64, 65, 150])
def test_holding_sets_read_what_is_held_even_with_duplicates_and_zeros(n_products, n):
    rng = np.random.default_rng(n_products + n)
    rows = rng.integers(0, n, 7 * n)
    cols = rng.integers(0, n_products, 7 * n)
    data = rng.choice([1.0, 1.0, 2.0, 0.0, -1.0], 7 * n).astype(np.float32)
    matrix = sp.csr_matrix((data, (rows, cols)), shape=(n, n_products))  # summed: canonical
    order = np.argsort(rows, kind="stable")
    raw = sp.csr_matrix((data[order], cols[order],  # duplicates and explicit zeros kept
                         np.r_[0, np.cumsum(np.bincount(rows, minlength=n))]),
                        shape=(n, n_products))
    for held in (matrix, raw, matrix.toarray() > 0):
        dense = (held.toarray() if sp.issparse(held) else held) > 0
        np.testing.assert_array_equal(_bits_as_mask(holding_sets(held), n_products), dense)


def test_holds_all_and_any_against_dense_counts():
    rng = np.random.default_rng(0)
    held = rng.random((200, 70)) < 0.2
    marked = rng.random((70, 9)) < 0.05
    sets, words = holding_sets(held), product_words(marked)
    count = held.astype(int) @ marked.astype(int)
    np.testing.assert_array_equal(holds_all(sets, words), count == marked.sum(axis=0))
    np.testing.assert_array_equal(holds_any(sets, words), count > 0)
    np.testing.assert_array_equal(holds(sets, np.array([69, 0, 64, 3])), held[:, [69, 0, 64, 3]])


def test_prerequisites_read_from_sparse_or_dense_holdings_agree():
    rng = np.random.default_rng(1)
    held = (rng.random((100, len(CATALOG))) < 0.3).astype(np.float32)
    required = CATALOG.prerequisite_matrix()
    expected = held @ required >= required.sum(axis=0)
    np.testing.assert_array_equal(prerequisites_met(sp.csr_matrix(held), CATALOG), expected)
    np.testing.assert_array_equal(prerequisites_met(held > 0, CATALOG), expected)
    cols = np.array([5, 0, 12])
    np.testing.assert_array_equal(prerequisites_met(held > 0, CATALOG, cols), expected[:, cols])


def test_changed_rows_against_a_dense_comparison_with_duplicates():
    rng = np.random.default_rng(2)
    a = sp.csr_matrix((rng.random((80, 30)) < 0.2).astype(np.float32))
    b = a.copy().tolil()
    for i in rng.choice(80, 20, replace=False):
        b[i, int(rng.integers(30))] = float(rng.choice([0.0, 1.0, 3.0]))
    b = b.tocsr()
    expected = ((a.toarray() > 0) != (b.toarray() > 0)).any(axis=1)
    np.testing.assert_array_equal(changed_rows(a, b), expected)


# --------------------------------------------------------------------------- calibration floor


@pytest.mark.parametrize("seed", range(12))
def test_no_score_under_the_floor_passes_and_the_floor_is_tight(seed):
    rng = np.random.default_rng(seed)
    knots = np.sort(rng.choice(np.linspace(-12, 2, 4000), int(rng.integers(1, 40)),
                               replace=False))
    values = np.maximum.accumulate(np.sort(rng.choice([0.0, 0.0005, 0.001, 0.002, 0.003,
                                                       0.01, 0.05], len(knots))))
    calibrator = Calibrator(knots, values)
    minimum, weight, cost = float(rng.choice([0.0, 0.002, 0.001])), rng.uniform(0.3, 4), 0.002

    def passes(p: np.ndarray) -> np.ndarray:
        return (p >= minimum) & (p * weight - cost > 0)

    floor = calibrator.score_floor(passes)
    scores = np.concatenate([rng.uniform(-14, 4, 20000), knots, np.nextafter(knots, -np.inf),
                             np.nextafter(knots, np.inf)]).astype(np.float32)
    ok = passes(calibrator.predict(scores))
    assert not ok[scores < floor].any()
    # Tight: above the floor, only scores next to a knot where the values cross may fail.
    assert (~ok[scores >= floor]).sum() <= 3


def test_a_floor_of_an_all_failing_or_all_passing_calibration():
    flat = Calibrator(np.array([-1.0, 1.0]), np.array([0.001, 0.001]))
    assert flat.score_floor(lambda p: p > 0.5) == np.inf
    assert flat.score_floor(lambda p: p > 0.0) == -np.inf


# --------------------------------------------------------------------------- a varied bank


@pytest.fixture(scope="module")
def varied():
    """A calibrated hybrid model and a book whose customers break every rule somewhere, with
    a contact history, changed holdings (fold-in) and customers holding nothing."""
    demo = generate(1500, 4, 23, CATALOG, STAGES)
    profiles = validate_customers(demo.customers, "<demo customers>")
    holdings = validate_holdings(demo.holdings, CATALOG, pd.Index(profiles[C.CUSTOMER_ID]))
    bank = BankData(profiles, holdings)
    model = fitting.fit(bank, CATALOG, STAGES, TrainConfig(ranker="hybrid"))
    model = replace(model, calibrator=fitting.calibrate(model, bank))
    rng = np.random.default_rng(5)
    changed = profiles.copy()
    n = len(changed)
    changed[C.VULNERABLE] = rng.random(n) < 0.1
    changed[C.OPEN_COMPLAINT] = rng.random(n) < 0.05
    changed[C.CONSENT_PROFILING] = rng.random(n) < 0.9
    old = rng.random(n) < 0.2
    changed.loc[old, C.RISK_ASSESSED_ON] = pd.Timestamp("2021-01-01")
    changed.loc[rng.random(n) < 0.05, C.RISK_ASSESSED_ON] = pd.NaT
    latest = holdings[C.SNAPSHOT_DATE].max()
    dropped = holdings.index[(holdings[C.SNAPSHOT_DATE] == latest)
                             & (rng.random(len(holdings)) < 0.05)]  # changed holdings
    book = CustomerBook(BankData(changed, holdings.drop(dropped)), CATALOG, STAGES,
                        model.config.cf.weighting, model.config.acquisition.n_lags)
    ids = book.ids.external_ids
    events = []
    for k, cid in enumerate(rng.choice(ids, 300, replace=False)):
        for _ in range(int(rng.integers(1, 6))):
            events.append((cid, str(rng.choice(CATALOG.ids.external_ids)),
                           str(rng.choice(["declined", "shown", "accepted"])),
                           str(rng.choice(["mobile", "branch"])),
                           NOW - timedelta(days=int(rng.integers(0, 100)), hours=k % 7)))
    history = pd.DataFrame(events, columns=[C.CUSTOMER_ID, C.PRODUCT_ID, "outcome", "channel",
                                            "recorded_at"])
    history["recorded_at"] = pd.to_datetime(history["recorded_at"], utc=True)
    return model, book, history


def _contact_of(book, history, context) -> ContactState:
    batch = book.batch(np.arange(len(book)))
    return contact_state(history, batch.customer_ids, CATALOG, POLICY, context, book.snapshot)


def test_masks_of_a_few_products_are_those_columns_of_all_masks(varied):
    model, book, history = varied
    context = DecisionContext("mobile", None, NOW)
    batch = book.batch(np.arange(len(book)))
    contact = _contact_of(book, history, context)
    full = rule_masks(batch, CATALOG, POLICY, contact, context)
    cols = np.sort(CATALOG.ids.to_internal(list(PRODUCTS)))
    few = rule_masks(batch, CATALOG, POLICY, contact, context, cols)
    assert list(few) == list(full)
    for code, mask in full.items():
        np.testing.assert_array_equal(few[code], mask[:, cols], err_msg=code)
    np.testing.assert_array_equal(allowed(few), allowed(full)[:, cols])
    for code in ("accepted_pending", "declined_recently", "vulnerable_credit", "open_complaint",
                 "risk_assessment_outdated", "prerequisite", "excluded_by_holding"):
        assert few[code].any(), code  # the batch exercises the rule


def test_ranker_scores_of_a_few_products_are_those_columns(varied):
    model, book, _ = varied
    engine = OfferEngine(model, POLICY)
    batch = book.batch(np.arange(len(book)))
    cols = np.array([12, 3, 9])
    full, few = engine.ranker.score(batch), engine.ranker.score(batch, cols)
    assert set(full.sources) >= {"cf", "cf_fold_in", "life_stage_prior", "popularity"}
    np.testing.assert_array_equal(few.sources, full.sources)
    assert_close(few.scores, full.scores[:, cols])
    assert_close(few.cf_scores, full.cf_scores[:, cols])


def _reference_pairs(engine, batch, contact, recent, plan) -> pd.DataFrame:
    """The pairs as the campaign computed them before the fast path: every product scored,
    calibrated and arbitrated by ``OfferEngine.score``, then the campaign's columns kept."""
    masks = rule_masks(batch, CATALOG, engine.policy, contact, plan.context)
    worth = allowed(masks)[:, plan.cols].any(axis=1) & ~recent
    worth &= ~np.isin(batch.stages, plan.excluded_stages)
    chosen = np.flatnonzero(worth)
    part = batch.take(chosen)
    scored = engine.score(part, len(plan.cols), plan.context, contact.take(chosen),
                          {name: mask[chosen] for name, mask in masks.items()})
    ok = np.isfinite(scored.priority[:, plan.cols])
    ok &= scored.propensity[:, plan.cols] >= plan.spec.min_propensity
    ok &= (scored.slots > 0)[:, None]
    rows, k = np.nonzero(ok)
    cols = plan.cols[k]
    return pd.DataFrame({"ids": part.customer_ids[rows], "cols": cols,
                         "values": scored.expected_gain[rows, cols],
                         "propensity": scored.propensity[rows, cols],
                         "priority": scored.priority[rows, cols],
                         "sources": scored.sources[rows]})


@pytest.mark.parametrize("calibrated", [True, False])
@pytest.mark.parametrize("whole_chunks", [True, False])
@pytest.mark.parametrize("min_propensity", [0.0, 0.002, 0.01])
def test_candidate_pairs_equal_those_of_the_full_decision(varied, calibrated, whole_chunks,
                                                          min_propensity, monkeypatch):
    model, book, history = varied
    if not calibrated:
        model = replace(model, calibrator=None)
    engine = OfferEngine(model, POLICY)
    if not whole_chunks:  # as for a ranker that costs more than copying rows
        monkeypatch.setattr(engine.ranker, "scores_cheaply", False)
    spec = CampaignSpec(name="t", channel="mobile", products=PRODUCTS,
                        quotas=dict.fromkeys(PRODUCTS, 10), min_propensity=min_propensity,
                        exclude_life_stages=("student",))
    context = DecisionContext("mobile", None, NOW)
    plan = CampaignPlan.of(engine, spec, context)
    batch = book.batch(np.arange(len(book)))
    contact = _contact_of(book, history, context)
    recent = np.random.default_rng(3).random(len(batch)) < 0.1
    got = _candidates(engine, batch, contact, recent, plan)
    expected = _reference_pairs(engine, batch, contact, recent, plan)
    assert len(expected) > 50
    frame = pd.DataFrame({**got, "sources": np.asarray(campaign_module.SOURCES)[got["sources"]]})
    for name in ("ids", "cols", "sources"):  # the decision: which pairs
        np.testing.assert_array_equal(frame[name].to_numpy(), expected[name].to_numpy(),
                                      err_msg=name)
    for name in ("values", "propensity", "priority"):
        assert_close(frame[name].to_numpy(), expected[name].to_numpy(), err_msg=name)
