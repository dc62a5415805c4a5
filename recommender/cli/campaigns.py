"""``nbo campaign``: a campaign list over every customer within quotas, or the target list
of one product's best customers."""

from __future__ import annotations

import argparse
import logging
import sys

from ..policy.config import CHANNELS
from .arguments import (
    add_database,
    add_serving_inputs,
    add_spark_inputs,
    positive_int,
    spark_and_extracts,
)

log = logging.getLogger("nbo")  # every command logs as "nbo", whatever its module


def cmd_campaign(args: argparse.Namespace) -> int:
    from ..campaign.output import summary, write_summary
    from ..campaign.spec import CampaignSpec
    from ..campaign.target_list import check_product
    from ..exceptions import ConfigError
    from ..policy.config import load_policy
    from ..policy.offers import OfferEngine
    from ..ranking import artifacts
    from ..service import open_database, open_decision_log
    from ..store.responses import ResponseStore

    if bool(args.spec) == bool(args.for_product):
        raise ConfigError("give --spec campaign.toml, or --for-product ID with --top N or --all "
                          "(one of them)")
    engine = OfferEngine(artifacts.load(args.models), load_policy(args.policy))
    # Before reading the bank: a typo should not cost a pass over it.
    spec = CampaignSpec.from_toml(args.spec) if args.spec else None
    if spec is not None:
        spec.check(engine)
    else:
        check_product(engine, args.for_product)
    with (_OnSpark if args.engine == "spark" else _Local)(args, engine) as lists:
        if spec is None:
            frame = lists.target(args.for_product, None if args.all else args.top, args.channel)
            lists.write(frame, args.out)
            sys.stdout.write(f"{len(frame):,} customers for {args.for_product} written to "
                             f"{args.out}\n")
            return 0
        database = open_database(args.state, args.database)
        with open_decision_log(args.state, database=database) as decisions:
            frame = lists.campaign(spec, ResponseStore(database), decisions)
        lists.write(frame, args.out)
        report = write_summary(summary(frame, lists.customers, spec), args.report)
    sys.stdout.write(f"{len(frame):,} offers to {frame['customer_id'].nunique():,} customers "
                     f"written to {args.out}; summary: {report}\n")
    return 0


class _Local:
    """Lists made on this machine, the bank read in parts; written as one file."""

    def __init__(self, args: argparse.Namespace, engine) -> None:
        from ..data.partition import open_customers

        self.engine, self.bank = engine, open_customers(args.data, engine.model)
        self.customers = len(self.bank)

    def __enter__(self) -> _Local:
        return self

    def __exit__(self, *exc) -> None:
        self.bank.__exit__(*exc)

    def target(self, product_id: str, n: int | None, channel: str):
        from ..campaign.target_list import top_customers

        return top_customers(self.engine, self.bank, product_id, n, channel)

    def campaign(self, spec, responses, decisions):
        from ..campaign.run import run_campaign

        return run_campaign(self.engine, self.bank, spec, responses, decisions=decisions)

    def write(self, frame, out: str) -> None:
        from ..campaign.output import write_list

        write_list(frame, out)


class _OnSpark:
    """The same lists, scored in Spark's executors; written as a dataset where Spark
    writes."""

    def __init__(self, args: argparse.Namespace, engine) -> None:
        from ..data.book import months_read
        from ..spark.extracts import open_bank
        from ..spark.session import ship_model

        self.engine = engine
        self.spark, where = spark_and_extracts(args, "nbo campaign")
        self.shipped = ship_model(self.spark, args.models, engine.model.version, engine.policy)
        self.bank = open_bank(self.spark, where, engine.catalog, months_read(engine.model),
                              args.part_size)
        self.customers = self.bank.n_customers

    def __enter__(self) -> _OnSpark:
        return self

    def __exit__(self, *exc) -> None:
        pass  # the session ends with the process; a spark-submit job may share it

    def target(self, product_id: str, n: int | None, channel: str):
        from ..spark.campaign import top_customers_spark

        return top_customers_spark(self.engine, self.shipped, self.bank, product_id, n, channel)

    def campaign(self, spec, responses, decisions):
        from ..spark.campaign import run_campaign_spark

        return run_campaign_spark(self.spark, self.engine, self.shipped, self.bank, spec,
                                  responses, decisions=decisions)

    def write(self, frame, out: str) -> None:
        from ..spark.output import write_dataset

        write_dataset(self.spark, frame, out)


def add_campaign(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("campaign", help="campaign list over all customers, or a target list")
    p.add_argument("--spec", help="campaign spec TOML (see examples/campaign.toml)")
    p.add_argument("--for-product", help="instead: the customers most likely to take up this "
                   "product, the policy applied")
    how_many = p.add_mutually_exclusive_group()
    how_many.add_argument("--top", type=positive_int, default=1000,
                          help="with --for-product: the N best (default 1000)")
    how_many.add_argument("--all", action="store_true",
                          help="with --for-product: every eligible customer, best first")
    p.add_argument("--channel", choices=CHANNELS, default="branch", help="with --for-product")
    p.add_argument("--out", required=True, help="output file, .parquet or .csv (with --engine "
                   "spark: a dataset folder, path or URI)")
    p.add_argument("--report", default="reports/campaign", help="folder for the summary")
    add_spark_inputs(p)
    add_serving_inputs(p)
    p.add_argument("--policy", help="decision policy TOML (default: the packaged one)")
    add_database(p)
    p.set_defaults(func=cmd_campaign)
