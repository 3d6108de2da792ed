"""Datamodel predictions ``masks @ weight + bias``, one row band of masks at a time."""

from __future__ import annotations

import dask.array as da
import numpy as np

SUB_BAND = 256  # mask rows converted to float32 at once inside a band
TARGET_CHUNK = 512  # weight columns per task


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
    for start in range(0, masks.shape[0], SUB_BAND):
        rows = slice(start, start + SUB_BAND)
        np.matmul(np.asarray(masks[rows], dtype=np.float32), weight, out=out[rows])
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
