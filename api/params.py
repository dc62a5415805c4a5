"""Validation of query parameters and JSON bodies at the edge of the API."""

from __future__ import annotations

from typing import Any

from flask import request

from recommender.service import LANGUAGES, MAX_OFFERS

from .errors import BadRequest

DEFAULT_LIMIT = 5


def limit_param(value: Any = None) -> int:
    raw = request.args.get("limit") if value is None else value
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if isinstance(raw, bool):
        raise BadRequest("limit must be a whole number", parameter="limit")
    try:
        limit = int(raw)
    except (TypeError, ValueError):
        raise BadRequest(f"limit must be a whole number, got {raw!r}", parameter="limit") from None
    if not 1 <= limit <= MAX_OFFERS:
        raise BadRequest(f"limit must be between 1 and {MAX_OFFERS}, got {limit}",
                         parameter="limit")
    return limit


def lang_param(value: Any = None) -> str:
    lang = request.args.get("lang", "en") if value is None else value
    if lang not in LANGUAGES:
        raise BadRequest(f"lang must be one of {list(LANGUAGES)}, got {lang!r}", parameter="lang")
    return lang


def json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object "
                         "(Content-Type: application/json)")
    return body
