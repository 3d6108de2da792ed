"""A square float32 matrix stored as tile shards whose inner chunks are single tile rows.

The mask co-occurrence counts ``X^T X`` (``N x N``; 10 GB at CIFAR-10's N = 50,000) are written
once and then read by rows: a solver step needs the rows of its working set, a few thousand of
50,000, scattered. So each shard is one ``tile x tile`` square (written whole, as the pass makes
it) and each inner chunk is one row of a tile: gathering ``k`` rows reads and decodes exactly
``k x ceil(N / tile)`` small chunks, never a whole tile. Zarr reads such a selection at about
1,200 chunks/s (2,000 rows of a 16,384-wide matrix in tiles of 4,096, measured while building
this); this module reads the shard index once and then only the wanted byte ranges (11,600 chunks/s,
2,000 rows of a 10,000-wide matrix), and decodes them with Blosc in threads.

The bytes are those Zarr's sharding codec writes (codecs ``bytes``, ``blosc``, ``crc32c``; index
at the end with its CRC32C), so Zarr and xarray read the array as any other;
``tests/test_moments.py`` checks the bytes against Zarr's, and Zarr's reading of ours. Every inner
chunk carries its CRC32C, and a read that fails it, or finds a tile missing, raises a
:class:`~dmstore.errors.DmstoreError`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import fsspec
import google_crc32c
import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from dmstore.errors import DmstoreError
from dmstore.io.shard import blosc, with_crc32c

#: Bitshuffled lz4: on one tile of 18,000-model counts (rows of 4,096) it encodes in 0.05 s and
#: decodes in 0.05 s at 3.43x, against zstd level 1's 0.16 s, 0.13 s and 3.58x (one core): the
#: pass writes 10 GB at CIFAR-10 width and a solver without the counts in memory reads rows back.
TILE_CODEC = BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle", typesize=4, blocksize=2**18)
#: The side of the squares a transposed tile is copied in (they stay in the CPU's cache: a 4,096
#: tile in 0.036 s instead of 0.12 s).
TRANSPOSE_SQUARE = 256
#: Threads that fetch and decode tiles while gathering rows.
READ_THREADS = 4
EMPTY = np.iinfo(np.uint64).max


def create(group: zarr.Group, name: str, size: int, tile: int, dims: tuple[str, str]) -> zarr.Array:
    """Create (replacing any) the ``size x size`` float32 tiled array ``name`` in ``group``."""
    return group.create_array(
        name,
        shape=(size, size),
        dtype="float32",
        chunks=(1, tile),
        shards=(tile, tile),
        compressors=[TILE_CODEC, Crc32cCodec()],
        fill_value=0.0,
        dimension_names=dims,
        overwrite=True,
    )


def encode_tile(tile: np.ndarray, size: int) -> bytes:
    """The shard object of one ``size x size`` tile (an edge tile is padded with zeros; rows of
    zeros are left out, as Zarr leaves out chunks of the fill value)."""
    compressor = blosc(TILE_CODEC)
    block = np.zeros((size, size), dtype="<f4")
    step = size if tile.flags.c_contiguous else TRANSPOSE_SQUARE  # a transpose, copied square by square
    for a in range(0, tile.shape[0], step):
        for b in range(0, tile.shape[1], step):
            part = tile[a : a + step, b : b + step]
            block[a : a + part.shape[0], b : b + part.shape[1]] = part
    pieces, index, offset = [], np.full((size, 2), EMPTY, dtype="<u8"), 0
    for i in np.flatnonzero(block.any(axis=1)).tolist():  # Zarr writes no chunk of only the fill value
        piece = with_crc32c(compressor.encode(block[i]))
        index[i] = offset, len(piece)
        offset += len(piece)
        pieces.append(piece)
    pieces.append(with_crc32c(index.tobytes()))
    return b"".join(pieces)


class TileFile:
    """Where the shards of one tiled array live: ``{root}/{path}/c/{i}/{j}`` on a filesystem."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, path: str, size: int, tile: int) -> None:
        self.fs, self.folder, self.size, self.tile = fs, f"{root.rstrip('/')}/{path}", size, tile
        self.n_tiles = -(-size // tile)
        self._index: dict[tuple[int, int], np.ndarray] = {}

    @classmethod
    def of(cls, array: zarr.Array, url: str, storage_options: dict | None) -> TileFile:
        """The tile file of a Zarr ``array`` in the store at ``url``."""
        fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        return cls(fs, root, array.path, array.shape[0], array.shards[0])

    def key(self, i: int, j: int) -> str:
        return f"{self.folder}/c/{i}/{j}"

    def write(self, i: int, j: int, tile: np.ndarray) -> None:
        """Write tile ``(i, j)`` and, off the diagonal, its transpose as tile ``(j, i)``."""
        for (a, b), data in (((i, j), tile), ((j, i), tile.T)):
            self.fs.makedirs(f"{self.folder}/c/{a}", exist_ok=True)
            self.fs.pipe_file(self.key(a, b), encode_tile(data, self.tile))
            if i == j:
                break

    def _chunk_index(self, i: int, j: int) -> np.ndarray:
        """The ``[tile, 2]`` (offset, nbytes) index of shard ``(i, j)``, read once."""
        if (i, j) not in self._index:
            self._index[(i, j)] = self._parse_index(i, j, self._read(i, j, start=-(16 * self.tile + 4)))
        return self._index[(i, j)]

    def _read(self, i: int, j: int, start: int | None = None) -> bytes:
        """The bytes of shard ``(i, j)`` (from ``start``; negative: from the end)."""
        try:
            return self.fs.cat_file(self.key(i, j), start=start)
        except FileNotFoundError:
            raise DmstoreError(self._damaged(i, j, "is missing")) from None

    def _parse_index(self, i: int, j: int, data: bytes) -> np.ndarray:
        """The checked ``[tile, 2]`` index from the bytes ending shard ``(i, j)``."""
        tail = data[-(16 * self.tile + 4) :]
        if len(tail) != 16 * self.tile + 4 or google_crc32c.value(tail[:-4]) != int.from_bytes(tail[-4:], "little"):
            raise DmstoreError(self._damaged(i, j, "has a corrupt index"))
        return np.frombuffer(tail[:-4], dtype="<u8").reshape(self.tile, 2)

    def _decode_row(self, i: int, j: int, row: int, piece: bytes | memoryview, width: int) -> np.ndarray:
        """The ``width`` values of one encoded tile row, its CRC32C checked."""
        if google_crc32c.value(bytes(piece[:-4])) != int.from_bytes(piece[-4:], "little"):
            raise DmstoreError(self._damaged(i, j, f"row {row} fails its checksum"))
        return np.frombuffer(blosc(TILE_CODEC).decode(piece[:-4]), dtype="<f4")[:width]

    def _damaged(self, i: int, j: int, what: str) -> str:
        return (
            f"{self.folder} tile ({i}, {j}) {what}: the statistics are damaged; "
            "run the same `dmstore fit` with --recompute to rebuild them"
        )

    def _read_tile_rows(self, i: int, j: int, local: np.ndarray) -> np.ndarray:
        """``[len(local), width]``: rows ``local`` (within tile row ``i``) of tile ``(i, j)``."""
        index = self._chunk_index(i, j)
        starts, lengths = index[local, 0], index[local, 1]
        width = min(self.tile, self.size - j * self.tile)
        present = starts != EMPTY
        key = self.key(i, j)
        pieces = self.fs.cat_ranges(
            [key] * int(present.sum()), list(starts[present]), list(starts[present] + lengths[present])
        )
        out = np.zeros((local.size, width), dtype=np.float32)
        for k, piece in zip(np.flatnonzero(present), pieces):
            out[k] = self._decode_row(i, j, local[k], piece, width)
        return out

    def read_tile(self, i: int, j: int) -> np.ndarray:
        """Tile ``(i, j)`` whole (``[height, width]`` at the edges): one read of its shard."""
        height = min(self.tile, self.size - i * self.tile)
        width = min(self.tile, self.size - j * self.tile)
        data = self._read(i, j)
        index = self._parse_index(i, j, data)
        out = np.zeros((height, width), dtype=np.float32)
        view = memoryview(data)
        for row in range(height):
            start, length = index[row]
            if start != EMPTY:
                out[row] = self._decode_row(i, j, row, view[int(start) : int(start + length)], width)
        return out

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """``[len(rows), size]`` float32: the given rows of the matrix, in the order given."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((rows.size, self.size), dtype=np.float32)
        if rows.size == 0:
            return out
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        tile_of = sorted_rows // self.tile
        jobs = []
        for i in np.unique(tile_of):
            sel = np.flatnonzero(tile_of == i)
            jobs += [(int(i), j, sel) for j in range(self.n_tiles)]
        gathered = np.empty_like(out)

        def run(job: tuple[int, int, np.ndarray]) -> None:
            i, j, sel = job
            cols = slice(j * self.tile, min((j + 1) * self.tile, self.size))
            gathered[sel, cols] = self._read_tile_rows(i, j, sorted_rows[sel] - i * self.tile)

        with ThreadPoolExecutor(READ_THREADS) as pool:
            for _ in pool.map(run, jobs):
                pass
        out[order] = gathered
        return out
