"""Generalisation benchmark: the served method beside plain baselines on banks of other shapes.

The project must rank well on banks it was not built on: one snapshot or years of them, a
few products or many, five thousand customers or a million, and columns of their own. This
benchmark builds a spread of such shapes from the data at hand and runs each the way a new
bank would (the documented entry points, default settings), then puts the served method's
figure beside recent popularity and a plain LightGBM on the same information:

- ``santander_one_snapshot``: Santander's April 2016 holdings alone; for each product, rank
  the customers who added it in May (mean AUC over products), MAP@7 per adder beside it. The
  propensity to own is served;
- ``santander_small``: 5,000 Santander customers (a stable hash of the id picks them) with
  their five months; the back-test's MAP@7 on May;
- ``demo_history``: the demo bank, 8 months (MAP@5 on the last month);
- ``demo_features``: the same bank with 20 more customer columns, four numeric and a region
  carrying signal and fifteen of noise; the figure without them is reported beside;
- ``demo_one_snapshot``: the demo bank's last snapshot alone, with its extra columns;
  cross-validated mean AUC per product of who holds it.

    python scripts/bench_generalization.py --json bench_generalization.json \\
        [--santander ../shared/data/santander] [--customers 20000]

Santander shapes are skipped, with the reason in the JSON, when its data is absent.
Output: ``{"shapes": {NAME: {"metric", "served", "methods", "baselines", "seconds"}}}``.
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

ADDERS_FILE = "may2016_adders.parquet"
SMALL_BANK = 5_000
log = logging.getLogger("bench_generalization")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="where to write the JSON result")
    parser.add_argument("--santander", default=str(Path(__file__).resolve().parents[1].parent
                                                    / "shared" / "data" / "santander"),
                        help=f"folder with {ADDERS_FILE} (default: ../shared/data/santander)")
    parser.add_argument("--customers", type=int, default=20_000,
                        help="customers of the demo bank shapes")
    parser.add_argument("--only", nargs="*", help="run only these shapes")
    args = parser.parse_args(argv)
    require(__file__)
    import bank_shapes as shapes  # after the check: it imports the library

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    santander = Path(args.santander) / ADDERS_FILE
    runs = {
        "santander_one_snapshot": lambda: shapes.santander_one_snapshot(santander.parent),
        "santander_small": lambda: shapes.santander_small(santander.parent, SMALL_BANK),
        "demo_history": lambda: shapes.demo_history(args.customers),
        "demo_features": lambda: shapes.demo_features(args.customers),
        "demo_one_snapshot": lambda: shapes.demo_one_snapshot(args.customers),
    }
    results = {}
    for name, run in runs.items():
        if args.only and name not in args.only:
            continue
        if name.startswith("santander") and not santander.is_file():
            results[name] = {"skipped": f"no {santander}: pass --santander the folder of the "
                                        "Santander benchmark data"}
            continue
        started = time.perf_counter()
        result = run()
        result["seconds"] = round(time.perf_counter() - started, 1)
        results[name] = result
        log.info("%s: %s", name, json.dumps(result))
    Path(args.json).write_text(json.dumps({"shapes": results}, indent=2), encoding="utf-8")
    sys.stdout.write(f"{'shape':<24}{'metric':>9}{'served':>14}{'value':>8}"
                     f"{'best baseline':>22}{'value':>8}\n")
    for name, r in results.items():
        if "skipped" in r:
            sys.stdout.write(f"{name:<24}  skipped: {r['skipped']}\n")
            continue
        best = max(r["baselines"], key=r["baselines"].get)
        sys.stdout.write(f"{name:<24}{r['metric']:>9}{r['served']:>14}"
                         f"{r['methods'][r['served']]:>8.4f}{best:>22}"
                         f"{r['baselines'][best]:>8.4f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
