"""Fairness audit: offer rates by gender and by age band against the overall rate.

Gender is never an input to ranking or rules; this audit is the only place it is read.
A group whose offer rate for a product is below four-fifths of the overall rate (the
"four-fifths rule" of adverse impact) is flagged, where the product is offered often
enough and the group is large enough for the rate to mean something.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .data import columns as C
from .data.book import CustomerBook
from .policy.offers import OfferEngine
from .policy.rules import DecisionContext

log = logging.getLogger(__name__)

FOUR_FIFTHS = 0.8
AGE_BANDS = (0, 25, 35, 45, 55, 65, 200)
_CHUNK = 50_000


def age_band(age: np.ndarray) -> np.ndarray:
    """The band of each age; ``unknown`` where the age is (a bank without the column)."""
    labels = [f"{lo}-{hi - 1}" if hi < 200 else f"{lo}+" for lo, hi in
              zip(AGE_BANDS[:-1], AGE_BANDS[1:], strict=True)] + ["unknown"]
    labels[0] = f"<{AGE_BANDS[1]}"
    age = np.asarray(age, dtype=np.float64)
    band = np.where(np.isnan(age), len(labels) - 1, np.digitize(age, AGE_BANDS[1:-1]))
    return np.asarray(labels)[band]


def offer_matrix(engine: OfferEngine, book: CustomerBook, limit: int,
                 context: DecisionContext) -> np.ndarray:
    """(n_customers x n_products) bool: offered in the top ``limit``, policy applied."""
    offered = np.zeros((len(book), len(engine.catalog)), dtype=bool)
    for start in range(0, len(book), _CHUNK):
        positions = np.arange(start, min(start + _CHUNK, len(book)))
        top = engine.offered(engine.score(book.batch(positions), limit, context))
        rows, ranks = np.nonzero(top >= 0)
        offered[positions[rows], top[rows, ranks]] = True
    return offered


def audit(engine: OfferEngine, book: CustomerBook, limit: int = 5,
          context: DecisionContext | None = None, min_group: int = 100,
          min_rate: float = 0.01) -> dict[str, Any]:
    """Offer rates per product for every gender and age band, with four-fifths flags."""
    context = context or DecisionContext(channel=engine.policy.default_channel)
    offered = offer_matrix(engine, book, limit, context)
    products = list(engine.catalog.ids.external_ids)
    overall = offered.mean(axis=0)
    gender = (book.profiles[C.GENDER].astype(str).replace("", "unknown").to_numpy()
              if C.GENDER in book.profiles else np.full(len(book), "unknown"))
    dimensions = {"gender": gender, "age_band": age_band(book.profiles[C.AGE].to_numpy())}
    groups, flags = [], []
    for dimension, values in dimensions.items():
        for group in sorted(pd.unique(values)):
            members = values == group
            rates = offered[members].mean(axis=0)
            ratio = np.divide(rates, overall, out=np.full_like(rates, np.nan),
                              where=overall > 0)
            groups.append({"dimension": dimension, "group": str(group),
                           "customers": int(members.sum()),
                           "any_offer_rate": float(offered[members].any(axis=1).mean()),
                           "rates": dict(zip(products, rates.round(6).tolist(), strict=True)),
                           "ratio": dict(zip(products, np.round(ratio, 4).tolist(),
                                             strict=True))})
            for j, product in enumerate(products):
                if (members.sum() >= min_group and overall[j] >= min_rate
                        and ratio[j] < FOUR_FIFTHS):
                    flags.append({"dimension": dimension, "group": str(group),
                                  "product_id": product, "group_rate": float(rates[j]),
                                  "overall_rate": float(overall[j]),
                                  "ratio": float(ratio[j])})
    return {"customers": len(book), "limit": limit, "channel": context.channel,
            "model_version": engine.model.version, "policy_version": engine.policy.version,
            "overall": dict(zip(products, overall.round(6).tolist(), strict=True)),
            "any_offer_rate": float(offered.any(axis=1).mean()),
            "groups": groups, "flags": flags}


def write_audit(result: dict[str, Any], folder: str | Path) -> Path:
    """``audit.md`` and a heat map of rate ratios (group / overall) per product."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    products = list(result["overall"])
    labels = [f"{g['dimension']}={g['group']}" for g in result["groups"]]
    ratios = np.array([[g["ratio"][p] if g["ratio"][p] is not None else np.nan
                        for p in products] for g in result["groups"]], dtype=float)
    fig, ax = plt.subplots(figsize=(0.45 * len(products) + 3, 0.4 * len(labels) + 2))
    image = ax.imshow(ratios, cmap="RdYlGn", vmin=0.0, vmax=2.0, aspect="auto")
    ax.set_xticks(range(len(products)), products, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for (i, j), value in np.ndenumerate(ratios):
        if np.isfinite(value) and value < FOUR_FIFTHS:
            ax.text(j, i, "!", ha="center", va="center", fontsize=8, color="black")
    fig.colorbar(image, ax=ax, label="offer rate / overall rate")
    ax.set_title("Offer rate ratio by group (! = below four-fifths)")
    fig.tight_layout()
    fig.savefig(folder / "offer_rate_ratios.png", dpi=110)
    plt.close(fig)
    lines = [
        "# Fairness audit of offers", "",
        f"{result['customers']:,} customers, top {result['limit']} offers on channel "
        f"{result['channel']}, model {result['model_version']}, policy "
        f"{result['policy_version']}. Gender is not an input to ranking or rules; it is read "
        "here only.", "",
        f"Share of customers with at least one offer: {result['any_offer_rate']:.3f}.", "",
        "| group | customers | any offer |", "|---|---|---|",
    ]
    lines += [f"| {g['dimension']} = {g['group']} | {g['customers']:,} | "
              f"{g['any_offer_rate']:.3f} |" for g in result["groups"]]
    lines += ["", f"## Flags: offer rate below {FOUR_FIFTHS:.0%} of the overall rate", ""]
    if result["flags"]:
        lines += ["| group | product | group rate | overall rate | ratio |",
                  "|---|---|---|---|---|"]
        lines += [f"| {f['dimension']} = {f['group']} | {f['product_id']} | "
                  f"{f['group_rate']:.4f} | {f['overall_rate']:.4f} | {f['ratio']:.2f} |"
                  for f in result["flags"]]
        lines += ["", "Age-band flags usually follow from eligibility and suitability rules "
                  "(age limits, life stage); gender flags need a closer look."]
    else:
        lines.append("None.")
    lines += ["", "![Offer rate ratios](offer_rate_ratios.png)", ""]
    path = folder / "audit.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    log.info("wrote the fairness audit to %s", path)
    return path
