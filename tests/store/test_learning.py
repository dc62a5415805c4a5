"""The closed loop through the service: answers recorded with what was predicted, the
adaptive correction read back from the store, decisions that record their factors and arm,
and replay that reproduces them after the evidence has moved on.

A small demo bank is trained once for the module; each test runs the service on a clock of
its own (``OfferService.clock``), so simulated days pass in milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from recommender.cli import main
from recommender.data.catalog import load_catalog
from recommender.policy.adaptive import LearnedPropensity
from recommender.policy.config import load_policy
from recommender.service import load_service
from recommender.store.database import Database
from recommender.store.decisions import DecisionLog
from recommender.store.learning import AdaptiveState, interval_start
from recommender.store.replay import replay
from recommender.store.settings import promotions

pytestmark = pytest.mark.numerics  # replay compares numbers two code paths compute

CATALOG = load_catalog()
ADAPTIVE = """
[adaptive]
prior_strength = 5.0
min_factor = 0.2
max_factor = 3.0
exploration_share = 0.2
refresh_seconds = 60.0
half_life_days = 2.0
window_days = 14.0
min_shows = 20
"""
EXPERIMENT = """
[experiment]
name = "adaptive-trial"
level = 0.95

[[experiment.arm]]
name = "static"
share = 0.5
policy = "static.toml"

[[experiment.arm]]
name = "adaptive"
share = 0.5
"""


@dataclass(frozen=True)
class Trained:
    data_dir: Path
    models_dir: Path


@pytest.fixture(scope="module")
def trained(served_demo_bank) -> Trained:
    """The session's small demo bank and its hybrid model (tests/conftest.py)."""
    return Trained(Path(served_demo_bank["DATA_DIR"]), Path(served_demo_bank["MODELS_DIR"]))


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(autouse=True)
def _close_services():
    yield
    while _OPENED:
        service = _OPENED.pop()
        service.decisions.close()
        service.responses.database.dispose()


_OPENED: list = []


def _service(trained: Trained, tmp_path: Path, policy_text: str, database: str | None = None,
             start: datetime = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)):
    tmp_path.mkdir(parents=True, exist_ok=True)
    policy = tmp_path / "policy.toml"
    policy.write_text(policy_text, encoding="utf-8")
    (tmp_path / "static.toml").write_text(load_policy().text, encoding="utf-8")
    if database is not None and database.startswith("postgresql"):
        schema = Database(database)
        schema.upgrade()
        schema.dispose()
    service = load_service(trained.data_dir, trained.models_dir, policy_file=policy,
                           state_dir=tmp_path / "state", database=database)
    service.clock = Clock(start)
    _OPENED.append(service)
    return service


def _ids(service, n: int) -> list[str]:
    return [str(c) for c in service.book.batch(np.arange(n)).customer_ids]


def _offered(service, limit: int = 200) -> list[tuple[str, dict]]:
    """(customer, answer) for the first customers of the book with a sales offer on mobile."""
    out = []
    for customer in _ids(service, limit):
        answer = service.offers(str(customer), limit=3, channel="mobile")
        if answer["offers"]:
            out.append((str(customer), answer))
    return out


def test_a_static_policy_records_no_factor(trained, tmp_path):
    service = _service(trained, tmp_path, load_policy().text)
    customer, answer = _offered(service, 30)[0]
    assert "factor" not in answer["offers"][0] and "arm" not in answer
    record = service.record_response(customer, answer["offers"][0]["product_id"], "shown",
                                     "mobile")
    stored = service.responses.answered(service.clock() - timedelta(days=1))
    assert len(stored) == 1 and record["outcome"] == "shown"
    assert stored["arm"].tolist() == [""] and stored["factor"].tolist() == [1.0]
    assert 0 < stored["propensity"].iloc[0] <= 1


def test_declines_lower_a_products_factor_at_the_next_refresh(trained, tmp_path, database_url):
    service = _service(trained, tmp_path, load_policy().text + ADAPTIVE, database_url)
    offered = _offered(service)
    exploring = service.learning.current(service.clock()).exploring(
        [c for c, _ in offered], "mobile")
    factors = [[o["factor"] for o in a["offers"]] for _, a in offered]
    # no evidence yet: the prior, except where a Thompson draw explores
    pairs = list(zip(factors, exploring, strict=True))
    assert offered and all(f == [1.0] * len(f) for f, e in pairs if not e)
    assert any(f != [1.0] * len(f) for f, e in pairs if e)
    top = max({a["offers"][0]["product_id"] for _, a in offered},
              key=lambda p: sum(a["offers"][0]["product_id"] == p for _, a in offered))
    for customer, answer in offered:
        for offer in answer["offers"]:
            service.record_response(customer, offer["product_id"], "shown", "mobile")
            service.record_response(customer, offer["product_id"], "declined", "mobile")
    p = service.catalog.ids.position(top)
    before = service.learning.current(service.clock()).corrections.factors[p].max()
    service.clock.now += timedelta(seconds=60)  # the next refresh interval
    learned = service.learning.current(service.clock())
    c = learned.corrections.evidence.channels.index("mobile")
    assert learned.corrections.evidence.shows[p, c].sum() > 0
    assert learned.corrections.factors[p, c].max() < before == 1.0
    assert (learned.corrections.factors >= 0.2).all() and (learned.corrections.factors <= 3).all()
    answers = [service.offers(c, limit=3, channel="mobile") for c in _ids(service, 600)[200:]]
    answer = next(a for a in answers if any(o["product_id"] == top for o in a["offers"]))
    factor = next(o["factor"] for o in answer["offers"] if o["product_id"] == top)
    assert factor < 1.0


def test_replay_reproduces_an_adaptive_decision_after_the_evidence_moved_on(trained, tmp_path):
    service = _service(trained, tmp_path, load_policy().text + ADAPTIVE)
    offered = _offered(service, 120)
    for customer, answer in offered:
        service.record_response(customer, answer["offers"][0]["product_id"], "shown", "mobile")
        service.record_response(customer, answer["offers"][0]["product_id"], "accepted",
                                "mobile")
    service.clock.now += timedelta(minutes=5)
    adapted = _offered(service, 120)
    factors = [o["factor"] for _, a in adapted for o in a["offers"]]
    assert any(f != 1.0 for f in factors)  # the decisions carry learned factors
    for customer, answer in offered[:20]:  # and the evidence changes again
        service.record_response(customer, answer["offers"][0]["product_id"], "declined",
                                "mobile")
    service.clock.now += timedelta(minutes=5)
    for _, answer in adapted[:15]:
        decision = service.decisions.get(answer["decision_id"])
        assert "adaptive" in decision.inputs
        result = replay(decision, trained.models_dir)
        assert result.same, answer["decision_id"]
        assert [o["factor"] for o in result.output["offers"]] == pytest.approx(
            [o["factor"] for o in answer["offers"]], rel=1e-9)


def test_two_workers_in_one_interval_apply_the_same_factors(trained, tmp_path, database_url):
    first = _service(trained, tmp_path / "a", load_policy().text + ADAPTIVE, database_url)
    second = _service(trained, tmp_path / "a", load_policy().text + ADAPTIVE, database_url)
    for customer, answer in _offered(first, 80):
        first.record_response(customer, answer["offers"][0]["product_id"], "shown", "mobile")
    first.clock.now = second.clock.now = first.clock.now + timedelta(seconds=90)
    a = first.learning.current(first.clock())
    # an answer within the interval is not read by a worker refreshing later in it
    first.record_response(_ids(first, 1)[0], "current_account", "accepted",
                          "mobile")
    b = second.learning.current(second.clock.now + timedelta(seconds=10))
    assert a.as_of == b.as_of == interval_start(first.clock(), 60).isoformat()
    np.testing.assert_array_equal(a.corrections.factors, b.corrections.factors)
    ids = _ids(first, 500)
    np.testing.assert_array_equal(a.exploring(ids, "mobile"), b.exploring(ids, "mobile"))


def test_experiment_arms_split_customers_and_are_recorded(trained, tmp_path):
    service = _service(trained, tmp_path, load_policy().text + ADAPTIVE + EXPERIMENT)
    offered = _offered(service, 200)
    arms = [a["arm"] for _, a in offered]
    assert set(arms) == {"static", "adaptive"}
    for customer, answer in offered:
        assert answer["arm"] == service.serving_arm(customer).name  # stable
        has_factor = "factor" in answer["offers"][0]
        assert has_factor == (answer["arm"] == "adaptive")
        service.record_response(customer, answer["offers"][0]["product_id"], "shown", "mobile")
    stored = service.responses.answered(service.clock() - timedelta(days=1))
    assert sorted(stored["arm"]) == sorted(arms)
    decision = service.decisions.get(offered[0][1]["decision_id"])
    assert decision.inputs["arm"] == offered[0][1]["arm"]
    assert replay(decision, trained.models_dir).same


def test_a_new_product_is_withheld_except_where_explored(trained, tmp_path):
    """A product the model never saw taken up is offered only in exploring decisions, from
    the median take-up rate before there is evidence, until it has ``min_shows`` shows."""
    service = _service(trained, tmp_path, load_policy().text + ADAPTIVE)
    learned = service.learning.current(service.clock())
    take_up = service.engine.model.rates.overall.copy()
    p = int(np.argmax(take_up))
    take_up[p] = 0.0  # as if launched after the training data
    relaunched = LearnedPropensity.fit(learned.corrections.evidence, learned.settings, take_up,
                                       learned.as_of)
    ids = _ids(service, 400)
    stages = service.book.stage_codes[:400]
    adjustment = relaunched.adjustment(ids, stages, "mobile")
    explore = relaunched.exploring(ids, "mobile")
    assert 0.1 < explore.mean() < 0.3
    assert (adjustment.factors[~explore, p] == 0).all()
    assert (adjustment.factors[explore, p] > 0).all()
    assert adjustment.priors[p] == pytest.approx(np.median(take_up[take_up > 0]))
    assert np.isnan(adjustment.priors[take_up > 0]).all()


def test_decision_log_reads_the_factors_back(trained, tmp_path):
    service = _service(trained, tmp_path, load_policy().text + ADAPTIVE)
    customer, answer = _offered(service, 40)[0]
    decision = service.decisions.get(answer["decision_id"])
    factors = decision.inputs["adaptive"]["factors"]
    assert set(factors) == {str(p) for p in service.catalog.ids.external_ids}
    assert isinstance(service.decisions, DecisionLog)


def test_experiment_report_and_promotion_through_the_command_line(trained, tmp_path, capsys):
    service = _service(trained, tmp_path, load_policy().text + ADAPTIVE + EXPERIMENT,
                       start=datetime.now(UTC))
    offered = _offered(service, 150)
    for customer, answer in offered:
        for offer in answer["offers"]:
            service.record_response(customer, offer["product_id"], "shown", "mobile")
        service.record_response(customer, answer["offers"][0]["product_id"], "accepted",
                                "mobile")
    common = ["--policy", str(tmp_path / "policy.toml"), "--data", str(trained.data_dir),
              "--models", str(trained.models_dir), "--state", str(tmp_path / "state")]
    capsys.readouterr()
    assert main(["experiment", "report", "--since", "1d", "--json", *common]) == 0
    report = json.loads(capsys.readouterr().out)
    shows = {a["arm"]: a["shows"] for a in report["arms"]}
    answered = {arm: sum(len(a["offers"]) for _, a in offered if a["arm"] == arm)
                for arm in ("static", "adaptive")}
    assert shows == answered and report["promoted"] is None
    assert {a["arm"]: a["accepts"] for a in report["arms"]} == {
        arm: sum(a["arm"] == arm for _, a in offered) for arm in ("static", "adaptive")}
    (difference,) = report["differences"]
    assert difference["arm"] == "adaptive" and difference["against"] == "static"

    assert main(["experiment", "promote", "nobody", *common]) == 2  # unknown arm, named
    assert main(["experiment", "promote", "adaptive", "--reason", "wins", "--by", "ops",
                 *common]) == 0
    assert promotions(service.responses.database)[-1]["by"] == "ops"
    service._promotion = (0.0, None)  # as if the half minute had passed
    assert {service.serving_arm(c).name for c in _ids(service, 200)} == {"adaptive"}
    assert main(["experiment", "report", "--since", "1d", "--json", *common]) == 0
    assert json.loads(capsys.readouterr().out)["promoted"] == "adaptive"


def test_a_worker_counting_in_steps_agrees_with_one_reading_at_once(trained, tmp_path,
                                                                      database_url):
    """Refreshes read only what is new; a worker started later reads the window at once:
    both hold exactly the same counts and factors (integer sums, whole days)."""
    service = _service(trained, tmp_path, load_policy().text + ADAPTIVE, database_url)
    start = service.clock()
    for hour in range(0, 60, 7):  # two and a half days, a refresh after each round
        service.clock.now = start + timedelta(hours=hour)
        for customer, answer in _offered(service, 40):
            product = answer["offers"][0]["product_id"]
            service.record_response(customer, product, "shown", "mobile")
            if int(customer[1:]) % 3 == 0:
                service.record_response(customer, product, "accepted", "mobile")
        service.learning.current(service.clock())
    service.clock.now += timedelta(hours=1)
    stepped = service.learning.current(service.clock())
    fresh = AdaptiveState(service.responses, service.engine.model, service.policy.adaptive)
    at_once = fresh.current(service.clock())
    assert stepped.corrections.evidence.counted.sum() > 100
    for name in ("accepts", "expected", "shows", "counted"):
        np.testing.assert_array_equal(getattr(stepped.corrections.evidence, name),
                                      getattr(at_once.corrections.evidence, name))
    np.testing.assert_array_equal(stepped.corrections.factors, at_once.corrections.factors)
