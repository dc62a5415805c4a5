"""Decision inputs as plain data, and the replay of a logged decision.

A decision is recorded with exactly what it was computed from (profile, recent holdings,
contact state, context), so that ``nbo replay`` rebuilds the same batch, loads the same
model version and policy, and shows the same answer.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data import columns as C
from ..data.book import CustomerBatch
from ..data.catalog import Catalog
from ..data.customers import validate_customers
from ..data.life_stages import LifeStageRules
from ..policy.adaptive import Adjustment
from ..policy.config import parse_policy
from ..policy.offers import OfferEngine, decided
from ..policy.rules import ContactState, DecisionContext
from ..ranking import artifacts
from ..ranking.reproducible import ATOL, RTOL
from .decisions import Decision

_CONTACT_MASKS = ("declined_recently", "paused", "accepted_pending")


def decision_inputs(batch: CustomerBatch, i: int, catalog: Catalog, contact: ContactState,
                    context: DecisionContext, limit: int) -> dict[str, Any]:
    """Everything customer ``i``'s decision depends on, as JSON-able data."""
    return batch_decision_inputs(batch, catalog, contact, context, limit, [i])[0]


def batch_decision_inputs(batch: CustomerBatch, catalog: Catalog, contact: ContactState,
                          context: DecisionContext, limit: int,
                          rows: list[int] | None = None) -> list[dict[str, Any]]:
    """``decision_inputs`` for many customers at once."""
    return _inputs(batch, catalog.ids.external_ids, contact, context, limit, rows)


def _inputs(batch: CustomerBatch, names: np.ndarray, contact: ContactState,
            context: DecisionContext, limit: int, rows: list[int] | None) -> list[dict[str, Any]]:
    """The inputs of these rows' decisions. Arrays become lists once, not value by value, and
    the API's one-customer batch is read whole, not indexed: numpy calls on single values would
    cost more than the answer's rules."""
    whole = rows is None or list(rows) == list(range(len(batch)))
    rows = list(range(len(batch))) if rows is None else list(rows)
    records = batch.profile_records(rows)
    idx = None if whole else np.asarray(rows, dtype=np.int64)
    names = names.tolist()

    def rows_of(array: Any) -> Any:  # an array or matrix row-aligned with the batch
        return array if idx is None else array[idx]

    def csr_rows(matrix: Any) -> sp.csr_matrix:
        csr = rows_of(matrix)
        if not isinstance(csr, sp.csr_matrix):
            csr = sp.csr_matrix(csr)
        if not csr.has_sorted_indices:
            csr = csr.sorted_indices()
        return csr

    def named(bounds: np.ndarray, columns: np.ndarray) -> list[list[str]]:
        """Each row's product ids, from CSR row bounds into ``columns``."""
        bounds, columns = bounds.tolist(), columns.tolist()
        return [[names[c] for c in columns[a:b]]
                for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    lags = [named(csr.indptr, csr.indices) for csr in map(csr_rows, batch.lags)]
    masks = {m: [[name for name, on in zip(names, row, strict=True) if on]
                 for row in rows_of(getattr(contact, m)).tolist()] for m in _CONTACT_MASKS}
    present = (np.asarray(rows_of(batch.present), dtype=bool).tolist()
               if batch.present is not None else [[] for _ in rows])
    shown = rows_of(contact.shown_today).tolist()
    confidence = csr_rows(batch.confidence)
    bounds, columns = confidence.indptr.tolist(), confidence.indices.tolist()
    weights = np.asarray(confidence.data, dtype=np.float64).tolist()
    ctx = {"channel": context.channel, "intent": context.intent,
           "at": context.now().isoformat()}
    out = []
    for k, record in enumerate(records):
        a, b = bounds[k], bounds[k + 1]
        out.append({
            "profile": record,
            "lags": [lag[k] for lag in lags],
            "present": present[k],
            "confidence": {names[c]: v for c, v in zip(columns[a:b], weights[a:b], strict=True)},
            "contact": {**{m: masks[m][k] for m in _CONTACT_MASKS}, "shown_today": int(shown[k])},
            "context": ctx, "limit": int(limit),
        })
    return out


_PACK_FORMAT = "nbo-decision-pack/1"


def pack_decisions(batch: CustomerBatch, contact: ContactState, context: DecisionContext,
                   limit: int, catalog: Catalog, offers: dict[str, np.ndarray],
                   extra: dict[str, Any]) -> bytes:
    """The inputs and offers of a batch's decisions, column-wise, as one ``.npz`` blob.

    ``offers`` holds arrays ``row`` (into the batch), ``product`` (catalog position),
    ``rank``, ``propensity``, ``priority`` and ``expected_value``; ``extra`` (e.g. the
    campaign name) goes into every decision. ``unpacked`` turns one row back into the same
    inputs and output a one-at-a-time decision records.
    """
    header = {"format": _PACK_FORMAT, "products": catalog.ids.external_ids.tolist(),
              "context": {"channel": context.channel, "intent": context.intent,
                          "at": context.now().isoformat()},
              "limit": int(limit), "extra": extra, "lags": len(batch.lags)}
    profiles = io.BytesIO()
    batch.profiles.drop(columns=[C.GENDER], errors="ignore").to_parquet(profiles, index=False)
    arrays = {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
              "profiles": np.frombuffer(profiles.getvalue(), dtype=np.uint8),
              "present": np.asarray(batch.present, dtype=bool),
              "shown_today": np.asarray(contact.shown_today, dtype=np.int64)}
    for name in _CONTACT_MASKS:
        arrays[name] = np.asarray(getattr(contact, name), dtype=bool)
    for name, matrix in [(f"lag{k}", lag) for k, lag in enumerate(batch.lags)] + [
            ("confidence", batch.confidence)]:
        csr = sp.csr_matrix(matrix)
        csr.sort_indices()
        arrays.update({f"{name}_indptr": csr.indptr, f"{name}_indices": csr.indices,
                       f"{name}_data": csr.data})
    arrays.update({f"offer_{k}": np.asarray(v) for k, v in offers.items()})
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def unpacked(decision: Decision) -> Decision:
    """A packed (batch) decision with its own inputs and output, as if recorded alone."""
    if decision.pack is None:
        return decision
    with np.load(io.BytesIO(decision.pack), allow_pickle=False) as blob:
        header = json.loads(blob["header"].tobytes())
        if header.get("format") != _PACK_FORMAT:
            raise ValueError(f"decision {decision.id}: unknown pack format {header.get('format')}")
        i, names = decision.pack_row, np.asarray(header["products"], dtype=object)
        profiles = pd.read_parquet(io.BytesIO(blob["profiles"].tobytes())).iloc[[i]]

        def row(name: str) -> sp.csr_matrix:
            indptr = blob[f"{name}_indptr"]
            lo, hi = indptr[i], indptr[i + 1]
            return sp.csr_matrix((blob[f"{name}_data"][lo:hi], blob[f"{name}_indices"][lo:hi],
                                  [0, hi - lo]), shape=(1, len(names)))

        lags = tuple(row(f"lag{k}") for k in range(header["lags"]))
        batch = CustomerBatch(
            customer_ids=profiles[C.CUSTOMER_ID].to_numpy(),
            profile_frame=profiles.reset_index(drop=True),
            held=lags[0] if lags else row("confidence"), confidence=row("confidence"),
            stages=np.zeros(1, dtype=np.int64), lags=lags, present=blob["present"][[i]])
        contact = ContactState(*[blob[m][[i]] for m in _CONTACT_MASKS],
                               shown_today=blob["shown_today"][[i]])
        ctx = header["context"]
        context = DecisionContext(ctx["channel"], ctx["intent"], datetime.fromisoformat(ctx["at"]))
        inputs = {**_inputs(batch, names, contact, context, header["limit"], [0])[0],
                  **header["extra"]}
        mine = np.flatnonzero(blob["offer_row"] == i)
        mine = mine[np.argsort(blob["offer_rank"][mine], kind="stable")]
        offers = [{"product_id": str(names[blob["offer_product"][j]]),
                   "rank": int(blob["offer_rank"][j]),
                   **{k: round(float(blob[f"offer_{k}"][j]), 6)
                      for k in ("propensity", "priority", "expected_value")}} for j in mine]
    return replace(decision, inputs=inputs, output={**header["extra"], "offers": offers},
                   pack=None)


def _row(ids: list[str], catalog: Catalog, values: dict[str, float] | None = None):
    cols = catalog.ids.to_internal(ids)
    data = [values[p] for p in ids] if values else np.ones(len(ids))
    return sp.csr_matrix((np.asarray(data, dtype=np.float32), (np.zeros(len(cols)), cols)),
                         shape=(1, len(catalog)))


def rebuild(inputs: dict[str, Any], catalog: Catalog, stages: LifeStageRules,
            ) -> tuple[CustomerBatch, ContactState, DecisionContext, int]:
    """The one-customer batch, contact state and context a decision was computed from."""
    profiles = validate_customers(pd.DataFrame([inputs["profile"]]), source="decision log",
                                  quiet=True)
    lags = tuple(_row(ids, catalog) for ids in inputs["lags"])
    confidence = inputs["confidence"]
    held = lags[0] if lags else _row([], catalog)
    batch = CustomerBatch(
        customer_ids=profiles[C.CUSTOMER_ID].to_numpy(), profile_frame=profiles, held=held,
        confidence=_row(sorted(confidence), catalog, confidence), stages=stages.assign(profiles),
        lags=lags, present=np.array([inputs["present"]], dtype=bool),
    )
    contact = inputs["contact"]
    state = ContactState(
        *[np.asarray(_row(contact[m], catalog).toarray() > 0) for m in _CONTACT_MASKS],
        shown_today=np.array([contact["shown_today"]]),
    )
    ctx = inputs["context"]
    context = DecisionContext(ctx["channel"], ctx["intent"], datetime.fromisoformat(ctx["at"]))
    return batch, state, context, int(inputs["limit"])


@dataclass(frozen=True)
class Replay:
    decision: Decision
    output: dict[str, Any]

    @property
    def same(self) -> bool:
        return agree(_comparable(self.output), _comparable(self.decision.output))


def _comparable(output: dict[str, Any]) -> dict[str, Any]:
    """The decision itself: offers, their order, scores and reasons; not ids, timing or
    wording (records made before ``decided`` kept the English texts too)."""
    return {k: v for k, v in decided(output).items() if k not in ("decision_id", "customer_id")}


def agree(a: Any, b: Any) -> bool:
    """Two answers agree: the same decision (offers, order, reasons, sources) exactly, and
    numbers within ``reproducible.RTOL``/``ATOL`` (exp and log may round the last bit
    otherwise on another CPU; on one machine every path gives the same bits)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(agree(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(agree(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and bool(
            np.isclose(a, b, rtol=RTOL, atol=ATOL))
    return a == b


def replay(decision: Decision, models_dir: str | Path) -> Replay:
    """Recompute a logged decision with its own model version and policy text."""
    decision = unpacked(decision)
    model = artifacts.load(models_dir, decision.model_version)
    engine = OfferEngine(model, parse_policy(decision.policy_text, "decision log policy"))
    batch, contact, context, limit = rebuild(decision.inputs, model.catalog, model.stages)
    if decision.source == "batch":  # a campaign: recompute the values of the offers it made
        scored = engine.score(batch, limit, context, contact)
        positions = {p: model.catalog.ids.position(p) for p in model.catalog.ids.external_ids}
        offers = [{"product_id": o["product_id"], "rank": o["rank"],
                   "propensity": round(float(scored.propensity[0, positions[o["product_id"]]]), 6),
                   "priority": round(float(scored.priority[0, positions[o["product_id"]]]), 6),
                   "expected_value": round(
                       float(scored.expected_gain[0, positions[o["product_id"]]]), 6)}
                  for o in decision.output["offers"]]
        return Replay(decision, {"campaign": decision.inputs["campaign"], "offers": offers})
    adjustment = None
    if "adaptive" in decision.inputs:  # the factors of its minute, not today's
        adjustment = Adjustment.from_record(decision.inputs["adaptive"],
                                            [str(p) for p in model.catalog.ids.external_ids])
    result = engine.offers(batch, limit, context, contact, adjustment=adjustment)[0].to_dict("en")
    result["model_version"], result["policy_version"] = model.version, engine.policy.version
    if "arm" in decision.inputs:
        result["arm"] = decision.inputs["arm"]
    return Replay(decision, result)  # with its wording: what the customer was told
