"""--max-memory bounds the peak resident memory of the whole conversion (driver and workers)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import psutil
from conftest import write_layout


def tree_rss(pid: int) -> int:
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def test_peak_memory_within_budget(tmp_path):
    root = tmp_path / "source"
    # 40,000 models x 6,000 train examples: 240 MB masks + 480 MB margins + 160 MB test margins
    arrays = write_layout(root, models=40_000, n_train=6000, n_test=2000, seed=5)
    source_bytes = sum(a.nbytes for a in arrays.values())
    del arrays
    budget = 1_000_000_000
    argv = [
        sys.executable,
        "-m",
        "dmstore",
        "convert",
        str(root),
        str(tmp_path / "s.zarr"),
        "--dataset",
        "toy",
        "--pct",
        "50",
        "--eval-rows",
        "4000",
        "--no-progress",
        "--max-memory",
        str(budget),
    ]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = 0

    def sample() -> None:
        nonlocal peak
        while process.poll() is None:
            peak = max(peak, tree_rss(process.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    output = process.communicate(timeout=600)[0].decode()
    sampler.join()
    assert process.returncode == 0, output
    assert source_bytes > 0.85 * budget  # the input is about as large as the budget...
    assert 0 < peak <= budget, (
        f"peak {peak / 1e6:.0f} MB over the {budget / 1e6:.0f} MB budget"
    )  # ...the peak stays within it
    ds_values = np.load(root / "toy/data/test_margins_50pct.npy", mmap_mode="r")
    import xarray as xr

    np.testing.assert_array_equal(
        xr.open_zarr(tmp_path / "s.zarr", zarr_format=3).test_margins[-5:].values, ds_values[-5:]
    )
