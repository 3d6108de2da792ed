"""Band planning and .npy header parsing: table-driven cases and Hypothesis."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from dmstore.conversion.plan import MAX_BAND_BYTES, parse_rows, plan_array, threads_for
from hypothesis import given, settings
from hypothesis import strategies as st

from dmstore.errors import DmstoreError
from dmstore.io.budget import parse_budget
from dmstore.io.npy import check_layout, parse_header


@pytest.mark.parametrize(
    ("shape", "dtype", "chunks", "shards", "n_bands"),
    [
        ((310_000, 50_000), bool, (2048, 256), (2048, 50_176), 152),  # CIFAR-10 50% masks
        ((310_000, 50_000), np.float16, (1024, 256), (1024, 50_176), 303),  # train margins
        ((310_000, 10_000), np.float16, (2048, 256), (2048, 10_240), 152),  # test margins
        ((310_000, 50_000, 10), np.float16, (128, 256, 10), (128, 50_176, 10), 2422),  # train logits
        ((22_000, 1_000), bool, (2048, 256), (2048, 1024), 11),  # the digits example
        ((5, 3), np.float16, (8, 3), (8, 3), 1),  # tiny
    ],
)
def test_plan_table(shape, dtype, chunks, shards, n_bands):
    plan = plan_array("a", shape, np.dtype(dtype))
    assert plan.chunks == chunks and plan.shards == shards and len(plan.bands) == n_bands


@given(
    models=st.integers(1, 3_000_000),
    examples=st.integers(1, 200_000),
    classes=st.sampled_from([(), (10,), (3,)]),
    itemsize=st.sampled_from([1, 2, 4]),
    data=st.data(),
)
@settings(max_examples=300, deadline=None)
def test_plan_properties(models, examples, classes, itemsize, data):
    dtype = {1: np.dtype(bool), 2: np.dtype(np.float16), 4: np.dtype(np.float32)}[itemsize]
    start = data.draw(st.integers(0, models - 1))
    stop = data.draw(st.integers(start + 1, models))
    plan = plan_array("a", (models, examples, *classes), dtype, (start, stop))
    # shards are whole multiples of inner chunks, and cover every example
    assert all(s % c == 0 for s, c in zip(plan.shards, plan.chunks))
    assert plan.shards[1] >= examples
    # bands tile the rows exactly, each inside one shard row-block of the store
    bands = plan.bands
    assert bands[0][0] == start and bands[-1][1] == stop
    assert all(a < b for a, b in bands) and all(b == c for (_, b), (c, _) in zip(bands, bands[1:]))
    assert all((a - start) // plan.shards[0] == (b - 1 - start) // plan.shards[0] for a, b in bands)
    # a band stays within the bound whenever one row does
    if plan.row_bytes <= MAX_BAND_BYTES:
        assert plan.band_bytes <= MAX_BAND_BYTES


@given(band=st.integers(1, 2**28), cores=st.integers(1, 64), memory=st.integers(2**28, 2**36))
def test_threads_fit_budget(band, cores, memory):
    from dmstore.conversion.plan import BAND_MEMORY_FACTOR

    from dmstore.io.budget import DRIVER_BYTES

    try:
        n = threads_for(memory, band, cores)
    except DmstoreError:
        assert DRIVER_BYTES + BAND_MEMORY_FACTOR * band > memory
        return
    assert 1 <= n <= cores
    assert DRIVER_BYTES + n * BAND_MEMORY_FACTOR * band <= memory
    assert n == cores or DRIVER_BYTES + (n + 1) * BAND_MEMORY_FACTOR * band > memory  # no thread left out


@pytest.mark.parametrize(
    ("text", "rows"), [(None, (0, 100)), ("10:20", (10, 20)), (":5", (0, 5)), ("90:", (90, 100)), ("-10:", (90, 100))]
)
def test_parse_rows(text, rows):
    assert parse_rows(text, 100) == rows


@pytest.mark.parametrize("text", ["a:b", "5", "20:10", "200:300"])
def test_parse_rows_rejects(text):
    with pytest.raises(DmstoreError, match="--models"):
        parse_rows(text, 100)


@pytest.mark.parametrize(
    ("text", "size"), [("2GB", 2 * 10**9), ("512MiB", 2**29), ("1e9", 10**9), ("1.5gib", 3 * 2**29), (4096, 4096)]
)
def test_parse_budget(text, size):
    assert parse_budget(text) == size


@pytest.mark.parametrize("text", ["foo", "-1GB", "0", "2 parsecs"])
def test_parse_budget_rejects(text):
    with pytest.raises(DmstoreError, match=r"^--max-memory '.*' (is not a size|must be positive)"):
        parse_budget(text)


def npy_bytes(array: np.ndarray, version: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, version=version, allow_pickle=False)
    return buffer.getvalue()


@given(
    shape=st.lists(st.integers(0, 40), min_size=1, max_size=3).map(tuple),
    dtype=st.sampled_from(["?", "<f2", "<f4", "<i8", ">f2"]),
    version=st.sampled_from([(1, 0), (2, 0), (3, 0)]),
    fortran=st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_header_round_trip(shape, dtype, version, fortran):
    array = np.zeros(shape, dtype=dtype, order="F" if fortran else "C")
    raw = npy_bytes(array, version)
    header = parse_header(raw)
    assert header.shape == shape and header.dtype == np.dtype(dtype)
    assert header.fortran_order == (fortran and array.ndim > 1 and not array.flags.c_contiguous)
    assert header.offset + header.nbytes == len(raw)
    # every band is one contiguous range holding exactly those rows
    if shape[0] >= 2 and not header.fortran_order:
        begin, end = header.band_range(1, 2)
        assert raw[begin:end] == array[1:2].tobytes()


@given(cut=st.integers(0, 200), version=st.sampled_from([(1, 0), (2, 0), (3, 0)]))
def test_truncated_header_is_a_clear_error(cut, version):
    raw = npy_bytes(np.zeros((3, 4), dtype="<f2"), version)
    header_end = parse_header(raw).offset
    prefix = raw[: min(cut, header_end - 1)]
    with pytest.raises(DmstoreError, match="not a .npy file|truncated|malformed"):
        parse_header(prefix)


@pytest.mark.parametrize(
    ("array", "size_delta", "message"),
    [
        (np.zeros((4, 5), dtype=bool, order="F"), 0, "Fortran-ordered"),
        (np.zeros((4, 5), dtype=np.float32), 0, "dtype float32"),
        (np.zeros(20, dtype=bool), 0, "expected 2 dimensions"),
        (np.zeros((4, 5), dtype=bool), -1, "truncated"),
    ],
)
def test_layout_errors(array, size_delta, message):
    raw = npy_bytes(array, (1, 0))
    with pytest.raises(DmstoreError, match=message):
        check_layout(parse_header(raw, "f.npy"), "f.npy", dtype=np.dtype(bool), ndim=2, size=len(raw) + size_delta)


def test_not_npy():
    with pytest.raises(DmstoreError, match="not a .npy file"):
        parse_header(b"PK\x03\x04 a zip file, not npy")


def test_a_header_that_claims_4_gib_is_refused_after_one_small_read(tmp_path, monkeypatch):
    from dmstore.io.source import Source

    folder = tmp_path / "toy" / "data"
    folder.mkdir(parents=True)
    hostile = b"\x93NUMPY\x02\x00" + struct.pack("<I", 4 * 2**30 - 12) + b"{'descr': '|b1'" + b" " * 5000
    (folder / "train_masks_50pct.npy").write_bytes(hostile + b"\x00" * 20_000)
    source = Source(str(tmp_path))
    reads = []
    original = Source.read
    monkeypatch.setattr(Source, "read", lambda self, key, start, stop: (reads.append(stop - start),
                                                                        original(self, key, start, stop))[1])
    with pytest.raises(DmstoreError, match=r"claims a \.npy header of 4,294,967,296 bytes"):
        source.header("toy/data/train_masks_50pct.npy")
    assert reads == [4096]  # one small read, nothing more
