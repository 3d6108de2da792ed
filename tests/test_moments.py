"""The persisted statistics: tiles Zarr reads as its own, exact counts from the panel pass, resume,
row gathers against numpy, damage detected."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from dmstore.errors import DmstoreError
from dmstore.fitting import moments as moments_module
from dmstore.fitting import tiles
from dmstore.fitting.device import CPU, Device
from dmstore.fitting.moments import (
    DeltaGram,
    Moments,
    Statistics,
    gather_threads,
    in_memory,
    release_counts,
    rows_digest,
)
from dmstore.fitting.passes import (
    CHUNK,
    PassPlan,
    Scratch,
    block_runs,
    gram_pass,
    new_panel,
    panel_product,
    target_pass,
)
from dmstore.fitting.reads import BandReader


def small_store(path, models=300, n_train=50, n_test=7, shard=32, seed=0):
    rng = np.random.default_rng(seed)
    masks = rng.random((models, n_train)) < 0.4
    margins = rng.standard_normal((models, n_test)).astype(np.float16)
    ds = xr.Dataset({"train_masks": (("model", "train"), masks), "test_margins": (("model", "test"), margins)})
    encoding = {k: {"chunks": (shard, ds[k].shape[1])} for k in ds.data_vars}
    ds.to_zarr(path, mode="w", zarr_format=3, encoding=encoding, consolidated=False)
    return masks, margins


@pytest.mark.parametrize(("size", "tile"), [(10, 4), (9, 9), (33, 16), (700, 600)])  # 600: transposed in squares
def test_tiles_are_the_bytes_zarr_writes_and_zarr_reads_them(tmp_path, size, tile):
    rng = np.random.default_rng(size)
    matrix = rng.integers(0, 1000, (size, size)).astype(np.float32)
    matrix = matrix + matrix.T
    ours = tiles.create(zarr.open_group(tmp_path / "a.zarr", mode="w"), "xtx", size, tile, ("a", "b"))
    theirs = tiles.create(zarr.open_group(tmp_path / "b.zarr", mode="w"), "xtx", size, tile, ("a", "b"))
    tile_file = tiles.TileFile.of(ours, str(tmp_path / "a.zarr"), None)
    for i in range(tile_file.n_tiles):
        for j in range(i, tile_file.n_tiles):
            tile_file.write(i, j, matrix[i * tile : (i + 1) * tile, j * tile : (j + 1) * tile])
    theirs[:] = matrix
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "a.zarr" / "xtx")[:], matrix)
    for i in range(tile_file.n_tiles):
        for j in range(tile_file.n_tiles):
            key = f"xtx/c/{i}/{j}"
            assert (tmp_path / "a.zarr" / key).read_bytes() == (tmp_path / "b.zarr" / key).read_bytes()
    rows = rng.permutation(size)[: max(1, size // 2)]
    np.testing.assert_array_equal(tile_file.rows(rows), matrix[rows])


FLOAT32 = Device(np, int8=False)  # numpy's sgemm: where torch's int8 GEMM is not available


def test_int8_products_are_used_where_torch_is_installed():
    """This suite's environment has torch: its pass takes the int8 products (measured 5-8x
    float32 sgemm at CIFAR-10 width), and numpy's float32 stays for devices that ask for it."""
    pytest.importorskip("torch")
    assert CPU.mask_matmul() is not None and FLOAT32.mask_matmul() is None
    assert new_panel(0, 3, 5, CPU).dtype == np.int32 and new_panel(0, 3, 5, FLOAT32).dtype == np.float32


@pytest.mark.parametrize("device", [CPU, FLOAT32], ids=["int8", "float32"])
@settings(max_examples=20, deadline=None)
@given(
    rows=st.integers(1, 40),
    n_train=st.integers(1, 30),
    start=st.integers(0, 29),
    width=st.integers(1, 30),
    seed=st.integers(0, 2**31),
)
def test_panel_product_adds_the_upper_panel_in_place(device, rows, n_train, start, width, seed):
    """Into a fresh panel, and into panels and bands that reuse scratch memory holding garbage."""
    start = min(start, n_train - 1)
    stop = min(start + width, n_train)
    masks = np.random.default_rng(seed).random((rows, n_train)) < 0.5
    x = masks.astype(np.int64)
    panel = new_panel(start, stop, n_train, device)
    panel += 1
    panel_product(panel, masks, start, stop, device)
    np.testing.assert_array_equal(panel, 1 + x[:, start:stop].T @ x[:, start:])
    scratch = Scratch.of(stop - start, n_train, rows)
    scratch.panel.fill(np.nan), scratch.band.fill(np.nan), scratch.product.fill(-7)
    reused = new_panel(start, stop, n_train, device, scratch)
    panel_product(reused, masks, start, stop, device, scratch)
    panel_product(reused, masks, start, stop, device, scratch)
    assert np.shares_memory(reused, scratch.panel)
    np.testing.assert_array_equal(reused, 2 * (x[:, start:stop].T @ x[:, start:]))


def test_int8_products_of_a_panel_wider_than_a_chunk():
    masks = np.random.default_rng(1).random((33, CHUNK + 70)) < 0.5
    x = masks.astype(np.int64)
    for start, stop in ((0, 40), (60, 100)):
        panel = new_panel(start, stop, masks.shape[1], CPU, Scratch.of(40, masks.shape[1], 33))
        panel_product(panel, masks, start, stop)
        np.testing.assert_array_equal(panel, x[:, start:stop].T @ x[:, start:])


@pytest.mark.parametrize("device", [CPU, FLOAT32], ids=["int8", "float32"])
@pytest.mark.parametrize("cache", [True, False])
def test_the_pass_gives_the_exact_statistics_and_resumes_after_its_last_panel(tmp_path, cache, device):
    path = str(tmp_path / "s.zarr")
    masks, margins = small_store(path)
    reader = BandReader(path, "test")
    positions = np.concatenate([np.arange(5, 150), np.arange(160, 290, 2)])  # bands inside shards
    moments, plan = Moments(path, "fit"), PassPlan(16, cache, 1)
    panels_seen = []

    class Interrupt(Exception):
        pass

    def stop_after_two_panels(rows):
        panels_seen.append(rows)
        if sum(panels_seen) >= 2 * positions.size:
            raise Interrupt

    with pytest.raises(Interrupt):
        gram_pass(moments, reader, positions, plan, stop_after_two_panels, device)
    assert moments.group().attrs["panels"] == 1 and not moments.is_complete(rows_digest(positions))
    done = []
    gram_pass(moments, reader, positions, plan, done.append, device)
    assert sum(done) == 3 * positions.size  # panels 1, 2 and 3 of 4: the recorded one is not redone
    target_pass(moments, reader, positions, "test", 7, [0], plan, done.append)
    got, expected = moments.statistics("test", slice(0, 7)), in_memory(masks[positions], margins[positions])
    every = np.arange(50)
    np.testing.assert_array_equal(got.counts(every), expected.counts(every))
    np.testing.assert_allclose(got.xty, expected.xty, rtol=1e-13)
    assert got.n == positions.size


@pytest.mark.parametrize(
    ("blocks", "most", "runs"),
    [([0, 1, 2, 5, 6, 9], 2, [[0, 1], [2], [5, 6], [9]]), ([3, 0, 1], 64, [[0, 1], [3]]), ([], 4, [])],
)
def test_target_blocks_are_summed_in_runs_of_contiguous_blocks(blocks, most, runs):
    assert block_runs(blocks, most) == runs


def test_target_blocks_apart_are_written_and_recorded_without_the_ones_between(tmp_path):
    """Blocks 0 and 2 of 600 targets (256 each): block 1 is neither summed nor recorded, and a
    NaN in it does not stop the pass."""
    path = str(tmp_path / "s.zarr")
    masks, margins = small_store(path, n_test=600)
    reader, positions = BandReader(path, "test"), np.arange(300)
    moments = Moments(path, "fit")
    gram_pass(moments, reader, positions, PassPlan(16, True, 4), lambda n: None)
    zarr.open_array(path + "/test_margins", mode="r+")[5, 300] = np.nan
    target_pass(moments, reader, positions, "test", 600, [0, 2], PassPlan(16, True, 4), lambda n: None)
    assert moments.target_blocks("test") == {0, 2}
    xty = zarr.open_group(path, mode="r")["moments/fit/xty_test"][:]
    expected = masks.astype(np.float64).T @ margins.astype(np.float64)
    for cols in (slice(0, 256), slice(512, 600)):
        np.testing.assert_allclose(xty[:, cols], expected[:, cols], rtol=1e-13)
    assert np.isnan(xty[:, 256:512]).all()


def test_a_damaged_or_missing_tile_is_one_clear_error(tmp_path):
    path = str(tmp_path / "s.zarr")
    small_store(path)
    moments = Moments(path, "fit")
    gram_pass(moments, BandReader(path, "test"), np.arange(300), PassPlan(16, True, 1), lambda n: None)
    key = tmp_path / "s.zarr" / "moments" / "fit" / "xtx" / "c" / "1" / "2"
    data = bytearray(key.read_bytes())
    data[10] ^= 0xFF
    key.write_bytes(bytes(data))
    with pytest.raises(DmstoreError, match=r"tile \(1, 2\) row 0 fails its checksum.*--recompute"):
        moments.tile_file().rows(np.array([16]))
    key.unlink()
    with pytest.raises(DmstoreError, match=r"tile \(1, 2\) is missing"):
        Moments(path, "fit").tile_file().rows(np.array([16]))


def test_statistics_of_other_rows_are_recomputed_not_reused(tmp_path):
    path = str(tmp_path / "s.zarr")
    masks, margins = small_store(path)
    reader, moments, plan = BandReader(path, "test"), Moments(path, "fit"), PassPlan(16, True, 1)
    gram_pass(moments, reader, np.arange(100), plan, lambda n: None)
    gram_pass(moments, reader, np.arange(120), plan, lambda n: None)
    target_pass(moments, reader, np.arange(120), "test", 7, [0], plan, lambda n: None)
    got = moments.statistics("test", slice(0, 7))
    assert got.n == 120
    np.testing.assert_array_equal(
        got.counts(np.arange(50)), in_memory(masks[:120], margins[:120]).counts(np.arange(50))
    )


@pytest.mark.parametrize("square", [DeltaGram.SQUARE, 5])  # 5: tiles of 16 placed in squares, edges partial
def test_counts_held_in_memory_are_exact_and_refused_where_int16_cannot_hold_them(tmp_path, monkeypatch, square):
    monkeypatch.setattr(DeltaGram, "SQUARE", square)
    path = str(tmp_path / "s.zarr")
    masks, _ = small_store(path, models=300, n_train=50)
    moments = Moments(path, "fit")
    gram_pass(moments, BandReader(path, "test"), np.arange(300), PassPlan(16, True, 1), lambda n: None)
    xsum = masks.sum(axis=0).astype(np.float64)
    gram = DeltaGram.load(moments.tile_file(), xsum, 300)
    rows = np.array([49, 0, 17, 17])
    np.testing.assert_array_equal(gram.rows(rows), (masks.T.astype(np.int64) @ masks)[rows])
    assert gram.delta.dtype == np.int16
    # the centred counts, fused in float32, against float64 from the masks: to float32 rounding
    x = masks.astype(np.float64)
    truth = (x.T @ x - np.multiply.outer(xsum, xsum) / 300)[rows]
    fused, plain = np.empty((4, 50), np.float32), np.empty((4, 50), np.float32)
    gram.centred(rows, fused)
    Statistics(300, xsum, None, None, None, gram.rows).centred_counts(rows, plain)
    assert np.abs(fused - truth).max() < 1e-5 * np.abs(truth).max()
    np.testing.assert_allclose(plain, fused, atol=1e-5 * np.abs(truth).max())
    # scaled as they are centred: rows and columns by their factors, in steps on threads
    many = np.random.default_rng(1).integers(0, 50, 40)
    factors = np.random.default_rng(2).uniform(0.5, 2.0, 40).astype(np.float32), np.linspace(0, 3, 50, dtype=np.float32)
    scaled = (x.T @ x - np.multiply.outer(xsum, xsum) / 300)[many] * np.multiply.outer(*factors)
    for centred in (gram.centred, Statistics(300, xsum, None, None, None, gram.rows).centred_counts):
        out = np.empty((40, 50), np.float32)
        centred(many, out, factors)
        assert np.abs(out - scaled).max() < 1e-5 * np.abs(scaled).max()
    assert DeltaGram.load(moments.tile_file(), xsum * 1000, 300) is None  # differences beyond int16
    # a solver thread that asks for one gathering thread gets the same bytes, on its own thread
    pooled = np.empty((40, 50), np.float32)
    gram.centred(many, pooled, factors)
    started = []
    monkeypatch.setattr(moments_module, "ThreadPoolExecutor", lambda *a: started.append(a))
    alone = np.empty((40, 50), np.float32)
    with gather_threads(1):
        gram.centred(many, alone, factors)
    assert started == [] and alone.tobytes() == pooled.tobytes()
    with pytest.raises(TypeError), gather_threads(2):  # two: the pool again (the stub is no pool)
        gram.centred(many, alone, factors)
    assert started == [(2,)]  # a pool of the two threads asked for


def test_the_gathering_limit_is_the_calling_threads_own_and_restored():
    seen = []
    with gather_threads(1):
        seen.append(moments_module._GATHER.threads)
        other = threading.Thread(target=lambda: seen.append(getattr(moments_module._GATHER, "threads", None)))
        other.start(), other.join()
        with gather_threads(3):
            seen.append(moments_module._GATHER.threads)
        seen.append(moments_module._GATHER.threads)
    seen.append(moments_module._GATHER.threads)
    assert seen == [1, None, 3, 1, None]


def test_a_pass_that_holds_its_counts_leaves_the_solver_nothing_to_read_back(tmp_path):
    """The counts a pass holds are those of its tiles, byte for byte, and the solver's statistics
    use them: with every tile deleted they still give the exact counts; once released, the tiles
    are read (and found missing). A resumed pass holds nothing (the tiles it did not compute)."""
    path = str(tmp_path / "s.zarr")
    masks, margins = small_store(path, models=300, n_train=50)
    reader, moments, plan = BandReader(path, "test"), Moments(path, "fit"), PassPlan(16, True, 1, hold_counts=True)
    try:
        gram_pass(moments, reader, np.arange(300), plan, lambda n: None)
        target_pass(moments, reader, np.arange(300), "test", 7, [0], plan, lambda n: None)
        loaded = DeltaGram.load(moments.tile_file(), masks.sum(axis=0).astype(np.float64), 300)
        for chunk in (tmp_path / "s.zarr" / "moments" / "fit" / "xtx" / "c").rglob("*"):
            if chunk.is_file():
                chunk.unlink()
        held = moments.statistics("test", slice(0, 7), in_memory=True)
        np.testing.assert_array_equal(held.counts.__self__.delta, loaded.delta)
        rows = np.array([3, 49, 16])
        np.testing.assert_array_equal(held.counts(rows), (masks.T.astype(np.int64) @ masks)[rows])
        release_counts()
        with pytest.raises(DmstoreError, match="is missing"):
            moments.statistics("test", slice(0, 7), in_memory=True)

        class Interrupt(Exception):
            pass

        seen = []

        def interrupt_in_the_second_panel(rows):
            seen.append(rows)
            if sum(seen) > 300:
                raise Interrupt

        moments.delete()
        with pytest.raises(Interrupt):
            gram_pass(moments, reader, np.arange(300), plan, interrupt_in_the_second_panel)
        gram_pass(moments, reader, np.arange(300), plan, lambda n: None)
        assert moments.is_complete(rows_digest(np.arange(300))) and not moments_module._HELD
    finally:
        release_counts()


def test_lost_validation_masks_are_an_error_not_false_masks(tmp_path):
    from dmstore.fitting.passes import mask_pass

    path = str(tmp_path / "s.zarr")
    small_store(path)
    moments, reader = Moments(path, "val"), BandReader(path, "test")
    mask_pass(moments, reader, np.arange(250, 300), lambda n: None)
    target_pass(moments, reader, np.arange(250, 300), "test", 7, [0], PassPlan(16, True, 1), lambda n: None)
    assert moments.statistics("test", slice(0, 7)).n == 50
    for chunk in (tmp_path / "s.zarr" / "moments" / "val" / "masks" / "c").rglob("*"):
        if chunk.is_file():
            chunk.unlink()
    with pytest.raises(DmstoreError, match=r"masks is damaged for models"):
        moments.statistics("test", slice(0, 7))
