"""Shards built by dmstore are byte for byte the shards Zarr writes, for every layout."""

from __future__ import annotations

import numpy as np
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.codecs import Crc32cCodec

from dmstore.io.shard import blosc, encode_shard
from dmstore.io.store import codec


@given(
    dtype=st.sampled_from([np.dtype(bool), np.dtype(np.float16)]),
    rows=st.sampled_from([1, 8, 64]),
    width=st.sampled_from([4, 16]),
    examples=st.integers(1, 70),
    classes=st.sampled_from([(), (3,)]),
    short=st.booleans(),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=60, deadline=None)
def test_same_bytes_as_zarr(tmp_path_factory, dtype, rows, width, examples, classes, short, seed):
    width = min(width, examples)
    n_models = rows - 1 if short and rows > 1 else rows  # a short last band too
    rng = np.random.default_rng(seed)
    band = (rng.random((n_models, examples, *classes)) * 8 - 4).astype(dtype)
    path = tmp_path_factory.mktemp("zarr")
    shard_shape = (rows, -(-examples // width) * width, *classes)
    array = zarr.create_array(
        path,
        shape=band.shape,
        dtype=dtype,
        chunks=(rows, width, *classes),
        shards=shard_shape,
        compressors=[codec(dtype), Crc32cCodec()],
        fill_value=0,
        config={"write_empty_chunks": True},
    )
    array[:] = band
    key = "/".join(["c"] + ["0"] * band.ndim)
    ours = encode_shard(band, (rows, width, *classes), blosc(codec(dtype)))
    assert ours == (path / key).read_bytes()
