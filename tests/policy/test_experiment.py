"""Arm assignment: stable, unbiased, with the configured shares."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from recommender.exceptions import ConfigError
from recommender.policy.experiment import ExperimentSettings, assign_arms, unit_hash

IDS = [f"C{n:08d}" for n in range(100_000)]
SHARES = {"champion": 0.8, "challenger": 0.15, "holdout": 0.05}


def test_the_arms_have_the_configured_shares_on_100000_ids():
    arms = assign_arms("spring-2027", IDS, SHARES)
    observed = [int((arms == arm).sum()) for arm in SHARES]
    expected = [share * len(IDS) for share in SHARES.values()]
    assert stats.chisquare(observed, expected).pvalue > 0.001
    # and the test can fail: a 2-point skew on 100,000 ids is far outside chance
    skewed = [observed[0] - 2_000, observed[1] + 2_000, observed[2]]
    assert stats.chisquare(skewed, expected).pvalue < 1e-6


def test_the_assignment_is_stable_across_calls_orders_and_processes():
    arms = assign_arms("spring-2027", IDS[:1000], SHARES)
    assert (assign_arms("spring-2027", IDS[:1000][::-1], SHARES)[::-1] == arms).all()
    script = ("import sys; from recommender.policy.experiment import assign_arms; "
              "print(','.join(assign_arms('spring-2027', sys.argv[1].split(','), "
              "{'champion': 0.8, 'challenger': 0.15, 'holdout': 0.05})))")
    other = subprocess.run([sys.executable, "-c", script, ",".join(IDS[:1000])],
                           capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "7"})
    assert other.stdout.strip().split(",") == arms.tolist()


def test_another_experiment_reshuffles_and_a_share_change_moves_only_the_boundary():
    first = assign_arms("spring-2027", IDS, SHARES)
    other = assign_arms("autumn-2027", IDS, SHARES)
    both = ((first == "challenger") & (other == "challenger")).mean()
    assert both == pytest.approx(0.15 * 0.15, abs=0.003)  # independent, not the same people
    grown = assign_arms("spring-2027", IDS, {"champion": 0.7, "challenger": 0.25,
                                             "holdout": 0.05})
    assert ((first == "challenger") <= (grown == "challenger")).all()  # nobody left it
    assert (first[grown == "holdout"] == "holdout").all()


def test_the_unit_hash_is_uniform():
    u = unit_hash("x", IDS)
    assert u.min() >= 0 and u.max() < 1
    assert stats.kstest(u, "uniform").pvalue > 0.001
    assert len(np.unique(u)) == len(IDS)


@pytest.mark.parametrize(("shares", "message"), [
    ({}, "has no arms"),
    ({"a": 0.5, "b": 0.4}, "add up to 0.9, not 1"),
    ({"a": 1.2, "b": -0.2}, "share of arm 'b'"),
    ({"a": "half", "b": 0.5}, "share of arm 'a'"),
])
def test_bad_shares_are_refused_naming_the_experiment(shares, message):
    with pytest.raises(ConfigError, match=message):
        assign_arms("spring-2027", IDS[:3], shares)


def test_the_experiment_table_is_checked_and_names_what_is_wrong():
    arms = [{"name": "champion", "share": 0.9}, {"name": "challenger", "share": 0.1,
                                                 "model": "v2", "policy": "variant.toml"}]
    settings = ExperimentSettings.from_table({"name": "x", "arm": arms}, "p.toml:")
    assert settings.champion.name == "champion" and settings.arm("challenger").model == "v2"
    assert settings.level == 0.95
    assert list(settings.assign(["a", "b"])) == list(assign_arms("x", ["a", "b"],
                                                                 settings.shares))
    with pytest.raises(ConfigError, match="no arm 'other'"):
        settings.arm("other")
    with pytest.raises(ConfigError, match="needs a name"):
        ExperimentSettings.from_table({"arm": arms}, "p.toml:")
    with pytest.raises(ConfigError, match="two or more arms"):
        ExperimentSettings.from_table({"name": "x", "arm": arms[:1]}, "p.toml:")
    with pytest.raises(ConfigError, match="add up to 0.95"):
        ExperimentSettings.from_table(
            {"name": "x", "arm": [arms[0], {**arms[1], "share": 0.05}]}, "p.toml:")
    with pytest.raises(ConfigError, match="level"):
        ExperimentSettings.from_table({"name": "x", "arm": arms, "level": 95}, "p.toml:")
