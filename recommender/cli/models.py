"""``nbo train`` and ``nbo evaluate``: model versions fitted and judged on held-out months."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from .arguments import (
    add_model_inputs,
    add_spark_inputs,
    catalog_and_stages,
    positive_int,
    spark_and_extracts,
)

log = logging.getLogger("nbo")  # every command logs as "nbo", whatever its module


def _config(args: argparse.Namespace):
    from ..ranking.config import TrainConfig
    from ..ranking.training import with_overrides

    config = TrainConfig.from_toml(args.config) if args.config else TrainConfig()
    return with_overrides(config, kind=args.cf, factors=args.factors)


def cmd_train(args: argparse.Namespace) -> int:
    from ..data.extracts import load_bank
    from ..ranking.training import train

    catalog, stages, cat_text, st_text = catalog_and_stages(args)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nbo-training-sample-") as sample:
        data = args.data if args.engine == "local" else _sampled_on_spark(args, catalog, sample)
        bank = load_bank(data, catalog)
        model = train(bank, catalog, stages, _config(args), args.models, cat_text, st_text,
                      run_evaluation=not args.no_evaluate)
    metrics = model.manifest.get("metrics", {})
    log.info("trained model %s in %.1f s", model.version, time.perf_counter() - started)
    if metrics:
        _print_metrics(metrics)
    return 0


def _sampled_on_spark(args: argparse.Namespace, catalog, folder: str) -> str:
    """``nbo train --engine spark``: the bank read and checked by Spark, sampled by a hash of
    the customer id above ``--sample-above`` customers, as a data folder to train on."""
    from ..spark.training import sample_to_folder

    spark, where = spark_and_extracts(args, "nbo train")
    return str(sample_to_folder(spark, where, catalog, folder, args.sample_above,
                                args.part_size))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..data.extracts import load_bank
    from ..ranking import artifacts
    from ..ranking.training import assess, fingerprint

    catalog, stages, _, _ = catalog_and_stages(args)
    bank = load_bank(args.data, catalog)
    result = assess(bank, catalog, stages, _config(args), k=args.k)
    _print_metrics(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    if args.report:
        from ..report import write_report

        write_report(result, args.report, f"Evaluation of {args.data}")
    if args.record:
        path = artifacts.record_metrics(args.models, result, fingerprint(bank))
        log.info("recorded the metrics in %s", path)
    return 0


def _print_metrics(result: dict) -> None:
    if result.get("evaluation") == "cross_validation":
        sys.stdout.write(f"{result['protocol']}\ncustomers: {result['customers']}\n"
                         f"{'method':<18}{'mean AUC':>10}{'lift@10%':>10}\n")
        for name, m in result["methods"].items():
            served = "  <- served" if name == result["served"] else ""
            auc, lift = m["mean_auc"], m["mean_lift@0.1"]
            sys.stdout.write(f"{name:<18}{auc or float('nan'):>10.4f}"
                             f"{lift or float('nan'):>10.2f}{served}\n")
        return
    k = result["k"]
    sys.stdout.write(f"{result['protocol']}\ntest customers: {result['test_customers']}\n")
    sys.stdout.write(f"{'method':<18}{'MAP@' + str(k):>10}{'recall@' + str(k):>11}"
                     f"{'NDCG@' + str(k):>10}{'coverage':>10}\n")
    for name, m in result["methods"].items():
        served = "  <- served" if name == result["served"] else ""
        sys.stdout.write(f"{name:<18}{m[f'map@{k}']:>10.4f}{m[f'recall@{k}']:>11.4f}"
                         f"{m[f'ndcg@{k}']:>10.4f}{m['coverage']:>10.2f}{served}\n")
    selection = result.get("selection", {})
    if selection:
        sys.stdout.write(f"served method chosen on {selection['month']}"
                         + ("" if selection["separate_from_report"] else
                            " (the reported month: too few snapshots for a separate one)")
                         + "\n")


def _add_training(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="data/demo", help="folder with customers and holdings")
    parser.add_argument("--config", help="training config TOML ([cf] table, cf_weight, ...)")
    parser.add_argument("--cf", choices=("als", "item_knn"), help="override the CF kind")
    parser.add_argument("--factors", type=int, help="override the number of ALS factors")
    add_model_inputs(parser)


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="evaluate, fit and save a new model version")
    _add_training(p)
    p.add_argument("--models", default="models")
    p.add_argument("--no-evaluate", action="store_true", help="skip the held-out evaluation")
    add_spark_inputs(p)
    p.add_argument("--sample-above", type=positive_int, default=1_000_000,
                   help="with --engine spark: train on a hash sample of about this many "
                   "customers when the bank has more (default 1000000)")
    p.set_defaults(func=cmd_train)


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="held-out next-month evaluation against baselines")
    _add_training(p)
    p.add_argument("--json", help="also write the result as JSON to this file")
    p.add_argument("--report", help="also write report.md and PNG plots to this folder")
    p.add_argument("--k", type=positive_int, help="cut-off of the metrics (default: eval_k)")
    p.add_argument("--models", default="models")
    p.add_argument("--record", action="store_true",
                   help="store the metrics in the current model's manifest (same data only)")
    p.set_defaults(func=cmd_evaluate)
