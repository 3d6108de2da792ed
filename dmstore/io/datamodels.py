"""The ``datamodels/{split}`` groups of a store: weight, bias and lam per target example."""

from __future__ import annotations

import json
from typing import Any

import fsspec
import numpy as np
import xarray as xr
import zarr

from dmstore.errors import DmstoreError
from dmstore.io.dataset import consolidate, open_group

SPLITS = ("train", "test")
#: Records of the target blocks a fit has written: ``_dmstore/datamodels/{split}/{start}-{stop}.json``.
RECORDS = "_dmstore/datamodels"


def group_path(split: str) -> str:
    """The group that holds the datamodels of ``split`` (``train`` or ``test``)."""
    if split not in SPLITS:
        raise DmstoreError(f"unknown target split {split!r}: use one of {', '.join(SPLITS)}")
    return f"datamodels/{split}"


def has_datamodels(store: Any, split: str, storage_options: dict | None = None) -> bool:
    """Whether the store already holds datamodels for ``split``."""
    try:
        root = open_group(store, storage_options, consolidated=False)
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
    consolidate(store, storage_options)
    return ds


def read_datamodels(store: Any, split: str, storage_options: dict | None = None) -> xr.Dataset:
    """The datamodels of ``split`` as an ``xarray.Dataset`` (lazy): for a group that a fit fills
    block by block, only the targets of the blocks it has written."""
    if not has_datamodels(store, split, storage_options):
        raise DmstoreError(
            f"the store holds no datamodels for {split!r}: run `dmstore fit --target {split}` "
            "or convert the published .pt file with --arrays datamodels"
        )
    ds = xr.open_zarr(
        store, group=group_path(split), zarr_format=3, consolidated=False, storage_options=storage_options
    )
    if not ds.attrs.get("dmstore_blocks"):
        return ds
    done = sorted(fitted_blocks(store, split, storage_options))
    if not done:
        raise DmstoreError(f"the fit of the {split} datamodels has written no target block yet: run it to the end")
    return ds.isel(target=np.concatenate([np.arange(a, b) for a, b in done]))


def _records(store: Any, split: str, storage_options: dict | None) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(str(store), **(storage_options or {}))
    return fs, f"{root.rstrip('/')}/{RECORDS}/{split}"


def start_blocks(
    store: Any,
    split: str,
    n_train: int,
    targets: np.ndarray,
    block: int,
    attrs: dict,
    storage_options: dict | None = None,
) -> None:
    """Create ``datamodels/{split}`` for every target of the split, to be filled block by block
    (weights of unfitted targets read as NaN; :func:`read_datamodels` shows only fitted ones)."""
    root = open_group(store, storage_options, mode="a", consolidated=False)
    group = root.require_group("datamodels").create_group(split, overwrite=True)
    fs, records = _records(store, split, storage_options)
    if fs.exists(records):
        fs.rm(records, recursive=True)
    n_targets = targets.size
    group.create_array(
        "weight",
        shape=(n_train, n_targets),
        dtype="float32",
        chunks=(n_train, block),
        fill_value=np.nan,
        dimension_names=("train", "target"),
    )
    for name in ("bias", "lam"):
        group.create_array(
            name, shape=(n_targets,), dtype="float32", chunks=(block,), fill_value=np.nan, dimension_names=("target",)
        )
    group.create_array("train", data=np.arange(n_train, dtype=np.int64), dimension_names=("train",))
    group.create_array("target", data=np.asarray(targets, dtype=np.int64), dimension_names=("target",))
    group.update_attributes(dict(attrs, split=split, dmstore_blocks=True))


def write_block(
    store: Any,
    split: str,
    start: int,
    weight: np.ndarray,
    bias: np.ndarray,
    lam: np.ndarray,
    summary: dict,
    storage_options: dict | None = None,
) -> None:
    """Write the datamodels of targets ``start : start + len(bias)``, then record the block."""
    group = open_group(store, storage_options, mode="r+", path=group_path(split), consolidated=False)
    stop = start + bias.size
    group["weight"][:, start:stop] = weight.astype(np.float32)
    group["bias"][start:stop] = bias.astype(np.float32)
    group["lam"][start:stop] = lam.astype(np.float32)
    fs, records = _records(store, split, storage_options)
    fs.makedirs(records, exist_ok=True)
    fs.pipe_file(f"{records}/{start}-{stop}.json", json.dumps(summary).encode())


def fitted_blocks(store: Any, split: str, storage_options: dict | None = None) -> dict[tuple[int, int], dict]:
    """The recorded blocks of ``datamodels/{split}``: ``(start, stop) -> summary``."""
    fs, records = _records(store, split, storage_options)
    try:
        paths = fs.glob(f"{records}/*.json")
    except FileNotFoundError:
        return {}
    out = {}
    for path, body in fs.cat(paths).items() if paths else ():
        start, stop = path.rsplit("/", 1)[1].removesuffix(".json").split("-")
        out[(int(start), int(stop))] = json.loads(body)
    return out
