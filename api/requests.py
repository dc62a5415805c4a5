"""What the API accepts, declared once: the views validate with these models and
``/openapi.json`` is generated from them, so the two cannot drift apart.

Product ids and intents are those of the catalog and policy being served, so the models are
built per served service (``RequestModels.build``, once per load or reload, see
``api.state.current_requests``), never per request. Query models read strings (``?limit=3``);
body models are strict: a JSON body says ``3`` (or ``3.0``), not ``"3"`` or ``true``.

The customer described in ``POST /v1/offers/score`` is validated here to the same rules the
customers extract keeps (``recommender.data.extracts.validate_customers``) or stricter, so
that a body the document allows is never refused further in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from recommender.data import columns as C
from recommender.data.value_checks import FIRST_DATE, LAST_DATE, RANGES
from recommender.service import CHANNELS, LANGUAGES, MAX_OFFERS, OfferService

from . import schemas

DEFAULT_LIMIT = 5
# One character that is not Python's whitespace, which the extract rules strip (str.strip):
# spelled out, as JSON Schema's \s and pydantic's differ from Python's and from each other.
_NOT_BLANK = r"[^\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
_MONTH_DAY = "-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])$"
FIRST_YEAR, LAST_YEAR = FIRST_DATE.year, LAST_DATE.year  # whole years the extract rules take
OLDEST = RANGES[C.AGE][1]  # years: the oldest age the extract rules take

Lang = Annotated[Literal[LANGUAGES], Field(
    description="language of names and texts (the _en and _zh fields are always there)")]


def _whole(value: Any) -> Any:
    """JSON Schema counts 3.0 as an integer, and so does the API."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def whole(low: int, high: int, description: str | None = None) -> Any:
    """A whole number from ``low`` to ``high`` (constraints before the validator: after it,
    pydantic would write them as ``ge``/``le``, which JSON Schema does not know)."""
    return Annotated[int, Field(ge=low, le=high, description=description),
                     BeforeValidator(_whole)]


Limit = whole(1, MAX_OFFERS, "at most this many sales offers")
Channel = Annotated[Literal[CHANNELS], Field(
    description="where the offer will be made (default: the policy's)")]
NotBlank = Annotated[str, Field(pattern=_NOT_BLANK)]
_PHRASES = {_NOT_BLANK: "text that is not blank"}  # pattern -> what it asks for, in words


def year_pattern(first: int, last: int) -> str:
    """A regular expression for the four-digit years ``first`` to ``last``: JSON Schema has no
    bounds for dates, but a pattern bounds them for every client."""
    parts, year = [], first
    while year <= last:
        if year % 10 or year + 9 > last:  # a part of one decade
            end = min(year // 10 * 10 + 9, last)
            parts.append(_digit_range(str(year)[:3], year % 10, end % 10))
        else:  # whole decades, up to the end of the century
            end = min(year // 100 * 100 + 99, (last + 1) // 10 * 10 - 1)
            parts.append(_digit_range(str(year)[:2], year // 10 % 10, end // 10 % 10) + "[0-9]")
        year = end + 1
    return f"^(?:{'|'.join(parts)})"


def _digit_range(prefix: str, low: int, high: int) -> str:
    return prefix + (str(low) if low == high else f"[{low}-{high}]")


def _real_date(text: str) -> str:
    date.fromisoformat(text)  # ValueError for 2001-02-30: a date the pattern lets through
    return text


def date_text(first: int, last: int, description: str) -> Any:
    """An ISO date (kept as text, as the extract has it) in the years ``first`` to ``last``."""
    pattern = year_pattern(first, last) + _MONTH_DAY
    _PHRASES[pattern] = f"a date YYYY-MM-DD of the years {first} to {last}"
    return Annotated[str, Field(pattern=pattern, json_schema_extra={"format": "date"},
                                description=description), AfterValidator(_real_date)]


def pattern_phrase(pattern: str) -> str:
    """What a value refused by ``pattern`` (one of these models') must be, in words."""
    return _PHRASES.get(pattern, f"text matching {pattern}")


def _one_of(values: tuple[str, ...], description: str) -> Any:
    """The type of a value that must be one of ``values`` (of which there may be none)."""
    if values:
        return Annotated[Literal[values], Field(description=description)]
    return Annotated[str, AfterValidator(_none_defined),
                     WithJsonSchema({"enum": [], "description": description})]


def _none_defined(value: str) -> str:
    raise PydanticCustomError("none_defined", "none is defined, so none can be chosen")


class Query(BaseModel):
    """Query parameters: strings converted, unknown parameters ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Body(BaseModel):
    """A JSON body: strict types, and a field the model does not name is refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LangQuery(Query):
    lang: Lang = "en"


class CustomerProfile(Body):
    """The customer as the bank's customers extract describes one. Age or birth date is
    needed; with both, age counts."""

    model_config = ConfigDict(json_schema_extra={
        "anyOf": [{"required": [C.AGE]}, {"required": [C.BIRTH_DATE]}]})

    customer_id: NotBlank = Field(default=None, description="'request' when absent")
    age: whole(*RANGES[C.AGE]) = None
    birth_date: str = None  # a date whose years depend on today: see RequestModels.build
    income: Annotated[float, Field(ge=RANGES[C.INCOME][0], le=RANGES[C.INCOME][1],
                                      allow_inf_nan=False)] | None
    marital_status: Literal[C.MARITAL_STATUSES]
    dependants: whole(*RANGES[C.DEPENDANTS])
    tenure_months: whole(*RANGES[C.TENURE_MONTHS])
    segment: NotBlank
    risk_grade: Literal[C.RISK_GRADES]
    risk_assessed_on: date_text(FIRST_YEAR, LAST_YEAR, "when the risk grade was assessed; "
                                "null: never") | None = None
    residency: Literal[C.RESIDENCIES]
    consent_profiling: bool
    vulnerable: bool = None
    open_complaint: bool = None
    gender: str = Field(default=None, description="kept for fairness audits only; never used "
                        "by the rules or the models")

    @model_validator(mode="after")
    def _age_or_birth_date(self) -> CustomerProfile:
        if self.age is None and self.birth_date is None:
            raise ValueError(f"needs {C.AGE} or {C.BIRTH_DATE}")
        return self


@dataclass(frozen=True, eq=False)
class RequestModels:
    """The request models of one served catalog and policy."""

    decision: type[Query]  # ?limit=&lang=&channel=&intent= of offers and why-not
    new_response: type[Body]
    score: type[Body]
    product_id: Any  # the type of a product id of the catalog (path of why-not)

    @classmethod
    def build(cls, product_ids: tuple[str, ...], intents: tuple[str, ...]) -> RequestModels:
        """Models for this catalog's products and this policy's intents. Birth dates are
        bounded to whole years in which every day gives an age the extract rules take, for
        today and for the whole of next year."""
        year = date.today().year
        product_ids = tuple(str(p) for p in product_ids)  # plain text, not numpy's
        product_id = _one_of(product_ids, "a product id of the catalog")
        intent = _one_of(intents, "what the customer came for, one of the policy's intents")
        born = date_text(year + 1 - OLDEST, year - 1, "needed when age is not given; for a "
                         "customer born this year, give age 0")
        customer = _model("CustomerProfile", CustomerProfile, CustomerProfile.__doc__,
                          birth_date=(born, None))
        decision = _model("DecisionQuery", LangQuery, None, limit=(Limit, DEFAULT_LIMIT),
                          channel=(Channel, None), intent=(intent, None))
        new_response = _model("NewResponse", Body, "A customer's response to an offer.",
                              product_id=(product_id, ...), outcome=(schemas.Outcome, ...),
                              channel=(schemas.Channel, ...))
        holdings = Annotated[list[product_id], Field(description="product ids the customer holds")]
        score = _model("ScoreRequest", Body, "Offers for a customer described in the request.",
                       customer=(customer, ...), holdings=(holdings, []),
                       limit=(Limit, DEFAULT_LIMIT), lang=(Lang, "en"), channel=(Channel, None),
                       intent=(intent, None))
        return cls(decision, new_response, score, product_id)

    @classmethod
    def for_service(cls, service: OfferService) -> RequestModels:
        """Models for what ``service`` serves."""
        return cls.build(tuple(service.catalog.ids.external_ids), service.policy.intents)


def _model(name: str, base: type[BaseModel], doc: str | None, **fields: Any) -> Any:
    return create_model(name, __base__=base, __module__=__name__, __doc__=doc, **fields)
