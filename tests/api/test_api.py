"""HTTP API tests: a small demo bank, trained once per session, served by ``create_app``.

Every response must be strict JSON; every failure must use the one error shape
``{"code", "message", "details"}`` and never be a 500 for bad input.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from api import create_app
from recommender.data import columns as C
from recommender.data.catalog import catalog_text, load_catalog
from recommender.data.demo import generate
from recommender.data.extracts import BankData, load_bank, write_bank
from recommender.data.life_stages import life_stages_text, load_life_stages
from recommender.ranking.config import TrainConfig
from recommender.ranking.fitting import upto
from recommender.ranking.training import train

SOURCES = {"cf", "cf_fold_in", "life_stage_prior", "popularity"}
ERROR_KEYS = {"code", "message", "details"}
CJK = re.compile(r"[\u4e00-\u9fff]")
N_CUSTOMERS, N_MONTHS, SEED = 3000, 4, 20261031

PROFILE = {
    "age": 31, "income": 180000, "marital_status": "married", "dependants": 1,
    "tenure_months": 24, "segment": "mass", "risk_grade": "C3", "residency": "resident",
    "consent_profiling": True,
}


# --------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class ApiBank:
    data_dir: Path
    models_dir: Path
    bank: BankData  # validated, as the service loads it

    @property
    def snapshots(self) -> list[pd.Timestamp]:
        return self.bank.snapshots

    def holdings_at(self, snapshot: pd.Timestamp) -> dict[str, frozenset[str]]:
        h = self.bank.holdings
        at = h[h[C.SNAPSHOT_DATE] == snapshot]
        return {cid: frozenset(group.astype(str)) for cid, group in
                at.groupby(at[C.CUSTOMER_ID].astype(str), observed=True)[C.PRODUCT_ID]}

    def consent(self) -> dict[str, bool]:
        c = self.bank.customers
        return dict(zip(c[C.CUSTOMER_ID], c[C.CONSENT_PROFILING], strict=True))


def _model_inputs():
    (cat_text, _), (st_text, _) = catalog_text(), life_stages_text()
    return load_catalog(), load_life_stages(), cat_text, st_text


@pytest.fixture(scope="session")
def api_bank(tmp_path_factory) -> ApiBank:
    root = tmp_path_factory.mktemp("api_bank")
    catalog, stages, cat_text, st_text = _model_inputs()
    demo = generate(N_CUSTOMERS, N_MONTHS, SEED, catalog, stages)
    write_bank(BankData(demo.customers, demo.holdings), root / "data")
    bank = load_bank(root / "data", catalog)
    # The hybrid ranker is pinned: these tests are about its sources (cf, fold-in, prior);
    # the acquisition ranker is served and tested in test_acquisition.py.
    train(bank, catalog, stages, TrainConfig(ranker="hybrid"), root / "models", cat_text,
          st_text)
    return ApiBank(data_dir=root / "data", models_dir=root / "models", bank=bank)


@pytest.fixture(scope="session")
def api_app(api_bank):
    return create_app({"DATA_DIR": str(api_bank.data_dir), "MODELS_DIR": str(api_bank.models_dir),
                       "MODEL_VERSION": "current",
                       "STATE_DIR": str(api_bank.models_dir.parent / "state")})


@pytest.fixture
def api_client(api_app, client_with_key):
    return client_with_key(api_app)


@pytest.fixture(scope="session")
def api_customers(api_bank) -> dict[str, list[str]]:
    """Customer ids of the demo bank by kind (consenting with >= 3 holdings, not consenting)."""
    latest = api_bank.holdings_at(api_bank.snapshots[-1])
    consent = api_bank.consent()
    rich = sorted(c for c, held in latest.items() if consent[c] and len(held) >= 3)
    opted_out = sorted(c for c, held in latest.items() if not consent[c] and held)
    assert len(rich) >= 5 and len(opted_out) >= 2, "the demo bank should have both kinds"
    return {"with_holdings": rich[:: max(1, len(rich) // 5)][:5], "no_consent": opted_out[:3]}


# --------------------------------------------------------------------------- helpers


def _reject_constant(name: str):
    raise AssertionError(f"the response is not strict JSON: it contains {name}")


def _json(resp) -> dict | list:
    """The body as strict JSON (no NaN/Infinity), after checking it is declared as JSON."""
    assert resp.mimetype == "application/json", resp.get_data(as_text=True)[:300]
    return json.loads(resp.get_data(as_text=True), parse_constant=_reject_constant)


def _assert_error(resp, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:500])
    body = _json(resp)
    assert set(body) == ERROR_KEYS, body
    assert isinstance(body["code"], str) and body["code"]
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["details"], dict)
    if code is not None:
        assert body["code"] == code, body
    return body


def _products(client) -> dict[str, dict]:
    return {p["product_id"]: p for p in _json(client.get("/v1/products"))["products"]}


def _held(client, customer_id: str) -> set[str]:
    resp = client.get(f"/v1/customers/{customer_id}")
    assert resp.status_code == 200
    return {h["product_id"] for h in _json(resp)["holdings"]}


def _assert_offer_list(result: dict, held: set[str], known_products: set[str]) -> None:
    offers = result["offers"]
    assert result["source"] in SOURCES
    assert [o["rank"] for o in offers] == list(range(1, len(offers) + 1))
    scores = [o["score"] for o in offers]
    assert all(isinstance(s, float | int) and np.isfinite(s) for s in scores)
    priorities = [o["priority"] for o in offers]  # arbitration orders the offers
    assert all(a >= b for a, b in zip(priorities, priorities[1:], strict=False)), priorities
    assert all(o["expected_gain"] > 0 for o in offers)
    ids = [o["product_id"] for o in offers]
    assert len(set(ids)) == len(ids), f"a product is offered twice: {ids}"
    assert set(ids) <= known_products
    assert not set(ids) & held, f"held products offered: {set(ids) & held}"
    for offer in offers:
        assert offer["source"] == result["source"]
        assert re.fullmatch(r"R[1-5]", offer["risk_grade"])
        assert isinstance(offer["reasons"], list) and offer["reasons"], offer
        for reason in offer["reasons"]:
            assert {"code", "text", "text_en", "text_zh", "evidence"} <= set(reason)
            assert reason["code"] and reason["text"] and reason["text_en"] and reason["text_zh"]
            assert isinstance(reason["evidence"], dict)


# --------------------------------------------------------------------------- catalog, model


def test_healthz(api_client, api_bank):
    resp = api_client.get("/healthz")
    assert resp.status_code == 200
    body = _json(resp)
    assert body["status"] == "ok"
    assert body["customers"] == N_CUSTOMERS
    assert body["model_version"] == _json(api_client.get("/v1/model"))["version"]


def test_products_have_names_category_and_risk_grade(api_client):
    resp = api_client.get("/v1/products")
    assert resp.status_code == 200
    products = _json(resp)["products"]
    assert len(products) == len(load_catalog())
    ids = [p["product_id"] for p in products]
    assert len(set(ids)) == len(ids)
    for p in products:
        assert p["product_id"] and p["name_en"] and p["category"]
        assert CJK.search(p["name_zh"]), p
        assert re.fullmatch(r"R[1-5]", p["risk_grade"]), p
        assert p["name"] == p["name_en"]
        assert set(p["prerequisites"]) <= set(ids)


def test_products_in_chinese(api_client):
    products = _json(api_client.get("/v1/products?lang=zh"))["products"]
    assert all(p["name"] == p["name_zh"] for p in products)
    assert all(CJK.search(tp) for p in products for tp in p["talking_points"])


def test_life_stages_list_stages_with_bundles(api_client):
    resp = api_client.get("/v1/life-stages")
    assert resp.status_code == 200
    stages = _json(resp)["life_stages"]
    assert len(stages) == len(load_life_stages().stages)
    product_ids = set(_products(api_client))
    for stage in stages:
        assert stage["id"] and stage["name_en"] and CJK.search(stage["name_zh"])
        assert isinstance(stage["bundle"], list) and stage["bundle"], stage
        assert set(stage["bundle"]) <= product_ids
        assert isinstance(stage["customers"], int) and stage["customers"] >= 0
    assert sum(s["customers"] for s in stages) == N_CUSTOMERS
    assert stages[-1]["rules"] == {}, "the last stage catches everyone"


def test_model_info_has_version_data_and_metrics(api_client, api_bank):
    resp = api_client.get("/v1/model")
    assert resp.status_code == 200
    info = _json(resp)
    assert isinstance(info["version"], str) and info["version"]
    assert (api_bank.models_dir / "current").resolve().name == info["version"]
    assert info["data"]["customers"] == N_CUSTOMERS
    assert info["data"]["snapshots"] == N_MONTHS
    assert info["metrics"]["served"] == "hybrid"


# --------------------------------------------------------------------------- customers


def test_profile_shows_latest_holdings_and_no_protected_attribute(api_client, api_bank,
                                                                  api_customers):
    latest = api_bank.holdings_at(api_bank.snapshots[-1])
    for cid in api_customers["with_holdings"]:
        body = _json(api_client.get(f"/v1/customers/{cid}"))
        assert body["customer_id"] == cid
        assert {h["product_id"] for h in body["holdings"]} == latest[cid]
        assert body["as_of"] == str(api_bank.snapshots[-1].date())
        assert body["life_stage"]["id"]
        assert C.GENDER not in body, "a protected attribute must never be exposed"


def test_offers_for_customer_with_holdings(api_client, api_customers):
    known = set(_products(api_client))
    for cid in api_customers["with_holdings"]:
        resp = api_client.get(f"/v1/customers/{cid}/offers")
        assert resp.status_code == 200
        result = _json(resp)
        assert result["customer_id"] == cid
        assert 3 <= len(result["offers"]) <= 5
        _assert_offer_list(result, _held(api_client, cid), known)
        # the model was trained on exactly this data: holdings unchanged, so plain CF
        assert result["source"] == "cf"
        assert result["model_version"] == _json(api_client.get("/v1/model"))["version"]


def test_offers_respect_eligibility_and_prerequisites(api_client, api_customers):
    products = _products(api_client)
    for cid in api_customers["with_holdings"] + api_customers["no_consent"]:
        profile = _json(api_client.get(f"/v1/customers/{cid}"))
        held = {h["product_id"] for h in profile["holdings"]}
        offers = _json(api_client.get(f"/v1/customers/{cid}/offers?limit=20"))["offers"]
        for offer in offers:
            rules = products[offer["product_id"]]
            elig = rules["eligibility"]
            assert elig["min_age"] <= profile["age"] <= elig["max_age"], (cid, offer)
            assert profile["residency"] in elig["residency"], (cid, offer)
            if elig["min_income"] > 0:
                assert profile["income"] is not None and profile["income"] >= elig["min_income"]
            assert set(rules["prerequisites"]) <= held, (cid, offer["product_id"])


def test_offers_in_chinese(api_client, api_customers):
    cid = api_customers["with_holdings"][0]
    result = _json(api_client.get(f"/v1/customers/{cid}/offers?lang=zh"))
    assert CJK.search(result["life_stage"]["name"])
    assert result["offers"]
    for offer in result["offers"]:
        assert offer["name"] == offer["name_zh"] and CJK.search(offer["name"])
        for reason in offer["reasons"]:
            assert reason["text"] == reason["text_zh"]
            assert CJK.search(reason["text"]), reason
    # ensure_ascii is off: the raw body carries the characters, not \u escapes
    raw = api_client.get(f"/v1/customers/{cid}/offers?lang=zh").get_data(as_text=True)
    assert CJK.search(raw)


def test_english_reason_text_is_english(api_client, api_customers):
    cid = api_customers["with_holdings"][0]
    for offer in _json(api_client.get(f"/v1/customers/{cid}/offers"))["offers"]:
        assert offer["name"] == offer["name_en"]
        for reason in offer["reasons"]:
            assert reason["text"] == reason["text_en"]


@pytest.mark.parametrize("limit", [1, 2, 4])
def test_offers_limit(api_client, api_customers, limit):
    cid = api_customers["with_holdings"][0]
    result = _json(api_client.get(f"/v1/customers/{cid}/offers?limit={limit}"))
    assert len(result["offers"]) == limit
    full = _json(api_client.get(f"/v1/customers/{cid}/offers?limit=20"))["offers"]
    assert result["offers"] == full[:limit], "a shorter list is a prefix of the longer one"


def test_offers_default_limit_is_five(api_client, api_customers):
    cid = api_customers["with_holdings"][1]
    assert len(_json(api_client.get(f"/v1/customers/{cid}/offers"))["offers"]) == 5


def test_customer_without_consent_gets_popularity(api_client, api_customers):
    known = set(_products(api_client))
    for cid in api_customers["no_consent"]:
        result = _json(api_client.get(f"/v1/customers/{cid}/offers"))
        assert result["source"] == "popularity"
        assert result["offers"]
        _assert_offer_list(result, _held(api_client, cid), known)
        for offer in result["offers"]:
            codes = [r["code"] for r in offer["reasons"]]
            assert codes == ["popular_overall", "suitability"], codes
            assert offer["reasons"][0]["evidence"]["personalised"] is False


def test_offers_are_deterministic(api_client, api_customers):
    for cid in api_customers["with_holdings"][:2] + api_customers["no_consent"][:1]:
        first = api_client.get(f"/v1/customers/{cid}/offers?limit=10")
        second = api_client.get(f"/v1/customers/{cid}/offers?limit=10")
        assert first.status_code == second.status_code == 200
        # every decision is logged under its own id; the decision itself is the same
        assert _decision(first) == _decision(second)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_http_answer_equals_service(api_app, api_client, api_customers, lang):
    service = api_app.extensions["nbo"]
    for cid in api_customers["with_holdings"][:3] + api_customers["no_consent"][:1]:
        http = _json(api_client.get(f"/v1/customers/{cid}/offers?limit=7&lang={lang}"))
        direct = json.loads(json.dumps(service.offers(cid, 7, lang), ensure_ascii=False))
        assert http.pop("decision_id") != direct.pop("decision_id")
        assert http == direct


def test_scoring_a_book_customer_by_profile_agrees_with_the_book(api_client, api_customers):
    """Same id, profile and holdings posted to /offers/score: the same offers as the book's."""
    cid = api_customers["with_holdings"][2]
    profile = _json(api_client.get(f"/v1/customers/{cid}"))
    fields = ("customer_id", "age", "income", "marital_status", "dependants", "tenure_months",
              "segment", "risk_grade", "residency", "consent_profiling")
    body = {"customer": {f: profile[f] for f in fields},
            "holdings": [h["product_id"] for h in profile["holdings"]], "limit": 8}
    scored = _json(api_client.post("/v1/offers/score", json=body))
    booked = _json(api_client.get(f"/v1/customers/{cid}/offers?limit=8"))
    assert scored["source"] == booked["source"] == "cf"
    assert scored["offers"] == booked["offers"]


# --------------------------------------------------------------------------- errors (GET)


@pytest.mark.parametrize("path", ["/v1/customers/NO_SUCH_CUSTOMER/offers",
                                  "/v1/customers/NO_SUCH_CUSTOMER",
                                  "/v1/customers/c00000001/offers"])
def test_unknown_customer_is_404(api_client, path):
    body = _assert_error(api_client.get(path), 404, "unknown_customer")
    assert path.split("/")[3] in body["message"]


@pytest.mark.parametrize("query, parameter", [
    ("limit=abc", "limit"), ("limit=0", "limit"), ("limit=999", "limit"), ("limit=-1", "limit"),
    ("limit=21", "limit"), ("limit=2.5", "limit"), ("limit=1e400", "limit"),
    ("lang=fr", "lang"), ("lang=ZH", "lang"), ("lang=", "lang"), ("limit=3&lang=de", "lang"),
    ("limit=", "limit"), ("channel=", "channel"), ("channel=fax", "channel"),
    ("intent=", "intent"), ("intent=holiday", "intent"),
])
def test_bad_query_parameters_are_400(api_client, api_customers, query, parameter):
    cid = api_customers["with_holdings"][0]
    body = _assert_error(api_client.get(f"/v1/customers/{cid}/offers?{query}"), 400,
                         "bad_request")
    assert body["details"] == {"parameter": parameter}
    assert parameter in body["message"]


@pytest.mark.parametrize("path", ["/v1/products?lang=fr", "/v1/life-stages?lang=xx",
                                  "/v1/customers/C00000001?lang=fr"])
def test_bad_lang_on_other_endpoints_is_400(api_client, path):
    _assert_error(api_client.get(path), 400, "bad_request")


@pytest.mark.parametrize("path", ["/nope", "/v1", "/v1/customers", "/v2/products",
                                  "/v1/customers/C00000001/offers/extra"])
def test_unknown_route_is_404_json(api_client, path):
    _assert_error(api_client.get(path), 404, "not_found")


@pytest.mark.parametrize("method, path", [
    ("post", "/healthz"), ("delete", "/v1/products"), ("get", "/v1/offers/score"),
    ("put", "/v1/customers/C00000001/offers"), ("patch", "/v1/model"),
])
def test_wrong_method_is_405_json(api_client, method, path):
    _assert_error(getattr(api_client, method)(path), 405, "method_not_allowed")


def test_405_lists_allowed_methods(api_client):
    resp = api_client.delete("/v1/products")
    assert resp.status_code == 405
    assert "GET" in resp.headers.get("Allow", "")


# --------------------------------------------------------------------------- POST /offers/score


def test_score_profile_with_holdings(api_client):
    holdings = ["current_account", "mortgage", "credit_card"]
    resp = api_client.post("/v1/offers/score", json={"customer": PROFILE, "holdings": holdings})
    assert resp.status_code == 200
    result = _json(resp)
    assert result["customer_id"] == "request"
    assert result["source"] == "cf_fold_in", "a customer the model never saw is folded in"
    assert len(result["offers"]) >= 3
    _assert_offer_list(result, set(holdings), set(_products(api_client)))


@pytest.mark.parametrize("body_extra", [{"holdings": []}, {}])
def test_score_cold_customer_gets_life_stage_prior(api_client, body_extra):
    result = _json(api_client.post("/v1/offers/score", json={"customer": PROFILE, **body_extra}))
    assert result["source"] == "life_stage_prior"
    assert result["offers"]
    _assert_offer_list(result, set(), set(_products(api_client)))
    codes = {r["code"] for o in result["offers"] for r in o["reasons"]}
    assert "held_products" not in codes, "no holdings, so no CF explanation"
    held_products = _products(api_client)
    # with nothing held, nothing that requires a prerequisite can be offered
    assert all(not held_products[o["product_id"]]["prerequisites"] for o in result["offers"])


def test_score_without_consent_is_popularity(api_client):
    body = {"customer": {**PROFILE, "consent_profiling": False},
            "holdings": ["current_account", "credit_card"]}
    result = _json(api_client.post("/v1/offers/score", json=body))
    assert result["source"] == "popularity"
    assert all([r["code"] for r in o["reasons"]] == ["popular_overall", "suitability"]
               for o in result["offers"])


def test_score_limit_and_lang_in_body(api_client):
    body = {"customer": PROFILE, "holdings": ["current_account"], "limit": 2, "lang": "zh"}
    result = _json(api_client.post("/v1/offers/score", json=body))
    assert len(result["offers"]) == 2
    assert all(CJK.search(o["name"]) for o in result["offers"])


def test_score_is_deterministic(api_client):
    body = {"customer": PROFILE, "holdings": ["current_account", "time_deposit"], "limit": 10}
    first = api_client.post("/v1/offers/score", json=body)
    second = api_client.post("/v1/offers/score", json=body)
    assert first.status_code == 200
    assert _decision(first) == _decision(second)


def _decision(response) -> dict:
    body = _json(response)
    assert len(body.pop("decision_id")) == 32
    return body


def _without(key: str) -> dict:
    return {k: v for k, v in PROFILE.items() if k != key}


# (body, column the message must name or None)
BAD_BODIES = {
    "no customer": ({"holdings": []}, None),
    "empty object": ({}, None),
    "customer is a list": ({"customer": [PROFILE], "holdings": []}, None),
    "customer is a string": ({"customer": "C00000001"}, None),
    "customer is null": ({"customer": None}, None),
    "age -3": ({"customer": {**PROFILE, "age": -3}}, C.AGE),
    "age 200": ({"customer": {**PROFILE, "age": 200}}, C.AGE),
    "age text": ({"customer": {**PROFILE, "age": "thirty"}}, C.AGE),
    "age fractional": ({"customer": {**PROFILE, "age": 30.5}}, C.AGE),
    "age null": ({"customer": {**PROFILE, "age": None}}, C.AGE),
    "age a list": ({"customer": {**PROFILE, "age": [31]}}, C.AGE),
    "no age": ({"customer": _without(C.AGE)}, C.AGE),
    "risk grade C9": ({"customer": {**PROFILE, "risk_grade": "C9"}}, C.RISK_GRADE),
    "risk grade R3": ({"customer": {**PROFILE, "risk_grade": "R3"}}, C.RISK_GRADE),
    "income negative": ({"customer": {**PROFILE, "income": -1}}, C.INCOME),
    "income text": ({"customer": {**PROFILE, "income": "lots"}}, C.INCOME),
    "marital status": ({"customer": {**PROFILE, "marital_status": "complicated"}},
                       C.MARITAL_STATUS),
    "dependants -1": ({"customer": {**PROFILE, "dependants": -1}}, C.DEPENDANTS),
    "tenure text": ({"customer": {**PROFILE, "tenure_months": "long"}}, C.TENURE_MONTHS),
    "segment empty": ({"customer": {**PROFILE, "segment": ""}}, C.SEGMENT),
    "residency": ({"customer": {**PROFILE, "residency": "mars"}}, C.RESIDENCY),
    "consent maybe": ({"customer": {**PROFILE, "consent_profiling": "maybe"}},
                      C.CONSENT_PROFILING),
    "consent null": ({"customer": {**PROFILE, "consent_profiling": None}}, C.CONSENT_PROFILING),
    "no consent field": ({"customer": _without(C.CONSENT_PROFILING)}, C.CONSENT_PROFILING),
    "birth date not a date": ({"customer": {**_without(C.AGE), "birth_date": "yesterday"}},
                              C.BIRTH_DATE),
    "risk assessed not a date": ({"customer": {**PROFILE, "risk_assessed_on": "soon"}},
                                 C.RISK_ASSESSED_ON),
    "empty customer id": ({"customer": {**PROFILE, "customer_id": ""}}, C.CUSTOMER_ID),
    "unknown product held": ({"customer": PROFILE, "holdings": ["current_account", "yacht"]},
                             "holdings"),
    "holdings a string": ({"customer": PROFILE, "holdings": "current_account"}, "holdings"),
    "holdings an object": ({"customer": PROFILE, "holdings": {"current_account": 1}},
                           "holdings"),
    "holdings numbers": ({"customer": PROFILE, "holdings": [1, 2]}, "holdings"),
    "holdings null": ({"customer": PROFILE, "holdings": None}, "holdings"),
    "unknown top-level field": ({"customer": PROFILE, "holdings": [], "segment": "vip"},
                                "segment"),
    "limit zero": ({"customer": PROFILE, "limit": 0}, "limit"),
    "limit too big": ({"customer": PROFILE, "limit": 999}, "limit"),
    "limit text": ({"customer": PROFILE, "limit": "abc"}, "limit"),
    "limit boolean": ({"customer": PROFILE, "limit": True}, "limit"),
    "limit a list": ({"customer": PROFILE, "limit": [3]}, "limit"),
    "lang fr": ({"customer": PROFILE, "lang": "fr"}, "lang"),
    "lang a list": ({"customer": PROFILE, "lang": ["en"]}, "lang"),
}


@pytest.mark.parametrize("body, column", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_score_invalid_bodies_are_400(api_client, body, column):
    err = _assert_error(api_client.post("/v1/offers/score", json=body), 400, "bad_request")
    if column is not None:
        assert column in err["message"], err
        named = [err["details"].get("field", ""), *err["details"].get("fields", [])]
        # age or birth_date: a rule of the customer object, named by the message
        assert any(column in n for n in named) or named == ["customer"], err


def test_a_body_error_names_the_field_and_the_value_sent(api_client):
    """A body is not a file: the error names the field (no 'file request, column ...')."""
    err = _assert_error(api_client.post("/v1/offers/score", json={
        "customer": PROFILE, "holdings": ["current_account", "yacht"]}), 400, "bad_request")
    assert err["message"].startswith("holdings[1] must be one of 'current_account', ")
    assert err["message"].endswith(", got 'yacht'")
    assert err["details"] == {"field": "holdings"}
    err = _assert_error(api_client.post("/v1/offers/score", json={
        "customer": {**PROFILE, "age": 200}}), 400, "bad_request")
    assert err == {"code": "bad_request", "message": "customer.age must be at most 130, got 200",
                   "details": {"field": "customer.age"}}


@pytest.mark.parametrize("field", ["intent", "channel", "lang", "limit", "holdings"])
def test_score_null_for_an_optional_field_is_400(api_client, field):
    """Leave a field out for its default; null is not one of its values."""
    err = _assert_error(api_client.post("/v1/offers/score", json={"customer": PROFILE,
                                                                  field: None}), 400)
    assert err["details"] == {"field": field}
    assert err["message"].startswith(field) and err["message"].endswith("got None")


@pytest.mark.parametrize("data, content_type", [
    ("this is not json", "application/json"),
    ("{\"customer\": ", "application/json"),
    ("", "application/json"),
    ("[1, 2]", "application/json"),
    (json.dumps([{"customer": PROFILE}]), "application/json"),
    ("\"customer\"", "application/json"),
    ("null", "application/json"),
    ("42", "application/json"),
    (json.dumps({"customer": PROFILE}), "text/plain"),
    (json.dumps({"customer": PROFILE}), "application/x-www-form-urlencoded"),
], ids=["garbage", "truncated", "empty", "array", "array of objects", "string", "null",
        "number", "text/plain", "form"])
def test_score_body_that_is_not_a_json_object_is_400(api_client, data, content_type):
    resp = api_client.post("/v1/offers/score", data=data, content_type=content_type)
    body = _assert_error(resp, 400, "bad_request")
    assert "JSON object" in body["message"]


def _raw_body(**extra_json: str) -> str:
    """The valid body as JSON text, with extra members given as raw JSON text."""
    text = json.dumps({"customer": PROFILE, "holdings": ["current_account"]})
    return text[:-1] + "".join(f", \"{k}\": {v}" for k, v in extra_json.items()) + "}"


def test_score_huge_limit_number_is_400_not_500(api_client):
    resp = api_client.post("/v1/offers/score", data=_raw_body(limit="1e400"),
                           content_type="application/json")
    _assert_error(resp, 400, "bad_request")


def test_score_fractional_limit_is_400(api_client):
    resp = api_client.post("/v1/offers/score", json={"customer": PROFILE, "limit": 2.5})
    _assert_error(resp, 400, "bad_request")


def test_score_boolean_age_is_400(api_client):
    resp = api_client.post("/v1/offers/score", json={"customer": {**PROFILE, "age": True}})
    assert _assert_error(resp, 400, "bad_request")["details"] == {"field": "customer.age"}


def test_score_whole_numbers_may_be_written_with_a_fraction(api_client):
    """JSON Schema counts 31.0 as an integer, and so does the API."""
    body = {"customer": {**PROFILE, "age": 31.0, "dependants": 1.0}, "limit": 3.0}
    assert len(_json(api_client.post("/v1/offers/score", json=body))["offers"]) == 3


@pytest.mark.parametrize("field, value", [(C.RISK_ASSESSED_ON, "9999-12-31"),
                                          (C.BIRTH_DATE, "1066-10-14"),
                                          (C.BIRTH_DATE, "2001-02-30")])
def test_score_out_of_range_date_is_400_not_500(api_client, field, value):
    customer = {**PROFILE, field: value}
    if field == C.BIRTH_DATE:
        customer.pop(C.AGE)
    resp = api_client.post("/v1/offers/score", json={"customer": customer})
    body = _assert_error(resp, 400, "bad_request")
    assert field in body["message"] and repr(value) in body["message"]
    assert body["details"] == {"field": f"customer.{field}"}


def test_score_deeply_nested_body_is_400_not_500(api_client):
    depth = 20_000
    data = "{\"customer\": " + "[" * depth + "]" * depth + "}"
    resp = api_client.post("/v1/offers/score", data=data, content_type="application/json")
    _assert_error(resp, 400)


# --------------------------------------------------------------------------- model changed on disk


@pytest.fixture(scope="session", params=["all_customers", "joined_customers_only"])
def api_previous_model(request, api_bank, tmp_path_factory):
    """A model trained up to the second-last snapshot, served with the full (newer) data.

    ``all_customers``: ``upto`` as is, every customer in the model (new ones with no holdings).
    ``joined_customers_only``: customers without holdings by then are left out of the model.
    """
    catalog, stages, cat_text, st_text = _model_inputs()
    cutoff = api_bank.snapshots[-2]
    past = upto(api_bank.bank, cutoff)
    if request.param == "joined_customers_only":
        joined = set(past.holdings[C.CUSTOMER_ID].astype(str))
        customers = past.customers[past.customers[C.CUSTOMER_ID].isin(joined)]
        holdings = past.holdings.astype({C.CUSTOMER_ID: str, C.PRODUCT_ID: str})
        folder = tmp_path_factory.mktemp("api_past_data")
        write_bank(BankData(customers, holdings), folder)
        past = load_bank(folder, catalog)
    models = tmp_path_factory.mktemp(f"api_models_{request.param}")
    model = train(past, catalog, stages, TrainConfig(ranker="hybrid"), models, cat_text, st_text,
                  run_evaluation=False)
    app = create_app({"DATA_DIR": str(api_bank.data_dir), "MODELS_DIR": str(models),
                      "MODEL_VERSION": "current", "STATE_DIR": str(models.parent / "state")})
    return request.param, model, app


def _groups(api_bank, model) -> dict[str, list[str]]:
    latest = api_bank.holdings_at(api_bank.snapshots[-1])
    before = api_bank.holdings_at(api_bank.snapshots[-2])
    consent = api_bank.consent()
    groups = {"unchanged": [], "changed": [], "new": []}
    for cid, held in sorted(latest.items()):
        if not consent[cid]:
            continue
        if cid not in before:
            groups["new"].append(cid)
        elif held == before[cid]:
            groups["unchanged"].append(cid)
        else:
            groups["changed"].append(cid)
    return groups


EXPECTED_SOURCE = {"unchanged": "cf", "changed": "cf_fold_in", "new": "cf_fold_in"}


def test_changed_model_sources_over_the_whole_book(api_bank, api_previous_model):
    variant, model, app = api_previous_model
    groups = _groups(api_bank, model)
    assert all(len(g) >= 5 for g in groups.values()), {k: len(v) for k, v in groups.items()}
    in_model = set(model.cf.customers.external_ids)
    assert set(groups["unchanged"] + groups["changed"]) <= in_model
    if variant == "joined_customers_only":
        assert not set(groups["new"]) & in_model, "new customers are unknown to the model"
    else:
        assert set(groups["new"]) <= in_model, "in the model, but with no holdings then"
    service = app.extensions["nbo"]
    book = service.book
    ids = [cid for g in groups.values() for cid in g]
    batch = book.batch(np.array([book.position(cid) for cid in ids]))
    sources = dict(zip(ids, service.engine.ranker.score(batch).sources, strict=True))
    for name, members in groups.items():
        got = {sources[cid] for cid in members}
        assert got == {EXPECTED_SOURCE[name]}, (name, got)


def test_changed_model_sources_over_http(api_bank, api_previous_model, client_with_key):
    _, model, app = api_previous_model
    client = client_with_key(app)
    known = set(_products(client))
    for name, members in _groups(api_bank, model).items():
        for cid in members[:6]:
            result = _json(client.get(f"/v1/customers/{cid}/offers"))
            assert result["source"] == EXPECTED_SOURCE[name], (name, cid)
            assert result["model_version"] == model.version
            _assert_offer_list(result, _held(client, cid), known)
            if name != "unchanged":
                # the CF explanation is about what they hold now
                for offer in result["offers"]:
                    for reason in offer["reasons"]:
                        if reason["code"] == "held_products":
                            assert set(reason["evidence"]["products"]) <= _held(client, cid)
