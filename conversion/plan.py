"""Conversion planning: pure arithmetic from shapes, dtypes and a memory budget to chunks,
shards, row bands and the number of workers. No I/O here.

A *band* is the rows of one shard row-block: read from the source as one contiguous byte range
and written as whole shards by one Dask task, so every writer owns whole shards. The layout
(chunks, shards) depends on the array alone, never on the memory budget, so a resumed run
always writes the same store; the budget decides how many bands run at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np

from dmstore.errors import DmstoreError
from dmstore.io.budget import DRIVER_BYTES, local_workers

# Rows of an inner chunk and of a shard, at most: one band of models.
MAX_BAND_ROWS = 2048
# Largest band (uncompressed bytes read from the source at once).
MAX_BAND_BYTES = 128 * 2**20
# Columns of an inner chunk of a 2-D array; one example across all models reads M x CHUNK_COLS
# values, a band of models reads whole rows (benchmarks/bench_chunks.py measures both).
CHUNK_COLS = 256
# Target size of an inner chunk of a 3-D (model, example, class) array.
CHUNK_BYTES = 2**20
# Peak resident bytes of one band task per byte of band: the bytes read and their encoded
# chunks, written as they are made (benchmarks/bench_convert.py: 1.06 on 78 MiB margins bands
# with dmstore.io.shard; 2.74 when Zarr assembled the shard). Kept with a margin.
BAND_MEMORY_FACTOR = 2.0


@dataclass(frozen=True)
class ArrayPlan:
    """How one source matrix becomes one store array."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...]
    shards: tuple[int, ...]
    rows: tuple[int, int]

    @property
    def row_bytes(self) -> int:
        """Bytes of one model row."""
        return prod(self.shape[1:]) * np.dtype(self.dtype).itemsize

    @property
    def band_bytes(self) -> int:
        """Bytes of a full band."""
        return self.shards[0] * self.row_bytes

    @property
    def bands(self) -> list[tuple[int, int]]:
        """Source row ranges ``[start, stop)`` of the bands: one shard row-block of the store each.

        Store row ``i`` holds source row ``rows[0] + i``, so bands are aligned to shards in the store.
        """
        start, stop = self.rows
        step = self.shards[0]
        return [(b, min(b + step, stop)) for b in range(start, stop, step)]

    @property
    def nbytes(self) -> int:
        """Bytes to read from the source for ``rows``."""
        return (self.rows[1] - self.rows[0]) * self.row_bytes


def plan_array(name: str, shape: tuple[int, ...], dtype: np.dtype, rows: tuple[int, int] | None = None) -> ArrayPlan:
    """Chunks, shards and bands of one array.

    Parameters
    ----------
    name
        Store variable name (``train_masks``...).
    shape
        ``(models, examples)`` or ``(models, examples, classes)``.
    dtype
        Element type.
    rows
        Model rows to convert, ``[start, stop)``; all by default.
    """
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise DmstoreError(f"{name} has shape {shape}: expected (models, examples[, classes]) with no empty axis")
    models, examples = shape[:2]
    trailing = tuple(shape[2:])
    row_bytes = prod(shape[1:]) * np.dtype(dtype).itemsize
    band_rows = min(MAX_BAND_ROWS, _pow2_ceil(models), _pow2_floor(max(1, MAX_BAND_BYTES // row_bytes)))
    if trailing:
        cols = _pow2_floor(max(1, CHUNK_BYTES // (band_rows * prod(trailing) * np.dtype(dtype).itemsize)))
    else:
        cols = CHUNK_COLS
    cols = min(cols, examples)
    rows = rows or (0, models)
    if not 0 <= rows[0] < rows[1] <= models:
        raise DmstoreError(f"--models {rows[0]}:{rows[1]} is outside the {models} models of {name}")
    return ArrayPlan(
        name=name,
        shape=tuple(shape),
        dtype=np.dtype(dtype),
        chunks=(band_rows, cols, *trailing),
        shards=(band_rows, _round_up(examples, cols), *trailing),
        rows=rows,
    )


def threads_for(max_memory: int, band_bytes: int, cores: int) -> int:
    """Bands converted at once (threads of this process, at most one per core) within
    ``max_memory`` bytes in all.

    Each thread holds one band at a time (``BAND_MEMORY_FACTOR`` x ``band_bytes`` at peak).
    """
    return local_workers(max_memory, DRIVER_BYTES, BAND_MEMORY_FACTOR * band_bytes, cores)


def parse_rows(text: str | None, models: int, flag: str = "--models") -> tuple[int, int]:
    """``START:STOP`` (either side may be empty, as in a Python slice) as a row range."""
    if text is None:
        return 0, models
    try:
        start, stop = (int(v) if v else None for v in text.split(":"))
    except ValueError as exc:
        raise DmstoreError(f"{flag} {text!r} is not START:STOP (e.g. 0:50000)") from exc
    start, stop, _ = slice(start, stop).indices(models)
    if stop <= start:
        raise DmstoreError(f"{flag} {text} selects none of the {models} models")
    return start, stop


def _pow2_ceil(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _pow2_floor(n: int) -> int:
    return 1 << (n.bit_length() - 1)


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step
