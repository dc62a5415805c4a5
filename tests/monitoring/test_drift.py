"""Population stability index: known values by hand, and the drift table."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest

from recommender.exceptions import DataValidationError
from recommender.monitoring.drift import FLOOR, drift_table, psi

UNIFORM = pd.Series(np.arange(1000, dtype=np.float64))  # deciles of 100 values each


def test_identical_samples_have_no_drift():
    rng = np.random.default_rng(11)
    values = pd.Series(rng.normal(size=10_000))
    assert psi(values, values.copy()) == pytest.approx(0.0, abs=1e-12)
    labels = pd.Series(rng.choice(["a", "b", "c"], 10_000))
    assert psi(labels, labels.sample(frac=1.0, random_state=2)) == pytest.approx(0.0, abs=1e-12)


def test_a_50_50_split_becoming_70_30_has_the_hand_computed_psi():
    # (0.7 - 0.5) ln(0.7 / 0.5) + (0.3 - 0.5) ln(0.3 / 0.5) = 0.2 ln 1.4 + 0.2 ln(5/3)
    expected = 0.2 * math.log(1.4) + 0.2 * math.log(5 / 3)
    assert expected == pytest.approx(0.1694595720774, abs=1e-12)
    reference = pd.Series(["single"] * 50 + ["married"] * 50)
    current = pd.Series(["single"] * 70 + ["married"] * 30)
    assert psi(reference, current) == pytest.approx(expected, abs=1e-6)
    as_category = psi(reference.astype("category"), current.astype("category"))
    assert as_category == pytest.approx(expected, abs=1e-6)
    as_bool = psi(pd.Series([True] * 50 + [False] * 50), pd.Series([True] * 70 + [False] * 30))
    assert as_bool == pytest.approx(expected, abs=1e-6)


def test_a_shift_of_one_standard_deviation_is_flagged():
    rng = np.random.default_rng(7)
    reference = pd.DataFrame({"customer_id": np.arange(100_000),
                              "income": rng.normal(size=100_000),
                              "age": rng.normal(size=100_000)})
    current = pd.DataFrame({"customer_id": np.arange(100_000),
                            "income": rng.normal(size=100_000) + 1.0,
                            "age": rng.normal(size=100_000)})
    table = drift_table(reference, current)
    assert table["feature"].tolist() == ["income", "age"]  # largest first, id left out
    income, age = table["psi"]
    assert income > 0.5  # the theoretical PSI of N(0,1) -> N(1,1) on deciles is near 0.9
    assert age < 0.01
    assert table["flagged"].tolist() == [True, False]


def test_categories_the_reference_never_saw_share_one_other_bin():
    reference = pd.Series(["a"] * 100)
    current = pd.Series(["a"] * 50 + ["b"] * 25 + ["c"] * 25)
    # bins a and other: (0.5 - 1) ln(0.5 / 1) + (0.5 - floor) ln(0.5 / floor)
    expected = -0.5 * math.log(0.5) + (0.5 - FLOOR) * math.log(0.5 / FLOOR)
    assert psi(reference, current) == pytest.approx(expected, abs=1e-9)
    # a vanished category counts too: its current share is floored, not log(0)
    gone = (FLOOR - 0.5) * math.log(FLOOR / 0.5) + 0.5 * math.log(2.0)
    assert psi(pd.Series(["a", "b"] * 50), pd.Series(["a"] * 100)) == pytest.approx(gone)


def test_missing_values_are_a_bin_of_their_own():
    current = UNIFORM.copy()
    current[:100] = np.nan  # the lowest decile goes missing
    # decile 0 empties (0.1 -> floor) and the missing bin fills (floor -> 0.1)
    expected = 2 * (0.1 - FLOOR) * math.log(0.1 / FLOOR)
    assert psi(UNIFORM, current) == pytest.approx(expected, abs=1e-9)
    assert psi(current, current.sample(frac=1.0, random_state=1)) == pytest.approx(0.0)
    labels = pd.Series(["a", "b", None, None] * 25)
    assert psi(labels, pd.Series(["a", "b"] * 50)) == pytest.approx(
        2 * (0.5 - 0.25) * math.log(2) + (FLOOR - 0.5) * math.log(FLOOR / 0.5))


def test_values_past_the_reference_range_land_in_the_open_ended_last_bin():
    expected = 0.9 * math.log(10) + 9 * (FLOOR - 0.1) * math.log(FLOOR / 0.1)
    assert psi(UNIFORM, UNIFORM + 10_000) == pytest.approx(expected, abs=1e-9)
    assert psi(UNIFORM, UNIFORM - 10_000) == pytest.approx(expected, abs=1e-9)


def test_dates_are_binned_as_numbers():
    dates = pd.Series(pd.date_range("2020-01-01", periods=1000, freq="D"))
    assert psi(dates, dates) == 0.0
    assert psi(dates, dates + pd.Timedelta(days=5000)) == pytest.approx(
        psi(UNIFORM, UNIFORM + 10_000))


def test_the_table_lists_columns_in_only_one_frame(caplog):
    reference = pd.DataFrame({"customer_id": [1, 2], "age": [30, 40], "segment": ["a", "b"]})
    current = pd.DataFrame({"customer_id": [1, 2], "age": [30, 40], "income": [1.0, 2.0]})
    with caplog.at_level(logging.WARNING, logger="recommender.monitoring.drift"):
        table = drift_table(reference, current)
    assert table["feature"].tolist() == ["age"]
    assert table.attrs["missing"] == {"reference_only": ["segment"],
                                      "current_only": ["income"]}
    assert "segment" in caplog.text
    assert list(table.columns) == ["feature", "psi", "flagged"]


def test_a_changed_type_or_an_empty_sample_is_refused():
    with pytest.raises(DataValidationError, match="age"):
        psi(pd.Series([30, 40], name="age"), pd.Series(["thirty", "forty"], name="age"))
    with pytest.raises(DataValidationError, match="empty"):
        psi(pd.Series([1.0]), pd.Series([], dtype=float))
    with pytest.raises(ValueError, match="threshold"):
        drift_table(pd.DataFrame({"a": [1]}), pd.DataFrame({"a": [1]}), threshold=-1)
