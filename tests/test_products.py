"""int8 products of 0/1 masks with float matrices: the digits hold ``z`` to 26 bits of each
column's largest value, and the products are within that rounding of float64's (better than a
float32 GEMM), for any shapes and scales."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmstore.fitting.device import CPU
from dmstore.fitting.products import DIGITS, FIXED_BITS, digits, masks_times

matmul = CPU.mask_matmul()
needs_int8 = pytest.mark.skipif(matmul is None, reason="torch's int8 GEMM is not available")


def columns(seed: int, k: int, b: int) -> np.ndarray:
    """Columns of very different scales, signs and zeros (a column of zeros among them)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((k, b)) * np.exp2(rng.integers(-30, 30, b))
    z[rng.random((k, b)) < 0.2] = 0
    z[:, 0] = 0
    return z.astype(np.float32)


@settings(max_examples=50, deadline=None)
@given(k=st.integers(1, 300), b=st.integers(1, 9), seed=st.integers(0, 2**31))
def test_digits_hold_each_column_to_its_fixed_bits(k, b, seed):
    z = columns(seed, k, b)
    packed, scale = digits(z)
    assert packed.dtype == np.int8 and packed.shape == (k, DIGITS * b)
    assert packed.min(initial=0) >= -64 and packed.max(initial=0) <= 63
    whole = sum(packed[:, d * b : (d + 1) * b].astype(np.int64) * 128**d for d in range(DIGITS))
    np.testing.assert_array_equal(whole, np.rint(z.astype(np.float64) * scale))  # exact digits
    top = np.abs(z).max(axis=0)
    assert (np.abs(whole / scale - z) <= top * 2.0 ** -FIXED_BITS).all()


@needs_int8
@settings(max_examples=50, deadline=None)
@given(rows=st.integers(1, 200), k=st.integers(1, 300), b=st.integers(1, 9), seed=st.integers(0, 2**31))
def test_masks_times_is_within_the_rounding_of_z(rows, k, b, seed):
    masks = np.random.default_rng(seed + 1).random((rows, k)) < 0.5
    z = columns(seed, k, b)
    got = masks_times(masks, z, matmul)
    exact = masks.astype(np.float64) @ z.astype(np.float64)
    top = np.abs(z).max(axis=0).astype(np.float64)
    bound = k * top * 2.0 ** -FIXED_BITS + np.abs(exact) * 2.0**-23  # z's rounding, then float32's
    assert got.dtype == np.float32 and (np.abs(got - exact) <= bound).all()


@needs_int8
def test_masks_times_reads_strided_masks_and_beats_float32_at_validation_shapes():
    """A view of the masks (no copy), and the accuracy measured at a CIFAR-10-like shape."""
    rng = np.random.default_rng(3)
    masks = (rng.random((3000, 2500)) < 0.5)[::2, 100:2100]
    z = rng.standard_normal((2000, 4)).astype(np.float32)
    exact = masks.astype(np.float64) @ z.astype(np.float64)
    ours = np.abs(masks_times(masks, z, matmul) - exact).max()
    float32 = np.abs(masks.astype(np.float32) @ z - exact).max()
    assert ours <= float32


@needs_int8
def test_a_column_with_a_nan_or_an_infinity_gives_nan_not_a_silent_zero():
    masks = np.random.default_rng(4).random((30, 50)) < 0.5
    z = np.random.default_rng(5).standard_normal((50, 3)).astype(np.float32)
    z[7, 0], z[9, 2] = np.nan, np.inf
    got = masks_times(masks, z, matmul)
    assert np.isnan(got[:, [0, 2]]).all()
    np.testing.assert_allclose(got[:, 1], masks.astype(np.float64) @ z[:, 1].astype(np.float64), rtol=1e-5, atol=1e-6)
