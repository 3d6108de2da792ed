"""The store's layout on disk: the labelled skeleton, codecs, band records and provenance.

Band records are small objects ``_dmstore/bands/{array}/{start}-{stop}.json`` written by the task
that wrote the band, after its shards; a band without a record is not trusted and is redone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Protocol

import fsspec
import google_crc32c
import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from dmstore._version import __version__
from dmstore.errors import DmstoreError
from dmstore.io.dataset import as_store, known_warnings, open_group
from dmstore.io.objects import create_exclusive, temporaries

RECORDS = "_dmstore/bands"


# Blosc block of 256 KiB: after the byte shuffle of a float16 block, its low and high bytes are two
# 128 KiB streams, each exactly one zstd block with its own entropy table; Blosc's default blocks mix
# both in one zstd block (margins 1.10x instead of 1.20x, benchmarks/bench_chunks.py).
BLOSC_BLOCK = 2**18


def codec(dtype: np.dtype) -> BloscCodec:
    """Blosc zstd level 1: bitshuffle for masks, byte-shuffle for float16 (benchmarks/bench_chunks.py)."""
    if np.dtype(dtype) == bool:
        return BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle", typesize=1, blocksize=BLOSC_BLOCK)
    return BloscCodec(
        cname="zstd", clevel=1, shuffle="shuffle", typesize=np.dtype(dtype).itemsize, blocksize=BLOSC_BLOCK
    )


def dims(name: str) -> tuple[str, ...]:
    """Dimension names of a store variable (``test_logits`` -> model, test, class)."""
    examples = name.split("_", 1)[0]
    return ("model", examples, "class") if name.endswith("logits") else ("model", examples)


class ArrayLayout(Protocol):
    """What the skeleton needs of an array's plan (:class:`dmstore.conversion.plan.ArrayPlan`)."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...]
    shards: tuple[int, ...]
    rows: tuple[int, int]


def array_fingerprints(plans: Iterable[ArrayLayout]) -> dict[str, dict]:
    """What identifies each array's layout (the ``arrays`` of the ``dmstore_plan`` attribute)."""
    return {
        p.name: {
            "shape": list(p.shape),
            "dtype": str(p.dtype),
            "chunks": list(p.chunks),
            "shards": list(p.shards),
            "codec": codec(p.dtype).to_dict(),
        }
        for p in plans
    }


def create_skeleton(
    dest: str, plans: Iterable[ArrayLayout], coords: dict[str, Any], attrs: dict, storage_options: dict | None
) -> None:
    """Write metadata and coordinates of an empty store; the data arrays are left unwritten."""
    import dask.array as da  # here only: a writer's job and the light commands start without it

    plans = list(plans)
    variables, encoding = {}, {}
    for p in plans:
        n_models = p.rows[1] - p.rows[0]
        shape = (n_models, *p.shape[1:])
        variables[p.name] = (dims(p.name), da.empty(shape, dtype=p.dtype, chunks=(p.shards[0], *shape[1:])))
        # a CRC32C per inner chunk: a damaged chunk fails to read instead of decoding to wrong numbers
        compressors = [codec(p.dtype), Crc32cCodec()]
        encoding[p.name] = {"chunks": p.chunks, "shards": p.shards, "compressors": compressors, "_FillValue": None}
    rows = min(p.shards[0] for p in plans)
    encoding["split"] = {"chunks": (rows,)}  # Dask chunks of the coordinate follow the shards
    ds = xr.Dataset(variables, coords=coords, attrs=attrs)
    with known_warnings():  # the lock under _dmstore/ is there already
        ds.to_zarr(
            as_store(dest, storage_options),
            mode="a",
            compute=False,
            zarr_format=3,
            consolidated=False,
            encoding=encoding,
        )


def root_attrs(dest: str, storage_options: dict | None) -> dict | None:
    """The root attributes of an existing store, or None where there is no store."""
    try:
        group = open_group(dest, storage_options)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
        return None
    return group.attrs.asdict()


def set_root_attrs(dest: str, storage_options: dict | None, attrs: dict) -> None:
    """Update root attributes and re-consolidate the metadata (one read opens the store)."""
    store = as_store(dest, storage_options)
    open_group(store, mode="r+").update_attributes(attrs)
    with known_warnings():
        zarr.consolidate_metadata(store)


def checksum(data: bytes) -> str:
    """The checksum recorded for a band: CRC32C of its bytes as they are in the source (hex)."""
    return f"{google_crc32c.value(data):08x}"


def write_shard(
    dest: str, storage_options: dict | None, name: str, block: int, ndim: int, pieces: Iterable[bytes]
) -> None:
    """Write the shard object of row-block ``block`` of ``name`` (key ``{name}/c/{block}/0[/0]``)
    from its pieces, as they are made."""
    fs, root = fsspec.core.url_to_fs(dest, **(storage_options or {}))
    folder = "/".join([root.rstrip("/"), name, "c", str(block), *["0"] * (ndim - 2)])
    fs.makedirs(folder, exist_ok=True)
    with fs.open(f"{folder}/0", "wb") as f:
        for piece in pieces:
            f.write(piece)


def _records_fs(dest: str, storage_options: dict | None) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(dest, **(storage_options or {}))
    return fs, f"{root.rstrip('/')}/{RECORDS}"


def write_record(dest: str, storage_options: dict | None, name: str, start: int, stop: int, digest: str) -> None:
    """Record band ``[start, stop)`` of ``name`` as written, with the checksum of its bytes, whole
    or not at all: a full disk leaves no empty record. A record the band had (a rewritten band) is
    removed first; meanwhile the band has none, so it is not trusted."""
    fs, root = _records_fs(dest, storage_options)
    body = json.dumps({"array": name, "rows": [start, stop], "crc32c": digest}).encode()
    delete_record(dest, storage_options, name, start, stop)
    fs.makedirs(f"{root}/{name}", exist_ok=True)
    create_exclusive(fs, f"{root}/{name}/{start}-{stop}.json", body)


def read_records(dest: str, storage_options: dict | None) -> dict[tuple[str, int, int], str]:
    """Every band record of the store: ``(array, start, stop) -> checksum``. A record that does not
    parse (cut short by an older dmstore on a full disk) counts as none: its band is not trusted."""
    fs, root = _records_fs(dest, storage_options)
    fs.invalidate_cache(root)  # records written by other processes since the last listing
    try:
        paths = fs.glob(f"{root}/*/*.json")
    except FileNotFoundError:
        return {}
    records = {}
    for _path, body in fs.cat(paths).items() if paths else ():
        try:
            record = json.loads(body)
        except json.JSONDecodeError:
            continue
        records[(record["array"], *record["rows"])] = record["crc32c"]
    return records


def delete_record(dest: str, storage_options: dict | None, name: str, start: int, stop: int) -> None:
    """Forget a band (after it was found damaged), so that the next convert rewrites it."""
    fs, root = _records_fs(dest, storage_options)
    path = f"{root}/{name}/{start}-{stop}.json"
    if fs.exists(path):
        fs.rm_file(path)


def remove_abandoned_records(dest: str, storage_options: dict | None) -> None:
    """Remove the temporary files of band records whose writer was killed before linking them (local
    disk). Call it under the store's lock, before any band is written: no writer is running then."""
    fs, root = _records_fs(dest, storage_options)
    folders = fs.ls(root, detail=False) if fs.exists(root) else []
    for path, _ in [t for folder in folders for t in temporaries(fs, folder)]:
        fs.rm_file(path)


def provenance(dataset: str, pct: int, source: str, files: dict[str, int], fingerprint: dict) -> dict:
    """Root attributes of a new store (status ``converting`` until every band is written)."""
    return {
        "dataset": dataset,
        "pct": pct,
        "source": source,
        "source_files": files,
        "dmstore_version": __version__,
        "dmstore_status": "converting",
        "dmstore_plan": fingerprint,
    }


def check_complete(attrs: dict, where: str) -> None:
    """Refuse to trust a store whose conversion has not finished."""
    if attrs.get("dmstore_status") == "converting":
        raise DmstoreError(f"{where} is an unfinished conversion: run the same `dmstore convert` again to finish it")
