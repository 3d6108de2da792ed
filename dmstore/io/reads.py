"""The checked read path: every reader of a store's data arrays goes through it.

Zarr returns the fill value for a shard that does not exist, so a store that lost a shard (an
interrupted copy, a lifecycle rule, a disk error) would silently read as zeros. Here a read
first checks that every shard it touches exists, and turns a checksum failure (every inner
chunk carries a CRC32C) into the same one-line :class:`~dmstore.errors.DmstoreError`, naming the
array and the model rows and saying how to repair. Two doors, one rule:

- :meth:`CheckedArray.read`: a band of rows (the fit's passes);
- :class:`CheckedArray` under each data variable's Dask array in :func:`dmstore.open`
  (evaluate, stats, the accessor, export, any user query, Dask tasks on workers).

The damaged row-blocks are found once, when the store is opened: one listing of each array's
shards, and the band records of the conversion (root attribute ``dmstore_bands``). Where a store
records its bands, readers trust nothing else: rows outside the recorded bands are refused too.
A store written by other tools (no records) keeps Zarr's meaning of an absent chunk (the fill
value), and its checksums, where it has them, are still checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import zarr

from dmstore.errors import DmstoreError
from dmstore.io.segments import Snapshot

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


def damaged_row_blocks(array: zarr.Array, bands: list | None, first: int = 0) -> set[int]:
    """Row-blocks of ``array`` that must not be read: a shard missing, or rows outside the
    recorded ``bands`` (``[start, stop, ...]`` in source rows; store row = source row - ``first``).
    None for ``bands``: the array has no records, nothing is refused."""
    if bands is None:
        return set()
    rows = (array.shards or array.chunks)[0]
    covered = np.zeros(array.shape[0], dtype=bool)
    for band in bands:
        covered[band[0] - first : band[1] - first] = True
    unrecorded = {int(i) // rows for i in np.flatnonzero(~covered)}
    return shard_row_blocks(array) | unrecorded


def checked_arrays(
    root: zarr.Group, attrs: dict, labels: np.ndarray | None = None, snapshot: Snapshot | None = None
) -> dict[str, CheckedArray]:
    """A :class:`CheckedArray` for each per-model data array of the store's root group.

    For an experiment store (:mod:`dmstore.experiment`) ``snapshot`` says which row-blocks are
    compacted (read from the arrays, checked) and which are still segments (read from those)."""
    records = attrs.get("dmstore_bands")
    first = attrs.get("dmstore_plan", {}).get("rows", [0])[0]
    extras = set(attrs.get("dmstore_experiment", {}).get("extras", {}))
    out = {}
    for name, array in root.arrays():
        dims = array.metadata.dimension_names or ()
        if not (dims and dims[0] == "model" and (array.ndim >= 2 or name in extras)):
            continue
        if snapshot is not None:
            rows = (array.shards or array.chunks)[0]
            compacted = snapshot.compacted(name, array.shape[0])
            lost = {b for b in shard_row_blocks(array) if compacted[b * rows : (b + 1) * rows].all()}
            out[name] = CheckedArray(array, lost, labels, snapshot)
        else:
            bands = None if records is None else records.get(name, [])
            out[name] = CheckedArray(array, damaged_row_blocks(array, bands, first), labels)
    return out


class CheckedArray:
    """A zarr array read through the checked path (also by :func:`dask.array.from_array`).

    ``missing`` are the row-blocks not to be read (:func:`damaged_row_blocks`), ``labels`` the
    model labels used in the error. Rows of an experiment store not yet compacted are read from
    the segments of its ``snapshot``.
    """

    def __init__(
        self,
        array: zarr.Array,
        missing: set[int],
        labels: np.ndarray | None = None,
        snapshot: Snapshot | None = None,
    ) -> None:
        self.array, self.missing, self.labels, self.snapshot = array, frozenset(missing), labels, snapshot
        self.compacted = None if snapshot is None else snapshot.compacted(array.basename, array.shape[0])
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.rows_per_block = (array.shards or array.chunks)[0]

    def read(self, rows: Rows, columns: slice | None = None) -> np.ndarray:
        """``array[rows, columns]`` for a slice or sorted positions of rows."""
        rest = () if columns is None else (columns,)  # 1-D arrays (extras) have no columns
        if isinstance(rows, slice):
            return self[(rows, *rest)]
        return self._rows(np.asarray(rows), rest)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        rows = slice(*key[0].indices(self.shape[0])) if isinstance(key[0], slice) else slice(0, self.shape[0])
        if self.compacted is not None and isinstance(key[0], slice):
            return self._rows(np.arange(rows.start, rows.stop, rows.step), key[1:])
        self._refuse_lost(rows.start, rows.stop)
        with self._decode_errors(rows):
            return self.array[key]

    def _rows(self, positions: np.ndarray, rest: tuple) -> np.ndarray:
        """Rows at sorted ``positions``: compacted ones from the array, pending ones from segments."""
        from_segments = np.zeros(len(positions), bool) if self.compacted is None else ~self.compacted[positions]
        stored = positions[~from_segments]
        parts = {}
        if stored.size or not positions.size:
            if stored.size:
                self._refuse_lost(*_row_span(stored))
            with self._decode_errors(stored):
                parts[False] = self.array.get_orthogonal_selection((stored, *rest))
        if from_segments.any():
            assert self.snapshot is not None
            rows = self.snapshot.rows(self.array.basename, positions[from_segments], self.shape[1:], self.dtype)
            parts[True] = rows[(slice(None), *rest)]
        if len(parts) == 1:
            return next(iter(parts.values()))
        out = np.empty((len(positions), *parts[True].shape[1:]), dtype=self.dtype)
        out[from_segments], out[~from_segments] = parts[True], parts[False]
        return out

    def _refuse_lost(self, start: int, stop: int) -> None:
        """Raise where rows ``start:stop`` touch a row-block that must not be read."""
        if not self.missing or stop <= start:
            return
        blocks = range(start // self.rows_per_block, -(-stop // self.rows_per_block))
        lost = [b for b in blocks if b in self.missing]
        if lost:
            first = max(start, lost[0] * self.rows_per_block)
            last = min(stop, (lost[-1] + 1) * self.rows_per_block)
            raise damaged(self.array.basename, slice(first, last), "shard missing", self.labels)

    @contextmanager
    def _decode_errors(self, rows: Rows) -> Iterator[None]:
        """Turn a failed checksum or an undecodable chunk of ``rows`` into the one-line error."""
        try:
            yield
        except RuntimeError as exc:  # Blosc cannot decode a damaged chunk
            raise damaged(self.array.basename, rows, f"a chunk cannot be decoded: {exc}", self.labels) from None
        except ValueError as exc:
            if "checksum" not in str(exc):
                raise
            raise damaged(self.array.basename, rows, "a chunk fails its CRC32C checksum", self.labels) from None
