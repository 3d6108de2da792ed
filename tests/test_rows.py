"""Shard-aligned bands of model rows chosen by split."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st

from dmstore.errors import DmstoreError
from dmstore.io.rows import band_size, model_positions, shard_bands


@pytest.mark.parametrize(
    ("positions", "shard_rows", "expected"),
    [
        ([0, 1, 2, 3], (4,), [slice(0, 4)]),
        ([2, 3, 4, 5], (4, 4), [slice(2, 4), slice(4, 6)]),  # split at the shard edge
        ([1, 3, 9], (4, 4, 4), [[1, 3], slice(9, 10)]),  # gaps: the positions themselves
        ([8, 9, 10, 11], (4, 4, 4), [slice(8, 12)]),  # shards without rows give no band
        ([], (4, 4), []),
    ],
)
def test_shard_bands(positions, shard_rows, expected):
    bands = shard_bands(np.array(positions, dtype=np.int64), shard_rows)
    assert len(bands) == len(expected)
    for band, want in zip(bands, expected):
        if isinstance(want, slice):
            assert band == want
        else:
            np.testing.assert_array_equal(band, want)


@given(
    shard_rows=st.lists(st.integers(1, 9), min_size=1, max_size=8),
    data=st.data(),
)
def test_bands_give_back_the_rows_and_never_cross_a_shard(shard_rows, data):
    n_rows = sum(shard_rows)
    positions = np.array(sorted(data.draw(st.sets(st.integers(0, n_rows - 1)))), dtype=np.int64)
    bands = shard_bands(positions, tuple(shard_rows))
    rows = [np.arange(n_rows)[band] for band in bands]
    np.testing.assert_array_equal(np.concatenate([np.zeros(0, np.int64), *rows]), positions)
    assert [band_size(band) for band in bands] == [len(r) for r in rows]
    shard_of = np.repeat(np.arange(len(shard_rows)), shard_rows)
    assert all(len(set(shard_of[r])) == 1 for r in rows)


def test_model_positions():
    split = np.array(["fit", "eval", "fit", "fit", "eval"], dtype=object)
    ds = xr.Dataset(coords={"model": np.arange(5), "split": ("model", split)})
    np.testing.assert_array_equal(model_positions(ds, "eval"), [1, 4])
    np.testing.assert_array_equal(model_positions(ds, "fit"), [0, 2, 3])
    np.testing.assert_array_equal(model_positions(ds, "all"), np.arange(5))
    with pytest.raises(DmstoreError, match="unknown model set"):
        model_positions(ds, "test")
    with pytest.raises(DmstoreError, match="no `split` coordinate"):
        model_positions(ds.drop_vars("split"), "eval")
