"""``nbo campaign``: a campaign list over every customer within quotas, or the target list
of one product's best customers."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..policy.config import CHANNELS
from .arguments import add_serving_inputs, positive_int

log = logging.getLogger("nbo")  # every command logs as "nbo", whatever its module


def cmd_campaign(args: argparse.Namespace) -> int:
    from ..campaign.output import summary, write_list, write_summary
    from ..campaign.run import run_campaign
    from ..campaign.spec import CampaignSpec
    from ..campaign.target_list import check_product, top_customers
    from ..data.partition import open_customers
    from ..exceptions import ConfigError
    from ..policy.config import load_policy
    from ..policy.offers import OfferEngine
    from ..ranking import artifacts
    from ..service import open_decision_log
    from ..store.responses import ResponseStore

    if bool(args.spec) == bool(args.for_product):
        raise ConfigError("give --spec campaign.toml, or --for-product ID with --top N or --all "
                          "(one of them)")
    model = artifacts.load(args.models)
    engine = OfferEngine(model, load_policy(args.policy))
    # Before reading the bank: a typo should not cost a pass over it.
    spec = CampaignSpec.from_toml(args.spec) if args.spec else None
    if spec is not None:
        spec.check(engine)
    else:
        check_product(engine, args.for_product)
    with open_customers(args.data, model) as customers:
        if spec is None:
            frame = top_customers(engine, customers, args.for_product,
                                  None if args.all else args.top, args.channel)
            write_list(frame, args.out)
            sys.stdout.write(f"{len(frame):,} customers for {args.for_product} written to "
                             f"{args.out}\n")
            return 0
        responses_db = Path(args.state) / "responses.db"
        responses = ResponseStore(responses_db) if responses_db.exists() else None
        with open_decision_log(args.state) as decisions:
            frame = run_campaign(engine, customers, spec, responses, decisions=decisions)
        write_list(frame, args.out)
        report = write_summary(summary(frame, len(customers), spec), args.report)
    sys.stdout.write(f"{len(frame):,} offers to {frame['customer_id'].nunique():,} customers "
                     f"written to {args.out}; summary: {report}\n")
    return 0


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
    p.add_argument("--out", required=True, help="output file, .parquet or .csv")
    p.add_argument("--report", default="reports/campaign", help="folder for the summary")
    add_serving_inputs(p)
    p.add_argument("--policy", help="decision policy TOML (default: the packaged one)")
    p.add_argument("--state", default="var", help="folder of recorded responses")
    p.set_defaults(func=cmd_campaign)
