"""Calibration tables, take-up check, the SVG curve and the report, on frames with known
answers."""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from recommender.exceptions import DataValidationError
from recommender.monitoring.plot import reliability_svg, write_report
from recommender.monitoring.reliability import (
    Z95,
    reliability_bins,
    reliability_table,
    take_up_check,
    take_up_moments,
    wilson_interval,
)

SVG = "{http://www.w3.org/2000/svg}"


def shows_frame() -> pd.DataFrame:
    """Savings on mobile: 4 shows, mean prediction 0.25, 1 accepted (calibrated).
    Loan on branch: 10 shows predicted at 0.9, 1 accepted (far over-predicted).
    Loan on mobile: 2 shows predicted at 0, 1 accepted (no ratio possible)."""
    rows = [("savings", "mobile", "young", p, a)
            for p, a in ((0.1, True), (0.2, False), (0.3, False), (0.4, False))]
    rows += [("loan", "branch", "family" if i < 5 else "young", 0.9, i == 0) for i in range(10)]
    rows += [("loan", "mobile", "young", 0.0, True), ("loan", "mobile", "young", 0.0, False)]
    return pd.DataFrame(rows, columns=["product_id", "channel", "life_stage", "predicted",
                                       "accepted"])


def test_the_table_counts_shows_accepts_and_means_per_group():
    table = reliability_table(shows_frame(), ["product_id", "channel"]).set_index(
        ["product_id", "channel"])
    assert table.loc[("savings", "mobile"), ["shows", "accepts"]].tolist() == [4, 1]
    assert table.loc[("savings", "mobile"), "predicted"] == pytest.approx(0.25)
    assert table.loc[("savings", "mobile"), "observed"] == 0.25
    assert table.loc[("savings", "mobile"), "observed_over_predicted"] == pytest.approx(1.0)
    assert table.loc[("loan", "branch"), ["shows", "accepts"]].tolist() == [10, 1]
    assert table.loc[("loan", "branch"), "observed_over_predicted"] == pytest.approx(0.1 / 0.9)
    assert math.isnan(table.loc[("loan", "mobile"), "observed_over_predicted"])
    assert len(table) == 3


def test_the_flag_fires_when_the_prediction_is_outside_the_wilson_interval():
    table = reliability_table(shows_frame(), ["product_id", "channel"]).set_index(
        ["product_id", "channel"])
    # 1 of 10 accepted: Wilson 95% is (0.0179, 0.4042); 0.9 is far above it
    assert table.loc[("loan", "branch"), "low"] == pytest.approx(0.017876, abs=1e-6)
    assert table.loc[("loan", "branch"), "high"] == pytest.approx(0.404150, abs=1e-6)
    assert table.loc[("loan", "branch"), "flag"]
    assert not table.loc[("savings", "mobile"), "flag"]  # 0.25 predicted, 1 in 4 seen
    assert table.loc[("loan", "mobile"), "flag"]  # predicted 0, yet one was accepted


def test_one_group_per_value_of_any_subset_and_one_row_for_none():
    frame = shows_frame()
    by_stage = reliability_table(frame, ["life_stage"]).set_index("life_stage")
    assert by_stage["shows"].to_dict() == {"family": 5, "young": 11}
    assert by_stage.loc["family", "accepts"] == 1
    overall = reliability_table(frame, [])
    assert overall[["shows", "accepts"]].iloc[0].tolist() == [16, 3]
    assert overall["predicted"].iloc[0] == pytest.approx((1.0 + 9.0) / 16)  # savings, loan
    three = reliability_table(frame, ["product_id", "channel", "life_stage"])
    assert three["shows"].sum() == 16 and len(three) == 4


def test_wilson_interval_matches_its_closed_forms():
    n = np.array([10.0, 50.0, 263.0])
    low, high = wilson_interval(np.zeros(3), n)
    assert low == pytest.approx(0.0) and high == pytest.approx(Z95**2 / (n + Z95**2))
    low, high = wilson_interval(n, n)
    assert low == pytest.approx(n / (n + Z95**2)) and high == pytest.approx(1.0)
    # the textbook form: (k + z²/2) / (n + z²) ± z sqrt(n) / (n + z²) sqrt(p(1-p) + z²/4n)
    k, n = 81.0, 263.0
    p = k / n
    centre = (k + Z95**2 / 2) / (n + Z95**2)
    half = Z95 * math.sqrt(n) / (n + Z95**2) * math.sqrt(p * (1 - p) + Z95**2 / (4 * n))
    assert wilson_interval(k, n) == pytest.approx((centre - half, centre + half), abs=1e-12)
    with pytest.raises(ValueError, match="trials"):
        wilson_interval(3, 2)


def test_missing_columns_are_named_and_an_empty_frame_gives_an_empty_table():
    with pytest.raises(ValueError, match=r"\['channel', 'accepted'\]"):
        reliability_table(shows_frame().drop(columns=["channel", "accepted"]),
                          ["product_id", "channel"])
    with pytest.raises(ValueError, match="by must be"):
        reliability_table(shows_frame(), ["segment"])
    empty = reliability_table(shows_frame().iloc[:0], ["product_id"])
    assert empty.empty and list(empty.columns) == [
        "product_id", "shows", "accepts", "predicted", "observed", "observed_over_predicted",
        "low", "high", "flag"]
    assert list(reliability_bins(shows_frame().iloc[:0]).columns) == [
        "bin", "shows", "accepts", "predicted", "observed"]
    assert reliability_table(shows_frame().iloc[:0], []).empty


def test_bad_predictions_and_outcomes_are_refused():
    frame = shows_frame()
    with pytest.raises(DataValidationError, match="outside"):
        reliability_table(frame.assign(predicted=frame["predicted"] * 2), ["product_id"])
    with pytest.raises(DataValidationError, match="true/false"):
        reliability_table(frame.assign(accepted="yes"), ["product_id"])
    as_ints = reliability_table(frame.assign(accepted=frame["accepted"].astype(int)), [])
    assert as_ints["accepts"].iloc[0] == 3


def test_deciles_of_ten_prediction_levels_give_ten_exact_points():
    levels = np.repeat(np.arange(10) / 10 + 0.05, 10)  # 0.05 .. 0.95, ten shows each
    accepted = np.concatenate([np.arange(10) < i for i in range(10)])  # i of 10 accepted
    frame = pd.DataFrame({"predicted": levels, "accepted": accepted})
    bins = reliability_bins(frame.sample(frac=1.0, random_state=3))
    assert bins["bin"].tolist() == list(range(10))
    assert bins["shows"].tolist() == [10] * 10
    assert bins["predicted"].to_numpy() == pytest.approx(np.arange(10) / 10 + 0.05)
    assert bins["observed"].to_numpy() == pytest.approx(np.arange(10) / 10)


def test_tied_quantiles_merge_their_bins():
    frame = pd.DataFrame({"predicted": np.r_[np.zeros(60), np.linspace(0.1, 0.5, 40)],
                          "accepted": np.arange(100) % 5 == 0})
    bins = reliability_bins(frame)
    assert len(bins) == 5  # the six deciles at 0 are one bin, then four
    assert bins["shows"].tolist() == [60, 10, 10, 10, 10]
    assert bins["predicted"].iloc[0] == 0.0
    assert bins["accepts"].sum() == 20


def test_take_up_moments_and_the_poisson_binomial_band():
    propensity = pd.DataFrame({"savings": [0.5, 0.5, 0.0, 1.0], "loan": [0.1, 0.2, 0.3, 0.4]})
    expected, variance = take_up_moments(propensity)
    assert expected.to_dict() == pytest.approx({"savings": 2.0, "loan": 1.0})
    assert variance.to_dict() == pytest.approx(
        {"savings": 0.5, "loan": 0.09 + 0.16 + 0.21 + 0.24})
    # 10,000 customers: expected 100 (variance 90, band 100 +- 18.6) and 500 (variance 475)
    expected = pd.Series({"savings": 100.0, "loan": 500.0})
    variance = pd.Series({"savings": 90.0, "loan": 475.0})
    check = take_up_check(expected, variance, pd.Series({"savings": 150}), customers=10_000)
    check = check.set_index("product_id")
    assert check.loc["savings", "flag"] and check.loc["savings", "ratio"] == 1.5
    assert check.loc["savings", "low"] == pytest.approx(100 - Z95 * math.sqrt(90))
    assert check.loc["savings", "observed_rate"] == 0.015
    assert check.loc["savings", "predicted_rate"] == 0.01
    assert check.loc["loan", "observed"] == 0 and check.loc["loan", "flag"]  # none seen
    inside = take_up_check(expected, variance, pd.Series({"savings": 110, "loan": 520}), 10_000)
    assert not inside["flag"].any()


def test_take_up_check_refuses_products_without_prediction():
    expected, variance = pd.Series({"savings": 10.0}), pd.Series({"savings": 9.0})
    with pytest.raises(DataValidationError, match="'loan'"):
        take_up_check(expected, variance, pd.Series({"savings": 3, "loan": 1}), 100)
    with pytest.raises(ValueError, match="customers"):
        take_up_check(expected, variance, pd.Series({"savings": 3}), 0)
    with pytest.raises(DataValidationError, match="propensities"):
        take_up_moments(pd.DataFrame({"loan": [0.2, np.nan]}))


def test_the_svg_parses_with_one_circle_per_bin_and_an_escaped_title():
    frame = pd.DataFrame({"predicted": np.linspace(0.0, 0.3, 1000),
                          "accepted": np.arange(1000) % 7 == 0})
    bins = reliability_bins(frame)
    svg = reliability_svg(bins, 'Savings & loans <"May"> \x01')
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert len(root.findall(f".//{SVG}circle")) == len(bins) == 10
    texts = [element.text for element in root.iter(f"{SVG}text")]
    assert 'Savings & loans <"May"> ' in texts
    assert "0" in texts and "0.3" in texts  # axis from 0 to the largest rate, rounded
    assert len(root.findall(f".//{SVG}line")) == 1  # the diagonal
    radii = [float(c.get("r")) for c in root.iter(f"{SVG}circle")]
    assert max(radii) == min(radii)  # equal shows, equal points


def test_the_svg_sizes_points_by_shows_and_draws_empty_bins():
    bins = pd.DataFrame({"predicted": [0.1, 0.2], "observed": [0.1, 0.3], "shows": [1, 400]})
    radii = [float(c.get("r")) for c in ET.fromstring(reliability_svg(bins, "t")).iter(
        f"{SVG}circle")]
    assert radii[0] < radii[1]
    empty = ET.fromstring(reliability_svg(reliability_bins(shows_frame().iloc[:0]), "none"))
    assert empty.findall(f".//{SVG}circle") == []
    with pytest.raises(ValueError, match="shows"):
        reliability_svg(bins.drop(columns="shows"), "t")


def test_write_report_writes_the_named_files_and_no_temporary_ones(tmp_path):
    table = reliability_table(shows_frame(), ["product_id"])
    indexed = pd.Series({"savings": 1.0}, name="ratio").rename_axis("product_id").to_frame()
    folder = tmp_path / "reports" / "2027-05"
    paths = write_report(folder, {"by_product": table, "ratios": indexed},
                         {"calibration": "<svg/>"})
    assert paths == [folder / "by_product.csv", folder / "ratios.csv", folder / "calibration.svg"]
    assert sorted(os.listdir(folder)) == ["by_product.csv", "calibration.svg", "ratios.csv"]
    back = pd.read_csv(folder / "by_product.csv")
    assert back["shows"].tolist() == table["shows"].tolist()
    assert list(pd.read_csv(folder / "ratios.csv").columns) == ["product_id", "ratio"]
    assert (folder / "calibration.svg").read_text(encoding="utf-8") == "<svg/>"


def test_a_failed_write_leaves_neither_half_a_file_nor_a_temporary_one(tmp_path, monkeypatch):
    (tmp_path / "calibration.svg").write_text("old", encoding="utf-8")

    def broken(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_report(tmp_path, {}, {"calibration": "<svg>new</svg>"})
    assert os.listdir(tmp_path) == ["calibration.svg"]
    assert (tmp_path / "calibration.svg").read_text(encoding="utf-8") == "old"
    with pytest.raises(ValueError, match="plain file names"):
        write_report(tmp_path, {"../escape": shows_frame()}, {})
