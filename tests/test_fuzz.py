"""Bad input, fuzzed: random shapes, dtypes, header versions and truncations of the source files.
Every case either converts exactly or fails with one clear DmstoreError."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import LOOPBACK
from dask.distributed import Client, LocalCluster
from dmstore.conversion.convert import convert
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dmstore.errors import DmstoreError

KINDS = {"train_masks": (bool, "train"), "train_margins": (np.float16, "train"), "test_margins": (np.float16, "test")}


@pytest.fixture(scope="module")
def client():
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False, **LOOPBACK) as cluster,
        Client(cluster) as c,
    ):
        yield c


@st.composite
def sources(draw):
    models = draw(st.integers(1, 300))
    widths = {"train": draw(st.integers(1, 40)), "test": draw(st.integers(1, 20))}
    files = {}
    for name, (dtype, axis) in KINDS.items():
        spoil = draw(st.sampled_from(["none"] * 14 + ["dtype", "rows", "fortran", "truncate", "ndim"]))
        shape = (models + (spoil == "rows"), widths[axis])
        if spoil == "ndim":
            shape = (models * widths[axis],)
        actual = np.float32 if spoil == "dtype" else dtype
        array = np.asarray(np.random.default_rng(len(files)).random(shape) * 4 - 2).astype(actual)
        if spoil == "fortran" and min(shape) > 1 and len(shape) == 2:
            array = np.asfortranarray(array)
        version = draw(st.sampled_from([(1, 0), (2, 0), (3, 0)]))
        cut = draw(st.integers(1, 64)) if spoil == "truncate" else 0
        files[name] = (array, version, cut)
    return files


@given(files=sources())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_converts_exactly_or_fails_clearly(client, files):
    root = Path(tempfile.mkdtemp())
    try:
        folder = root / "src/toy/data"
        folder.mkdir(parents=True)
        for name, (array, version, cut) in files.items():
            path = folder / f"{name}_50pct.npy"
            with open(path, "wb") as f:
                np.lib.format.write_array(f, array, version=version)
            if cut:
                os.truncate(path, max(0, path.stat().st_size - cut))
        dest = root / "s.zarr"
        try:
            convert(str(root / "src"), str(dest), "toy", 50, eval_rows=0, scheduler=client, progress=False)
        except DmstoreError as exc:
            assert "\n" not in str(exc) and str(exc)
            assert not (dest / "zarr.json").exists()  # refused before anything was written
            event("clear error")
            return
        event("converted exactly")
        ds = xr.open_zarr(dest, zarr_format=3)
        for name, (array, _, _) in files.items():
            assert ds[name].dtype == array.dtype and array.flags.c_contiguous
            np.testing.assert_array_equal(ds[name].values, array)
    finally:
        shutil.rmtree(root)
