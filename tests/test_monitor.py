"""``nbo monitor``: shows joined to the accepts that answered them, input drift on a newer
snapshot built to drift, and the command end to end on a small trained demo bank."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recommender.cli import main
from recommender.cli.arguments import period
from recommender.data.catalog import load_catalog
from recommender.data.demo import generate
from recommender.data.extracts import BankData, load_bank, write_bank
from recommender.data.life_stages import load_life_stages
from recommender.monitor import (
    NO_NEWER_EXTRACT,
    MonitorError,
    calibration_tables,
    input_drift,
    read_figures,
    shows_with_outcomes,
    take_up,
)
from recommender.policy.config import load_policy
from recommender.ranking import artifacts
from recommender.service import load_service, open_database

CATALOG = load_catalog()
ADAPTIVE = "\n[adaptive]\nprior_strength = 5.0\nmin_shows = 20\n"
T0 = pd.Timestamp("2026-11-02 09:00", tz="UTC")


def _answered(rows: list[tuple]) -> pd.DataFrame:
    """A frame as ``ResponseStore.answered`` returns it, from (customer, product, outcome,
    channel, minutes after T0, propensity) rows."""
    frame = pd.DataFrame(rows, columns=["customer_id", "product_id", "outcome", "channel",
                                        "minutes", "propensity"])
    return frame.assign(
        recorded_at=T0 + pd.to_timedelta(frame.pop("minutes"), unit="min"),
        model_version="v1", life_stage="young_professional", arm="", factor=1.0,
        propensity=frame["propensity"].astype(float))


# ----------------------------------------------------------------- shows and their accepts


def test_an_accept_marks_the_latest_show_of_its_customer_product_and_channel():
    answered = _answered([
        ("A", "card", "shown", "mobile", 0, 0.1),     # accepted 5 minutes later
        ("A", "card", "accepted", "mobile", 5, None),
        ("B", "card", "shown", "mobile", 0, 0.2),     # shown again before the accept:
        ("B", "card", "shown", "mobile", 10, 0.3),    # only this second show is accepted
        ("B", "card", "accepted", "mobile", 12, None),
        ("C", "card", "shown", "branch", 0, 0.4),     # accepted on another channel: not joined
        ("C", "card", "accepted", "mobile", 3, None),
        ("D", "loan", "shown", "email", 0, 0.5),      # declined
        ("D", "loan", "declined", "email", 1, None),
        ("D", "card", "shown", "email", 2, 0.6),      # another product's accept: not joined
        ("D", "loan", "accepted", "branch", 3, None),
    ])
    shows = shows_with_outcomes(answered)
    assert shows["propensity"].tolist() == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert shows["accepted"].tolist() == [True, False, True, False, False, False]
    assert list(shows.columns) == ["product_id", "channel", "life_stage", "propensity",
                                   "factor", "accepted"]


def test_a_show_without_a_propensity_takes_its_accept_and_is_left_out():
    answered = _answered([
        ("A", "card", "shown", "mobile", 0, 0.1),
        ("A", "card", "shown", "mobile", 5, None),  # recorded before propensities were
        ("A", "card", "accepted", "mobile", 6, None),
        ("A", "card", "accepted", "mobile", 6, None),  # twice: still one accepted show
        ("B", "card", "shown", "mobile", 7, 0.2),
        ("B", "card", "accepted", "mobile", 7, None),  # the same instant counts
    ])
    shows = shows_with_outcomes(answered)
    assert shows["propensity"].tolist() == [0.1, 0.2]
    assert shows["accepted"].tolist() == [False, True]


def test_the_served_prediction_is_the_prior_times_the_factor_at_most_1():
    shows = pd.DataFrame({"product_id": ["card", "card", "loan"],
                          "channel": ["mobile"] * 3, "life_stage": ["retired"] * 3,
                          "propensity": [0.1, 0.6, 0.2], "factor": [0.5, 2.0, np.nan],
                          "accepted": [False, True, True]})
    tables = calibration_tables(shows)
    overall = tables["overall"].set_index("predicted_as")
    assert overall.loc["offline", "predicted"] == pytest.approx(0.3)
    assert overall.loc["served", "predicted"] == pytest.approx((0.05 + 1.0 + 0.2) / 3)
    assert overall["accepts"].tolist() == [2, 2] and overall["shows"].tolist() == [3, 3]
    by = tables["served_by_product_channel"].set_index("product_id")
    assert by.loc["card", "predicted"] == pytest.approx(0.525)
    assert by.loc["loan", "observed_over_predicted"] == pytest.approx(1 / 0.2)
    assert len(tables["served_by_group"]) == 2


def test_no_shows_give_empty_tables():
    tables = calibration_tables(shows_with_outcomes(_answered([])))
    assert all(table.empty for table in tables.values())


@pytest.mark.parametrize(("text", "expected"), [
    ("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("2w", timedelta(weeks=2))])
def test_period_reads_hours_days_and_weeks(text, expected):
    assert period(text) == expected


@pytest.mark.parametrize("text", ["", "30", "d", "0d", "-3d", "1.5d", "3m", "nand",
                                  "999999999d"])
def test_period_refuses_anything_else_saying_what_it_takes(text):
    with pytest.raises(argparse.ArgumentTypeError, match="30d, 12h or 2w"):
        period(text)


# ----------------------------------------------------------------- input drift


@pytest.fixture(scope="module")
def small_bank(tmp_path_factory) -> tuple[Path, Path]:
    """Three months of a demo bank, and the same with a fourth month in which every
    customer holds gold savings: (folder, folder with the drifted newer month)."""
    root = tmp_path_factory.mktemp("drift")
    demo = generate(400, 3, 5, CATALOG, load_life_stages())
    write_bank(BankData(demo.customers, demo.holdings), root / "same")
    last = demo.holdings[demo.holdings["snapshot_date"] == demo.holdings["snapshot_date"].max()]
    newer = last.assign(snapshot_date=pd.Timestamp(last["snapshot_date"].max())
                        + pd.offsets.MonthEnd(1))
    gold = pd.DataFrame({"customer_id": demo.customers["customer_id"],
                         "product_id": "gold_savings",
                         "snapshot_date": newer["snapshot_date"].iloc[0]})
    drifted = pd.concat([demo.holdings, newer, gold], ignore_index=True).drop_duplicates(
        ["customer_id", "product_id", "snapshot_date"])
    write_bank(BankData(demo.customers, drifted), root / "drifted")
    return root / "same", root / "drifted"


def test_a_newer_snapshot_that_drifted_is_flagged(small_bank):
    same, drifted = small_bank
    reference = load_bank(same, CATALOG)
    trained_at = reference.snapshots[-1]
    current = load_bank(drifted, CATALOG)
    drift = input_drift(current, trained_at, current, CATALOG, same_folder=True)
    flagged = set(drift.table.loc[drift.table["flagged"], "feature"])
    assert "holds_gold_savings" in flagged
    assert {"age", "income", "segment", "holds_current_account"}.isdisjoint(flagged)
    assert not drift.same_data and drift.current_at > drift.reference_at == trained_at
    # the training extracts kept in a folder of their own show the same drift
    apart = input_drift(reference, trained_at, current, CATALOG)
    assert set(apart.table.loc[apart.table["flagged"], "feature"]) == flagged
    assert not apart.same_data


def test_the_training_extract_itself_has_no_drift(small_bank):
    bank = load_bank(small_bank[0], CATALOG)
    drift = input_drift(bank, bank.snapshots[-1], bank, CATALOG, same_folder=True)
    assert drift.same_data
    assert not drift.table["flagged"].any() and (drift.table["psi"] == 0).all()
    features = set(drift.table["feature"])
    assert {"age", "income", "tenure_months", "products_held", "holds_mortgage"} <= features
    assert not features & {"customer_id", "gender"}


def test_a_training_snapshot_the_extracts_lack_is_named(small_bank):
    bank = load_bank(small_bank[0], CATALOG)
    with pytest.raises(MonitorError, match=r"2020-01-31.*--reference"):
        input_drift(bank, pd.Timestamp("2020-01-31"), bank, CATALOG)


# ----------------------------------------------------------------- the command, end to end


@dataclass(frozen=True)
class Trained:
    data_dir: Path
    models_dir: Path


@pytest.fixture(scope="module")
def trained(served_demo_bank) -> Trained:
    """The session's small demo bank and its hybrid model (tests/conftest.py)."""
    return Trained(Path(served_demo_bank["DATA_DIR"]), Path(served_demo_bank["MODELS_DIR"]))


def test_one_snapshot_has_no_take_up_to_check(trained):
    bank = load_bank(trained.data_dir, CATALOG)
    last = bank.holdings[bank.holdings["snapshot_date"] == bank.snapshots[-1]]
    assert take_up(artifacts.load(trained.models_dir), replace(bank, holdings=last)) is None


@pytest.fixture(scope="module")
def answered_service(trained, tmp_path_factory):
    """A service with an adaptive policy on the real clock (``--since`` counts back from
    now) that showed offers on mobile, every third one accepted: (state folder, shows,
    accepts)."""
    tmp_path = tmp_path_factory.mktemp("answered")
    policy = tmp_path / "policy.toml"
    policy.write_text(load_policy().text + ADAPTIVE, encoding="utf-8")
    service = load_service(trained.data_dir, trained.models_dir, policy_file=policy,
                           state_dir=tmp_path / "state")
    shows = accepts = 0
    try:
        customers = service.book.batch(np.arange(0, 240, 2)).customer_ids
        for i, customer in enumerate(map(str, customers)):
            for offer in service.offers(customer, limit=2, channel="mobile")["offers"]:
                service.record_response(customer, offer["product_id"], "shown", "mobile")
                shows += 1
                if i % 3 == 0:
                    service.record_response(customer, offer["product_id"], "accepted",
                                            "mobile")
                    accepts += 1
    finally:
        service.decisions.close()
        service.responses.database.dispose()
    assert shows > 50 and accepts > 10
    return tmp_path / "state", shows, accepts


def _run(trained: Trained, state: Path, *extra: str) -> int:
    return main(["monitor", "--since", "30d", "--data", str(trained.data_dir), "--models",
                 str(trained.models_dir), "--state", str(state), *extra])


def test_the_command_writes_the_report_and_stores_the_figures(trained, answered_service,
                                                              tmp_path, capsys):
    state, shows, accepts = answered_service
    report = tmp_path / "report"
    assert _run(trained, state, "--report", str(report)) == 0
    names = {p.name for p in report.iterdir()}
    assert names == {"summary.csv", "overall.csv", "offline_bins.csv", "served_bins.csv",
                     "served_by_product_channel.csv", "served_by_group.csv", "take_up.csv",
                     "drift.csv", "offline_reliability.svg", "served_reliability.svg"}
    overall = pd.read_csv(report / "overall.csv")
    assert overall["predicted_as"].tolist() == ["offline", "served"]
    assert overall["shows"].tolist() == [shows, shows]
    assert overall["accepts"].tolist() == [accepts, accepts]
    by_group = pd.read_csv(report / "served_by_group.csv")
    assert set(by_group["channel"]) == {"mobile"} and by_group["shows"].sum() == shows
    take = pd.read_csv(report / "take_up.csv")
    assert sorted(take["product_id"]) == sorted(map(str, CATALOG.ids.external_ids))
    assert take["observed"].sum() > 0
    summary = pd.read_csv(report / "summary.csv")
    assert any(NO_NEWER_EXTRACT in note for note in summary.loc[summary["item"] == "note",
                                                                  "value"])
    assert (pd.read_csv(report / "drift.csv")["psi"] == 0).all()
    assert (report / "served_reliability.svg").read_text().startswith("<svg")
    out = capsys.readouterr().out
    assert f"{shows:,} shows with a predicted propensity" in out
    assert "the second-newest snapshot" in out and NO_NEWER_EXTRACT in out

    database = open_database(state)
    try:
        figures = read_figures(database)
    finally:
        database.dispose()
    assert figures is not None and figures.drift_flagged == 0
    assert figures.model_version == artifacts.load(trained.models_dir).version
    assert {channel for _, channel in figures.observed_over_predicted} == {"mobile"}
    assert set(figures.take_up_ratio) <= set(map(str, CATALOG.ids.external_ids))
    assert abs(datetime.now(UTC) - figures.ran_at) < timedelta(minutes=5)


def test_the_command_prints_json(trained, answered_service, capsys):
    state, shows, accepts = answered_service
    assert _run(trained, state, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    served = next(r for r in report["calibration"]["overall"] if r["predicted_as"] == "served")
    assert (served["shows"], served["accepts"]) == (shows, accepts)
    assert report["drift"]["same_data"] is True and report["drift"]["flagged"] == 0
    assert report["take_up"]["scored_at"] < report["take_up"]["seen_at"]


def test_a_bad_period_is_a_usage_error(trained, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        _run(trained, tmp_path, "--since", "thirty days")
    assert exit_.value.code == 2
    assert "30d, 12h or 2w" in capsys.readouterr().err


def test_columns_of_the_shows_frame_are_checked():
    with pytest.raises(MonitorError, match="propensity"):
        shows_with_outcomes(_answered([]).drop(columns=["propensity"]))
