"""The model-health gauges of /metrics: the monitor's figures read from the database (cached
for a minute), and the adaptive correction the service applies."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api import create_app
from api.metrics import EXTENSION, FiguresCache
from recommender.monitor import FIGURES_SETTING, MonitorFigures
from recommender.policy.config import CHANNELS, load_policy
from recommender.service import load_service
from recommender.store.settings import write_setting

ADAPTIVE = "\n[adaptive]\nprior_strength = 5.0\nmin_shows = 20\nrefresh_seconds = 60.0\n"
START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
MONITOR = ("nbo_monitor_observed_over_predicted", "nbo_monitor_take_up_ratio",
           "nbo_monitor_input_psi", "nbo_monitor_drift_flagged", "nbo_monitor_age_seconds")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def make_service(served_demo_bank, tmp_path):
    """``make_service(adaptive)``: a service of the demo bank on a clock of its own."""
    opened = []

    def make(adaptive: bool = True):
        policy = tmp_path / "policy.toml"
        policy.write_text(load_policy().text + (ADAPTIVE if adaptive else ""),
                          encoding="utf-8")
        service = load_service(served_demo_bank["DATA_DIR"], served_demo_bank["MODELS_DIR"],
                               policy_file=policy, state_dir=tmp_path / "state")
        service.clock = Clock(START)
        opened.append(service)
        return service

    yield make
    for service in opened:
        service.decisions.close()
        service.responses.database.dispose()


def _scrape(app) -> dict[str, dict[frozenset, float]]:
    """Each sample of /metrics as {name: {labels: value}}."""
    text = app.test_client().get("/metrics").get_data(as_text=True)
    found: dict[str, dict[frozenset, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found.setdefault(s.name, {})[frozenset(s.labels.items())] = s.value
    return found


def _figures(ratio: float, ran_at: datetime) -> MonitorFigures:
    return MonitorFigures(ran_at, "v-test", {("credit_card", "mobile"): ratio,
                                             ("mortgage", "branch"): 0.5},
                          {"credit_card": 1.25}, {"income": 0.05, "holds_mortgage": 0.31,
                                                  "age": 0.25})


def test_the_monitors_figures_are_exported(make_service, tmp_path):
    service = make_service()
    ran_at = datetime.now(UTC) - timedelta(hours=1)
    write_setting(service.responses.database, FIGURES_SETTING, _figures(0.8, ran_at).to_json())
    samples = _scrape(create_app({"SERVICE": service, "STATE_DIR": str(tmp_path)}))
    assert samples["nbo_monitor_observed_over_predicted"] == {
        frozenset({("product", "credit_card"), ("channel", "mobile")}): 0.8,
        frozenset({("product", "mortgage"), ("channel", "branch")}): 0.5}
    assert samples["nbo_monitor_take_up_ratio"] == {
        frozenset({("product", "credit_card")}): 1.25}
    assert samples["nbo_monitor_input_psi"][frozenset({("feature", "holds_mortgage")})] == 0.31
    assert samples["nbo_monitor_drift_flagged"] == {frozenset(): 2}  # 0.31 and 0.25
    assert samples["nbo_monitor_age_seconds"][frozenset()] == pytest.approx(3600, abs=60)


def test_the_figures_are_read_at_most_once_a_minute(make_service, tmp_path):
    service = make_service()
    database = service.responses.database
    app = create_app({"SERVICE": service, "STATE_DIR": str(tmp_path)})
    seconds = [1000.0]
    app.extensions[EXTENSION].figures = FiguresCache(clock=lambda: seconds[0])
    key = frozenset({("product", "credit_card"), ("channel", "mobile")})
    write_setting(database, FIGURES_SETTING, _figures(0.8, datetime.now(UTC)).to_json())
    assert _scrape(app)["nbo_monitor_observed_over_predicted"][key] == 0.8
    write_setting(database, FIGURES_SETTING, _figures(1.6, datetime.now(UTC)).to_json())
    seconds[0] += 59
    assert _scrape(app)["nbo_monitor_observed_over_predicted"][key] == 0.8  # cached
    seconds[0] += 2
    assert _scrape(app)["nbo_monitor_observed_over_predicted"][key] == 1.6


def test_no_monitor_run_exports_no_monitor_gauge(make_service, tmp_path):
    samples = _scrape(create_app({"SERVICE": make_service(), "STATE_DIR": str(tmp_path)}))
    assert not set(MONITOR) & set(samples)


def test_figures_that_are_not_the_monitors_are_logged_and_not_exported(make_service, tmp_path,
                                                                       caplog):
    service = make_service()
    write_setting(service.responses.database, FIGURES_SETTING, '{"ran_at": "yesterday"}')
    app = create_app({"SERVICE": service, "STATE_DIR": str(tmp_path)})
    with caplog.at_level(logging.WARNING, logger="api.metrics"):
        samples = _scrape(app)
    assert not set(MONITOR) & set(samples) and "nbo_model_info" in samples
    assert "nbo monitor" in caplog.text and FIGURES_SETTING in caplog.text


def test_the_adaptive_factor_starts_at_1_and_follows_declines(make_service, tmp_path):
    service = make_service()
    app = create_app({"SERVICE": service, "STATE_DIR": str(tmp_path)})
    factors = _scrape(app)["nbo_adaptive_factor"]
    products = [str(p) for p in service.catalog.ids.external_ids]
    assert len(factors) == len(products) * len(CHANNELS)  # products x channels, no stage
    assert set(factors.values()) == {1.0}  # no evidence: the prior
    customers = [str(c) for c in service.book.batch(np.arange(150)).customer_ids]
    for customer in customers:  # every customer declines the card on mobile
        service.record_response(customer, "credit_card", "shown", "mobile")
        service.record_response(customer, "credit_card", "declined", "mobile")
    service.clock.now += timedelta(seconds=60)  # the next refresh of the evidence
    factors = _scrape(app)["nbo_adaptive_factor"]
    card = {channel: factors[frozenset({("product", "credit_card"), ("channel", channel)})]
            for channel in CHANNELS}
    learned = service.learning.current(service.clock()).corrections
    p, c = products.index("credit_card"), CHANNELS.index("mobile")
    shows = learned.evidence.shows[p, c]
    assert card["mobile"] == pytest.approx(
        float((learned.factors[p, c] * shows).sum() / shows.sum()))
    assert card["mobile"] < 1.0
    assert card["branch"] == card["email"] == 1.0
    assert factors[frozenset({("product", "mortgage"), ("channel", "mobile")})] == 1.0


def test_a_policy_without_adaptive_exports_no_factor(make_service, tmp_path):
    samples = _scrape(create_app({"SERVICE": make_service(adaptive=False),
                                  "STATE_DIR": str(tmp_path)}))
    assert "nbo_adaptive_factor" not in samples and "nbo_model_info" in samples
