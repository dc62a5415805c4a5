"""Options several commands share, and reading the catalog and life stages they name."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts and ports: a whole number, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_model_inputs(parser: argparse.ArgumentParser) -> None:
    """The bank's catalog and life-stage rules, packaged ones unless given."""
    parser.add_argument("--catalog", help="product catalog TOML (default: the packaged one)")
    parser.add_argument("--life-stages", help="life-stage rules TOML (default: packaged)")


def add_serving_inputs(parser: argparse.ArgumentParser) -> None:
    """The bank's extracts and the trained models a command serves from."""
    parser.add_argument("--data", default="data/demo", help="folder with customers and holdings")
    parser.add_argument("--models", default="models", help="models folder (uses current)")


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
