"""Arithmetic that is the same bits everywhere: exact against integer arithmetic, and equal
for a row alone, in a batch, or in a process running another BLAS kernel."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from fractions import Fraction

import numpy as np
import pytest

from recommender.ranking.reproducible import (
    cholesky,
    cholesky_solve,
    dot_rows,
    fixed_point,
    grid_bits,
    solve_spd,
)

from kernels import environments

pytestmark = pytest.mark.numerics


def _exact_dot(a_ints, a_shift, b_ints, b_shift) -> list[list[Fraction]]:
    """The dot products of the fixed-point rows, in rational arithmetic."""
    return [[Fraction(sum(int(x) * int(y) for x, y in zip(ra, rb, strict=True)))
             / Fraction(2) ** (int(sa) + int(sb))
             for rb, sb in zip(b_ints, b_shift, strict=True)]
            for ra, sa in zip(a_ints, a_shift, strict=True)]


@pytest.mark.parametrize("k", [1, 3, 8, 64, 200])
def test_dot_rows_is_the_exact_dot_product_of_the_grid_values(k):
    rng = np.random.default_rng(k)
    a = (rng.standard_normal((6, k)) * rng.choice([1e-30, 1e-3, 1.0, 1e6], (6, 1))).astype(
        np.float32)
    b = rng.standard_normal((5, k)).astype(np.float32)
    a[0] = 0.0  # a row of zeros
    a[1, 0] = 3e4  # one large element beside small ones
    bits = grid_bits(k)
    ints_a, shift_a = fixed_point(a, bits)
    ints_b, shift_b = fixed_point(b, bits)
    assert np.abs(ints_a).max() <= 2 ** bits and k * 4 ** bits <= 2 ** 53
    exact = _exact_dot(ints_a, shift_a, ints_b, shift_b)
    got = dot_rows(a, b)
    assert [[Fraction(float(x)) for x in row] for row in got] == exact
    # The grid costs less than float32's own rounding of the row's largest elements.
    peak = np.abs(a).max(axis=1, keepdims=True)
    np.testing.assert_allclose(got, a.astype(np.float64) @ b.T.astype(np.float64),
                               rtol=0, atol=float(4 * k * peak.max() * 2.0 ** -bits * 4))


def test_a_row_is_the_same_bits_alone_in_a_batch_or_with_a_subset_of_columns():
    rng = np.random.default_rng(0)
    users = rng.standard_normal((1500, 8)).astype(np.float32)
    items = rng.standard_normal((25, 8)).astype(np.float32)
    grid = fixed_point(items, grid_bits(8))
    full = dot_rows(users, None, grid)
    rows = np.arange(3, 1500, 7)
    np.testing.assert_array_equal(dot_rows(users[rows], items), full[rows])
    for i in rows[:40]:
        np.testing.assert_array_equal(dot_rows(users[i:i + 1], items)[0], full[i])
    cols = np.array([12, 3, 9])
    np.testing.assert_array_equal(dot_rows(users, items[cols]), full[:, cols])


def _spd(rng, n: int, k: int) -> np.ndarray:
    factors = rng.standard_normal((n, k + 3, k))
    return np.einsum("nij,nik->njk", factors, factors) + 0.1 * np.eye(k)


def test_solve_spd_solves_and_gives_the_same_bits_alone_or_in_a_batch():
    rng = np.random.default_rng(1)
    systems, rhs = _spd(rng, 40, 8), rng.standard_normal((40, 8))
    x = solve_spd(systems, rhs)
    np.testing.assert_allclose(x, np.linalg.solve(systems, rhs[:, :, None])[:, :, 0],
                               rtol=1e-9, atol=1e-12)
    for i in range(0, 40, 7):
        np.testing.assert_array_equal(solve_spd(systems[i:i + 1], rhs[i:i + 1])[0], x[i])
    lower = cholesky(systems)
    np.testing.assert_allclose(lower @ lower.transpose(0, 2, 1), systems, rtol=1e-12)
    several = rng.standard_normal((40, 8, 3))  # several right-hand sides: column by column
    solved = cholesky_solve(lower, several)
    for m in range(3):
        np.testing.assert_array_equal(solved[:, :, m], cholesky_solve(lower, several[:, :, m]))


# ------------------------------------------------------------------ another process, kernel

_PROBE = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    import scipy.sparse as sp
    from recommender.ranking.cf import CFModel
    from recommender.ranking.config import CFConfig
    from recommender.data.ids import IdMap
    from recommender.ranking.reproducible import dot_rows, solve_spd

    state = dict(np.load(sys.argv[1]))
    n, p = state["user_factors"].shape[0], state["item_factors"].shape[0]
    held = sp.csr_matrix(state["held"])
    model = CFModel.from_state(
        {"config": CFConfig(factors=state["item_factors"].shape[1]).__dict__,
         "user_items": held, "user_factors": state["user_factors"],
         "item_factors": state["item_factors"]},
        IdMap(np.array([f"c{i}" for i in range(n)], dtype=object)),
        IdMap(np.array([f"p{i}" for i in range(p)], dtype=object)))
    digest = hashlib.sha256()
    digest.update(model.scores(np.arange(n)).tobytes())
    digest.update(model.scores(np.array([7])).tobytes())
    digest.update(model.fold_in_scores(held).tobytes())
    digest.update(model.fold_in_scores(held[[3]]).tobytes())
    digest.update(repr([model.explain(held[i], 2) for i in range(20)]).encode())
    digest.update(dot_rows(state["user_factors"][:9], state["item_factors"][:4]).tobytes())
    digest.update(solve_spd(state["systems"], state["rhs"]).tobytes())
    print(digest.hexdigest())
""")


def test_scores_fold_in_and_explanations_are_the_same_bits_under_every_kernel(tmp_path):
    rng = np.random.default_rng(2)
    n, p, k = 300, 25, 8
    held = (rng.random((n, p)) < 0.2).astype(np.float32)
    path = tmp_path / "state.npz"
    np.savez(path, user_factors=rng.standard_normal((n, k)).astype(np.float32),
             item_factors=rng.standard_normal((p, k)).astype(np.float32) / 3, held=held,
             systems=_spd(rng, 30, k), rhs=rng.standard_normal((30, k)))
    envs = [{}, *environments()]
    if len(envs) < 2:
        pytest.skip("no second OpenBLAS kernel or numpy SIMD level to compare on this CPU")
    digests = {}
    for env in envs:
        run = subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True,
                             text=True, env={**os.environ, **env}, timeout=120)
        assert run.returncode == 0, run.stderr
        digests[str(env or "default")] = run.stdout.strip()
    assert len(set(digests.values())) == 1, digests
