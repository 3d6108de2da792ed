"""Shards built directly: the exact bytes Zarr's sharding codec writes for one shard row-block.

A conversion writes every shard whole, so it needs none of Zarr's read-modify-write machinery;
building the shard in one pass (encode each inner chunk, append its CRC32C, then the index)
is about 1.5x faster (benchmarks/bench_convert.py). ``tests/test_shard.py`` checks the bytes
against Zarr's own for every layout dmstore writes.

Layout of a shard (Zarr v3 sharding codec, index at the end): the encoded inner chunks one after
another in C order, then ``offset, nbytes`` as little-endian uint64 per chunk, then the CRC32C of
that index. An inner chunk is ``blosc(chunk bytes) + crc32c`` (codecs ``bytes``, ``blosc``,
``crc32c``); edge chunks are padded with the fill value (zero) to the full chunk shape.
"""

from __future__ import annotations

from collections.abc import Iterator

import google_crc32c
import numpy as np
from numcodecs import Blosc
from zarr.codecs import BloscCodec

SHUFFLES = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}


def blosc(codec: BloscCodec) -> Blosc:
    """The numcodecs compressor that Zarr runs for ``codec``."""
    config = dict(codec.to_dict()["configuration"])
    config["shuffle"] = SHUFFLES[config["shuffle"]]
    return Blosc.from_config(config)


def with_crc32c(data: bytes) -> bytes:
    """``data`` followed by its CRC32C (little-endian), as Zarr's ``crc32c`` codec appends it."""
    return data + np.uint32(google_crc32c.value(data)).tobytes()


def shard_pieces(band: np.ndarray, chunks: tuple[int, ...], compressor: Blosc) -> Iterator[bytes]:
    """The shard object for ``band`` (rows of one shard row-block, all columns), piece by piece:
    each encoded inner chunk, then the index. Memory: one chunk-sized copy at a time besides the
    encoded pieces the caller keeps.

    Parameters
    ----------
    band
        ``[rows, examples(, classes)]`` with ``rows <= chunks[0]`` (the last band may be short).
    chunks
        Inner chunk shape ``(rows, columns(, classes))``; the shard is one chunk high.
    """
    height, width = chunks[0], chunks[1]
    n_chunks = -(-band.shape[1] // width)
    index = np.empty((n_chunks, 2), dtype="<u8")
    offset = 0
    for j in range(n_chunks):
        chunk = band[:, j * width : (j + 1) * width]
        if chunk.shape[:2] != (height, width):  # an edge chunk: pad with the fill value
            padded = np.zeros((height, width, *band.shape[2:]), dtype=band.dtype)
            padded[: chunk.shape[0], : chunk.shape[1]] = chunk
            chunk = padded
        piece = with_crc32c(compressor.encode(np.ascontiguousarray(chunk)))
        index[j] = offset, len(piece)
        offset += len(piece)
        yield piece
    yield with_crc32c(index.tobytes())


def encode_shard(band: np.ndarray, chunks: tuple[int, ...], compressor: Blosc) -> bytes:
    """The whole shard object for ``band`` (see :func:`shard_pieces`)."""
    return b"".join(shard_pieces(band, chunks, compressor))
