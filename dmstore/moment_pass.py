"""One streaming pass over a store's model rows: the regression's sufficient statistics.

Each task reads one shard-aligned band of rows with zarr (the masks and the target margins),
checks that the margins are finite, and adds the band's :class:`~dmstore.moments.Moments` to a
running sum. By default the bands run in this process: the band products use every core through
BLAS (or the GPU), a thread reads the next band meanwhile, and the sums are added in place. On a
Dask cluster the bands form one chain of tasks per worker (each link adds its band to the
previous link's sum, so a worker holds one sum, not one per band), and the chains are tree-summed
at the end.

On one machine the in-process pass is the faster one (measured in benchmarks/RESULTS.md: a local
cluster spends seconds starting and moves ``N x N`` sums between processes, and each of its
workers holds up to three of them); Dask pays off on a cluster of several machines.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import zarr
from dask.distributed import Client, as_completed

from dmstore.cluster import dask_client
from dmstore.dataset import as_store
from dmstore.moments import Moments, band_moments
from dmstore.rows import band_size, shard_bands

#: Non-finite margins a band reports by position (all of them are counted).
BAD_REPORTED = 5
#: ``scheduler`` value for a local Dask cluster of worker processes on this machine.
LOCAL_CLUSTER = "local"

Band = slice | np.ndarray


@dataclass
class PassSums:
    """Statistics of the fit and validation rows seen so far, and their non-finite margins.

    ``bad`` holds up to :data:`BAD_REPORTED` ``(row position, target column)`` pairs of
    non-finite margins; ``n_bad`` counts them all.
    """

    fit: Moments | None = None
    val: Moments | None = None
    bad: list[tuple[int, int]] = field(default_factory=list)
    n_bad: int = 0

    def __add__(self, other: PassSums) -> PassSums:
        return PassSums(
            _plus(self.fit, other.fit),
            _plus(self.val, other.val),
            sorted(self.bad + other.bad)[:BAD_REPORTED],
            self.n_bad + other.n_bad,
        )


def _plus(a: Moments | None, b: Moments | None) -> Moments | None:
    if a is None or b is None:
        return b if a is None else a
    return a + b


@dataclass(frozen=True)
class BandTask:
    """What one task reads: ``band`` rows of ``train_masks`` and ``margins[:, columns]``."""

    store: Any
    storage_options: dict | None
    margins: str
    band: Band
    columns: slice
    kind: str  # "fit" or "val"


def read_band(task: BandTask) -> tuple[np.ndarray, np.ndarray]:
    """The band's masks ``[rows, N]`` (bool) and margins ``[rows, T]`` as stored."""
    group = zarr.open_group(as_store(task.store, task.storage_options, read_only=True), mode="r")
    masks, margins = group["train_masks"], group[task.margins]
    if isinstance(task.band, slice):
        return masks[task.band], margins[task.band, task.columns]
    rows = np.asarray(task.band)
    return (
        masks.get_orthogonal_selection((rows, slice(None))),
        margins.get_orthogonal_selection((rows, task.columns)),
    )


def band_sums(task: BandTask, masks: np.ndarray, margins: np.ndarray, xp: ModuleType = np) -> PassSums:
    """The :class:`PassSums` of one band that has been read."""
    bad = ~np.isfinite(margins)
    n_bad = int(bad.sum())
    positions: list[tuple[int, int]] = []
    if n_bad:
        rows = np.arange(task.band.start, task.band.stop) if isinstance(task.band, slice) else task.band
        local = np.argwhere(bad)[:BAD_REPORTED]
        positions = [(int(rows[i]), int(task.columns.start + j)) for i, j in local]
    moments = band_moments(masks, margins, xp)
    return PassSums(
        fit=moments if task.kind == "fit" else None,
        val=moments if task.kind == "val" else None,
        bad=positions,
        n_bad=n_bad,
    )


def add_band(total: PassSums | None, task: BandTask) -> PassSums:
    """A chain link: read ``task``'s band and add its statistics to ``total`` (a new object)."""
    part = band_sums(task, *read_band(task))
    return part if total is None else total + part


def dask_pass(client: Client, tasks: Sequence[BandTask], progress: Callable[[int], None]) -> PassSums:
    """Run the bands as one chain per worker thread; tree-sum the chains on the cluster.

    Memory per worker: a band (masks as bool, float32 and float64; margins as float64) and at
    most three sums (``8 (N^2 + N T)`` bytes each, for fit and for validation rows).
    """
    n_chains = max(1, min(len(tasks), sum(client.nthreads().values())))
    tails: list[Any] = [None] * n_chains
    links = []
    for i, task in enumerate(tasks):
        chain = i % n_chains
        tails[chain] = client.submit(add_band, tails[chain], task, pure=False)
        links.append(tails[chain])
    rows = {link.key: band_size(task.band) for link, task in zip(links, tasks)}
    done = as_completed(links)
    del links
    for link in done:
        link.result()  # raise a task's error here
        progress(rows.pop(link.key))
    while len(tails) > 1:
        pairs = [client.submit(operator.add, a, b, pure=False) for a, b in zip(tails[::2], tails[1::2])]
        tails = pairs + tails[len(pairs) * 2 :]
    return tails[0].result()


def local_pass(tasks: Sequence[BandTask], xp: ModuleType, progress: Callable[[int], None]) -> PassSums:
    """Run the bands in this process with ``xp`` (a GPU: cupy), reading one band ahead.

    Memory: two bands read, one on the device, and the sums on the device (summed in place).
    """
    total = PassSums()
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(read_band, tasks[0]) if tasks else None
        for i, task in enumerate(tasks):
            masks, margins = pending.result()
            if i + 1 < len(tasks):
                pending = reader.submit(read_band, tasks[i + 1])
            part = band_sums(task, masks, margins, xp)
            for kind in ("fit", "val"):
                mine, theirs = getattr(total, kind), getattr(part, kind)
                if theirs is not None:
                    if mine is None:
                        setattr(total, kind, theirs)
                    else:
                        mine += theirs
            total.bad = sorted(total.bad + part.bad)[:BAD_REPORTED]
            total.n_bad += part.n_bad
            progress(band_size(task.band))
    return total


def moment_sums(
    store: Any,
    margins: str,
    rows: dict[str, np.ndarray],
    columns: slice,
    shard_rows: tuple[int, ...],
    *,
    xp: ModuleType,
    scheduler: Any,
    progress: Callable[[int], None],
    storage_options: dict | None = None,
) -> PassSums:
    """The statistics of the ``fit`` and ``val`` row positions of a store, in one pass.

    Each set of rows is cut into shard-aligned bands (``shard_rows``: the rows of each shard);
    ``scheduler``: ``None`` runs them in this process (with ``xp``: numpy or cupy), ``"local"``
    on a local Dask cluster of worker processes, an address or a ``Client`` on that cluster.
    ``progress`` is called with the rows of each band done.
    """
    tasks = [
        BandTask(store, storage_options, margins, band, columns, kind)
        for kind, positions in rows.items()
        for band in shard_bands(positions, shard_rows)
    ]
    if scheduler is None:
        return local_pass(tasks, xp, progress)
    with dask_client(None if scheduler == LOCAL_CLUSTER else scheduler) as client:
        return dask_pass(client, tasks, progress)
