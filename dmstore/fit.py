"""``dmstore fit``: estimate the datamodels of a store's targets, out of core.

One streaming pass over the fit models (``split == "fit"``; the evaluation models are never
read) gives the sufficient statistics of the fit rows and of the validation rows (the last
``val_models`` fit rows); the validation-selected LASSO path and the refit on fit + validation
rows then run from these statistics alone (:mod:`dmstore.lasso`), and the datamodels are written
into the store's ``datamodels/{target}`` group.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from typing import Any

import numpy as np
import psutil
import xarray as xr
from tqdm.auto import tqdm

from dmstore import __version__
from dmstore.datamodels import group_path, has_datamodels, write_datamodels
from dmstore.dataset import open as open_store
from dmstore.device import array_namespace
from dmstore.errors import DmstoreError
from dmstore.lasso import check_options, lasso, lasso_path
from dmstore.lock import store_lock
from dmstore.moment_pass import PassSums, moment_sums
from dmstore.rows import model_positions

DTYPES = {"float32": np.float32, "float64": np.float64}


def validation_count(val_models: float, n_fit: int) -> int:
    """Validation rows: a fraction (``0 < val_models < 1``) of the fit rows, or a count (``>= 1``).

    At least one validation row and two fit rows must remain.
    """
    if isinstance(val_models, bool) or not val_models > 0:
        raise DmstoreError(f"val_models must be a fraction in (0, 1) or a count >= 1, got {val_models!r}")
    if val_models < 1:
        count = max(1, round(val_models * n_fit))
    elif float(val_models).is_integer():
        count = int(val_models)
    else:
        raise DmstoreError(f"val_models {val_models} is neither a fraction in (0, 1) nor a whole count")
    if count > n_fit - 2:
        raise DmstoreError(
            f"val_models asks for {count} validation models but the store has only {n_fit} fit models: "
            "at least 2 must remain to fit on; use a smaller --val-models"
        )
    return count


def memory_estimate(n_train: int, n_targets: int, target_batch: int, dtype: str, band_rows: int) -> int:
    """Peak bytes of :func:`fit` on the host with ``device="cpu"`` (all but the interpreter).

    The fit and validation sums (``2 x 8 (N^2 + N T)``), one float64 Gram being built beside the
    two solver Grams, the solver's ``[N, target_batch]`` arrays, three ``[N, T]`` float64 copies
    of the weights, and a band being read in this process (the in-process pass).
    """
    item = np.dtype(DTYPES[dtype]).itemsize
    n, t, b = n_train, n_targets, min(target_batch, n_targets)
    sums = 2 * 8 * (n * n + n * t)
    grams = 8 * n * n + 2 * item * n * n
    solver = 16 * item * n * b
    weights = 3 * 8 * n * t
    band = band_rows * (13 * n + 10 * t)
    return sums + grams + solver + weights + band


def target_columns(targets: slice | None, n_targets: int, split: str) -> slice:
    """The target columns ``start:stop`` as a slice within ``n_targets`` (step 1)."""
    if targets is None:
        return slice(0, n_targets)
    start = 0 if targets.start is None else targets.start
    stop = n_targets if targets.stop is None else targets.stop
    if targets.step not in (None, 1):
        raise DmstoreError(f"--targets {start}:{stop}:{targets.step}: only contiguous ranges (step 1) are supported")
    if not 0 <= start < stop <= n_targets:
        raise DmstoreError(
            f"--targets {start}:{stop} is outside the {n_targets} {split} examples of the store: "
            f"use a range within 0:{n_targets}"
        )
    return slice(start, stop)


def fit(
    store: Any,
    target: str = "test",
    *,
    targets: slice | None = None,
    val_models: float = 0.1,
    lambdas: int = 100,
    lambda_ratio: float = 1e-3,
    standardize: bool = True,
    tol: float = 1e-4,
    patience: int = 5,
    target_batch: int = 1024,
    dtype: str = "float32",
    device: str = "cpu",
    scheduler: Any = None,
    overwrite: bool = False,
    progress: bool = True,
    storage_options: dict | None = None,
) -> xr.Dataset:
    """Estimate the ``target`` datamodels of a store and write them into ``datamodels/{target}``.

    Per target example t (a column of ``{target}_margins``), minimise
    ``1/(2n) ||y_t - X w_t - b_t||^2 + lam_t ||w_t||_1`` over the fit models along a geometric
    path of ``lambdas`` values from ``lam_max`` down to ``lam_max * lambda_ratio``, choose
    ``lam_t`` by the validation MSE (early stop after ``patience`` points without improvement),
    and refit on fit + validation models at that ``lam_t``.

    Parameters
    ----------
    store
        Path, fsspec URL or zarr store (read; the datamodels group is written).
    target
        ``test`` or ``train``: whose margins are the targets.
    targets
        A contiguous range of target columns (``slice(0, 500)``); all by default.
    val_models
        Validation models: a fraction of the fit models or a count, always the last fit rows.
    lambdas, lambda_ratio
        Points of the path and the ratio of its smallest to its largest ``lam``.
    standardize
        Solve on standardised features, as fast_l1 does (``lam`` is then in that space); the
        stored weights are in raw mask space either way.
    tol
        Each solve stops at a duality gap of ``tol`` times the target's margin variance.
    patience
        Path points without a better validation MSE after which a target stops.
    target_batch
        Targets solved together (bounds the solver's memory, see Notes).
    dtype
        ``float32`` (default: twice as fast, enough for ``tol >= 1e-6``) or ``float64``.
    device
        ``cpu`` (numpy) or ``cuda`` (CuPy; the pass then runs in this process on the GPU).
    scheduler
        Where the pass runs: ``None`` in this process (the fastest on one machine), ``"local"``
        on a local Dask cluster of worker processes, a scheduler address or a
        ``dask.distributed.Client`` on that Dask cluster (whose workers must reach the store).
    overwrite
        Replace datamodels the store already holds for ``target``.

    Returns
    -------
    xarray.Dataset
        The datamodels as written (``weight``, ``bias``, ``lam``); its attributes record how they
        were estimated and a summary: ``n_targets``, ``median_lam``, ``mean_nonzeros``,
        ``val_r2`` (mean validation R^2 of the path's choice), ``not_converged``.

    Notes
    -----
    Memory: on the host (CPU) at most :func:`memory_estimate` bytes, checked against the free
    memory before the pass: the fit and validation sums ``2 x 8 (N^2 + N T)``, two solver Grams
    ``N^2`` of ``dtype`` plus a float64 one while building, ``~17 N x target_batch`` solver
    arrays and three ``N x T`` float64 weight arrays. A worker of the pass holds one band (at
    most one shard, 2048 models) and at most three sums of ``8 (N^2 + N T)`` bytes.
    """
    started = time.perf_counter()
    xp = array_namespace(device)
    check_options(lambdas, lambda_ratio, tol, patience, target_batch)
    if dtype not in DTYPES:
        raise DmstoreError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    group_path(target)
    if device == "cuda" and scheduler is not None:
        raise DmstoreError("--device cuda runs the pass in this process on its GPU: leave out --scheduler")
    if has_datamodels(store, target, storage_options) and not overwrite:
        raise DmstoreError(
            f"the store already holds datamodels for {target!r}: pass --overwrite (overwrite=True) "
            "to replace them, or export them first with `dmstore export`"
        )
    ds = open_store(store, storage_options=storage_options)
    margins = f"{target}_margins"
    for name in ("train_masks", margins):
        if name not in ds:
            raise DmstoreError(f"the store has no {name}: convert it with --arrays masks,margins")
    columns = target_columns(targets, ds.sizes[target], target)
    positions = model_positions(ds, "fit")
    n_val = validation_count(val_models, positions.size)
    fit_rows, val_rows = positions[:-n_val], positions[-n_val:]
    shard_rows = tuple(ds["train_masks"].chunks[0]) if ds["train_masks"].chunks else (ds.sizes["model"],)
    need = memory_estimate(ds.sizes["train"], columns.stop - columns.start, target_batch, dtype, max(shard_rows))
    available = psutil.virtual_memory().available
    if device == "cpu" and need > available:
        raise DmstoreError(
            f"fitting these targets needs about {need / 2**30:.1f} GiB but {available / 2**30:.1f} GiB is free: "
            "fit fewer --targets at a time, lower --target-batch, or use a larger machine or --device cuda"
        )
    # one writer per datamodels group: a second fit of the same target refuses until this one ends
    # (a zarr store object passed in is the caller's to guard)
    lock = (
        store_lock(os.fspath(store), f"fit-{target}", f"dmstore fit --target {target}", storage_options)
        if isinstance(store, (str, os.PathLike)) else nullcontext()
    )
    with lock:
        with tqdm(total=positions.size, desc="moments", unit="model", disable=not progress) as bar:
            sums = moment_sums(
                store, margins, {"fit": fit_rows, "val": val_rows}, columns, shard_rows, xp=xp,
                scheduler=scheduler, progress=bar.update, storage_options=storage_options,
            )
        _check_finite(sums, ds, margins, target)
        passed = time.perf_counter()

        options = dict(standardize=standardize, tol=tol, target_batch=target_batch, xp=xp, dtype=DTYPES[dtype])
        n_targets = columns.stop - columns.start
        with tqdm(total=n_targets, desc="path", unit="target", disable=not progress) as bar:
            path = lasso_path(
                sums.fit, sums.val, lambdas=lambdas, lambda_ratio=lambda_ratio, patience=patience,
                progress=bar.update, **options,
            )
        sums.fit += sums.val  # fit + validation rows, in place
        with tqdm(total=n_targets, desc="refit", unit="target", disable=not progress) as bar:
            final = lasso(sums.fit, path.lam, weight=path.weight, progress=bar.update, **options)

        with np.errstate(invalid="ignore", divide="ignore"):
            val_r2 = 1.0 - path.val_mse / path.val_var
        attrs = {
            "method": "lasso: FISTA on the Gram, validation-selected path, refit on fit + validation models",
            "estimated_by": f"dmstore {__version__} fit",
            "lambdas": lambdas,
            "lambda_ratio": lambda_ratio,
            "standardize": standardize,
            "tol": tol,
            "patience": patience,
            "val_models": val_models,
            "n_fit": int(fit_rows.size),
            "n_val": int(n_val),
            "dtype": dtype,
            "device": device,
            "n_targets": n_targets,
            "median_lam": float(np.median(final.lam)),
            "mean_nonzeros": float((final.weight != 0).sum(axis=0).mean()),
            "val_r2": float(np.nanmean(val_r2)) if np.isfinite(val_r2).any() else float("nan"),
            "not_converged": int(((path.gap > tol) | (final.gap > tol)).sum()),
            "seconds_pass": round(passed - started, 3),
            "seconds_path": round(time.perf_counter() - passed, 3),
        }
        return write_datamodels(
            store, target, final.weight, final.bias, final.lam, targets=ds[target].values[columns],
            attrs=attrs, overwrite=overwrite, storage_options=storage_options,
        )


def _check_finite(sums: PassSums, ds: xr.Dataset, margins: str, target: str) -> None:
    """Raise a :class:`DmstoreError` naming the first non-finite margins of the fit rows."""
    if not sums.n_bad:
        return
    where = ", ".join(
        f"model {ds['model'].values[row]} {target} {ds[target].values[col]}" for row, col in sums.bad
    )
    raise DmstoreError(
        f"{margins} has {sums.n_bad} NaN or infinite values in the fit models (first: {where}): "
        "fix the source, or mark those models as eval in the store's split coordinate"
    )
