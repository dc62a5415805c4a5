"""Campaign speed at bank scale: the project's campaign against the bare limits.

    python scripts/bench_campaign.py --customers 1000000 --json bench_campaign.json

Generates (or reuses, under --work) a demo bank and a trained model with the `nbo` command in
child processes, so this process's peak memory is the campaign's own. Then times, over the
same customers: (a) the campaign as `nbo campaign` runs it, from the extracts on disk (split
into parts, so memory does not grow with customers) with every rule, the ranker the product
serves, its decisions logged and the list written; (b) the same with the CF (hybrid) ranker,
from disk (``campaign_cf_from_disk_s``) and, like (d) and (e), over customers already in
memory (``campaign_cf_s``); (c) the served ranker's raw scores, no rules, no output; (d) one
numpy matmul of the ALS factors plus argpartition; (e) implicit's batch recommend. The two
second-scale measures, (b) in memory and (d), are the best of three runs (warm).
``peak_rss_mb`` is the peak of the campaigns from disk, before the whole book is loaded;
``peak_rss_mb_children`` the largest child (the split of a big bank runs in one).
The lists of (a) and (b) are written to --work (``campaign.parquet``, ``campaign_cf.parquet``)
so two runs, under two OpenBLAS kernels say, can be compared row by row. Prints and writes
JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from bench_tools import require  # noqa: E402 (scripts/ is on the path)
from benchdata import prepare  # noqa: E402

# numpy and the library are imported in main, after ``require``: that takes up to seconds.
SPEC = Path(__file__).resolve().parents[1] / "examples" / "campaign.toml"
CHUNK = 100_000
log = logging.getLogger("bench_campaign")


def _timed(function):
    started = time.perf_counter()
    value = function()
    return value, round(time.perf_counter() - started, 2)


def _best_of(function, runs: int = 3) -> float:
    """The fastest of a few runs: the second-scale measures, warm (pages and caches in)."""
    return min(_timed(function)[1] for _ in range(runs))


def _ratio(numerator: float, denominator: float, digits: int) -> float | None:
    """None when the denominator rounds to 0 s: a bank too small to measure it."""
    return round(numerator / denominator, digits) if denominator > 0 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--json", required=True)
    parser.add_argument("--work", default="bench_work", help="where the bank and model live")
    parser.add_argument("--quota-scale", type=int,
                        help="multiply the example quotas by this (default: customers / 100,000)")
    parser.add_argument("--campaigns-only", action="store_true",
                        help="time (a) and (b) from disk only: the memory check at 2M customers")
    args = parser.parse_args(argv)
    require(__file__, files={SPEC: "restore it from the repository"})
    import numpy as np

    from recommender.campaign.output import write_list
    from recommender.campaign.run import run_campaign
    from recommender.campaign.spec import CampaignSpec
    from recommender.data.book import load_book
    from recommender.data.partition import open_customers
    from recommender.policy.offers import OfferEngine
    from recommender.ranking import artifacts
    from recommender.ranking.ranker import served_ranker
    from recommender.service import open_decision_log

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    data, models = prepare(Path(args.work), args.customers)

    model = artifacts.load(models)
    base = CampaignSpec.from_toml(SPEC)
    scale = args.quota_scale or max(1, args.customers // 100_000)
    spec = replace(base, quotas={p: q * scale for p, q in base.quotas.items()})
    engine = OfferEngine(model)
    state = Path(args.work) / "state"
    shutil.rmtree(state, ignore_errors=True)

    def campaign() -> int:  # what `nbo campaign` does, but for the summary's plot
        with open_customers(data, model) as customers, open_decision_log(state) as decisions:
            frame = run_campaign(engine, customers, spec, progress=None, decisions=decisions)
        write_list(frame, Path(args.work) / "campaign.parquet")
        return len(frame)

    offers, campaign_s = _timed(campaign)
    cf_engine = OfferEngine(replace(model, served="hybrid"))

    def campaign_cf():
        with open_customers(data, model) as customers:
            return run_campaign(cf_engine, customers, spec, progress=None)

    cf_frame, campaign_cf_from_disk_s = _timed(campaign_cf)
    # Both lists stay in --work, to compare runs (under two BLAS kernels, say) row by row.
    write_list(cf_frame, Path(args.work) / "campaign_cf.parquet")
    peak_campaign = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # The split of a big bank runs in a child; so do `nbo` runs that made the bank above.
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if args.campaigns_only:
        result = {"customers": args.customers, "quota_scale": scale, "served": model.served,
                  "offers": offers,
                  "campaign_s": campaign_s, "campaign_cf_from_disk_s": campaign_cf_from_disk_s,
                  "peak_rss_mb": round(peak_campaign, 1),
                  "peak_rss_mb_children": round(peak_children, 1)}
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
        sys.stdout.write(json.dumps(result) + "\n")
        return 0

    book = load_book(data, model)
    campaign_cf_s = _best_of(lambda: run_campaign(cf_engine, book, spec, progress=None))
    ranker = served_ranker(model)

    def bare() -> None:
        for start in range(0, len(book), CHUNK):
            ranker.score(book.batch(np.arange(start, min(start + CHUNK, len(book)))))

    _, ranker_bare_s = _timed(bare)
    als = model.cf._als  # the bare limit reads the factors directly

    def numpy_limit() -> np.ndarray:
        scores = np.asarray(als.user_factors) @ als.item_factors.T
        return np.argpartition(-scores, 4, axis=1)[:, :5]

    numpy_limit_s = _best_of(numpy_limit)
    users = np.arange(len(book))
    _, implicit_batch_s = _timed(lambda: als.recommend(users, model.cf.user_items[users], N=5))
    result = {
        "customers": len(book), "served": model.served, "offers": offers,
        "campaign_s": campaign_s, "campaign_cf_s": campaign_cf_s,
        "campaign_cf_from_disk_s": campaign_cf_from_disk_s,
        "ranker_bare_s": ranker_bare_s, "numpy_limit_s": numpy_limit_s,
        "implicit_batch_s": implicit_batch_s,
        "peak_rss_mb": round(peak_campaign, 1), "peak_rss_mb_children": round(peak_children, 1),
        "peak_rss_mb_with_book": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                                       1),
        "ratios": {
            "campaign_cf_s/numpy_limit_s": _ratio(campaign_cf_s, numpy_limit_s, 1),
            "implicit_batch_s/campaign_cf_s": _ratio(implicit_batch_s, campaign_cf_s, 2),
            "campaign_s/ranker_bare_s": _ratio(campaign_s, ranker_bare_s, 2),
        },
    }
    Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
