"""The regression's sufficient statistics, persisted in the store: ``moments/{rows}``.

For masks ``X`` (models x train examples, 0/1) and margins ``Y`` (models x targets), every
quantity the LASSO needs follows from ``n``, the counts ``X^T X``, ``X^T Y``, the column sums
of ``X`` (which are also the diagonal of ``X^T X``) and the column sums of ``Y`` and ``Y**2``.
They add up over model rows, so one streaming pass computes them (:mod:`dmstore.fitting.passes`)
and every later fit (other lambdas, other solver options, other targets of the same split)
reads them instead of the masks.

One group per set of model rows (``fit``: the rows the path is fitted on; ``val``: the
validation rows):

=====================  =====================  ===========  ===========================================
array                  dims                   dtype        what
=====================  =====================  ===========  ===========================================
``xtx``                (train, train_)        float32      co-occurrence counts, exact up to 2^24 rows;
                                                           tiles of ``tile x tile``, one row per chunk
``xsum``               (train)                float64      models that include each train example
``xty_{split}``        (train, {split})       float64      ``X^T Y``, chunks of ``XTY_BLOCK`` targets
``ysum_{split}``,      ({split})              float64      sum and sum of squares of each target
``yy_{split}``
=====================  =====================  ===========  ===========================================

Attributes: ``n`` (rows), ``rows`` (a SHA-256 of the row positions: statistics are only used for
exactly the rows they cover), ``tile``, ``panels`` (tile rows of ``xtx`` written so far, in
order: the pass resumes after the last), ``complete`` and ``xty_{split}`` (the target blocks
written). Every chunk carries a CRC32C.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from dmstore.dataset import as_store
from dmstore.errors import DmstoreError
from dmstore.fitting import tiles

GROUP = "moments"
#: Targets per chunk of ``xty_{split}`` (the unit in which target statistics are added).
XTY_BLOCK = 256


def rows_digest(positions: np.ndarray) -> str:
    """The fingerprint of a set of model rows (their positions)."""
    return hashlib.sha256(np.asarray(positions, dtype="<i8").tobytes()).hexdigest()


@dataclass
class Statistics:
    """Statistics of one set of rows for a block of targets, with the counts read on demand.

    Attributes
    ----------
    n
        Rows.
    xsum
        ``[N]`` float64 column sums of the masks (= the diagonal of ``X^T X``).
    xty
        ``[N, B]`` float64 ``X^T Y`` of the block's targets.
    ysum, yy
        ``[B]`` float64 sums and sums of squares of the targets.
    counts
        Rows of ``X^T X`` by position: ``counts(rows) -> [len(rows), N]`` float32.
    """

    n: int
    xsum: np.ndarray
    xty: np.ndarray
    ysum: np.ndarray
    yy: np.ndarray
    counts: Any

    def __add__(self, other: Statistics) -> Statistics:
        first, second = self.counts, other.counts
        return Statistics(
            self.n + other.n, self.xsum + other.xsum, self.xty + other.xty, self.ysum + other.ysum,
            self.yy + other.yy, lambda rows: first(rows) + second(rows),
        )

    @property
    def n_train(self) -> int:
        return self.xsum.shape[0]


def in_memory(masks: np.ndarray, margins: np.ndarray) -> Statistics:
    """The :class:`Statistics` of masks and margins held in memory (small problems and tests)."""
    x = np.asarray(masks, dtype=np.float64)
    y = np.asarray(margins, dtype=np.float64)
    xtx = (x.T @ x).astype(np.float32)
    return Statistics(x.shape[0], x.sum(axis=0), x.T @ y, y.sum(axis=0), (y * y).sum(axis=0),
                      lambda rows: xtx[np.asarray(rows, dtype=np.int64)])


class Moments:
    """The persisted statistics of one set of rows, ``moments/{name}`` in the store at ``url``."""

    def __init__(self, url: str, name: str, storage_options: dict | None = None) -> None:
        self.url, self.name, self.storage_options = url, name, storage_options
        self.path = f"{GROUP}/{name}"

    def _root(self, mode: str = "r") -> zarr.Group:
        store = as_store(self.url, self.storage_options, read_only=mode == "r")
        return zarr.open_group(store, mode=mode, use_consolidated=False)

    def group(self, mode: str = "r") -> zarr.Group | None:
        """The group (``mode="a"``: writable), or None where there is none."""
        try:
            node = self._root(mode)[self.path]
        except (KeyError, FileNotFoundError, zarr.errors.GroupNotFoundError):
            return None
        return node if isinstance(node, zarr.Group) else None

    def matches(self, digest: str) -> bool:
        """Whether the group holds (complete or partial) statistics of the rows ``digest``."""
        group = self.group()
        return group is not None and group.attrs.get("rows") == digest

    def is_complete(self, digest: str) -> bool:
        group = self.group()
        return group is not None and group.attrs.get("rows") == digest and bool(group.attrs.get("complete"))

    def delete(self) -> None:
        """Forget these statistics (the next pass computes them afresh)."""
        root = self._root("a")
        if GROUP in root and self.name in root[GROUP]:
            del root[GROUP][self.name]

    def start(self, n: int, n_train: int, digest: str, tile: int) -> zarr.Group:
        """Create the group afresh for ``n`` rows (fingerprint ``digest``), replacing any other."""
        root = self._root("a")
        group = root.require_group(GROUP).create_group(self.name, overwrite=True)
        tiles.create(group, "xtx", n_train, tile, ("train", "train_"))
        group.attrs.update(n=int(n), rows=digest, tile=int(tile), panels=0, complete=False)
        return group

    def tile_file(self) -> tiles.TileFile:
        group = self.group()
        if group is None:
            raise DmstoreError(f"the store has no {self.path}: run `dmstore fit` to compute it")
        return tiles.TileFile.of(group["xtx"], self.url, self.storage_options)

    def target_blocks(self, split: str) -> set[int]:
        """Blocks of ``XTY_BLOCK`` targets of ``split`` whose statistics are written."""
        group = self.group()
        return set() if group is None else set(group.attrs.get(f"xty_{split}", []))

    def write_targets(self, split: str, n_targets: int, block: int, xty: np.ndarray, ysum: np.ndarray,
                      yy: np.ndarray) -> None:
        """Write the statistics of target block ``block`` of ``split`` (then record it)."""
        group = self._root("a")[self.path]
        n_train = group["xtx"].shape[0]
        names = (f"xty_{split}", f"ysum_{split}", f"yy_{split}")
        if names[0] not in group:
            group.create_array(names[0], shape=(n_train, n_targets), dtype="float64",
                               chunks=(n_train, XTY_BLOCK), fill_value=np.nan,
                               dimension_names=("train", split))
            for name in names[1:]:
                group.create_array(name, shape=(n_targets,), dtype="float64", chunks=(n_targets,),
                                   fill_value=np.nan, dimension_names=(split,))
        cols = slice(block * XTY_BLOCK, min((block + 1) * XTY_BLOCK, n_targets))
        group[names[0]][:, cols] = xty
        group[names[1]][cols] = ysum
        group[names[2]][cols] = yy
        done = sorted(self.target_blocks(split) | {block})
        group.attrs[f"xty_{split}"] = done

    def target_sums(self, split: str, columns: slice) -> tuple[int, np.ndarray, np.ndarray]:
        """``n`` and the sums and sums of squares of target columns ``columns`` of ``split``."""
        group = self.group()
        if group is None:
            raise DmstoreError(f"the store has no {self.path}: run `dmstore fit` to compute it")
        return int(group.attrs["n"]), group[f"ysum_{split}"][columns], group[f"yy_{split}"][columns]

    def statistics(self, split: str, columns: slice) -> Statistics:
        """The :class:`Statistics` of target columns ``columns`` of ``split``."""
        group = self.group()
        if group is None or not group.attrs.get("complete"):
            raise DmstoreError(f"the store's {self.path} is incomplete: run `dmstore fit` to finish it")
        blocks = range(columns.start // XTY_BLOCK, -(-columns.stop // XTY_BLOCK))
        missing = set(blocks) - self.target_blocks(split)
        if missing:
            raise DmstoreError(f"the store's {self.path} lacks {split} target blocks {sorted(missing)}")
        tile_file = self.tile_file()
        return Statistics(
            int(group.attrs["n"]), group["xsum"][:], group[f"xty_{split}"][:, columns],
            group[f"ysum_{split}"][columns], group[f"yy_{split}"][columns], tile_file.rows,
        )
