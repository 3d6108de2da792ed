"""Where Dask work runs: a local cluster of worker processes, or a cluster the user already has.

``scheduler`` means the same in every dmstore function and command: ``None`` is the job's default
on one machine (a local cluster of worker processes for convert, verify, evaluate and stats; this
process for fit, whose target blocks share the counts it holds in memory), ``"local"`` a local
cluster of worker processes, an address (``tcp://host:8786``) or a ``Client`` that cluster. The
dashboard link is logged (logger ``dmstore``; the CLI prints it) when a cluster starts or is joined.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from dask.distributed import Client, LocalCluster

from dmstore.errors import DmstoreError

logger = logging.getLogger("dmstore")


@contextmanager
def dask_client(
    scheduler: str | Client | None = None,
    *,
    n_workers: int | None = None,
    memory_limit: int | str | None = None,
) -> Iterator[Client]:
    """Yield a Dask client.

    Parameters
    ----------
    scheduler
        ``None`` or ``"local"`` start a local cluster of worker processes (one thread each) and
        close it afterwards; an address (``tcp://host:8786``) connects to an existing cluster; a
        ``Client`` is used as it is and left open.
    n_workers
        Worker processes of the local cluster (default: one per core).
    memory_limit
        Per-worker memory limit of the local cluster in bytes (Dask's ``memory_limit``: a worker
        past it is restarted); none by default.
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
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        memory_limit=memory_limit if memory_limit is not None else 0,
        dashboard_address=":0",
        host="127.0.0.1",
        silence_logs=logging.ERROR,
    )
    with cluster, Client(cluster) as client:
        logger.info(
            "started a local Dask cluster of %d worker processes (dashboard %s)",
            len(cluster.workers),
            client.dashboard_link,
        )
        yield client
