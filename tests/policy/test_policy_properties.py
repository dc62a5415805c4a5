"""Property tests of the decision policy: random customers, holdings and response histories.

For every generated book of customers, the decisions of ``OfferEngine`` are checked against
an independent, plain-Python reading of the policy (``_Oracle``): no offered product breaks a
rule, every rule's mask is exactly what the oracle says, and caps, consent, complaints, gains
and reasons hold. The same customers are decided three ways, which must agree: all in one
``CustomerBatch`` (a campaign), one at a time from the book (the API), and one at a time from
a request profile (``profile_batch``, the scoring endpoint).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from recommender.data import columns as C
from recommender.data.book import CustomerBook, profile_batch
from recommender.data.catalog import load_catalog
from recommender.data.customers import validate_customers
from recommender.data.demo import generate
from recommender.data.extracts import BankData, validate_holdings
from recommender.data.life_stages import load_life_stages
from recommender.policy.config import CHANNELS, load_policy
from recommender.policy.offers import MAX_OFFERS, OfferEngine, OfferList
from recommender.policy.rules import RULES, DecisionContext, allowed, contact_state
from recommender.policy.why_not import why_not
from recommender.ranking import fitting
from recommender.ranking.config import TrainConfig
from recommender.store.responses import OUTCOMES

CATALOG = load_catalog()
STAGES = load_life_stages()
POLICY = load_policy()
PRODUCTS = list(CATALOG.ids.external_ids)
CJK = re.compile(r"[\u4e00-\u9fff]")

NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
SNAPSHOT = pd.Timestamp("2026-10-31")
SNAPSHOT_UTC = SNAPSHOT.tz_localize(UTC).to_pydatetime()
DAY = 86400
# Products the demo model often offers: responses to them are likelier to matter.
FOCUS = ["mobile_banking", "payroll_service", "credit_card", "mortgage", "wmp_conservative",
         "pension_account", "time_deposit", "life_insurance", "car_loan", "consumer_loan"]
ANCHOR = {  # always in the book, so that the holdings extract has its snapshot
    "customer_id": "ANCHOR", "age": 40, "income": 90000.0, "marital_status": "married",
    "dependants": 1, "tenure_months": 60, "segment": "mass", "risk_grade": "C3",
    "residency": "resident", "consent_profiling": True, "vulnerable": False,
    "open_complaint": False,
}

SETTINGS = settings(max_examples=45, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --------------------------------------------------------------------------- strategies


@dataclass(frozen=True)
class Spec:
    """One generated customer: profile, holdings and recorded responses."""

    profile: dict
    assessed_days_ago: int | None
    holdings: tuple[str, ...]
    responses: tuple[tuple[str, str, str, datetime], ...]  # product, outcome, channel, at

    @property
    def assessed_on(self) -> pd.Timestamp | None:
        if self.assessed_days_ago is None:
            return None
        return pd.Timestamp((NOW - timedelta(days=self.assessed_days_ago)).date())


_seconds_ago = st.one_of(st.integers(0, 12 * 3600 - 1),  # today (NOW is at noon)
                         st.integers(0, 120 * DAY))
_event = st.tuples(st.one_of(st.sampled_from(FOCUS), st.sampled_from(PRODUCTS)),
                   st.sampled_from(OUTCOMES), st.sampled_from(CHANNELS), _seconds_ago,
                   st.integers(1, 4))  # repeated this many times, an hour apart
_income = st.one_of(st.none(), st.sampled_from([0.0, 35999.0, 36000.0, 50000.0, 60000.0,
                                                100000.0, 150000.0, 200000.0]),
                    st.integers(0, 400_000).map(float))


@st.composite
def customers(draw) -> Spec:
    profile = {
        "age": draw(st.integers(16, 90)), "income": draw(_income),
        "marital_status": draw(st.sampled_from(C.MARITAL_STATUSES)),
        "dependants": draw(st.integers(0, 3)), "tenure_months": draw(st.integers(0, 300)),
        "segment": draw(st.sampled_from(["mass", "affluent", "private"])),
        "risk_grade": draw(st.sampled_from(C.RISK_GRADES)),
        "residency": draw(st.sampled_from(C.RESIDENCIES)),
        "consent_profiling": draw(st.sampled_from([True, True, True, False])),
        "vulnerable": draw(st.sampled_from([False, False, True])),
        "open_complaint": draw(st.sampled_from([False, False, False, False, True])),
    }
    assessed = draw(st.one_of(st.none(), st.integers(0, 900)))
    current = draw(st.sampled_from([True, True, True, False]))
    others = draw(st.lists(st.sampled_from(PRODUCTS[1:]), unique=True, max_size=7))
    holdings = tuple((["current_account"] if current else []) + others)
    responses = []
    for product, outcome, channel, ago, times in draw(st.lists(_event, max_size=10)):
        for k in range(times):
            at = NOW - timedelta(seconds=ago) + timedelta(hours=k)
            if at <= NOW:
                responses.append((product, outcome, channel, at))
    return Spec(profile, assessed, holdings, tuple(responses))


contexts = st.builds(lambda channel, intent: DecisionContext(channel, intent, NOW),
                     st.sampled_from(CHANNELS), st.sampled_from([None, "retention", "borrowing"]))


# --------------------------------------------------------------------------- building


def _ids(specs: list[Spec]) -> list[str]:
    return [f"P{i:03d}" for i in range(len(specs))]


def _book(specs: list[Spec], model) -> CustomerBook:
    ids = _ids(specs)
    rows = [{**s.profile, "customer_id": cid,
             # the validator refuses a missing date (see test_policy.py, xfail): put a
             # placeholder in and make it missing after validation, as a fixed validator would
             C.RISK_ASSESSED_ON: s.assessed_on if s.assessed_on is not None else "2000-01-01"}
            for cid, s in zip(ids, specs, strict=True)]
    rows.append({**ANCHOR, C.RISK_ASSESSED_ON: "2026-06-30"})
    profiles = validate_customers(pd.DataFrame(rows), "<generated customers>")
    missing = [s.assessed_on is None for s in specs] + [False]
    profiles.loc[np.array(missing), C.RISK_ASSESSED_ON] = pd.NaT
    held = [(cid, p) for cid, s in zip(ids, specs, strict=True) for p in s.holdings]
    held.append(("ANCHOR", "current_account"))
    holdings = pd.DataFrame(held, columns=[C.CUSTOMER_ID, C.PRODUCT_ID]).assign(
        **{C.SNAPSHOT_DATE: SNAPSHOT})
    holdings = validate_holdings(holdings, CATALOG, pd.Index(profiles[C.CUSTOMER_ID]))
    return CustomerBook(BankData(profiles, holdings), CATALOG, STAGES,
                        model.config.cf.weighting, model.config.acquisition.n_lags)


def _history(specs: list[Spec]) -> pd.DataFrame:
    rows = [(cid, *r) for cid, s in zip(_ids(specs), specs, strict=True) for r in s.responses]
    frame = pd.DataFrame(rows, columns=[C.CUSTOMER_ID, C.PRODUCT_ID, "outcome", "channel",
                                        "recorded_at"])
    frame["recorded_at"] = pd.to_datetime(frame["recorded_at"], utc=True).astype(
        "datetime64[ns, UTC]")
    return frame


def _request_batch(spec: Spec, customer_id: str):
    profile = {**spec.profile, "customer_id": customer_id}
    if spec.assessed_on is not None:
        profile[C.RISK_ASSESSED_ON] = str(spec.assessed_on.date())
    return profile_batch(profile, list(spec.holdings), CATALOG, STAGES)


# --------------------------------------------------------------------------- the oracle


class _Oracle:
    """The policy read literally from the catalog, the policy file and the customer's data."""

    def __init__(self, spec: Spec, context: DecisionContext) -> None:
        self.spec, self.context, self.profile = spec, context, spec.profile
        self.held = set(spec.holdings)
        self.accepted = {p for p, o, _, at in spec.responses
                         if o == "accepted" and at > SNAPSHOT_UTC} - self.held
        self.owned = self.held | self.accepted
        assessed = spec.assessed_on
        limit = pd.Timestamp(NOW).tz_localize(None) - pd.Timedelta(
            days=POLICY.risk_assessment_valid_days)
        self.outdated = assessed is None or assessed < limit
        self.shown_today = sum(1 for _, o, ch, at in spec.responses
                               if o == "shown" and ch == context.channel
                               and at.date() == NOW.date())

    def _declined(self, product: str) -> bool:
        since = NOW - timedelta(days=POLICY.decline_cooldown_days)
        return any(p == product and o == "declined" and at >= since
                   for p, o, _, at in self.spec.responses)

    def _paused(self, product: str) -> bool:
        answers = [at for p, o, _, at in self.spec.responses if p == product and o != "shown"]
        last = max(answers) if answers else None
        since = NOW - timedelta(days=POLICY.unanswered_window_days)
        shows = [at for p, o, _, at in self.spec.responses
                 if p == product and o == "shown" and at >= since
                 and (last is None or at > last)]
        return len(shows) >= POLICY.max_unanswered_shows

    def failed(self, product_id: str) -> set[str]:
        """The rule codes that block this product for this customer."""
        product, profile = CATALOG[product_id], self.profile
        income = profile["income"]
        excluded = any(q in product.exclusions or product_id in CATALOG[q].exclusions
                       for q in self.owned)
        checks = {
            "already_held": product_id in self.held,
            "accepted_pending": product_id in self.accepted,
            "age": not product.min_age <= profile["age"] <= product.max_age,
            "income": product.min_income > 0 and (income is None or income < product.min_income),
            "residency": profile["residency"] not in product.residency,
            "prerequisite": not set(product.prerequisites) <= self.owned,
            "excluded_by_holding": excluded,
            "risk_grade_too_high": product.risk_level > int(profile["risk_grade"][1]),
            "risk_assessment_outdated": self.outdated
            and product.category in POLICY.investment_categories,
            "vulnerable_credit": profile["vulnerable"]
            and product.category in POLICY.credit_categories,
            "open_complaint": profile["open_complaint"],
            "declined_recently": self._declined(product_id),
            "paused_unanswered": self._paused(product_id),
        }
        return {code for code, fails in checks.items() if fails}

    def slots(self, limit: int) -> int:
        if self.profile["open_complaint"]:
            return 0
        left = max(POLICY.cap(self.context.channel) - self.shown_today, 0)
        return min(max(1, min(limit, MAX_OFFERS)), left)


def _check_decision(decision: OfferList, oracle: _Oracle, limit: int) -> None:
    """Every property a single decision must have."""
    profile = oracle.profile
    offered = [o.product.id for o in decision.offers]
    assert len(set(offered)) == len(offered)
    for product_id in offered:
        assert not oracle.failed(product_id), (product_id, oracle.failed(product_id))
    assert len(offered) <= oracle.slots(limit) <= min(limit, MAX_OFFERS)
    assert len(offered) <= max(POLICY.cap(oracle.context.channel) - oracle.shown_today, 0)
    actions = [a.id for a in decision.service_actions]
    if profile["open_complaint"]:
        assert offered == []
        assert "resolve_complaint" in actions and "open_complaint" in decision.notices
    else:
        assert "resolve_complaint" not in actions and "open_complaint" not in decision.notices
    assert ("update_risk_assessment" in actions) is oracle.outdated
    if profile["consent_profiling"]:
        assert decision.source != "popularity" and "non_personalised" not in decision.notices
    else:
        assert decision.source == "popularity" and "non_personalised" in decision.notices
    if not profile["open_complaint"] and oracle.slots(limit) == 0:
        assert "channel_cap_reached" in decision.notices
    if not offered and oracle.slots(limit) > 0 and not profile["open_complaint"]:
        assert "no_offer" in decision.notices
    assert [o.rank for o in decision.offers] == list(range(1, len(offered) + 1))
    priorities = [o.priority for o in decision.offers]
    assert priorities == sorted(priorities, reverse=True)
    for offer in decision.offers:
        assert offer.source == decision.source
        assert offer.expected_gain > 0
        assert offer.expected_gain == pytest.approx(
            offer.propensity * offer.product.value_weight - POLICY.contact_cost, rel=1e-6)
        assert offer.reasons and offer.reasons[-1].code == "suitability"
        for reason in offer.reasons:
            assert reason.text_en.strip() and not CJK.search(reason.text_en)
            assert CJK.search(reason.text_zh)
        body = offer.to_dict("zh")
        assert all(r["text"] == r["text_zh"] for r in body["reasons"])


def _summary(decision: OfferList) -> tuple:
    """A decision without its floating-point scores, which may differ in the last bit between
    a batch and a single customer (BLAS sums in another order)."""
    return (decision.customer_id, decision.life_stage.id, decision.source, decision.notices,
            tuple(a.id for a in decision.service_actions),
            tuple((o.product.id, o.rank, o.source, o.reasons) for o in decision.offers))


def _assert_same(a: OfferList, b: OfferList) -> None:
    assert _summary(a) == _summary(b)
    for x, y in zip(a.offers, b.offers, strict=True):
        assert (x.score, x.propensity, x.priority, x.expected_gain) == pytest.approx(
            (y.score, y.propensity, y.priority, y.expected_gain), rel=1e-5, abs=1e-9)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def engine() -> OfferEngine:
    """A calibrated hybrid model on a small demo bank (2,000 customers, 4 months)."""
    demo = generate(2000, 4, 17, CATALOG, STAGES)
    profiles = validate_customers(demo.customers, "<demo customers>")
    holdings = validate_holdings(demo.holdings, CATALOG, pd.Index(profiles[C.CUSTOMER_ID]))
    bank = BankData(profiles, holdings)
    model = fitting.fit(bank, CATALOG, STAGES, TrainConfig(ranker="hybrid"))
    return OfferEngine(replace(model, calibrator=fitting.calibrate(model, bank)), POLICY)


# --------------------------------------------------------------------------- properties


@SETTINGS
@given(specs=st.lists(customers(), min_size=1, max_size=8), context=contexts,
       limit=st.integers(1, 8))
def test_decisions_obey_every_rule_in_batch_and_one_at_a_time(engine, specs, context, limit):
    book = _book(specs, engine.model)
    history = _history(specs)
    everyone = book.batch(np.arange(len(specs)))
    contact = contact_state(history, everyone.customer_ids, CATALOG, POLICY, context,
                            book.snapshot)
    in_batch = engine.offers(everyone, limit, context, contact)
    scored = engine.score(everyone, limit, context, contact)
    offerable = allowed(scored.masks)
    for i, (spec, customer_id) in enumerate(zip(specs, _ids(specs), strict=True)):
        oracle = _Oracle(spec, context)
        # every rule's mask is exactly the oracle's reading of the rule
        for j, product_id in enumerate(PRODUCTS):
            failed = oracle.failed(product_id)
            assert {c for c in RULES if scored.masks[c][i, j]} == failed, (customer_id,
                                                                            product_id)
            assert bool(offerable[i, j]) is not failed
        assert int(contact.shown_today[i]) == oracle.shown_today
        assert int(scored.slots[i]) == oracle.slots(limit)
        _check_decision(in_batch[i], oracle, limit)
        for code in ("accepted_pending", "declined_recently", "paused_unanswered",
                     "excluded_by_holding", "risk_assessment_outdated", "vulnerable_credit"):
            if scored.masks[code][i].any():
                event(f"rule {code} blocks a product")
        for notice in in_batch[i].notices:
            event(f"notice {notice}")
        event("offers: " + ("none" if not in_batch[i].offers else "some"))
        # nothing offerable with a positive gain is left out while a slot is free
        chosen = {o.product.id for o in in_batch[i].offers}
        if len(chosen) < oracle.slots(limit):
            worth = {PRODUCTS[j] for j in np.flatnonzero(
                offerable[i] & (scored.expected_gain[i] > 0))}
            assert chosen == worth
        # one at a time, from the book (the API) and from a request profile: the same decision
        mine = history[history[C.CUSTOMER_ID] == customer_id]
        alone = book.batch(np.array([i]))
        own_contact = contact_state(mine, alone.customer_ids, CATALOG, POLICY, context,
                                    book.snapshot)
        single = engine.offers(alone, limit, context, own_contact)[0]
        _check_decision(single, oracle, limit)
        _assert_same(single, in_batch[i])
        requested = engine.offers(_request_batch(spec, customer_id), limit, context,
                                  own_contact)[0]
        _assert_same(requested, in_batch[i])


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec=customers(), context=contexts, limit=st.integers(1, 6))
def test_why_not_agrees_with_the_offers_and_the_oracle(engine, spec, context, limit):
    book = _book([spec], engine.model)
    alone = book.batch(np.array([0]))
    contact = contact_state(_history([spec]), alone.customer_ids, CATALOG, POLICY, context,
                            book.snapshot)
    decision = engine.offers(alone, limit, context, contact)[0]
    ranks = {o.product.id: o.rank for o in decision.offers}
    oracle = _Oracle(spec, context)
    for product_id in PRODUCTS:
        why = why_not(engine, alone, product_id, limit, context, contact, lang="zh")
        assert why["offered"] is (product_id in ranks)
        assert why["rank"] == ranks.get(product_id)
        codes = [r["code"] for r in why["rules"]]
        failed = oracle.failed(product_id)
        if failed:
            assert codes == [c for c in RULES if c in failed]
        elif product_id in ranks:
            assert codes == []
        else:
            assert codes in (["no_positive_gain"], ["channel_cap_reached"], ["ranked_lower"])
        for rule in why["rules"]:
            assert rule["text"] == rule["text_zh"] and CJK.search(rule["text_zh"])
            assert rule["text_en"].strip()


@SETTINGS
@given(specs=st.lists(customers(), min_size=2, max_size=6), context=contexts,
       limit=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_the_order_of_customers_in_a_batch_does_not_matter(engine, specs, context, limit,
                                                           seed):
    book = _book(specs, engine.model)
    history = _history(specs)
    order = np.random.default_rng(seed).permutation(len(specs))
    forward = book.batch(np.arange(len(specs)))
    shuffled = book.batch(order)
    decided = engine.offers(forward, limit, context, contact_state(
        history, forward.customer_ids, CATALOG, POLICY, context, book.snapshot))
    reordered = engine.offers(shuffled, limit, context, contact_state(
        history, shuffled.customer_ids, CATALOG, POLICY, context, book.snapshot))
    for k, i in enumerate(order):
        _assert_same(reordered[k], decided[i])
