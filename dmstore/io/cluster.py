"""Where Dask work runs: a local cluster of worker processes, or a cluster the user already has."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from dask.distributed import Client, LocalCluster

from dmstore.errors import DmstoreError


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
        ``None`` starts a local cluster of worker processes (one thread each) and closes it
        afterwards; an address (``tcp://host:8786``) connects to an existing cluster; a
        ``Client`` is used as it is and left open.
    n_workers
        Worker processes of the local cluster (default: one per core).
    memory_limit
        Per-worker memory limit of the local cluster (Dask's ``memory_limit``).
    """
    if isinstance(scheduler, Client):
        yield scheduler
        return
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise DmstoreError(
                f"cannot reach the Dask scheduler at {scheduler}: {exc}; "
                "check the address or leave out --scheduler to run locally"
            ) from exc
        with client:
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
        yield client
