"""Segments: one model's row of every array, as one immutable, checksummed object.

Writers of an experiment store (:mod:`dmstore.experiment`) never touch a shard: each written
model lands as ``_dmstore/segments/{model}.seg``, created exclusively
(:func:`dmstore.io.objects.create_exclusive`), so a segment is
there whole or not at all, and a second writer of the same model either finds identical bytes
or is refused. A compaction later folds complete shard row-blocks into the sharded arrays.

Format (deterministic: the same row always gives the same bytes)::

    b"DMSEG1" | uint32 LE header length | header (JSON, sorted keys) | row bytes ... | uint32 LE CRC32C

The header holds ``model``, ``arrays`` (``[name, dtype, shape, nbytes]`` in name order) and
``extras`` (small per-model numbers such as a seed or an accuracy); the CRC32C covers all bytes
before it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import fsspec
import google_crc32c
import numpy as np

from dmstore.errors import DmstoreError
from dmstore.io.lock import is_stale
from dmstore.io.objects import create_exclusive, temporaries
from dmstore.io.store import read_records

SEGMENTS = "_dmstore/segments"
MAGIC = b"DMSEG1"


def encode(model: int, rows: dict[str, np.ndarray], extras: dict[str, float | int | bool]) -> bytes:
    """The segment bytes of ``model``: its ``rows`` (one per array) and ``extras``."""
    names = sorted(rows)
    arrays = [[name, rows[name].dtype.str, list(rows[name].shape), rows[name].nbytes] for name in names]
    header = json.dumps({"model": int(model), "arrays": arrays, "extras": extras}, sort_keys=True).encode()
    body = b"".join([MAGIC, np.uint32(len(header)).tobytes(), header, *(rows[n].tobytes() for n in names)])
    return body + np.uint32(google_crc32c.value(body)).tobytes()


@dataclass
class Segment:
    """A decoded segment."""

    model: int
    rows: dict[str, np.ndarray]
    extras: dict[str, float | int | bool] = field(default_factory=dict)


def decode(data: bytes, where: str) -> Segment:
    """The segment in ``data``; a damaged one is a one-line error naming ``where``."""
    body, crc = data[:-4], data[-4:]
    if data[:6] != MAGIC or len(data) < 14 or np.frombuffer(crc, "<u4")[0] != google_crc32c.value(body):
        raise DmstoreError(
            f"the segment {where} is damaged (fails its CRC32C): delete it and write that model again", exit_code=1
        )
    length = int(np.frombuffer(body[6:10], "<u4")[0])
    header = json.loads(body[10 : 10 + length])
    offset, rows = 10 + length, {}
    for name, dtype, shape, nbytes in header["arrays"]:
        rows[name] = np.frombuffer(body, dtype=dtype, count=int(np.prod(shape)), offset=offset).reshape(shape)
        offset += nbytes
    return Segment(header["model"], rows, header["extras"])


class SegmentConflict(DmstoreError):
    """A model written twice with different rows."""


def model_variables(spec: dict) -> list[str]:
    """The per-model variables of an experiment store's spec: its arrays, then its extras."""
    return [*spec["arrays"], *spec["extras"]]


def experiment_snapshot(store: Any, storage_options: dict | None, attrs: dict) -> Snapshot | None:
    """A :class:`Snapshot` of an experiment store (root attributes ``attrs``); None for others."""
    if attrs.get("dmstore_status") != "experiment":
        return None
    if not isinstance(store, (str, os.PathLike)):
        raise DmstoreError("an experiment store is opened by its path or URL, not a zarr store object")
    return Segments(os.fspath(store), storage_options).snapshot()


class Segments:
    """The segments of the store at ``url`` (local path or fsspec URL)."""

    def __init__(self, url: str, storage_options: dict | None = None) -> None:
        self.url, self.storage_options = url, storage_options
        self.fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.root = f"{root.rstrip('/')}/{SEGMENTS}"

    def path(self, model: int) -> str:
        return f"{self.root}/{model}.seg"

    def listing(self) -> dict[int, str]:
        """Written models and their segment paths (one listing)."""
        self.fs.invalidate_cache(self.root)  # other processes write and delete segments
        try:
            paths = self.fs.find(self.root)
        except FileNotFoundError:
            return {}
        out = {}
        for path in paths:
            stem, _, ext = path.rsplit("/", 1)[-1].partition(".")
            if ext == "seg" and stem.isdigit():
                out[int(stem)] = path
        return out

    def put(self, model: int, data: bytes) -> bool:
        """Create the segment of ``model`` exclusively: True where written, False where identical
        bytes were there already.

        Raises
        ------
        SegmentConflict
            Where the model's segment holds other bytes (nothing is changed).
        """
        path = self.path(model)
        if create_exclusive(self.fs, path, data):
            return True
        if self.fs.cat_file(path) != data:
            raise SegmentConflict(
                f"model {model} is already written with other values: a model row is written once; "
                "nothing was changed"
            )
        return False

    def read(self, paths: dict[int, str]) -> dict[int, Segment]:
        """Decode the segments at ``paths`` (model -> path), fetched together."""
        if not paths:
            return {}
        try:
            blobs = self.fs.cat(list(paths.values()))
        except FileNotFoundError as exc:
            raise DmstoreError(
                f"a segment of {self.url} went away while reading (a compaction ran): open the store again",
                exit_code=1,
            ) from exc
        by_path = {self.fs._strip_protocol(p): blob for p, blob in blobs.items()}
        return {m: decode(by_path[self.fs._strip_protocol(p)], p) for m, p in paths.items()}

    def delete(self, paths: list[str]) -> None:
        if paths:
            self.fs.rm(paths)

    def abandoned(self) -> list[str]:
        """Temporary files of writers that died before linking them (local disk only), by the
        lock's stale rule (:func:`dmstore.io.lock.is_stale`)."""
        now, host = time.time(), socket.gethostname()
        return [path for path, owner in temporaries(self.fs, self.root) if is_stale(owner, now, host)]

    def snapshot(self) -> Snapshot:
        """The written models and the compacted row-blocks, as they are now."""
        return Snapshot(self, self.listing(), read_records(self.url, self.storage_options))


@dataclass
class Snapshot:
    """What an experiment store holds at one moment: segment paths by model, and the band
    records (``(array, start, stop) -> crc32c``) of the row-blocks compacted into the arrays."""

    segments: Segments
    paths: dict[int, str]
    records: dict[tuple[str, int, int], str]

    def compacted(self, name: str, n_models: int) -> np.ndarray:
        """``[n_models]`` bool: rows of ``name`` inside a compacted row-block."""
        out = np.zeros(n_models, dtype=bool)
        for array, start, stop in self.records:
            if array == name:
                out[start:stop] = True
        return out

    def folded(self, names: list[str], n_models: int) -> np.ndarray:
        """``[n_models]`` bool: models compacted into every array of ``names``."""
        folded = np.ones(n_models, dtype=bool)
        for name in names:
            folded &= self.compacted(name, n_models)
        return folded

    def done(self, names: list[str], n_models: int) -> np.ndarray:
        """``[n_models]`` bool: models whose rows are written (a segment, or compacted in every array)."""
        done = self.folded(names, n_models)
        written = np.fromiter((m for m in self.paths if m < n_models), dtype=np.int64)
        done[written] = True
        return done

    def read(self, positions: np.ndarray) -> dict[int, Segment]:
        """The segments of the written models among ``positions``."""
        return self.segments.read({int(m): self.paths[int(m)] for m in positions if int(m) in self.paths})

    def rows(
        self,
        name: str,
        positions: np.ndarray,
        shape: tuple[int, ...],
        dtype: np.dtype,
        segments: dict[int, Segment] | None = None,
    ) -> np.ndarray:
        """``[len(positions), *shape]``: the rows of ``name`` from the segments (zeros where a
        model is not written); ``segments`` read already, or read here."""
        out = np.zeros((len(positions), *shape), dtype=dtype)
        segments = self.read(positions) if segments is None else segments
        for i, m in enumerate(positions):
            segment = segments.get(int(m))
            if segment is not None:
                out[i] = segment.rows[name] if name in segment.rows else segment.extras[name]
        return out

