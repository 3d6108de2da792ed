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


def encode_shard(band: np.ndarray, chunks: tuple[int, ...], compressor: Blosc) -> bytes:
    """The shard object for ``band``: rows of one shard row-block, all columns.

    Parameters
    ----------
    band
        ``[rows, examples(, classes)]`` with ``rows <= chunks[0]`` (the last band may be short).
    chunks
        Inner chunk shape ``(rows, columns(, classes))``; the shard is one chunk high.
    """
    height, width = chunks[0], chunks[1]
    n_chunks = -(-band.shape[1] // width)
    padded = np.zeros((height, n_chunks * width, *band.shape[2:]), dtype=band.dtype)
    padded[: band.shape[0], : band.shape[1]] = band
    index = np.empty((n_chunks, 2), dtype="<u8")
    pieces, offset = [], 0
    for j in range(n_chunks):
        piece = with_crc32c(compressor.encode(np.ascontiguousarray(padded[:, j * width : (j + 1) * width])))
        index[j] = offset, len(piece)
        offset += len(piece)
        pieces.append(piece)
    pieces.append(with_crc32c(index.tobytes()))
    return b"".join(pieces)
