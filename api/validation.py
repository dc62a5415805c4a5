"""Requests checked at the edge against their declared models (``api.requests``).

A refusal is a ``BadRequest`` in the API's one error shape that names the parameter or field
(``details``: ``{"parameter": "limit"}``, ``{"field": "customer.age"}`` or, for missing and
unknown fields, ``{"fields": [...]}``) and quotes what was sent, cut short.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError

from .errors import BadRequest
from .requests import pattern_phrase

M = TypeVar("M", bound=BaseModel)

# What a value must be, by pydantic's error type, when it has the wrong JSON type.
_EXPECTED = {
    "int_type": "a whole number", "int_parsing": "a whole number",
    "int_parsing_size": "a whole number", "int_from_float": "a whole number",
    "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
    "bool_type": "true or false", "bool_parsing": "true or false", "string_type": "a string",
    "list_type": "an array", "model_type": "an object", "dict_type": "an object",
}
_BOUNDS = {"ge": "at least", "gt": "more than", "le": "at most", "lt": "less than"}


def query(model: type[M]) -> M:
    """The query string as ``model``; unknown parameters are ignored."""
    try:
        return model.model_validate(request.args)
    except ValidationError as exc:
        raise _refusal(exc, model, "parameter") from None


def body(model: type[M], value_code: str = "bad_request") -> M:
    """The JSON body as ``model``. A value of the right type but not allowed is refused with
    ``value_code`` (the responses route keeps the code its store gives: invalid_response)."""
    data = _json_object()
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _refusal(exc, model, "field", value_code) from None


def _json_object() -> dict[str, Any]:
    try:
        data = request.get_json(silent=True)
    except RecursionError:
        raise BadRequest("the request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object "
                         "(Content-Type: application/json)")
    try:  # JSON may escape lone surrogates (\\ud800): not text, and nothing below can store it
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise BadRequest("the request body holds a string that is not valid Unicode "
                         "(a lone surrogate escape such as \\ud800)") from None
    return data


def _refusal(exc: ValidationError, model: type[BaseModel], kind: str,
            value_code: str = "bad_request") -> BadRequest:
    """One ``BadRequest`` for a failed validation: missing fields first (all of them), then
    unknown ones, then the first other error."""
    errors = exc.errors(include_url=False)
    for error_type, what in (("missing", "missing"), ("extra_forbidden", "unknown")):
        locs = [e["loc"] for e in errors if e["type"] == error_type]
        if locs:
            allowed = _allowed(model, locs[0][:-1]) if what == "unknown" else None
            hint = f"; allowed: {allowed}" if allowed else ""
            names = [_path(loc) for loc in locs]
            return BadRequest(f"{what} fields {names}{hint}", fields=names)
    error = errors[0]
    name, sent = _path(error["loc"]), error["input"]
    details = {kind: ".".join(str(p) for p in error["loc"] if isinstance(p, str))}
    wrong_type = error["type"] in _EXPECTED or (
        error["type"] == "literal_error" and not isinstance(sent, str))
    return BadRequest(_message(name, error), "bad_request" if wrong_type else value_code,
                      **details)


def _message(name: str, error: dict[str, Any]) -> str:
    kind, ctx, sent = error["type"], error.get("ctx", {}), _shown(error["input"])
    if kind == "literal_error":
        strings = "" if isinstance(error["input"], str) else "the strings "
        return f"{name} must be one of {strings}{ctx['expected']}, got {sent}"
    if kind in _EXPECTED:
        return f"{name} must be {_EXPECTED[kind]}, got {sent}"
    bound = next((b for b in _BOUNDS if b in ctx), None)
    if bound is not None:
        return f"{name} must be {_BOUNDS[bound]} {ctx[bound]}, got {sent}"
    if kind == "string_pattern_mismatch":
        return f"{name} must be {pattern_phrase(ctx['pattern'])}, got {sent}"
    reason = error["msg"].removeprefix("Value error, ")
    if isinstance(error["input"], dict):
        return f"{name}: {reason}"
    return f"{name}: {reason}, got {sent}"


def _path(loc: tuple[str | int, ...]) -> str:
    """``('holdings', 1)`` as ``holdings[1]``, ``('customer', 'age')`` as ``customer.age``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f"{'.' if text else ''}{part}"
    return text


def _allowed(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str] | None:
    """The field names of the (nested) model at ``loc``."""
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return list(model.model_fields)


def _shown(value: Any, width: int = 40) -> str:
    """``repr(value)``, cut short: messages quote what was sent, not megabytes of it."""
    text = repr(value)
    return text if len(text) <= width else f"{text[:width]}..."
