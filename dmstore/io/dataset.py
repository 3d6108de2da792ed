"""Open a dmstore store as a lazy ``xarray.Dataset`` whose Dask chunks are whole shards."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.storage import FsspecStore, LocalStore

from dmstore.errors import DmstoreError
from dmstore.io import labels


@contextmanager
def known_warnings() -> Iterator[None]:
    """Silence, here only, the two warnings zarr gives about every dmstore store by design: its
    consolidated metadata (one read opens the store) and the plain objects of ``_dmstore/``
    (band records, locks) beside the hierarchy."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        warnings.filterwarnings("ignore", message="Object at _dmstore is not recognized")
        yield


def consolidate(store: Any, storage_options: dict | None = None) -> None:
    """Rewrite the store's consolidated metadata (after a group was added or changed)."""
    with known_warnings():
        zarr.consolidate_metadata(as_store(store, storage_options))


def as_store(store: Any, storage_options: dict | None = None, *, read_only: bool = False) -> Any:
    """A zarr store object for a local path or an fsspec URL (a store object passes through)."""
    if not isinstance(store, (str, os.PathLike)):
        return store
    url = os.fspath(store)
    if "://" in url and not url.startswith("file://"):
        return FsspecStore.from_url(url, storage_options=storage_options, read_only=read_only)
    return LocalStore(url.removeprefix("file://"), read_only=read_only)


def open_group(
    store: Any,
    storage_options: dict | None = None,
    *,
    mode: str = "r",
    path: str | None = None,
    consolidated: bool | None = None,
) -> zarr.Group:
    """A group of a dmstore store (``mode="r"``: read-only), opened as Zarr v3: zarr would otherwise
    also look for Zarr v2's ``.zgroup``, ``.zattrs`` and ``.zmetadata``, on S3 a HEAD and a listing
    each. ``consolidated=None`` uses the consolidated metadata where there is some."""
    read_only = mode == "r"
    return zarr.open_group(
        as_store(store, storage_options, read_only=read_only),
        mode=mode,
        path=path,
        use_consolidated=consolidated,
        zarr_format=3,
    )


def shard_chunks(store: Any, storage_options: dict | None = None) -> dict[str, int]:
    """Dask chunk sizes per dimension, one shard each, read from the store's arrays."""
    try:
        group = open_group(store, storage_options)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
        raise DmstoreError(f"no dmstore store at {store}: run `dmstore convert` first") from exc
    chunks: dict[str, int] = {}
    with known_warnings():
        arrays = list(group.arrays())
    for _, array in arrays:
        if array.ndim < 2:  # coordinates follow the data variables
            continue
        dims = array.metadata.dimension_names or ()
        blocks = array.shards or array.chunks
        for dim, size in zip(dims, blocks):
            if dim is not None:
                chunks[dim] = max(chunks.get(dim, 0), size)
    return chunks


def open(store: Any, *, storage_options: dict | None = None, group: str | None = None) -> xr.Dataset:
    """Open a store (path, URL or zarr store) lazily; each Dask chunk is one shard.

    Parameters
    ----------
    store
        Local path, fsspec URL (``s3://bucket/store.zarr``) or a zarr store object.
    storage_options
        fsspec options for a URL (credentials, ``endpoint_url``...).
    group
        A group inside the store (e.g. ``datamodels/test``); the root by default.
    """
    chunks = shard_chunks(store, storage_options) if group is None else {}
    ds = xr.open_zarr(
        store,
        group=group,
        chunks=chunks or None,
        consolidated=None,
        zarr_format=3,
        storage_options=storage_options,
        mask_and_scale=False,
    )
    ds = labels.decode(ds)
    if group is None:
        ds = _checked(ds, store, storage_options)
    # where the Dataset came from, for the ``ds.dm`` accessor to find the datamodels groups
    ds.encoding.update(dmstore_store=store, dmstore_storage_options=storage_options)
    return ds


def _checked(ds: xr.Dataset, store: Any, storage_options: dict | None) -> xr.Dataset:
    """``ds`` with each per-model data variable read through the checked path
    (:mod:`dmstore.io.reads`): a missing shard or a failed checksum is a one-line error."""
    import dask.array as da

    from dmstore.io.reads import checked_arrays
    from dmstore.io.segments import experiment_snapshot, model_variables

    root = open_group(store, storage_options)
    labels = ds["model"].values if "model" in ds.coords else None
    snapshot = experiment_snapshot(store, storage_options, ds.attrs)
    with known_warnings():
        arrays = checked_arrays(root, ds.attrs, labels, snapshot)
    for name, variable in ds.data_vars.items():
        if name not in arrays or variable.chunks is None:
            continue
        checked = arrays[name]
        data = da.from_array(checked, chunks=variable.chunks, asarray=False, name=f"dmstore-{name}-{id(checked)}")
        ds[name] = variable.copy(data=data)
    if snapshot is not None:  # an experiment store: only the written models count
        done = snapshot.done(model_variables(ds.attrs["dmstore_experiment"]), ds.sizes["model"])
        split = np.where(done, ds["split"].values, "missing").astype(object)
        ds = ds.assign_coords(split=("model", split), done=("model", done))
    return ds
