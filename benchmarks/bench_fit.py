"""dmstore fit vs scikit-learn, side by side on the same store, the same targets and the same lam grid.

A synthetic store in convert's layout (codecs, shards of up to 2048 models) whose margins are a
non-linear function of a few masks plus noise (no planted linear model) is written once. Then,
each in a fresh process (wall time, peak resident memory of the process tree sampled every 20 ms):

- ``dmstore``: ``fit(store)`` with its defaults (100 lams down to 1e-3, validation on the last 10%
  of the fit models, refit on all fit models, the pass in-process); and the same with the pass
  on a local Dask cluster of worker processes (``scheduler="local"``);
- ``sklearn-best``: the best scikit-learn can do: the fit rows loaded into memory, one
  precomputed Gram of the standardised masks shared by all targets, per target ``lasso_path`` on
  the same grid with the same tolerance, validation MSE on the same rows, and a warm-started
  refit on all fit rows with their Gram; targets run on two threads (joblib), as many as cores;
- ``LassoCV``: what most users write, ``LassoCV().fit(masks, margins[:, t])`` per target (5-fold
  cross-validation, 100 alphas), timed on a few targets and extrapolated per target.

The datamodels of each are scored on the evaluation models (mean Pearson and Spearman over the
targets). The ``scaling`` part times ``fit`` (in-process pass) as the models M, training examples N
and targets T grow (one factor at a time), fits ``time ~ M^a N^b T^c`` (and the same for peak
memory) and plots them (``fit_scaling.png``).

    python benchmarks/bench_fit.py [--part compare|scaling|all] [--models 9000] [--eval-models 1000]
        [--train 1000] [--targets 256] [--sklearn-targets 64] [--lassocv-targets 2] [--out bench-out/fit]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import psutil
from measure import run as measured_run

LAMBDAS, RATIO, TOL, VAL = 100, 1e-3, 1e-4, 0.1


def margins_of(masks: np.ndarray, drivers: np.ndarray, effects: np.ndarray, seed: int) -> np.ndarray:
    """Margins of a band of models: tanh and a square of a few masks' sum, plus noise (float16)."""
    z = np.stack([masks[:, d].astype(np.float32) @ e for d, e in zip(drivers, effects)], axis=1)
    noise = np.random.default_rng(seed).standard_normal(z.shape).astype(np.float32)
    return (2 * np.tanh(z) + 0.1 * z**2 + noise).astype(np.float16)


def make_store(path: Path, models: int, n_eval: int, n_train: int, n_targets: int) -> None:
    """A contract store in convert's layout; the last ``n_eval`` models are evaluation models."""
    import dask.array as da
    import xarray as xr
    import zarr
    from dmstore.conversion.plan import plan_array

    from dmstore.io.store import codec

    total = models + n_eval
    masks_plan = plan_array("train_masks", (total, n_train), np.dtype(bool))
    margins_plan = plan_array("test_margins", (total, n_targets), np.dtype(np.float16))
    rows = masks_plan.shards[0]
    rng = np.random.default_rng(0)
    drivers = rng.integers(0, n_train, (n_targets, 20))
    effects = rng.normal(0, 0.25, (n_targets, 20)).astype(np.float32)
    masks = da.random.default_rng(1).random((total, n_train), chunks=(rows, n_train)) < 0.5
    margins = masks.map_blocks(
        lambda block, block_info=None: margins_of(block, drivers, effects, block_info[0]["chunk-location"][0]),
        chunks=(masks.chunks[0], (n_targets,)),
        dtype=np.float16,
    )
    split = np.where(np.arange(total) < models, "fit", "eval").astype(object)
    ds = xr.Dataset(
        {"train_masks": (("model", "train"), masks), "test_margins": (("model", "test"), margins)},
        coords={
            "model": np.arange(total),
            "split": ("model", split),
            "train": np.arange(n_train),
            "test": np.arange(n_targets),
        },
        attrs={"dataset": "synthetic-nonlinear", "pct": 50},
    )
    encoding = {
        p.name: {"chunks": p.chunks, "shards": p.shards, "compressors": [codec(p.dtype)]}
        for p in (masks_plan, margins_plan)
    }
    encoding["split"] = {"chunks": (rows,)}
    ds.to_zarr(path, mode="w", zarr_format=3, encoding=encoding, consolidated=False)
    zarr.consolidate_metadata(str(path))


def load_fit_rows(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Masks (bool) and margins (float64) of the fit models, in memory."""
    import dmstore

    ds = dmstore.open(path)
    fit = np.flatnonzero(ds["split"].values == "fit")
    return ds["train_masks"].values[fit], ds["test_margins"].values[fit].astype(np.float64)


def run_dmstore(path: str, out: str, scheduler: str | None) -> dict:
    from dmstore.fitting.fit import fit

    before = psutil.Process().memory_info().rss
    result = fit(
        path,
        overwrite=True,
        recompute=True,
        progress=False,
        scheduler=scheduler,
        lambdas=LAMBDAS,
        lambda_ratio=RATIO,
        tol=TOL,
        val_models=VAL,
    )
    np.savez(out, weight=result["weight"].values, bias=result["bias"].values, lam=result["lam"].values)
    a = result.attrs
    return {
        "seconds_pass": a["seconds_pass"],
        "seconds_path": a["seconds_path"],
        "targets": a["n_targets"],
        "mean_nonzeros": a["mean_nonzeros"],
        "not_converged": a["not_converged"],
        "rss_before_mib": before / 2**20,
    }


def run_sklearn_best(path: str, out: str, n_targets: int, threads: int) -> dict:
    """Per target lasso_path on a shared precomputed Gram, validation selection, warm refit."""
    from joblib import Parallel, delayed
    from sklearn.linear_model import lasso_path

    began = time.perf_counter()
    masks, margins = load_fit_rows(path)
    margins = margins[:, :n_targets]
    loaded = time.perf_counter()
    n_val = round(VAL * len(masks))
    x = masks.astype(np.float64)
    fit_x, val_x = x[:-n_val], x[-n_val:]

    def standardise(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mean, std = a.mean(axis=0), a.std(axis=0)
        scale = np.where(std > 0, std, 1.0)
        z = np.asfortranarray((a - mean) / scale)
        return z, mean, scale

    z, mean, scale = standardise(fit_x)
    gram = z.T @ z
    z_all, mean_all, scale_all = standardise(x)
    gram_all = z_all.T @ z_all
    shared = time.perf_counter()

    def one(t: int) -> tuple[np.ndarray, float]:
        y = margins[:-n_val, t]
        yc = y - y.mean()
        xy = z.T @ yc
        alphas = np.abs(xy).max() / len(y) * RATIO ** (np.arange(LAMBDAS) / (LAMBDAS - 1))
        _, coefs, _ = lasso_path(z, yc, alphas=alphas, precompute=gram, Xy=xy, tol=TOL, check_input=False)
        raw = coefs / scale[:, None]
        val_mse = ((margins[-n_val:, t, None] - val_x @ raw - (y.mean() - mean @ raw)) ** 2).mean(axis=0)
        best = int(np.argmin(val_mse))
        y_all = margins[:, t] - margins[:, t].mean()
        coef_init = coefs[:, best] * scale_all / scale  # the same raw weights in the new standardisation
        _, refit, _ = lasso_path(
            z_all,
            y_all,
            alphas=[alphas[best]],
            precompute=gram_all,
            Xy=z_all.T @ y_all,
            coef_init=coef_init,
            tol=TOL,
            check_input=False,
        )
        weight = refit[:, 0] / scale_all
        return weight, margins[:, t].mean() - mean_all @ weight

    results = Parallel(n_jobs=threads, prefer="threads")(delayed(one)(t) for t in range(n_targets))
    done = time.perf_counter()
    weight = np.stack([w for w, _ in results], axis=1)
    np.savez(out, weight=weight, bias=np.array([b for _, b in results]))
    return {
        "seconds_load": loaded - began,
        "seconds_gram": shared - loaded,
        "seconds_targets": done - shared,
        "targets": n_targets,
        "mean_nonzeros": float((weight != 0).sum(axis=0).mean()),
    }


def run_lassocv(path: str, out: str, n_targets: int) -> dict:
    from sklearn.linear_model import LassoCV

    masks, margins = load_fit_rows(path)
    x = masks.astype(np.float64)
    began = time.perf_counter()
    models = [LassoCV().fit(x, margins[:, t]) for t in range(n_targets)]
    seconds = time.perf_counter() - began
    np.savez(out, weight=np.stack([m.coef_ for m in models], axis=1), bias=np.array([m.intercept_ for m in models]))
    return {"seconds_targets": seconds, "targets": n_targets}


def child(args: argparse.Namespace) -> None:
    """Run one method in this (fresh) process and print its JSON line."""
    began = time.perf_counter()
    if args.method == "dmstore":
        report = run_dmstore(args.store, args.result, args.scheduler)
    elif args.method == "sklearn-best":
        report = run_sklearn_best(args.store, args.result, args.n, args.threads)
    else:
        report = run_lassocv(args.store, args.result, args.n)
    report["seconds"] = time.perf_counter() - began
    print(json.dumps(report))


def measure(argv: list[str]) -> dict:
    """Run ``bench_fit.py --child ...`` in a fresh process; add its peak tree RSS (sampled every 20 ms)."""
    done = measured_run([sys.executable, __file__, "--child", *argv])
    report = json.loads(done.out.strip().splitlines()[-1])
    report["peak_rss_mib"] = done.peak_bytes / 2**20
    return report


def scores(path: str, result: str, n_targets: int) -> dict:
    """Mean Pearson and Spearman over targets of predicted vs true margins on the evaluation models."""
    import dmstore
    from dmstore.analysis.lds import target_scores

    ds = dmstore.open(path)
    rows = np.flatnonzero(ds["split"].values == "eval")
    masks = ds["train_masks"].values[rows].astype(np.float32)
    true = ds["test_margins"].values[rows, :n_targets].astype(np.float32)
    saved = np.load(result)
    s = target_scores(masks @ saved["weight"][:, :n_targets] + saved["bias"][:n_targets], true)
    return {"pearson": float(np.nanmean(s["pearson"])), "spearman": float(np.nanmean(s["spearman"]))}


def compare(args: argparse.Namespace, out: Path) -> dict:
    store = out / f"store-{args.models}x{args.train}x{args.targets}.zarr"
    if not store.exists():
        make_store(store, args.models, args.eval_models, args.train, args.targets)
    runs = {
        "dmstore": ["dmstore", str(store), str(out / "dmstore.npz")],
        "dmstore (local Dask cluster)": ["dmstore", str(store), str(out / "dmstore-dask.npz"), "--scheduler", "local"],
        "sklearn-best": [
            "sklearn-best",
            str(store),
            str(out / "sklearn-best.npz"),
            "--n",
            str(args.sklearn_targets),
            "--threads",
            "2",
        ],
        "LassoCV": ["LassoCV", str(store), str(out / "lassocv.npz"), "--n", str(args.lassocv_targets)],
    }
    report = {
        "store": {"models": args.models, "eval_models": args.eval_models, "train": args.train, "targets": args.targets},
        "load_average": os.getloadavg(),
    }
    for name, argv in runs.items():
        print(f"running {name} ...", flush=True)
        report[name] = measure(argv)
        print(f"  {report[name]}", flush=True)
    # held-out quality of each method on the same first k targets
    report["held_out"] = {
        f"first {k} targets": {
            name: scores(str(store), argv[2], k) for name, argv in runs.items() if report[name]["targets"] >= k
        }
        for k in sorted({args.lassocv_targets, args.sklearn_targets, args.targets})
    }
    per_target = {
        "dmstore": report["dmstore"]["seconds"] / args.targets,
        "sklearn-best": report["sklearn-best"]["seconds_targets"] / args.sklearn_targets,
        "LassoCV": report["LassoCV"]["seconds_targets"] / args.lassocv_targets,
    }
    fixed = report["sklearn-best"]["seconds_load"] + report["sklearn-best"]["seconds_gram"]
    report["seconds_per_target"] = per_target
    report["speedup_vs_lassocv"] = per_target["LassoCV"] / per_target["dmstore"]
    sklearn_all = fixed + per_target["sklearn-best"] * args.targets
    report["speedup_vs_sklearn_best"] = sklearn_all / report["dmstore"]["seconds"]
    report["load_average_after"] = os.getloadavg()
    return report


def scaling(args: argparse.Namespace, out: Path) -> dict:
    """Time (pass + path) and peak memory above the interpreter's of ``fit`` as M, N and T grow
    one at a time around a base size (default, in-process pass)."""
    from dmstore.fitting.plan import plan_fit

    base = {"models": 8000, "train": 1000, "targets": 256}
    grid = [dict(base)]
    for key, values in (("models", (4000, 16000, 32000)), ("train", (500, 2000)), ("targets", (128, 512, 1024))):
        grid += [dict(base, **{key: v}) for v in values]
    rows = []
    for size in grid:
        store = out / f"scale-{size['models']}x{size['train']}x{size['targets']}.zarr"
        if not store.exists():
            make_store(store, size["models"], 100, size["train"], size["targets"])
        result = measure(["dmstore", str(store), str(out / "scale.npz")])
        rows.append(
            {
                **size,
                "seconds": result["seconds_pass"] + result["seconds_path"],
                "seconds_pass": result["seconds_pass"],
                "seconds_path": result["seconds_path"],
                "data_mib": result["peak_rss_mib"] - result["rss_before_mib"],
                "estimate_mib": plan_fit(size["train"], size["models"], 2048, 256, 8 * 2**30).peak / 2**20,
            }
        )
        print(f"  {rows[-1]}", flush=True)
    logs = np.log([[r["models"], r["train"], r["targets"]] for r in rows])
    design = np.column_stack([np.ones(len(rows)), logs])
    fits = {}
    for metric in ("seconds", "seconds_pass", "seconds_path", "data_mib"):
        coef, *_ = np.linalg.lstsq(design, np.log([r[metric] for r in rows]), rcond=None)
        fits[metric] = {"M": coef[1], "N": coef[2], "T": coef[3]}
    plot_scaling(rows, fits, out / "fit_scaling.png")
    return {"rows": rows, "power_law_exponents": fits}


def plot_scaling(rows: list[dict], fits: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = rows[0]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, (key, label) in zip(axes, (("models", "M"), ("train", "N"), ("targets", "T"))):
        others = [k for k in ("models", "train", "targets") if k != key]
        sel = sorted((r for r in rows if all(r[k] == base[k] for k in others)), key=lambda r: r[key])
        xs = [r[key] for r in sel]
        for metric, style, name in (("seconds", "o-", "pass + path (s)"), ("seconds_path", "s--", "path (s)")):
            ax.loglog(xs, [r[metric] for r in sel], style, label=f"{name}, ~{label}^{fits[metric][label]:.2f}")
        ax.loglog(
            xs,
            [r["data_mib"] / 100 for r in sel],
            "^:",
            label=f"peak RSS above baseline (100 MiB), ~{label}^{fits['data_mib'][label]:.2f}",
        )
        ax.loglog(xs, [r["estimate_mib"] / 100 for r in sel], "x", color="gray", label="plan_fit peak (100 MiB)")
        ax.set_xlabel(f"{label} ({key})")
        ax.legend(fontsize=8)
    fig.suptitle(f"dmstore fit scaling around M={base['models']}, N={base['train']}, T={base['targets']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("method", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("store", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("result", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--scheduler", help=argparse.SUPPRESS)
    parser.add_argument("--models", type=int, default=9000, help="fit models (default: %(default)s)")
    parser.add_argument("--eval-models", type=int, default=1000, help="evaluation models (default: %(default)s)")
    parser.add_argument("--train", type=int, default=1000, help="training examples N (default: %(default)s)")
    parser.add_argument("--targets", type=int, default=256, help="targets T fitted by dmstore (default: %(default)s)")
    parser.add_argument("--sklearn-targets", type=int, default=64, help="targets timed for sklearn-best")
    parser.add_argument("--lassocv-targets", type=int, default=2, help="targets timed for LassoCV")
    parser.add_argument(
        "--part",
        choices=("compare", "scaling", "all"),
        default="all",
        help="side-by-side comparison, scaling in M, N, T, or both (default: %(default)s)",
    )
    parser.add_argument("--out", default="bench-out/fit", help="working folder (default: %(default)s)")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {}
    if args.part in ("compare", "all"):
        report["compare"] = compare(args, out)
    if args.part in ("scaling", "all"):
        report["scaling"] = scaling(args, out)
    (out / f"bench_fit_{args.part}.json").write_text(json.dumps(report, indent=2, default=float))
    print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
