"""Datamodel predictions ``masks @ weight + bias``, one row band of masks at a time."""

from __future__ import annotations

from collections.abc import Iterator

import dask.array as da
import numpy as np

SUB_BAND = 256  # rows of a band converted to float at once (predictions, stats' sums)
TARGET_CHUNK = 512  # weight columns per task


def sub_bands(rows: np.ndarray, buffer: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """Each ``SUB_BAND`` rows of ``rows`` (their slice) and their copy in ``buffer``'s dtype, a view
    of ``buffer`` (at least ``SUB_BAND x rows.shape[1]``; reused: no allocation per sub-band)."""
    for start in range(0, rows.shape[0], SUB_BAND):
        part = rows[start : start + SUB_BAND]
        x = buffer[: part.shape[0], : part.shape[1]]
        np.copyto(x, part)
        yield slice(start, start + part.shape[0]), x


def predict_band(masks: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Predicted margins ``masks @ weight + bias`` of one band of models.

    Parameters
    ----------
    masks
        ``[rows, N_train]`` bool (or 0/1) training subsets.
    weight, bias
        ``[N_train, T]`` and ``[T]`` datamodels in raw mask space.

    Returns
    -------
    numpy.ndarray
        ``[rows, T]`` float32. Memory beyond the inputs and output: ``SUB_BAND x N_train`` float32.
    """
    weight = np.asarray(weight, dtype=np.float32)
    out = np.empty((masks.shape[0], weight.shape[1]), dtype=np.float32)
    buffer = np.empty((min(SUB_BAND, masks.shape[0]), masks.shape[1]), dtype=np.float32)
    for rows, x in sub_bands(masks, buffer):
        np.matmul(x, weight, out=out[rows])
    out += np.asarray(bias, dtype=np.float32)
    return out


def predict(masks: da.Array, weight: da.Array, bias: da.Array, *, target_chunk: int = TARGET_CHUNK) -> da.Array:
    """Lazy ``masks @ weight + bias``: one task per (row chunk of ``masks``, ``target_chunk`` targets).

    Each task holds one band of masks (its row chunk across all training examples, bool), one
    ``[N_train, target_chunk]`` float32 block of weights and its ``[rows, target_chunk]`` output.
    """
    masks = da.asarray(masks).rechunk({1: -1})
    weight = da.asarray(weight).rechunk({0: -1, 1: target_chunk})
    bias = da.asarray(bias).rechunk({0: weight.chunks[1]})
    return da.blockwise(predict_band, "mt", masks, "mn", weight, "nt", bias, "t", concatenate=True, dtype=np.float32)
