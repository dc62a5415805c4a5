"""``nbo monitor``: is the served model still calibrated, and are its customers still the
population it learned from?

Three checks, from what the service already keeps:

1. calibration: each offer shown with its predicted propensity, and whether an accept of
   the same customer, product and channel followed it (before that key's next show),
   against the offline prior (``propensity``) and the propensity served (``propensity *
   factor``, the adaptive correction, at most 1);
2. take-up: the book as of the second-newest holdings snapshot, scored by the current
   model, against the products customers newly held in the newest one;
3. input drift: the customers' features as of the model's training snapshot against those
   as of the newest snapshot, by population stability index.

The pure figures come from ``recommender.monitoring``; this module reads the store and the
extracts. The summary figures are also kept in the database (``FIGURES_SETTING``), so that
every replica's ``/metrics`` exports them without recomputing anything.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .data import columns as C
from .data.book import CustomerBook
from .data.catalog import Catalog
from .data.eligibility import offerable_mask
from .data.extracts import BankData, load_bank
from .data.interactions import acquisitions, months_between, present_at, snapshot_matrix
from .exceptions import RecommenderError
from .monitoring.drift import drift_table
from .monitoring.plot import reliability_svg, write_report
from .monitoring.reliability import (
    CHANNEL,
    reliability_bins,
    reliability_table,
    take_up_check,
    take_up_moments,
)
from .policy.adaptive import Corrections
from .policy.offers import OfferEngine
from .ranking import artifacts
from .ranking.artifacts import TrainedModel
from .ranking.fitting import upto
from .store.database import Database
from .store.responses import ResponseStore
from .store.settings import read_setting, write_setting

log = logging.getLogger(__name__)

FIGURES_SETTING = "monitor_figures"
DRIFT_THRESHOLD = 0.2
SCORE_CHUNK = 20_000  # customers scored at once: a few products' scores of each in memory
NO_NEWER_EXTRACT = "no newer extract than the training data"
_SHOW_KEY = [C.CUSTOMER_ID, C.PRODUCT_ID, CHANNEL]
_ANSWERED = [*_SHOW_KEY, "outcome", "recorded_at", C.LIFE_STAGE, "propensity", "factor"]


class MonitorError(RecommenderError, ValueError):
    """The monitor cannot compare what it was asked to: a training snapshot missing from
    the extracts, or stored figures that are not the monitor's."""


def shows_with_outcomes(answered: pd.DataFrame) -> pd.DataFrame:
    """One row per offer shown with a predicted propensity, with ``accepted``: an accept of
    the same customer, product and channel recorded at or after the show and before that
    key's next show (each accept marks the latest show at or before it).

    ``answered`` is ``ResponseStore.answered``'s frame. Shows recorded before propensities
    were (NaN) still take their accepts, so those never mark an older show; they are left
    out afterwards. A show still awaiting its answer counts as not accepted.
    """
    missing = [c for c in _ANSWERED if c not in answered.columns]
    if missing:
        raise MonitorError(f"the responses frame lacks column(s) {missing}; pass "
                           "ResponseStore.answered's frame")
    shown = answered[answered["outcome"] == "shown"].reset_index(drop=True)
    shows = shown[[*_SHOW_KEY, "recorded_at"]].assign(show=np.arange(len(shown)))
    accepts = answered.loc[answered["outcome"] == "accepted", [*_SHOW_KEY, "recorded_at"]]
    matched = pd.merge_asof(accepts.sort_values("recorded_at", kind="stable"),
                            shows.sort_values("recorded_at", kind="stable"), on="recorded_at",
                            by=_SHOW_KEY, direction="backward", allow_exact_matches=True)
    accepted = np.zeros(len(shown), dtype=bool)
    accepted[matched["show"].dropna().to_numpy(dtype=np.int64)] = True
    out = shown.assign(accepted=accepted)
    keep = out["propensity"].notna().to_numpy()
    return out.loc[keep, [C.PRODUCT_ID, CHANNEL, C.LIFE_STAGE, "propensity", "factor",
                          "accepted"]].reset_index(drop=True)


def calibration_tables(shows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Reliability of the offline prior and of the propensity served, from
    ``shows_with_outcomes``: both overall and by decile of the prediction; the served one
    also by product x channel (what /metrics exports) and by product x channel x life stage.
    """
    offline = shows.assign(predicted=shows["propensity"])
    served = shows.assign(predicted=np.minimum(
        shows["propensity"] * shows["factor"].fillna(1.0), 1.0))
    overall = pd.concat([reliability_table(frame, []).assign(predicted_as=name)
                         for name, frame in (("offline", offline), ("served", served))],
                        ignore_index=True)
    return {
        "overall": overall[["predicted_as", *overall.columns[:-1]]],
        "offline_bins": reliability_bins(offline), "served_bins": reliability_bins(served),
        "served_by_product_channel": reliability_table(served, [C.PRODUCT_ID, CHANNEL]),
        "served_by_group": reliability_table(served, [C.PRODUCT_ID, CHANNEL, C.LIFE_STAGE]),
    }


@dataclass(frozen=True)
class TakeUp:
    """Predicted against seen take-ups of the customers present at both snapshots."""

    table: pd.DataFrame  # take_up_check's
    scored_at: pd.Timestamp  # the book scored: the second-newest snapshot
    seen_at: pd.Timestamp  # the take-ups seen: the newest snapshot
    customers: int


def take_up(model: TrainedModel, bank: BankData) -> TakeUp | None:
    """The book as of the second-newest snapshot scored in chunks, against the products
    newly held at the newest; None with fewer than two snapshots.

    Scored as the calibration was fitted (``ranking.fitting.transition_batch``): consent is
    ignored (it is a policy, not a prediction), and only offerable pairs count on either
    side (eligible, prerequisites met, not held), so like is compared with like. Profiles
    are the newest customers extract's, their time-varying columns as of the scored month.
    """
    snapshots = bank.snapshots
    if len(snapshots) < 2:
        return None
    before, after = snapshots[-2], snapshots[-1]
    config, catalog = model.config, model.catalog
    book = CustomerBook(upto(bank, before), catalog, model.stages, config.cf.weighting,
                        config.acquisition.n_lags)
    later = snapshot_matrix(bank.holdings, book.held.shape, after)
    present = np.flatnonzero(book.present[:, 0])
    if not len(present):
        return None
    engine, products = OfferEngine(model), [str(p) for p in catalog.ids.external_ids]
    expected = variance = pd.Series(0.0, index=pd.Index(products, name=C.PRODUCT_ID))
    observed = np.zeros(len(products), dtype=np.int64)
    for start in range(0, len(present), SCORE_CHUNK):
        rows = present[start:start + SCORE_CHUNK]
        batch = book.batch(rows)
        batch = replace(batch, profile_frame=batch.profiles.assign(
            **{C.CONSENT_PROFILING: True}))
        offerable = offerable_mask(batch.profiles, batch.held, catalog)
        propensity = engine.propensity(engine.ranker.score(batch).scores)
        mean, spread = take_up_moments(pd.DataFrame(
            np.where(offerable, propensity, 0.0), columns=products))
        expected, variance = expected.add(mean), variance.add(spread)
        added = acquisitions(batch.held, later[rows], np.ones(len(rows), dtype=bool))
        observed += ((added.toarray() > 0) & offerable).sum(axis=0)
    table = take_up_check(expected, variance, pd.Series(observed, index=expected.index),
                          int(len(present)))
    return TakeUp(table, before, after, int(len(present)))


def customer_features(bank: BankData, snapshot: pd.Timestamp, catalog: Catalog) -> pd.DataFrame:
    """The customers present at ``snapshot`` as a model reads them: the customers extract's
    columns (time-varying ones as of then; no protected attribute, which no model reads),
    ``holds_<product>`` per product and ``products_held``.

    Tenure is taken back to the snapshot, and dates become days before it: a date itself
    moves on with every extract and would always look drifted.
    """
    shape = (len(bank.customers), len(catalog))
    held = snapshot_matrix(bank.holdings, shape, snapshot)
    back = months_between(snapshot, bank.reference_date) if bank.reference_date else 0
    frame = bank.customers_at(snapshot).reset_index(drop=True)
    present = present_at(held, frame[C.TENURE_MONTHS].to_numpy(), back)
    frame = frame.drop(columns=[C.CUSTOMER_ID, *C.PROTECTED], errors="ignore")
    frame[C.TENURE_MONTHS] = frame[C.TENURE_MONTHS] - back
    for column in frame.columns[[pd.api.types.is_datetime64_any_dtype(t)
                                 for t in frame.dtypes]]:
        frame[column] = (snapshot - frame[column]) / pd.Timedelta(days=1)
    holds = np.zeros(shape, dtype=bool)  # a byte per pair, not a float
    holds[held.nonzero()] = True
    holds = pd.DataFrame(holds, columns=[f"holds_{p}" for p in catalog.ids.external_ids])
    frame = pd.concat([frame, holds], axis=1).assign(products_held=held.getnnz(axis=1))
    return frame[present].reset_index(drop=True)


@dataclass(frozen=True)
class Drift:
    """PSI of every feature, reference (training) against current; ``same_data`` when
    both are the very extract the model was trained on (every PSI is then 0)."""

    table: pd.DataFrame  # drift_table's
    reference_at: pd.Timestamp
    current_at: pd.Timestamp
    same_data: bool


def input_drift(reference: BankData, reference_at: pd.Timestamp, current: BankData,
                catalog: Catalog, same_folder: bool = False) -> Drift:
    """``customer_features`` of ``reference`` at ``reference_at`` (the training snapshot)
    against those of ``current`` at its newest snapshot."""
    if reference_at not in reference.snapshots:
        known = reference.snapshots
        span = f"{known[0].date()} .. {known[-1].date()}" if known else "none"
        raise MonitorError(
            f"the model was trained on holdings up to {reference_at.date()}, but the "
            f"reference extracts have snapshots {span}, not that one: give the folder of "
            "the training extracts (nbo monitor --reference DIR)")
    current_at = current.snapshots[-1]
    table = drift_table(customer_features(reference, reference_at, catalog),
                        customer_features(current, current_at, catalog), DRIFT_THRESHOLD)
    return Drift(table, reference_at, current_at, same_folder and current_at == reference_at)


@dataclass(frozen=True)
class MonitorFigures:
    """What ``/metrics`` exports of a monitor run: observed over predicted acceptance per
    product x channel (served), take-up ratio per product, PSI per feature."""

    ran_at: datetime
    model_version: str
    observed_over_predicted: dict[tuple[str, str], float]
    take_up_ratio: dict[str, float]
    input_psi: dict[str, float]

    @property
    def drift_flagged(self) -> int:
        return sum(value > DRIFT_THRESHOLD for value in self.input_psi.values())

    def to_json(self) -> str:
        return json.dumps({
            "ran_at": self.ran_at.isoformat(), "model_version": self.model_version,
            "observed_over_predicted": [{"product": p, "channel": c, "value": v}
                                        for (p, c), v in self.observed_over_predicted.items()],
            "take_up_ratio": self.take_up_ratio, "input_psi": self.input_psi})

    @classmethod
    def from_json(cls, text: str) -> MonitorFigures:
        try:
            data = json.loads(text)
            ran_at = datetime.fromisoformat(data["ran_at"])
            ratios = {(str(r["product"]), str(r["channel"])): float(r["value"])
                      for r in data["observed_over_predicted"]}
            return cls(ran_at if ran_at.tzinfo else ran_at.replace(tzinfo=UTC),
                       str(data["model_version"]), ratios,
                       {str(k): float(v) for k, v in data["take_up_ratio"].items()},
                       {str(k): float(v) for k, v in data["input_psi"].items()})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MonitorError(f"the setting {FIGURES_SETTING!r} does not hold the figures "
                               f"of `nbo monitor` ({type(exc).__name__}: {exc}); run the "
                               "monitor again to replace it") from exc


@dataclass(frozen=True)
class MonitorReport:
    """Everything one monitor run found; ``to_dict`` for JSON, ``to_text`` for a console."""

    ran_at: datetime
    since: datetime
    model_version: str
    calibration: dict[str, pd.DataFrame]  # calibration_tables'
    take_up: TakeUp | None
    drift: Drift | None
    notes: tuple[str, ...] = ()

    def figures(self) -> MonitorFigures:
        """The summary /metrics exports (groups without a prediction to divide by left out)."""
        by = self.calibration["served_by_product_channel"].dropna(
            subset=["observed_over_predicted"])
        ratios = {(str(p), str(c)): float(v) for p, c, v in zip(
            by[C.PRODUCT_ID], by[CHANNEL], by["observed_over_predicted"], strict=True)}
        take = (self.take_up.table.dropna(subset=["ratio"]) if self.take_up is not None
                else pd.DataFrame({C.PRODUCT_ID: [], "ratio": []}))
        psi = (dict(zip(self.drift.table["feature"], self.drift.table["psi"].astype(float),
                        strict=True)) if self.drift is not None else {})
        return MonitorFigures(self.ran_at, self.model_version, ratios,
                              dict(zip(take[C.PRODUCT_ID].astype(str),
                                       take["ratio"].astype(float), strict=True)), psi)

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table by file name: the report folder's CSVs."""
        tables = dict(self.calibration)
        if self.take_up is not None:
            tables["take_up"] = self.take_up.table
        if self.drift is not None:
            tables["drift"] = self.drift.table
        return tables

    def summary(self) -> pd.DataFrame:
        """What was compared with what, and the notes, as ``item``, ``value`` rows."""
        items = [("ran_at", self.ran_at.isoformat()), ("since", self.since.isoformat()),
                 ("model_version", self.model_version)]
        if self.take_up is not None:
            items += [("take_up_scored_at", str(self.take_up.scored_at.date())),
                      ("take_up_seen_at", str(self.take_up.seen_at.date()))]
        if self.drift is not None:
            items += [("drift_reference_at", str(self.drift.reference_at.date())),
                      ("drift_current_at", str(self.drift.current_at.date()))]
        items += [("note", note) for note in self.notes]
        return pd.DataFrame(items, columns=["item", "value"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tables as lists of records, NaN as None."""
        take, drift = self.take_up, self.drift
        return {
            "ran_at": self.ran_at.isoformat(), "since": self.since.isoformat(),
            "model_version": self.model_version, "notes": list(self.notes),
            "calibration": {name: _records(t) for name, t in self.calibration.items()},
            "take_up": None if take is None else {
                "scored_at": str(take.scored_at.date()), "seen_at": str(take.seen_at.date()),
                "customers": take.customers, "table": _records(take.table)},
            "drift": None if drift is None else {
                "reference_at": str(drift.reference_at.date()),
                "current_at": str(drift.current_at.date()), "threshold": DRIFT_THRESHOLD,
                "flagged": int(drift.table["flagged"].sum()), "same_data": drift.same_data,
                "table": _records(drift.table)},
        }

    def to_text(self) -> str:
        """Plain lines: calibration, take-up, drift, then the notes."""
        overall = self.calibration["overall"]
        shows = int(overall["shows"].iloc[0]) if len(overall) else 0
        lines = [f"Monitor of model {self.model_version}: responses since "
                 f"{self.since:%Y-%m-%d %H:%M} UTC (ran {self.ran_at:%Y-%m-%d %H:%M} UTC)", "",
                 f"Acceptance, predicted against observed ({shows:,} shows with a predicted "
                 "propensity):"]
        by = self.calibration["served_by_product_channel"]
        groups = self.calibration["served_by_group"]
        lines += [_text_table(overall), "", "Served, by product x channel:",
                  _text_table(by.drop(columns=["low", "high"])),
                  f"{int(groups['flag'].sum())} of {len(groups)} product x channel x life "
                  "stage groups predicted outside their 95% interval (served_by_group)"]
        if self.take_up is not None:
            t = self.take_up
            lines += ["", f"Take-up: the book as of {t.scored_at.date()} (the second-newest "
                      f"snapshot) against the take-ups seen at {t.seen_at.date()}, "
                      f"{t.customers:,} customers in both:",
                      _text_table(t.table[[C.PRODUCT_ID, "expected", "observed", "ratio",
                                           "z", "flag"]])]
        if self.drift is not None:
            d, table = self.drift, self.drift.table
            lines += ["", f"Input drift: {d.current_at.date()} against the training snapshot "
                      f"{d.reference_at.date()}: {int(table['flagged'].sum())} of {len(table)}"
                      f" features with PSI above {DRIFT_THRESHOLD}",
                      _text_table(table[table["flagged"]] if table["flagged"].any()
                                  else table.head(5))]
        notes = [f"Note: {note}" for note in self.notes]
        return "\n".join(lines + ([""] + notes if notes else []))


def monitor(database: Database, data_dir: str | Path, models_dir: str | Path, since: datetime,
            reference_dir: str | Path | None = None, now: datetime | None = None,
            ) -> MonitorReport:
    """Run the three checks: the responses recorded since ``since``, the current model of
    ``models_dir``, the extracts of ``data_dir`` (the training extracts in
    ``reference_dir`` when the bank keeps them elsewhere; default ``data_dir``)."""
    database.check_current()  # an older schema has no propensities: name the upgrade
    ran_at = now or datetime.now(UTC)
    model = artifacts.load(models_dir)
    shows = shows_with_outcomes(ResponseStore(database).answered(since))
    notes = [] if len(shows) else [f"no offer shown with a predicted propensity since "
                                   f"{since:%Y-%m-%d %H:%M} UTC: nothing to calibrate"]
    bank = load_bank(data_dir, model.catalog)
    checked = take_up(model, bank)
    if checked is None:
        notes.append("the bank has one holdings snapshot (or no customer in the last two): "
                     "no take-up to compare with the prediction")
    elif model.served == "ownership":
        notes.append(f"model {model.version} predicts holding a product, not taking it up: "
                     "its take-up figures compare a propensity to own")
    trained = (model.manifest.get("data") or {}).get("last_snapshot")
    drift = None
    if trained is None:
        notes.append(f"model {model.version}'s manifest names no training snapshot: no "
                     "drift reference")
    else:
        same = reference_dir is None or Path(reference_dir).resolve() == Path(data_dir).resolve()
        reference = bank if same else load_bank(reference_dir, model.catalog,
                                                as_of=pd.Timestamp(trained))
        drift = input_drift(reference, pd.Timestamp(trained), bank, model.catalog, same)
        if drift.same_data:
            notes.append(f"{NO_NEWER_EXTRACT}: the newest snapshot, {trained}, is the one "
                         "the model was trained on, so every PSI is 0")
    return MonitorReport(ran_at, since, model.version, calibration_tables(shows), checked,
                         drift, tuple(notes))


def write_monitor_report(report: MonitorReport, directory: str | Path) -> list[Path]:
    """The report folder: ``summary.csv`` (what was compared, and the notes), each table as
    CSV, and the calibration curves as SVG when anything was shown; each file atomically."""
    svgs = {f"{name}_reliability": reliability_svg(
                report.calibration[f"{name}_bins"],
                f"{name.capitalize()} propensity, model {report.model_version}")
            for name in ("offline", "served") if len(report.calibration[f"{name}_bins"])}
    return write_report(Path(directory), {"summary": report.summary(), **report.tables()}, svgs)


def save_figures(database: Database, report: MonitorReport) -> None:
    """Keep the run's summary where every replica's /metrics reads it."""
    write_setting(database, FIGURES_SETTING, report.figures().to_json())


def read_figures(database: Database) -> MonitorFigures | None:
    """The last monitor run's summary; None before the first run."""
    text = read_setting(database, FIGURES_SETTING)
    return None if text is None else MonitorFigures.from_json(text)


def adaptive_factors(corrections: Corrections) -> pd.DataFrame:
    """The served correction per product x channel: the posterior mean factor of each life
    stage, weighted by its shows (the plain mean where the product had none in the channel).
    Columns product_id, channel, factor."""
    factors, shows = corrections.factors, corrections.evidence.shows
    total = shows.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        weighted = np.where(total > 0, (factors * shows).sum(axis=2) / total,
                            factors.mean(axis=2))
    products, channels = corrections.evidence.products, corrections.evidence.channels
    return pd.DataFrame({C.PRODUCT_ID: np.repeat(products, len(channels)),
                         CHANNEL: np.tile(channels, len(products)),
                         "factor": weighted.ravel()})


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain JSON values (NaN as null)."""
    return json.loads(table.to_json(orient="records", double_precision=15))


def _text_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "  (none)"
    return table.rename(columns={"observed_over_predicted": "obs/pred"}).to_string(
        index=False, float_format=lambda v: f"{v:.4g}")
