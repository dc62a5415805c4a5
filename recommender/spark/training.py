"""Training a bank too large for one process: Spark reads and checks it, the driver fits on a
deterministic sample.

Spark reads the extracts where the bank keeps them and checks every part in the executors
(the checks and named errors of one machine, ``data.bank_parts``). When the bank has more
customers than ``sample_above``, a deterministic hash of the customer id keeps about that
many, with all of their rows; the sample becomes a data folder on the driver, and the
single-machine training fits on it (transitions, features and the CF matrix are built by its
one implementation). The models allow a sample: the ALS item factors, the acquisition
ranker's trees and the calibration are product-level patterns, which a million customers
(tens of thousands of take-ups per common product) estimate as well as a hundred million;
customers outside the sample are served from their own holdings, as new customers are
(fold-in, features). The hash makes the sample the same on every run and machine, so a
retrain on the same extracts sees the same customers.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..data.bank_config import BANK_FILE
from ..data.catalog import Catalog
from ..data.extracts import BankData
from .extracts import PART, ExtractLocations, SparkBank, open_bank, part_results, split_events

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

DEFAULT_SAMPLE_ABOVE = 1_000_000  # customers: what one machine trains on in minutes
_BUCKETS = 1 << 20  # the hash's resolution: a sample to one customer in a million


def sample_to_folder(spark: SparkSession, where: ExtractLocations, catalog: Catalog,
                     folder: str | Path, sample_above: int = DEFAULT_SAMPLE_ABOVE,
                     part_size: int = 100_000) -> Path:
    """The bank, or its deterministic sample of about ``sample_above`` customers, checked
    part by part in the executors and written to ``folder`` as the extracts ``load_bank``
    reads (with the bank's ``bank.toml``)."""
    bank = open_bank(spark, where, catalog, None, part_size)
    for _ in part_results(bank.map_parts(_checked)):  # the named error of a bad part
        pass
    customers, events = bank.customers, bank.events
    if bank.n_customers > sample_above:
        from pyspark.sql import functions as F

        from .extracts import part_key

        share = sample_above / bank.n_customers
        keep = F.pmod(F.xxhash64(F.lit("nbo-training-sample"), part_key()),
                      F.lit(_BUCKETS)) < F.lit(int(share * _BUCKETS))
        customers, events = customers.where(keep), events.where(keep)
        log.info("training on a hash sample of %.1f%% of %d customers (more than %d)",
                 100 * share, bank.n_customers, sample_above)
    return _write(bank, customers.drop(PART).toPandas(), events.drop(PART).toPandas(),
                  where, Path(folder))


def _checked(part: int, bank: BankData) -> Iterator[pd.DataFrame]:
    yield pd.DataFrame({"checked": [len(bank.customers)]})


def _write(bank: SparkBank, customers: pd.DataFrame, events: pd.DataFrame,
           where: ExtractLocations, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    holdings, features = split_events(events, bank.holdings_columns,
                                      bank.layout.feature_columns)
    customers.to_parquet(folder / "customers.parquet", index=False)
    holdings.to_parquet(folder / "holdings.parquet", index=False)
    if features is not None:
        features.to_parquet(folder / "customer_features.parquet", index=False)
    if where.source and (Path(where.source) / BANK_FILE).is_file():
        shutil.copyfile(Path(where.source) / BANK_FILE, folder / BANK_FILE)
    log.info("training sample: %d customers, %d holding rows, in %s", len(customers),
             len(holdings), folder)
    return folder
