"""The embedded demo bank: a synthetic Chinese retail bank with monthly product holdings.

Each month a customer takes up a product they do not hold with a probability driven by
their life stage, income and what they already hold (a mortgage raises the chance of home
insurance, payroll raises a credit card, ...), only where the catalog makes them eligible,
and some products are closed. Next-month acquisitions are thus learnable, not trivial.
Everything is vectorised over customers so a million customers take seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..exceptions import ConfigError
from . import columns as C
from .catalog import Catalog
from .eligibility import eligibility_mask
from .life_stages import LifeStageRules

log = logging.getLogger(__name__)

LAST_SNAPSHOT = pd.Timestamp("2026-10-31")
BURN_IN_MONTHS = 36

# Monthly base log-odds of taking up a product not held (before stage and holdings effects).
_BASE_LOGIT = -6.2
_BUNDLE_LIFT = 1.9
# Products a held product makes more (or less) likely next: (held, next, log-odds lift).
_CROSS_SELL = (
    ("current_account", "mobile_banking", 1.5), ("current_account", "payroll_service", 0.8),
    ("payroll_service", "credit_card", 1.6), ("payroll_service", "consumer_loan", 0.9),
    ("payroll_service", "pension_account", 0.9), ("payroll_service", "time_deposit", 0.5),
    ("mortgage", "home_insurance", 2.6), ("mortgage", "life_insurance", 0.9),
    ("mortgage", "consumer_loan", -0.6), ("mortgage", "car_loan", 0.4),
    ("time_deposit", "large_cd", 1.3), ("time_deposit", "wmp_conservative", 1.1),
    ("large_cd", "wmp_balanced", 0.7), ("wmp_conservative", "wmp_balanced", 1.2),
    ("wmp_conservative", "bond_fund", 1.0), ("wmp_balanced", "wmp_growth", 1.3),
    ("wmp_balanced", "equity_fund", 1.0), ("bond_fund", "equity_fund", 0.7),
    ("equity_fund", "gold_savings", 0.8), ("credit_card", "consumer_loan", 0.9),
    ("credit_card", "car_loan", 0.5), ("credit_card", "fx_service", 0.5),
    ("education_savings", "health_insurance", 1.0), ("education_savings", "life_insurance", 0.6),
    ("health_insurance", "life_insurance", 0.9), ("mobile_banking", "wmp_conservative", 0.6),
    ("car_loan", "home_insurance", 0.3),
)
# Monthly probability that a held product is closed (loans repaid, deposits matured, ...).
_CLOSURE = {
    "deposit": 0.012, "credit": 0.006, "wealth": 0.03, "investment": 0.02,
    "insurance": 0.004, "service": 0.004, "digital": 0.002, "pension": 0.0,
}
# Income elasticity of take-up by category: the rich buy wealth products, not consumer loans.
_INCOME_LIFT = {"wealth": 0.9, "investment": 0.7, "credit": 0.1, "insurance": 0.3, "deposit": 0.3}


@dataclass(frozen=True)
class DemoBank:
    customers: pd.DataFrame
    holdings: pd.DataFrame


def _customers(n: int, rng: np.random.Generator) -> pd.DataFrame:
    ages = np.arange(16, 91)
    weight = np.exp(-0.5 * ((ages - 40) / 16.0) ** 2) + 0.08
    age = rng.choice(ages, size=n, p=weight / weight.sum()).astype(np.int16)
    p_married = 1 / (1 + np.exp(-(age - 29) / 3.0)) * 0.85
    u = rng.random(n)
    marital = np.where(u < p_married, "married", "single").astype(object)
    marital[(u >= p_married) & (u < p_married + 0.06) & (age > 30)] = "divorced"
    marital[(marital == "married") & (age > 65) & (rng.random(n) < (age - 65) / 40)] = "widowed"
    has_kids_age = (age >= 24) & (age <= 58)
    dependants = np.where(
        has_kids_age & (marital != "single"), rng.poisson(1.1, n), (rng.random(n) < 0.03)
    ).clip(0, 4).astype(np.int8)
    dependants[age < 22] = 0
    career = np.exp(-0.5 * ((age - 46) / 14.0) ** 2)
    income = np.exp(rng.normal(10.4 + 1.3 * career, 0.75, n))
    student = (age <= 23) & (rng.random(n) < 0.7)
    income[student] = rng.uniform(0, 24000, student.sum())
    income[age >= 63] *= 0.55
    income = np.round(income, -2)
    segment = np.select([income >= 1_200_000, income >= 300_000], ["private", "affluent"], "mass")
    tenure = np.minimum(rng.exponential(70, n), (age - 15) * 12).astype(np.int32)
    risk_centre = 3.3 - (age - 40) / 25 + (income > 300_000) * 0.6
    risk = np.clip(np.rint(risk_centre + rng.normal(0, 1.0, n)), 1, 5).astype(int)
    assessed_days = rng.integers(0, 900, n)
    return pd.DataFrame({
        C.CUSTOMER_ID: np.char.add("C", np.char.zfill(np.arange(1, n + 1).astype(str), 8)),
        C.AGE: age, C.INCOME: income, C.MARITAL_STATUS: marital.astype(str),
        C.DEPENDANTS: dependants, C.TENURE_MONTHS: tenure, C.SEGMENT: segment,
        C.RISK_GRADE: np.char.add("C", risk.astype(str)),
        C.RISK_ASSESSED_ON: (LAST_SNAPSHOT - pd.to_timedelta(assessed_days, unit="D")).normalize(),
        C.RESIDENCY: np.where(rng.random(n) < 0.03, "non_resident", "resident"),
        C.CONSENT_PROFILING: rng.random(n) < 0.92,
        C.VULNERABLE: (rng.random(n) < 0.01) | ((age >= 80) & (rng.random(n) < 0.3)),
        C.OPEN_COMPLAINT: rng.random(n) < 0.01,
        C.GENDER: np.where(rng.random(n) < 0.5, "F", "M"),
    })


def _propensity_logits(customers: pd.DataFrame, catalog: Catalog,
                       stages: LifeStageRules) -> tuple[np.ndarray, np.ndarray]:
    """(customer x product base log-odds, product x product cross-sell lifts)."""
    stage = stages.assign(customers)
    bundle = np.zeros((len(stages.stages), len(catalog)), dtype=np.float32)
    for s, life_stage in enumerate(stages.stages):
        bundle[s, catalog.ids.to_internal(catalog.bundle(life_stage.id))] = _BUNDLE_LIFT
    income_z = ((np.log1p(customers[C.INCOME].to_numpy()) - 11.0) / 1.0).astype(np.float32)
    elasticity = np.array([_INCOME_LIFT.get(p.category, 0.0) for p in catalog.products],
                          dtype=np.float32)
    base = _BASE_LOGIT + bundle[stage] + income_z[:, None] * elasticity[None, :]
    lift = np.zeros((len(catalog), len(catalog)), dtype=np.float32)
    for held, nxt, value in _CROSS_SELL:
        if held in catalog.ids and nxt in catalog.ids:
            lift[catalog.ids.position(held), catalog.ids.position(nxt)] = value
    return base.astype(np.float32), lift


_SIGNAL_COLUMNS = {  # extra column -> the product categories it makes more likely
    "savings_balance": ("deposit", "wealth"), "card_spend": ("credit",),
    "app_logins": ("digital", "service"), "investment_visits": ("investment", "wealth"),
}
_REGIONS = ("north", "south", "east", "west", "central")


def extra_columns(n_customers: int, n_columns: int, seed: int,
                  catalog: Catalog) -> tuple[pd.DataFrame, np.ndarray]:
    """``n_columns`` further customer columns of the kind banks keep (balances, spend, app
    use, region, then columns of noise), and the log-odds they add to each product.

    Four numeric columns and the region carry signal: each raises the take-up of some
    categories of product. The rest carry none, as most of a bank's columns do. A separate
    random stream: the demo bank without extra columns is unchanged.
    """
    rng = np.random.default_rng(seed + 7919)
    columns, shift = {}, np.zeros((n_customers, len(catalog)), dtype=np.float32)
    categories = np.array([p.category for p in catalog.products])
    for name, lifted in list(_SIGNAL_COLUMNS.items())[:n_columns]:
        trait = rng.normal(0.0, 1.0, n_customers).astype(np.float32)
        shift += 0.9 * trait[:, None] * np.isin(categories, lifted)[None, :]
        noisy = trait + rng.normal(0.0, 0.5, n_customers)
        columns[name] = (np.round(np.exp(8 + noisy), 2) if name != "app_logins"
                         else np.maximum(np.round(10 + 6 * noisy), 0).astype(int))
    if n_columns > len(columns):
        region = rng.integers(0, len(_REGIONS), n_customers)
        preference = rng.normal(0.0, 0.6, (len(_REGIONS), len(catalog))).astype(np.float32)
        shift += preference[region]
        columns["region"] = np.asarray(_REGIONS)[region]
    for k in range(n_columns - len(columns)):
        columns[f"attribute_{k + 1:02d}"] = np.round(rng.normal(0.0, 1.0, n_customers), 3)
    return pd.DataFrame(columns), shift


def generate(n_customers: int, n_months: int, seed: int, catalog: Catalog,
             stages: LifeStageRules, extra: int = 0) -> DemoBank:
    """Customers and ``n_months`` monthly holdings snapshots ending at ``LAST_SNAPSHOT``;
    ``extra`` further customer columns (``extra_columns``) that shape take-up."""
    if n_customers < 1 or n_months < 2:
        raise ConfigError(f"the demo bank needs at least 1 customer and 2 months, got "
                          f"{n_customers} customers and {n_months} months")
    rng = np.random.default_rng(seed)
    customers = _customers(n_customers, rng)
    base, lift = _propensity_logits(customers, catalog, stages)
    if extra:
        columns, shift = extra_columns(n_customers, extra, seed, catalog)
        customers = pd.concat([customers, columns], axis=1)
        base = base + shift
    eligible = eligibility_mask(customers, catalog)
    prerequisites = catalog.prerequisite_matrix().astype(np.float32)
    exclusions = catalog.exclusion_matrix().astype(np.float32)
    n_prereq = prerequisites.sum(axis=0)
    closure = np.array([_CLOSURE.get(p.category, 0.005) for p in catalog.products])
    current = catalog.ids.position("current_account") if "current_account" in catalog.ids else 0

    months_total = BURN_IN_MONTHS + n_months
    joined_at = months_total - 1 - customers[C.TENURE_MONTHS].to_numpy()  # month index of joining
    held = np.zeros((n_customers, len(catalog)), dtype=bool)
    snapshot_dates = pd.date_range(end=LAST_SNAPSHOT, periods=n_months, freq="ME")
    frames = []
    for month in range(months_total):
        joining = (joined_at == month) if month else (joined_at <= 0)
        held[joining, current] = True
        active = joined_at <= month
        p_take = _take_up(held, base, lift, eligible, prerequisites, n_prereq, exclusions)
        take = rng.random(held.shape, dtype=np.float32) < p_take
        close = (rng.random(held.shape, dtype=np.float32) < closure) & held
        close[:, current] = False
        held = (held | (take & active[:, None] & ~joining[:, None])) & ~close
        recorded = month - BURN_IN_MONTHS
        if recorded >= 0:
            rows, cols = np.nonzero(held & active[:, None])
            frames.append((rows, cols, recorded))
    holdings = _holdings_frame(frames, customers, catalog, snapshot_dates)
    log.info("demo bank: %d customers, %d months, %d holding rows",
             n_customers, n_months, len(holdings))
    return DemoBank(customers=customers, holdings=holdings)


def _take_up(held: np.ndarray, base: np.ndarray, lift: np.ndarray, eligible: np.ndarray,
             prerequisites: np.ndarray, n_prereq: np.ndarray,
             exclusions: np.ndarray) -> np.ndarray:
    """(customer x product) probability of taking the product up this month: 0 where not
    allowed (ineligible, prerequisites not held, excluded by a holding)."""
    held_f = held.astype(np.float32)
    allowed = eligible & ((held_f @ prerequisites) >= n_prereq) & ~((held_f @ exclusions) > 0)
    p_take = 1 / (1 + np.exp(-(base + held_f @ lift)))
    return np.where(allowed, p_take, np.float32(0.0))


def take_up_probability(customers: pd.DataFrame, held: np.ndarray, catalog: Catalog,
                        stages: LifeStageRules, seed: int | None = None,
                        extra: int = 0) -> np.ndarray:
    """The true monthly probability that each customer takes up each product not held, as
    the generator draws it (``held``: customer x product bool, in ``catalog``'s order): what
    a simulation of offers reads as the customer's acceptance. ``seed``/``extra``: those the
    bank was generated with, when it has extra columns."""
    base, lift = _propensity_logits(customers, catalog, stages)
    if extra:
        base = base + extra_columns(len(customers), extra, int(seed or 0), catalog)[1]
    prerequisites = catalog.prerequisite_matrix().astype(np.float32)
    p_take = _take_up(held, base, lift, eligibility_mask(customers, catalog), prerequisites,
                      prerequisites.sum(axis=0), catalog.exclusion_matrix().astype(np.float32))
    return np.where(held, np.float32(0.0), p_take)


def _holdings_frame(frames, customers, catalog, snapshot_dates) -> pd.DataFrame:
    rows = np.concatenate([f[0] for f in frames])
    cols = np.concatenate([f[1] for f in frames])
    months = np.concatenate([np.full(len(f[0]), f[2], dtype=np.int16) for f in frames])
    return pd.DataFrame({
        C.CUSTOMER_ID: pd.Categorical.from_codes(rows, categories=customers[C.CUSTOMER_ID]),
        C.PRODUCT_ID: pd.Categorical.from_codes(cols, categories=list(catalog.ids.external_ids)),
        C.SNAPSHOT_DATE: snapshot_dates[months].values.astype("datetime64[ns]"),
    })
