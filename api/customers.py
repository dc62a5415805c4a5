"""Customers: profile, ranked offers, and offers for a customer described in the request."""

from flask import Blueprint, current_app

from recommender.data import CUSTOMER_COLUMNS

from .errors import BadRequest
from .params import json_body, lang_param, limit_param

bp = Blueprint("customers", __name__)


@bp.get("/customers/<customer_id>")
def profile(customer_id: str):
    return current_app.extensions["nbo"].profile(customer_id, lang_param())


@bp.get("/customers/<customer_id>/offers")
def offers(customer_id: str):
    limit, lang = limit_param(), lang_param()
    return current_app.extensions["nbo"].offers(customer_id, limit, lang)


@bp.post("/offers/score")
def score():
    body = json_body()
    unknown = sorted(set(body) - {"customer", "holdings", "limit", "lang"})
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
    return current_app.extensions["nbo"].offers_for_profile(customer, holdings, limit, lang)
