"""The champion/challenger report: counts, Wilson and Newcombe intervals with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from recommender.exceptions import ConfigError, DataValidationError
from recommender.policy.experiment_report import (
    ExperimentReport,
    experiment_report,
    newcombe_interval,
    wilson_interval,
)

VALUES = {"card": 2.0, "loan": 10.0}


def responses(counts: dict[str, tuple[int, int]], product: str = "card") -> pd.DataFrame:
    """``arm -> (shows, accepts)`` as response rows: a "shown" row per show, an "accepted"
    row per accept and a "declined" row for each of the other shows."""
    arms, outcomes = [], []
    for arm, (shows, accepts) in counts.items():
        arms += [arm] * (2 * shows)
        outcomes += (["shown"] * shows + ["accepted"] * accepts
                     + ["declined"] * (shows - accepts))
    return pd.DataFrame({"arm": arms, "outcome": outcomes, "product_id": product})


def test_the_wilson_interval_of_10_in_100_is_the_textbook_one():
    # 10/100 at 95%: (0.05523, 0.17437), the score interval of Wilson (1927)
    low, high = wilson_interval(np.array([10]), np.array([100]))
    assert (round(float(low[0]), 5), round(float(high[0]), 5)) == (0.05523, 0.17437)
    arm = experiment_report(responses({"a": (100, 10)}), ["a"], VALUES).arms[0]
    assert (arm.shows, arm.accepts, arm.accept_rate) == (100, 10, 0.1)
    assert (round(arm.rate_low, 5), round(arm.rate_high, 5)) == (0.05523, 0.17437)


@pytest.mark.parametrize(("counts", "expected"), [
    # Newcombe RG (1998), Interval estimation for the difference between independent
    # proportions: comparison of eleven methods, Stat Med 17:873-890, Table II, method 10,
    # examples (a) and (b); (b) also in the tests of the R package propint.
    ((56, 70, 48, 80), (0.0524, 0.3339)),
    ((9, 10, 3, 10), (0.1705, 0.8090)),
])
def test_the_newcombe_interval_reproduces_newcombe_1998(counts, expected):
    k1, n1, k2, n2 = counts
    low, high = newcombe_interval(*map(np.array, counts))
    assert (round(float(low), 4), round(float(high), 4)) == expected
    report = experiment_report(responses({"champion": (n2, k2), "challenger": (n1, k1)}),
                               ["champion", "challenger"], VALUES)
    (difference,) = report.differences
    assert (difference.arm, difference.against) == ("challenger", "champion")
    assert difference.rate_difference == pytest.approx(k1 / n1 - k2 / n2)
    assert (round(difference.low, 4), round(difference.high, 4)) == expected
    assert difference.significant


def test_the_level_changes_the_intervals():
    wide = experiment_report(responses({"a": (70, 56), "b": (80, 48)}), ["b", "a"], VALUES,
                             level=0.99)
    narrow = experiment_report(responses({"a": (70, 56), "b": (80, 48)}), ["b", "a"], VALUES,
                               level=0.8)
    assert wide.differences[0].low < 0.0524 < narrow.differences[0].low
    assert wide.arms[0].rate_high > narrow.arms[0].rate_high


def test_an_arm_that_showed_nothing_has_zeros_nan_intervals_and_no_significance():
    report = experiment_report(responses({"champion": (500, 50)}),
                               ["champion", "silent"], VALUES)
    silent = report.arms[1]
    assert (silent.arm, silent.shows, silent.accepts, silent.value) == ("silent", 0, 0, 0.0)
    assert all(math.isnan(x) for x in (silent.accept_rate, silent.rate_low, silent.rate_high,
                                       silent.value_per_show))
    difference = report.differences[0]
    assert math.isnan(difference.low) and math.isnan(difference.high)
    assert not difference.significant
    as_dict = report.to_dict()
    assert as_dict["arms"][1]["rate_low"] is None
    assert as_dict["differences"][0]["significant"] is False
    json.dumps(as_dict, allow_nan=False)  # no NaN left: strict JSON takes it


def test_a_big_difference_is_significant_and_identical_arms_are_not():
    report = experiment_report(
        responses({"champion": (1000, 50), "better": (1000, 150), "same": (1000, 50)}),
        ["champion", "better", "same"], VALUES)
    better, same = report.differences
    assert better.significant and better.low > 0
    assert better.rate_difference == pytest.approx(0.1)
    assert not same.significant and same.low < 0 < same.high
    assert same.rate_difference == 0.0
    # a worse challenger is significant too, on the other side
    worse = experiment_report(responses({"champion": (1000, 150), "worse": (1000, 50)}),
                              ["champion", "worse"], VALUES).differences[0]
    assert worse.significant and worse.high < 0


@pytest.mark.parametrize("level", [0, 1, 1.5, -0.1, 95, float("nan"), True, "0.95", None])
def test_the_level_must_be_between_0_and_1(level):
    with pytest.raises(ConfigError, match="between 0 and 1"):
        experiment_report(responses({"a": (10, 1)}), ["a"], VALUES, level=level)


def test_value_per_show_uses_the_value_weights_of_the_accepted_products():
    frame = pd.concat([
        responses({"champion": (10, 2)}, product="card"),   # 2 x 2.0 = 4 over 10 shows
        responses({"challenger": (8, 1)}, product="card"),  # 1 x 2.0
        responses({"challenger": (2, 1)}, product="loan"),  # 1 x 10.0: 12 over 10 shows
    ], ignore_index=True)
    report = experiment_report(frame, ["champion", "challenger"], VALUES)
    champion, challenger = report.arms
    assert (champion.value, champion.value_per_show) == (4.0, 0.4)
    assert (challenger.shows, challenger.accepts) == (10, 2)
    assert (challenger.value, challenger.value_per_show) == (12.0, 1.2)
    assert report.differences[0].value_per_show_difference == pytest.approx(0.8)


def test_an_accepted_product_without_a_value_weight_is_an_error():
    with pytest.raises(DataValidationError, match=r"\['loan'\] have no value weight"):
        experiment_report(responses({"a": (10, 1)}, product="loan"), ["a"], {"card": 1.0})


def test_rows_of_arms_not_listed_are_left_out():
    frame = pd.concat([responses({"champion": (100, 10), "challenger": (100, 20)}),
                       responses({"retired": (50, 50)}, product="unvalued"),
                       pd.DataFrame({"arm": ["retired"], "outcome": ["typo"],
                                     "product_id": ["card"]})], ignore_index=True)
    report = experiment_report(frame, ["champion", "challenger"], VALUES)
    assert [(a.arm, a.shows, a.accepts) for a in report.arms] == [
        ("champion", 100, 10), ("challenger", 100, 20)]
    assert [d.arm for d in report.differences] == ["challenger"]


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match=r"\['outcome', 'product_id'\]"):
        experiment_report(pd.DataFrame({"arm": ["a"]}), ["a"], VALUES)


def test_an_unknown_outcome_is_named_with_its_row():
    frame = pd.DataFrame({"arm": ["b", "a", "a"], "outcome": ["oops", "shown", "Accepted"],
                          "product_id": "card"}, index=[7, 7, 9])
    with pytest.raises(DataValidationError, match="Accepted") as error:
        experiment_report(frame, ["a"], VALUES)
    assert error.value.rows == (2,)


@pytest.mark.parametrize("arms", [[], ["a", "a"], "ab", ["a", 1]])
def test_the_arms_must_be_distinct_names(arms):
    with pytest.raises(ConfigError, match="arm"):
        experiment_report(responses({"a": (10, 1)}), arms, VALUES)


def test_more_accepts_than_shows_clip_the_rate_to_1():
    frame = pd.DataFrame({"arm": "a", "outcome": ["shown", "accepted", "accepted"],
                          "product_id": "card"})
    arm = experiment_report(frame, ["a"], VALUES).arms[0]
    assert (arm.shows, arm.accepts, arm.accept_rate, arm.rate_high) == (1, 2, 1.0, 1.0)
    assert 0 < arm.rate_low < 1


def test_the_report_serialises_and_prints():
    report = experiment_report(responses({"champion": (80, 48), "challenger": (70, 56)}),
                               ["champion", "challenger"], VALUES)
    assert isinstance(report, ExperimentReport) and report.champion.arm == "champion"
    as_dict = report.to_dict()
    assert as_dict["level"] == 0.95 and as_dict["champion"] == "champion"
    assert as_dict["arms"][1] == {
        "arm": "challenger", "shows": 70, "accepts": 56, "accept_rate": 0.8,
        "rate_low": pytest.approx(0.6918, abs=1e-4), "rate_high": pytest.approx(0.8769, abs=1e-4),
        "value": 112.0, "value_per_show": 1.6}
    assert json.loads(json.dumps(as_dict)) == as_dict
    text = report.to_text()
    lines = text.splitlines()
    assert lines[0].startswith("Champion/challenger report") and "95%" in lines[0]
    assert "80.0%" in text and "[+5.2, +33.4]" in text and "yes" in text
    assert len(lines) == 7
    with pytest.raises(ValueError, match="English"):
        report.to_text("zh")
