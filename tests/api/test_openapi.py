"""The OpenAPI document: it describes exactly the app's routes and what it serves now, and the
app keeps to it.

schemathesis generates requests from the document (valid and invalid ones) and sends them to
the app in-process with every check it has: every answer must be documented and match its
schema, no 5xx, valid requests accepted and invalid ones refused.
"""

from __future__ import annotations

import json
import re

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks
from werkzeug.exceptions import NotFound

from api import create_app
from api.openapi import build_document
from api.requests import RequestModels
from recommender.data.catalog import load_catalog
from recommender.policy.config import load_policy

# The packaged catalog and policy: what the served demo bank serves.
DOCUMENT = build_document(RequestModels.build(tuple(load_catalog().ids.external_ids),
                                              load_policy().intents))
load_all_checks()
CHECKS_ALL = [check for check in CHECKS.get_all() if not isinstance(check, type)]
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}  # added by Flask to every rule


@pytest.fixture(scope="module")
def openapi_app(served_demo_bank, tmp_path_factory):
    """An app of its own (own state folder): the responses schemathesis records stay here."""
    state = tmp_path_factory.mktemp("openapi_state")
    return create_app({**served_demo_bank, "STATE_DIR": str(state)})


@pytest.fixture(scope="module")
def admin_headers(openapi_app, client_with_key) -> dict[str, str]:
    client = client_with_key(openapi_app, "admin")
    return {"Authorization": client.environ_base["HTTP_AUTHORIZATION"]}


def _openapi_path(rule: str) -> str:
    """``/v1/customers/<customer_id>`` (or ``<path:x>``) as OpenAPI writes it: ``{customer_id}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _app_operations(app) -> set[tuple[str, str]]:
    """(path, method) of every route the app answers, static files aside."""
    return {(_openapi_path(rule.rule), method.lower())
            for rule in app.url_map.iter_rules()
            if rule.endpoint.split(".")[-1] != "static"
            for method in rule.methods - IMPLICIT_METHODS}


def test_document_describes_exactly_the_routes_of_the_app(openapi_app):
    documented = {(path, method) for path, operations in DOCUMENT["paths"].items()
                  for method in operations}
    actual = _app_operations(openapi_app)
    assert not actual - documented, f"routes missing from the document: {actual - documented}"
    assert not documented - actual, f"documented but not served: {documented - actual}"


def test_operation_ids_are_the_flask_endpoints(openapi_app):
    """Each documented operation names the view that answers it (and so its roles)."""
    adapter = openapi_app.url_map.bind("localhost")
    for path, operations in DOCUMENT["paths"].items():
        concrete = re.sub(r"{([^}]+)}", r"x\1", path)
        for method, operation in operations.items():
            try:
                endpoint, _ = adapter.match(concrete, method=method.upper())
            except NotFound:  # not served: the test above names it
                continue
            assert operation["operationId"] == endpoint, (path, method)


def test_served_document_is_the_document_of_what_is_served(openapi_app):
    resp = openapi_app.test_client().get("/openapi.json")
    assert resp.status_code == 200
    assert resp.get_json() == json.loads(json.dumps(DOCUMENT))
    assert resp.headers["X-Request-ID"]


def _enum(document: dict, path: str, name: str) -> list[str]:
    parameters = document["paths"][path]["get"]["parameters"]
    return next(p["schema"]["enum"] for p in parameters if p["name"] == name)


def test_enums_are_those_of_the_catalog_and_policy_served():
    why_not = "/v1/customers/{customer_id}/offers/{product_id}/why-not"
    assert _enum(DOCUMENT, why_not, "product_id") == list(load_catalog().ids.external_ids)
    assert _enum(DOCUMENT, why_not, "intent") == list(load_policy().intents) != []
    score = DOCUMENT["components"]["schemas"]["ScoreRequest"]["properties"]
    assert score["holdings"]["items"]["enum"] == list(load_catalog().ids.external_ids)
    assert score["intent"]["enum"] == list(load_policy().intents)


def test_document_follows_a_reload_of_the_policy(served_demo_bank, tmp_path, client_with_key):
    """A policy with another intent, reloaded: the document and the checks take it at once."""
    policy = tmp_path / "policy.toml"
    policy.write_text(load_policy().text, encoding="utf-8")
    app = create_app({**served_demo_bank, "STATE_DIR": str(tmp_path / "state"),
                      "POLICY_FILE": str(policy)})
    client = client_with_key(app, "admin")
    offers = "/v1/customers/{customer_id}/offers"
    assert "saving" not in _enum(client.get("/openapi.json").get_json(), offers, "intent")
    assert client.get("/v1/customers/C00000001/offers?intent=saving").status_code == 400
    policy.write_text(load_policy().text + "\n[arbitration.intent.saving]\ndeposit = 1.5\n",
                      encoding="utf-8")
    assert client.post("/admin/reload").get_json()["status"] == "reloaded"
    assert "saving" in _enum(client.get("/openapi.json").get_json(), offers, "intent")
    assert client.get("/v1/customers/C00000001/offers?intent=saving").status_code == 200


def _schemas(node):
    """Every JSON Schema object in ``node`` (a dict with a ``type``)."""
    if isinstance(node, dict):
        if isinstance(node.get("type"), str):
            yield node
        for value in node.values():
            yield from _schemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from _schemas(value)


def test_constraints_are_written_in_json_schema_words():
    """pydantic writes a bound it cannot place as ``ge``/``le``: clients would ignore it."""
    pydantic_words = {"ge", "gt", "le", "lt", "min_length", "max_length", "multiple_of"}
    assert not [s for s in _schemas(DOCUMENT) if pydantic_words & set(s)]


def test_protected_operations_document_auth_errors_and_roles():
    for path, operations in DOCUMENT["paths"].items():
        for method, operation in operations.items():
            if operation.get("security") == []:
                assert not {"401", "403"} & set(operation["responses"]), (path, method)
            else:
                assert {"401", "403"} <= set(operation["responses"]), (path, method)
                assert operation["x-roles"] and "admin" in operation["x-roles"], (path, method)


# --------------------------------------------------------------------------- fuzzing finds

# Inputs that answered 500 before the API layer checked them; each must be a 400 now.
ODD_QUERIES = {"superscript digit": "limit=%C2%B2", "circled digit": "limit=%E2%91%A0",
               "fullwidth digit": "limit=%EF%BC%93", "two signs": "limit=%2B-5",
               "5000 digits": "limit=" + "9" * 5000}


@pytest.mark.parametrize("query", ODD_QUERIES.values(), ids=ODD_QUERIES.keys())
def test_odd_limit_is_400_not_500(openapi_app, admin_headers, query):
    resp = openapi_app.test_client().get(f"/v1/customers/C00000001/offers?{query}",
                                         headers=admin_headers)
    assert resp.status_code == 400, resp.get_data(as_text=True)[:300]
    body = resp.get_json()
    assert body["details"] == {"parameter": "limit"}
    assert len(body["message"]) < 120, "the message quotes the value cut short"


@pytest.mark.parametrize("path, raw", [
    ("/v1/offers/score", '{"customer": {"age": 30, "segment": "\\ud800"}}'),
    ("/v1/offers/score", '{"customer": {"age": 30}, "holdings": ["\\udfff"]}'),
    ("/v1/customers/C00000001/responses",
     '{"product_id": "mortgage", "outcome": "shown", "channel": "\\ud83d"}'),
])
def test_lone_surrogate_in_body_is_400_not_500(openapi_app, admin_headers, path, raw):
    resp = openapi_app.test_client().post(path, data=raw, content_type="application/json",
                                          headers=admin_headers)
    assert resp.status_code == 400, resp.get_data(as_text=True)[:300]
    assert "Unicode" in resp.get_json()["message"]


# --------------------------------------------------------------------------- schemathesis

# Loaded from the document built above, not the app's (a test above checks they are the same):
# schemathesis's fixture-based loader does not work with pytest 9.
schema = schemathesis.openapi.from_dict(json.loads(json.dumps(DOCUMENT)))


@pytest.fixture(scope="module")
def fuzzed_app(openapi_app, admin_headers):
    """The app, known to schemathesis with its key: checks that send requests of their own
    (without the key, with another method) send them to it, and a request it made without
    the key is not counted as a key-less request the app should have refused."""
    schema.app = openapi_app
    schema.config.update(headers=admin_headers)
    return openapi_app


@schema.parametrize()
@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_app_keeps_to_its_document(case, fuzzed_app):
    case.call_and_validate(app=fuzzed_app, checks=CHECKS_ALL)


def test_an_adaptive_experiment_answer_keeps_to_the_document(served_demo_bank, tmp_path,
                                                             client_with_key):
    """``factor`` on each offer and the decision's ``arm`` are declared (the models are
    closed: an undeclared key fails here)."""
    from api.schemas import Decision

    (tmp_path / "static.toml").write_text(load_policy().text, encoding="utf-8")
    policy = tmp_path / "policy.toml"
    policy.write_text(load_policy().text + """
[adaptive]
exploration_share = 0.5
[experiment]
name = "document"
[[experiment.arm]]
name = "static"
share = 0.5
policy = "static.toml"
[[experiment.arm]]
name = "adaptive"
share = 0.5
""", encoding="utf-8")
    app = create_app({**served_demo_bank, "STATE_DIR": str(tmp_path / "state"),
                      "POLICY_FILE": str(policy)})
    client = client_with_key(app, "admin")
    arms = set()
    for n in range(1, 40):
        body = client.get(f"/v1/customers/C{n:08d}/offers?channel=mobile").get_json()
        Decision.model_validate(body)
        arms.add(body["arm"])
        assert all(("factor" in o) == (body["arm"] == "adaptive") for o in body["offers"])
    assert arms == {"static", "adaptive"}
