"""The regression's sufficient statistics, persisted in the store: ``moments/{rows}``.

For masks ``X`` (models x train examples, 0/1) and margins ``Y`` (models x targets), every
quantity the LASSO needs follows from ``n``, the counts ``X^T X``, ``X^T Y``, the column sums
of ``X`` (which are also the diagonal of ``X^T X``) and the column sums of ``Y`` and ``Y**2``.
They add up over model rows, so one streaming pass computes them (:mod:`dmstore.fitting.passes`)
and every later fit (other lambdas, other solver options, other targets of the same split)
reads them instead of the masks.

One group per set of model rows: ``fit`` (the rows the path is fitted on) keeps the counts;
``val`` (the validation rows, a tenth as many) keeps its rows' masks instead (``masks``,
(model, train) bool, 8x compressed: 12 MB for 2,000 models at N = 50,000, against 10 GB of
counts), from which the solver computes the few counts it needs:

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
written). Every chunk carries a CRC32C. ``positions`` holds the row positions. Attributes that
change together are written together, with ``update_attributes`` (one write of ``zarr.json``;
``attrs.update`` writes once per key, and a crash between two would leave a record no run made).

Rows added later (an experiment store that grew) are added, not recomputed
(:func:`dmstore.fitting.passes.grow_pass`): their counts go into the tiles in place, and their
other statistics into a *part*, ``parts/{k}``, a group of the same form (``positions``, ``xsum``,
``xty_{split}`` of the target blocks the group had then...) listed in the attribute ``parts``.
Readers add the parts to the base arrays; a target block written after a part was made covers all
rows already, and that part does not hold it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from dmstore.errors import DmstoreError
from dmstore.fitting import tiles
from dmstore.io.dataset import open_group
from dmstore.io.reads import CheckedArray, damaged_row_blocks

GROUP = "moments"
#: Targets per chunk of ``xty_{split}`` (the unit in which target statistics are added).
XTY_BLOCK = 256
#: ``xty_{split}``'s codec: one block of 256 CIFAR-10-width targets writes in 0.16 s and reads in
#: 0.14 s at 1.66x, against zarr's default zstd's 0.58 s, 0.45 s and 1.36x.
XTY_CODEC = BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle", typesize=8)
#: Mask columns converted to float32 at once when counts are computed from kept masks.
MASK_COLUMNS = 4096
#: Rows of counts centred at once from ``counts`` (bounds a ``[rows, N]`` float64 product).
COUNT_ROWS = 1024


#: Factors of the rows and of the columns of a block of counts (:meth:`Statistics.centred_counts`).
Scale = tuple[np.ndarray, np.ndarray]


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
    cross
        ``cross(a, b) -> [len(a), len(b)]``: a block of ``X^T X`` (default: from ``counts``).
    centred
        ``centred(rows, out, scale)`` writes :meth:`centred_counts` into ``out`` float32 (default:
        from ``counts``).
    masks_t
        ``[N, n]`` bool: the rows' masks, transposed, where the statistics keep them (validation rows).
    """

    n: int
    xsum: np.ndarray
    xty: np.ndarray
    ysum: np.ndarray
    yy: np.ndarray
    counts: Callable[[np.ndarray], np.ndarray]
    cross: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    centred: Callable[[np.ndarray, np.ndarray, Scale | None], None] | None = None
    masks_t: np.ndarray | None = None

    def targets(self, columns: slice) -> Statistics:
        """The statistics of some of the targets (the counts are shared)."""
        return Statistics(self.n, self.xsum, self.xty[:, columns], self.ysum[columns], self.yy[columns],
                          self.counts, self.cross, self.centred, self.masks_t)

    def centred_counts(self, rows: np.ndarray, out: np.ndarray, scale: Scale | None = None) -> None:
        """Write ``(X^T X)[rows] - xsum[rows] xsum / n`` (``n`` times the covariance of the masks:
        the counts less those of independent features) into ``out`` ``[len(rows), N]``, in its
        dtype, then multiply each row and column by its factor in ``scale`` (``[len(rows)]`` and
        ``[N]``, in ``out``'s dtype) if given. The counts are exact; the subtraction is done
        once, without dividing first (no cancellation of two numbers near ``mean^2``)."""
        if self.centred is not None and out.dtype == np.float32:
            self.centred(rows, out, scale)
            return
        for start in range(0, len(rows), COUNT_ROWS):  # bounds the float64 product
            part, block = rows[start : start + COUNT_ROWS], out[start : start + COUNT_ROWS]
            block[...] = self.counts(part)
            block -= np.multiply.outer(self.xsum[part], self.xsum / self.n).astype(out.dtype, copy=False)
            if scale is not None:
                block *= scale[0][start : start + COUNT_ROWS, None]
                block *= scale[1][None, :]

    def block(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``(X^T X)[a][:, b]``."""
        return self.cross(a, b) if self.cross is not None else self.counts(a)[:, b]

    def __add__(self, other: Statistics) -> Statistics:
        return Statistics(
            self.n + other.n,
            self.xsum + other.xsum,
            self.xty + other.xty,
            self.ysum + other.ysum,
            self.yy + other.yy,
            lambda rows: self.counts(rows) + other.counts(rows),
            lambda a, b: self.block(a, b) + other.block(a, b),
        )

    @property
    def n_train(self) -> int:
        return self.xsum.shape[0]


def in_memory(masks: np.ndarray, margins: np.ndarray) -> Statistics:
    """The :class:`Statistics` of masks and margins held in memory (small problems and tests)."""
    x = np.asarray(masks, dtype=np.float64)
    y = np.asarray(margins, dtype=np.float64)
    xtx = (x.T @ x).astype(np.float32)
    return Statistics(
        x.shape[0],
        x.sum(axis=0),
        x.T @ y,
        y.sum(axis=0),
        (y * y).sum(axis=0),
        lambda rows: xtx[np.asarray(rows, dtype=np.int64)],
        masks_t=np.ascontiguousarray(np.asarray(masks, dtype=bool).T),
    )


def of_masks(masks: np.ndarray, xty: np.ndarray, ysum: np.ndarray, yy: np.ndarray) -> Statistics:
    """:class:`Statistics` whose counts are computed from the masks on demand (a few thousand
    validation rows: cheaper to keep than their ``N x N`` counts)."""
    xt = np.ascontiguousarray(np.asarray(masks, dtype=bool).T)  # [N, rows]: a feature's column is a row

    def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        left = xt[a].astype(np.float32)
        out = np.empty((len(a), len(b)), dtype=np.float32)
        for start in range(0, len(b), MASK_COLUMNS):  # exact: 0/1 sums below 2^24
            out[:, start : start + MASK_COLUMNS] = left @ xt[b[start : start + MASK_COLUMNS]].astype(np.float32).T
        return out

    def counts(rows: np.ndarray) -> np.ndarray:
        return cross(np.asarray(rows), np.arange(xt.shape[0]))

    return Statistics(xt.shape[1], xt.sum(axis=1, dtype=np.float64), xty, ysum, yy, counts, cross, masks_t=xt)


def independent_counts(xsum_a: np.ndarray, xsum_b: np.ndarray, n: int) -> np.ndarray:
    """``xsum_a xsum_b / n`` in float32 ``[len(a), len(b)]``: the counts features ``a`` and ``b``
    would have if they were independent (:class:`DeltaGram`'s expectation is its ``rint``)."""
    return np.multiply(xsum_a.astype(np.float32)[:, None], (xsum_b / n).astype(np.float32)[None, :])


class DeltaGram:
    """The counts ``X^T X`` of one set of rows held in memory as int16 differences ``delta`` from
    their expectation ``E = rint(xsum_i xsum_j / n)`` (:func:`independent_counts`, float32):
    exact, and half the bytes of float32 (5 GB at CIFAR-10's N = 50,000). For random subsets the
    differences are of order ``sqrt(n) / 4`` (about 35 at 18,000 models, 135 at 290,000); the
    diagonal's are ``xsum (1 - xsum / n)``; :meth:`load` refuses where one does not fit."""

    #: Rows centred at once by :meth:`centred` (a few MB: the steps stay in the CPU's cache).
    CHUNK = 8
    #: The side of the squares :meth:`place` converts and transposes at once.
    SQUARE = 512

    def __init__(self, delta: np.ndarray, xsum: np.ndarray, n: int) -> None:
        self.delta, self.xsum, self.n = delta, xsum, n
        self._xsum32, self._share32 = xsum.astype(np.float32), (xsum / n).astype(np.float32)


    @classmethod
    def empty(cls, xsum: np.ndarray, n: int) -> DeltaGram:
        """Room for the counts of ``n`` rows with column sums ``xsum``, filled by :meth:`place`
        (pages untouched until then)."""
        return cls(np.empty((xsum.size, xsum.size), dtype=np.int16), xsum, n)

    def place(self, rows: slice, cols: slice, counts: np.ndarray) -> bool:
        """Put the counts of the block ``rows x cols`` (on or above the diagonal) and its
        transpose, in squares of :attr:`SQUARE` (they stay in the CPU's cache: 3x faster than
        whole tiles); False where a difference does not fit in int16."""
        step, limit = self.SQUARE, np.iinfo(np.int16).max
        for a in range(0, counts.shape[0], step):
            part = slice(rows.start + a, min(rows.start + a + step, rows.stop))
            diff = np.rint(independent_counts(self.xsum[part], self.xsum[cols], self.n))
            np.subtract(counts[a : a + step], diff, out=diff, dtype=np.float32)  # int32 or float32 counts
            if diff.min() < -limit or diff.max() > limit:
                return False
            self.delta[part, cols] = diff
        for a in range(rows.start, rows.stop, step):
            for b in range(cols.start, cols.stop, step):
                part, other = slice(a, min(a + step, rows.stop)), slice(b, min(b + step, cols.stop))
                self.delta[other, part] = self.delta[part, other].T
        return True

    @classmethod
    def load(cls, tile_file: tiles.TileFile, xsum: np.ndarray, n: int) -> DeltaGram | None:
        """Read each tile on or above the diagonal once (threads decode them); None where a
        difference does not fit in int16."""
        gram, size, tile = cls.empty(xsum, n), tile_file.size, tile_file.tile
        pairs = [(i, j) for i in range(tile_file.n_tiles) for j in range(i, tile_file.n_tiles)]

        def place(pair: tuple[int, int]) -> bool:
            i, j = pair
            rows = slice(i * tile, min((i + 1) * tile, size))
            return gram.place(rows, slice(j * tile, min((j + 1) * tile, size)), tile_file.read_tile(i, j))

        with ThreadPoolExecutor(tiles.READ_THREADS) as pool:
            return gram if all(pool.map(place, pairs)) else None

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """The counts of ``rows`` ``[len(rows), N]`` float32 (exact)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.rint(independent_counts(self.xsum[rows], self.xsum, self.n))
        out += self.delta[rows]
        return out

    def centred(self, rows: np.ndarray, out: np.ndarray, scale: Scale | None = None) -> None:
        """:meth:`Statistics.centred_counts` of ``rows`` into ``out`` float32, fused and in
        :attr:`CHUNK`-row steps (scaled while a step is in the CPU's cache): with ``x`` the
        independent counts, ``C - x = delta - (x - rint(x))``, whose inner difference is exact in
        float32."""
        rows = np.asarray(rows, dtype=np.int64)

        def centre(start: int) -> None:
            part, block = rows[start : start + self.CHUNK], out[start : start + self.CHUNK]
            np.multiply(self._xsum32[part][:, None], self._share32[None, :], out=block)
            block -= np.rint(block)
            np.subtract(self.delta[part], block, out=block)
            if scale is not None:
                block *= scale[0][start : start + self.CHUNK, None]
                block *= scale[1][None, :]

        starts = range(0, rows.size, self.CHUNK)
        threads = getattr(_GATHER, "threads", None) or os.cpu_count() or 1
        if len(starts) < 4 or threads == 1:
            for start in starts:
                centre(start)
            return
        with ThreadPoolExecutor(threads) as pool:  # numpy's loops release the GIL
            list(pool.map(centre, starts))


#: The threads :meth:`DeltaGram.centred` may use, per calling thread (:func:`gather_threads`).
_GATHER = threading.local()


@contextmanager
def gather_threads(count: int) -> Iterator[None]:
    """Let :meth:`DeltaGram.centred` use at most ``count`` threads within this block, on this
    thread: solvers that already run one per core gather on their own thread (a pool of its own
    in each, four threads on two cores, made the path of 200 CIFAR-10-width targets 1.06-1.10x
    slower, measured together with the KKT product's order)."""
    previous = getattr(_GATHER, "threads", None)
    _GATHER.threads = count
    try:
        yield
    finally:
        _GATHER.threads = previous


class Moments:
    """The persisted statistics of one set of rows, ``moments/{name}`` in the store at ``url``."""

    def __init__(self, url: str, name: str, storage_options: dict | None = None) -> None:
        self.url, self.name, self.storage_options = url, name, storage_options
        self.path = f"{GROUP}/{name}"

    def _root(self, mode: str = "r") -> zarr.Group:
        return open_group(self.url, self.storage_options, mode=mode, consolidated=False)

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

    def start(self, positions: np.ndarray, n_train: int, tile: int, gram: bool = True) -> zarr.Group:
        """Create the group afresh for the rows ``positions``, replacing any other; with ``gram``
        its tiled counts, else room for the rows' masks."""
        parent = self._root("a").require_group(GROUP)
        *folders, name = self.name.split("/")
        for folder in folders:
            parent = parent.require_group(folder)
        group = parent.create_group(name, overwrite=True)
        if gram:
            tiles.create(group, "xtx", n_train, tile, ("train", "train_"))
        group.create_array("positions", data=np.asarray(positions, dtype=np.int64), dimension_names=("row",))
        digest = rows_digest(positions)
        group.update_attributes(
            {"n": int(len(positions)), "rows": digest, "tile": int(tile), "panels": 0, "complete": False}
        )
        return group

    def positions(self) -> np.ndarray | None:
        """The row positions the complete statistics cover (base and parts), or None."""
        group = self.group()
        if group is None or not group.attrs.get("complete") or "positions" not in group:
            return None
        parts = [group["positions"][:], *(part["positions"][:] for part in self.parts(group))]
        return np.sort(np.concatenate(parts))

    def parts(self, group: zarr.Group) -> list[Any]:
        """The recorded parts (groups of the rows added after the base pass)."""
        attrs: dict[str, Any] = group.attrs.asdict()
        return [group[f"parts/{k}"] for k in attrs.get("parts", [])]

    def xsum(self, group: zarr.Group) -> np.ndarray:
        """Column sums of the masks over all rows (base and parts)."""
        total: np.ndarray = group["xsum"][:]
        for part in self.parts(group):
            total = total + part["xsum"][:]
        return total

    def _targets(self, group: Any, split: str, columns: slice) -> tuple[np.ndarray, ...]:
        """``X^T Y``, sums and sums of squares of target ``columns``, base plus the parts that hold
        each target block."""
        out = [group[f"xty_{split}"][:, columns], group[f"ysum_{split}"][columns], group[f"yy_{split}"][columns]]
        for part in self.parts(group):
            held = set(part.attrs.get(f"xty_{split}", []))
            for block in range(columns.start // XTY_BLOCK, -(-columns.stop // XTY_BLOCK)):
                if block not in held:
                    continue
                cols = slice(max(columns.start, block * XTY_BLOCK), min(columns.stop, (block + 1) * XTY_BLOCK))
                local = slice(cols.start - columns.start, cols.stop - columns.start)
                out[0][:, local] += part[f"xty_{split}"][:, cols]
                out[1][local] += part[f"ysum_{split}"][cols]
                out[2][local] += part[f"yy_{split}"][cols]
        return tuple(out)

    def tile_file(self) -> tiles.TileFile:
        group = self.group()
        if group is None:
            raise DmstoreError(f"the store has no {self.path}: run `dmstore fit` to compute it")
        return tiles.TileFile.of(group["xtx"], self.url, self.storage_options)

    def target_blocks(self, split: str) -> set[int]:
        """Blocks of ``XTY_BLOCK`` targets of ``split`` whose statistics are written."""
        group = self.group()
        return set() if group is None else set(group.attrs.get(f"xty_{split}", []))

    def write_targets(
        self, split: str, n_targets: int, blocks: list[int], xty: np.ndarray, ysum: np.ndarray, yy: np.ndarray
    ) -> None:
        """Write the statistics of the target blocks ``blocks`` of ``split`` (then record them):
        their columns of ``xty`` ``[N, width]``, ``ysum`` and ``yy``, whose first column is the
        first target of ``blocks[0]`` (in one opening of the group, one record for all)."""
        group = self._root("a")[self.path]
        n_train = xty.shape[0]
        names = (f"xty_{split}", f"ysum_{split}", f"yy_{split}")
        if names[0] not in group:
            group.create_array(
                names[0],
                shape=(n_train, n_targets),
                dtype="float64",
                chunks=(n_train, XTY_BLOCK),
                compressors=[XTY_CODEC],
                fill_value=np.nan,
                dimension_names=("train", split),
            )
            for name in names[1:]:
                group.create_array(
                    name,
                    shape=(n_targets,),
                    dtype="float64",
                    chunks=(n_targets,),
                    fill_value=np.nan,
                    dimension_names=(split,),
                )
        arrays = [group[name] for name in names]
        first = blocks[0] * XTY_BLOCK
        for block in blocks:
            cols = slice(block * XTY_BLOCK, min((block + 1) * XTY_BLOCK, n_targets))
            local = slice(cols.start - first, cols.stop - first)
            arrays[0][:, cols] = xty[:, local]
            arrays[1][cols] = ysum[local]
            arrays[2][cols] = yy[local]
        recorded: Any = group.attrs.get(names[0], [])
        group.attrs[names[0]] = sorted(set(recorded) | set(blocks))

    def target_sums(self, split: str, columns: slice) -> tuple[int, np.ndarray, np.ndarray]:
        """``n`` and the sums and sums of squares of target columns ``columns`` of ``split``."""
        group = self.group()
        if group is None:
            raise DmstoreError(f"the store has no {self.path}: run `dmstore fit` to compute it")
        _, ysum, yy = self._targets(group, split, columns)
        return int(group.attrs["n"]), ysum, yy

    def statistics(self, split: str, columns: slice, in_memory: bool = False) -> Statistics:
        """The :class:`Statistics` of target columns ``columns`` of ``split``: counts from the kept
        masks (validation rows), else from the tiles, read into memory once per process with
        ``in_memory`` (:class:`DeltaGram`) or row by row from the store."""
        group = self.group()
        if group is None or not group.attrs.get("complete"):
            raise DmstoreError(f"the store's {self.path} is incomplete: run `dmstore fit` to finish it")
        blocks = range(columns.start // XTY_BLOCK, -(-columns.stop // XTY_BLOCK))
        missing = set(blocks) - self.target_blocks(split)
        if missing:
            raise DmstoreError(f"the store's {self.path} lacks {split} target blocks {sorted(missing)}")
        targets = self._targets(group, split, columns)
        if "masks" in group:  # through the checked path: a lost chunk is an error, not False masks
            masks = group["masks"]
            checked = CheckedArray(masks, damaged_row_blocks(masks, [[0, masks.shape[0]]]))
            return of_masks(checked.read(slice(0, masks.shape[0])), *targets)
        n, xsum = int(group.attrs["n"]), self.xsum(group)
        xty, ysum, yy = targets
        if in_memory:
            gram = _delta_gram(self.url, self.path, group.attrs["rows"], _frozen(self.storage_options))
            if gram is not None:
                return Statistics(n, xsum, xty, ysum, yy, gram.rows, centred=gram.centred)
        return Statistics(n, xsum, xty, ysum, yy, self.tile_file().rows)


def _frozen(options: dict | None) -> str:
    return json.dumps(options or {}, sort_keys=True, default=str)


#: The counts this process holds in memory: one set, by store, group, rows digest and options.
_HELD: dict[tuple[str, str, str, str], DeltaGram | None] = {}
_HOLDING = threading.Lock()


def _delta_gram(url: str, path: str, digest: str, options: str) -> DeltaGram | None:
    """The counts of ``path`` in memory, loaded once per process (Dask workers included) unless
    held already (:func:`hold_counts`)."""
    key = (url, path, digest, options)
    with _HOLDING:  # threads of one process load them once
        if key not in _HELD:
            _HELD.clear()  # one set at a time: the last one's memory goes first
            moments = Moments(url, path.removeprefix(f"{GROUP}/"), json.loads(options) or None)
            group = moments.group()
            assert group is not None and group.attrs["rows"] == digest
            _HELD[key] = DeltaGram.load(moments.tile_file(), moments.xsum(group), int(group.attrs["n"]))
        return _HELD[key]


def hold_counts(moments: Moments, gram: DeltaGram) -> None:
    """Hold ``gram``, the counts just computed for ``moments``' complete statistics, in this
    process: the solver then reads no tile back."""
    group = moments.group()
    assert group is not None and group.attrs.get("complete")
    with _HOLDING:
        _HELD.clear()
        _HELD[(moments.url, moments.path, group.attrs["rows"], _frozen(moments.storage_options))] = gram


def release_counts() -> None:
    """Free the counts held in memory (at the end of a fit)."""
    with _HOLDING:
        _HELD.clear()
