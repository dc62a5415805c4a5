"""The answers of the API as typed models: what ``/openapi.json`` says each route returns.

Views return the service's dicts (encoding them again through models would cost every offers
answer time for nothing); these models are the declaration the document is generated from, and
tests/api/test_openapi.py holds every answer of the app to it. Models are closed
(``additionalProperties: false``), so a field the service adds without declaring it here fails
those tests instead of drifting.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from recommender.data import columns as C
from recommender.policy.offers import NOTICES
from recommender.ranking.ranker import SOURCES
from recommender.service import CHANNELS
from recommender.store.responses import OUTCOMES

PositiveInt = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]
ProductRiskGrade = Literal[C.PRODUCT_RISK_GRADES]
Source = Literal[SOURCES]
Channel = Literal[CHANNELS]
Outcome = Literal[OUTCOMES]


class Closed(BaseModel):
    """A model that names every field it may hold; ``model_`` field names are the API's."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Named(Closed):
    name: str
    name_en: str
    name_zh: str


class Texts(Closed):
    text: str
    text_en: str
    text_zh: str


class Error(Closed):
    """Every failure: a stable ``code``, a message for people and ``details`` for programs."""

    code: str
    message: str
    details: dict[str, Any]


class Health(Closed):
    status: Literal["ok"]
    model_version: str = Field(default=None, description="absent while no model is loaded")
    customers: Count = Field(default=None, description="absent while no model is loaded")


class Ready(Closed):
    status: Literal["ready"]
    model_version: str


class Reload(Closed):
    status: Literal["reloaded", "unchanged"]
    model_version: str
    previous_version: str


class Eligibility(Closed):
    min_age: int
    max_age: int
    min_income: float
    residency: list[Literal[C.RESIDENCIES]]


class Product(Named):
    product_id: str
    category: str
    risk_grade: ProductRiskGrade
    value_weight: float
    eligibility: Eligibility
    prerequisites: list[str]
    exclusions: list[str]
    life_stages: list[str]
    talking_points: list[str]


class ProductList(Closed):
    products: list[Product]


class LifeStageRef(Named):
    id: str


class LifeStage(LifeStageRef):
    description: str
    rules: dict[str, Any]
    bundle: list[str]
    customers: Count


class LifeStageList(Closed):
    life_stages: list[LifeStage]


class Metrics(Closed):
    k: Any
    served: Any
    test_customers: Any
    methods: Any
    calibration: Any


class ModelInfo(Closed):
    version: str
    created_at: str | None
    data: dict[str, Any] | None
    served: str | None
    metrics: Metrics
    policy_version: str


class Holding(Closed):
    product_id: str
    name: str


class Profile(Closed):
    """A customer of the book; protected attributes (gender) never appear."""

    customer_id: str
    life_stage: LifeStageRef
    age: Count | None  # None: the bank's customers extract has no age
    income: float | None
    marital_status: Literal[C.MARITAL_STATUSES]
    dependants: Count
    tenure_months: Count
    segment: str
    risk_grade: Literal[C.RISK_GRADES]
    residency: Literal[C.RESIDENCIES]
    consent_profiling: bool
    vulnerable: bool
    open_complaint: bool
    holdings: list[Holding]
    as_of: Annotated[str, Field(json_schema_extra={"format": "date"})] | None
    risk_assessed_on: Annotated[str, Field(json_schema_extra={"format": "date"})] | None = (
        Field(default=None, description="present when the extract has the column"))


class Reason(Texts):
    code: str
    evidence: dict[str, Any]


class Offer(Named):
    product_id: str
    category: str
    risk_grade: ProductRiskGrade
    score: float
    rank: PositiveInt
    source: Source
    propensity: float
    value_weight: float
    priority: float
    expected_gain: float
    factor: float = Field(default=None, description="the adaptive correction of the "
                          "propensity (observed over expected accepts); only with an "
                          "[adaptive] policy")
    reasons: list[Reason]
    talking_points: list[str]


class Context(Closed):
    channel: Channel
    intent: str | None


class Notice(Texts):
    code: Literal[tuple(NOTICES)]


class ServiceAction(Named, Texts):
    id: str
    kind: Literal["service_action"]


class Decision(Closed):
    customer_id: str
    life_stage: LifeStageRef
    source: Source
    personalised: bool
    context: Context
    notices: list[Notice]
    service_actions: list[ServiceAction]
    offers: list[Offer]
    model_version: str
    policy_version: str
    arm: str = Field(default=None, description="the experiment arm that decided; only while "
                     "the policy runs an [experiment]")
    decision_id: Annotated[str, Field(pattern="^[0-9a-f]{32}$")]


class Rule(Texts):
    code: str


class WhyNot(Closed):
    customer_id: str
    product_id: str
    name: str
    offered: bool
    rank: PositiveInt | None
    propensity: float
    rules: list[Rule]


class Response(Closed):
    """A customer's response to an offer, as stored."""

    id: int
    customer_id: str
    product_id: str
    outcome: Outcome
    channel: Channel
    recorded_at: Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class ResponseList(Closed):
    customer_id: str
    responses: list[Response]
