"""The regression's sufficient statistics: values on small cases, additivity over row bands."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmstore.moments import EXACT_ROWS_FLOAT32, band_moments

FIELDS = ("xtx", "xty", "xsum", "ysum", "yy")


@pytest.mark.parametrize(
    ("masks", "margins", "expected"),
    [
        (
            [[1, 0], [1, 1]],
            [[1.0], [2.0]],
            dict(n=2, xtx=[[2, 1], [1, 1]], xty=[[3.0], [2.0]], xsum=[2, 1], ysum=[3.0], yy=[5.0]),
        ),
        (
            [[0, 0, 1]],
            [[-0.5, 4.0]],
            dict(n=1, xtx=[[0, 0, 0], [0, 0, 0], [0, 0, 1]], xty=[[0, 0], [0, 0], [-0.5, 4.0]], xsum=[0, 0, 1],
                 ysum=[-0.5, 4.0], yy=[0.25, 16.0]),
        ),
        (
            np.zeros((0, 2), dtype=bool),
            np.zeros((0, 1), dtype=np.float16),
            dict(n=0, xtx=[[0, 0], [0, 0]], xty=[[0], [0]], xsum=[0, 0], ysum=[0], yy=[0]),
        ),
    ],
)
def test_band_moments_values(masks, margins, expected):
    m = band_moments(np.asarray(masks, dtype=bool), np.asarray(margins, dtype=np.float16))
    assert m.n == expected["n"]
    for name in FIELDS:
        value = getattr(m, name)
        assert value.dtype == np.float64
        np.testing.assert_array_equal(value, np.asarray(expected[name], dtype=np.float64))


def test_band_too_tall_for_exact_counts_is_refused():
    with pytest.raises(ValueError, match="exact"):
        band_moments(np.zeros((EXACT_ROWS_FLOAT32 + 1, 0), dtype=bool), np.zeros((EXACT_ROWS_FLOAT32 + 1, 0)))


@st.composite
def banded_problem(draw):
    rows = draw(st.integers(1, 60))
    n_train = draw(st.integers(1, 12))
    n_targets = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    cuts = sorted(draw(st.lists(st.integers(0, rows), max_size=5)))
    rng = np.random.default_rng(seed)
    masks = rng.random((rows, n_train)) < draw(st.floats(0.05, 0.95))
    margins = (rng.standard_normal((rows, n_targets)) * 3).astype(np.float16)
    return masks, margins, [0, *cuts, rows]


@settings(max_examples=60, deadline=None)
@given(banded_problem())
def test_sum_of_band_moments_is_the_moments_of_all_rows(problem):
    masks, margins, edges = problem
    whole = band_moments(masks, margins)
    bands = [band_moments(masks[a:b], margins[a:b]) for a, b in zip(edges[:-1], edges[1:])]
    total = sum(bands[1:], bands[0])
    in_place = band_moments(masks[:0], margins[:0])
    for band in bands:
        in_place += band
    x, y = masks.astype(np.float64), margins.astype(np.float64)
    for m in (total, in_place):
        assert m.n == whole.n == masks.shape[0]
        np.testing.assert_array_equal(m.xtx, x.T @ x)  # counts are exact integers
        np.testing.assert_array_equal(m.xsum, x.sum(axis=0))
        for name in ("xty", "ysum", "yy"):
            np.testing.assert_allclose(getattr(m, name), getattr(whole, name), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(m.xty, x.T @ y, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(m.yy, (y * y).sum(axis=0), rtol=1e-12, atol=1e-12)
