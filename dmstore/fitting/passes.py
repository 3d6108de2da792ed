"""The passes over the masks that fill ``moments/{rows}`` (see :mod:`dmstore.fitting.moments`).

The counts ``X^T X`` are built one tile row (a *panel* of ``tile`` train examples) at a time:
for each band of model rows, one float32 GEMM adds ``X[:, panel]^T X[:, panel start:]`` into the
panel in place (``sgemm`` with ``beta = 1``), so only the upper triangle is computed (the work of
numpy's ``X.T @ X``, at GEMM speed) and no ``N x N`` array is ever held: each finished panel is
written as whole tiles, each tile also as its transpose below the diagonal, then recorded; an
interrupted pass resumes at the first panel not recorded. The masks of the rows are kept in memory
between panels when the plan allows, and read again for each panel otherwise. The target
statistics ``X^T Y`` follow in a second pass over the bands, for the target blocks not yet written.
Products of 0/1 masks in float32 are exact integers up to 2^24 models. The validation rows keep
their masks instead of counts (:func:`mask_pass`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy.linalg.blas import sgemm
from zarr.codecs import BloscCodec

from dmstore.errors import DmstoreError
from dmstore.fitting.moments import XTY_BLOCK, Moments, rows_digest
from dmstore.fitting.reads import BandReader

#: Non-finite margins named in the error.
BAD_REPORTED = 3
#: The store's codec for masks (bitshuffle: 8x on random subsets).
MASK_CODEC = BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle", typesize=1)


@dataclass(frozen=True)
class PassPlan:
    """How a pass uses memory: the tile size, whether the masks stay in memory, target blocks
    per pass over the bands."""

    tile: int
    cache_masks: bool
    target_blocks: int


def panel_product(panel: np.ndarray, masks: np.ndarray, start: int, stop: int) -> None:
    """Add ``X[:, start:stop]^T X[:, start:]`` of a band of masks into ``panel`` in place.

    ``panel`` is ``[stop - start, N - start]`` float32 in Fortran order (sgemm's ``c``).
    """
    right = masks[:, start:].astype(np.float32)  # [rows, N - start], C order
    left = np.ascontiguousarray(right[:, : stop - start])
    out = sgemm(1.0, left.T, right.T, beta=1.0, c=panel, trans_b=1, overwrite_c=1)
    if out is not panel:  # scipy copies c it cannot update in place: never silently lose a band
        panel[...] = out


def gram_pass(
    moments: Moments, reader: BandReader, positions: np.ndarray, plan: PassPlan, progress: Callable[[int], None]
) -> None:
    """Fill ``moments`` with the counts and column sums of the rows ``positions`` (resumable)."""
    digest = rows_digest(positions)
    if moments.is_complete(digest):
        return
    if not moments.matches(digest):
        moments.start(positions.size, reader.n_train, digest, plan.tile)
    group = moments.group("a")
    assert group is not None
    tile_file = moments.tile_file()
    tile, n_train = tile_file.tile, tile_file.size
    cache: dict[int, np.ndarray] = {}

    def bands() -> Iterator[np.ndarray]:
        for i, band in enumerate(reader.bands(positions)):
            if i in cache:
                yield cache[i]
                continue
            masks = reader.masks(band)
            if plan.cache_masks:
                cache[i] = masks
            yield masks

    for i in range(int(group.attrs["panels"]), tile_file.n_tiles):
        start, stop = i * tile, min((i + 1) * tile, n_train)
        panel = np.zeros((stop - start, n_train - start), dtype=np.float32, order="F")
        xsum = np.zeros(n_train)
        for masks in bands():
            panel_product(panel, masks, start, stop)
            if i == 0:
                xsum += masks.sum(axis=0)
            progress(masks.shape[0])
        if i == 0:
            group.create_array("xsum", data=xsum, chunks=(n_train,), dimension_names=("train",), overwrite=True)
        for j in range(i, tile_file.n_tiles):
            tile_file.write(i, j, panel[:, (j - i) * tile : (j - i + 1) * tile])
        group.attrs["panels"] = i + 1
    group.attrs["complete"] = True


def mask_pass(moments: Moments, reader: BandReader, positions: np.ndarray, progress: Callable[[int], None]) -> None:
    """Keep the masks of the rows ``positions`` (the validation rows) and their column sums."""
    digest = rows_digest(positions)
    if moments.is_complete(digest):
        return
    group = moments.start(positions.size, reader.n_train, digest, 0, gram=False)
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
) -> None:
    """Write ``X^T Y`` and the target sums of the given target blocks of ``split`` over ``positions``."""
    for first in range(0, len(blocks), plan.target_blocks):
        group = blocks[first : first + plan.target_blocks]
        cols = [slice(b * XTY_BLOCK, min((b + 1) * XTY_BLOCK, n_targets)) for b in group]
        columns = slice(cols[0].start, cols[-1].stop)
        width = columns.stop - columns.start
        xty, ysum, yy = np.zeros((reader.n_train, width)), np.zeros(width), np.zeros(width)
        for band in reader.bands(positions):
            masks, margins = reader.masks(band), reader.margins(band, columns).astype(np.float64)
            check_finite(margins, band, columns, reader)
            xty += masks.T.astype(np.float64) @ margins
            ysum += margins.sum(axis=0)
            yy += (margins * margins).sum(axis=0)
            progress(masks.shape[0])
        for block, col in zip(group, cols):
            local = slice(col.start - columns.start, col.stop - columns.start)
            moments.write_targets(split, n_targets, block, xty[:, local], ysum[local], yy[local])


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
