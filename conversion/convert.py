"""``dmstore convert``: stream published ``.npy`` matrices into a labelled, sharded Zarr v3 store.

Each band is one Dask task: one contiguous ranged read of the source, one shard row-block written,
then a record with the checksum of the band's bytes. Resume skips recorded bands.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass, field

import fsspec
import numpy as np
from dask.distributed import as_completed
from dmstore.conversion.plan import (
    BAND_MEMORY_FACTOR,
    ArrayPlan,
    parse_rows,
    plan_array,
    threads_for,
)
from dmstore.conversion.verify import verify
from tqdm.auto import tqdm

from dmstore.errors import DmstoreError
from dmstore.io import catalog, labels, store
from dmstore.io.budget import DRIVER_BYTES, WORKER_BYTES, parse_budget
from dmstore.io.cluster import budget_client, dask_client
from dmstore.io.lock import store_lock
from dmstore.io.npy import NpyHeader, check_layout
from dmstore.io.shard import blosc, shard_pieces
from dmstore.io.source import Source, data_key, datamodels_key

# --arrays choices -> store variables
ARRAY_GROUPS = {
    "masks": ("train_masks",),
    "margins": ("train_margins", "test_margins"),
    "logits": ("train_logits", "test_logits"),
    "datamodels": (),
}
DEFAULT_ARRAYS = ("masks", "margins")
# expected compression ratios, for the dry run's store size (benchmarks/RESULTS.md)
RATIO = {np.dtype(bool): 7.96, np.dtype(np.float16): 1.2}


@dataclass
class ConversionPlan:
    """Everything a conversion will do, computed from the headers alone (``--dry-run`` prints it)."""

    source: Source
    dest: str
    dataset: str
    pct: int
    models: int
    rows: tuple[int, int]
    eval_rows: tuple[int, int]
    arrays: list[ArrayPlan]
    headers: dict[str, NpyHeader]
    datamodels: dict[str, int] = field(default_factory=dict)
    n_workers: int = 1
    max_memory: int = 0

    @property
    def nbytes(self) -> int:
        """Bytes to transfer from the source."""
        return sum(p.nbytes for p in self.arrays) + sum(self.datamodels.values())

    @property
    def store_bytes(self) -> int:
        """Expected size of the store."""
        return int(sum(p.nbytes / RATIO[p.dtype] for p in self.arrays) + sum(self.datamodels.values()))

    def fingerprint(self) -> dict:
        """What identifies this conversion: a resume must match it."""
        return {
            "dataset": self.dataset,
            "pct": self.pct,
            "models": self.models,
            "rows": list(self.rows),
            "eval_rows": list(self.eval_rows),
            "arrays": store.array_fingerprints(self.arrays),
        }

    def describe(self) -> str:
        """The plan, for people."""
        price = catalog.catalog()["price_per_gb"]
        lines = [f"convert {self.dataset} {self.pct}% from {self.source.url} into {self.dest}"]
        lines.append(
            f"  models {self.rows[0]:,}:{self.rows[1]:,} of {self.models:,}; evaluation models "
            f"{self.eval_rows[0]:,}:{self.eval_rows[1]:,}"
        )
        for p in self.arrays:
            shape = " x ".join(f"{n:,}" for n in (self.rows[1] - self.rows[0], *p.shape[1:]))
            lines.append(
                f"  {p.name:14} {shape:>26} {str(p.dtype):8} {p.nbytes / 2**30:8.2f} GB  "
                f"chunks {'x'.join(map(str, p.chunks))}  shards {'x'.join(map(str, p.shards))}  {len(p.bands)} bands"
            )
        for split, size in self.datamodels.items():
            lines.append(
                f"  datamodels/{split:5} {datamodels_key(self.dataset, split, self.pct):>26} {size / 2**30:17.2f} GB"
            )
        pays = " (requester pays)" if self.source.pays else ""
        lines.append(
            f"  transfer {self.nbytes / 2**30:.2f} GB, AWS cost about ${self.nbytes / 2**30 * price:.2f}{pays}"
            if self.source.protocol == "s3"
            else f"  read {self.nbytes / 2**30:.2f} GB"
        )
        lines.append(
            f"  store about {self.store_bytes / 2**30:.2f} GB; {self.n_workers} band(s) at once, peak memory within "
            f"{self.max_memory / 2**30:.2f} GB"
        )
        return "\n".join(lines)


def plan_conversion(
    source: Source,
    dest: str,
    dataset: str,
    pct: int,
    *,
    arrays: tuple[str, ...] = DEFAULT_ARRAYS,
    models: str | None = None,
    eval_rows: str | int | None = None,
    max_memory: int | str = "2GB",
    cores: int | None = None,
) -> ConversionPlan:
    """Read the headers and plan the conversion (no data is read)."""
    unknown = set(arrays) - set(ARRAY_GROUPS)
    if unknown:
        raise DmstoreError(f"unknown --arrays {', '.join(sorted(unknown))}: choose from {', '.join(ARRAY_GROUPS)}")
    names = [name for group in arrays for name in ARRAY_GROUPS[group]]
    headers = {}
    for name in names:
        key = data_key(dataset, name, pct)
        size = source.size(key)
        header = source.header(key, size)
        dtype, _ = catalog.KINDS[name]
        check_layout(header, source.describe(key), dtype=dtype, ndim=3 if name.endswith("logits") else 2, size=size)
        headers[name] = header
    n_models = _check_shapes(headers)
    rows = parse_rows(models, n_models) if n_models else (0, 0)
    eval_range = _eval_range(source, dataset, pct, eval_rows, n_models) if n_models else (0, 0)
    plans = [plan_array(name, h.shape, h.dtype, rows) for name, h in headers.items()]
    datamodels = {}
    if "datamodels" in arrays:
        for split in ("test", "train"):
            key = datamodels_key(dataset, split, pct)
            if source.exists(key):
                datamodels[split] = source.size(key)
        if not datamodels:
            raise DmstoreError(
                f"no datamodels .pt files for {dataset} {pct}% at {source.describe(f'{dataset}/datamodels/')}"
            )
    budget = parse_budget(max_memory)
    largest = max((p.band_bytes for p in plans), default=0)
    n_workers = threads_for(budget, largest, cores or os.cpu_count() or 1) if plans else 1
    return ConversionPlan(
        source, dest, dataset, pct, n_models, rows, eval_range, plans, headers, datamodels, n_workers, budget
    )


def convert(
    source: str | Source,
    dest: str,
    dataset: str,
    pct: int,
    *,
    arrays: tuple[str, ...] = DEFAULT_ARRAYS,
    models: str | None = None,
    eval_rows: str | int | None = None,
    max_memory: int | str = "2GB",
    scheduler=None,
    dest_storage_options: dict | None = None,
    dry_run: bool = False,
    progress: bool = True,
) -> ConversionPlan:
    """Convert (or resume converting) ``dataset`` at ``pct``% from ``source`` into the store ``dest``.

    Parameters
    ----------
    source
        Bucket/prefix URL, local folder, or a :class:`Source` (requester pays, endpoint...).
    dest
        Store path or URL (an S3 store needs ``scheduler`` workers that can reach it).
    arrays
        Groups from ``masks``, ``margins``, ``logits``, ``datamodels``.
    models
        ``START:STOP`` rows to convert (all by default).
    eval_rows
        The evaluation models: a count of last rows or ``START:STOP``; by default 10,000 for
        published data, or what ``dmstore example`` recorded beside its matrices.
    max_memory
        Bound on the peak resident memory of the whole conversion (driver and local workers).
    scheduler
        ``None`` or ``"local"``: a local cluster of worker processes, each with its share of
        ``max_memory`` as its Dask memory limit; an address or a client: that cluster, whose
        workers' own memory limits must hold one band each (``max_memory`` does not apply).
    dry_run
        Plan only: print nothing, read no data, return the plan.
    """
    source = source if isinstance(source, Source) else Source(source)
    plan = plan_conversion(
        source, dest, dataset, pct, arrays=arrays, models=models, eval_rows=eval_rows, max_memory=max_memory
    )
    if dry_run:
        return plan
    _refuse_foreign(plan, dest_storage_options)  # before the lock writes anything there
    try:
        with store_lock(dest, "convert", f"dmstore convert {dataset} {pct}%", dest_storage_options):
            attrs = _check_destination(plan, dest_storage_options)  # as the run before this one left it
            if attrs is None:
                _create(plan, dest_storage_options)
            store.remove_abandoned_records(dest, dest_storage_options)  # of a run killed while recording
            largest = max((p.band_bytes for p in plan.arrays), default=0)
            with budget_client(  # verify, repair and bands within one budget
                scheduler,
                plan.max_memory,
                driver=DRIVER_BYTES,
                worker=WORKER_BYTES + BAND_MEMORY_FACTOR * largest,
                threads=True,
            ) as client:
                if attrs is not None and attrs.get("dmstore_status") == "complete":
                    _forget_damaged(plan, client, dest_storage_options, progress)
                done = store.read_records(dest, dest_storage_options)
                pending = [(p, band) for p in plan.arrays for band in p.bands if (p.name, *band) not in done]
                if pending:
                    _run_bands(plan, pending, client, dest_storage_options, progress)
            for split in plan.datamodels:
                _import_datamodels(plan, split, dest_storage_options)
            _finish(plan, dest_storage_options)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DmstoreError(
                f"the destination {dest} is full: free space, then run the same command to resume", exit_code=1
            ) from exc
        raise
    return plan


def convert_band(
    source: Source, key: str, offset: int, plan: ArrayPlan, dest: str, dest_options: dict | None, start: int, stop: int
) -> tuple[str, int, int]:
    """Dask task: read rows ``[start, stop)`` in one range, write their shard, record the checksum.

    The task owns shard row-block ``block`` and writes it whole (replacing what an earlier,
    interrupted try may have left), with the bytes Zarr itself would write (:mod:`dmstore.io.shard`).
    """
    begin = offset + start * plan.row_bytes
    data = source.read(key, begin, begin + (stop - start) * plan.row_bytes)
    band = np.frombuffer(data, dtype=plan.dtype).reshape((stop - start, *plan.shape[1:]))
    block = (start - plan.rows[0]) // plan.shards[0]
    pieces = shard_pieces(band, plan.chunks, blosc(store.codec(plan.dtype)))
    store.write_shard(dest, dest_options, plan.name, block, len(plan.shape), pieces)
    store.write_record(dest, dest_options, plan.name, start, stop, store.checksum(data))
    return plan.name, start, stop


def _run_bands(plan: ConversionPlan, pending: list, scheduler, dest_options: dict | None, progress: bool) -> None:
    total = sum((b - a) * p.row_bytes for p, (a, b) in pending)
    with (
        dask_client(scheduler, n_workers=plan.n_workers) as client,
        tqdm(total=total, unit="B", unit_scale=True, desc="convert", disable=not progress) as bar,
    ):
        source = client.scatter(plan.source, broadcast=True)
        futures = {}
        for p, (start, stop) in pending:
            key = data_key(plan.dataset, p.name, plan.pct)
            future = client.submit(
                convert_band,
                source,
                key,
                plan.headers[p.name].offset,
                p,
                plan.dest,
                dest_options,
                start,
                stop,
                key=f"band-{p.name}-{start}-{stop}",
                pure=False,
            )
            futures[future] = (stop - start) * p.row_bytes
        try:
            for future in as_completed(futures, loop=client.loop):
                future.result()
                bar.update(futures[future])
        except BaseException:
            client.cancel(list(futures))
            raise


def _refuse_foreign(plan: ConversionPlan, dest_options: dict | None) -> None:
    """Refuse a destination that holds anything but what dmstore wrote (its ``_dmstore`` folder:
    locks and band records). A half-written skeleton of a run in progress is dmstore's: the lock
    then says that run is busy."""
    fs, path = fsspec.core.url_to_fs(plan.dest, **(dest_options or {}))
    entries = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path)] if fs.exists(path) else []
    if entries and "_dmstore" not in entries:
        raise DmstoreError(
            f"{plan.dest} exists and is not a dmstore store: choose a new destination (nothing was changed)"
        )


def _check_destination(plan: ConversionPlan, dest_options: dict | None) -> dict | None:
    """Under the lock: the attributes of the store this conversion resumes, or None for a new one
    (or the skeleton of a run that crashed while writing it); refuse another conversion's store."""
    attrs = store.root_attrs(plan.dest, dest_options)
    if not attrs:
        return None
    if attrs.get("dmstore_plan") != plan.fingerprint():
        held = f"{attrs.get('dataset', 'unknown')} {attrs.get('pct', '?')}%" if "dataset" in attrs else "other data"
        raise DmstoreError(
            f"{plan.dest} already holds {held} converted with other settings: choose another destination "
            "or repeat the original command to resume it"
        )
    return attrs


def _create(plan: ConversionPlan, dest_options: dict | None) -> None:
    """Write the skeleton of a new store: metadata, coordinates and provenance."""
    files = {
        plan.source.describe(data_key(plan.dataset, n, plan.pct)): h.offset + h.nbytes for n, h in plan.headers.items()
    }
    attrs = store.provenance(plan.dataset, plan.pct, plan.source.url, files, plan.fingerprint())
    store.create_skeleton(plan.dest, plan.arrays, _coords(plan), attrs, dest_options)


def _forget_damaged(plan: ConversionPlan, scheduler, dest_options: dict | None, progress: bool) -> None:
    """Check a complete store and forget its damaged bands, so that this run rewrites them."""
    damaged = verify(plan.dest, storage_options=dest_options, scheduler=scheduler, progress=progress)
    for band in damaged:
        store.delete_record(plan.dest, dest_options, band.array, band.start, band.stop)
    if damaged:
        store.set_root_attrs(plan.dest, dest_options, {"dmstore_status": "converting"})


def _coords(plan: ConversionPlan) -> dict:
    model = np.arange(*plan.rows, dtype=np.int64)
    split = np.where((model >= plan.eval_rows[0]) & (model < plan.eval_rows[1]), "eval", "fit")
    coords = {"model": model, "split": labels.encode("model", split, labels.MODEL_SPLITS)}
    for name, header in plan.headers.items():
        axis = name.split("_", 1)[0]
        coords[axis] = np.arange(header.shape[1], dtype=np.int64)
        if name.endswith("logits"):
            names = (
                catalog.dataset_info(plan.dataset).get("classes")
                if plan.dataset in catalog.catalog()["datasets"]
                else None
            )
            names = names if names and len(names) == header.shape[2] else [str(c) for c in range(header.shape[2])]
            coords["class"] = labels.encode("class", names, names)
    return coords


def _finish(plan: ConversionPlan, dest_options: dict | None) -> None:
    records = store.read_records(plan.dest, dest_options)
    bands = {p.name: [[a, b, records[(p.name, a, b)]] for a, b in p.bands] for p in plan.arrays}
    store.set_root_attrs(plan.dest, dest_options, {"dmstore_status": "complete", "dmstore_bands": bands})


def _import_datamodels(plan: ConversionPlan, split: str, dest_options: dict | None) -> None:
    from dmstore.conversion.torchio import import_datamodels

    import_datamodels(plan.source, datamodels_key(plan.dataset, split, plan.pct), plan.dest, split, dest_options)


def _check_shapes(headers: dict[str, NpyHeader]) -> int:
    rows = {name: h.shape[0] for name, h in headers.items()}
    if len(set(rows.values())) > 1:
        listing = ", ".join(f"{n} {m:,}" for n, m in rows.items())
        raise DmstoreError(
            f"the matrices have different numbers of models ({listing}): they must come from one experiment"
        )
    for axis in ("train", "test"):
        widths = {h.shape[1] for n, h in headers.items() if n.startswith(axis)}
        if len(widths) > 1:
            raise DmstoreError(f"the {axis} matrices disagree on the number of {axis} examples: {sorted(widths)}")
    return next(iter(rows.values()), 0)


def _eval_range(source: Source, dataset: str, pct: int, eval_rows: str | int | None, n_models: int) -> tuple[int, int]:
    if eval_rows is None:
        eval_rows = _default_eval_rows(source, dataset, pct)
    if isinstance(eval_rows, int) or str(eval_rows).isdigit():
        count = int(eval_rows)
        if not 0 <= count < n_models:
            raise DmstoreError(f"--eval-rows {count} must be below the {n_models:,} models")
        return n_models - count, n_models
    return parse_rows(str(eval_rows), n_models, "--eval-rows")


def _default_eval_rows(source: Source, dataset: str, pct: int) -> int:
    """10,000 for published data; what a ``dmstore example`` recorded; otherwise the user must say."""
    if dataset in catalog.catalog()["datasets"]:
        return catalog.catalog()["eval_models"]
    record = f"{dataset}/example_{pct}pct.json"
    if source.exists(record):
        example = json.loads(source.read(record, 0, source.size(record)))
        params = example["params"]
        if example["rows_done"] < params["models"] + params["eval_models"]:
            raise DmstoreError(
                f"the example at {source.describe(dataset)} is unfinished: run the same `dmstore example` "
                "command again first"
            )
        return params["eval_models"]
    raise DmstoreError(
        f"{dataset!r} is not published data: say which rows are evaluation models with --eval-rows (e.g. "
        "--eval-rows 2000 for the last 2000)"
    )
