"""The ``datamodels/{split}`` groups of a store: weight, bias and lam per target example."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
import zarr

from dmstore.dataset import as_store
from dmstore.errors import DmstoreError

SPLITS = ("train", "test")


def group_path(split: str) -> str:
    """The group that holds the datamodels of ``split`` (``train`` or ``test``)."""
    if split not in SPLITS:
        raise DmstoreError(f"unknown target split {split!r}: use one of {', '.join(SPLITS)}")
    return f"datamodels/{split}"


def has_datamodels(store: Any, split: str, storage_options: dict | None = None) -> bool:
    """Whether the store already holds datamodels for ``split``."""
    try:
        root = zarr.open_group(as_store(store, storage_options, read_only=True), mode="r")
        root[group_path(split)]
    except (KeyError, FileNotFoundError, zarr.errors.GroupNotFoundError):
        return False
    return True


def write_datamodels(
    store: Any,
    split: str,
    weight: np.ndarray,
    bias: np.ndarray,
    lam: np.ndarray,
    *,
    targets: np.ndarray | None = None,
    attrs: dict | None = None,
    overwrite: bool = False,
    storage_options: dict | None = None,
) -> xr.Dataset:
    """Write datamodels into ``datamodels/{split}`` and re-consolidate the store's metadata.

    Parameters
    ----------
    weight
        ``[N_train, T]`` weights in raw mask space: a prediction is ``mask @ weight + bias``.
    bias, lam
        ``[T]`` intercepts and the regularisation strength of each target.
    targets
        Example indices (in ``split``) of the T targets; ``arange(T)`` by default.
    attrs
        How the datamodels were estimated (or that they were imported).
    """
    if has_datamodels(store, split, storage_options) and not overwrite:
        raise DmstoreError(
            f"the store already holds datamodels for {split!r}: pass --overwrite "
            "(overwrite=True) to replace them, or export them first with `dmstore export`"
        )
    weight = np.asarray(weight, dtype=np.float32)
    n_train, n_targets = weight.shape
    targets = np.arange(n_targets) if targets is None else np.asarray(targets, dtype=np.int64)
    ds = xr.Dataset(
        {
            "weight": (("train", "target"), weight),
            "bias": (("target",), np.asarray(bias, dtype=np.float32)),
            "lam": (("target",), np.asarray(lam, dtype=np.float32)),
        },
        coords={"train": np.arange(n_train, dtype=np.int64), "target": targets},
        attrs=dict(attrs or {}, split=split),
    )
    ds.to_zarr(
        store,
        group=group_path(split),
        mode="w",
        zarr_format=3,
        consolidated=False,
        storage_options=storage_options,
    )
    zarr.consolidate_metadata(as_store(store, storage_options))
    return ds


def read_datamodels(store: Any, split: str, storage_options: dict | None = None) -> xr.Dataset:
    """The datamodels of ``split`` as an ``xarray.Dataset`` (lazy)."""
    if not has_datamodels(store, split, storage_options):
        raise DmstoreError(
            f"the store holds no datamodels for {split!r}: run `dmstore fit --target {split}` "
            "or convert the published .pt file with --arrays datamodels"
        )
    return xr.open_zarr(
        store, group=group_path(split), zarr_format=3, consolidated=False, storage_options=storage_options
    )
