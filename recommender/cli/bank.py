"""``nbo demo-data``, ``nbo import-santander`` and ``nbo init-catalog``: a bank's extracts,
generated or imported, and a starting catalog drafted from them."""

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
    bank = generate(args.customers, args.months, args.seed, catalog, stages,
                    extra=args.extra_columns)
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


def cmd_init_catalog(args: argparse.Namespace) -> int:
    from ..data import columns as C
    from ..data.catalog import draft_catalog_text, parse_catalog
    from ..data.extracts import HOLDINGS_FILE, find_extract, read_table
    from ..exceptions import CatalogError, DataValidationError

    data, out = Path(args.data), Path(args.out)
    if not data.is_dir():
        raise DataValidationError("data folder not found", source=str(data))
    if out.exists() and not args.force:
        raise CatalogError(f"{out} exists; pass --force to overwrite it")
    path = find_extract(data, HOLDINGS_FILE)
    holdings = read_table(path)
    if C.PRODUCT_ID not in holdings:
        raise DataValidationError(f"missing required columns {[C.PRODUCT_ID]}", source=str(path))
    ids = holdings[C.PRODUCT_ID].dropna().astype(str).str.strip()
    text = draft_catalog_text(ids[ids != ""].unique(), str(path))
    catalog = parse_catalog(text, str(out))  # what is written must load as it is
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    log.info("wrote a starting catalog of %d products to %s: edit its names, categories, risk"
             " grades, eligibility and values, then train with --catalog %s",
             len(catalog), out, out)
    return 0


def add_demo_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo-data", help="generate the embedded demo bank")
    p.add_argument("--customers", type=int, default=100_000)
    p.add_argument("--months", type=int, default=12)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--extra-columns", type=int, default=0, metavar="N",
                   help="N further customer columns of the bank's own kind (balances, spend, "
                        "app use, region, then noise) that shape take-up: model features")
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


def add_init_catalog(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init-catalog",
                       help="draft a catalog from the products in the holdings, to edit")
    p.add_argument("--data", required=True, help="folder with the holdings extract")
    p.add_argument("--out", default="catalog.toml", help="catalog file to write")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=cmd_init_catalog)
