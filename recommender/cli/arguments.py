"""Options several commands share, and reading the catalog and life stages they name."""

from __future__ import annotations

import argparse
import re
from datetime import timedelta

_PERIOD = re.compile(r"([1-9][0-9]{0,4})([hdw])")
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts and ports: a whole number, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def period(text: str) -> timedelta:
    """An argparse ``type`` for how far back to read: a whole number of hours, days or weeks
    (12h, 30d, 2w). Whole and bounded, so no period overflows a date or reads as nothing."""
    found = _PERIOD.fullmatch(text.strip())
    if found is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a period: give a whole number from 1 to 99999 followed by h "
            "(hours), d (days) or w (weeks), e.g. 30d, 12h or 2w")
    return timedelta(**{_UNITS[found[2]]: int(found[1])})


def add_model_inputs(parser: argparse.ArgumentParser) -> None:
    """The bank's catalog and life-stage rules, packaged ones unless given."""
    parser.add_argument("--catalog", help="product catalog TOML (default: the packaged one)")
    parser.add_argument("--life-stages", help="life-stage rules TOML (default: packaged)")


def add_serving_inputs(parser: argparse.ArgumentParser) -> None:
    """The bank's extracts and the trained models a command serves from."""
    parser.add_argument("--data", default="data/demo", help="folder with customers and holdings")
    parser.add_argument("--models", default="models", help="models folder (uses current)")


def add_database(parser: argparse.ArgumentParser) -> None:
    """Where the stores live: responses, the decision log, the served version, API keys."""
    parser.add_argument("--state", default="var", help="the service's state folder (the "
                        "decision log's key; the default database's file)")
    parser.add_argument("--database", metavar="URL", help="the stores' database: "
                        "sqlite:///path or postgresql://user@host/db (default: "
                        "$NBO_DATABASE_URL, else sqlite in --state: nbo.db)")


def add_spark_inputs(parser: argparse.ArgumentParser) -> None:
    """Where a job runs (this machine, or Spark), and where Spark finds the extracts."""
    parser.add_argument("--engine", choices=("local", "spark"), default="local",
                        help="local: this machine; spark: Spark's executors (see README, "
                        "Running on a Spark cluster)")
    parser.add_argument("--spark-master", help="with --engine spark: the master (default: "
                        "what spark-submit set, else local[*,4])")
    parser.add_argument("--customers", help="with --engine spark: the customers extract as a "
                        "Parquet path or URI, or a table name (default: in --data)")
    parser.add_argument("--holdings", help="with --engine spark: the holdings extract (same "
                        "forms)")
    parser.add_argument("--customer-features", help="with --engine spark: the optional "
                        "time-varying extract (same forms)")
    parser.add_argument("--part-size", type=positive_int, default=100_000,
                        help="with --engine spark: customers per part (default 100000)")


def spark_and_extracts(args: argparse.Namespace, app_name: str):
    """The Spark session ``add_spark_inputs`` names, and where its extracts are."""
    from ..spark.extracts import ExtractLocations
    from ..spark.session import spark_session

    where = ExtractLocations.of(args.data, args.customers, args.holdings,
                                args.customer_features)
    return spark_session(args.spark_master, app_name), where


def catalog_and_stages(args: argparse.Namespace):
    """The catalog and life stages ``add_model_inputs`` names, checked against each other,
    with their TOML texts (training stores them beside the model)."""
    from ..data.catalog import catalog_text, parse_catalog
    from ..data.life_stages import life_stages_text, parse_life_stages

    cat_text, cat_source = catalog_text(args.catalog)
    st_text, st_source = life_stages_text(args.life_stages)
    catalog, stages = parse_catalog(cat_text, cat_source), parse_life_stages(st_text, st_source)
    catalog.check_life_stages([s.id for s in stages.stages])
    return catalog, stages, cat_text, st_text
