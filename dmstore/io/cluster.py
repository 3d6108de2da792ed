"""Where Dask work runs: a local cluster of worker processes, or a cluster the user already has.

``scheduler`` means the same in every dmstore function and command: ``None`` is the job's default
on one machine (threads of this process for convert, verify, evaluate and stats, whose reads,
codecs, checksums, products and sums release the GIL; this process for fit, whose target blocks
share the counts it holds in memory), ``"local"`` a local cluster of
worker processes, an address (``tcp://host:8786``) or a ``Client`` that cluster. The dashboard
link is logged (logger ``dmstore``; the CLI prints it) when a cluster starts or is joined.

Memory (:func:`budget_client`): a local cluster runs as many workers (or threads) as the budget
holds, each worker process limited to its share; on a cluster the user has, each worker's own
memory limit must hold one task, or the command refuses before it starts.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import dask.config
from dask.distributed import Client, LocalCluster

from dmstore.errors import DmstoreError
from dmstore.io.budget import WORKER_BYTES, local_workers, worker_share

logger = logging.getLogger("dmstore")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
#: Where glibc's adaptive thresholds settle in a process that has freed large arrays (their
#: 64-bit maximum: arrays up to 32 MiB come from the heap, up to 64 MiB of it is kept for reuse).
SETTLED = {M_MMAP_THRESHOLD: 32 * 2**20, M_TRIM_THRESHOLD: 64 * 2**20}
_allocator = threading.Lock()  # guards _returning: the clusters on threads of this process running
_returning = 0


@contextmanager
def dask_client(
    scheduler: str | Client | None = None,
    *,
    n_workers: int | None = None,
    memory_limit: int | str | None = None,
    threads: bool = False,
) -> Iterator[Client]:
    """Yield a Dask client.

    Parameters
    ----------
    scheduler
        ``None`` or ``"local"`` start a local cluster of worker processes (one thread each) and
        close it afterwards; an address (``tcp://host:8786``) connects to an existing cluster; a
        ``Client`` is used as it is and left open.
    n_workers
        Worker processes of the local cluster (default: one per core); with ``threads``, its
        threads.
    memory_limit
        Per-worker memory limit of the local cluster in bytes (Dask's ``memory_limit``: a worker
        past it is restarted); none by default.
    threads
        With ``scheduler=None``: one worker inside this process, ``n_workers`` threads (for work
        that releases the GIL: no worker processes to start, nothing sent between processes).
    """
    if isinstance(scheduler, Client):
        yield scheduler
        return
    if scheduler not in (None, "local"):
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise DmstoreError(
                f"cannot reach the Dask scheduler at {scheduler}: {exc}; "
                "check the address or leave out --scheduler to run locally"
            ) from exc
        with client:
            logger.info("joined the Dask cluster at %s (dashboard %s)", scheduler, client.dashboard_link)
            yield client
        return
    in_process = threads and scheduler is None
    cluster = LocalCluster(
        n_workers=1 if in_process else n_workers,
        threads_per_worker=(n_workers or os.cpu_count() or 1) if in_process else 1,
        processes=not in_process,
        memory_limit=memory_limit if memory_limit is not None else 0,
        dashboard_address="127.0.0.1:0",  # this machine only, the workers' HTTP servers too
        worker_dashboard_address="127.0.0.1:0",
        silence_logs=logging.ERROR,
        **({} if in_process else {"host": "127.0.0.1"}),  # in this process Dask talks in memory
    )
    with freed_memory_returned() if in_process else nullcontext(), cluster, Client(cluster) as client:
        link = client.dashboard_link
        if in_process:  # Dask names the machine's address in the link; the dashboard listens on loopback
            what = f"{sum(client.nthreads().values())} threads in this process"
            link = f"http://127.0.0.1:{cluster.scheduler.http_server.port}/status"
        else:
            what = f"{len(cluster.workers)} worker processes"
        logger.info("started a local Dask cluster of %s (dashboard %s)", what, link)
        yield client


@contextmanager
def freed_memory_returned() -> Iterator[None]:
    """While a cluster runs on threads of this process, have the C allocator give freed memory
    back to the system, as Dask's nanny has its worker processes do (``MALLOC_TRIM_THRESHOLD_`` of
    ``distributed.nanny.pre-spawn-environ``, 64 KiB). Otherwise glibc keeps what the threads freed:
    stats on 2 threads of a 24,000 x 6,000 store peaked at 610 MiB instead of 323 MiB
    (tests/test_memory.py).

    Afterwards the allocator keeps freed memory for reuse again, with :data:`SETTLED` (``mallopt``
    cannot give back glibc's adaptive thresholds). Left at 64 KiB, the setting slowed the rest of
    the process: every array of over 128 KiB was mapped afresh, and the fits of a learning curve
    took 1.5x the time. Overlapping clusters share the setting; nothing where the C library is not
    glibc.
    """
    global _returning
    libc = _glibc()
    threshold = dask.config.get("distributed.nanny.pre-spawn-environ", {}).get("MALLOC_TRIM_THRESHOLD_")
    if libc is None or not threshold:
        yield
        return
    with _allocator:
        _returning += 1
        libc.mallopt(M_TRIM_THRESHOLD, int(threshold))
    try:
        yield
    finally:
        with _allocator:
            _returning -= 1
            if not _returning:
                for parameter, value in SETTLED.items():
                    libc.mallopt(parameter, value)


def _glibc() -> ctypes.CDLL | None:
    """This process's C library where it is glibc (Linux), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # another C library (musl)
        return None
    return libc


@contextmanager
def budget_client(
    scheduler: str | Client | None,
    memory: int,
    *,
    driver: int,
    worker: int,
    option: str = "--max-memory",
    threads: bool = False,
) -> Iterator[Client]:
    """Yield a Dask client whose workers each have ``worker`` bytes for their tasks.

    ``None`` or ``"local"``: a local cluster within ``memory`` bytes in all, this process's
    ``driver`` bytes included (:func:`dmstore.io.budget.local_workers`; each worker's Dask memory
    limit is its :func:`~dmstore.io.budget.worker_share`). With ``threads``, ``None`` runs the
    tasks on threads of this process instead, as many as hold ``worker`` bytes less a worker
    process's own (``WORKER_BYTES``) each. An address or a ``Client``: that cluster, whose
    workers' memory limits must be at least ``worker`` bytes (``memory`` does not apply there;
    ``option`` names it in the messages).
    """
    if scheduler is None and threads:
        n = local_workers(memory, driver, worker - WORKER_BYTES, os.cpu_count() or 1, option)
        with dask_client(None, n_workers=n, threads=True) as client:
            yield client
        return
    if scheduler in (None, "local"):
        n = local_workers(memory, driver, worker, os.cpu_count() or 1, option)
        with dask_client(scheduler, n_workers=n, memory_limit=worker_share(memory, driver, n)) as client:
            yield client
        return
    with dask_client(scheduler) as client:
        check_workers(client, worker)
        if not isinstance(scheduler, Client):  # a client passed in is the caller's: it knows
            logger.info("on this cluster %s does not apply: each worker runs one task at a time", option)
        yield client


def check_workers(client: Client, need: int) -> None:
    """Refuse a cluster with a worker whose memory limit is below ``need`` bytes (a worker without
    a limit is trusted)."""
    limits = [w.get("memory_limit") or 0 for w in client.scheduler_info(n_workers=-1)["workers"].values()]
    small = [limit for limit in limits if 0 < limit < need]
    if small:
        raise DmstoreError(
            f"the cluster's workers have {min(small) / 2**20:.0f} MiB each but one task of this job needs "
            f"{need / 2**20:.0f} MiB: start them with a larger --memory-limit"
        )
