"""Model rows of a store chosen by split, grouped into bands that never cross a shard boundary."""

from __future__ import annotations

import numpy as np
import xarray as xr

from dmstore.errors import DmstoreError

MODEL_SETS = ("fit", "eval", "all")


def model_positions(ds: xr.Dataset, models: str) -> np.ndarray:
    """Row positions (not labels) of the ``fit``, ``eval`` or ``all`` models of a store (of an
    experiment store: only written models, whose ``split`` is not ``missing``)."""
    if models not in MODEL_SETS:
        raise DmstoreError(f"unknown model set {models!r}: use one of {', '.join(MODEL_SETS)}")
    n_models = ds.sizes["model"]
    if models == "all":  # in an experiment store, the written models
        written = np.asarray(ds["split"].values) != "missing" if "split" in ds.coords else np.ones(n_models, bool)
        return np.flatnonzero(written)
    if "split" not in ds.coords:
        raise DmstoreError("the store has no `split` coordinate: convert it again with dmstore convert")
    positions = np.flatnonzero(np.asarray(ds["split"].values) == models)
    if positions.size == 0:
        raise DmstoreError(
            f"the store marks no models as {models!r} in its `split` coordinate: "
            "say which rows are evaluation models when converting"
        )
    return positions


def written_models(ds: xr.Dataset) -> dict[str, int]:
    """For an experiment store, ``models_written`` and ``model_slots`` (results report them); else
    nothing."""
    if "done" not in ds.coords:
        return {}
    return {"models_written": int(ds["done"].values.sum()), "model_slots": int(ds.sizes["model"])}


def shard_bands(positions: np.ndarray, shard_rows: tuple[int, ...]) -> list[slice | np.ndarray]:
    """Split sorted row positions into one band per shard they fall in.

    Parameters
    ----------
    positions
        Sorted, distinct row positions.
    shard_rows
        Rows of each shard in order (a Dask ``chunks`` tuple along ``model``).

    Returns
    -------
    list
        Per shard holding any of the positions: a ``slice`` where they are contiguous, else the
        positions themselves; concatenated, the bands give back ``positions``.
    """
    positions = np.asarray(positions, dtype=np.int64)
    edges = np.cumsum((0, *shard_rows))
    cuts = np.searchsorted(positions, edges[1:-1])
    bands: list[slice | np.ndarray] = []
    for band in np.split(positions, cuts):
        if band.size == 0:
            continue
        if band[-1] - band[0] + 1 == band.size:
            bands.append(slice(int(band[0]), int(band[-1]) + 1))
        else:
            bands.append(band)
    return bands


def band_size(band: slice | np.ndarray) -> int:
    """Rows in one band."""
    return band.stop - band.start if isinstance(band, slice) else len(band)


def band_bytes(ds: xr.Dataset, names: list[str], bands: list[slice | np.ndarray]) -> int:
    """Bytes of the largest of ``bands`` across the variables ``names``, as stored (uncompressed)."""
    row = sum(ds[name].dtype.itemsize * int(np.prod(ds[name].shape[1:])) for name in names)
    return max(map(band_size, bands), default=0) * row


def model_bands(ds: xr.Dataset, models: str) -> list[slice | np.ndarray]:
    """Shard-aligned bands of the ``models`` rows of ``ds`` (whose Dask chunks are shards)."""
    positions = model_positions(ds, models)
    shard_rows = ds.chunks.get("model") or (ds.sizes["model"],)
    return shard_bands(positions, tuple(shard_rows))
