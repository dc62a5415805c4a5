"""``nbo``: the command line. Each sub-command parses arguments and calls the library.

One module per command group: ``bank`` (demo-data, import-santander, init-catalog),
``models`` (train, evaluate), ``decisions`` (recommend, replay, audit), ``campaigns``
(campaign), ``serving`` (serve), ``keys`` (keys create, list, revoke), ``database``
(db upgrade, db current), ``experiments`` (experiment report, promote) and ``monitoring``
(monitor); ``arguments``
holds the options several share. This module assembles the parser from them and runs the
chosen command.

The top layer, a surface like ``api``: it may import everything in ``recommender``. Handlers
import the heavy modules inside their function, so that ``nbo --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy/implicit load BLAS

from . import bank, campaigns, database, decisions, experiments, keys, models, monitoring, serving

log = logging.getLogger("nbo")

# Each adds one sub-command, in the order `nbo --help` lists them.
_COMMANDS = (
    bank.add_demo_data, models.add_train, models.add_evaluate, bank.add_import_santander,
    bank.add_init_catalog, decisions.add_replay, decisions.add_audit, campaigns.add_campaign,
    decisions.add_recommend, serving.add_serve, keys.add_keys, database.add_db,
    experiments.add_experiment, monitoring.add_monitor,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``nbo`` parser; each sub-command's ``func`` is its handler."""
    parser = argparse.ArgumentParser(prog="nbo", description="Next-best-offer recommender")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    for add_command in _COMMANDS:
        add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``nbo`` command; a library error is logged in one line and exits with 2."""
    from ..exceptions import RecommenderError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except RecommenderError as exc:
        log.error("%s", exc)
        return 2
