"""The offers answer's CPU cost with and without the adaptive correction, in one process.

    python scripts/bench_adaptive_cost.py --json adaptive_cost.json

``bench_serving.py --adaptive`` measures the same through the real server, but one server
run against another on a machine that drifts by a third within minutes says little about a
few per cent. Here two services over the same bank, model and stores (one with the packaged
policy, one with it and an ``[adaptive]`` table refreshed every 10 s) decide for the same
customers, batch after batch, taking turns to go first; the ratio reported is the median of
the batches' CPU time per answer, adaptive over static. Uses the bank, model and state
folder ``bench_serving.py --adaptive`` leaves under ``--work`` (run that first). Prints and
writes JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

log = logging.getLogger("bench_adaptive_cost")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="bench_work", help="bench_serving.py's --work")
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=800, help="answers per arm per round")
    parser.add_argument("--json", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("recommender").setLevel(logging.WARNING)
    from recommender.service import load_service

    work = Path(args.work)
    state, data = work / "serve_state_adaptive", work / f"bank_{args.customers}"
    policy = state / "policy-adaptive.toml"
    if not policy.is_file():
        sys.exit(f"no {policy}: run scripts/bench_serving.py --adaptive --work {work} first")
    services = {
        "static": load_service(data, state / "models", state_dir=state,
                               decision_flush_seconds=1.0),
        "adaptive": load_service(data, state / "models", policy_file=policy,
                                 state_dir=state, decision_flush_seconds=1.0)}
    rng = np.random.default_rng(1)
    ids = [f"C{i:08d}" for i in rng.integers(1, args.customers + 1,
                                              (args.rounds + 1) * args.batch)]
    for service in services.values():  # warm: pages of the book and the score table
        for customer in ids[:args.batch]:
            service.offers(customer, channel="mobile")
    rounds = []
    for r in range(args.rounds):
        batch = ids[(r + 1) * args.batch:(r + 2) * args.batch]
        order = ("static", "adaptive") if r % 2 == 0 else ("adaptive", "static")
        cpu = {}
        for name in order:
            started = time.process_time()
            for customer in batch:
                services[name].offers(customer, channel="mobile")
            cpu[name] = round((time.process_time() - started) / len(batch) * 1000, 4)
        ratio = round(cpu["adaptive"] / cpu["static"], 4)
        rounds.append({"first": order[0], **cpu, "ratio": ratio})
        log.info("round %d: %s", r, rounds[-1])
    result = {"rounds": rounds, "adaptive_cpu_ms/static_cpu_ms": round(statistics.median(
        r["ratio"] for r in rounds), 4), "target": 1.1}
    result["target_met"] = result["adaptive_cpu_ms/static_cpu_ms"] <= result["target"]
    Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
