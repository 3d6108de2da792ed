"""--max-memory bounds the peak resident memory of a whole run (this process and its threads, or
its worker processes) in a conversion, a repair, a verify, stats and evaluate; each worker of a
local cluster (``--scheduler local``) stays within its share of it."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import xarray as xr
from conftest import write_layout
from dmstore.conversion.plan import plan_array, threads_for

from dmstore.io.budget import DRIVER_BYTES
from dmstore.io.datamodels import write_datamodels

BUDGET = 600_000_000


def run_measured(argv: list[str]) -> tuple[int, dict[int, int], str]:
    """Run ``argv``; return the peak RSS of its whole process tree and of each child Python
    process (a worker). A short-lived helper such as ``ldconfig``, seen once at 1.4 MB, counts in
    the peak but is no worker; nor is a fork caught before its ``exec``: it still has the parent's
    command line and, shared, the parent's RSS (seen once in CI at 147 MB, under convert)."""
    began = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak, children = 0, {}
    tree: dict[int, tuple[psutil.Process, bool]] = {}  # pid: its process, whether a worker (as last seen)

    def sample() -> None:  # the RSS every 20 ms; the tree (a scan of /proc) every 100 ms
        nonlocal peak
        for tick in itertools.count():
            if process.poll() is not None:
                break
            if tick % 5 == 0:
                try:
                    root = psutil.Process(process.pid)
                    found = [root, *root.children(recursive=True)]
                except psutil.Error:  # the root gone
                    found = []
                for p in found:
                    try:
                        command = p.cmdline()
                        python = "python" in p.name()
                    except psutil.Error:  # gone, or a zombie, between the listing and the reading
                        continue
                    helper = "resource_tracker" in " ".join(command) or command == argv
                    tree[p.pid] = p, p is not root and python and not helper
            total = 0
            for pid, (p, worker) in list(tree.items()):
                try:
                    rss = p.memory_info().rss
                except psutil.Error:  # gone
                    del tree[pid]
                    continue
                total += rss
                if worker:
                    children[pid] = max(children.get(pid, 0), rss)
            peak = max(peak, total)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    output = process.communicate(timeout=600)[0].decode()
    sampler.join()
    assert process.returncode == 0, output
    largest = max(children.values(), default=0) / 2**20
    seconds = time.monotonic() - began
    print(f"{argv[3]}: peak {peak / 2**20:.0f} MiB, {len(children)} children,",
          f"largest {largest:.0f} MiB, {seconds:.1f} s")
    return peak, children, output


def test_peak_memory_within_budget_and_each_worker_within_its_share(tmp_path):
    root = tmp_path / "source"
    # 24,000 models x 6,000 train examples: 144 MB masks + 288 MB margins + 96 MB test margins
    arrays = write_layout(root, models=24_000, n_train=6000, n_test=2000, seed=5)
    source_bytes = sum(a.nbytes for a in arrays.values())
    del arrays
    store = tmp_path / "s.zarr"
    argv = [sys.executable, "-m", "dmstore", "convert", str(root), str(store), "--dataset", "toy", "--pct", "50",
            "--eval-rows", "2400", "--no-progress", "--max-memory", str(BUDGET)]
    largest = plan_array("train_margins", (24_000, 6000), np.dtype(np.float16)).band_bytes
    threads = threads_for(BUDGET, largest, len(os.sched_getaffinity(0)))

    peak, children, output = run_measured(argv)
    assert source_bytes > 0.85 * BUDGET  # the input is about as large as the budget...
    assert 0 < peak <= BUDGET, f"peak {peak / 1e6:.0f} MB over the {BUDGET / 1e6:.0f} MB budget"  # ...the peak is not
    # the bands run on threads of this process: no worker process is started
    assert f"cluster of {threads} threads in this process" in output and not children, (output, children)
    np.testing.assert_array_equal(
        xr.open_zarr(store, zarr_format=3).test_margins[-5:].values,
        np.load(root / "toy/data/test_margins_50pct.npy", mmap_mode="r")[-5:],
    )

    shard = sorted(Path(store, "train_margins", "c").iterdir(), key=lambda p: int(p.name))[3] / "0"
    shard.unlink()  # a lost shard: the same command checks the store and repairs it, within the budget
    peak, children, output = run_measured(argv)
    assert shard.exists() and 0 < peak <= BUDGET and not children, (peak, children)
    np.testing.assert_array_equal(
        xr.open_zarr(store, zarr_format=3).train_margins[3 * 2048 : 3 * 2048 + 3].values,
        np.load(root / "toy/data/train_margins_50pct.npy", mmap_mode="r")[3 * 2048 : 3 * 2048 + 3],
    )

    # the analyses on the same store, within the same budget (random datamodels: the memory of
    # evaluate does not depend on their values)
    rng = np.random.default_rng(0)
    weight = (0.01 * rng.standard_normal((6000, 2000))).astype(np.float32)
    write_datamodels(store, "test", weight, np.zeros(2000, np.float32), np.ones(2000, np.float32))
    batch = 128 * 2**20
    stats = ["stats", str(store), "--no-plot", "--influence", *map(str, range(20))]
    for command in (
        ["verify", str(store)],
        stats,
        ["evaluate", str(store), "--no-plot", "--no-write", "--memory", str(batch)],
        ["stats", str(store), "--no-plot", "--scheduler", "local"],
    ):
        peak, children, output = run_measured(
            [sys.executable, "-m", "dmstore", *command, "--no-progress", "--max-memory", str(BUDGET)]
        )
        assert 0 < peak <= BUDGET, (command[0], peak)
        if "local" not in command:  # threads of this process, like convert
            assert "threads in this process" in output and not children, (output, children)
            continue
        # the share of each worker a local cluster started (a process caught starting up, a few
        # MB, is not one of them)
        started = int(re.search(r"local Dask cluster of (\d+) worker", output).group(1))
        assert children and max(children.values()) <= (BUDGET - DRIVER_BYTES) // started, (started, children)


FAULTS = """
import resource
import numpy as np
from dmstore.io.cluster import dask_client

def faults():  # minor page faults of 50 arrays of 400 kB allocated, filled and freed in turn
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):
        np.ones(50_000)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

with dask_client(None, n_workers=1, threads=True):
    during = faults()
print(during, faults())
"""


def test_a_cluster_on_threads_gives_freed_memory_back_while_it_runs_and_not_after():
    """While a cluster runs on threads of a process, the C allocator gives freed memory back to the
    system (each array's pages are faulted in afresh); after it, freed memory is kept for reuse
    again, so that later work in the process (the fits of a learning curve, a notebook) is not
    slowed (the setting once outlived the cluster: the curve's fits took 1.5x the time)."""
    done = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    during, after = map(int, done.stdout.split())
    pages = 50 * 400_000 // os.sysconf("SC_PAGE_SIZE")
    assert during > pages // 2 and after < pages // 20, (during, after, pages)
