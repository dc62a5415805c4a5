"""The OpenAPI 3.1 description of the HTTP API, served at ``GET /openapi.json``.

Written by hand, next to the views, from the same constants the views validate with
(languages, channels, outcomes, sources, limits), so the two cannot disagree on those. A test
compares the documented operations with the app's URL map and runs schemathesis against the
app, so a route, a field or a status code the document does not describe fails the tests.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from recommender import columns as C
from recommender.keys import ROLES
from recommender.offers import NOTICES
from recommender.ranker import SOURCES
from recommender.responses import OUTCOMES
from recommender.service import CHANNELS, LANGUAGES, MAX_OFFERS

from .auth import allowed_roles
from .params import DEFAULT_LIMIT

bp = Blueprint("openapi", __name__)

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """A closed object: a field the document does not name is a drift the tests catch."""
    return {"type": "object", "properties": {**required, **(optional or {})},
            "required": list(required), "additionalProperties": False}


def _array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


STR, INT, NUM, BOOL = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {
    "type": "boolean"}
ANY_OBJECT: Schema = {"type": "object"}
DATE, DATE_TIME = {"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}
_TEXTS = {"text": STR, "text_en": STR, "text_zh": STR}
_NAMES = {"name": STR, "name_en": STR, "name_zh": STR}

SCHEMAS: dict[str, Schema] = {
    "Error": _object({"code": STR, "message": STR, "details": ANY_OBJECT}),
    "Health": _object({"status": {"const": "ok"}},
                      {"model_version": STR, "customers": {"type": "integer", "minimum": 0}}),
    "Ready": _object({"status": {"const": "ready"}, "model_version": STR}),
    "Reload": _object({"status": {"enum": ["reloaded", "unchanged"]}, "model_version": STR,
                       "previous_version": STR}),
    "Product": _object({
        "product_id": STR, **_NAMES, "category": STR,
        "risk_grade": {"enum": list(C.PRODUCT_RISK_GRADES)}, "value_weight": NUM,
        "eligibility": _object({"min_age": INT, "max_age": INT, "min_income": NUM,
                                "residency": _array({"enum": list(C.RESIDENCIES)})}),
        "prerequisites": _array(STR), "exclusions": _array(STR), "life_stages": _array(STR),
        "talking_points": _array(STR)}),
    "LifeStageRef": _object({"id": STR, **_NAMES}),
    "LifeStage": _object({"id": STR, **_NAMES, "description": STR, "rules": ANY_OBJECT,
                          "bundle": _array(STR), "customers": {"type": "integer", "minimum": 0}}),
    "Model": _object({
        "version": STR, "created_at": _nullable(STR), "data": _nullable(ANY_OBJECT),
        "served": _nullable(STR),
        "metrics": _object({k: {} for k in ("k", "served", "test_customers", "methods",
                                            "calibration")}),
        "policy_version": STR}),
    "Profile": _object({
        "customer_id": STR, "life_stage": _ref("LifeStageRef"),
        C.AGE: {"type": "integer", "minimum": 0}, C.INCOME: _nullable(NUM),
        C.MARITAL_STATUS: {"enum": list(C.MARITAL_STATUSES)},
        C.DEPENDANTS: {"type": "integer", "minimum": 0},
        C.TENURE_MONTHS: {"type": "integer", "minimum": 0}, C.SEGMENT: STR,
        C.RISK_GRADE: {"enum": list(C.RISK_GRADES)}, C.RESIDENCY: {"enum": list(C.RESIDENCIES)},
        C.CONSENT_PROFILING: BOOL, C.VULNERABLE: BOOL, C.OPEN_COMPLAINT: BOOL,
        "holdings": _array(_object({"product_id": STR, "name": STR})),
        "as_of": _nullable(DATE)},
        {C.RISK_ASSESSED_ON: _nullable(DATE)}),  # protected attributes (gender) never appear
    "Reason": _object({"code": STR, **_TEXTS, "evidence": ANY_OBJECT}),
    "Offer": _object({
        "product_id": STR, **_NAMES, "category": STR,
        "risk_grade": {"enum": list(C.PRODUCT_RISK_GRADES)}, "score": NUM,
        "rank": {"type": "integer", "minimum": 1}, "source": {"enum": list(SOURCES)},
        "propensity": NUM, "value_weight": NUM, "priority": NUM, "expected_gain": NUM,
        "reasons": _array(_ref("Reason")), "talking_points": _array(STR)}),
    "Decision": _object({
        "customer_id": STR, "life_stage": _ref("LifeStageRef"),
        "source": {"enum": list(SOURCES)}, "personalised": BOOL,
        "context": _object({"channel": {"enum": list(CHANNELS)}, "intent": _nullable(STR)}),
        "notices": _array(_object({"code": {"enum": list(NOTICES)}, **_TEXTS})),
        "service_actions": _array(_object({"id": STR, "kind": {"const": "service_action"},
                                           **_NAMES, **_TEXTS})),
        "offers": _array(_ref("Offer")), "model_version": STR, "policy_version": STR,
        "decision_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}),
    "WhyNot": _object({
        "customer_id": STR, "product_id": STR, "name": STR, "offered": BOOL,
        "rank": _nullable({"type": "integer", "minimum": 1}), "propensity": NUM,
        "rules": _array(_object({"code": STR, **_TEXTS}))}),
    "Response": _object({"id": INT, "customer_id": STR, "product_id": STR,
                         "outcome": {"enum": list(OUTCOMES)}, "channel": {"enum": list(CHANNELS)},
                         "recorded_at": DATE_TIME}),
    "NewResponse": _object({"product_id": {"type": "string", "minLength": 1,
                                           "examples": ["mortgage"]},
                            "outcome": {"enum": list(OUTCOMES)},
                            "channel": {"enum": list(CHANNELS)}}),
    # The customer as the bank's extract describes one; age or birth_date is needed.
    "CustomerProfile": {
        **_object({
            C.INCOME: _nullable({"type": "number", "minimum": 0, "maximum": 1e12}),
            C.MARITAL_STATUS: {"enum": list(C.MARITAL_STATUSES)},
            C.DEPENDANTS: {"type": "integer", "minimum": 0, "maximum": 30},
            C.TENURE_MONTHS: {"type": "integer", "minimum": 0, "maximum": 1500},
            C.SEGMENT: {"type": "string", "minLength": 1},
            C.RISK_GRADE: {"enum": list(C.RISK_GRADES)},
            C.RESIDENCY: {"enum": list(C.RESIDENCIES)}, C.CONSENT_PROFILING: BOOL}, {
            C.CUSTOMER_ID: {"type": "string", "minLength": 1},
            C.AGE: {"type": "integer", "minimum": 0, "maximum": 130}, C.BIRTH_DATE: DATE,
            C.RISK_ASSESSED_ON: _nullable(DATE), C.VULNERABLE: BOOL, C.OPEN_COMPLAINT: BOOL,
            C.GENDER: {"type": "string", "description": "kept for fairness audits only; "
                       "never used by the rules or the models"}}),
        "anyOf": [{"required": [C.AGE]}, {"required": [C.BIRTH_DATE]}]},
    "ScoreRequest": _object({"customer": _ref("CustomerProfile")}, {
        "holdings": {**_array(STR), "description": "product ids the customer holds"},
        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_OFFERS},
        "lang": {"enum": list(LANGUAGES)}, "channel": {"enum": list(CHANNELS)},
        "intent": STR}),
}


def _parameter(name: str, where: str, schema: Schema, description: str,
               example: Any = None) -> dict[str, Any]:
    parameter = {"name": name, "in": where, "required": where == "path", "schema": schema,
                 "description": description}
    if example is not None:
        parameter["example"] = example
    return parameter


PARAMETERS = {
    "customer_id": _parameter("customer_id", "path", {"type": "string", "minLength": 1},
                              "the bank's customer id", "C00000001"),
    "product_id": _parameter("product_id", "path", {"type": "string", "minLength": 1},
                             "a product id of the catalog", "mortgage"),
    "lang": _parameter("lang", "query", {"enum": list(LANGUAGES), "default": "en"},
                       "language of names and texts (the _en and _zh fields are always there)"),
    "limit": _parameter("limit", "query", {"type": "integer", "minimum": 1,
                                           "maximum": MAX_OFFERS, "default": DEFAULT_LIMIT},
                        "at most this many sales offers"),
    "channel": _parameter("channel", "query", {"enum": list(CHANNELS)},
                          "where the offer will be made (default: the policy's)"),
    "intent": _parameter("intent", "query", STR,
                         "what the customer came for, one of the policy's intents"),
    "request_id": _parameter("X-Request-ID", "header", STR,
                             "kept as the request id if 1-64 of A-Z a-z 0-9 . _ : - (starting "
                             "with a letter or digit); otherwise a new id is made"),
}


def _json(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _response(description: str, schema: Schema | None = None,
              media_type: str = "application/json") -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "headers": {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}}}
    if schema is not None:
        response["content"] = {media_type: {"schema": schema}}
    return response


def _error(description: str) -> dict[str, Any]:
    return _response(description, _ref("Error"))


AUTH_ERRORS = {
    "401": _error("no key, an unknown key (code unauthorized) or an expired one (key_expired)"),
    "403": _error("the key's role may not call this route (code forbidden)"),
    "503": _error("the API keys file cannot be read (code keys_unavailable)"),
}
BAD_REQUEST = {"400": _error("invalid parameters or body (code bad_request, invalid_input or "
                             "invalid_response); details name the parameter")}
NOT_FOUND = {"404": _error("unknown customer (unknown_customer) or product (unknown_product)")}


def _operation(endpoint: str, summary: str, responses: dict[str, Any],
               parameters: tuple[str, ...] = (), body: str | None = None, *,
               public: bool = False) -> dict[str, Any]:
    """One operation of the Flask view ``endpoint``, whose roles apply unless ``public``."""
    operation: dict[str, Any] = {
        "operationId": endpoint, "summary": summary,
        "parameters": [PARAMETERS[p] for p in (*parameters, "request_id")],
        "responses": responses,
    }
    if public:
        operation["security"] = []
    else:
        roles = sorted(allowed_roles(endpoint), key=ROLES.index)
        operation["description"] = f"Roles: {', '.join(roles)}."
        operation["x-roles"] = roles
        operation["responses"] = {**responses, **AUTH_ERRORS}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": _json(_ref(body))}
    return operation


_CONTEXT = ("limit", "lang", "channel", "intent")
_CUSTOMER_ERRORS = {**BAD_REQUEST, **NOT_FOUND}

PATHS = {
    "/healthz": {"get": _operation("health.healthz", "Liveness: the process answers", {
        "200": _response("alive; names the model if one is loaded", _ref("Health"))},
        public=True)},
    "/readyz": {"get": _operation("health.readyz", "Readiness: a model and book are loaded", {
        "200": _response("ready to answer", _ref("Ready")),
        "503": _error("not ready: no model or book loaded (code not_ready)")}, public=True)},
    "/metrics": {"get": _operation("metrics.metrics_view", "Prometheus metrics", {
        "200": _response("Prometheus text exposition", STR, "text/plain")}, public=True)},
    "/openapi.json": {"get": _operation("openapi.document", "This document", {
        "200": _response("the OpenAPI document", ANY_OBJECT)}, public=True)},
    "/teller/": {"get": _operation("teller.page", "The teller console (an HTML page)", {
        "200": _response("the page; its script asks for the teller's key", STR, "text/html")},
        public=True)},
    "/v1/products": {"get": _operation("products.list_products", "The product catalog", {
        "200": _response("every product", _object({"products": _array(_ref("Product"))})),
        **BAD_REQUEST}, ("lang",))},
    "/v1/life-stages": {"get": _operation("products.list_life_stages", "Life stages", {
        "200": _response("life stages with their bundles and customer counts",
                         _object({"life_stages": _array(_ref("LifeStage"))})),
        **BAD_REQUEST}, ("lang",))},
    "/v1/model": {"get": _operation("products.model_info", "The model being served", {
        "200": _response("model version, training data, metrics and policy version",
                         _ref("Model"))})},
    "/v1/customers/{customer_id}": {"get": _operation("customers.profile", "A customer", {
        "200": _response("life stage, holdings and the attributes the rules use",
                         _ref("Profile")), **_CUSTOMER_ERRORS}, ("customer_id", "lang"))},
    "/v1/customers/{customer_id}/offers": {"get": _operation(
        "customers.offers", "Next-best offers for a customer of the book", {
            "200": _response("the decision: service actions, then explained offers",
                             _ref("Decision")), **_CUSTOMER_ERRORS},
        ("customer_id", *_CONTEXT))},
    "/v1/customers/{customer_id}/offers/{product_id}/why-not": {"get": _operation(
        "customers.why_not", "Why a product is not offered", {
            "200": _response("which rules remove the product, or why it ranks lower",
                             _ref("WhyNot")), **_CUSTOMER_ERRORS},
        ("customer_id", "product_id", *_CONTEXT))},
    "/v1/customers/{customer_id}/responses": {
        "post": _operation("customers.record_response", "Record a response to an offer", {
            "201": _response("the response as stored", _ref("Response")),
            **_CUSTOMER_ERRORS}, ("customer_id",), "NewResponse"),
        "get": _operation("customers.list_responses", "A customer's recorded responses", {
            "200": _response("newest first", _object({
                "customer_id": STR, "responses": _array(_ref("Response"))})),
            **_CUSTOMER_ERRORS}, ("customer_id",))},
    "/v1/offers/score": {"post": _operation(
        "customers.score", "Offers for a customer described in the request", {
            "200": _response("the decision for the customer described", _ref("Decision")),
            **BAD_REQUEST}, body="ScoreRequest")},
    "/admin/reload": {"post": _operation("admin.reload", "Reload the current model", {
        "200": _response("the model version now served, reloaded or unchanged",
                         _ref("Reload")),
        "409": _error("the new version is missing, corrupt or fails its smoke test; the "
                      "previous model is still served")})},
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Next-best-offer API", "version": "1",
             "description": "Next-best offers for a bank's customers, with reasons in English "
                            "and Chinese. Every answer carries an X-Request-ID header; every "
                            "error has the shape {code, message, details}."},
    "security": [{"bearerAuth": []}],
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                           "description": "an API key from `nbo keys create`"}},
        "headers": {"RequestId": {"required": True, "schema": STR,
                                  "description": "the request id, also in the access log"}},
    },
}


@bp.get("/openapi.json")
def document():
    return DOCUMENT
