"""``nbo demo-data`` and ``nbo import-santander``: a bank's extracts, generated or imported."""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

from .arguments import add_model_inputs, catalog_and_stages

log = logging.getLogger("nbo")  # every command logs as "nbo", whatever its module


def cmd_demo_data(args: argparse.Namespace) -> int:
    from ..data.demo import generate
    from ..data.extracts import BankData, write_bank

    catalog, stages, _, _ = catalog_and_stages(args)
    started = time.perf_counter()
    bank = generate(args.customers, args.months, args.seed, catalog, stages)
    write_bank(BankData(bank.customers, bank.holdings), args.out)
    log.info("wrote the demo bank (%d customers, %d months) to %s in %.1f s", args.customers,
             args.months, args.out, time.perf_counter() - started)
    return 0


def cmd_import_santander(args: argparse.Namespace) -> int:
    from ..data import santander
    from ..data.extracts import write_bank

    source = Path(args.source)
    imported = santander.load_raw(source) if source.is_file() else santander.load_adders(source)
    write_bank(imported.bank, args.out)
    for packaged in (santander.CATALOG_FILE, santander.LIFE_STAGES_FILE):
        shutil.copyfile(packaged, Path(args.out) / packaged.name)
    log.info("wrote %d customers and %d holding rows to %s; train with --catalog %s "
             "--life-stages %s", len(imported.bank.customers), len(imported.bank.holdings),
             args.out, Path(args.out) / santander.CATALOG_FILE.name,
             Path(args.out) / santander.LIFE_STAGES_FILE.name)
    return 0


def add_demo_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo-data", help="generate the embedded demo bank")
    p.add_argument("--customers", type=int, default=100_000)
    p.add_argument("--months", type=int, default=12)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default="data/demo")
    add_model_inputs(p)
    p.set_defaults(func=cmd_demo_data)


def add_import_santander(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-santander",
                       help="convert the Santander data into customers and holdings extracts")
    p.add_argument("--source", required=True,
                   help="folder with may2016_adders.parquet, or a raw train_ver2-format CSV")
    p.add_argument("--out", default="data/santander")
    p.set_defaults(func=cmd_import_santander)
