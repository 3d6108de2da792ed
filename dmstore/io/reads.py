"""The checked read path: every reader of a store's data arrays goes through :func:`read_rows`.

Zarr returns the fill value for a shard that does not exist, so a store that lost a shard (an
interrupted copy, a lifecycle rule, a disk error) would silently read as zeros. Here a read
first checks that every shard it touches exists, and turns a checksum failure (every inner
chunk carries a CRC32C) into the same one-line :class:`~dmstore.errors.DmstoreError`, naming the
array and the model rows and saying how to repair.
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
