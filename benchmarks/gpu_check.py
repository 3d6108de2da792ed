"""The GPU check: CuPy against numpy, then a CIFAR-10-shaped ``dmstore fit --device cuda``, timed.

One script for a leased GPU machine (about 10 minutes at the defaults on an H200, 16 cores):

1. ``kernels``: the statistics pass's panel product (a band of 2,048 mask rows against a panel of
   4,096 columns, at ``--train`` width) with numpy's ``sgemm`` and on the device (counts equal,
   exactly), and the solver's path and refit of 8 targets on an in-memory problem (same ``lam``,
   weights within float32 rounding), timed on both;
2. ``fit``: a source in the published layout (``bench_fit_wide.make_source``: ``--models`` fit +
   1,000 evaluation models, ``--targets`` test targets with planted supports), converted, then
   ``dmstore fit --device cuda --targets 0:T`` (whole process tree's peak RSS sampled), planted
   supports recovered, and the device's own floor: a bare float32 ``X.T @ X`` of the same fit
   masks on the GPU; then ``dmstore fit --device cpu`` of ``--cpu-targets`` targets on the
   persisted statistics (no pass), for the per-target ratio of the solver.

``--device cpu`` runs the same on the CPU (small sizes: a check that the script works)::

    python benchmarks/gpu_check.py --train 2000 --models 3000 --targets 40 --cpu-targets 8 --device cpu

On the GPU machine (Python 3.12, CuPy there; zarr, numcodecs, dask, distributed, s3fs, crc32c and
array-api-compat carried as wheels, see the device tool's README), from the repository root::

    PYTHONPATH=.:/tmp/site python3 benchmarks/gpu_check.py --out $OUT/gpu
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_fit_wide import make_source, measure  # noqa: E402

DMSTORE = [sys.executable, "-m", "dmstore"]


def timed(function, *args, repeat: int = 3):
    """Best wall seconds of ``repeat`` calls and the last result."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = function(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def kernels(n_train: int, device_name: str) -> dict:
    """The pass's panel product and the solver's path on numpy and on the device."""
    from dmstore.fitting import solver
    from dmstore.fitting.device import CPU, Device, device
    from dmstore.fitting.moments import in_memory
    from dmstore.fitting.passes import new_panel, panel_product

    dev = device(device_name)
    rng = np.random.default_rng(0)
    masks = rng.random((2048, n_train), dtype=np.float32) < 0.5
    tile = min(4096, n_train)

    def product(on):
        panel = new_panel(0, tile, n_train, on)
        panel_product(panel, masks, 0, tile, on)
        return on.get(panel)

    cpu_s, cpu_panel = timed(lambda: product(Device(np, int8=False)))  # numpy's float32
    int8_s, int8_panel = timed(lambda: product(CPU)) if CPU.mask_matmul() else (float("nan"), cpu_panel)
    dev_s, dev_panel = timed(lambda: product(dev))  # get() copies to the host: the device has finished
    assert np.array_equal(cpu_panel, dev_panel), "the device's counts differ from numpy's"
    assert np.array_equal(cpu_panel, int8_panel), "the CPU's int8 counts differ from numpy's"
    models, width, targets = 4000, min(2000, n_train), 8
    x = rng.random((models, width)) < 0.5
    support = rng.choice(width, (targets, 10))
    y = np.stack([x[:, s].sum(axis=1) for s in support], axis=1) * 0.5 + rng.standard_normal((models, targets))
    fit_m, val_m = in_memory(x[:3600], y[:3600]), in_memory(x[3600:], y[3600:])
    common = dict(standardize=True, tol=1e-4, max_iter=10_000, dtype=np.float32, cap=width)

    def path(on):
        return lambda: solver.path(fit_m, val_m, lambdas=100, lambda_ratio=1e-3, patience=3, device=on, **common)

    cpu_path_s, cpu_path = timed(path(CPU), repeat=1)
    dev_path_s, dev_path = timed(path(dev), repeat=1)
    same_lam = float(np.mean(cpu_path.lam == dev_path.lam))
    error = float(np.linalg.norm(cpu_path.weight - dev_path.weight) / np.linalg.norm(cpu_path.weight))
    return {
        "panel_product_s": {"numpy": round(cpu_s, 4), "cpu_int8": round(int8_s, 4), device_name: round(dev_s, 4),
                            "ratio": round(cpu_s / dev_s, 2), "ratio_to_int8": round(int8_s / dev_s, 2)},
        "path_8_targets_s": {"numpy": round(cpu_path_s, 3), device_name: round(dev_path_s, 3),
                             "ratio": round(cpu_path_s / dev_path_s, 2)},
        "path_same_lam": same_lam,
        "path_relative_weight_difference": error,
    }


def device_floor(store: Path, models: int, device_name: str) -> float:
    """Seconds of a bare float32 ``X.T @ X`` of the fit masks on the device (in memory)."""
    import zarr

    from dmstore.fitting.device import device

    dev = device(device_name)
    x = dev.put(zarr.open_group(str(store), mode="r")["train_masks"][:models], np.float32)
    seconds, _ = timed(lambda: dev.get((x.T @ x)[:1, :1]), repeat=2)  # get() waits for the product
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=50_000)
    parser.add_argument("--models", type=int, default=20_000)
    parser.add_argument("--targets", type=int, default=1_000)
    parser.add_argument("--cpu-targets", type=int, default=20)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="bench-out/gpu")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"shape": vars(args), "kernels": kernels(args.train, args.device)}
    print(json.dumps(results, indent=2), flush=True)
    planted = make_source(out / "source", args.train, args.models, 1000, args.targets, 10)
    store = out / "wide.zarr"
    results["convert"] = measure([*DMSTORE, "convert", str(out / "source"), str(store), "--dataset", "wide",
                                  "--pct", "50", "--eval-rows", "1000", "--no-progress"], out / "convert.log")
    fit = [*DMSTORE, "fit", str(store), "--no-progress"]
    results["fit"] = measure([*fit, "--targets", f"0:{args.targets}", "--device", args.device], out / "fit.log")
    results["fit"]["log"] = (out / "fit.log").read_text().splitlines()[:2]
    import dmstore

    weight = dmstore.read_datamodels(str(store), "test")["weight"].values
    found = [set(s) <= set(np.flatnonzero(weight[:, t])) for t, s in enumerate(planted["support"])]
    results["support_recovered"] = float(np.mean(found))
    results["device_floor_s"] = round(device_floor(store, args.models, args.device), 2)
    results["fit_over_device_floor"] = round(results["fit"]["seconds"] / results["device_floor_s"], 1)
    cpu = measure([*fit, "--targets", f"0:{args.cpu_targets}", "--device", "cpu", "--overwrite"], out / "cpu.log")
    results["cpu_fit"] = {**cpu, "log": (out / "cpu.log").read_text().splitlines()[:1]}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
