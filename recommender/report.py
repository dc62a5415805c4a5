"""Evaluation report: a short Markdown file with PNG plots, from ``training.evaluate`` output."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers or in CI
import matplotlib.pyplot as plt  # noqa: E402

log = logging.getLogger(__name__)


def _bar(ax, labels: list[str], values: list[float], highlight: str | None = None) -> None:
    colours = ["#c0392b" if label == highlight else "#7f8c8d" for label in labels]
    ax.barh(labels, values, color=colours)
    for y, value in enumerate(values):
        ax.text(value, y, f" {value:.3f}", va="center", fontsize=8)
    ax.invert_yaxis()


def _chart(path: Path, labels: list[str], values: list[float], xlabel: str, title: str,
           highlight: str | None = None) -> str:
    """A horizontal bar chart saved as PNG; returns the file name for the Markdown."""
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(labels) + 1))
    _bar(ax, labels, values, highlight)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def write_report(result: dict[str, Any], folder: str | Path, title: str) -> Path:
    """``report.md`` and three PNG plots (MAP by method, by life stage, by product)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    k, served = result["k"], result["served"]
    key = f"map@{k}"
    methods = result["methods"]
    names = list(methods)

    by_method = _chart(folder / "map_by_method.png", names, [methods[m][key] for m in names],
                       f"MAP@{k}", f"MAP@{k} by method (served: {served})", served)
    stages = result["by_life_stage"][served]
    stage_names = sorted(stages, key=lambda s: -stages[s]["customers"])
    by_stage = _chart(folder / "map_by_life_stage.png",
                      [f"{s} ({stages[s]['customers']})" for s in stage_names],
                      [stages[s][key] for s in stage_names], f"MAP@{k} of {served}",
                      "By life stage (customers)")
    recall = f"recall@{k}"
    products = {p: v for p, v in result["by_product"][served].items() if v["added"]}
    product_names = sorted(products, key=lambda p: -products[p]["added"])
    by_product = _chart(folder / "recall_by_product.png",
                        [f"{p} ({products[p]['added']})" for p in product_names],
                        [products[p][recall] for p in product_names],
                        f"share of additions found in the top {k} ({served})",
                        "By product (additions)")

    lines = [
        f"# {title}", "", result["protocol"] + ".", "",
        f"Test customers: {result['test_customers']:,}. Served method: **{served}**. "
        f"Evaluation time: {result['seconds']} s.", "",
        f"| method | MAP@{k} | precision@{k} | recall@{k} | NDCG@{k} | coverage |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        m = methods[name]
        marker = " (served)" if name == served else ""
        lines.append(f"| {name}{marker} | {m[key]:.4f} | {m[f'precision@{k}']:.4f} | "
                     f"{m[recall]:.4f} | {m[f'ndcg@{k}']:.4f} | {m['coverage']:.2f} |")
    lines += ["", f"![MAP by method]({by_method})", "",
              f"## By life stage ({served})", "", f"| life stage | customers | MAP@{k} |",
              "|---|---|---|"]
    lines += [f"| {s} | {stages[s]['customers']:,} | {stages[s][key]:.4f} |"
              for s in stage_names]
    lines += ["", f"![MAP by life stage]({by_stage})", "", f"## By product ({served})", "",
              f"| product | additions | offered in top {k} | found in top {k} |",
              "|---|---|---|---|"]
    lines += [f"| {p} | {products[p]['added']:,} | {products[p]['offered']:,} | "
              f"{products[p][recall]:.3f} |" for p in product_names]
    lines += ["", f"![Recall by product]({by_product})", ""]
    calibration = result.get("calibration")
    if calibration:
        lines += ["## Calibration of propensities (held-out month)", "",
                  f"Brier score {calibration['brier']:.5f}; mean predicted "
                  f"{calibration['mean_predicted']:.5f}, observed "
                  f"{calibration['mean_observed']:.5f}.", "",
                  "| predicted | observed | (customer, product) pairs |", "|---|---|---|"]
        lines += [f"| {b['predicted']:.5f} | {b['observed']:.5f} | {b['pairs']:,} |"
                  for b in calibration["bins"]]
        lines.append("")
    path = folder / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    log.info("wrote the evaluation report to %s", path)
    return path
