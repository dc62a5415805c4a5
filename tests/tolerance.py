"""How tests compare what two code paths compute: every decision (ids, products, ranks,
order, sources) exactly, numbers within the project's stated tolerance
(``recommender.ranking.reproducible.RTOL`` and ``ATOL``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recommender.ranking.reproducible import ATOL, RTOL


def assert_close(actual, desired, err_msg: str = "") -> None:
    np.testing.assert_allclose(actual, desired, rtol=RTOL, atol=ATOL, err_msg=err_msg)


def assert_same_frame(actual: pd.DataFrame, desired: pd.DataFrame) -> None:
    """The same columns, index, dtypes and non-float values; floats within the tolerance."""
    assert list(actual.columns) == list(desired.columns)
    pd.testing.assert_index_equal(actual.index, desired.index)
    for name in desired.columns:
        got, expected = actual[name], desired[name]
        assert got.dtype == expected.dtype, name
        if pd.api.types.is_float_dtype(expected):
            assert_close(got.to_numpy(), expected.to_numpy(), err_msg=name)
        else:
            pd.testing.assert_series_equal(got, expected)
