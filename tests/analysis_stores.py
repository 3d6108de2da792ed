"""Stores for the analysis tests (evaluate, stats, accessor), each built once per test session.

``synthetic_store``: plain xarray following the store contract, small shards, evaluation rows
spread over several shards (not contiguous), datamodels for a shuffled subset of targets (one
with all-zero weights). ``example_store``: real data, ``make_example`` -> ``convert`` -> ridge
datamodels on the fit models, written with ``write_datamodels``.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
from conftest import shared_example
from matplotlib.image import imread

import dmstore
from dmstore.io.datamodels import write_datamodels

ROOT = Path(tempfile.mkdtemp(prefix="dmstore-analysis-"))
atexit.register(shutil.rmtree, ROOT, ignore_errors=True)

SHARD_ROWS = 64
TEST_TARGETS = np.array([7, 0, 3, 12, 25, 1, 30, 18, 9, 33, 21, 4])


@functools.cache
def synthetic_store(models: int = 700, n_train: int = 120, n_test: int = 40) -> tuple[Path, dict]:
    """A contract store with true datamodels plus noise; returns its path and the numpy arrays."""
    rng = np.random.default_rng(7)
    masks = rng.random((models, n_train)) < 0.5
    weight = (rng.standard_normal((n_train, n_test)) * (rng.random((n_train, n_test)) < 0.15)).astype(np.float32)
    bias = rng.standard_normal(n_test).astype(np.float32)
    test_margins = (masks @ weight + bias + rng.standard_normal((models, n_test))).astype(np.float16)
    train_margins = (rng.standard_normal((models, n_train)) + 2 * masks).astype(np.float16)
    split = np.full(models, "fit", dtype=object)
    split[300::3] = "eval"  # evaluation rows in every shard from row 300 on, not contiguous
    split[-40:] = "eval"
    ds = xr.Dataset(
        {
            "train_masks": (("model", "train"), masks),
            "train_margins": (("model", "train"), train_margins),
            "test_margins": (("model", "test"), test_margins),
        },
        coords={
            "model": np.arange(models, dtype=np.int64),
            "split": ("model", split),
            "train": np.arange(n_train, dtype=np.int64),
            "test": np.arange(n_test, dtype=np.int64),
        },
        attrs={"dataset": "synthetic", "pct": 50},
    )
    encoding = {name: {"chunks": (SHARD_ROWS, ds[name].shape[1])} for name in ds.data_vars}
    encoding["split"] = {"chunks": (SHARD_ROWS,)}
    path = ROOT / "synthetic.zarr"
    ds.to_zarr(path, mode="w", zarr_format=3, encoding=encoding, consolidated=False)
    zarr.consolidate_metadata(str(path))
    test_weight = weight[:, TEST_TARGETS] + 0.1 * rng.standard_normal((n_train, TEST_TARGETS.size)).astype(np.float32)
    test_weight[:, 4] = 0  # a target whose predictions are constant: no correlation
    write_datamodels(
        str(path), "test", test_weight, bias[TEST_TARGETS], np.full(TEST_TARGETS.size, 0.01), targets=TEST_TARGETS
    )
    train_targets = np.arange(0, n_train, 10)
    train_weight = rng.standard_normal((n_train, train_targets.size)).astype(np.float32) * 0.1
    train_weight[train_targets, np.arange(train_targets.size)] = 2.0  # an example helps itself
    write_datamodels(
        str(path),
        "train",
        train_weight,
        np.zeros(train_targets.size),
        np.zeros(train_targets.size),
        targets=train_targets,
    )
    arrays = {
        "masks": masks,
        "test_margins": test_margins,
        "train_margins": train_margins,
        "split": split,
        "test_weight": test_weight,
        "test_bias": bias[TEST_TARGETS],
        "train_targets": train_targets,
        "train_weight": train_weight,
    }
    return path, arrays


def ridge(masks: np.ndarray, margins: np.ndarray, lam: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Ridge datamodels ``margins ~ masks @ weight + bias`` in raw mask space."""
    x = masks.astype(np.float64)
    x_mean, y_mean = x.mean(0), margins.mean(0, dtype=np.float64)
    xc = x - x_mean
    weight = np.linalg.solve(xc.T @ xc + lam * np.eye(x.shape[1]), xc.T @ (margins - y_mean))
    return weight.astype(np.float32), (y_mean - x_mean @ weight).astype(np.float32)


@functools.cache
def example_store() -> Path:
    """Real data: the shared example of MLPs on digits converted, with ridge test datamodels."""
    from dmstore.conversion.convert import convert

    folder = shared_example(ROOT / "example")
    path = ROOT / "example.zarr"
    convert(str(folder.parent), str(path), "digits", 50, progress=False, max_memory="1GB")
    ds = dmstore.open(path)
    fit = ds["split"].values == "fit"
    weight, bias = ridge(ds["train_masks"].values[fit], ds["test_margins"].values[fit].astype(np.float32))
    write_datamodels(str(path), "test", weight, bias, np.full(bias.size, 10.0), attrs={"method": "ridge (tests)"})
    return path


def assert_png(path: Path, min_bytes: int = 10_000) -> None:
    """A real plot: a PNG of some size whose pixels are not all alike."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > min_bytes
    image = imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 400
    assert image.reshape(-1, image.shape[-1]).std(axis=0).max() > 0.05
