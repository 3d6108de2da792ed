"""Sufficient statistics of the datamodel regression, additive over model rows.

For masks ``X`` (models x train examples, 0/1) and margins ``Y`` (models x targets), every
quantity the LASSO path needs follows from ``n``, ``X^T X``, ``X^T Y``, the column sums of ``X``
and ``Y`` and the column sums of ``Y**2``. They add up over any partition of the rows, so one
streaming pass over row bands gives them for the whole store.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

#: float32 holds every integer up to 2**24 exactly: the most rows one band may have so that
#: its mask counts ``X^T X`` are exact when computed in float32.
EXACT_ROWS_FLOAT32 = 2**24


@dataclass
class Moments:
    """Sums over a set of model rows (float64 arrays of one namespace: numpy, or cupy on a GPU).

    Attributes
    ----------
    n
        Number of model rows.
    xtx
        ``[N, N]`` mask co-occurrence counts ``X^T X`` (exact integers).
    xty
        ``[N, T]`` ``X^T Y``: sum of each target's margins over the models that include each example.
    xsum
        ``[N]`` how many models include each train example.
    ysum, yy
        ``[T]`` sum and sum of squares of each target's margins.
    """

    n: int
    xtx: np.ndarray
    xty: np.ndarray
    xsum: np.ndarray
    ysum: np.ndarray
    yy: np.ndarray

    def __add__(self, other: Moments) -> Moments:
        return Moments(
            self.n + other.n,
            self.xtx + other.xtx,
            self.xty + other.xty,
            self.xsum + other.xsum,
            self.ysum + other.ysum,
            self.yy + other.yy,
        )

    def __iadd__(self, other: Moments) -> Moments:
        """Add ``other`` in place (no second ``N x N`` array is allocated)."""
        self.n += other.n
        for name in ("xtx", "xty", "xsum", "ysum", "yy"):
            getattr(self, name).__iadd__(getattr(other, name))
        return self

    @property
    def n_train(self) -> int:
        """Number of train examples (features) N."""
        return self.xtx.shape[0]

    @property
    def n_targets(self) -> int:
        """Number of targets T."""
        return self.xty.shape[1]


def band_moments(masks: Any, margins: Any, xp: ModuleType = np) -> Moments:
    """The statistics of one band of model rows, computed with the array namespace ``xp``.

    Parameters
    ----------
    masks
        ``[rows, N]`` bool (or 0/1) masks of the band.
    margins
        ``[rows, T]`` margins of the band's models on the targets (any float dtype).
    xp
        ``numpy`` or ``cupy``: where the products run and the result lives.

    Notes
    -----
    The mask products run in float32 (fast BLAS / GPU GEMM) and are exact for bands of up to
    ``2**24`` rows; the margin products run in float64. Memory: the band cast to float32 and
    float64 plus the ``N x N`` and ``N x T`` results.
    """
    rows = masks.shape[0]
    if rows > EXACT_ROWS_FLOAT32:
        raise ValueError(f"a band of {rows} rows is too large for exact float32 counts")
    x = xp.asarray(masks).astype(xp.float32)
    y = xp.asarray(margins).astype(xp.float64)
    xtx = (x.T @ x).astype(xp.float64)
    xty = x.T.astype(xp.float64) @ y
    return Moments(rows, xtx, xty, x.sum(axis=0, dtype=xp.float64), y.sum(axis=0), (y * y).sum(axis=0))


def to_numpy(array: Any) -> np.ndarray:
    """A numpy array from a numpy or cupy array."""
    return array.get() if hasattr(array, "get") else np.asarray(array)
