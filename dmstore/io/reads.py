"""The checked read path: every reader of a store's data arrays goes through it.

Zarr returns the fill value for a shard that does not exist, so a store that lost a shard (an
interrupted copy, a lifecycle rule, a disk error) would silently read as zeros. Here a read
first checks that every shard it touches exists, and turns a checksum failure (every inner
chunk carries a CRC32C) into the same one-line :class:`~dmstore.errors.DmstoreError`, naming the
array and the model rows and saying how to repair. Two doors, one rule:

- :func:`read_rows`: a band of rows read with zarr (the fit's passes), checking its shards;
- :class:`CheckedArray`: what :func:`dmstore.open` puts under each data variable's Dask array
  (evaluate, stats, the accessor, export, any user query, Dask tasks on workers), with the
  missing shards listed once when the store is opened (one listing per array, no request per
  read).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from dmstore.errors import DmstoreError

Rows = slice | np.ndarray


def _row_span(rows: Rows) -> tuple[int, int]:
    if isinstance(rows, slice):
        return int(rows.start), int(rows.stop)
    rows = np.asarray(rows)
    return int(rows.min()), int(rows.max()) + 1


def damaged(name: str, rows: Rows, what: str, labels: np.ndarray | None = None) -> DmstoreError:
    """The error for damaged data of ``name`` in model ``rows``."""
    start, stop = _row_span(rows)
    first, last = (start, stop - 1) if labels is None else (labels[start], labels[stop - 1])
    return DmstoreError(
        f"{name} is damaged for models {first}-{last} ({what}): run `dmstore verify STORE` to list the "
        "damage and the same `dmstore convert` to repair it (or restore the store from a copy)",
        exit_code=1,
    )


def missing_shards(array: zarr.Array, rows: Rows, columns: slice | None = None) -> list[str]:
    """Keys of the shards of ``array`` that a read of ``rows`` (and ``columns``) needs but that
    do not exist in its store."""
    shape = array.shards or array.chunks
    start, stop = _row_span(rows)
    row_blocks = range(start // shape[0], -(-stop // shape[0]))
    if array.ndim == 1:
        col_blocks: range | list[int] = [0]
    else:
        cols = columns or slice(0, array.shape[1])
        col_blocks = range(cols.start // shape[1], -(-cols.stop // shape[1]))
    trailing = "/0" * max(array.ndim - 2, 0)
    keys = [
        f"{array.path}/c/{r}" + ("" if array.ndim == 1 else f"/{c}{trailing}")
        for r in row_blocks for c in col_blocks
    ]
    store = array.store
    return [key for key in keys if not _exists(store, key)]


def shard_row_blocks(array: zarr.Array) -> set[int]:
    """Row-blocks of ``array`` (along its first dimension) where a shard is missing: one listing."""
    from zarr.core.sync import sync

    shape = array.shards or array.chunks
    grid = [-(-n // s) for n, s in zip(array.shape, shape)]
    present: set[tuple[int, ...]] = set()

    async def listing() -> None:
        async for key in array.store.list_prefix(f"{array.path}/c/"):
            parts = key[len(array.path) + 3 :].split("/")
            if len(parts) == array.ndim and all(p.isdigit() for p in parts):
                present.add(tuple(int(p) for p in parts))

    sync(listing())
    expected = np.prod(grid[1:], dtype=np.int64)
    counts: dict[int, int] = {}
    for key in present:
        counts[key[0]] = counts.get(key[0], 0) + 1
    return {block for block in range(grid[0]) if counts.get(block, 0) < expected}


class CheckedArray:
    """A zarr array that :func:`dask.array.from_array` reads through the checked path.

    ``missing`` are the row-blocks with a missing shard (:func:`shard_row_blocks`), ``labels``
    the model labels used in the error.
    """

    def __init__(self, array: zarr.Array, missing: set[int], labels: np.ndarray | None = None) -> None:
        self.array, self.missing, self.labels = array, frozenset(missing), labels
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.rows_per_block = (array.shards or array.chunks)[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        rows = slice(*key[0].indices(self.shape[0])) if isinstance(key[0], slice) else None
        if rows is not None and self.missing and rows.stop > rows.start:
            blocks = range(rows.start // self.rows_per_block, -(-rows.stop // self.rows_per_block))
            lost = [b for b in blocks if b in self.missing]
            if lost:
                start = max(rows.start, lost[0] * self.rows_per_block)
                stop = min(rows.stop, (lost[-1] + 1) * self.rows_per_block)
                raise damaged(self.array.basename, slice(start, stop), "shard missing", self.labels)
        try:
            return self.array[key]
        except ValueError as exc:
            if "checksum" not in str(exc):
                raise
            where = rows if rows is not None else slice(0, self.shape[0])
            raise damaged(self.array.basename, where, "a chunk fails its CRC32C checksum", self.labels) from None


def _exists(store: Any, key: str) -> bool:
    from zarr.core.sync import sync

    return bool(sync(store.exists(key)))


def read_rows(array: zarr.Array, rows: Rows, columns: slice | None = None,
              labels: np.ndarray | None = None) -> np.ndarray:
    """``array[rows, columns]`` (rows: a slice or sorted positions), checked.

    Raises
    ------
    DmstoreError
        When a shard the read needs is missing or a chunk fails its checksum (exit code 1).
    """
    name = array.basename
    missing = missing_shards(array, rows, columns)
    if missing:
        raise damaged(name, rows, f"{len(missing)} shard(s) missing, e.g. {missing[0]}", labels)
    cols = columns if columns is not None else slice(None)
    try:
        if isinstance(rows, slice):
            return array[(rows, cols) if array.ndim > 1 else rows]
        selection = (np.asarray(rows), cols) if array.ndim > 1 else (np.asarray(rows),)
        return array.get_orthogonal_selection(selection)
    except ValueError as exc:
        if "checksum" not in str(exc):
            raise
        raise damaged(name, rows, "a chunk fails its CRC32C checksum", labels) from None
    except RuntimeError as exc:  # Blosc cannot decode a damaged chunk
        raise damaged(name, rows, f"a chunk cannot be decoded: {exc}", labels) from None
