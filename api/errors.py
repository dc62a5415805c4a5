"""One JSON error shape for every failure: ``{"code", "message", "details"}``."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from recommender.exceptions import DataValidationError, UnknownCustomerError, UnknownIdError
from recommender.store.database import SchemaOutdatedError, StoreUnavailableError
from recommender.store.responses import ResponseError

from .observability import redacted_traceback, request_id, route_pattern

log = logging.getLogger(__name__)


class BadRequest(Exception):
    """Invalid parameters or body, refused at the edge (400 with ``code``)."""

    def __init__(self, message: str, code: str = "bad_request", **details: Any) -> None:
        super().__init__(message)
        self.message, self.code, self.details = message, code, details


def error_response(status: int, code: str, message: str, details: dict | None = None):
    return jsonify({"code": code, "message": message, "details": details or {}}), status


def unavailable_response(message: str):
    """503 ``store_unavailable`` with ``Retry-After``: the database is away, ask again soon."""
    response, status = error_response(503, "store_unavailable", message)
    response.headers["Retry-After"] = "1"
    return response, status


_LOG_EVERY_S = 60.0
_last_logged = [float("-inf")]


def _log_store_error(exc: Exception) -> None:
    now = time.monotonic()
    if now - _last_logged[0] >= _LOG_EVERY_S:
        _last_logged[0] = now
        log.error("503 store_unavailable: %s", exc)


def register(app: Flask) -> None:
    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest):
        return error_response(400, exc.code, exc.message, exc.details)

    @app.errorhandler(DataValidationError)
    def invalid_data(exc: DataValidationError):
        where = {"field": exc.field} if exc.field else {"column": exc.column,
                                                         "rows": list(exc.rows)}
        return error_response(400, "invalid_input", str(exc), where)

    @app.errorhandler(UnknownCustomerError)
    def unknown_customer(exc: UnknownCustomerError):
        return error_response(404, "unknown_customer", str(exc))

    @app.errorhandler(UnknownIdError)
    def unknown_id(exc: UnknownIdError):
        return error_response(404, "unknown_product", str(exc))

    @app.errorhandler(ResponseError)
    def invalid_response(exc: ResponseError):
        return error_response(400, "invalid_response", str(exc))

    @app.errorhandler(StoreUnavailableError)
    @app.errorhandler(SchemaOutdatedError)
    def store_unavailable(exc: StoreUnavailableError | SchemaOutdatedError):
        # The database is away (or not upgraded): fail fast, the caller retries. Logged once
        # a minute at most per worker, not once per request of an outage.
        _log_store_error(exc)
        return unavailable_response("the service's database cannot be used now; "
                                    "try again shortly")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        response, status = error_response(exc.code or 500, code, exc.description or exc.name)
        for header, value in exc.get_headers():  # e.g. Allow on 405, kept as HTTP requires
            if header.lower() != "content-type":
                response.headers[header] = value
        return response, status

    @app.errorhandler(Exception)
    def internal_error(exc: Exception):
        # Named by route and request id, with the message withheld: an exception's message
        # (or the path) may quote a customer id or profile values.
        log.error("unhandled %s in %s %s (request_id %s)\n%s", type(exc).__qualname__,
                  request.method, route_pattern(), request_id(), redacted_traceback(exc))
        return error_response(500, "internal_error", "internal error; see the server log")
