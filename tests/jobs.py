"""Jobs the tests kill at random moments: a training job writing models into an experiment store,
and a job adding models to the persisted statistics.

Each job is a process of its own (:func:`start`), forked from a server process that has already
imported dmstore (multiprocessing's forkserver): it is killed with SIGKILL like any other process,
but skips the second of imports a fresh interpreter spends (the tests start dozens of jobs:
test_experiment took 44 s of machine CPU against 94 s with a fresh interpreter per job). Every
row is a function of the model number, so a serial write and any number of killed and restarted
jobs must give the same store."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from typing import Any

import numpy as np

#: What the server process imports once, before it forks the jobs.
PRELOAD = ["jobs", "s3fs", "dmstore.experiment.writer", "dmstore.fitting.passes"]


def row(model: int, spec: dict) -> dict:
    """The values of ``model`` for a store with this spec (deterministic)."""
    rng = np.random.default_rng(model)
    values: dict = {}
    for name, array in sorted(spec["arrays"].items()):
        shape = tuple(array["shape"])
        if name.endswith("masks"):
            values[name] = rng.random(shape) < 0.5
        else:
            values[name] = rng.standard_normal(shape).astype(np.float32)
    for name in sorted(spec["extras"]):
        values[name] = model if spec["extras"][name].startswith("int") else float(rng.random())
    return values


def write_models(store: str, models: list[int], started: Callable[[], None], pause: float = 0.002) -> None:
    """Write ``models`` into the experiment store, one every ``pause`` seconds (training)."""
    import dmstore

    with dmstore.writer(store) as w:
        started()  # the tests kill jobs from here on
        for model in models:
            time.sleep(pause)
            w.write(model, **row(model, w.spec))


def grow_statistics(store: str, models: int, started: Callable[[], None]) -> None:
    """Add the first ``models`` fit models to the persisted statistics of ``test`` (``grow_pass``)."""
    from dmstore.fitting.moments import Moments
    from dmstore.fitting.passes import PassPlan, grow_pass
    from dmstore.fitting.reads import BandReader

    started()
    moments, reader = Moments(store, "fit"), BandReader(store, "test")
    grow_pass(moments, reader, np.arange(models), PassPlan(256, False, 1), lambda rows: None)


def _run(job: Callable[..., None], args: tuple, environ: dict[str, str], started: Event) -> None:
    os.environ.update(environ)  # the test's environment (the server process may predate it)
    job(*args, started=started.set)


def start(job: Callable[..., None], *args: Any, timeout: float = 60) -> BaseProcess:
    """Start ``job(*args, started=...)`` in a process of its own; return the process once the job
    calls ``started``."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    started = context.Event()
    process = context.Process(target=_run, args=(job, args, dict(os.environ), started))
    process.start()
    if not started.wait(timeout):
        process.kill()
        raise TimeoutError(f"{job.__name__} did not start in {timeout} s (exit code {process.exitcode})")
    return process
