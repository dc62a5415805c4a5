"""Real-data quality benchmark: rank May-2016 additions on the Santander data.

Protocol (../shared/data/santander/README.md): every method is fitted on the months up to
April 2016 and ranks the products each customer added in May, skipping owned products;
MAP@7 is averaged over the 27,875 customers who added something ("per adder").

    python scripts/bench_quality.py --data ../shared/data/santander --json bench_quality.json \
        --report reports/santander

Prints a table and a JSON line; writes the JSON file and a Markdown report with plots.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from bench_tools import require  # noqa: E402 (scripts/ is on the path)

# The library is imported in main, after ``require``: its import takes up to seconds.
ADDERS_FILE = "may2016_adders.parquet"  # santander.ADDERS_FILE, named here for the check
K = 7
ALL_CUSTOMER_FACTOR = 27_875 / 926_663  # per-adder MAP@7 -> leaderboard-scale MAP@7
log = logging.getLogger("bench_quality")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help=f"folder with {ADDERS_FILE}")
    parser.add_argument("--json", required=True, help="where to write the JSON result")
    parser.add_argument("--report", default="reports/santander",
                        help="folder for report.md and the PNG plots")
    parser.add_argument("--config", help="training config TOML (default: the project's)")
    args = parser.parse_args(argv)
    require(__file__, files={
        Path(args.data) / ADDERS_FILE: "pass --data the folder of the Santander benchmark data "
        "(../shared/data/santander)"})
    from recommender.data import santander
    from recommender.ranking.backtest import evaluate
    from recommender.ranking.config import TrainConfig
    from recommender.report import write_report

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    started = time.perf_counter()
    bank = santander.load_adders(args.data)
    config = TrainConfig.from_toml(args.config) if args.config else TrainConfig()
    result = evaluate(bank.bank, bank.catalog, bank.stages, config, k=K)
    methods = {
        name: {"map7_per_adder": m[f"map@{K}"], "map7_all_customer_equivalent":
               m[f"map@{K}"] * ALL_CUSTOMER_FACTOR, "precision7": m[f"precision@{K}"],
               "recall7": m[f"recall@{K}"], "ndcg7": m[f"ndcg@{K}"], "coverage": m["coverage"]}
        for name, m in result["methods"].items()
    }
    output = {
        "methods": methods, "served": result["served"], "customers": result["test_customers"],
        "protocol": result["protocol"], "by_life_stage": result["by_life_stage"],
        "by_product": result["by_product"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    Path(args.json).write_text(json.dumps(output, indent=2), encoding="utf-8")
    write_report(result, args.report, "Santander benchmark: May-2016 additions")
    sys.stdout.write(f"{'method':<18}{'MAP@7/adder':>12}{'recall@7':>10}{'NDCG@7':>9}\n")
    for name, m in methods.items():
        mark = "  <- served" if name == output["served"] else ""
        sys.stdout.write(f"{name:<18}{m['map7_per_adder']:>12.4f}{m['recall7']:>10.4f}"
                         f"{m['ndcg7']:>9.4f}{mark}\n")
    summary = {k: output[k] for k in ("served", "customers", "seconds")}
    summary["served_map7_per_adder"] = methods[output["served"]]["map7_per_adder"]
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
