"""Per request: a request id, one JSON access-log line and the request metrics.

The request id comes from a well-formed incoming ``X-Request-ID`` (so a gateway's id follows
the request) or is made here, and goes back in the ``X-Request-ID`` header of every answer,
errors included. The access line goes to the ``api.access`` logger as one JSON object.

Customer ids and paths are never logged: a request is named by its URL rule, and a customer
in the URL by the decision log's keyed hash (the same value the decision log stores, so an
access line can be matched to its decision; a bare SHA-256 of an id could be reversed by
hashing every possible id).
"""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
import uuid
from datetime import UTC, datetime
from typing import Any, TextIO

from flask import Flask, Response, g, request

from .metrics import UNMATCHED_ROUTE, current_metrics
from .state import loaded_service

REQUEST_ID_HEADER = "X-Request-ID"
# Ids from outside are echoed into logs and headers: short, and only characters that cannot
# break a log line or a header.
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")

# Any token is a valid HTTP method; label values must stay few, so others are "OTHER".
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})

access_log = logging.getLogger("api.access")


def request_id() -> str:
    """This request's id: the caller's ``X-Request-ID`` if well-formed, else a new one."""
    if "request_id" not in g:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
    return g.request_id


def route_pattern() -> str:
    """The URL rule that matched (``/v1/customers/<customer_id>``), never the path itself."""
    rule = request.url_rule
    return rule.rule if rule is not None else UNMATCHED_ROUTE


def customer_hash() -> str | None:
    """The keyed hash of the URL's ``customer_id``, or None when the URL has none."""
    customer_id = (request.view_args or {}).get("customer_id")
    service = loaded_service()
    if customer_id is None or service is None:
        return None
    return service.decisions.customer_hash(str(customer_id))


def redacted_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` with exception types but no messages: messages may quote
    customer ids or profile values."""
    parts: list[str] = []
    for te in _chain(traceback.TracebackException.from_exception(exc)):
        parts.append("Traceback (most recent call last):\n" + "".join(te.stack.format()))
        parts.append(f"{te.exc_type.__module__}.{te.exc_type.__qualname__} (message withheld)\n"
                     if te.exc_type is not None else "(unknown exception)\n")
    return "".join(parts)


def _chain(te: traceback.TracebackException) -> list[traceback.TracebackException]:
    """The exception and its causes, oldest first, as Python prints them."""
    chain, seen = [], set()
    current: traceback.TracebackException | None = te
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__
                                        else current.__context__)
    return chain[::-1]


def _start() -> None:
    g.nbo_started = time.perf_counter()
    request_id()


def _finish(response: Response) -> Response:
    started = g.pop("nbo_started", None)
    seconds = time.perf_counter() - started if started is not None else 0.0
    rid = request_id()
    response.headers[REQUEST_ID_HEADER] = rid
    route, status = route_pattern(), response.status_code
    method = request.method if request.method in _METHODS else "OTHER"
    metrics = current_metrics()
    metrics.observe_request(route, method, status, seconds)
    service = loaded_service()
    if service is not None:  # every worker that answers shows the model it serves
        metrics.set_model_version(service.engine.model.version)
    entry: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "request_id": rid, "method": method, "route": route, "status": status,
        "duration_ms": round(seconds * 1000, 3),
    }
    api_key = g.get("api_key")
    if api_key is not None:
        entry["key_id"], entry["role"] = api_key.id, api_key.role
    hashed = customer_hash()
    if hashed is not None:
        entry["customer_hash"] = hashed
    access_log.info(json.dumps(entry, ensure_ascii=False))
    return response


def configure_access_log(stream: TextIO | None = None) -> None:
    """For entry points: access lines as bare JSON objects, one per line (stderr by default),
    whatever format the other loggers use, ready for a log shipper."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.handlers[:] = [handler]
    access_log.setLevel(logging.INFO)
    access_log.propagate = False


def register(app: Flask) -> None:
    """Install the hooks first in line, whatever else registers before-request hooks (an
    authentication hook that answers 401 must still get a request id and an access line)."""
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    # after-request hooks run last-registered first: at the front, this one runs last and
    # sees the final status and headers.
    app.after_request_funcs.setdefault(None, []).insert(0, _finish)
