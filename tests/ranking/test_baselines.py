"""The baselines reported beside every method: known answers on small hand-made data."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recommender.data import columns as C
from recommender.ranking.baselines import PlainGBDT, plain_features, recent_popularity


def _m(rows: list[list[int]]) -> sp.csr_matrix:
    return sp.csr_matrix(np.array(rows, dtype=np.float32))


def test_recent_popularity_counts_only_the_last_months():
    """Four customers, two products; product 0 was added twice in the first transition
    only, product 1 once in each of the last two: over the last 2 months, 0/8 and 2/8."""
    snapshots = [_m([[0, 0], [0, 0], [0, 0], [0, 0]]),
                 _m([[1, 0], [1, 0], [0, 0], [0, 0]]),
                 _m([[1, 1], [1, 0], [0, 0], [0, 0]]),
                 _m([[1, 1], [1, 1], [0, 0], [0, 0]])]
    presence = np.ones((4, 4), dtype=bool)
    np.testing.assert_allclose(recent_popularity(snapshots, presence, months=2), [0, 2 / 8])
    np.testing.assert_allclose(recent_popularity(snapshots, presence, months=3),
                               [2 / 12, 2 / 12])


def test_recent_popularity_of_one_snapshot_is_the_holding_share():
    np.testing.assert_allclose(recent_popularity([_m([[1, 0], [1, 1]])], np.ones((2, 1), bool)),
                               [1.0, 0.5])


def test_plain_gbdt_learns_an_obvious_rule_and_keeps_rare_products_at_their_share():
    """Customers over 50 add product 0, the others product 1; product 2 is added once."""
    rng = np.random.default_rng(3)
    n = 600
    age = rng.integers(20, 80, n).astype(float)
    profiles = pd.DataFrame({C.AGE: age, C.INCOME: np.nan, C.TENURE_MONTHS: 12,
                             C.SEGMENT: "mass"})
    added = np.zeros((n, 3), dtype=np.float32)
    added[age > 50, 0] = 1
    added[age <= 50, 1] = 1
    added[0, 2] = 1
    held = sp.csr_matrix((n, 3), dtype=np.float32)
    x = plain_features(held, None, profiles, ("mass",))
    model = PlainGBDT().fit(x, sp.csr_matrix(added))
    scores = model.predict(x)
    older = age > 50
    assert (scores[older, 0] > scores[older, 1]).mean() > 0.95
    assert (scores[~older, 1] > scores[~older, 0]).mean() > 0.95
    assert model.boosters[2] is None
    np.testing.assert_allclose(scores[:, 2], 1 / n, rtol=1e-6)
    assert x.shape[1] == 3 + 3 + 3 + 1  # holdings now, a month before (missing), profile, segment
    assert np.isnan(x[:, 3:6]).all()


def test_plain_features_append_the_extra_columns():
    profiles = pd.DataFrame({C.AGE: [30.0], C.INCOME: [1.0], C.TENURE_MONTHS: [2],
                             C.SEGMENT: ["mass"]})
    x = plain_features(_m([[1, 0]]), _m([[0, 1]]), profiles, ("mass",), np.array([[7.0, 8.0]]))
    assert x.tolist() == [[1, 0, 0, 1, 30, 1, 2, 0, 7, 8]]


@pytest.mark.parametrize("months", [3, 4])
def test_the_served_method_is_chosen_on_an_earlier_month_when_there_is_one(
        demo_bank, packaged_catalog, life_stages, months, caplog):
    from recommender.ranking.backtest import evaluate
    from recommender.ranking.config import TrainConfig
    from recommender.ranking.fitting import upto

    bank = upto(demo_bank, demo_bank.snapshots[months - 1])
    bank = bank.__class__(customers=bank.customers, holdings=bank.holdings[
        bank.holdings[C.SNAPSHOT_DATE] >= demo_bank.snapshots[0]])
    result = evaluate(bank, packaged_catalog, life_stages, TrainConfig())
    selection = result["selection"]
    assert selection["separate_from_report"] == (months == 4)
    expected = bank.snapshots[-2] if months == 4 else bank.snapshots[-1]
    assert selection["month"] == str(expected.date())
    assert ("chosen on the month it is reported on" in caplog.text) == (months == 3)
    servable = {m: v for m, v in selection["methods"].items() if m in ("hybrid", "acquisition")}
    assert result["served"] == max(servable, key=servable.get)


def test_plain_features_encode_a_segment_alike_in_every_frame():
    """The segments of the training customers fix the codes: a frame holding only
    "private" customers gives them the code of "private", and an unseen segment is missing."""
    profiles = pd.DataFrame({C.AGE: [30.0, 40.0], C.INCOME: [1.0, 2.0],
                             C.TENURE_MONTHS: [2, 3], C.SEGMENT: ["private", "student"]})
    x = plain_features(_m([[1], [0]]), None, profiles, ("affluent", "mass", "private"))
    assert x[0, 5] == 2 and np.isnan(x[1, 5])
