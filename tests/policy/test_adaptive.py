"""The Gamma-Poisson correction of the offline propensity: known answers on small data."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from recommender.exceptions import ConfigError
from recommender.policy.adaptive import AdaptiveSettings, Corrections, Evidence

PRODUCTS, CHANNELS, STAGES = ("deposit", "card", "loan"), ("branch", "mobile"), ("young", "old")


def _shows(product: str, channel: str, stage: str, n: int, propensity: float,
           accepted: int) -> pd.DataFrame:
    return pd.DataFrame({"product_id": product, "channel": channel, "life_stage": stage,
                         "propensity": propensity, "accepted": np.arange(n) < accepted})


def _corrections(*frames: pd.DataFrame, **settings) -> Corrections:
    frame = pd.concat(frames, ignore_index=True) if frames else _shows("card", "mobile",
                                                                       "young", 0, 0.1, 0)
    evidence = Evidence.from_frame(frame, PRODUCTS, CHANNELS, STAGES)
    return Corrections.fit(evidence, AdaptiveSettings(**settings))


def test_with_no_evidence_every_factor_is_one_and_every_product_untested():
    corrections = _corrections()
    assert np.array_equal(corrections.factors, np.ones((3, 2, 2)))
    assert corrections.untested.all()


def test_the_factor_moves_half_way_at_prior_strength_and_to_the_ratio_with_much_evidence():
    # 200 shows at 0.1 expect 20 accepts (= the prior's strength); 10 came: ratio 0.5
    half = _corrections(_shows("deposit", "mobile", "young", 200, 0.1, 10), prior_strength=20)
    d, m = PRODUCTS.index("deposit"), CHANNELS.index("mobile")
    assert half.factors[d, m, 0] == pytest.approx((20 + 10) / (20 + 20))
    # 20,000 shows expecting 2,000, 1,000 came: the posterior is the observed ratio
    much = _corrections(_shows("deposit", "mobile", "young", 20_000, 0.1, 1_000))
    assert much.factors[d, m, 0] == pytest.approx(0.5, abs=0.01)
    # the other channel and products learnt nothing
    assert half.factors[d, 1 - m].tolist() == [1.0, 1.0] and (half.factors[1:] == 1).all()
    assert half.untested[d].tolist() == [m != 0, m != 1]


def test_a_thin_life_stage_follows_its_product_and_channel():
    corrections = _corrections(_shows("card", "branch", "young", 20_000, 0.05, 2_000),
                               _shows("card", "branch", "old", 4, 0.05, 0))
    c = PRODUCTS.index("card")
    young, old = corrections.factors[c, 0]
    assert young == pytest.approx(2.0, abs=0.02)
    assert old == pytest.approx(young, rel=0.02)  # 0.2 expected accepts: nothing of its own


def test_the_factor_stays_within_its_bounds_whatever_the_evidence():
    corrections = _corrections(_shows("loan", "mobile", "old", 10_000, 0.01, 5_000),
                               _shows("card", "mobile", "old", 10_000, 0.5, 0),
                               min_factor=0.5, max_factor=1.5)
    assert corrections.factors.max() == 1.5 and corrections.factors.min() == 0.5
    draws = corrections.thompson_factors(np.random.default_rng(1))
    assert draws.min() >= 0.5 and draws.max() <= 1.5


def test_thompson_draws_of_an_untested_product_centre_on_one_with_the_priors_spread():
    corrections = _corrections(prior_strength=25)
    rng = np.random.default_rng(7)
    draws = np.stack([corrections.thompson_factors(rng)[0, 0, 0] for _ in range(20_000)])
    assert draws.mean() == pytest.approx(1.0, abs=0.01)
    assert draws.std() == pytest.approx(1 / np.sqrt(25), rel=0.05)  # Gamma(k, k): sd 1/sqrt(k)


def test_the_credible_interval_covers_the_known_ratio_and_narrows_with_evidence():
    thin = _corrections(_shows("deposit", "branch", "young", 100, 0.2, 10))
    thick = _corrections(_shows("deposit", "branch", "young", 10_000, 0.2, 1_000))
    (lo_thin, hi_thin), (lo, hi) = thin.interval(), thick.interval()
    assert lo[0, 0, 0] < 0.5 < hi[0, 0, 0]
    # known answer: Gamma(20 + 1000, 20 + 2000) has sd sqrt(1020)/2020; 90% is +-1.645 sd
    sd = np.sqrt(1020) / 2020
    assert hi[0, 0, 0] - lo[0, 0, 0] == pytest.approx(2 * 1.645 * sd, rel=0.01)
    assert hi[0, 0, 0] - lo[0, 0, 0] < (hi_thin[0, 0, 0] - lo_thin[0, 0, 0]) / 4


def test_rows_of_unknown_products_are_left_out_and_bad_propensities_refused():
    frame = pd.concat([_shows("gold_bar", "mobile", "old", 50, 0.1, 50),
                       _shows("card", "mobile", "old", 10, 0.1, 1)], ignore_index=True)
    evidence = Evidence.from_frame(frame, PRODUCTS, CHANNELS, STAGES)
    assert evidence.shows.sum() == 10 and evidence.accepts.sum() == 1
    bad = _shows("card", "mobile", "old", 3, 0.1, 0)
    bad.loc[2, "propensity"] = 1.7
    with pytest.raises(ValueError, match="outside \\[0, 1\\], first at row 2"):
        Evidence.from_frame(bad, PRODUCTS, CHANNELS, STAGES)
    with pytest.raises(ValueError, match="lacks column"):
        Evidence.from_frame(bad.drop(columns="accepted"), PRODUCTS, CHANNELS, STAGES)


@pytest.mark.parametrize(("settings", "message"), [
    ({"prior_strength": 0}, "prior_strength must be a number above 0"),
    ({"min_factor": 1.2}, "must bracket 1"),
    ({"max_factor": 0.9}, "must bracket 1"),
    ({"exploration_share": 1.5}, "exploration_share must be between 0 and 1"),
    ({"refresh_seconds": "60"}, "refresh_seconds must be a number"),
])
def test_bad_settings_are_refused_naming_the_key(settings, message):
    with pytest.raises(ConfigError, match=message):
        AdaptiveSettings(**settings)


def test_counted_evidence_weighs_each_day_by_its_age():
    counts = pd.DataFrame({
        "product_id": ["card", "card", "loan"], "channel": ["mobile"] * 3,
        "life_stage": ["young"] * 3, "day": ["2026-11-10", "2026-11-08", "2026-11-10"],
        "shows": [100, 100, 5], "expected": [4.0, 4.0, 0.5], "accepts": [2, 8, 1]})
    evidence = Evidence.from_counts(counts, PRODUCTS, CHANNELS, STAGES,
                                    as_of=date(2026, 11, 10), half_life_days=2.0)
    c, m, y = PRODUCTS.index("card"), CHANNELS.index("mobile"), STAGES.index("young")
    assert evidence.shows[c, m, y] == pytest.approx(100 + 50)  # two days old: half
    assert evidence.accepts[c, m, y] == pytest.approx(2 + 4)
    assert evidence.expected[c, m, y] == pytest.approx(4 + 2)
    assert evidence.counted[c, m, y] == 200  # unweighted: what "tried enough" reads
    assert evidence.counted.sum() == 205


def test_a_product_is_tested_after_min_shows_in_the_channel():
    corrections = _corrections(_shows("card", "mobile", "young", 60, 0.1, 3),
                               _shows("card", "mobile", "old", 40, 0.1, 3), min_shows=100)
    c, m, b = PRODUCTS.index("card"), CHANNELS.index("mobile"), CHANNELS.index("branch")
    assert not corrections.untested[c, m] and corrections.untested[c, b]
    assert corrections.untested[PRODUCTS.index("loan")].all()


def test_the_adaptive_table_refuses_unknown_keys_and_bad_values():
    assert AdaptiveSettings.from_table({"prior_strength": 5.0}, "p.toml:").prior_strength == 5
    with pytest.raises(ConfigError, match=r"unknown keys \['prior_strenght'\]"):
        AdaptiveSettings.from_table({"prior_strenght": 5.0}, "p.toml:")
    with pytest.raises(ConfigError, match="min_shows"):
        AdaptiveSettings(min_shows=-1)
    with pytest.raises(ConfigError, match="new_product_propensity"):
        AdaptiveSettings(new_product_propensity=1.5)
