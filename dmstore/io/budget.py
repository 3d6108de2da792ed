"""How one memory budget splits between this process and local Dask worker processes (pure
arithmetic, no I/O).

A command that runs on a local cluster (convert, verify, evaluate, stats) keeps its whole run,
this process and every worker, within one budget (``--max-memory``): this process takes its
``driver`` bytes, each worker needs ``worker`` bytes for one task at a time, and the rest of the
budget is shared out equally as the workers' Dask memory limits.
"""

from __future__ import annotations

from dask.utils import parse_bytes

from dmstore.errors import DmstoreError

# Resident bytes before any data is read: the driver with the scheduler and the nannies (plus
# multiprocessing's resource tracker), and each worker process once it has loaded dmstore
# (benchmarks/bench_convert.py: driver 188 MiB at peak + tracker 12 MiB; idle worker 181 MiB).
DRIVER_BYTES = 224 * 2**20
WORKER_BYTES = 192 * 2**20


def parse_budget(value: int | str, option: str = "--max-memory") -> int:
    """Bytes of a memory budget given as a number or a size (``"2GB"``, ``"512MiB"``, ``"1e9"``).

    Raises
    ------
    DmstoreError
        When ``value`` is not a positive size (``option`` names it in the message).
    """
    try:
        size = parse_bytes(value) if isinstance(value, str) else int(value)
    except (ValueError, TypeError) as exc:
        raise DmstoreError(f"{option} {value!r} is not a size: write it like 8GiB or 500MB") from exc
    if size <= 0:
        raise DmstoreError(f"{option} {value!r} must be positive")
    return size


def local_workers(memory: int, driver: int, worker: int, cores: int, option: str = "--max-memory") -> int:
    """Worker processes (at most ``cores``) that keep ``driver`` plus ``worker`` bytes each within
    ``memory`` bytes.

    Raises
    ------
    DmstoreError
        When not even one worker fits, naming the budget that would (``option`` is the option
        that sets it).
    """
    workers = int((memory - driver) // worker)
    if workers < 1:
        need = (driver + worker) / 2**20
        raise DmstoreError(f"{option} {memory / 2**20:.0f} MiB is too small: give at least {need:.0f} MiB")
    return min(workers, cores)


def worker_share(memory: int, driver: int, workers: int) -> int:
    """Each worker's memory limit: the budget left after the driver, shared out equally."""
    return (memory - driver) // max(1, workers)
