"""Who may call what: API keys sent as ``Authorization: Bearer <key>``, and roles per route.

``ROUTE_ROLES`` is the whole permission matrix, by Flask endpoint. A route that is not in it
is admin-only, so a new route is never open by accident; the open paths (health, metrics, the
teller page, which sends the key from its own script) are listed in ``OPEN_PATHS`` and under
``OPEN_PREFIX``. Logs name the key id, its role and the route template
(``/v1/customers/<customer_id>``), never the path with the customer id, nor the key.
"""

from __future__ import annotations

import logging

from flask import Flask, current_app, g, request

from recommender.store.database import StoreUnavailableError
from recommender.store.keys import ROLES, ExpiredKeyError, InvalidKeyError, KeyStore

from .errors import error_response, unavailable_response

log = logging.getLogger(__name__)

ANY_ROLE = frozenset(ROLES)
ADMIN_ONLY = frozenset({"admin"})
_TELLER_MOBILE = frozenset({"teller", "mobile", "admin"})
_TELLER = frozenset({"teller", "admin"})

ROUTE_ROLES: dict[str, frozenset[str]] = {
    "products.list_products": ANY_ROLE,               # GET  /v1/products
    "products.list_life_stages": ANY_ROLE,            # GET  /v1/life-stages
    "products.model_info": ANY_ROLE,                  # GET  /v1/model
    "customers.profile": _TELLER_MOBILE,              # GET  /v1/customers/<id>
    "customers.offers": _TELLER_MOBILE,               # GET  /v1/customers/<id>/offers
    "customers.why_not": _TELLER,                     # GET  .../offers/<product>/why-not
    "customers.record_response": _TELLER_MOBILE,      # POST /v1/customers/<id>/responses
    "customers.list_responses": _TELLER,              # GET  /v1/customers/<id>/responses
    "customers.score": frozenset({"teller", "campaign", "admin"}),  # POST /v1/offers/score
}                                                     # anything else, /admin/* too: ADMIN_ONLY

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
OPEN_PREFIX = "/teller"
EXTENSION = "nbo_keys"


def allowed_roles(endpoint: str) -> frozenset[str]:
    """The roles that may call ``endpoint``; admin only for any endpoint not in the table."""
    return ROUTE_ROLES.get(endpoint, ADMIN_ONLY)


def is_open(path: str) -> bool:
    """Whether ``path`` is answered without a key."""
    return path in OPEN_PATHS or path == OPEN_PREFIX or path.startswith(OPEN_PREFIX + "/")


def init_app(app: Flask) -> None:
    """Check every request against the API keys in the service's database.

    No keys is not fatal (the health routes still answer), but every protected route answers
    401 until a key is created; a database away at start is logged by the store, and
    protected routes answer 503 until it answers.
    """
    store = KeyStore(app.extensions["nbo"].responses.database)
    try:
        store.refresh()
    except StoreUnavailableError:
        pass  # logged by the store, once
    else:
        if not len(store):
            log.warning("no API keys in %s: every protected route answers 401. Create one "
                        "with: nbo keys create --role admin --database URL",
                        store.database.name)
    app.extensions[EXTENSION] = store
    app.before_request(authenticate_request)


def _unauthorized(code: str, message: str):
    response, status = error_response(401, code, message)
    response.headers["WWW-Authenticate"] = "Bearer"
    return response, status


def authenticate_request():
    """``before_request``: sets ``g.api_key``, or answers 401/403 (503 before the keys could
    ever be read)."""
    if is_open(request.path):
        return None
    if request.routing_exception is not None or request.url_rule is None:
        return None  # no such route (404) or method (405): Flask answers that as usual
    route = request.url_rule.rule  # the template: no customer id in the logs or the answer
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return _unauthorized("unauthorized",
                             "send an API key as 'Authorization: Bearer <key>'")
    try:
        key = current_app.extensions[EXTENSION].authenticate(token)
    except ExpiredKeyError as exc:
        log.warning("401 %s %s: API key %s (role %s) has expired", request.method, route,
                    exc.key.id, exc.key.role)
        return _unauthorized("key_expired",
                             "the API key has expired; ask an administrator for a new one")
    except InvalidKeyError:
        log.warning("401 %s %s: unknown API key", request.method, route)
        return _unauthorized("unauthorized", "the API key is not valid")
    except StoreUnavailableError:  # already logged by the store, once
        return unavailable_response("the API keys cannot be read now; try again shortly")
    g.api_key = key
    allowed = allowed_roles(request.endpoint)
    if key.role not in allowed:
        log.warning("403 %s %s: API key %s has role %s, allowed: %s", request.method, route,
                    key.id, key.role, sorted(allowed))
        return error_response(403, "forbidden",
                              f"role {key.role!r} may not call {request.method} {route}",
                              {"role": key.role, "route": route, "method": request.method,
                               "allowed_roles": sorted(allowed)})
    return None
