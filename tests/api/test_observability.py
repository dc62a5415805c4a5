"""Observability: request ids, the JSON access log, Prometheus metrics, readiness; and no
customer id in clear in any of them."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api import create_app
from api.metrics import EXTENSION, LATENCY_BUCKETS, Metrics, set_model_version
from api.observability import configure_access_log, redacted_traceback
from recommender.data import columns as C
from recommender.exceptions import ConfigError
from recommender.service import load_service

ERROR_KEYS = {"code", "message", "details"}
GENERATED_ID = re.compile(r"[0-9a-f]{32}")
OFFERS_ROUTE = "/v1/customers/<customer_id>/offers"


@pytest.fixture(scope="module")
def service(served_demo_bank, tmp_path_factory):
    state = tmp_path_factory.mktemp("observability_state")
    return load_service(served_demo_bank["DATA_DIR"], served_demo_bank["MODELS_DIR"],
                        state_dir=state)


@pytest.fixture
def app(service, tmp_path):
    """A fresh app (fresh metrics) around the module's service."""
    return create_app({"SERVICE": service, "STATE_DIR": str(tmp_path)})


@pytest.fixture
def client(app, client_with_key):
    return client_with_key(app, "teller")


@pytest.fixture(scope="module")
def customer_ids(demo_bank) -> dict[str, str]:
    """A consenting customer (CF offers) and one who did not consent (popularity)."""
    c = demo_bank.customers
    consenting = c.loc[c[C.CONSENT_PROFILING], C.CUSTOMER_ID]
    refusing = c.loc[~c[C.CONSENT_PROFILING], C.CUSTOMER_ID]
    return {"consenting": str(consenting.iloc[0]), "refusing": str(refusing.iloc[0])}


def _samples(client) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics as {(name, labels): value}."""
    text = client.get("/metrics").get_data(as_text=True)
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# --------------------------------------------------------------------------- request id


def test_request_id_is_generated_when_none_is_sent(client):
    first, second = client.get("/healthz"), client.get("/healthz")
    assert GENERATED_ID.fullmatch(first.headers["X-Request-ID"])
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


@pytest.mark.parametrize("incoming", ["abc-123", "req.42:7_x", "A" * 64,
                                      "3f2a9c1e-7b4d-4e8a-9f0b-2c6d8e1a5b3c"])
def test_well_formed_request_id_is_echoed(client, incoming):
    assert client.get("/healthz", headers={"X-Request-ID": incoming}).headers[
        "X-Request-ID"] == incoming


@pytest.mark.parametrize("incoming", ["", "has space", "A" * 65, "-leading-dash",
                                      "semi;colon", "new\tline", "é", "../../etc/passwd"])
def test_malformed_request_id_is_replaced(client, incoming):
    got = client.get("/healthz", headers={"X-Request-ID": incoming}).headers["X-Request-ID"]
    assert GENERATED_ID.fullmatch(got) and got != incoming


@pytest.mark.parametrize("method, path, status", [
    ("get", "/v1/customers/NO_SUCH_CUSTOMER/offers", 404), ("get", "/nope", 404),
    ("delete", "/v1/products", 405), ("get", "/v1/products?lang=fr", 400),
    ("post", "/v1/offers/score", 400),
])
def test_errors_carry_the_request_id(client, method, path, status):
    resp = getattr(client, method)(path, headers={"X-Request-ID": "err-1"})
    assert resp.status_code == status
    assert set(resp.get_json()) == ERROR_KEYS
    assert resp.headers["X-Request-ID"] == "err-1"


def test_refused_requests_carry_the_request_id(app):
    resp = app.test_client().get("/v1/products", headers={"X-Request-ID": "no-key"})
    assert resp.status_code == 401
    assert resp.headers["X-Request-ID"] == "no-key"


# --------------------------------------------------------------------------- access log


def _access_lines(caplog) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "api.access"]


def test_one_json_access_line_per_request(client, app, service, customer_ids, caplog):
    cid = customer_ids["consenting"]
    caplog.set_level(logging.INFO)
    resp = client.get(f"/v1/customers/{cid}/offers", headers={"X-Request-ID": "log-1"})
    assert resp.status_code == 200
    [line] = _access_lines(caplog)
    assert line["request_id"] == "log-1"
    assert line["method"] == "GET" and line["route"] == OFFERS_ROUTE and line["status"] == 200
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    key = client.environ_base["HTTP_AUTHORIZATION"].split()[1]
    assert line["role"] == "teller" and line["key_id"].startswith("k_")
    assert key not in caplog.text, "the key itself is never logged"
    # a keyed hash (the decision log's), not a bare SHA-256 anyone could recompute
    assert line["customer_hash"] == service.decisions.customer_hash(cid)
    assert line["customer_hash"] != hashlib.sha256(cid.encode()).hexdigest()


def test_access_line_without_key_or_customer(app, caplog):
    caplog.set_level(logging.INFO)
    app.test_client().get("/v1/products")  # no key: 401
    app.test_client().get("/healthz")
    refused, health = _access_lines(caplog)
    assert refused["status"] == 401 and refused["route"] == "/v1/products"
    assert "key_id" not in refused and "customer_hash" not in refused
    assert health == {**health, "route": "/healthz", "status": 200}
    assert "customer_hash" not in health


def test_no_customer_id_in_clear_in_any_log(client, app, customer_ids, caplog):
    caplog.set_level(logging.DEBUG)
    cid, unknown = customer_ids["consenting"], "C99999999"
    paths = [f"/v1/customers/{cid}", f"/v1/customers/{cid}/offers",
             f"/v1/customers/{cid}/offers/mortgage/why-not", f"/v1/customers/{cid}/responses",
             f"/v1/customers/{unknown}/offers", f"/v1/customers/{cid}/offers/extra/path"]
    for path in paths:
        assert client.get(path).status_code < 500
    client.post(f"/v1/customers/{cid}/responses",
                json={"product_id": "mortgage", "outcome": "shown", "channel": "branch"})
    client.post("/v1/offers/score", json={"customer": {"customer_id": cid, "age": 30}})
    assert len(_access_lines(caplog)) == len(paths) + 2
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert cid not in logged and unknown not in logged


def test_unhandled_error_log_withholds_the_message(service, tmp_path, client_with_key, caplog):
    app = create_app({"SERVICE": service, "STATE_DIR": str(tmp_path)})

    @app.get("/v1/customers/<customer_id>/boom")
    def boom(customer_id: str):
        raise RuntimeError(f"customer {customer_id} broke it")

    caplog.set_level(logging.INFO)
    resp = client_with_key(app).get("/v1/customers/C00000042/boom",
                                    headers={"X-Request-ID": "boom-1"})
    assert resp.status_code == 500 and resp.get_json()["code"] == "internal_error"
    assert resp.headers["X-Request-ID"] == "boom-1"
    assert "C00000042" not in caplog.text
    [error] = [r for r in caplog.records if r.name == "api.errors"]
    message = error.getMessage()
    assert "RuntimeError" in message and "boom-1" in message
    assert "/v1/customers/<customer_id>/boom" in message
    assert "in boom" in message, "the traceback (its frames) is kept"


def test_redacted_traceback_keeps_frames_and_causes_but_no_message():
    cid = "C" + "7" * 8  # not in the source lines the traceback quotes
    try:
        try:
            raise KeyError(cid)
        except KeyError as exc:
            raise ValueError(f"profile of {cid} is bad") from exc
    except ValueError as exc:
        text = redacted_traceback(exc)
    assert cid not in text
    assert "builtins.KeyError" in text and "builtins.ValueError" in text
    assert text.index("KeyError") < text.index("ValueError"), "causes first, as Python prints"
    assert "test_redacted_traceback_keeps_frames_and_causes_but_no_message" in text


def test_configure_access_log_writes_bare_json_lines(client):
    stream = io.StringIO()
    access = logging.getLogger("api.access")
    saved = access.handlers[:], access.level, access.propagate
    try:
        configure_access_log(stream)
        client.get("/healthz", headers={"X-Request-ID": "line-1"})
    finally:
        access.handlers[:], access.level, access.propagate = saved[0], saved[1], saved[2]
    [line] = stream.getvalue().splitlines()
    assert json.loads(line)["request_id"] == "line-1"


# --------------------------------------------------------------------------- metrics


def test_metrics_count_requests_by_route_pattern_and_status(client, customer_ids):
    cid = customer_ids["consenting"]
    before = _samples(client)
    for _ in range(2):
        client.get(f"/v1/customers/{cid}/offers")
    client.get("/v1/customers/NO_SUCH_CUSTOMER/offers")
    client.get("/v1/customers/C00000001/nothing/here")
    after = _samples(client)

    def delta(**labels):
        name = "nbo_http_requests_total"
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta(route=OFFERS_ROUTE, method="GET", status="200") == 2
    assert delta(route=OFFERS_ROUTE, method="GET", status="404") == 1
    assert delta(route="<unmatched>", method="GET", status="404") == 1
    count = "nbo_http_request_duration_seconds_count"
    assert (_value(after, count, route=OFFERS_ROUTE, method="GET")
            - _value(before, count, route=OFFERS_ROUTE, method="GET")) == 3


def test_metrics_label_unknown_methods_as_other(client):
    for method in ("BREW", "X" * 200, "QUERY"):
        assert client.open("/v1/products", method=method).status_code == 405
    samples = _samples(client)
    assert _value(samples, "nbo_http_requests_total", route="<unmatched>", method="OTHER",
                  status="405") == 3
    assert not [labels for name, labels in samples if ("method", "BREW") in labels]


def test_metrics_latency_histogram_has_millisecond_buckets(client):
    client.get("/v1/products")
    text = client.get("/metrics").get_data(as_text=True)
    [family] = [f for f in text_string_to_metric_families(text)
                if f.name == "nbo_http_request_duration_seconds"]
    assert family.type == "histogram"
    bounds = {float(s.labels["le"]) for s in family.samples
              if s.name.endswith("_bucket") and s.labels["route"] == "/v1/products"}
    assert bounds == {*LATENCY_BUCKETS, float("inf")}
    assert min(bounds) <= 0.001 and {0.01, 0.1} <= bounds


def test_metrics_show_the_model_version_and_follow_a_reload(client, app, service):
    version = service.engine.model.version
    assert _value(_samples(client), "nbo_model_info", version=version) == 1
    # a reload swaps the service: the next scrape shows the new version only
    reloaded = SimpleNamespace(engine=SimpleNamespace(model=SimpleNamespace(version="v-next")),
                               book=service.book, decisions=service.decisions)
    app.extensions["nbo"] = reloaded
    samples = _samples(app.test_client())  # /metrics is open
    assert _value(samples, "nbo_model_info", version="v-next") == 1
    assert ("nbo_model_info", frozenset({("version", version)})) not in samples


def test_set_model_version_is_callable_by_a_reload(app):
    with app.app_context():
        set_model_version("v-set")
    text = app.extensions[EXTENSION].render().decode()
    assert 'nbo_model_info{version="v-set"} 1.0' in text


def test_set_model_version_replaces_the_previous_version():
    metrics = Metrics()
    metrics.set_model_version("v1")
    metrics.set_model_version("v2")
    text = metrics.render().decode()
    assert 'nbo_model_info{version="v2"} 1.0' in text
    assert 'version="v1"' not in text


def test_metrics_count_offers_by_source(client, customer_ids):
    before = _samples(client)
    served: dict[str, int] = {}
    answers = [client.get(f"/v1/customers/{customer_ids['consenting']}/offers?limit=7"),
               client.get(f"/v1/customers/{customer_ids['refusing']}/offers"),
               client.get(f"/v1/customers/{customer_ids['consenting']}/offers/mortgage/why-not")]
    body = {"customer": {"age": 31, "income": 180000, "marital_status": "married",
                         "dependants": 1, "tenure_months": 24, "segment": "mass",
                         "risk_grade": "C3", "residency": "resident", "consent_profiling": True},
            "holdings": ["current_account"]}
    answers.append(client.post("/v1/offers/score", json=body))
    for resp in answers:
        assert resp.status_code == 200
        for offer in resp.get_json().get("offers", []):  # why-not serves no offer
            served[offer["source"]] = served.get(offer["source"], 0) + 1
    assert "popularity" in served and len(served) >= 2
    after = _samples(client)
    for source, count in served.items():
        name = "nbo_offers_served_total"
        assert _value(after, name, source=source) - _value(before, name, source=source) == count


def test_metrics_never_show_a_customer_id(client, customer_ids):
    ids = list(customer_ids.values()) + ["C99999999"]
    for cid in ids:
        client.get(f"/v1/customers/{cid}")
        client.get(f"/v1/customers/{cid}/offers")
        client.get(f"/v1/customers/{cid}/unknown-route")
    text = client.get("/metrics").get_data(as_text=True)
    assert OFFERS_ROUTE in text
    assert not [cid for cid in ids if cid in text]


def test_metrics_are_open_and_in_prometheus_text_format(app):
    resp = app.test_client().get("/metrics")
    assert resp.status_code == 200
    assert resp.mimetype == "text/plain"
    assert "# TYPE nbo_http_requests_total counter" in resp.get_data(as_text=True)


def test_multiprocess_metrics_add_up_every_worker(tmp_path):
    """Two worker processes write to PROMETHEUS_MULTIPROC_DIR; one scrape shows both."""
    folder = tmp_path / "prometheus"
    folder.mkdir()
    worker = textwrap.dedent("""
        import sys
        from api.metrics import Metrics
        metrics = Metrics(sys.argv[1])
        metrics.set_model_version("v1")
        metrics.observe_request("/v1/products", "GET", 200, 0.004)
        metrics.count_offers([{"source": "cf"}, {"source": "popularity"}])
    """)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    workers = [subprocess.Popen([sys.executable, "-c", worker, str(folder)], env=env,
                                cwd=Path(__file__).resolve().parents[2]) for _ in range(2)]
    assert [w.wait(timeout=60) for w in workers] == [0, 0]
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for family in text_string_to_metric_families(Metrics(folder).render().decode())
               for s in family.samples}
    requests = frozenset({("route", "/v1/products"), ("method", "GET"), ("status", "200")})
    assert samples[("nbo_http_requests_total", requests)] == 2
    assert samples[("nbo_offers_served_total", frozenset({("source", "cf")}))] == 2
    assert samples[("nbo_model_info", frozenset({("version", "v1")}))] == 1


def test_multiprocess_folder_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
        Metrics(tmp_path / "missing")


# --------------------------------------------------------------------------- health


def test_readyz_names_the_model_when_ready(app, service):
    resp = app.test_client().get("/readyz")  # open: no key needed
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ready", "model_version": service.engine.model.version}


def test_readyz_is_503_and_healthz_200_without_a_model(app):
    app.extensions["nbo"] = None  # as while a service is still loading
    client = app.test_client()
    resp = client.get("/readyz")
    assert resp.status_code == 503
    body = resp.get_json()
    assert set(body) == ERROR_KEYS and body["code"] == "not_ready"
    assert resp.headers["X-Request-ID"]
    health = client.get("/healthz")
    assert health.status_code == 200 and health.get_json() == {"status": "ok"}
    assert client.get("/metrics").status_code == 200
