"""``nbo experiment report`` and ``nbo experiment promote``: how the arms of the policy's
champion / challenger experiment compare, and making one arm serve every customer."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from datetime import UTC, datetime, timedelta

from .arguments import add_database, add_serving_inputs, period

log = logging.getLogger("nbo")  # every command logs as "nbo", whatever its module


def _experiment(args: argparse.Namespace):
    from ..exceptions import ConfigError
    from ..policy.config import load_policy

    policy = load_policy(args.policy)
    if policy.experiment is None:
        raise ConfigError(f"the policy {args.policy or '(packaged)'} has no [experiment] "
                          "table: there is nothing to report or promote")
    return policy.experiment


def cmd_report(args: argparse.Namespace) -> int:
    from ..policy.experiment_report import experiment_report
    from ..ranking import artifacts
    from ..service import open_database
    from ..store.responses import ResponseStore
    from ..store.settings import promoted_arm

    experiment = _experiment(args)
    catalog = artifacts.load(args.models).catalog
    database = open_database(args.state, args.database)
    try:
        frame = ResponseStore(database).answered(datetime.now(UTC) - args.since)
        promoted = promoted_arm(database, experiment.name)
    finally:
        database.dispose()
    report = experiment_report(frame, [a.name for a in experiment.arms],
                               {p.id: p.value_weight for p in catalog.products},
                               experiment.level)
    if args.json:
        sys.stdout.write(json.dumps({"experiment": experiment.name, "since": str(args.since),
                                     "promoted": promoted, **report.to_dict()}, indent=2)
                         + "\n")
        return 0
    head = f"experiment {experiment.name}, the last {args.since}"
    if promoted:
        head += f" (arm {promoted} promoted: it serves every customer now)"
    sys.stdout.write(head + "\n" + report.to_text() + "\n")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from ..ranking import artifacts
    from ..service import open_database
    from ..store.settings import record_promotion

    experiment = _experiment(args)
    arm = experiment.arm(args.arm)  # ConfigError naming the arms if unknown
    if arm.model is not None:
        artifacts.load(args.models, arm.model)  # verified before anything changes
    database = open_database(args.state, args.database)
    try:
        entry = record_promotion(database, experiment.name, arm.name, args.by or _user(),
                                 args.reason)
    finally:
        database.dispose()
    if arm.model is not None:  # the next start or reload serves it as the champion too
        artifacts.set_current(args.models, arm.model)
    log.warning("experiment %s: arm %s promoted by %s at %s (%s); it serves every customer "
                "from the services' next check (within 30 s)%s", experiment.name, arm.name,
                entry["by"], entry["at"], entry["reason"] or "no reason given",
                f", and model {arm.model} is current" if arm.model else "")
    return 0


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return "unknown"


def add_experiment(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("experiment", help="the policy's champion / challenger experiment")
    commands = group.add_subparsers(dest="experiment_command", required=True)
    p = commands.add_parser("report", help="per arm: shows, accept rate with its interval, "
                            "value; each challenger against the champion")
    p.add_argument("--since", type=period, default=timedelta(days=30),
                   help="how far back to read the responses (30d, 12h, 2w; default 30d)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_report)
    p = commands.add_parser("promote", help="make one arm serve every customer (logged, "
                            "with who and why)")
    p.add_argument("arm", help="the arm to promote")
    p.add_argument("--reason", default="", help="why, for the record")
    p.add_argument("--by", help="who (default: this user's login name)")
    p.set_defaults(func=cmd_promote)
    for p in commands.choices.values():
        p.add_argument("--policy", help="the policy file naming the experiment (default: the "
                       "packaged policy)")
        add_serving_inputs(p)
        add_database(p)
