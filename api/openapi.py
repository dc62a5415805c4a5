"""The OpenAPI 3.1 document, served at ``GET /openapi.json``, generated from what the app keeps
to: the request models the views validate with (``api.requests``), the answer models
(``api.schemas``) and the permission table (``api.auth``). Nothing in it is written twice.

Product ids and intents are those of the catalog and policy being served, so the document is
built for the request models of the current service: once per load or reload. A test compares
its operations with the app's URL map and runs schemathesis, with every check, against the app.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from flask import Blueprint
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from recommender.store.keys import ROLES

from . import schemas as S
from .auth import allowed_roles
from .requests import LangQuery, RequestModels
from .state import current_requests

bp = Blueprint("openapi", __name__)

Schema = dict[str, Any]
_REF = "#/components/schemas/{model}"
STR: Schema = {"type": "string"}
_ANSWERS = (S.Error, S.Health, S.Ready, S.Reload, S.ProductList, S.LifeStageList, S.ModelInfo,
            S.Profile, S.Decision, S.WhyNot, S.Response, S.ResponseList)


class _Generator(GenerateJsonSchema):
    """pydantic's JSON Schema as the document wants it: no title on every field, and a field
    that may be left out but is never null gets no ``default: null``."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def default_schema(self, schema: Any) -> Schema:
        if schema.get("default", ...) is None:
            return self.generate_inner(schema["schema"])
        return super().default_schema(schema)


def _ref(model: type[BaseModel]) -> Schema:
    return {"$ref": _REF.format(model=model.__name__)}


def _parameter(name: str, where: str, schema: Schema, example: Any = None) -> Schema:
    schema = dict(schema)
    parameter = {"name": name, "in": where, "required": where == "path",
                 "description": schema.pop("description", ""), "schema": schema}
    if example is not None:
        parameter["example"] = example
    return parameter


def _query(model: type[BaseModel]) -> list[Schema]:
    """The query parameters of ``model``, one per field."""
    properties = model.model_json_schema(ref_template=_REF, schema_generator=_Generator)
    return [_parameter(name, "query", schema)
            for name, schema in properties["properties"].items()]


_REQUEST_ID = _parameter("X-Request-ID", "header", {
    **STR, "description": "kept as the request id if 1-64 of A-Z a-z 0-9 . _ : - (starting with "
    "a letter or digit); otherwise a new id is made"})
_CUSTOMER_ID = _parameter("customer_id", "path", {
    "type": "string", "minLength": 1, "description": "the bank's customer id"}, "C00000001")


def _response(description: str, schema: Schema | None = None,
              media_type: str = "application/json") -> Schema:
    response: Schema = {"description": description,
                        "headers": {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}}}
    if schema is not None:
        response["content"] = {media_type: {"schema": schema}}
    return response


def _error(description: str) -> Schema:
    return _response(description, _ref(S.Error))


AUTH_ERRORS = {
    "401": _error("no key, an unknown key (code unauthorized) or an expired one (key_expired)"),
    "403": _error("the key's role may not call this route (code forbidden)"),
    "503": _error("the API keys file cannot be read (code keys_unavailable)"),
}
BAD_REQUEST = {"400": _error(
    "a parameter or body field that is missing, unknown, of the wrong type or not allowed "
    "(code bad_request; invalid_response for a response's values; invalid_input for a "
    "customer the data rules refuse); details name the parameter or field")}
NOT_FOUND = {"404": _error("unknown customer (unknown_customer) or product (unknown_product)")}


def _operation(endpoint: str, summary: str, responses: Schema,
               parameters: list[Schema] | None = None, body: type[BaseModel] | None = None, *,
               public: bool = False) -> Schema:
    """One operation of the Flask view ``endpoint``, whose roles apply unless ``public``."""
    operation: Schema = {"operationId": endpoint, "summary": summary,
                         "parameters": [*(parameters or []), _REQUEST_ID],
                         "responses": responses}
    if public:
        operation["security"] = []
    else:
        roles = sorted(allowed_roles(endpoint), key=ROLES.index)
        operation["description"] = f"Roles: {', '.join(roles)}."
        operation["x-roles"] = roles
        operation["responses"] = {**responses, **AUTH_ERRORS}
    if body is not None:
        operation["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": _ref(body)}}}
    return operation


def _paths(requests: RequestModels) -> Schema:
    lang, decision = _query(LangQuery), _query(requests.decision)
    product_id = _parameter("product_id", "path", TypeAdapter(requests.product_id).json_schema(
        schema_generator=_Generator))
    customer_errors = {**BAD_REQUEST, **NOT_FOUND}
    return {
        "/healthz": {"get": _operation("health.healthz", "Liveness: the process answers", {
            "200": _response("alive; names the model if one is loaded", _ref(S.Health))},
            public=True)},
        "/readyz": {"get": _operation("health.readyz", "Readiness: a model and book are loaded", {
            "200": _response("ready to answer", _ref(S.Ready)),
            "503": _error("not ready: no model or book loaded (code not_ready)")}, public=True)},
        "/metrics": {"get": _operation("metrics.metrics_view", "Prometheus metrics", {
            "200": _response("Prometheus text exposition", STR, "text/plain")}, public=True)},
        "/openapi.json": {"get": _operation("openapi.document", "This document", {
            "200": _response("the OpenAPI document", {"type": "object"})}, public=True)},
        "/teller/": {"get": _operation("teller.page", "The teller console (an HTML page)", {
            "200": _response("the page; its script asks for the teller's key", STR,
                             "text/html")}, public=True)},
        "/v1/products": {"get": _operation("products.list_products", "The product catalog", {
            "200": _response("every product", _ref(S.ProductList)), **BAD_REQUEST}, lang)},
        "/v1/life-stages": {"get": _operation("products.list_life_stages", "Life stages", {
            "200": _response("life stages with their bundles and customer counts",
                             _ref(S.LifeStageList)), **BAD_REQUEST}, lang)},
        "/v1/model": {"get": _operation("products.model_info", "The model being served", {
            "200": _response("model version, training data, metrics and policy version",
                             _ref(S.ModelInfo))})},
        "/v1/customers/{customer_id}": {"get": _operation("customers.profile", "A customer", {
            "200": _response("life stage, holdings and the attributes the rules use",
                             _ref(S.Profile)), **customer_errors}, [_CUSTOMER_ID, *lang])},
        "/v1/customers/{customer_id}/offers": {"get": _operation(
            "customers.offers", "Next-best offers for a customer of the book", {
                "200": _response("the decision: service actions, then explained offers",
                                 _ref(S.Decision)), **customer_errors},
            [_CUSTOMER_ID, *decision])},
        "/v1/customers/{customer_id}/offers/{product_id}/why-not": {"get": _operation(
            "customers.why_not", "Why a product is not offered", {
                "200": _response("which rules remove the product, or why it ranks lower",
                                 _ref(S.WhyNot)), **customer_errors},
            [_CUSTOMER_ID, product_id, *decision])},
        "/v1/customers/{customer_id}/responses": {
            "post": _operation("customers.record_response", "Record a response to an offer", {
                "201": _response("the response as stored", _ref(S.Response)),
                **customer_errors}, [_CUSTOMER_ID], requests.new_response),
            "get": _operation("customers.list_responses", "A customer's recorded responses", {
                "200": _response("newest first", _ref(S.ResponseList)), **customer_errors},
                [_CUSTOMER_ID])},
        "/v1/offers/score": {"post": _operation(
            "customers.score", "Offers for a customer described in the request", {
                "200": _response("the decision for the customer described", _ref(S.Decision)),
                **BAD_REQUEST}, body=requests.score)},
        "/admin/reload": {"post": _operation("admin.reload", "Reload the current model", {
            "200": _response("the model version now served, reloaded or unchanged",
                             _ref(S.Reload)),
            "409": _error("the new version is missing, corrupt or fails its smoke test; the "
                          "previous model is still served")})},
    }


@lru_cache(maxsize=2)  # the served models, and the previous ones during a reload
def build_document(requests: RequestModels) -> Schema:
    """The document for these request models (the same object for the same models)."""
    models = [(m, "serialization") for m in _ANSWERS] + [
        (requests.new_response, "validation"), (requests.score, "validation")]
    _, components = models_json_schema(models, ref_template=_REF, schema_generator=_Generator)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Next-best-offer API", "version": "1",
                 "description": "Next-best offers for a bank's customers, with reasons in "
                                "English and Chinese. Every answer carries an X-Request-ID "
                                "header; every error has the shape {code, message, details}."},
        "security": [{"bearerAuth": []}],
        "paths": _paths(requests),
        "components": {
            "schemas": components["$defs"],
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "an API key from `nbo keys create`"}},
            "headers": {"RequestId": {"required": True, "schema": STR,
                                      "description": "the request id, also in the access log"}},
        },
    }


@bp.get("/openapi.json")
def document():
    return build_document(current_requests())
