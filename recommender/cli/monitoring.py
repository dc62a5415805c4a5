"""``nbo monitor``: is the served model still calibrated, and are its customers still those
it learned from? Predicted against observed acceptance, predicted against seen take-up, and
the drift of the inputs since training."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .arguments import add_database, add_serving_inputs, period


def cmd_monitor(args: argparse.Namespace) -> int:
    from ..monitor import monitor, save_figures, write_monitor_report
    from ..service import open_database

    now = datetime.now(UTC)
    database = open_database(args.state, args.database)
    try:
        report = monitor(database, args.data, args.models, now - args.since, args.reference,
                         now=now)
        save_figures(database, report)  # what every replica's /metrics exports
    finally:
        database.dispose()
    written = write_monitor_report(report, Path(args.report)) if args.report else []
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
        return 0
    sys.stdout.write(report.to_text() + "\n")
    if written:
        sys.stdout.write(f"Report: {args.report} ({len(written)} files)\n")
    return 0


def add_monitor(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("monitor", help="calibration, take-up and input drift of the served "
                       "model; stores the figures /metrics exports")
    add_serving_inputs(p)
    add_database(p)
    p.add_argument("--since", type=period, default=timedelta(days=30),
                   help="how far back to read the responses (12h, 30d, 2w; default 30d)")
    p.add_argument("--reference", metavar="DIR", help="the extracts the model was trained "
                   "on, when the bank keeps them elsewhere (default: --data)")
    p.add_argument("--report", metavar="DIR", help="write summary.csv, the tables (CSV) and "
                   "the calibration curves (SVG) to this folder")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_monitor)
