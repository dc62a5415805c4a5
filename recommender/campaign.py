"""Campaign lists: which customer gets which offer, over every customer of the bank.

The same engine and policy as the API score customers chunk by chunk (memory does not grow
with the number of customers). Each chunk keeps only the candidates that could still win a
quota place; a greedy pass then assigns offers by expected value, at most
``max_offers_per_customer`` per customer and ``quotas[product]`` per product.

Greedy assignment: candidate (customer, product) pairs in decreasing expected value, each
taken while its customer and its product have room. It is exact when every customer may get
every product they qualify for, and otherwise within a factor 1/2 of the optimum in theory;
tests/test_campaign.py compares it with the exact optimum (a linear program, integral for
this bipartite problem) on small cases and states the gap.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import columns as C
from .book import CustomerBook
from .data import read_table
from .exceptions import ConfigError
from .offers import OfferEngine
from .policy import DecisionContext, contact_state
from .policy_config import CHANNELS
from .tomlfiles import toml_document, toml_text

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = ("customer_id", "product_id", "rank", "propensity", "priority",
                  "expected_value", "reason_code")
_SPEC_KEYS = {"name", "channel", "intent", "products", "quotas", "max_offers_per_customer",
              "min_propensity", "contact_window_days", "exclude_life_stages",
              "exclude_customers"}


@dataclass(frozen=True)
class CampaignSpec:
    name: str
    channel: str
    products: tuple[str, ...]
    quotas: dict[str, int]
    max_offers_per_customer: int = 1
    min_propensity: float = 0.0
    contact_window_days: int = 0
    exclude_life_stages: tuple[str, ...] = ()
    exclude_customers: str | None = None
    intent: str | None = None
    source: str = field(default="<memory>", compare=False)

    @classmethod
    def from_toml(cls, path: str | Path) -> CampaignSpec:
        text, source = toml_text(path, "", ConfigError, "campaign spec")
        values = toml_document(text, source, ConfigError)
        unknown = sorted(set(values) - _SPEC_KEYS)
        if unknown:
            raise ConfigError(f"{path}: unknown keys {unknown}; allowed: {sorted(_SPEC_KEYS)}")
        missing = [k for k in ("name", "channel", "products", "quotas") if k not in values]
        if missing:
            raise ConfigError(f"{path}: missing keys {missing}")
        return cls(**{**values, "products": tuple(values["products"]),
                      "exclude_life_stages": tuple(values.get("exclude_life_stages", ())),
                      "source": source})

    def check(self, engine: OfferEngine) -> None:
        """Refuse what the catalog, policy or stages do not know, naming the key."""
        where = self.source
        if self.channel not in CHANNELS:
            raise ConfigError(f"{where}: channel {self.channel!r} is not one of {list(CHANNELS)}")
        if self.intent is not None and self.intent not in engine.policy.intents:
            raise ConfigError(f"{where}: intent {self.intent!r} is not one of "
                              f"{list(engine.policy.intents)}")
        unknown = [p for p in self.products if p not in engine.catalog.ids]
        if unknown or not self.products:
            raise ConfigError(f"{where}: products {unknown or '[]'} are not in the catalog")
        if set(self.quotas) != set(self.products):
            raise ConfigError(f"{where}: [quotas] must name exactly the campaign products "
                              f"{list(self.products)}")
        for product, quota in self.quotas.items():
            if isinstance(quota, bool) or not isinstance(quota, int) or quota < 0:
                raise ConfigError(f"{where}: quotas.{product} must be a whole number >= 0")
        if not isinstance(self.max_offers_per_customer, int) or self.max_offers_per_customer < 1:
            raise ConfigError(f"{where}: max_offers_per_customer must be a whole number >= 1")
        stages = [s for s in self.exclude_life_stages if s not in engine.stages.ids]
        if stages:
            raise ConfigError(f"{where}: exclude_life_stages names unknown stages {stages}")


@dataclass
class _Candidates:
    """Bounded pool of (customer, product) pairs that could still win a place."""

    rows: list[np.ndarray] = field(default_factory=list)
    cols: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)
    propensity: list[np.ndarray] = field(default_factory=list)
    priority: list[np.ndarray] = field(default_factory=list)
    sources: list[np.ndarray] = field(default_factory=list)

    def add(self, **parts: np.ndarray) -> None:
        for name, values in parts.items():
            getattr(self, name).append(values)

    def merged(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(getattr(self, name)) if getattr(self, name)
                else np.empty(0) for name in ("rows", "cols", "values", "propensity",
                                              "priority", "sources")}

    def prune(self, keep_per_product: dict[int, int]) -> None:
        """Keep, per product, only the best ``keep`` candidates by value."""
        pool = self.merged()
        keep = np.zeros(len(pool["rows"]), dtype=bool)
        for col, limit in keep_per_product.items():
            idx = np.flatnonzero(pool["cols"] == col)
            if len(idx) > limit:
                idx = idx[np.argpartition(-pool["values"][idx], limit - 1)[:limit]]
            keep[idx] = True
        for name, values in pool.items():
            setattr(self, name, [values[keep]])


def greedy_assign(customers: np.ndarray, products: np.ndarray, values: np.ndarray,
                  quotas: dict[int, int], per_customer: int) -> np.ndarray:
    """Indices of the pairs taken, by decreasing value (ties: customer, then product)."""
    order = np.lexsort((products, customers, -values))
    taken_by_customer: dict[int, int] = {}
    room = dict(quotas)
    chosen = []
    for i in order:
        customer, product = int(customers[i]), int(products[i])
        if room.get(product, 0) > 0 and taken_by_customer.get(customer, 0) < per_customer:
            chosen.append(i)
            room[product] -= 1
            taken_by_customer[customer] = taken_by_customer.get(customer, 0) + 1
    return np.asarray(chosen, dtype=np.int64)


def _progress(done: int, total: int, started: float, stream) -> None:
    if stream is None:
        return
    width = 30
    filled = int(width * done / max(total, 1))
    stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} customers "
                 f"{time.perf_counter() - started:.0f} s")
    stream.flush()


def _excluded(book: CustomerBook, spec: CampaignSpec) -> np.ndarray:
    excluded = np.isin(book.stages.ids.to_external(book.stage_codes), spec.exclude_life_stages)
    if spec.exclude_customers:
        frame = read_table(spec.exclude_customers)
        if C.CUSTOMER_ID not in frame.columns:
            raise ConfigError(f"{spec.exclude_customers}: needs a customer_id column")
        positions = book.ids.to_internal_lenient(frame[C.CUSTOMER_ID].astype(str))
        excluded[positions[positions >= 0]] = True
    return excluded


def run_campaign(engine: OfferEngine, book: CustomerBook, spec: CampaignSpec,
                 responses=None, chunk_size: int = 100_000, progress=sys.stderr,
                 decisions=None) -> pd.DataFrame:
    """The campaign list (OUTPUT_COLUMNS), rules and policy applied, quotas respected.

    With a decision log, every customer reached gets a logged decision (source "batch") and
    the list a ``decision_id`` column.
    """
    spec.check(engine)
    context = DecisionContext(channel=spec.channel, intent=spec.intent)
    campaign_cols = engine.catalog.ids.to_internal(list(spec.products))
    in_campaign = np.zeros(len(engine.catalog), dtype=bool)
    in_campaign[campaign_cols] = True
    quotas = {int(c): int(spec.quotas[p]) for c, p in zip(campaign_cols, spec.products,
                                                         strict=True)}
    # The greedy skips a better pair of product p only when p's quota is full or its customer
    # is full with other products' pairs, of which there are at most sum(quotas). So keeping
    # the best sum(quotas) pairs of each product loses nothing the greedy would take.
    total = sum(quotas.values())
    keep = {c: max(total, 1) for c in quotas}
    excluded = _excluded(book, spec)
    pool, started = _Candidates(), time.perf_counter()
    for start in range(0, len(book), chunk_size):
        positions = np.arange(start, min(start + chunk_size, len(book)))
        batch = book.batch(positions)
        contact = None
        if responses is not None:
            since = context.now() - timedelta(days=max(spec.contact_window_days, 90))
            history = responses.contact_history(list(batch.customer_ids), since)
            contact = contact_state(history, batch.customer_ids, engine.catalog, engine.policy,
                                    context, book.snapshot)
        scored = engine.score(batch, len(campaign_cols), context, contact)
        ok = np.isfinite(scored.priority) & in_campaign[None, :]
        ok &= scored.propensity >= spec.min_propensity
        ok &= (~excluded[positions] & (scored.slots > 0))[:, None]
        if responses is not None and spec.contact_window_days > 0:
            recent = history[pd.to_datetime(history["recorded_at"], utc=True)
                             >= context.now() - timedelta(days=spec.contact_window_days)]
            ok[np.isin(batch.customer_ids, recent[C.CUSTOMER_ID].unique())] = False
        rows, cols = np.nonzero(ok)
        pool.add(rows=positions[rows], cols=cols, values=scored.expected_gain[rows, cols],
                 propensity=scored.propensity[rows, cols], priority=scored.priority[rows, cols],
                 sources=scored.sources[rows])
        pool.prune(keep)
        _progress(positions[-1] + 1, len(book), started, progress)
    if progress is not None:
        progress.write("\n")
    candidates = pool.merged()
    chosen = greedy_assign(candidates["rows"], candidates["cols"], candidates["values"],
                           quotas, spec.max_offers_per_customer)
    result = pd.DataFrame({
        "customer_id": book.ids.to_external(candidates["rows"][chosen].astype(np.int64)),
        "product_id": engine.catalog.ids.to_external(candidates["cols"][chosen].astype(np.int64)),
        "propensity": candidates["propensity"][chosen].astype(np.float64),
        "priority": candidates["priority"][chosen].astype(np.float64),
        "expected_value": candidates["values"][chosen].astype(np.float64),
        "reason_code": np.char.add("ranked_by_", candidates["sources"][chosen].astype(str)),
    })
    result = result.sort_values(["customer_id", "priority", "product_id"],
                                ascending=[True, False, True], ignore_index=True)
    result["rank"] = result.groupby("customer_id").cumcount() + 1
    log.info("campaign %s: %d offers to %d customers in %.1f s", spec.name, len(result),
             result["customer_id"].nunique(), time.perf_counter() - started)
    result = result[list(OUTPUT_COLUMNS)]
    if decisions is not None:
        result = _log_decisions(engine, book, spec, result, responses, context, decisions,
                                chunk_size)
    return result


def _log_decisions(engine: OfferEngine, book: CustomerBook, spec: CampaignSpec,
                   result: pd.DataFrame, responses, context: DecisionContext, decisions,
                   chunk_size: int) -> pd.DataFrame:
    """One logged decision per customer reached: the inputs it was computed from and the
    offers the campaign made; ``nbo replay`` recomputes their values."""
    from .policy import ContactState
    from .replay import batch_decision_inputs

    ordered = result.sort_values(["customer_id", "rank"], ignore_index=True)
    customers, first = np.unique(ordered["customer_id"].to_numpy().astype(str),
                                 return_index=True)
    bounds = np.append(first, len(ordered))
    columns = {name: ordered[name].to_numpy() for name in
               ("product_id", "rank", "propensity", "priority", "expected_value")}
    ids: dict[str, str] = {}
    limit = len(spec.products)
    for start in range(0, len(customers), chunk_size):
        chunk = customers[start:start + chunk_size]
        batch = book.batch(book.ids.to_internal(chunk))
        contact = ContactState.empty(len(batch), len(engine.catalog))
        if responses is not None:
            since = context.now() - timedelta(days=max(spec.contact_window_days, 90))
            contact = contact_state(responses.contact_history(list(chunk), since), chunk,
                                    engine.catalog, engine.policy, context, book.snapshot)
        inputs = batch_decision_inputs(batch, engine.catalog, contact, context, limit)
        rows = []
        for i, cid in enumerate(chunk):
            lo, hi = bounds[start + i], bounds[start + i + 1]
            offers = [{"product_id": str(columns["product_id"][j]),
                       "rank": int(columns["rank"][j]),
                       "propensity": round(float(columns["propensity"][j]), 6),
                       "priority": round(float(columns["priority"][j]), 6),
                       "expected_value": round(float(columns["expected_value"][j]), 6)}
                      for j in range(lo, hi)]
            rows.append({
                "customer_id": str(cid), "source": "batch",
                "model_version": engine.model.version, "policy_version": engine.policy.version,
                "policy_text": engine.policy.text,
                "inputs": {**inputs[i], "campaign": spec.name},
                "output": {"campaign": spec.name, "offers": offers},
            })
        ids.update(zip(chunk, decisions.record_many(rows), strict=True))
    return result.assign(decision_id=result["customer_id"].map(ids))


def top_customers(engine: OfferEngine, book: CustomerBook, product_id: str, n: int,
                  channel: str = "branch", chunk_size: int = 100_000,
                  progress=sys.stderr) -> pd.DataFrame:
    """The ``n`` best customers for one product (the classic target list), policy applied."""
    column = engine.catalog.ids.position(product_id)
    context = DecisionContext(channel=channel)
    names = ("position", "propensity", "priority", "expected_value")
    best = {name: np.empty(0) for name in names}
    started = time.perf_counter()
    for start in range(0, len(book), chunk_size):
        positions = np.arange(start, min(start + chunk_size, len(book)))
        scored = engine.score(book.batch(positions), 1, context)
        ok = np.isfinite(scored.priority[:, column]) & (scored.slots > 0)
        chunk = {"position": positions[ok], "propensity": scored.propensity[ok, column],
                 "priority": scored.priority[ok, column],
                 "expected_value": scored.expected_gain[ok, column]}
        merged = {name: np.concatenate([best[name], chunk[name]]) for name in names}
        order = np.lexsort((merged["position"], -merged["expected_value"]))[:n]
        best = {name: values[order] for name, values in merged.items()}
        _progress(positions[-1] + 1, len(book), started, progress)
    if progress is not None:
        progress.write("\n")
    return pd.DataFrame({
        "customer_id": book.ids.to_external(best["position"].astype(np.int64)),
        "product_id": product_id, "rank": np.arange(1, len(best["position"]) + 1),
        "propensity": best["propensity"].astype(np.float64),
        "priority": best["priority"].astype(np.float64),
        "expected_value": best["expected_value"].astype(np.float64),
        "reason_code": "target_list",
    })


def write_list(frame: pd.DataFrame, path: str | Path) -> Path:
    """Parquet or CSV by extension, written whole or not at all."""
    path = Path(path)
    if path.suffix.lower() not in (".parquet", ".csv"):
        raise ConfigError(f"output {path}: use a .parquet or .csv file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        if path.suffix.lower() == ".csv":
            frame.to_csv(partial, index=False)
        else:
            frame.to_parquet(partial, index=False)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def summary(frame: pd.DataFrame, book: CustomerBook, spec: CampaignSpec) -> dict[str, Any]:
    """Offers per product and per life stage, expected uptake and value."""
    stage = book.stages.ids.to_external(
        book.stage_codes[book.ids.to_internal(frame["customer_id"])]) if len(frame) else []
    per_product = frame.groupby("product_id").agg(
        offers=("customer_id", "size"), expected_uptake=("propensity", "sum"),
        expected_value=("expected_value", "sum"))
    return {
        "campaign": spec.name, "channel": spec.channel, "customers_scored": len(book),
        "offers": len(frame), "customers_reached": int(frame["customer_id"].nunique()),
        "expected_uptake": float(frame["propensity"].sum()),
        "expected_value": float(frame["expected_value"].sum()),
        "per_product": {p: {"quota": spec.quotas[p],
                            **{k: float(v) for k, v in per_product.loc[p].items()}}
                        if p in per_product.index else {"quota": spec.quotas[p], "offers": 0.0}
                        for p in spec.products},
        "per_life_stage": pd.Series(stage, dtype=object).value_counts().to_dict(),
    }


def write_summary(result: dict[str, Any], folder: str | Path) -> Path:
    """``summary.md`` and ``offers_per_product.png`` for the campaign team."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    products = list(result["per_product"])
    offers = [result["per_product"][p].get("offers", 0.0) for p in products]
    quotas = [result["per_product"][p]["quota"] for p in products]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(products) + 1.5))
    ax.barh(products, quotas, color="#d5d8dc", label="quota")
    ax.barh(products, offers, color="#c0392b", label="offers")
    ax.invert_yaxis()
    ax.legend()
    ax.set_title(f"Campaign {result['campaign']}: offers against quotas")
    fig.tight_layout()
    fig.savefig(folder / "offers_per_product.png", dpi=110)
    plt.close(fig)
    lines = [f"# Campaign {result['campaign']} ({result['channel']})", "",
             f"{result['customers_scored']:,} customers scored; {result['offers']:,} offers to "
             f"{result['customers_reached']:,} customers; expected uptake "
             f"{result['expected_uptake']:.1f}, expected value {result['expected_value']:.2f}.",
             "", "| product | quota | offers | expected uptake |", "|---|---|---|---|"]
    for p in products:
        row = result["per_product"][p]
        lines.append(f"| {p} | {row['quota']:,} | {int(row.get('offers', 0)):,} | "
                     f"{row.get('expected_uptake', 0.0):.1f} |")
    lines += ["", "| life stage | offers |", "|---|---|"]
    lines += [f"| {s} | {n:,} |" for s, n in result["per_life_stage"].items()]
    lines += ["", "![Offers per product](offers_per_product.png)", ""]
    path = folder / "summary.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
