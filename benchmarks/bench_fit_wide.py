"""``dmstore fit`` at CIFAR-10 width (N = 50,000), against the floor of any Gram method.

Builds a source in the published layout (``{ds}/data/*.npy``) with ``--models`` fit models plus
``--eval-models`` evaluation models over ``--train`` examples, and ``--targets`` test targets
with a planted sparse signal (``--support`` features per target, weights of magnitude 0.3-1,
plus unit Gaussian noise), converts it with ``dmstore convert``, then times, each in a fresh
process, sampling the resident memory of the whole process tree every 20 ms (benchmarks/measure.py):

1. ``fit``: ``dmstore fit STORE --targets 0:T --overwrite --recompute`` (defaults otherwise;
   the statistics computed afresh on every run), then whether the planted supports were
   recovered;
2. ``floor``: a bare float32 ``X.T @ X`` of the same fit masks in numpy, in memory (what a user
   would write; timed on half the columns and scaled by 4: numpy crashes on the full size), and
   the same with torch's int8 GEMM (the fastest Gram of 0/1 masks on an AMX CPU);
3. ``skglm``: skglm's ``Lasso`` on the same standardised masks (in memory), walking the same
   ``lam`` grid warm-started down to the ``lam`` dmstore chose, for ``--skglm-targets`` targets;
4. ``refit``: ``dmstore fit`` again on ``--refit-targets`` targets with ``--lambdas 50
   --overwrite``: the persisted statistics are reused (its log shows a pass of 0.0 s: no mask read).

Parts run in that order (``--parts``), each in a fresh process; results accumulate in JSON.
Part ``skglm`` needs ``pip install -e ".[bench]"``.

    python benchmarks/bench_fit_wide.py [--train 50000] [--models 20000] [--eval-models 1000]
        [--targets 1000] [--parts source,fit,floor,skglm,refit] [--out bench-out/wide]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from measure import run as measured_run

BIN = Path(sys.executable).parent


def measure(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` (output into ``log``); wall seconds and peak RSS of its process tree."""
    done = measured_run(cmd, log)
    return {"seconds": round(done.seconds, 1), "peak_gib": round(done.peak_bytes / 2**30, 2)}


def make_source(
    root: Path, n_train: int, models: int, eval_models: int, targets: int, support: int, seed: int = 0
) -> dict:
    """Write the layout; return the planted supports."""
    rng = np.random.default_rng(seed)
    folder = root / "wide" / "data"
    folder.mkdir(parents=True, exist_ok=True)
    total = models + eval_models
    masks = np.lib.format.open_memmap(folder / "train_masks_50pct.npy", "w+", bool, (total, n_train))
    for start in range(0, total, 2048):
        masks[start : start + 2048] = rng.random((min(2048, total - start), n_train), dtype=np.float32) < 0.5
    chosen = np.stack([rng.choice(n_train, support, replace=False) for _ in range(targets)])
    effects = rng.uniform(0.3, 1.0, chosen.shape) * rng.choice([-1, 1], chosen.shape)
    test = np.lib.format.open_memmap(folder / "test_margins_50pct.npy", "w+", np.float16, (total, targets))
    for start in range(0, total, 2048):
        block = np.asarray(masks[start : start + 2048])
        y = np.stack([block[:, c] @ e for c, e in zip(chosen, effects)], axis=1)
        test[start : start + 2048] = y + rng.standard_normal(y.shape)
    train = np.lib.format.open_memmap(folder / "train_margins_50pct.npy", "w+", np.float16, (total, n_train))
    for start in range(0, total, 2048):
        train[start : start + 2048] = rng.standard_normal((min(2048, total - start), n_train), dtype=np.float32)
    masks.flush(), test.flush(), train.flush()
    return {"support": chosen, "effects": effects}


def floor(store: Path, models: int, n_train: int, out: Path) -> dict:
    """Time a bare float32 ``X.T @ X`` of the fit masks in a fresh process (what a user would
    write), and the same product with torch's int8 GEMM (the fastest Gram of 0/1 masks on this
    CPU, AMX; the one dmstore's pass uses). numpy's ``X.T @ X`` (OpenBLAS syrk) crashes with a
    10 GB result at N = 50,000 on this machine, so both are timed on the first half of the
    columns and scaled by 4 (the work is ``n N^2``; int8 computes the whole square, not half)."""
    half = n_train // 2
    code = (
        "import time, zarr, numpy as np, torch; "
        f"m = zarr.open_group('{store}', mode='r')['train_masks'][:{models}, :{half}]; "
        "x = m.astype(np.float32); t = time.perf_counter(); g = x.T @ x; print(time.perf_counter() - t); "
        "del x, g; xi = torch.from_numpy(m.view(np.int8)); "
        "t = time.perf_counter(); g = torch._int_mm(xi.T, xi); print(time.perf_counter() - t)"
    )
    result = measure([sys.executable, "-c", code], out / "floor.log")
    float32, int8 = map(float, (out / "floor.log").read_text().split()[-2:])
    result["half_width_seconds"] = float32
    result["gemm_seconds"] = round(4 * float32, 1)
    result["int8_gemm_seconds"] = round(4 * int8, 1)
    return result


def skglm_targets(store: Path, models: int, chosen_lams: np.ndarray) -> dict:
    """skglm's Lasso walking dmstore's grid down to its chosen lam, per target (seconds)."""
    import zarr
    from skglm import Lasso

    group = zarr.open_group(str(store), mode="r")
    n_val = round(0.1 * models)
    x = group["train_masks"][: models - n_val].astype(np.float32)
    mean, std = x.mean(axis=0), x.std(axis=0)
    x -= mean
    x /= np.where(std > 0, std, 1)
    x = np.asfortranarray(x)
    times = []
    for t, chosen in enumerate(chosen_lams):
        y = group["test_margins"][: models - n_val, t].astype(np.float64)
        y -= y.mean()
        lam_max = np.abs(x.T @ y).max() / y.size
        grid = lam_max * 1e-3 ** (np.arange(100) / 99)
        steps = grid[grid >= chosen * 0.999]
        model = Lasso(alpha=steps[0], fit_intercept=False, tol=1e-4, warm_start=True)
        start = time.perf_counter()
        for lam in steps:
            model.alpha = lam
            model.fit(x, y)
        times.append(time.perf_counter() - start)
    return {"seconds_per_target": round(float(np.mean(times)), 1), "targets": len(chosen_lams)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=50_000)
    parser.add_argument("--models", type=int, default=20_000)
    parser.add_argument("--eval-models", type=int, default=1_000)
    parser.add_argument("--targets", type=int, default=1_000)
    parser.add_argument("--support", type=int, default=10)
    parser.add_argument("--skglm-targets", type=int, default=1)
    parser.add_argument("--refit-targets", type=int, default=100)
    parser.add_argument("--parts", default="source,fit,refit,floor,skglm",
                        help="which parts to run (results accumulate in OUT/results.json)")
    parser.add_argument("--out", default="bench-out/wide")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "wide.zarr"
    saved = out / "results.json"
    results: dict = json.loads(saved.read_text()) if saved.exists() else {}
    results["shape"] = {k: v for k, v in vars(args).items() if k not in ("parts", "out")}
    if "source" in parts:
        planted = make_source(out / "source", args.train, args.models, args.eval_models, args.targets, args.support)
        np.savez(out / "planted.npz", **planted)
        command = [str(BIN / "dmstore"), "convert", str(out / "source"), str(store), "--dataset", "wide", "--pct",
                   "50", "--eval-rows", str(args.eval_models), "--no-progress"]
        results["convert"] = measure(command, out / "convert.log")
    fit_cmd = [str(BIN / "dmstore"), "fit", str(store), "--targets", f"0:{args.targets}", "--no-progress",
               "--overwrite", "--recompute"]  # the whole fit, statistics included, again on a second run
    if "fit" in parts:
        results["fit"] = measure(fit_cmd, out / "fit.log")
        import dmstore

        dm = dmstore.read_datamodels(str(store), "test")
        weight = dm["weight"].values
        planted = np.load(out / "planted.npz")
        found = [set(s) <= set(np.flatnonzero(weight[:, t])) for t, s in enumerate(planted["support"])]
        results["support_recovered"] = float(np.mean(found))
        results["mean_nonzeros"] = float((weight != 0).sum(axis=0).mean())
        results["chosen_lams"] = dm["lam"].values[:10].astype(float).tolist()
    if "floor" in parts:
        results["floor_xtx"] = floor(store, args.models, args.train, out)
    if "skglm" in parts and args.skglm_targets:
        results["skglm"] = skglm_targets(store, args.models, np.array(results["chosen_lams"][: args.skglm_targets]))
    if "refit" in parts:  # replaces the group: after the parts that read it
        command = [str(BIN / "dmstore"), "fit", str(store), "--targets", f"0:{args.refit_targets}", "--lambdas",
                   "50", "--overwrite", "--no-progress"]
        results["refit_other_lambdas"] = measure(command, out / "refit.log")
        results["refit_other_lambdas"]["log"] = (out / "refit.log").read_text().splitlines()[0]
    if "fit" in results and "floor_xtx" in results:
        results["fit_over_floor"] = round(results["fit"]["seconds"] / results["floor_xtx"]["gemm_seconds"], 2)
        results["fit_over_int8_floor"] = round(results["fit"]["seconds"] / results["floor_xtx"]["int8_gemm_seconds"], 2)
    if "fit" in results and "skglm" in results:
        per_target = results["fit"]["seconds"] / args.targets
        results["skglm_over_dmstore_per_target"] = round(results["skglm"]["seconds_per_target"] / per_target, 1)
    saved.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
