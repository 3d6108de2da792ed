"""``dmstore verify``: re-check every band of a store against its recorded checksum."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr
from dmstore.conversion.plan import BAND_MEMORY_FACTOR
from tqdm.auto import tqdm

from dmstore.errors import DmstoreError
from dmstore.io import store
from dmstore.io.budget import DRIVER_BYTES, WORKER_BYTES, parse_budget
from dmstore.io.cluster import budget_client
from dmstore.io.dataset import as_store
from dmstore.io.source import Source, data_key


@dataclass(frozen=True)
class BandCheck:
    """The outcome for one band of one array."""

    array: str
    start: int
    stop: int
    problem: str | None

    def __str__(self) -> str:
        return f"{self.array} models {self.start}:{self.stop}: {self.problem or 'ok'}"


def band_digest(dest: str, options: dict | None, name: str, start: int, stop: int, first: int) -> str:
    """Checksum of source rows ``[start, stop)`` as stored (the bytes the source had)."""
    array = zarr.open_array(as_store(dest, options, read_only=True), path=name, mode="r", zarr_format=3)
    return store.checksum(np.ascontiguousarray(array[start - first : stop - first]).tobytes())


def check_band(
    dest: str,
    options: dict | None,
    name: str,
    start: int,
    stop: int,
    first: int,
    expected: str,
    source: Source | None,
    key: str | None,
    offset: int,
    row_bytes: int,
) -> BandCheck:
    """Dask task: compare one band with its record (and with the source, when given)."""
    try:
        digest = band_digest(dest, options, name, start, stop, first)
    except Exception as exc:  # a damaged shard fails to decode: that is the finding
        return BandCheck(name, start, stop, f"unreadable ({type(exc).__name__}: {exc})")
    if digest != expected:
        return BandCheck(name, start, stop, "checksum mismatch: the stored data changed")
    if source is not None:
        data = source.read(key, offset + start * row_bytes, offset + stop * row_bytes)
        if store.checksum(data) != expected:
            return BandCheck(name, start, stop, "differs from the source")
    return BandCheck(name, start, stop, None)


def verify(
    dest: str,
    *,
    source: str | Source | None = None,
    storage_options: dict | None = None,
    scheduler=None,
    max_memory: int | str = "2GB",
    progress: bool = True,
) -> list[BandCheck]:
    """Re-read every band of the store and compare it with its checksum; return the damaged bands.

    With ``source`` the source's bytes are read and compared too. Memory: one band per worker; on
    a local cluster the whole check stays within ``max_memory``
    (:func:`dmstore.io.cluster.budget_client`).
    """
    attrs = store.root_attrs(dest, storage_options)
    if attrs is None or "dmstore_plan" not in attrs:
        raise DmstoreError(f"{dest} is not a dmstore store: nothing to verify")
    store.check_complete(attrs, dest)
    if isinstance(source, str):
        source = Source(source)
    plan = attrs["dmstore_plan"]
    first = plan["rows"][0]
    tasks = []
    for name, bands in attrs["dmstore_bands"].items():
        key = data_key(attrs["dataset"], name, attrs["pct"]) if source is not None else ""
        shape, dtype = plan["arrays"][name]["shape"], np.dtype(plan["arrays"][name]["dtype"])
        row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        offset = source.header(key).offset if source is not None else 0
        tasks += [
            (dest, storage_options, name, a, b, first, digest, source, key, offset, row_bytes) for a, b, digest in bands
        ]
    largest = max((row_bytes * (b - a) for _, _, _, a, b, *_, row_bytes in tasks), default=0)
    with (
        budget_client(
            scheduler,
            parse_budget(max_memory),
            driver=DRIVER_BYTES,
            worker=WORKER_BYTES + int(BAND_MEMORY_FACTOR * largest),
            threads=True,
        ) as client,
        tqdm(total=len(tasks), unit="band", desc="verify", disable=not progress) as bar,
    ):
        futures = [client.submit(check_band, *task, pure=False) for task in tasks]
        results = []
        for future in futures:
            results.append(future.result())
            bar.update()
    return [r for r in results if r.problem]
