"""One part of a bank, from its raw rows: checked and typed as the whole extracts are.

A bank too large for one process is read a part at a time: a part holds some customers with
every row of theirs (holdings, time-varying values). Parts come from files split on this
machine (``partition``) or from Spark partitions (``recommender.spark``); both become a
``BankData`` here, so that every engine applies one set of checks and one typing of the
bank's further columns. Those columns are typed from the whole extract (``KindTally``),
never from one part: a part's rows could all read as numbers where the column does not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import pandas as pd

from . import columns as C
from .bank_config import BankConfig
from .catalog import Catalog
from .customers import customer_schema, tenure_from_holdings, validate_customers
from .extracts import CUSTOMERS_FILE, FEATURES_FILE, HOLDINGS_FILE, BankData, validate_holdings
from .features import MAX_CATEGORIES, inferred_kind, validate_customer_features

_FEATURE_KEYS = (C.CUSTOMER_ID, C.SNAPSHOT_DATE)


@dataclass(frozen=True)
class PartLayout:
    """What every part of one bank shares.

    ``snapshots`` are the snapshot dates of the whole holdings extract that were kept (every
    part sees the same months); ``source`` names the extracts in errors; ``config`` is the
    bank's configuration with its further columns typed as in the whole extracts;
    ``feature_columns`` are the time-varying extract's columns (None: the bank has none).
    """

    snapshots: tuple[pd.Timestamp, ...]
    source: str
    config: BankConfig
    feature_columns: tuple[str, ...] | None = None

    @property
    def as_of(self) -> pd.Timestamp | None:
        return self.snapshots[-1] if self.snapshots else None


def part_bank(raw_customers: pd.DataFrame, raw_holdings: pd.DataFrame | None,
              raw_features: pd.DataFrame | None, layout: PartLayout,
              catalog: Catalog) -> BankData:
    """One part's rows, validated like the whole extracts (warnings aside: the bank was told
    once, when it trained), as of the latest kept snapshot."""
    source, config, as_of = layout.source, layout.config, layout.as_of
    customers = validate_customers(raw_customers, f"{source} {CUSTOMERS_FILE}", as_of, config,
                                   quiet=True)
    if raw_holdings is None:
        raw_holdings = pd.DataFrame({C.CUSTOMER_ID: pd.Series([], dtype=str),
                                     C.PRODUCT_ID: pd.Series([], dtype=str),
                                     C.SNAPSHOT_DATE: pd.Series([], dtype="datetime64[ns]")})
    holdings = validate_holdings(raw_holdings, catalog, pd.Index(customers[C.CUSTOMER_ID]),
                                 f"{source} {HOLDINGS_FILE}")
    if C.TENURE_MONTHS not in raw_customers.columns:  # from the recent months it holds
        customers[C.TENURE_MONTHS] = tenure_from_holdings(holdings, len(customers))
    bank = BankData(customers, holdings, as_of=as_of, months=layout.snapshots,
                    customer_features=_features(raw_features, customers, layout))
    if bank.customer_features is not None:  # as of the latest snapshot, as load_bank
        bank = replace(bank, customers=bank.customers_at(
            as_of if as_of is not None else pd.Timestamp.max))
    return replace(bank, schema=customer_schema(bank.customers, config))


def _features(raw: pd.DataFrame | None, customers: pd.DataFrame,
              layout: PartLayout) -> pd.DataFrame | None:
    """The part's time-varying values, validated; None without the extract."""
    if layout.feature_columns is None:
        return None
    if raw is None:  # none of these customers has a row: every value missing
        raw = pd.DataFrame({c: pd.Series([], dtype=object)
                            for c in (*_FEATURE_KEYS, *layout.feature_columns)})
    features, _ = validate_customer_features(
        raw, pd.Index(customers[C.CUSTOMER_ID]), f"{layout.source} {FEATURES_FILE}",
        layout.config.features, quiet=True)
    return features


class KindTally:
    """The type ``extra_columns`` would infer for each further column of a whole extract,
    tallied a batch at a time: whether every value reads as a number, how many are present,
    and up to ``MAX_CATEGORIES + 1`` distinct texts (enough to decide). Tallies of parts of
    an extract merge into the tally of the whole."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = list(names)
        self.numbers = dict.fromkeys(self.names, True)
        self.present = dict.fromkeys(self.names, 0)
        self.seen: dict[str, set] = {name: set() for name in self.names}

    def add(self, frame: pd.DataFrame) -> KindTally:
        for name in self.names:
            text = frame[name].astype("string").str.strip()
            mask = (text.notna() & (text != "")).to_numpy(dtype=bool)
            self.present[name] += int(mask.sum())
            if self.numbers[name]:
                self.numbers[name] = bool(pd.to_numeric(frame[name][mask], errors="coerce")
                                          .notna().all())
            if len(self.seen[name]) <= MAX_CATEGORIES:  # in every batch: order must not matter
                self.seen[name].update(text[mask].unique()[:MAX_CATEGORIES + 1].tolist())
        return self

    def merge(self, other: KindTally) -> KindTally:
        for name in self.names:
            self.numbers[name] &= other.numbers[name]
            self.present[name] += other.present[name]
            if len(self.seen[name]) <= MAX_CATEGORIES:
                self.seen[name].update(list(other.seen[name])[:MAX_CATEGORIES + 1])
        return self

    def kinds(self) -> dict[str, str]:
        """``numeric``, ``category`` or ``ignore`` (a column that identifies rows)."""
        return {name: inferred_kind(self.numbers[name], len(self.seen[name]),
                                    self.present[name]) or "ignore" for name in self.names}
