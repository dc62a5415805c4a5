"""Arithmetic whose result is the same bits on every CPU, BLAS kernel and batch.

numpy hands matrix products to OpenBLAS, which picks its kernels by CPU (and by
``OPENBLAS_CORETYPE``). A kernel sums a dot product in an order of its own, and the order
can change with the shape of the product: on Haswell and Zen kernels one customer's row of
``U @ V.T`` differs in the last bits of float32 depending on which other customers are in
the batch, and a single row (a matrix-vector product) differs on every kernel. A decision
taken on those bits could then differ between the counter (one customer), a campaign (a
chunk) and another server.

Two tools remove the dependence:

- ``dot_rows`` rounds each row of both operands to a fixed-point grid (integers times a
  power of two per row, ``bits`` significant bits), so every product and every partial sum
  of the dot products is an integer below 2**53: float64 holds each one exactly, in any
  order, with or without fused multiply-add. BLAS still does the work, and whatever it does,
  the result is exact. The grid keeps 22 to 26 bits of the row's largest element, more than
  float32's 24 bits for the elements near it, so nothing a ranking can see is lost.
- ``solve_spd`` solves symmetric positive definite systems by Cholesky written as numpy
  element-wise operations (each correctly rounded in IEEE arithmetic, whatever the SIMD
  width), in one fixed order, so a system gives the same solution alone or in a batch.
"""

from __future__ import annotations

import math

import numpy as np

_MANTISSA = 53  # bits of a float64 significand: integers up to 2**53 are exact

# Scores are the same bits on every path of one machine. Between machines whose CPUs have
# other SIMD units, numpy's (and libm's) exp and log may round the last bit otherwise, so
# numbers that cross machines, or that tests compare across two code paths, are equal within:
RTOL, ATOL = 1e-5, 1e-9


def grid_bits(length: int) -> int:
    """Bits per element such that a dot product of ``length`` fixed-point elements, and each
    of its partial sums, stays an exact float64 integer."""
    return (_MANTISSA - math.ceil(math.log2(max(length, 1)))) // 2


def fixed_point(rows: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` as integers (in float64) and a power-of-two shift per row:
    ``rows ~= ldexp(integers, -shift)``, every |integer| <= 2**bits.

    Each row's grid depends on that row alone, so a row rounds the same in any batch.
    """
    values = np.asarray(rows, dtype=np.float64)
    peak = np.max(np.abs(values), axis=1) if values.shape[1] else np.zeros(len(values))
    _, exponent = np.frexp(peak)  # peak < 2**exponent (0 for a row of zeros)
    shift = bits - exponent.astype(np.int64)
    return np.rint(np.ldexp(values, shift[:, None])), shift


def dot_rows(a: np.ndarray, b: np.ndarray | None,
             b_fixed: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """``a @ b.T`` in float64, with each operand rounded to its fixed-point grid first: the
    same bits for a row of ``a`` whatever the other rows, the kernel or the machine.

    ``b_fixed`` is ``fixed_point(b, grid_bits(k))``, for a caller that multiplies by the same
    ``b`` often (a model's item factors).
    """
    a = np.asarray(a)
    k = a.shape[1]
    bits = grid_bits(k)
    ints_a, shift_a = fixed_point(a, bits)
    ints_b, shift_b = b_fixed if b_fixed is not None else fixed_point(b, bits)
    if ints_b.shape[1] != k:
        raise ValueError(f"dot_rows: operands have {k} and {ints_b.shape[1]} columns")
    exact = ints_a @ ints_b.T  # integers below 2**53: exact whatever the summation order
    return np.ldexp(exact, -(shift_a[:, None] + shift_b[None, :]))


def cholesky(a: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of a stack of symmetric positive definite matrices (n, k, k),
    in float64, by element-wise operations only (no BLAS or LAPACK)."""
    work = np.array(a, dtype=np.float64)  # a copy: the trailing block is updated in place
    n, k, _ = work.shape
    lower = np.zeros_like(work)
    for j in range(k):
        pivot = np.sqrt(work[:, j, j])
        lower[:, j, j] = pivot
        column = work[:, j + 1:, j] / pivot[:, None]
        lower[:, j + 1:, j] = column
        work[:, j + 1:, j + 1:] -= column[:, :, None] * column[:, None, :]
    return lower


def cholesky_solve(lower: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve ``L L^T x = rhs`` for each system: ``lower`` (n, k, k) from ``cholesky``,
    ``rhs`` (n, k) or (n, k, m) for m right-hand sides. Element-wise, in a fixed order."""
    single = rhs.ndim == 2
    x = np.array(rhs[:, :, None] if single else rhs, dtype=np.float64)
    k = lower.shape[1]
    for j in range(k):  # forward: L z = rhs
        x[:, j] /= lower[:, j, j, None]
        x[:, j + 1:] -= lower[:, j + 1:, j, None] * x[:, j, None, :]
    for j in range(k - 1, -1, -1):  # backward: L^T x = z
        x[:, j] /= lower[:, j, j, None]
        x[:, :j] -= lower[:, j, :j, None] * x[:, j, None, :]
    return x[:, :, 0] if single else x


def solve_spd(a: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solutions of symmetric positive definite systems ``a[i] x = rhs[i]``: the same bits
    for a system alone or in any batch, on any machine."""
    return cholesky_solve(cholesky(a), rhs)
