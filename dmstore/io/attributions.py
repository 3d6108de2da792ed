"""Attribution scores of any method (TRAK, influence functions, another regression): a ``[train x
targets]`` matrix read from ``.npy``, ``.pt`` or Zarr, kept in a store as ``attributions/{name}``.

A score matrix is scored like datamodels (``mask @ scores``; the LDS is a rank correlation, so no
intercept is needed). Its columns are the target examples ``0..T-1`` of the split, unless a Zarr
source or a stored group names them in a ``target`` coordinate.
"""

from __future__ import annotations

import os
import re
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from dmstore.errors import DmstoreError
from dmstore.io.dataset import as_store, consolidate, open_group

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def group_path(name: str) -> str:
    """The store group of the attributions called ``name``."""
    if not NAME.match(name):
        raise DmstoreError(f"attribution name {name!r}: use letters, digits, '_', '.' or '-'")
    return f"attributions/{name}"


def read_scores(source: Any, n_train: int) -> xr.Dataset:
    """``weight`` (``train``, ``target``; lazy) and a zero ``bias`` from a score matrix.

    Parameters
    ----------
    source
        A ``[n_train, T]`` array, or the path of a ``.npy`` file, a ``.pt`` file (a tensor, or a
        dict with ``weight``) or a Zarr array or group (with ``weight`` or ``scores``).
    n_train
        The store's training examples: the matrix must have one row per training example.
    """
    targets = None
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path.endswith(".npy"):
            data: Any = np.load(path, mmap_mode="r")
        elif path.endswith(".pt"):
            import torch

            loaded = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
            data = (loaded["weight"] if isinstance(loaded, dict) else loaded).numpy()
        else:
            data, targets = _read_zarr(path)
    else:
        data = source
    if data.ndim != 2:
        raise DmstoreError(f"the scores have shape {tuple(data.shape)}: give a [train x targets] matrix")
    if data.shape[0] != n_train:
        hint = " (transpose it)" if data.shape[1] == n_train else ""
        raise DmstoreError(
            f"the scores have {data.shape[0]} rows but the store has {n_train} training examples: "
            f"give one row per training example{hint}"
        )
    weight = da.from_array(data, chunks=(-1, 512)).astype(np.float32)
    targets = np.arange(weight.shape[1]) if targets is None else targets
    return xr.Dataset(
        {"weight": (("train", "target"), weight), "bias": ("target", np.zeros(weight.shape[1], np.float32))},
        coords={"target": targets},
    )


def _read_zarr(path: str) -> tuple[Any, np.ndarray | None]:
    try:
        node = zarr.open(as_store(path, read_only=True), mode="r")  # a user's file: Zarr v2 or v3
    except (FileNotFoundError, zarr.errors.NodeTypeValidationError, ValueError) as exc:
        raise DmstoreError(f"cannot read scores from {path}: give a .npy, .pt or Zarr file") from exc
    if isinstance(node, zarr.Array):
        return node, None
    for name in ("weight", "scores"):
        if name in node:
            targets = node["target"][:] if "target" in node else None
            return node[name], targets
    raise DmstoreError(f"the Zarr group {path} has no 'weight' or 'scores' array")


def write_scores(store: Any, name: str, scores: xr.Dataset, storage_options: dict | None = None) -> None:
    """Keep ``scores`` (from :func:`read_scores`) in the store as ``attributions/{name}``."""
    scores.to_zarr(
        store, group=group_path(name), mode="w", zarr_format=3, consolidated=False, storage_options=storage_options
    )
    consolidate(store, storage_options)


def stored_names(store: Any, storage_options: dict | None = None) -> list[str]:
    """The names of the attributions kept in the store."""
    root = open_group(store, storage_options)
    if "attributions" not in root:
        return []
    return sorted(name for name, _ in root["attributions"].groups())


def read_stored(store: Any, name: str, storage_options: dict | None = None) -> xr.Dataset:
    """The attributions kept as ``attributions/{name}`` (lazy)."""
    if name not in stored_names(store, storage_options):
        raise DmstoreError(f"the store keeps no attributions called {name!r}: evaluate them with --scores first")
    return xr.open_zarr(
        store, group=group_path(name), zarr_format=3, consolidated=False, storage_options=storage_options
    )
