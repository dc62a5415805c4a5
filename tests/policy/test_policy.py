"""Decision policy: every rule, arbitration, why-not, the policy file and calibration.

Known answers on hand-made one- or few-customer batches, under the packaged catalog and
policy. The rules are checked on their masks (``rule_masks``, ``contact_state``) and, where
the engine adds something (service actions, notices, caps, consent), through ``OfferEngine``
with a small model trained once for the module. Where the ordering of offers matters, the
model's propensities are replaced by a constant calibrator, so that the expected order is
computed by hand from the catalog's value weights alone.

Packaged catalog order (positions): current_account 0, mobile_banking 1, payroll_service 2,
time_deposit 3, large_cd 4, credit_card 5, mortgage 6, car_loan 7, consumer_loan 8,
wmp_conservative 9, wmp_balanced 10, wmp_growth 11, bond_fund 12, equity_fund 13,
gold_savings 14, fx_service 15, home_insurance 16, health_insurance 17, life_insurance 18,
education_savings 19, pension_account 20.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from recommender.data.book import CustomerBook, profile_batch
from recommender.data.catalog import draft_catalog_text, load_catalog, parse_catalog
from recommender.data.customers import validate_customers
from recommender.data.demo import generate
from recommender.data.extracts import BankData, validate_holdings
from recommender.data.life_stages import load_life_stages
from recommender.exceptions import ConfigError
from recommender.policy.config import load_policy, parse_policy
from recommender.policy.offers import OfferEngine
from recommender.policy.rules import (
    RULES,
    ContactState,
    DecisionContext,
    allowed,
    arbitrate,
    contact_state,
    context_weights,
    rule_masks,
)
from recommender.policy.why_not import why_not
from recommender.ranking import fitting
from recommender.ranking.calibration import Calibrator, fit_calibrator, reliability
from recommender.ranking.config import TrainConfig

CATALOG = load_catalog()
STAGES = load_life_stages()
POLICY = load_policy()
POLICY_TEXT = POLICY.text
PRODUCTS = list(CATALOG.ids.external_ids)
CJK = re.compile(r"[\u4e00-\u9fff]")

NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
SNAPSHOT = pd.Timestamp("2026-10-31")  # the date of the (hand-made) holdings snapshot
BRANCH = DecisionContext("branch", None, NOW)
DROP = object()  # leave a field out of the profile


def _days_ago(days: int) -> str:
    return (NOW - timedelta(days=days)).date().isoformat()


# A mid-career customer who passes every rule for most of the catalog: 35, single, income
# 120,000, risk grade C3, resident, consenting, assessed 100 days ago.
BASE = {
    "customer_id": "T1", "age": 35, "income": 120000.0, "marital_status": "single",
    "dependants": 0, "tenure_months": 24, "segment": "mass", "risk_grade": "C3",
    "residency": "resident", "consent_profiling": True, "risk_assessed_on": _days_ago(100),
    "vulnerable": False, "open_complaint": False,
}
INVESTMENT = ["wmp_conservative", "wmp_balanced", "wmp_growth", "bond_fund", "equity_fund",
              "gold_savings"]
CREDIT = ["credit_card", "mortgage", "car_loan", "consumer_loan"]

# Every product the BASE customer holding only a current account may be offered, in the
# order of value_weight x business lever (pension_account 3 x 1.2 = 3.6), ties broken by
# catalog position. Left out: current_account (held), large_cd (income 150,000),
# wmp_growth (R4, income 200,000), equity_fund (R4 above C3).
BASE_ORDER = [
    "mortgage",  # 8
    "car_loan", "wmp_balanced", "life_insurance",  # 4: positions 7, 10, 18
    "pension_account",  # 3.6
    "credit_card", "consumer_loan", "wmp_conservative", "bond_fund", "health_insurance",  # 3
    "education_savings",  # 2.5
    "payroll_service", "gold_savings", "home_insurance",  # 2
    "time_deposit", "fx_service",  # 1.5
    "mobile_banking",  # 0.5
]


def _pos(product_id: str) -> int:
    return CATALOG.ids.position(product_id)


def _batch(holdings=(), **changes):
    profile = {k: v for k, v in {**BASE, **changes}.items() if v is not DROP}
    return profile_batch(profile, list(holdings), CATALOG, STAGES)


def _history(*rows) -> pd.DataFrame:
    """Rows of (customer_id, product_id, outcome, channel, recorded_at), as the store returns."""
    frame = pd.DataFrame(list(rows), columns=["customer_id", "product_id", "outcome", "channel",
                                              "recorded_at"])
    frame["recorded_at"] = pd.to_datetime(frame["recorded_at"], utc=True).astype(
        "datetime64[ns, UTC]")
    return frame


def _contact(*rows, ids=("T1",), context=BRANCH, policy=POLICY,
             data_as_of=SNAPSHOT) -> ContactState:
    return contact_state(_history(*rows), np.array(ids), CATALOG, policy, context, data_as_of)


def _masks(batch, contact=None, context=BRANCH, policy=POLICY) -> dict[str, np.ndarray]:
    contact = contact or ContactState.empty(len(batch), len(CATALOG))
    return rule_masks(batch, CATALOG, policy, contact, context)


def _blocked_by(masks, code: str, row: int = 0) -> set[str]:
    return {PRODUCTS[j] for j in np.flatnonzero(masks[code][row])}


def _codes(masks, product_id: str, row: int = 0) -> list[str]:
    return [code for code in RULES if masks[code][row, _pos(product_id)]]


def _policy(old: str, new: str) -> str:
    assert old in POLICY_TEXT, old
    return POLICY_TEXT.replace(old, new, 1)


NO_CAPS = parse_policy(_policy(
    "[contact.daily_caps]\n# At most this many offers shown per customer per day, per channel."
    "\nbranch = 5\nmobile = 3\ncall_center = 2\nemail = 1\n", ""), "<no caps>")


def _offer_ids(decision) -> list[str]:
    return [o.product.id for o in decision.offers]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model():
    """Hybrid model on a small demo bank (2,000 customers, 4 months), calibrated."""
    demo = generate(2000, 4, 3, CATALOG, STAGES)
    customers = validate_customers(demo.customers, "<demo customers>")
    holdings = validate_holdings(demo.holdings, CATALOG, pd.Index(customers["customer_id"]))
    bank = BankData(customers, holdings)
    fitted = fitting.fit(bank, CATALOG, STAGES, TrainConfig(ranker="hybrid"))
    return replace(fitted, calibrator=fitting.calibrate(fitted, bank))


@pytest.fixture(scope="module")
def engine(model) -> OfferEngine:
    return OfferEngine(model, POLICY)


def _constant_engine(model, propensity: float, policy=NO_CAPS) -> OfferEngine:
    """The model with every finite score calibrated to the same propensity."""
    flat = Calibrator(np.array([-1e6, 1e6]), np.array([propensity, propensity]))
    return OfferEngine(replace(model, calibrator=flat), policy)


@pytest.fixture(scope="module")
def flat_engine(model) -> OfferEngine:
    return _constant_engine(model, 0.05)


# --------------------------------------------------------------------------- the rules


def test_the_base_customer_passes_every_rule_for_the_expected_products():
    """The reference for the tests below: only the products named in BASE_ORDER pass."""
    masks = _masks(_batch(["current_account"]))
    offerable = {PRODUCTS[j] for j in np.flatnonzero(allowed(masks)[0])}
    assert offerable == set(BASE_ORDER)
    assert _codes(masks, "current_account") == ["already_held"]
    assert _codes(masks, "large_cd") == ["income"]
    assert _codes(masks, "wmp_growth") == ["income", "risk_grade_too_high"]
    assert _codes(masks, "equity_fund") == ["risk_grade_too_high"]


def test_already_held_blocks_exactly_the_held_products():
    masks = _masks(_batch(["current_account", "mortgage", "bond_fund"]))
    assert _blocked_by(masks, "already_held") == {"current_account", "mortgage", "bond_fund"}
    assert _blocked_by(_masks(_batch()), "already_held") == set()


def test_accepted_after_the_snapshot_counts_as_held_before_it_does_not():
    after = ("T1", "credit_card", "accepted", "branch", datetime(2026, 11, 2, 10, tzinfo=UTC))
    before = ("T1", "credit_card", "accepted", "branch", datetime(2026, 10, 20, 10, tzinfo=UTC))
    batch = _batch(["current_account"])
    pending = _contact(after)
    assert pending.accepted_pending[0].tolist() == [p == "credit_card" for p in PRODUCTS]
    assert _codes(_masks(batch, pending), "credit_card") == ["accepted_pending"]
    not_pending = _contact(before)
    assert not not_pending.accepted_pending.any()
    assert _codes(_masks(batch, not_pending), "credit_card") == []


def test_a_pending_acceptance_is_owned_for_prerequisites_and_exclusions():
    """An accepted current account (not yet in the extract) meets the card's prerequisite;
    an accepted car loan excludes the consumer loan."""
    at = datetime(2026, 11, 3, tzinfo=UTC)
    contact = _contact(("T1", "current_account", "accepted", "branch", at),
                       ("T1", "car_loan", "accepted", "mobile", at))
    masks = _masks(_batch(), contact)
    assert _codes(masks, "credit_card") == []
    assert _codes(masks, "current_account") == ["accepted_pending"]
    assert _codes(masks, "consumer_loan") == ["excluded_by_holding"]
    without = _masks(_batch())
    assert _codes(without, "credit_card") == ["prerequisite"]


def test_held_wins_over_a_pending_acceptance_of_the_same_product():
    contact = _contact(("T1", "mortgage", "accepted", "branch", datetime(2026, 11, 3, tzinfo=UTC)))
    masks = _masks(_batch(["current_account", "mortgage"]), contact)
    assert _codes(masks, "mortgage") == ["already_held"]


@pytest.mark.parametrize("age, blocked", [
    (16, {"payroll_service", "time_deposit", "large_cd", "credit_card", "mortgage", "car_loan",
          "consumer_loan", "wmp_conservative", "wmp_balanced", "wmp_growth", "bond_fund",
          "equity_fund", "gold_savings", "home_insurance", "health_insurance", "life_insurance",
          "education_savings", "pension_account"}),
    (18, {"mortgage", "car_loan", "consumer_loan", "home_insurance", "life_insurance",
          "education_savings"}),
    (22, {"life_insurance"}),
    (35, set()),
    (56, {"consumer_loan"}),
    (61, {"mortgage", "car_loan", "consumer_loan", "life_insurance", "education_savings"}),
    (66, {"payroll_service", "credit_card", "mortgage", "car_loan", "consumer_loan",
          "health_insurance", "life_insurance", "education_savings", "pension_account"}),
    (71, {"payroll_service", "credit_card", "mortgage", "car_loan", "consumer_loan",
          "wmp_growth", "equity_fund", "health_insurance", "life_insurance",
          "education_savings", "pension_account"}),
])
def test_age_limits_are_inclusive(age, blocked):
    assert _blocked_by(_masks(_batch(age=age)), "age") == blocked


def test_credit_card_age_bounds():
    card = _pos("credit_card")
    assert [bool(_masks(_batch(age=a))["age"][0, card]) for a in (17, 18, 65, 66)] == [
        True, False, False, True]


@pytest.mark.parametrize("income, blocked", [
    (35999.0, {"credit_card", "mortgage", "car_loan", "consumer_loan", "large_cd",
               "wmp_balanced", "wmp_growth"}),
    (36000.0, {"mortgage", "car_loan", "consumer_loan", "large_cd", "wmp_balanced",
               "wmp_growth"}),
    (150000.0, {"wmp_growth"}),
    (200000.0, set()),
])
def test_income_minimums(income, blocked):
    assert _blocked_by(_masks(_batch(income=income)), "income") == blocked


def test_unknown_income_fails_every_positive_minimum_and_only_those():
    masks = _masks(_batch(income=None))
    assert _blocked_by(masks, "income") == {p.id for p in CATALOG.products if p.min_income > 0}
    assert _blocked_by(masks, "income") == {"large_cd", "credit_card", "mortgage", "car_loan",
                                            "consumer_loan", "wmp_balanced", "wmp_growth"}


def test_residency():
    assert _blocked_by(_masks(_batch(residency="non_resident")), "residency") == {
        "mortgage", "car_loan", "pension_account"}
    assert _blocked_by(_masks(_batch(residency="resident")), "residency") == set()


def test_prerequisite_credit_card_needs_a_current_account():
    assert _codes(_masks(_batch()), "credit_card") == ["prerequisite"]
    assert _codes(_masks(_batch(["current_account"])), "credit_card") == []
    # everything but the current account and the two insurances needs the current account
    assert _blocked_by(_masks(_batch()), "prerequisite") == set(PRODUCTS) - {
        "current_account", "home_insurance", "health_insurance", "life_insurance"}


@pytest.mark.parametrize("held, excluded", [("car_loan", "consumer_loan"),
                                            ("consumer_loan", "car_loan")])
def test_car_loan_and_consumer_loan_exclude_each_other(held, excluded):
    masks = _masks(_batch(["current_account", held]))
    assert _blocked_by(masks, "excluded_by_holding") == {excluded}
    assert _codes(masks, excluded) == ["excluded_by_holding"]
    assert _codes(masks, held) == ["already_held"]
    assert _blocked_by(_masks(_batch(["current_account"])), "excluded_by_holding") == set()


@pytest.mark.parametrize("grade, blocked", [
    ("C1", {"wmp_conservative", "wmp_balanced", "wmp_growth", "bond_fund", "equity_fund",
            "gold_savings", "fx_service", "life_insurance"}),
    ("C2", {"wmp_balanced", "wmp_growth", "equity_fund", "gold_savings"}),
    ("C3", {"wmp_growth", "equity_fund"}),
    ("C4", set()),
    ("C5", set()),
])
def test_risk_grade_too_high(grade, blocked):
    assert _blocked_by(_masks(_batch(risk_grade=grade)), "risk_grade_too_high") == blocked


def test_an_r4_product_is_blocked_for_c3_and_allowed_for_c4():
    fund = ["current_account"]
    assert _codes(_masks(_batch(fund, risk_grade="C3")), "equity_fund") == [
        "risk_grade_too_high"]
    assert _codes(_masks(_batch(fund, risk_grade="C4")), "equity_fund") == []


@pytest.mark.parametrize("assessed, outdated", [
    (_days_ago(400), True), (_days_ago(366), True), (_days_ago(364), False),
    (_days_ago(100), False), (DROP, True),
])
def test_risk_assessment_outdated_blocks_investment_categories_only(assessed, outdated):
    masks = _masks(_batch(["current_account"], risk_assessed_on=assessed))
    assert _blocked_by(masks, "risk_assessment_outdated") == (set(INVESTMENT) if outdated
                                                               else set())


@pytest.mark.parametrize("assessed, outdated", [("2024-01-02", True), ("2024-01-03", False)])
def test_the_assessment_validity_is_counted_on_the_context_clock(assessed, outdated):
    """365 days before 2025-01-01 06:00 (+08:00) on that clock is 2024-01-02 06:00 (in UTC
    it would be 2024-01-01 22:00): an assessment of 2024-01-02 is out of date."""
    at = datetime(2025, 1, 1, 6, 0, tzinfo=timezone(timedelta(hours=8)))
    masks = _masks(_batch(["current_account"], risk_assessed_on=assessed),
                   context=DecisionContext("branch", None, at))
    assert _blocked_by(masks, "risk_assessment_outdated") == (set(INVESTMENT) if outdated
                                                               else set())


def test_outdated_assessment_adds_the_update_service_action(engine):
    old = engine.offers(_batch(["current_account"], risk_assessed_on=_days_ago(400)), 5,
                        BRANCH)[0]
    assert [a.id for a in old.service_actions] == ["update_risk_assessment"]
    assert not set(_offer_ids(old)) & set(INVESTMENT)
    missing = engine.offers(_batch(["current_account"], risk_assessed_on=DROP), 5, BRANCH)[0]
    assert [a.id for a in missing.service_actions] == ["update_risk_assessment"]
    fresh = engine.offers(_batch(["current_account"]), 5, BRANCH)[0]
    assert fresh.service_actions == ()
    action = old.to_dict("zh")["service_actions"][0]
    assert action["kind"] == "service_action" and action["text"] == action["text_zh"]
    assert CJK.search(action["text_zh"]) and action["text_en"].startswith("The investor risk")


def test_a_customer_never_assessed_can_be_in_the_extract_and_is_blocked_from_investments():
    customers = pd.DataFrame([{**BASE, "customer_id": "A"},
                              {**BASE, "customer_id": "B", "risk_assessed_on": None}])
    holdings = pd.DataFrame({"customer_id": ["A", "B"], "product_id": ["current_account"] * 2,
                             "snapshot_date": [SNAPSHOT] * 2})
    valid = validate_customers(customers)
    bank = BankData(valid, validate_holdings(holdings, CATALOG, pd.Index(valid["customer_id"])))
    book = CustomerBook(bank, CATALOG, STAGES)
    masks = _masks(book.batch(np.arange(2)))
    assert _blocked_by(masks, "risk_assessment_outdated", row=0) == set()
    assert _blocked_by(masks, "risk_assessment_outdated", row=1) == set(INVESTMENT)


def test_vulnerable_customers_get_no_credit_products():
    assert _blocked_by(_masks(_batch(["current_account"], vulnerable=True)),
                       "vulnerable_credit") == set(CREDIT)
    assert _blocked_by(_masks(_batch(["current_account"])), "vulnerable_credit") == set()


def test_an_unclassified_product_gets_both_category_rules():
    """A drafted catalog's products may be investment or credit products: until the bank says
    which, neither a vulnerable customer nor an outdated risk assessment gets them."""
    drafted = parse_catalog(draft_catalog_text(["current_account", "new_thing"]), "<draft>")
    def masks(**changes):
        batch = profile_batch({k: v for k, v in {**BASE, **changes}.items() if v is not DROP},
                              ["current_account"], drafted, STAGES)
        return rule_masks(batch, drafted, POLICY, ContactState.empty(1, len(drafted)), BRANCH)

    new_thing = drafted.ids.position("new_thing")
    assert masks(vulnerable=True)["vulnerable_credit"][0, new_thing]
    assert masks(risk_assessed_on=DROP)["risk_assessment_outdated"][0, new_thing]
    fine = masks()
    assert not fine["vulnerable_credit"][0, new_thing]
    assert not fine["risk_assessment_outdated"][0, new_thing]


def test_vulnerable_customers_are_still_offered_other_products(flat_engine):
    decision = flat_engine.offers(_batch(["current_account"], vulnerable=True), 20, BRANCH)[0]
    assert _offer_ids(decision) == [p for p in BASE_ORDER if p not in CREDIT]


def test_open_complaint_means_no_sales_offer_only_the_service_action(engine):
    batch = _batch(["current_account"], open_complaint=True)
    masks = _masks(batch)
    assert masks["open_complaint"].all()
    decision = engine.offers(batch, 5, BRANCH)[0]
    assert decision.offers == ()
    assert [a.id for a in decision.service_actions] == ["resolve_complaint"]
    assert decision.notices == ("open_complaint",)
    body = decision.to_dict("zh")
    assert body["notices"][0]["text"] == body["notices"][0]["text_zh"]
    assert body["service_actions"][0]["id"] == "resolve_complaint"
    # the same customer without the complaint is offered something
    assert engine.offers(_batch(["current_account"]), 5, BRANCH)[0].offers


@pytest.mark.parametrize("days, blocked", [(1, True), (89, True), (91, False), (119, False)])
def test_declined_recently_respects_the_cooldown(days, blocked):
    contact = _contact(("T1", "credit_card", "declined", "mobile", NOW - timedelta(days=days)))
    masks = _masks(_batch(["current_account"]), contact)
    assert _codes(masks, "credit_card") == (["declined_recently"] if blocked else [])
    assert _blocked_by(masks, "declined_recently") == ({"credit_card"} if blocked else set())


def _shown(product: str, *days: float, customer: str = "T1", channel: str = "branch"):
    return [(customer, product, "shown", channel, NOW - timedelta(days=d)) for d in days]


@pytest.mark.parametrize("rows, paused", [
    (_shown("mortgage", 1, 5, 10), True),
    (_shown("mortgage", 1, 5), False),
    (_shown("mortgage", 1, 5) + _shown("credit_card", 2), False),  # counted per product
    (_shown("mortgage", 58, 59, 61), False),  # only shows within the 60-day window count
    # an answer after the shows resets them (accepted before the snapshot: not pending)
    (_shown("mortgage", 30, 31, 32)
     + [("T1", "mortgage", "accepted", "branch", datetime(2026, 10, 20, tzinfo=UTC))], False),
    # ... an answer before them does not (declined 100 days ago: outside the cooldown)
    ([("T1", "mortgage", "declined", "branch", NOW - timedelta(days=100))]
     + _shown("mortgage", 1, 2, 3), True),
    # shows after the answer count again
    (_shown("mortgage", 40, 41, 42)
     + [("T1", "mortgage", "accepted", "branch", datetime(2026, 10, 20, tzinfo=UTC))]
     + _shown("mortgage", 1, 2, 3), True),
])
def test_paused_after_max_unanswered_shows(rows, paused):
    contact = _contact(*rows)
    masks = _masks(_batch(["current_account"]), contact)
    assert _blocked_by(masks, "paused_unanswered") == ({"mortgage"} if paused else set())


def test_contact_state_rows_follow_the_batch_and_ignore_other_customers():
    rows = (_shown("mortgage", 1, 2, 3, customer="B")
            + [("A", "car_loan", "declined", "email", NOW - timedelta(days=3)),
               ("Z", "car_loan", "declined", "email", NOW - timedelta(days=3)),
               ("A", "no_such_product", "declined", "email", NOW - timedelta(days=3))])
    contact = _contact(*rows, ids=("A", "B"))
    assert contact.paused[:, _pos("mortgage")].tolist() == [False, True]
    assert contact.declined_recently[:, _pos("car_loan")].tolist() == [True, False]
    assert contact.paused.sum() == 1 and contact.declined_recently.sum() == 1


def test_shown_today_counts_shows_of_today_on_the_context_channel():
    today = NOW - timedelta(hours=2)
    rows = [("T1", p, "shown", "branch", today) for p in ("mortgage", "credit_card", "car_loan")]
    rows += [("T1", "bond_fund", "shown", "mobile", today),
             ("T1", "bond_fund", "shown", "branch", NOW - timedelta(days=1)),
             ("T1", "time_deposit", "declined", "branch", today)]
    assert _contact(*rows).shown_today.tolist() == [3]
    mobile = DecisionContext("mobile", None, NOW)
    assert _contact(*rows, context=mobile).shown_today.tolist() == [1]


@pytest.mark.parametrize("channel, shown, expected", [
    ("branch", 0, 5), ("branch", 3, 2), ("branch", 4, 1), ("branch", 5, 0), ("branch", 7, 0),
    ("mobile", 2, 1), ("call_center", 0, 2), ("email", 1, 0),
])
def test_channel_daily_cap_limits_offers_to_what_is_left_today(engine, channel, shown,
                                                               expected):
    products = ["time_deposit", "fx_service", "home_insurance", "gold_savings", "large_cd",
                "wmp_growth", "equity_fund"][:shown]
    context = DecisionContext(channel, None, NOW)
    contact = _contact(*[("T1", p, "shown", channel, NOW - timedelta(hours=1))
                         for p in products], context=context)
    batch = _batch(["current_account"])
    unlimited = engine.offers(batch, 20, DecisionContext("branch", None, NOW))[0]
    assert len(unlimited.offers) == POLICY.cap("branch") == 5  # enough offers to fill a cap
    decision = engine.offers(batch, 20, context, contact)[0]
    assert len(decision.offers) == expected
    assert decision.notices == (("channel_cap_reached",) if expected == 0 else ())


def test_shows_on_another_channel_do_not_use_this_channels_cap(engine):
    contact = _contact(*[("T1", p, "shown", "mobile", NOW - timedelta(hours=1))
                         for p in ("time_deposit", "fx_service", "gold_savings")])
    decision = engine.offers(_batch(["current_account"]), 20, BRANCH, contact)[0]
    assert len(decision.offers) == 5 and decision.notices == ()


def test_without_consent_offers_are_popularity_and_still_suitable(model, engine):
    no_consent = engine.offers(_batch(["current_account"], consent_profiling=False,
                                      risk_grade="C1"), 5, BRANCH)[0]
    assert no_consent.source == "popularity" and not no_consent.personalised
    assert no_consent.notices == ("non_personalised",)
    assert no_consent.offers
    for offer in no_consent.offers:
        assert offer.product.risk_level == 1  # C1: nothing above R1
        assert offer.source == "popularity"
        assert [r.code for r in offer.reasons] == ["popular_overall", "suitability"]
        assert CJK.search(offer.reasons[0].text_zh)
    # popularity is the same for everyone: bank-wide take-up rates, whatever the profile
    scored = engine.score(_batch(["current_account"], consent_profiling=False,
                                 customer_id="T2", age=60, income=30000.0), 5, BRANCH)
    np.testing.assert_allclose(scored.scores[0],
                               np.log(np.maximum(model.rates.overall, 1e-5)), rtol=1e-6)
    consenting = engine.offers(_batch(["current_account"], risk_grade="C1"), 5, BRANCH)[0]
    assert consenting.source != "popularity" and "non_personalised" not in consenting.notices


def test_without_consent_other_rules_still_apply(engine):
    batch = _batch(["current_account"], consent_profiling=False, vulnerable=True, age=70,
                   residency="non_resident", risk_assessed_on=_days_ago(400))
    decision = engine.offers(batch, 20, BRANCH)[0]
    masks = engine.score(batch, 20, BRANCH).masks
    blocked = ~allowed(masks)[0]
    assert not any(blocked[_pos(p)] for p in _offer_ids(decision))
    assert not set(_offer_ids(decision)) & (set(CREDIT) | set(INVESTMENT) | {"pension_account"})
    assert [a.id for a in decision.service_actions] == ["update_risk_assessment"]


# --------------------------------------------------------------------------- arbitration


def _uniform(p: float, n: int = 1) -> np.ndarray:
    return np.full((n, len(CATALOG)), p, dtype=np.float64)


def test_expected_gain_is_propensity_times_value_minus_contact_cost():
    propensity = np.linspace(0.001, 0.05, len(CATALOG))[None, :]
    result = arbitrate(propensity, np.ones_like(propensity, dtype=bool), CATALOG, POLICY,
                       BRANCH)
    value = np.array([p.value_weight for p in CATALOG.products])
    np.testing.assert_allclose(result.expected_gain[0], propensity[0] * value - 0.002)
    mortgage = _pos("mortgage")
    assert result.expected_gain[0, mortgage] == pytest.approx(propensity[0, mortgage] * 8 - 0.002)


def test_products_without_positive_gain_are_not_offered():
    # 0.004 x 0.5 (mobile banking) - 0.002 = 0 exactly: not positive, not offered
    result = arbitrate(_uniform(0.004), np.ones((1, len(CATALOG)), bool), CATALOG, POLICY,
                       BRANCH)
    mobile = _pos("mobile_banking")
    assert result.expected_gain[0, mobile] == 0.0
    assert result.priority[0, mobile] == -np.inf
    assert np.isfinite(np.delete(result.priority[0], mobile)).all()
    assert result.order[0, -1] == mobile


def test_not_offerable_products_get_no_priority():
    offerable = np.ones((1, len(CATALOG)), bool)
    offerable[0, _pos("mortgage")] = False
    result = arbitrate(_uniform(0.05), offerable, CATALOG, POLICY, BRANCH)
    assert result.priority[0, _pos("mortgage")] == -np.inf
    assert result.order[0, -1] == _pos("mortgage")


def test_gain_boundary_through_the_engine(model):
    # 2**-8 x 0.5 - 2**-9 = 0 exactly (both exact in float32): mobile banking is not offered
    policy = parse_policy(NO_CAPS.text.replace("contact_cost = 0.002",
                                               "contact_cost = 0.001953125"), "<cost 2**-9>")
    engine = _constant_engine(model, 2.0 ** -8, policy)
    decision = engine.offers(_batch(["current_account"]), 20, BRANCH)[0]
    assert _offer_ids(decision) == [p for p in BASE_ORDER if p != "mobile_banking"]
    why = why_not(engine, _batch(["current_account"]), "mobile_banking", 20, BRANCH)
    assert [r["code"] for r in why["rules"]] == ["no_positive_gain"]


def test_no_offer_when_contact_cost_exceeds_every_gain(model):
    policy = parse_policy(_policy("contact_cost = 0.002", "contact_cost = 100.0"), "<costly>")
    assert policy.contact_cost == 100.0
    engine = OfferEngine(model, policy)
    batch = _batch(["current_account"])
    decision = engine.offers(batch, 5, BRANCH)[0]
    assert decision.offers == ()
    assert decision.notices == ("no_offer",)
    assert decision.to_dict("en")["notices"][0]["code"] == "no_offer"
    why = why_not(engine, batch, "mortgage", 5, BRANCH, lang="zh")
    assert why["offered"] is False and why["rank"] is None
    assert [r["code"] for r in why["rules"]] == ["no_positive_gain"]
    assert why["rules"][0]["text"] == why["rules"][0]["text_zh"]
    assert "个人住房贷款" in why["rules"][0]["text_zh"]
    assert "Home mortgage" in why["rules"][0]["text_en"]


INTENT_RATIOS = {"deposit": 1.6, "wealth": 1.4, "service": 1.3, "credit": 0.7}


def test_retention_intent_multiplies_priority_by_the_category_weights():
    everything = np.ones((1, len(CATALOG)), bool)
    plain = arbitrate(_uniform(0.05), everything, CATALOG, POLICY, BRANCH)
    retention = arbitrate(_uniform(0.05), everything, CATALOG, POLICY,
                          DecisionContext("branch", "retention", NOW))
    ratio = retention.priority[0] / plain.priority[0]
    expected = [INTENT_RATIOS.get(p.category, 1.0) for p in CATALOG.products]
    np.testing.assert_allclose(ratio, expected)
    assert ratio[_pos("time_deposit")] == pytest.approx(1.6)
    assert ratio[_pos("wmp_balanced")] == pytest.approx(1.4)
    assert ratio[_pos("bond_fund")] == pytest.approx(1.0)  # investment, not wealth
    # the gain does not depend on the context
    np.testing.assert_array_equal(retention.expected_gain, plain.expected_gain)


def test_retention_intent_reorders_offers(flat_engine):
    decision = flat_engine.offers(_batch(["current_account"]), 5,
                                  DecisionContext("branch", "retention", NOW))[0]
    # priorities: mortgage 8x.7=5.6, wmp_balanced 4x1.4=5.6, car_loan 4x.7=2.8, ...
    # wmp_conservative 3x1.4=4.2, education_savings 2.5x1.6=4.0, life_insurance 4, pension 3.6
    assert _offer_ids(decision) == ["mortgage", "wmp_balanced", "wmp_conservative",
                                    "life_insurance", "education_savings"]
    priorities = [o.priority for o in decision.offers]
    assert priorities == pytest.approx([0.05 * 5.6, 0.05 * 5.6, 0.05 * 4.2, 0.05 * 4.0,
                                        0.05 * 4.0])


def test_context_weights_are_derived_once_per_channel_and_intent_of_the_policy():
    retention = context_weights(CATALOG, POLICY, DecisionContext("branch", "retention", NOW))
    assert context_weights(CATALOG, POLICY, DecisionContext("branch", "retention")) is retention
    assert not retention.flags.writeable
    plain = context_weights(CATALOG, POLICY, BRANCH)
    # an intent the policy does not weigh weighs like none
    assert context_weights(CATALOG, POLICY, DecisionContext("branch", "other", NOW)) is plain
    np.testing.assert_allclose(retention / plain,
                               [INTENT_RATIOS.get(p.category, 1.0) for p in CATALOG.products])
    card = parse_policy(_policy("pension_account = 1.2", "credit_card = 2.5"), "<card lever>")
    levered = context_weights(CATALOG, card, BRANCH)  # another policy: its own weights
    assert levered[_pos("credit_card")] == pytest.approx(2.5 * plain[_pos("credit_card")])


def test_channel_weights_multiply_priority():
    everything = np.ones((1, len(CATALOG)), bool)
    plain = arbitrate(_uniform(0.05), everything, CATALOG, POLICY, BRANCH)
    mobile = arbitrate(_uniform(0.05), everything, CATALOG, POLICY,
                       DecisionContext("mobile", None, NOW))
    ratio = mobile.priority[0] / plain.priority[0]
    np.testing.assert_allclose(ratio, [{"digital": 1.3, "credit": 1.1}.get(p.category, 1.0)
                                       for p in CATALOG.products])


def test_business_levers_multiply_priority():
    everything = np.ones((1, len(CATALOG)), bool)
    no_levers = parse_policy(_policy("pension_account = 1.2", ""), "<no levers>")
    card = parse_policy(_policy("pension_account = 1.2", "credit_card = 2.5"), "<card lever>")
    base = arbitrate(_uniform(0.05), everything, CATALOG, no_levers, BRANCH).priority[0]
    packaged = arbitrate(_uniform(0.05), everything, CATALOG, POLICY, BRANCH).priority[0]
    levered = arbitrate(_uniform(0.05), everything, CATALOG, card, BRANCH).priority[0]
    assert packaged[_pos("pension_account")] / base[_pos("pension_account")] == pytest.approx(1.2)
    assert levered[_pos("credit_card")] / base[_pos("credit_card")] == pytest.approx(2.5)
    others = [j for j in range(len(CATALOG)) if j not in (_pos("pension_account"),)]
    np.testing.assert_allclose(packaged[others], base[others])


def test_a_business_lever_moves_a_product_to_the_top(model):
    policy = parse_policy(NO_CAPS.text.replace("pension_account = 1.2",
                                               "pension_account = 1.2\ncredit_card = 3.0"),
                          "<card lever>")
    engine = _constant_engine(model, 0.05, policy)
    decision = engine.offers(_batch(["current_account"]), 3, BRANCH)[0]
    assert _offer_ids(decision) == ["credit_card", "mortgage", "car_loan"]  # 9 > 8 > 4


def test_each_customer_is_offered_the_row_of_offered(engine):
    """``offers`` reads each customer's choice alone (``Scored.chosen``), ``offered`` the
    whole batch at once: the same products in the same order, caps and rules included."""
    demo = generate(300, 2, 5, CATALOG, STAGES)
    customers = validate_customers(demo.customers, "<demo customers>")
    holdings = validate_holdings(demo.holdings, CATALOG, pd.Index(customers["customer_id"]))
    batch = CustomerBook(BankData(customers, holdings), CATALOG, STAGES).batch(np.arange(300))
    rng = np.random.default_rng(0)
    shape = (len(batch), len(CATALOG))
    contact = ContactState(rng.random(shape) < 0.2, rng.random(shape) < 0.1,
                           rng.random(shape) < 0.1, rng.integers(0, 8, len(batch)))
    scored = engine.score(batch, 4, BRANCH, contact)
    offered = engine.offered(scored)
    decisions = engine.offers(batch, 4, BRANCH, contact)
    assert sum(len(d.offers) for d in decisions) > 300  # most customers get offers
    for i, decision in enumerate(decisions):
        row = [int(p) for p in offered[i] if p >= 0]
        assert scored.chosen(i) == row == [_pos(o.product.id) for o in decision.offers]


def test_ties_are_broken_by_catalog_order():
    everything = np.ones((1, len(CATALOG)), bool)
    result = arbitrate(_uniform(0.05), everything, CATALOG, NO_CAPS, BRANCH)
    order = [PRODUCTS[j] for j in result.order[0]]
    assert order == ["mortgage", "wmp_growth", "car_loan", "wmp_balanced", "equity_fund",
                     "life_insurance", "pension_account", "credit_card", "consumer_loan",
                     "wmp_conservative", "bond_fund", "health_insurance", "large_cd",
                     "education_savings", "payroll_service", "gold_savings", "home_insurance",
                     "time_deposit", "fx_service", "current_account", "mobile_banking"]
    # the order is the same for every row of a batch and for a row alone
    batch = arbitrate(_uniform(0.05, 4), np.ones((4, len(CATALOG)), bool), CATALOG, NO_CAPS,
                      BRANCH)
    assert (batch.order == result.order[0]).all()


def test_the_engine_offers_in_priority_order_with_catalog_tie_breaks(flat_engine):
    decision = flat_engine.offers(_batch(["current_account"]), 20, BRANCH)[0]
    assert _offer_ids(decision) == BASE_ORDER
    assert [o.rank for o in decision.offers] == list(range(1, len(BASE_ORDER) + 1))
    assert [o.expected_gain for o in decision.offers] == pytest.approx(
        [0.05 * CATALOG[p].value_weight - 0.002 for p in BASE_ORDER])
    top5 = flat_engine.offers(_batch(["current_account"]), 5, BRANCH)[0]
    assert _offer_ids(top5) == BASE_ORDER[:5]


def test_limit_is_clamped_to_one_and_twenty(flat_engine):
    batch = _batch(["current_account"])
    assert len(flat_engine.offers(batch, 0, BRANCH)[0].offers) == 1
    assert len(flat_engine.offers(batch, 100, BRANCH)[0].offers) == len(BASE_ORDER)


# --------------------------------------------------------------------------- why not


def test_why_not_lists_every_blocking_rule_in_both_languages(engine):
    batch = _batch(age=17, income=10000.0, risk_grade="C1")
    why = why_not(engine, batch, "credit_card", 5, BRANCH)
    assert why["offered"] is False and why["rank"] is None
    assert [r["code"] for r in why["rules"]] == ["age", "income", "prerequisite"]
    for rule in why["rules"]:
        assert set(rule) == {"code", "text", "text_en", "text_zh"}
        assert rule["text"] == rule["text_en"] and "Credit card" in rule["text_en"]
        assert "信用卡" in rule["text_zh"]
    prerequisite = why["rules"][2]
    assert prerequisite["text_en"] == ("Credit card needs another product first: "
                                       "Current account.")
    assert prerequisite["text_zh"] == "办理信用卡需先持有：活期储蓄账户。"
    zh = why_not(engine, batch, "credit_card", 5, BRANCH, lang="zh")
    assert [r["text"] for r in zh["rules"]] == [r["text_zh"] for r in why["rules"]]
    assert zh["name"] == "信用卡"


@pytest.mark.parametrize("product, changes, holdings, codes", [
    ("equity_fund", {}, ["current_account"], ["risk_grade_too_high"]),
    ("current_account", {}, ["current_account"], ["already_held"]),
    ("mortgage", {"residency": "non_resident"}, ["current_account"], ["residency"]),
    ("consumer_loan", {}, ["current_account", "car_loan"], ["excluded_by_holding"]),
    ("bond_fund", {"risk_assessed_on": _days_ago(400)}, ["current_account"],
     ["risk_assessment_outdated"]),
    ("credit_card", {"vulnerable": True}, ["current_account"], ["vulnerable_credit"]),
    ("time_deposit", {"open_complaint": True}, ["current_account"], ["open_complaint"]),
    ("wmp_growth", {"age": 75, "income": None, "risk_grade": "C1", "vulnerable": True,
                    "open_complaint": True, "risk_assessed_on": DROP}, [],
     ["age", "income", "prerequisite", "risk_grade_too_high", "risk_assessment_outdated",
      "open_complaint"]),
])
def test_why_not_codes(engine, product, changes, holdings, codes):
    why = why_not(engine, _batch(holdings, **changes), product, 5, BRANCH)
    assert [r["code"] for r in why["rules"]] == codes
    assert all(r["text_en"] and CJK.search(r["text_zh"]) for r in why["rules"])


def test_why_not_details_name_the_grades_and_the_excluding_product(engine):
    fund = why_not(engine, _batch(["current_account"]), "equity_fund", 5, BRANCH)
    assert fund["rules"][0]["text_en"] == ("Equity fund (risk R4 > C3) is above your risk "
                                           "tolerance.")
    assert fund["rules"][0]["text_zh"] == "股票型基金（风险等级R4 > C3）超出您的风险承受能力。"
    # car_loan lists the exclusion itself: the detail names the consumer loan
    car = why_not(engine, _batch(["current_account", "consumer_loan"]), "car_loan", 5, BRANCH)
    assert car["rules"][0]["text_en"] == "Car loan cannot be held together with Consumer loan."
    assert car["rules"][0]["text_zh"] == "汽车消费贷款不能与个人消费贷款同时持有。"


def test_why_not_names_the_held_product_that_excludes_a_consumer_loan(engine):
    loan = why_not(engine, _batch(["current_account", "car_loan"]), "consumer_loan", 5, BRANCH)
    assert [r["code"] for r in loan["rules"]] == ["excluded_by_holding"]
    assert "Car loan" in loan["rules"][0]["text_en"]
    assert "汽车消费贷款" in loan["rules"][0]["text_zh"]


def test_why_not_for_declined_and_paused_products(engine):
    contact = _contact(("T1", "credit_card", "declined", "branch", NOW - timedelta(days=3)),
                       *_shown("mortgage", 1, 2, 3))
    batch = _batch(["current_account"])
    card = why_not(engine, batch, "credit_card", 5, BRANCH, contact)
    assert [r["code"] for r in card["rules"]] == ["declined_recently"]
    assert card["rules"][0]["text_en"] == ("You declined Credit card recently; we will not "
                                           "offer it again yet.")
    assert card["rules"][0]["text_zh"] == "您近期已婉拒信用卡，暂不再推荐。"
    mortgage = why_not(engine, batch, "mortgage", 5, BRANCH, contact)
    assert [r["code"] for r in mortgage["rules"]] == ["paused_unanswered"]


def test_why_not_ranked_lower_and_offered_with_rank(flat_engine):
    batch = _batch(["current_account"])
    lower = why_not(flat_engine, batch, "credit_card", 3, BRANCH)
    assert lower["offered"] is False and lower["rank"] is None
    assert [r["code"] for r in lower["rules"]] == ["ranked_lower"]
    assert lower["rules"][0]["text_en"] == ("Credit card is suitable but 3 other offers rank "
                                            "higher for you.")
    assert lower["rules"][0]["text_zh"] == "信用卡适合您，但有3个产品排名更靠前。"
    assert lower["propensity"] == pytest.approx(0.05)
    offered = why_not(flat_engine, batch, "wmp_balanced", 3, BRANCH)
    assert offered["offered"] is True and offered["rank"] == 3 and offered["rules"] == []
    first = why_not(flat_engine, batch, "mortgage", 3, BRANCH)
    assert first["offered"] is True and first["rank"] == 1


def test_why_not_when_the_channel_cap_is_reached(flat_engine):
    email = DecisionContext("email", None, NOW)
    contact = _contact(("T1", "time_deposit", "shown", "email", NOW - timedelta(hours=1)),
                       context=email)
    engine = OfferEngine(flat_engine.model, POLICY)  # packaged caps: email 1 a day
    why = why_not(engine, _batch(["current_account"]), "mortgage", 5, email, contact)
    assert [r["code"] for r in why["rules"]] == ["channel_cap_reached"]
    assert why["offered"] is False and why["rank"] is None
    assert why["rules"][0]["text_zh"] == "今日该渠道的推荐次数已达上限。"
    fresh = why_not(engine, _batch(["current_account"]), "mortgage", 5, email)
    assert fresh["offered"] is True and fresh["rank"] == 1


def test_why_not_agrees_with_offers_for_every_product(engine):
    batch = _batch(["current_account", "car_loan"], risk_grade="C2")
    decision = engine.offers(batch, 4, BRANCH)[0]
    ranks = {o.product.id: o.rank for o in decision.offers}
    masks = engine.score(batch, 4, BRANCH).masks
    for product in PRODUCTS:
        why = why_not(engine, batch, product, 4, BRANCH)
        assert why["offered"] is (product in ranks)
        assert why["rank"] == ranks.get(product)
        assert (why["rules"] == []) is (product in ranks)
        blocking = [c for c in RULES if masks[c][0, _pos(product)]]
        if blocking:
            assert [r["code"] for r in why["rules"]] == blocking


# --------------------------------------------------------------------------- policy file


def test_the_packaged_policy():
    assert POLICY.version == "policy-2026.1"
    assert POLICY.daily_caps == {"branch": 5, "mobile": 3, "call_center": 2, "email": 1}
    assert (POLICY.decline_cooldown_days, POLICY.max_unanswered_shows,
            POLICY.unanswered_window_days, POLICY.risk_assessment_valid_days) == (90, 3, 60, 365)
    assert POLICY.contact_cost == 0.002 and POLICY.business_levers == {"pension_account": 1.2}
    assert POLICY.intents == ("retention", "borrowing")
    assert set(POLICY.service_actions) == {"resolve_complaint", "update_risk_assessment"}
    assert POLICY.cap("branch") == 5 and POLICY.cap("nowhere") >= 10**9
    assert parse_policy(POLICY_TEXT).fingerprint == POLICY.fingerprint
    assert parse_policy(POLICY_TEXT + "\n").fingerprint != POLICY.fingerprint


@pytest.mark.parametrize("old, new, named", [
    ("decline_cooldown_days = 90", "decline_cooldown_days = 90\ncooldown = 3", "cooldown"),
    ("risk_assessment_valid_days = 365", "risk_assessment_valid_days = 365\nvalid = 1",
     "valid"),
    ('default_channel = "branch"', 'default_channel = "branch"\nboost = 2', "boost"),
    ('version = "policy-2026.1"', 'version = "policy-2026.1"\nname = "x"', "name"),
    ("email = 1", "email = 1\nfax = 2", "fax"),
    ("[arbitration.channel.call_center]", "[arbitration.channel.pigeon]", "pigeon"),
    ('default_channel = "branch"', 'default_channel = "fax"', "fax"),
    ('name_en = "Resolve the open complaint"',
     'name_en = "Resolve the open complaint"\npriority = 1', "priority"),
])
def test_unknown_keys_and_channels_are_refused_by_name(old, new, named):
    with pytest.raises(ConfigError, match=named):
        parse_policy(_policy(old, new), "<edited>")


@pytest.mark.parametrize("action", ["resolve_complaint", "update_risk_assessment"])
def test_the_required_service_actions_must_be_defined(action):
    start = POLICY_TEXT.index(f'id = "{action}"')
    block_start = POLICY_TEXT.rindex("[[service_action]]", 0, start)
    block_end = POLICY_TEXT.find("[[service_action]]", start)
    text = POLICY_TEXT[:block_start] + (POLICY_TEXT[block_end:] if block_end > 0 else "")
    with pytest.raises(ConfigError, match=action):
        parse_policy(text, "<edited>")


def test_a_service_action_missing_a_text_is_refused():
    line = 'text_zh = "该客户有未结投诉：请先处理投诉，处理完毕前不进行产品营销。"'
    with pytest.raises(ConfigError, match="text_zh"):
        parse_policy(_policy(line, ""), "<edited>")


@pytest.mark.parametrize("old, new, named", [
    ("decline_cooldown_days = 90", "decline_cooldown_days = -1", "decline_cooldown_days"),
    ("max_unanswered_shows = 3", "max_unanswered_shows = 0", "max_unanswered_shows"),
    ("unanswered_window_days = 60", "unanswered_window_days = -60", "unanswered_window_days"),
    ("risk_assessment_valid_days = 365", "risk_assessment_valid_days = -365",
     "risk_assessment_valid_days"),
    ("contact_cost = 0.002", "contact_cost = -0.002", "contact_cost"),
    ("mobile = 3", "mobile = -3", "daily_caps.mobile"),
    ("pension_account = 1.2", "pension_account = -1.2", "pension_account"),
    ("deposit = 1.6", "deposit = -1.6", "deposit"),
    ("digital = 1.3", "digital = -1.3", "digital"),
    ("decline_cooldown_days = 90", "decline_cooldown_days = 1.5", "decline_cooldown_days"),
    ("max_unanswered_shows = 3", "max_unanswered_shows = true", "max_unanswered_shows"),
    ("contact_cost = 0.002", 'contact_cost = "cheap"', "contact_cost"),
])
def test_negative_and_ill_typed_numbers_are_refused_by_name(old, new, named):
    with pytest.raises(ConfigError, match=named) as raised:
        parse_policy(_policy(old, new), "<edited>")
    assert "<edited>" in str(raised.value)


def test_a_policy_file_error_names_the_file(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(_policy("contact_cost = 0.002", "contact_cost = -1"), encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_policy(path)
    with pytest.raises(ConfigError, match="not found"):
        load_policy(tmp_path / "missing.toml")


@pytest.mark.parametrize("old, new, named", [
    ('investment_categories = ["wealth", "investment"]', 'investment_categories = "wealth"',
     "investment_categories"),
    ('credit_categories = ["credit"]', 'credit_categories = "credit"', "credit_categories"),
    ("contact_cost = 0.002", "contact_cost = nan", "contact_cost"),
])
def test_values_that_silently_disable_a_rule_are_refused(old, new, named):
    with pytest.raises(ConfigError, match=named):
        parse_policy(_policy(old, new), "<edited>")


def test_a_category_list_written_as_a_string_never_disables_the_suitability_rule():
    text = _policy('investment_categories = ["wealth", "investment"]',
                   'investment_categories = "wealth"')
    try:
        policy = parse_policy(text, "<edited>")
    except ConfigError:
        return  # refusing the file is a correct answer too
    masks = _masks(_batch(["current_account"], risk_assessed_on=DROP), policy=policy)
    assert _blocked_by(masks, "risk_assessment_outdated") >= {"wmp_conservative",
                                                               "wmp_balanced", "wmp_growth"}


@pytest.mark.parametrize("text, named", [
    ("[contact]\ndaily_caps = 3\n", "daily_caps"),
    ("[arbitration]\nchannel = 5\n", "channel"),
    ('[arbitration]\nintent = "retention"\n', "intent"),
])
def test_a_table_written_as_a_value_is_a_config_error(text, named):
    actions = POLICY_TEXT[POLICY_TEXT.index("[[service_action]]"):]
    with pytest.raises(ConfigError, match=named):
        parse_policy(text + actions, "<edited>")


# --------------------------------------------------------------------------- calibration


def test_calibrator_on_a_step_dataset_matches_the_rates():
    """Scores 0..999; take-up 2 in 10 below 500 and 6 in 10 from 500."""
    scores = np.arange(1000, dtype=np.float64)
    taken = np.where(scores < 500, scores % 10 < 2, scores % 10 < 6).astype(float)
    calibrator = fit_calibrator(scores, taken)
    assert np.all(np.diff(calibrator.knots) > 0)
    assert np.all(np.diff(calibrator.values) >= 0)
    predicted = calibrator.predict(np.array([0.0, 100.0, 250.0, 490.0, 510.0, 800.0, 999.0]))
    np.testing.assert_allclose(predicted, [0.2, 0.2, 0.2, 0.2, 0.6, 0.6, 0.6], atol=1e-6)
    # pooled over each half, the calibrated values reproduce the observed rates
    fitted = calibrator.predict(scores)
    assert fitted[:500].mean() == pytest.approx(0.2, abs=1e-3)
    assert fitted[500:].mean() == pytest.approx(0.6, abs=1e-3)


def test_calibrator_is_monotone_and_clamped():
    scores = np.arange(100, dtype=np.float64)
    taken = (scores >= 50).astype(float)
    calibrator = fit_calibrator(scores, taken)
    np.testing.assert_array_equal(calibrator.knots, scores)
    np.testing.assert_array_equal(calibrator.values, taken)
    predicted = calibrator.predict(np.array([[-1e9, 49.0, 49.5, 50.0, 1e9],
                                             [-np.inf, np.nan, np.inf, 0.0, 99.0]]))
    np.testing.assert_allclose(predicted, [[0, 0, 0.5, 1, 1], [0, 0, 0, 0, 1]])
    assert predicted.dtype == np.float32


def test_calibrator_pools_a_decreasing_dataset_to_its_mean():
    scores = np.arange(400, dtype=np.float64)
    taken = (scores < 100).astype(float)  # take-up falls with the score: isotonic = flat
    calibrator = fit_calibrator(scores, taken)
    np.testing.assert_allclose(calibrator.values, 0.25)


def test_calibrator_ignores_non_finite_scores_and_handles_no_data():
    calibrator = fit_calibrator(np.array([-np.inf, 0.0, 1.0, np.nan]), np.array([1, 0, 1, 1]))
    np.testing.assert_array_equal(calibrator.knots, [0.0, 1.0])
    np.testing.assert_array_equal(calibrator.values, [0.0, 1.0])
    empty = fit_calibrator(np.array([]), np.array([]))
    np.testing.assert_array_equal(empty.predict(np.array([-5.0, 0.0, 5.0])), [0, 0, 0])
    state = calibrator.to_state()
    again = Calibrator.from_state(state)
    np.testing.assert_array_equal(again.knots, calibrator.knots)


def test_calibrator_with_tied_scores_matches_the_rate_of_each_score():
    scores = np.repeat([0.0, 1.0], 1000)
    taken = np.concatenate([np.repeat([0, 1], [800, 200]), np.repeat([0, 1], [400, 600])])
    calibrator = fit_calibrator(scores, taken)
    np.testing.assert_allclose(calibrator.predict(np.array([0.0, 1.0])), [0.2, 0.6],
                               atol=1e-6)


def test_reliability_table_bins():
    predicted = np.repeat([0.1, 0.3, 0.5, 0.7], 25)
    taken = np.concatenate([np.repeat([1, 0], [2, 23]), np.repeat([1, 0], [8, 17]),
                            np.repeat([1, 0], [12, 13]), np.repeat([1, 0], [18, 7])])
    table = reliability(predicted, taken, bins=4)
    assert [b["pairs"] for b in table["bins"]] == [25, 25, 25, 25]
    assert [b["predicted"] for b in table["bins"]] == pytest.approx([0.1, 0.3, 0.5, 0.7])
    assert [b["observed"] for b in table["bins"]] == pytest.approx([0.08, 0.32, 0.48, 0.72])
    assert table["mean_predicted"] == pytest.approx(0.4)
    assert table["mean_observed"] == pytest.approx(40 / 100)
    assert table["brier"] == pytest.approx(np.mean((predicted - taken) ** 2))
    # more bins than pairs: empty bins are left out
    small = reliability(np.array([0.2, 0.8]), np.array([0, 1]), bins=5)
    assert [b["pairs"] for b in small["bins"]] == [1, 1]
    assert small["brier"] == pytest.approx(0.04)
    none = reliability(np.array([]), np.array([]))
    assert none == {"bins": [], "brier": None, "mean_predicted": None, "mean_observed": None}


def test_life_stage_reasons_say_hold_when_rates_are_holding_shares():
    """One snapshot: the rates are holding shares, and the reasons say so."""
    from recommender.data.catalog import load_catalog
    from recommender.data.life_stages import load_life_stages
    from recommender.policy.reasons import stage_popularity_reason

    product, stage = load_catalog().products[0], load_life_stages().stages[0]
    held = stage_popularity_reason(product, stage, 0.3, 0.1, holding=True)
    taken = stage_popularity_reason(product, stage, 0.3, 0.1)
    assert f"stage hold {product.name_en} 3.0 times" in held.text_en
    assert "持有" in held.text_zh and held.evidence["holding_share_stage"] == 0.3
    assert f"stage take up {product.name_en} 3.0 times" in taken.text_en
    assert "办理" in taken.text_zh and taken.evidence["monthly_take_up_overall"] == 0.1
