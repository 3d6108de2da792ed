"""dmstore evaluate vs the straightforward in-memory numpy/scipy computation, side by side.

A store as wide as CIFAR-10 (50,000 training examples; convert's chunk/shard layout and codecs)
with 10,000 evaluation models and a few hundred test targets is written once (out of core, from
Dask random arrays), with sparse datamodels. Then, in fresh processes:

- ``dmstore``: ``evaluate(store)`` on threads of its process (the default; ``scheduler="local"`` for
  worker processes);
- ``numpy``: what a user writes: load the evaluation rows, ``masks @ weight + bias`` in float32,
  ``scipy.stats.spearmanr`` and ``np.corrcoef`` per target.

Reports wall time, peak resident memory of the whole process tree (client and workers, sampled
every 20 ms) and the largest difference of the per-target Spearman correlations.

    python benchmarks/bench_evaluate.py [--targets 500] [--eval-models 10000] [--train 50000] [--out bench-out/evaluate]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from measure import run as measured_run

FIT_MODELS = 2048  # one shard of fit rows: evaluate never reads them


def make_store(path: Path, n_eval: int, n_train: int, n_targets: int) -> None:
    """A contract store with convert's layout, written shard by shard, and sparse datamodels."""
    import dask.array as da
    import xarray as xr
    import zarr
    from dmstore.conversion.plan import plan_array

    from dmstore.io.datamodels import write_datamodels
    from dmstore.io.store import codec

    models = FIT_MODELS + n_eval
    rng = da.random.default_rng(0)
    masks_plan = plan_array("train_masks", (models, n_train), np.dtype(bool))
    margins_plan = plan_array("test_margins", (models, n_targets), np.dtype(np.float16))
    weight = np.random.default_rng(1).standard_normal((n_train, n_targets)).astype(np.float32)
    weight *= np.random.default_rng(2).random((n_train, n_targets)) < 0.01
    bias = np.zeros(n_targets, dtype=np.float32)
    masks = rng.random((models, n_train), chunks=(masks_plan.shards[0], n_train)) < 0.5
    noise = rng.standard_normal((models, n_targets), chunks=(masks_plan.shards[0], n_targets))
    margins = (da.matmul(masks.astype(np.float32), weight) + noise).astype(np.float16)
    split = np.where(np.arange(models) < FIT_MODELS, "fit", "eval").astype(object)
    ds = xr.Dataset(
        {"train_masks": (("model", "train"), masks), "test_margins": (("model", "test"), margins)},
        coords={
            "model": np.arange(models),
            "split": ("model", split),
            "train": np.arange(n_train),
            "test": np.arange(n_targets),
        },
        attrs={"dataset": "synthetic-cifar-width", "pct": 50},
    )
    encoding = {
        p.name: {"chunks": p.chunks, "shards": p.shards, "compressors": [codec(p.dtype)]}
        for p in (masks_plan, margins_plan)
    }
    encoding["split"] = {"chunks": (masks_plan.shards[0],)}
    ds.to_zarr(path, mode="w", zarr_format=3, encoding=encoding, consolidated=False)
    zarr.consolidate_metadata(str(path))
    write_datamodels(str(path), "test", weight, bias, np.zeros(n_targets), attrs={"method": "synthetic"})


def run_dmstore(path: str) -> dict:
    from dmstore.analysis.evaluate import evaluate

    result = evaluate(path, write=False, progress=False)
    return {"lds": result.attrs["lds"], "spearman": result["spearman"].values.tolist()}


def run_numpy(path: str) -> dict:
    import xarray as xr
    from scipy.stats import spearmanr

    ds = xr.open_zarr(path)
    dm = xr.open_zarr(path, group="datamodels/test")
    eval_rows = ds["split"].values == "eval"
    masks = ds["train_masks"].values[eval_rows]
    true = ds["test_margins"].values[eval_rows].astype(np.float32)
    predicted = masks.astype(np.float32) @ dm["weight"].values + dm["bias"].values
    spearman = [spearmanr(predicted[:, t], true[:, t]).statistic for t in range(true.shape[1])]
    [np.corrcoef(predicted[:, t], true[:, t])[0, 1] for t in range(true.shape[1])]
    return {"lds": float(np.mean(spearman)), "spearman": spearman}


def measure(method: str, path: Path) -> dict:
    """Run one method in a fresh process; wall time and peak RSS of its process tree."""
    done = measured_run([sys.executable, __file__, "--run", method, str(path)])
    return {"seconds": done.seconds, "peak_rss_gib": done.peak_bytes / 2**30, **json.loads(done.out.splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=500)
    parser.add_argument("--eval-models", type=int, default=10_000)
    parser.add_argument("--train", type=int, default=50_000)
    parser.add_argument("--out", type=Path, default=Path("bench-out/evaluate"))
    parser.add_argument("--run", nargs=2, metavar=("METHOD", "STORE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        method, path = args.run
        print(json.dumps({"dmstore": run_dmstore, "numpy": run_numpy}[method](path)))
        return
    path = args.out / f"store-{args.eval_models}x{args.train}x{args.targets}.zarr"
    if not (path / "datamodels").exists():
        args.out.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        make_store(path, args.eval_models, args.train, args.targets)
        print(f"store written in {time.perf_counter() - t:.0f} s: {path}")
    results = {method: measure(method, path) for method in ("dmstore", "numpy")}
    diff = np.nanmax(np.abs(np.subtract(results["dmstore"]["spearman"], results["numpy"]["spearman"])))
    print(f"{args.eval_models} evaluation models x {args.train} training examples x {args.targets} targets")
    print(f"{'method':<9}{'seconds':>9}{'peak RSS GiB':>14}{'LDS':>10}")
    for method, r in results.items():
        print(f"{method:<9}{r['seconds']:>9.1f}{r['peak_rss_gib']:>14.2f}{r['lds']:>10.5f}")
    d, n = results["dmstore"], results["numpy"]
    print(
        f"ratios dmstore/numpy: time {d['seconds'] / n['seconds']:.2f}, "
        f"memory {d['peak_rss_gib'] / n['peak_rss_gib']:.2f}; largest Spearman difference {diff:.1e}"
    )


if __name__ == "__main__":
    main()
