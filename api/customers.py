"""Customers: profile, decisions (offers), why-not, recorded responses, and offers for a
customer described in the request."""

from flask import Blueprint

from recommender.data import CUSTOMER_COLUMNS

from .errors import BadRequest
from .metrics import count_offers
from .params import channel_param, intent_param, json_body, lang_param, limit_param
from .state import current_service

bp = Blueprint("customers", __name__)


def _context_params() -> dict:
    return {"channel": channel_param(), "intent": intent_param(current_service().policy.intents)}


@bp.get("/customers/<customer_id>")
def profile(customer_id: str):
    return current_service().profile(customer_id, lang_param())


@bp.get("/customers/<customer_id>/offers")
def offers(customer_id: str):
    limit, lang, context = limit_param(), lang_param(), _context_params()
    decision = current_service().offers(customer_id, limit, lang, **context)
    count_offers(decision["offers"])
    return decision


@bp.get("/customers/<customer_id>/offers/<product_id>/why-not")
def why_not(customer_id: str, product_id: str):
    limit, lang, context = limit_param(), lang_param(), _context_params()
    return current_service().why_not(customer_id, product_id, lang, limit=limit, **context)


@bp.post("/customers/<customer_id>/responses")
def record_response(customer_id: str):
    body = json_body()
    unknown = sorted(set(body) - {"product_id", "outcome", "channel"})
    if unknown:
        raise BadRequest(f"unknown fields {unknown}", fields=unknown)
    missing = [f for f in ("product_id", "outcome", "channel") if f not in body]
    if missing:
        raise BadRequest(f"missing fields {missing}", fields=missing)
    if not all(isinstance(body[f], str) for f in ("product_id", "outcome", "channel")):
        raise BadRequest("product_id, outcome and channel must be strings")
    stored = current_service().record_response(customer_id, body["product_id"], body["outcome"],
                                        body["channel"])
    return stored, 201


@bp.get("/customers/<customer_id>/responses")
def list_responses(customer_id: str):
    return {"customer_id": customer_id, "responses": current_service().list_responses(customer_id)}


@bp.post("/offers/score")
def score():
    body = json_body()
    unknown = sorted(set(body) - {"customer", "holdings", "limit", "lang", "channel", "intent"})
    if unknown:
        raise BadRequest(f"unknown fields {unknown}", fields=unknown)
    customer, holdings = body.get("customer"), body.get("holdings", [])
    if not isinstance(customer, dict):
        raise BadRequest("'customer' must be an object with the customer's profile",
                         field="customer")
    if not isinstance(holdings, list) or not all(isinstance(h, str) for h in holdings):
        raise BadRequest("'holdings' must be a list of product ids", field="holdings")
    unknown = sorted(set(customer) - set(CUSTOMER_COLUMNS))
    if unknown:
        raise BadRequest(f"unknown customer fields {unknown}; allowed: {list(CUSTOMER_COLUMNS)}",
                         field="customer", fields=unknown)
    nested = sorted(k for k, v in customer.items() if isinstance(v, dict | list))
    if nested:
        raise BadRequest(f"customer fields {nested} must be single values", field="customer",
                         fields=nested)
    customer = {"customer_id": "request", **customer}
    limit, lang = limit_param(body.get("limit", "")), lang_param(body.get("lang", "en"))
    context = {"channel": channel_param(body.get("channel", "")),
               "intent": intent_param(current_service().policy.intents, body.get("intent", ""))}
    decision = current_service().offers_for_profile(customer, holdings, limit, lang, **context)
    count_offers(decision["offers"])
    return decision
