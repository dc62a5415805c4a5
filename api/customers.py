"""Customers: profile, decisions (offers), why-not, recorded responses, and offers for a
customer described in the request."""

from flask import Blueprint

from .metrics import count_offers
from .requests import LangQuery
from .state import current_requests, current_service
from .validation import body, query

bp = Blueprint("customers", __name__)


@bp.get("/customers/<customer_id>")
def profile(customer_id: str):
    return current_service().profile(customer_id, query(LangQuery).lang)


@bp.get("/customers/<customer_id>/offers")
def offers(customer_id: str):
    q = query(current_requests().decision)
    decision = current_service().offers(customer_id, q.limit, q.lang, channel=q.channel,
                                        intent=q.intent)
    count_offers(decision["offers"])
    return decision


@bp.get("/customers/<customer_id>/offers/<product_id>/why-not")
def why_not(customer_id: str, product_id: str):
    q = query(current_requests().decision)
    return current_service().why_not(customer_id, product_id, q.lang, limit=q.limit,
                                     channel=q.channel, intent=q.intent)


@bp.post("/customers/<customer_id>/responses")
def record_response(customer_id: str):
    new = body(current_requests().new_response, value_code="invalid_response")
    stored = current_service().record_response(customer_id, new.product_id, new.outcome,
                                               new.channel)
    return stored, 201


@bp.get("/customers/<customer_id>/responses")
def list_responses(customer_id: str):
    return {"customer_id": customer_id, "responses": current_service().list_responses(customer_id)}


@bp.post("/offers/score")
def score():
    request = body(current_requests().score)
    customer = {"customer_id": "request", **request.customer.model_dump(exclude_unset=True)}
    decision = current_service().offers_for_profile(
        customer, request.holdings, request.limit, request.lang, channel=request.channel,
        intent=request.intent)
    count_offers(decision["offers"])
    return decision
