"""String coordinates (``split``, ``class``) as integer codes with CF flag attributes.

Zarr v3 defines no string data type (zarr-python's variable-length strings are an extension other
readers may not know), so a store keeps each label as a ``uint8`` code and names the codes in the
coordinate's attributes the CF way: ``flag_values = [0, 1]``, ``flag_meanings = "fit eval"``.
:func:`dmstore.open` turns them back into strings; any Zarr reader sees plain integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from dmstore.errors import DmstoreError

#: The model sets a store records (``missing`` is computed on reading, never stored).
MODEL_SPLITS = ("fit", "eval")


def encode(dim: str, values: Sequence[str] | np.ndarray, meanings: Sequence[str]) -> xr.Variable:
    """``values`` (each one of ``meanings``) as a ``uint8`` coordinate of codes along ``dim``,
    with ``flag_values``/``flag_meanings`` attributes (blanks in a meaning become ``_``, as CF's
    blank-separated list requires)."""
    words = [str(m).replace(" ", "_") for m in meanings]
    if len(words) > 255 or len(set(words)) != len(words):
        raise DmstoreError(f"{dim} labels must be at most 255 distinct names, got {list(meanings)[:5]}...")
    index = {str(m): i for i, m in enumerate(meanings)}
    try:
        codes = np.array([index[str(v)] for v in np.asarray(values).ravel()], dtype=np.uint8)
    except KeyError as exc:
        raise DmstoreError(f"{dim} label {exc.args[0]!r} is not one of {list(meanings)}") from exc
    return xr.Variable(dim, codes, {"flag_values": list(range(len(words))), "flag_meanings": " ".join(words)})


def decode(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with every coordinate that has ``flag_meanings`` turned back into its labels
    (object strings, as numpy compares them with ``==``); other coordinates untouched, so a store
    written before codes (strings kept as such) reads the same."""
    labelled = {}
    for name, coord in ds.coords.items():
        meanings = coord.attrs.get("flag_meanings")
        if meanings is None or not np.issubdtype(coord.dtype, np.integer):
            continue
        attrs = {k: v for k, v in coord.attrs.items() if k not in ("flag_values", "flag_meanings")}
        labels = labels_of(_computed(coord.data), meanings)
        labelled[name] = xr.Variable(coord.dims, labels, attrs)
    return ds.assign_coords(labelled) if labelled else ds


def labels_of(codes: np.ndarray, meanings: str) -> np.ndarray:
    """The labels (object strings) of ``codes`` given a ``flag_meanings`` string."""
    return np.array(meanings.split(), dtype=object)[codes]


def _computed(codes: Any) -> np.ndarray:
    """The codes of a coordinate in memory; a Dask array's computed on this thread (a byte per
    model: any other scheduler first imports ``distributed``, 0.4 s of a small fit)."""
    if isinstance(codes, np.ndarray):
        return codes
    from dask.local import get_sync

    return np.asarray(codes.compute(scheduler=get_sync))
