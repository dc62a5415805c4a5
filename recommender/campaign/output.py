"""What a campaign leaves for its team: the list on disk, written whole or not at all, and
a summary of it (offers per product and life stage against the quotas)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..exceptions import ConfigError
from .spec import CampaignSpec


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


def summary(frame: pd.DataFrame, customers_scored: int, spec: CampaignSpec) -> dict[str, Any]:
    """Offers per product and per life stage, expected uptake and value."""
    per_product = frame.groupby("product_id").agg(
        offers=("customer_id", "size"), expected_uptake=("propensity", "sum"),
        expected_value=("expected_value", "sum"))
    return {
        "campaign": spec.name, "channel": spec.channel, "customers_scored": customers_scored,
        "offers": len(frame), "customers_reached": int(frame["customer_id"].nunique()),
        "expected_uptake": float(frame["propensity"].sum()),
        "expected_value": float(frame["expected_value"].sum()),
        "per_product": {p: {"quota": spec.quotas[p],
                            **{k: float(v) for k, v in per_product.loc[p].items()}}
                        if p in per_product.index else {"quota": spec.quotas[p], "offers": 0.0}
                        for p in spec.products},
        "per_life_stage": frame["life_stage"].value_counts().to_dict(),
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
