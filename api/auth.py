"""Who may call what: API keys sent as ``Authorization: Bearer <key>``, and roles per route.

``ROUTE_ROLES`` is the whole permission matrix, by Flask endpoint. A route that is not in it
is admin-only, so a new route is never open by accident; the open paths (health, metrics, the
teller page, which sends the key from its own script) are listed in ``OPEN_PATHS`` and under
``OPEN_PREFIX``. Logs name the key id, its role and the route template
(``/v1/customers/<customer_id>``), never the path with the customer id, nor the key.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask, current_app, g, request

from recommender.store.keys import ROLES, ExpiredKeyError, InvalidKeyError, KeysFileError, KeyStore

from .errors import error_response

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
    """Load the keys file named by ``API_KEYS_FILE`` and check every request against it.

    A missing file is not fatal (the health routes still answer), but every protected route
    answers 401 until a key is created; a malformed file stops the app from starting.
    """
    path = Path(app.config["API_KEYS_FILE"])
    store = KeyStore(path)
    if not store.exists:
        log.warning("API keys file %s does not exist: every protected route answers 401. "
                    "Create a key with: nbo keys create --role admin --file %s", path, path)
    elif not len(store):
        log.warning("API keys file %s holds no keys: every protected route answers 401", path)
    app.extensions[EXTENSION] = store
    app.before_request(authenticate_request)


def _unauthorized(code: str, message: str):
    response, status = error_response(401, code, message)
    response.headers["WWW-Authenticate"] = "Bearer"
    return response, status


def authenticate_request():
    """``before_request``: sets ``g.api_key``, or answers 401/403 (503 if the file broke)."""
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
    except KeysFileError:  # already logged by the store, with the file and the entry
        return error_response(503, "keys_unavailable",
                              "the API keys file cannot be read; see the server log")
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
