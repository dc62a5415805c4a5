"""Take-up rates, overall and per life stage, against hand-computed answers.

Three customers, two products, three snapshots; customers 0 and 1 are in stage 0, customer 2
in stage 1. Customer 1 has no holdings in the first snapshot (not yet a customer).

    snapshot 0: c0 {p0}      c1 {}        c2 {p0}
    snapshot 1: c0 {p0, p1}  c1 {p0}      c2 {p0}
    snapshot 2: c0 {p0, p1}  c1 {p0, p1}  c2 {p0, p1}

Transitions 0->1: present c0, c2; c0 takes p1 (c1's account opening does not count).
Transitions 1->2: present c0, c1, c2; c1 and c2 take p1.
Counts: stage 0 [0, 2] over 3 customer-months, stage 1 [0, 1] over 2: overall [0, 3/5].
"""

import warnings

import numpy as np
import scipy.sparse as sp

from recommender.ranking.popularity import acquisition_rates


def _m(rows) -> sp.csr_matrix:
    return sp.csr_matrix(np.array(rows, dtype=np.float32))


SNAPSHOTS = [_m([[1, 0], [0, 0], [1, 0]]), _m([[1, 1], [1, 0], [1, 0]]),
             _m([[1, 1], [1, 1], [1, 1]])]
STAGES = np.array([0, 0, 1])


def test_rates_without_smoothing():
    rates = acquisition_rates(SNAPSHOTS, STAGES, 2, smoothing=0.0)
    np.testing.assert_allclose(rates.overall, [0.0, 0.6], rtol=1e-6)
    np.testing.assert_allclose(rates.by_stage, [[0.0, 2 / 3], [0.0, 0.5]], rtol=1e-6)
    assert rates.overall.dtype == np.float32 and rates.by_stage.dtype == np.float32


def test_smoothing_shrinks_stages_toward_the_overall_rate():
    """(stage count + s * overall) / (stage exposure + s) with s = 2."""
    rates = acquisition_rates(SNAPSHOTS, STAGES, 2, smoothing=2.0)
    np.testing.assert_allclose(rates.overall, [0.0, 0.6], rtol=1e-6)
    np.testing.assert_allclose(rates.by_stage, [[0.0, (2 + 1.2) / 5], [0.0, (1 + 1.2) / 4]],
                               rtol=1e-6)


def test_heavy_smoothing_gives_the_overall_rate_everywhere():
    rates = acquisition_rates(SNAPSHOTS, STAGES, 2, smoothing=1e9)
    np.testing.assert_allclose(rates.by_stage, [[0.0, 0.6], [0.0, 0.6]], rtol=1e-5)


def test_empty_stage_gets_the_overall_rate_when_smoothed():
    rates = acquisition_rates(SNAPSHOTS, STAGES, 3, smoothing=5.0)
    np.testing.assert_allclose(rates.by_stage[2], rates.overall, rtol=1e-6)


def test_single_snapshot_uses_holding_rates():
    """No transitions to learn from: the share of customers holding each product stands in."""
    rates = acquisition_rates([_m([[1, 0], [0, 0], [1, 1]])], STAGES, 2, smoothing=0.0)
    np.testing.assert_allclose(rates.overall, [2 / 3, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(rates.by_stage, [[0.5, 0.0], [1.0, 1.0]], rtol=1e-6)


def test_for_stages_gives_one_row_per_customer():
    rates = acquisition_rates(SNAPSHOTS, STAGES, 2, smoothing=0.0)
    prior = rates.for_stages(np.array([1, 0, 1], dtype=np.int16))
    np.testing.assert_allclose(prior, [[0, 0.5], [0, 2 / 3], [0, 0.5]], rtol=1e-6)


def test_unsmoothed_empty_stage_gives_finite_rates():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rates = acquisition_rates(SNAPSHOTS, STAGES, 3, smoothing=0.0)
    assert np.isfinite(rates.by_stage).all()
