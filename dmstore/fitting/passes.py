"""The passes over the masks that fill ``moments/{rows}`` (see :mod:`dmstore.fitting.moments`).

The counts ``X^T X`` are built one tile row (a *panel* of ``tile`` train examples) at a time:
the products of the masks add ``X[:, panel]^T X[:, panel start:]`` into the panel, so only the
upper triangle is computed (the work of numpy's ``X.T @ X``) and no ``N x N`` array is ever held:
each finished panel is written as whole tiles, each tile also as its transpose below the
diagonal, then recorded; an interrupted pass resumes at the first panel not recorded. The masks of
the rows are kept in memory between panels when the plan allows (one ``rows x N`` bool array),
and read again band by band for each panel otherwise. The target statistics ``X^T Y`` follow in a
second pass over the bands, for the target blocks not yet written. The validation rows keep their
masks instead of counts (:func:`mask_pass`).

The products run on a :class:`~dmstore.fitting.device.Device`. On the CPU they are torch's int8
GEMM with int32 accumulation where it is available (:func:`~dmstore.fitting.device.int8_matmul`:
the bool masks viewed as int8, no conversion; on the kept masks one product per panel column
chunk), and numpy's in-place float32 ``sgemm`` (``beta = 1``) otherwise; both exact up to 2^24
models, the tiles' float32; elsewhere the namespace's ``matmul`` (CuPy on a GPU). The bands enter
through the device's ``put`` and the finished tiles and target statistics leave through its ``get``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.linalg.blas import dgemm, sgemm
from zarr.codecs import BloscCodec

from dmstore.errors import DmstoreError
from dmstore.fitting import tiles
from dmstore.fitting.device import CPU, Device
from dmstore.fitting.moments import XTY_BLOCK, DeltaGram, Moments, hold_counts, rows_digest
from dmstore.fitting.plan import INT8_CHUNK
from dmstore.fitting.reads import BandReader

#: Non-finite margins named in the error.
BAD_REPORTED = 3
#: The store's codec for masks (bitshuffle: 8x on random subsets).
MASK_CODEC = BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle", typesize=1)
#: Columns of a panel one int8 product computes before it is added in (``tile x CHUNK`` int32;
#: the plan counts it).
CHUNK = INT8_CHUNK


@dataclass(frozen=True)
class PassPlan:
    """How a pass uses memory: the tile size, whether the masks stay in memory, target blocks
    per pass over the bands, whether the counts stay in memory for the solver."""

    tile: int
    cache_masks: bool
    target_blocks: int
    hold_counts: bool = False


@dataclass(frozen=True)
class Scratch:
    """Host memory the panel products use again from band to band and panel to panel: fresh
    memory costs a page fault per 4 KiB on its first touch (with transparent huge pages, a
    compaction stall), about 33 GB of it over a CIFAR-10-width pass otherwise."""

    panel: np.ndarray  # 4-byte items, room for a panel of ``tile x N``
    band: np.ndarray  # float32, room for a band of masks and its left part, ``rows x (N + tile)``
    product: np.ndarray  # int32, room for ``tile x CHUNK`` (int8 products)

    @classmethod
    def of(cls, tile: int, n_train: int, band_rows: int) -> Scratch:
        """Room for panels of ``tile`` rows (only what a product touches becomes resident)."""
        band = np.empty(band_rows * (n_train + tile), np.float32)
        return cls(np.empty(tile * n_train, np.float32), band, np.empty(tile * CHUNK, np.int32))


def new_panel(start: int, stop: int, n_train: int, device: Device, scratch: Scratch | None = None) -> Any:
    """A zero panel ``[stop - start, N - start]`` on ``device`` (on the CPU: int32 for int8
    products, float32 in Fortran order for sgemm's ``c``; in ``scratch`` where given)."""
    shape = (stop - start, n_train - start)
    if device.xp is not np:
        return device.xp.zeros(shape, dtype=device.xp.float32, device=device.where)
    int8 = device.mask_matmul() is not None
    dtype = np.dtype(np.int32 if int8 else np.float32)
    order: Literal["C", "F"] = "C" if int8 else "F"
    if scratch is None:
        return np.zeros(shape, dtype=dtype, order=order)
    panel = scratch.panel.view(dtype)[: shape[0] * shape[1]].reshape(shape, order=order)
    panel.fill(0)
    return panel


def panel_product(
    panel: Any, masks: np.ndarray, start: int, stop: int, device: Device = CPU, scratch: Scratch | None = None
) -> None:
    """Add ``X[:, start:stop]^T X[:, start:]`` of a band of masks (host, bool) into ``panel`` (of
    :func:`new_panel`) in place (the products' scratch memory in ``scratch`` where given)."""
    if device.xp is not np:
        right = device.put(masks[:, start:], np.float32)
        panel += right[:, : stop - start].T @ right
        return
    rows, width, height = masks.shape[0], masks.shape[1] - start, stop - start
    matmul = device.mask_matmul()
    if matmul is not None:  # the bool masks as int8, chunk by chunk of columns
        left, right = masks[:, start:stop].view(np.int8).T, masks[:, start:].view(np.int8)
        chunk = min(CHUNK, width)
        room = scratch.product if scratch is not None and scratch.product.size >= height * chunk else None
        product = (np.empty(height * chunk, np.int32) if room is None else room)[: height * chunk]
        for first in range(0, width, chunk):
            last = min(first + chunk, width)
            out = product[: height * (last - first)].reshape(height, last - first)
            matmul(left, right[:, first:last], out)
            panel[:, first:last] += out
        return
    need = rows * (width + height)
    band = scratch.band if scratch is not None and scratch.band.size >= need else np.empty(need, np.float32)
    right = band[: rows * width].reshape(rows, width)  # [rows, N - start], C order
    np.copyto(right, masks[:, start:])
    left = band[rows * width : need].reshape(rows, height)
    np.copyto(left, right[:, :height])
    out = sgemm(1.0, left.T, right.T, beta=1.0, c=panel, trans_b=1, overwrite_c=1)
    if out is not panel:  # scipy copies c it cannot update in place: never silently lose a band
        panel[...] = out


def mask_bands(
    reader: BandReader, positions: np.ndarray, keep: bool, whole: bool = False
) -> Callable[[], Iterator[np.ndarray]]:
    """Iterations over the mask bands of ``positions``: read again each time, or read once into
    one ``rows x N`` array kept in memory (``keep``) and given as bands of the store's shard rows,
    or ``whole`` as one band."""
    kept: list[np.ndarray] = []

    def bands() -> Iterator[np.ndarray]:
        if not keep:
            yield from (reader.masks(band) for band in reader.bands(positions))
            return
        if not kept:
            masks, row = np.empty((positions.size, reader.n_train), dtype=bool), 0
            for band in reader.bands(positions):
                masks[row : row + band.size] = reader.masks(band)
                row += band.size
            kept.append(masks)
        step = positions.size if whole else reader.shard_rows
        yield from (kept[0][row : row + step] for row in range(0, positions.size, step))

    return bands


def gram_pass(
    moments: Moments,
    reader: BandReader,
    positions: np.ndarray,
    plan: PassPlan,
    progress: Callable[[int], None],
    device: Device = CPU,
) -> None:
    """Fill ``moments`` with the counts and column sums of the rows ``positions`` (resumable).

    With ``plan.hold_counts`` a pass that computes every panel also keeps the counts in memory
    (:class:`~dmstore.fitting.moments.DeltaGram`, :func:`~dmstore.fitting.moments.hold_counts`)
    for the solver, which then reads no tile back."""
    digest = rows_digest(positions)
    if moments.is_complete(digest):
        return
    if not moments.matches(digest):
        moments.start(positions, reader.n_train, plan.tile)
    group = moments.group("a")
    assert group is not None
    tile_file = moments.tile_file()
    tile, n_train = tile_file.tile, tile_file.size
    bands = mask_bands(reader, positions, plan.cache_masks, device.mask_matmul() is not None)
    held: DeltaGram | None = None  # from the first panel on
    scratch = Scratch.of(tile, n_train, reader.shard_rows) if device.xp is np else None
    for i in range(int(group.attrs["panels"]), tile_file.n_tiles):
        start, stop = i * tile, min((i + 1) * tile, n_train)
        panel = new_panel(start, stop, n_train, device, scratch)
        xsum = np.zeros(n_train)
        for masks in bands():
            panel_product(panel, masks, start, stop, device, scratch)
            if i == 0:
                xsum += masks.sum(axis=0)
            progress(masks.shape[0])
        if i == 0:
            group.create_array("xsum", data=xsum, chunks=(n_train,), dimension_names=("train",), overwrite=True)
            held = DeltaGram.empty(xsum, positions.size) if plan.hold_counts else None
        if not write_panel(tile_file, i, panel, device, held):
            held = None  # a difference outside int16: the solver reads rows from the tiles
        group.attrs["panels"] = i + 1
    group.attrs["complete"] = True
    if held is not None:
        hold_counts(moments, held)


def write_panel(tile_file: tiles.TileFile, i: int, panel: Any, device: Device, held: DeltaGram | None) -> bool:
    """Write the tiles of panel ``i`` (rows ``i * tile`` on, columns from there), on threads (their
    encoding and copies release the GIL), and place them in ``held``; False where one does not
    fit in int16 there."""
    tile = tile_file.tile
    rows = slice(i * tile, i * tile + panel.shape[0])

    def finish(j: int) -> bool:
        counts = panel_tile(panel, i, j, tile, device)
        tile_file.write(i, j, counts)
        return held is None or held.place(rows, slice(j * tile, j * tile + counts.shape[1]), counts)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return all(pool.map(finish, range(i, tile_file.n_tiles)))


def panel_tile(panel: Any, i: int, j: int, tile: int, device: Device) -> np.ndarray:
    """Tile ``(i, j)`` of panel ``i`` on the host (a view on the CPU: int32 or float32 counts,
    converted where they are encoded)."""
    return device.get(panel[:, (j - i) * tile : (j - i + 1) * tile])


def added_rows(moments: Moments, positions: np.ndarray) -> np.ndarray | None:
    """The rows of ``positions`` that :func:`grow_pass` would add to ``moments`` (those of an
    addition already under way), or None where the statistics cannot grow into ``positions``."""
    group = moments.group()
    adding: Any = None if group is None else group.attrs.get("adding")
    if group is not None and adding:
        return group[f"parts/{adding['part']}/positions"][:]
    old = moments.positions()
    if old is None or old.size >= positions.size or not np.isin(old, positions).all():
        return None
    return np.setdiff1d(positions, old)


def grow_pass(
    moments: Moments,
    reader: BandReader,
    positions: np.ndarray,
    plan: PassPlan,
    progress: Callable[[int], None],
    device: Device = CPU,
) -> None:
    """Add to complete statistics the rows of ``positions`` they lack, reading only those rows.

    Crash-safe and resumable: the added rows' other statistics are written first, as a part; then
    each tile of counts gets their counts in place, its sum recorded before it is first written,
    so that a resumed pass tells a tile already updated (its sum moved by exactly the added
    counts) from one still to update; each tile is read once. The part is recorded last, with
    the new rows.
    """
    if added_rows(moments, positions) is None:  # nothing to add (or not statistics that can grow)
        return
    group: Any = moments.group("a")
    assert group is not None
    if not group.attrs.get("adding"):
        old = moments.positions()
        assert old is not None
        added = np.setdiff1d(positions, old)
        k = max(group.attrs.get("parts", []), default=-1) + 1
        part = Moments(moments.url, f"{moments.name}/parts/{k}", moments.storage_options)
        part_group = part.start(added, reader.n_train, 0, gram=False)
        xsum = np.zeros(reader.n_train)
        for masks in mask_bands(reader, added, False)():
            xsum += masks.sum(axis=0)
            progress(masks.shape[0])
        part_group.create_array("xsum", data=xsum, chunks=(reader.n_train,), dimension_names=("train",))
        for key in [k for k in group.attrs if k.startswith("xty_")]:
            split = key.removeprefix("xty_")
            split_reader = reader if split == reader.split else BandReader(moments.url, split, moments.storage_options)
            n_targets = group[key].shape[1]
            blocks = sorted(group.attrs[key])
            target_pass(part, split_reader, added, split, n_targets, blocks, plan, progress, device)
        part.group("a").attrs["complete"] = True  # a fresh handle: attributes are written whole
        total = np.union1d(old, added)
        state: dict[str, Any] = {"part": k, "rows": rows_digest(total), "n": int(total.size), "panels": 0, "sums": {}}
        group.update_attributes({"adding": state, "complete": False})
    state = dict(group.attrs["adding"])
    added = group[f"parts/{state['part']}/positions"][:]
    bands = mask_bands(reader, added, plan.cache_masks, device.mask_matmul() is not None)
    tile_file = moments.tile_file()
    tile, n_train = tile_file.tile, tile_file.size
    scratch = Scratch.of(tile, n_train, reader.shard_rows) if device.xp is np else None
    for i in range(int(state["panels"]), tile_file.n_tiles):
        start, stop = i * tile, min((i + 1) * tile, n_train)
        panel = new_panel(start, stop, n_train, device, scratch)
        for masks in bands():
            panel_product(panel, masks, start, stop, device, scratch)
            progress(masks.shape[0])
        for j in range(i, tile_file.n_tiles):
            delta = panel_tile(panel, i, j, tile, device)
            current = tile_file.read_tile(i, j)
            now, change = float(current.sum(dtype=np.float64)), float(delta.sum(dtype=np.float64))
            key = f"{i},{j}"
            if key not in state["sums"]:  # recorded before the tile is first written
                state["sums"] = {**state["sums"], key: now}
                group.attrs["adding"] = state
            before = state["sums"][key]
            if now == before:
                current += delta
            elif now != before + change:
                raise DmstoreError(
                    f"the store's {moments.path} counts changed while rows were being added: run `dmstore fit` "
                    "with --recompute to compute them afresh"
                )
            tile_file.write(i, j, current)  # again where it was updated: its transpose may not have been
        state["panels"] = i + 1
        group.attrs["adding"] = state
    parts = [*group.attrs.get("parts", []), state["part"]]
    group.update_attributes({"parts": parts, "rows": state["rows"], "n": state["n"], "complete": True, "adding": None})


def mask_pass(moments: Moments, reader: BandReader, positions: np.ndarray, progress: Callable[[int], None]) -> None:
    """Keep the masks of the rows ``positions`` (the validation rows) and their column sums."""
    digest = rows_digest(positions)
    if moments.is_complete(digest):
        return
    group = moments.start(positions, reader.n_train, 0, gram=False)
    masks = group.create_array(
        "masks",
        shape=(positions.size, reader.n_train),
        dtype=bool,
        chunks=(min(positions.size, 2048), reader.n_train),
        compressors=[MASK_CODEC],
        dimension_names=("model", "train"),
    )
    xsum, row = np.zeros(reader.n_train), 0
    for band in reader.bands(positions):
        part = reader.masks(band)
        masks[row : row + part.shape[0]] = part
        xsum += part.sum(axis=0)
        row += part.shape[0]
        progress(part.shape[0])
    group.create_array("xsum", data=xsum, chunks=(reader.n_train,), dimension_names=("train",))
    group.attrs["complete"] = True


def target_pass(
    moments: Moments,
    reader: BandReader,
    positions: np.ndarray,
    split: str,
    n_targets: int,
    blocks: list[int],
    plan: PassPlan,
    progress: Callable[[int], None],
    device: Device = CPU,
) -> None:
    """Write ``X^T Y`` and the target sums of the given target blocks of ``split`` over ``positions``:
    runs of contiguous blocks, at most ``plan.target_blocks`` per pass over the bands (on the CPU
    each band's product is added in place: float64 ``dgemm`` with ``beta = 1``)."""
    xp = device.xp
    for group in block_runs(blocks, plan.target_blocks):
        columns = slice(group[0] * XTY_BLOCK, min((group[-1] + 1) * XTY_BLOCK, n_targets))
        width = columns.stop - columns.start
        if xp is np:
            xty = np.zeros((reader.n_train, width), order="F")  # dgemm's c
        else:
            xty = xp.zeros((reader.n_train, width), dtype=xp.float64, device=device.where)
        ysum, yy = np.zeros(width), np.zeros(width)
        for band in reader.bands(positions):
            masks, margins = reader.masks(band), reader.margins(band, columns).astype(np.float64)
            check_finite(margins, band, columns, reader)
            if xp is np:
                out = dgemm(1.0, masks.astype(np.float64).T, margins, beta=1.0, c=xty, overwrite_c=1)
                if out is not xty:  # scipy copies c it cannot update in place: never lose a band
                    xty[...] = out
            else:
                xty += device.put(masks, np.float64).T @ device.put(margins)
            ysum += margins.sum(axis=0)
            yy += (margins * margins).sum(axis=0)
            progress(masks.shape[0])
        moments.write_targets(split, n_targets, group, device.get(xty), ysum, yy)


def block_runs(blocks: list[int], most: int) -> list[list[int]]:
    """The sorted target ``blocks`` as runs of consecutive blocks of at most ``most`` each."""
    runs: list[list[int]] = []
    for block in sorted(blocks):
        if runs and runs[-1][-1] == block - 1 and len(runs[-1]) < most:
            runs[-1].append(block)
        else:
            runs.append([block])
    return runs


def check_finite(margins: np.ndarray, band: np.ndarray, columns: slice, reader: BandReader) -> None:
    """Refuse non-finite margins of the fit rows, naming the first of them."""
    bad = ~np.isfinite(margins)
    if not bad.any():
        return
    where = ", ".join(
        f"model {reader.model_label(band[i])} {reader.split} {reader.target_label(columns.start + j)}"
        for i, j in np.argwhere(bad)[:BAD_REPORTED]
    )
    raise DmstoreError(
        f"{reader.margins_name} has NaN or infinite values in the fit models (first: {where}): "
        "fix the source, or mark those models as eval in the store's split coordinate"
    )
