"""Check and time dmstore fit's engine on a GPU (CuPy) at the published CIFAR-10 50% shape.

Full run (needs CuPy and a GPU with about 100 GB of memory, e.g. an H100/H200):
310,000 models (the last 10,000 are evaluation models) x 50,000 training examples x 10,000
targets. Masks and margins are generated on the GPU band by band (2048 models, as convert's
shards; margins: tanh and a square of the masks times a sparse effect matrix, plus noise), the
sufficient statistics are summed on the GPU (``band_moments`` with cupy, summed in place as
``local_pass`` does), then ``lasso_path`` + the refit run in batches of targets, and the
datamodels are scored on the evaluation models. Before that, the small check below runs too.

Small check (``--small``, runs anywhere): the same engine on a small problem (20,000 models x
2,000 examples x 64 targets) with numpy and with CuPy (numpy again where there is no GPU),
compared; and ``dmstore.fit`` on a small store with ``--device cuda`` against ``--device cpu``
(on a machine without GPU: the pass on a local Dask cluster against the in-process pass).

    python benchmarks/gpu_check.py --small
    python benchmarks/gpu_check.py [--models 310000] [--eval-models 10000] [--train 50000] [--targets 10000]
        [--target-batch 1024] [--out bench-out/gpu]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

BAND = 2048
DRIVERS = 20


def namespace(prefer_gpu: bool):
    """cupy where a GPU is usable (and wanted), else numpy."""
    if prefer_gpu:
        try:
            from dmstore.device import array_namespace

            return array_namespace("cuda")
        except Exception as exc:  # noqa: BLE001 - any failure means: no GPU here
            print(f"no GPU ({exc}); numpy stands in for CuPy")
    return np


def effects_matrix(xp, n_train: int, n_targets: int, seed: int = 0):
    """A sparse [N, T] float32 effect matrix: DRIVERS examples per target."""
    rng = np.random.default_rng(seed)
    effects = np.zeros((n_train, n_targets), dtype=np.float32)
    rows = rng.integers(0, n_train, (DRIVERS, n_targets))
    effects[rows, np.arange(n_targets)] = rng.normal(0, 0.25, (DRIVERS, n_targets))
    return xp.asarray(effects)


def band(xp, start: int, rows: int, n_train: int, effects):
    """Masks (bool) and margins (float16) of models ``start:start+rows``, made on the device."""
    rng = xp.random.default_rng(start)
    masks = rng.random((rows, n_train), dtype=xp.float32) < 0.5
    z = masks.astype(xp.float32) @ effects
    noise = rng.standard_normal(z.shape, dtype=xp.float32)
    return masks, (2 * xp.tanh(z) + 0.1 * z**2 + noise).astype(xp.float16)


def engine(xp, models: int, n_val: int, n_train: int, n_targets: int, target_batch: int, *,
           dtype=np.float32, tol: float = 1e-4, data=None) -> dict:
    """Moments of generated bands on ``xp``, then the path and the refit; returns arrays and timings."""
    from dmstore.lasso import lasso, lasso_path
    from dmstore.moments import band_moments

    sync = (lambda: xp.cuda.Stream.null.synchronize()) if xp is not np else (lambda: None)
    effects = effects_matrix(xp, n_train, n_targets)
    began = time.perf_counter()
    sums = {"fit": None, "val": None}
    n_fit = models - n_val
    for start in range(0, models, BAND):
        masks, margins = data(start) if data else band(xp, start, min(BAND, models - start), n_train, effects)
        stop = start + len(masks)
        for kind, lo, hi in (("fit", start, min(stop, n_fit)), ("val", max(start, n_fit), stop)):
            if hi > lo:
                part = band_moments(masks[lo - start : hi - start], margins[lo - start : hi - start], xp)
                if sums[kind] is None:
                    sums[kind] = part
                else:
                    sums[kind] += part  # in place, on the device
    fit, val = sums["fit"], sums["val"]
    sync()
    passed = time.perf_counter()
    path = lasso_path(fit, val, target_batch=target_batch, xp=xp, dtype=dtype, tol=tol)
    sync()
    pathed = time.perf_counter()
    fit += val
    final = lasso(fit, path.lam, weight=path.weight, target_batch=target_batch, xp=xp, dtype=dtype, tol=tol)
    sync()
    done = time.perf_counter()
    return {"weight": final.weight, "bias": final.bias, "lam": final.lam, "val_r2": 1 - path.val_mse / path.val_var,
            "seconds_moments": passed - began, "seconds_path": pathed - passed, "seconds_refit": done - pathed,
            "not_converged": int((final.gap > tol).sum() + (path.gap > tol).sum())}


def small_check(prefer_gpu: bool) -> dict:
    """numpy against CuPy (or numpy) on a small problem, and fit() on a small store: cuda vs cpu."""
    xp = namespace(prefer_gpu)
    models, n_val, n_train, n_targets = 20_000, 2_000, 2_000, 64
    effects = effects_matrix(np, n_train, n_targets)
    cache: dict[int, tuple] = {}

    def host_band(start: int):
        if start not in cache:
            cache[start] = band(np, start, min(BAND, models - start), n_train, effects)
        return cache[start]

    def device_band(start: int):
        masks, margins = host_band(start)
        return xp.asarray(masks), xp.asarray(margins)

    # float64 and a tight gap: two correct solvers then agree to far better than 1e-3
    exact = {"dtype": np.float64, "tol": 1e-10}
    reference = engine(np, models, n_val, n_train, n_targets, 64, data=host_band, **exact)
    other = engine(xp, models, n_val, n_train, n_targets, 64, data=device_band, **exact)
    rel = np.linalg.norm(other["weight"] - reference["weight"]) / np.linalg.norm(reference["weight"])
    lam = float(np.max(np.abs(other["lam"] / reference["lam"] - 1)))
    report = {"namespace": xp.__name__, "weight_relative_difference": float(rel), "lam_max_relative_difference": lam,
              "seconds_reference_numpy": {k: v for k, v in reference.items() if k.startswith("seconds")},
              f"seconds_checked_{xp.__name__}": {k: v for k, v in other.items() if k.startswith("seconds")}}
    report["store"] = store_check(xp is not np)
    report["ok"] = bool(rel < 1e-3 and lam < 1e-3 and report["store"]["weight_relative_difference"] < 1e-3)
    return report


def store_check(gpu: bool) -> dict:
    """dmstore.fit on a small store: --device cuda (or the in-process pass) against the default."""
    import xarray as xr
    import zarr

    from dmstore.fit import fit

    models, n_train, n_targets = 3000, 300, 32
    masks, margins = band(np, 0, models, n_train, effects_matrix(np, n_train, n_targets))
    split = np.where(np.arange(models) < models - 500, "fit", "eval").astype(object)
    ds = xr.Dataset({"train_masks": (("model", "train"), masks), "test_margins": (("model", "test"), margins)},
                    coords={"model": np.arange(models), "split": ("model", split), "train": np.arange(n_train),
                            "test": np.arange(n_targets)})
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "small.zarr")
        encoding = {name: {"chunks": (512, ds[name].shape[1])} for name in ds.data_vars}
        encoding["split"] = {"chunks": (512,)}
        ds.to_zarr(path, mode="w", zarr_format=3, encoding=encoding, consolidated=False)
        zarr.consolidate_metadata(path)
        exact = {"dtype": "float64", "tol": 1e-10}
        cpu = fit(path, progress=False, **exact)
        other = fit(path, overwrite=True, progress=False, **exact,
                    **({"device": "cuda"} if gpu else {"scheduler": "local"}))
        a, b = cpu["weight"].values, other["weight"].values
    return {"compared": "cuda vs cpu" if gpu else "Dask pass vs in-process pass (cpu)",
            "weight_relative_difference": float(np.linalg.norm(a - b) / np.linalg.norm(a))}


def full_run(args: argparse.Namespace) -> dict:
    """The CIFAR-10 50% shape on the GPU: timings end to end, memory, held-out scores."""
    from dmstore.device import array_namespace
    from dmstore.evaluate import target_scores

    xp = array_namespace("cuda")
    n_val = round(0.1 * args.models)
    began = time.perf_counter()
    result = engine(xp, args.models, n_val, args.train, args.targets, args.target_batch)
    total = time.perf_counter() - began
    effects = effects_matrix(xp, args.train, args.targets)
    weight = xp.asarray(result["weight"], dtype=xp.float32)
    predicted, true = [], []
    for start in range(args.models, args.models + args.eval_models, BAND):
        masks, margins = band(xp, start, min(BAND, args.models + args.eval_models - start), args.train, effects)
        predicted.append((masks.astype(xp.float32) @ weight).get() + result["bias"])
        true.append(margins.get().astype(np.float32))
    scores = target_scores(np.concatenate(predicted), np.concatenate(true))
    pool = xp.get_default_memory_pool()
    return {"shape": {"models": args.models, "eval_models": args.eval_models, "train": args.train,
                      "targets": args.targets},
            "seconds_total": total, **{k: v for k, v in result.items() if k.startswith("seconds")},
            "not_converged": result["not_converged"], "mean_val_r2": float(np.nanmean(result["val_r2"])),
            "held_out_pearson": float(np.nanmean(scores["pearson"])),
            "held_out_spearman": float(np.nanmean(scores["spearman"])),
            "gpu_pool_held_gib": pool.total_bytes() / 2**30}  # the pool keeps freed blocks: about the peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="only the small check (runs without a GPU)")
    parser.add_argument("--cpu", action="store_true", help="with --small: numpy against numpy even on a GPU")
    parser.add_argument("--models", type=int, default=300_000, help="fit models (default: %(default)s)")
    parser.add_argument("--eval-models", type=int, default=10_000, help="evaluation models (default: %(default)s)")
    parser.add_argument("--train", type=int, default=50_000, help="training examples (default: %(default)s)")
    parser.add_argument("--targets", type=int, default=10_000, help="targets (default: %(default)s)")
    parser.add_argument("--target-batch", type=int, default=1024, help="targets solved together")
    parser.add_argument("--out", default="bench-out/gpu", help="where the JSON report goes")
    args = parser.parse_args()
    report = {"small": small_check(prefer_gpu=not args.cpu)}
    print(json.dumps(report, indent=2), flush=True)
    if not args.small:
        report["full"] = full_run(args)
        print(json.dumps(report["full"], indent=2))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ("gpu_check_small.json" if args.small else "gpu_check.json")).write_text(json.dumps(report, indent=2))
    if not report["small"]["ok"]:
        raise SystemExit("the small check failed: results differ")


if __name__ == "__main__":
    main()
