"""Validation of query parameters and JSON bodies at the edge of the API."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import request

from recommender.service import CHANNELS, LANGUAGES, MAX_OFFERS

from .errors import BadRequest

DEFAULT_LIMIT = 5
# ASCII digits only: str.isdigit() also accepts '²' and '①', which int() then refuses.
_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")


def limit_param(value: Any = None) -> int:
    """``limit`` from the query string, or ``value`` from a JSON body: a whole number 1..20."""
    raw = request.args.get("limit") if value is None else value
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    shown = _shown(raw)
    if isinstance(raw, str) and _WHOLE_NUMBER.fullmatch(raw.strip()):
        # Seven digits are out of range already; int() of thousands of digits is refused.
        raw = int(raw) if len(raw.strip()) <= 6 else MAX_OFFERS + 1
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise BadRequest(f"limit must be a whole number, got {shown}", parameter="limit")
    if not 1 <= raw <= MAX_OFFERS:
        raise BadRequest(f"limit must be between 1 and {MAX_OFFERS}, got {shown}",
                         parameter="limit")
    return raw


def _shown(value: Any, width: int = 40) -> str:
    """``repr(value)``, cut short: messages quote what was sent, not megabytes of it."""
    text = repr(value)
    return text if len(text) <= width else f"{text[:width]}..."


def lang_param(value: Any = None) -> str:
    lang = request.args.get("lang", "en") if value is None else value
    if lang not in LANGUAGES:
        raise BadRequest(f"lang must be one of {list(LANGUAGES)}, got {lang!r}", parameter="lang")
    return lang


def json_body() -> dict[str, Any]:
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        raise BadRequest("the request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object "
                         "(Content-Type: application/json)")
    try:  # JSON may escape lone surrogates (\\ud800): not text, and nothing below can store it
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise BadRequest("the request body holds a string that is not valid Unicode "
                         "(a lone surrogate escape such as \\ud800)") from None
    return body


def channel_param(value: Any = None) -> str | None:
    channel = request.args.get("channel") if value is None else value
    if channel in (None, ""):
        return None
    if channel not in CHANNELS:
        raise BadRequest(f"channel must be one of {list(CHANNELS)}, got {channel!r}",
                         parameter="channel")
    return channel


def intent_param(intents: tuple[str, ...], value: Any = None) -> str | None:
    intent = request.args.get("intent") if value is None else value
    if intent in (None, ""):
        return None
    if intent not in intents:
        raise BadRequest(f"intent must be one of {list(intents)}, got {intent!r}",
                         parameter="intent")
    return intent
