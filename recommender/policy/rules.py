"""The decision policy: which products may be offered, and in what order, to whom.

Every rule is a vectorised boolean mask (customers x products, True = blocked), computed
by the same code for one customer at the counter and for a million in a campaign. The
masks double as the explanation of every non-offer (``why_not``). Arbitration then ranks
what is left by priority = propensity x value x context weight x business lever, and keeps
only offers whose expected gain (propensity x value - contact cost) is positive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property

import numpy as np
import pandas as pd

from ..data import columns as C
from ..data.book import CustomerBatch
from ..data.catalog import UNCLASSIFIED, Catalog
from ..data.eligibility import (
    Products,
    age_mask,
    holding_sets,
    holds,
    holds_all,
    holds_any,
    income_mask,
    product_columns,
    product_words,
    residency_mask,
)
from .config import PolicyConfig

_EPOCH, _MICROSECOND = datetime(1970, 1, 1), timedelta(microseconds=1)

# Rule code -> (English, Chinese) text; {product} is the product's name.
RULES = {
    "already_held": ("You already hold {product}.", "您已持有{product}。"),
    "accepted_pending": ("You have just accepted {product}; it is being set up.",
                         "您已同意办理{product}，正在办理中。"),
    "age": ("{product} is not available at your age.", "{product}不适用于您的年龄段。"),
    "income": ("{product} needs a higher declared income.", "{product}需要更高的收入水平。"),
    "residency": ("{product} is for residents only.", "{product}仅限居民客户办理。"),
    "prerequisite": ("{product} needs another product first: {detail}.",
                     "办理{product}需先持有：{detail}。"),
    "excluded_by_holding": ("{product} cannot be held together with {detail}.",
                            "{product}不能与{detail}同时持有。"),
    "risk_grade_too_high": ("{product} (risk {detail}) is above your risk tolerance.",
                            "{product}（风险等级{detail}）超出您的风险承受能力。"),
    "risk_assessment_outdated": (
        "{product} needs an up-to-date risk assessment: please update it first.",
        "办理{product}需要有效的风险测评，请先更新风险测评。"),
    "vulnerable_credit": ("Credit products such as {product} are not offered to customers "
                          "who need extra care.",
                          "为保护需特别关照的客户，不推荐{product}等信贷产品。"),
    "open_complaint": ("No offers until your open complaint is resolved.",
                       "在您的投诉处理完毕之前，我们不会向您推荐产品。"),
    "declined_recently": ("You declined {product} recently; we will not offer it again yet.",
                          "您近期已婉拒{product}，暂不再推荐。"),
    "paused_unanswered": ("{product} was shown several times without an answer; paused.",
                          "{product}已多次展示未获回复，暂停推荐。"),
}


@dataclass(frozen=True)
class DecisionContext:
    """Where and why the decision is asked for."""

    channel: str = "branch"
    intent: str | None = None
    at: datetime | None = None

    def now(self) -> datetime:
        return self.at or datetime.now(UTC)


@dataclass(frozen=True)
class ContactState:
    """What the customers said before, as masks aligned with a batch."""

    declined_recently: np.ndarray  # (n x P) bool
    paused: np.ndarray  # (n x P) bool
    accepted_pending: np.ndarray  # (n x P) bool
    shown_today: np.ndarray  # (n,) offers shown today on the context channel

    def take(self, rows: np.ndarray) -> ContactState:
        """These customers' rows only, in this order."""
        def rows_of(mask: np.ndarray) -> np.ndarray:
            return np.take(mask, rows, axis=0)  # several times faster than mask[rows]

        return ContactState(rows_of(self.declined_recently), rows_of(self.paused),
                            rows_of(self.accepted_pending), self.shown_today[rows])

    @classmethod
    def empty(cls, n: int, n_products: int) -> ContactState:
        blank = np.zeros((n, n_products), dtype=bool)
        return cls(blank, blank, blank, np.zeros(n, dtype=np.int64))


def contact_state(history: pd.DataFrame, customer_ids: np.ndarray, catalog: Catalog,
                  policy: PolicyConfig, context: DecisionContext,
                  data_as_of: pd.Timestamp | None) -> ContactState:
    """Masks from recorded responses (``ResponseStore.contact_history``)."""
    n, n_products = len(customer_ids), len(catalog)
    state = ContactState.empty(n, n_products)
    if history is None or history.empty:
        return state
    now = pd.Timestamp(context.now())
    rows = pd.Index(customer_ids).get_indexer(history[C.CUSTOMER_ID])
    cols = catalog.ids.to_internal_lenient(history[C.PRODUCT_ID])
    keep = (rows >= 0) & (cols >= 0)
    h = history[keep].assign(_row=rows[keep], _col=cols[keep])
    at = pd.to_datetime(h["recorded_at"], utc=True)

    def mask(selected: pd.Series) -> np.ndarray:
        out = np.zeros((n, n_products), dtype=bool)
        out[h.loc[selected, "_row"].to_numpy(), h.loc[selected, "_col"].to_numpy()] = True
        return out

    declined = mask((h["outcome"] == "declined")
                    & (at >= now - timedelta(days=policy.decline_cooldown_days)))
    # Accepted since the data was extracted: held as far as offers go, until the next refresh.
    refreshed = None if data_as_of is None else pd.Timestamp(data_as_of)
    if refreshed is not None and refreshed.tzinfo is None:
        refreshed = refreshed.tz_localize(UTC)
    accepted = mask((h["outcome"] == "accepted")
                    & ((at > refreshed) if refreshed is not None else True))
    # Unanswered shows: "shown" after the last answer to the same product, within the window.
    answered = h[h["outcome"] != "shown"].groupby(["_row", "_col"])["recorded_at"].max()
    shows = h[(h["outcome"] == "shown")
              & (at >= now - timedelta(days=policy.unanswered_window_days))]
    last_answer = pd.to_datetime(answered.reindex(
        pd.MultiIndex.from_arrays([shows["_row"], shows["_col"]])).to_numpy(), utc=True)
    open_shows = shows[np.asarray(pd.isna(last_answer)) | (
        pd.to_datetime(shows["recorded_at"], utc=True).to_numpy() > last_answer)]
    counts = open_shows.groupby(["_row", "_col"]).size()
    paused = np.zeros((n, n_products), dtype=bool)
    over = counts[counts >= policy.max_unanswered_shows]
    paused[over.index.get_level_values(0), over.index.get_level_values(1)] = True
    today = (h["outcome"] == "shown") & (h["channel"] == context.channel) & (
        at.dt.date == now.date())
    shown_today = np.bincount(h.loc[today, "_row"], minlength=n)
    return ContactState(declined, paused, accepted, shown_today)


def rule_masks(batch: CustomerBatch, catalog: Catalog, policy: PolicyConfig,
               contact: ContactState, context: DecisionContext,
               products: Products = None) -> dict[str, np.ndarray]:
    """Every rule's mask (customers x products, True = this rule blocks the offer).

    Given ``products`` (catalog positions), the masks have one column per product listed,
    equal to those columns of the full masks: a campaign asks about its few products only.
    Like the eligibility masks, they are computed product by product (transposes of
    products x customers arrays).
    """
    customer = batch.profile_arrays
    held = holding_sets(batch.held)
    owned = held  # what prerequisites and exclusions read: held or accepted since the extract
    if np.count_nonzero(contact.accepted_pending):  # faster than any(), as below
        owned = held | holding_sets(contact.accepted_pending)
    terms = _product_terms(catalog, policy)
    risk_level = product_columns(catalog.column("risk_level"), products)
    investment = product_columns(terms.investment, products)
    credit = product_columns(terms.credit, products)
    # The context's wall-clock time (as pandas' ``tz_localize(None)`` reads it) in
    # microseconds: numpy reads a number faster than a datetime.
    valid_from = context.now().replace(tzinfo=None) - timedelta(
        days=policy.risk_assessment_valid_days)
    limit = np.datetime64((valid_from - _EPOCH) // _MICROSECOND, "us")
    outdated = ~(customer.assessed_on >= limit)  # never assessed (NaT) compares False
    held = holds(held, terms.positions if products is None else products)
    pending = _contact_columns(contact.accepted_pending, products)
    return {
        "already_held": held,
        "accepted_pending": pending & ~held,
        "age": ~age_mask(customer.age, catalog, products),
        "income": ~income_mask(customer.income, catalog, products),
        "residency": ~residency_mask(customer.residency, customer.residencies, catalog, products),
        "prerequisite": ~holds_all(owned, product_columns(
            product_words(catalog.prerequisite_matrix()), products)),
        "excluded_by_holding": holds_any(owned, product_columns(
            product_words(catalog.exclusion_matrix()), products)),
        "risk_grade_too_high": (risk_level[:, None] > customer.risk_level[None, :]).T,
        "risk_assessment_outdated": (investment[:, None] & outdated[None, :]).T,
        "vulnerable_credit": (credit[:, None] & customer.vulnerable[None, :]).T,
        "open_complaint": customer.open_complaint[None, :].repeat(len(risk_level), axis=0).T,
        "declined_recently": _contact_columns(contact.declined_recently, products),
        "paused_unanswered": _contact_columns(contact.paused, products),
    }


def _contact_columns(mask: np.ndarray, products: Products) -> np.ndarray:
    """A contact mask's columns; most customers have no history: then a blank, quickly."""
    if products is None or np.count_nonzero(mask):
        return product_columns(mask, products)
    return np.zeros((len(products), len(mask)), dtype=bool).T


def allowed(masks: dict[str, np.ndarray]) -> np.ndarray:
    """Offerable only where no rule blocks."""
    first, *rest = masks.values()
    blocked = first.copy(order="K")  # in the masks' layout (products by customers)
    for mask in rest:
        blocked |= mask
    return ~blocked


@dataclass(frozen=True, eq=False)
class _ProductTerms:
    """What the policy reads of each product (catalog order), derived once per catalog and
    policy (``_product_terms``): deriving them costs more than a decision for one customer."""

    catalog: Catalog
    policy: PolicyConfig
    positions: np.ndarray  # every catalog position, in order
    investment: np.ndarray  # bool: needs an up-to-date risk assessment
    credit: np.ndarray  # bool: not offered to vulnerable customers
    value: np.ndarray  # float64 value weight
    _weights: dict[tuple[str | None, str | None], np.ndarray] = field(
        default_factory=dict, repr=False)

    def weights(self, context: DecisionContext) -> np.ndarray:
        """(n_products,) context weight x business lever, read-only; one array per channel
        and intent of the policy (others weigh 1), so the cache stays as small as the policy."""
        intent = context.intent or ""
        key = (context.channel if context.channel in self.policy.channel_weights else None,
               intent if intent in self.policy.intent_weights else None)
        weights = self._weights.get(key)
        if weights is None:
            channel = self.policy.channel_weights.get(context.channel, {})
            by_intent = self.policy.intent_weights.get(intent, {})
            weights = np.array([channel.get(c, 1.0) * by_intent.get(c, 1.0)
                                for c in self.catalog.column("category")])
            weights = weights * np.array([self.policy.business_levers.get(p.id, 1.0)
                                          for p in self.catalog.products])
            weights.setflags(write=False)
            self._weights[key] = weights
        return weights


_TERMS: dict[tuple[int, int], _ProductTerms] = {}
_MAX_TERMS = 16  # catalogs x policies alive at once: a service holds one or two


def _product_terms(catalog: Catalog, policy: PolicyConfig) -> _ProductTerms:
    """The ``_ProductTerms`` of a catalog and policy, both immutable: built on first use.
    An entry holds its catalog and policy, so their ids stay theirs while it is kept."""
    terms = _TERMS.get((id(catalog), id(policy)))
    if terms is not None:
        return terms
    categories = catalog.column("category")
    # A product the bank has not classified yet (a drafted catalog) gets both rules: it may
    # be an investment or a credit product until someone says which.
    unclassified = categories == UNCLASSIFIED
    arrays = {"positions": np.arange(len(catalog)),
              "investment": np.isin(categories, policy.investment_categories) | unclassified,
              "credit": np.isin(categories, policy.credit_categories) | unclassified,
              "value": catalog.column("value_weight").astype(np.float64)}
    for array in arrays.values():
        array.setflags(write=False)
    if len(_TERMS) >= _MAX_TERMS:
        _TERMS.clear()
    terms = _TERMS[(id(catalog), id(policy))] = _ProductTerms(catalog, policy, **arrays)
    return terms


def context_weights(catalog: Catalog, policy: PolicyConfig,
                    context: DecisionContext) -> np.ndarray:
    """(n_products,) context weight x business lever of each product (read-only)."""
    return _product_terms(catalog, policy).weights(context)


def priority_order(priority: np.ndarray) -> np.ndarray:
    """(n x P) product positions by decreasing priority, ties by catalog order."""
    # A stable sort keeps catalog order among equal priorities: deterministic ties.
    return (-priority).argsort(axis=1, kind="stable")


@dataclass(frozen=True)
class Arbitration:
    priority: np.ndarray  # (n x P), -inf where not offerable or no positive gain
    expected_gain: np.ndarray  # (n x P)

    @cached_property
    def order(self) -> np.ndarray:
        """``priority_order``, sorted when first read: a campaign reads priorities only."""
        return priority_order(self.priority)


def arbitrate(propensity: np.ndarray, offerable: np.ndarray, catalog: Catalog,
              policy: PolicyConfig, context: DecisionContext,
              products: np.ndarray | None = None) -> Arbitration:
    """Priority and expected gain; products without positive gain are not offered.

    ``products`` are the catalog positions of ``propensity``'s values, broadcast against it
    (columns, or one per value for a flat list of pairs); every product in order when None.
    """
    terms = _product_terms(catalog, policy)
    value, weights = terms.value, terms.weights(context)
    if products is not None:
        value, weights = value[products], weights[products]
    expected_value = propensity * value
    gain = expected_value - policy.contact_cost
    priority = expected_value * weights
    priority = np.where(offerable & (gain > 0), priority, -np.inf)
    return Arbitration(priority, gain)


def rule_text(code: str, product_name: str, detail: str, lang: str) -> str:
    english, chinese = RULES[code]
    return (chinese if lang == "zh" else english).format(product=product_name, detail=detail)
