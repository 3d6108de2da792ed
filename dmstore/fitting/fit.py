"""``dmstore fit``: estimate the datamodels of a store's targets, out of core, at any width.

1. The passes (:mod:`dmstore.fitting.passes`) fill the persisted statistics ``moments/fit``
   (the counts of the fit rows the path is fitted on) and ``moments/val`` (the validation rows,
   the last ``val_models`` fit rows: their masks) for the requested targets, unless the store
   already holds them for exactly these rows: a second fit with other options reads no mask row.
2. Target blocks (``target_batch`` targets, aligned on the split's positions) are the unit of
   work: each walks its validation-selected path on the statistics, is refitted on fit +
   validation rows at the chosen ``lam`` (:mod:`dmstore.fitting.solver`), writes its region of
   ``datamodels/{target}`` and records itself. A crash loses at most the blocks in flight; the
   same command continues with the blocks not recorded; ``targets`` ranges fill one group step
   by step. Blocks run in this process or as Dask tasks on a cluster (each worker reads the
   statistics from the store).

Memory: :func:`dmstore.fitting.plan.plan_fit` sizes every part to one ``memory`` budget.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import replace
from queue import SimpleQueue
from typing import Any

import numpy as np
import psutil
import xarray as xr
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from dmstore._version import __version__
from dmstore.errors import DmstoreError
from dmstore.fitting import solver
from dmstore.fitting.device import CPU, DEVICES, Device
from dmstore.fitting.device import device as device_of
from dmstore.fitting.fista import check_options
from dmstore.fitting.moments import XTY_BLOCK, Moments, Statistics, gather_threads, release_counts, rows_digest
from dmstore.fitting.passes import PassPlan, added_rows, gram_pass, grow_pass, mask_pass, target_pass
from dmstore.fitting.plan import BASE, SOLVE_TARGETS, FitPlan, plan_fit, solver_floor, uses_int8
from dmstore.fitting.reads import BandReader
from dmstore.io.budget import local_workers, parse_budget, worker_share
from dmstore.io.datamodels import fitted_blocks, group_path, has_datamodels, read_datamodels, start_blocks, write_block
from dmstore.io.dataset import consolidate
from dmstore.io.dataset import open as open_store
from dmstore.io.lock import store_lock
from dmstore.io.rows import model_positions, written_models

DTYPES = {"float32": np.float32, "float64": np.float64}
#: The default memory budget: fits a 16 GB laptop beside its other work.
DEFAULT_MEMORY = 8 * 2**30
#: Solver iterations per solve before a target stops above its tolerance (its gap says so).
MAX_ITER = 10_000
#: Options that must match for a fit to continue the blocks of an earlier one.
OPTIONS = ("lambdas", "lambda_ratio", "standardize", "tol", "patience", "val_models", "dtype", "target_batch")


def validation_rows(moments: Moments, positions: np.ndarray, val_models: float, recompute: bool) -> np.ndarray:
    """The validation rows among the fit ``positions``: the last ``validation_count`` of them, or
    those of the kept statistics where they were chosen with the same ``val_models`` and are all
    still fit rows (so that a store that grew keeps its validation rows, and a fit reads only
    the rows added)."""
    kept = None if recompute else moments.positions()
    group = moments.group()
    if kept is not None and group is not None and group.attrs.get("val_models") == val_models:
        if kept.size < positions.size - 1 and np.isin(kept, positions).all():
            return kept
    return positions[-validation_count(val_models, positions.size) :]


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


def memory_budget(memory: int | str | None) -> int:
    """Bytes of ``memory`` (``"8GiB"``, a number, or None: the default, at most what is free)."""
    if memory is None:
        return int(min(DEFAULT_MEMORY, 0.9 * psutil.virtual_memory().available))
    return parse_budget(memory, "--memory")


def target_blocks(columns: slice, block: int, done: Iterable[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """``[start, stop)`` blocks of the columns not ``done``, cut at multiples of ``block``."""
    todo = np.zeros(columns.stop, dtype=bool)
    todo[columns] = True
    for start, stop in done:
        todo[start:stop] = False
    edges = np.flatnonzero(np.diff(np.concatenate([[False], todo, [False]]).astype(np.int8)))
    blocks = []
    for start, stop in zip(edges[::2], edges[1::2]):
        cuts = sorted({int(start), int(stop), *range(-(-int(start) // block) * block, int(stop), block)})
        blocks += list(zip(cuts[:-1], cuts[1:]))
    return blocks


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
    patience: int = 3,
    target_batch: int = 256,
    dtype: str = "float32",
    memory: int | str | None = None,
    scheduler: Any = None,
    overwrite: bool = False,
    recompute: bool = False,
    models: int | None = None,
    device: str | Device = "cpu",
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
        Path or fsspec URL of the store (the statistics and datamodels are written into it).
    target
        ``test`` or ``train``: whose margins are the targets.
    targets
        A contiguous range of target columns (``slice(0, 500)``); all by default. Ranges fill one
        datamodels group step by step.
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
        Targets per block: solved together, written and recorded together.
    dtype
        Solver precision: ``float32`` (default) or ``float64``.
    memory
        The bound on this process's memory (``"8GiB"``); default 8 GiB or 90% of what is free.
    scheduler
        Where the target blocks run: ``None`` in this process; ``"local"`` a local Dask cluster of
        worker processes; an address or a ``dask.distributed.Client``: that cluster (its workers
        must reach the store and have ``memory`` each).
    overwrite
        Replace datamodels fitted with other options, or imported ones.
    recompute
        Compute the persisted statistics afresh (after they were found damaged).
    models
        Fit on the first ``models`` fit models only, the last of them the validation rows (a
        learning curve grows it: the statistics of the fit rows then add only the rows added).
        All by default.
    device
        Where the passes' products and the solver compute: ``cpu`` (numpy) or ``cuda`` (CuPy on
        the GPU, whose free memory must hold ``memory``), or a
        :class:`~dmstore.fitting.device.Device` of another array namespace (in this process only).

    Returns
    -------
    xarray.Dataset
        The datamodels of every fitted target of the group (``weight``, ``bias``, ``lam``); its
        attributes record the options and a summary: ``n_targets``, ``median_lam``,
        ``mean_nonzeros``, ``val_r2`` (mean validation R^2), ``not_converged``.
    """
    started = time.perf_counter()
    check_options(lambdas, lambda_ratio, tol, patience, target_batch)
    if dtype not in DTYPES:
        raise DmstoreError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if not isinstance(store, (str, os.PathLike)):
        raise DmstoreError("fit writes its statistics into the store: pass its path or URL")
    store = os.fspath(store)
    group_path(target)
    budget = memory_budget(memory)
    ds = open_store(store, storage_options=storage_options)
    margins = f"{target}_margins"
    for name in ("train_masks", margins):
        if name not in ds:
            raise DmstoreError(f"the store has no {name}: convert it with --arrays masks,margins")
    columns = target_columns(targets, ds.sizes[target], target)
    positions = model_positions(ds, "fit")
    if models is not None:
        if not 3 <= models <= positions.size:
            raise DmstoreError(f"--models {models}: give 3 to {positions.size} (the store's fit models)")
        positions = positions[:models]
    # a fit on the first ``models`` takes its validation rows from them (a learning curve must not
    # keep the few validation rows of its smallest size)
    val = validation_rows(Moments(store, "val", storage_options), positions, val_models, recompute or bool(models))
    n_val = val.size
    rows = {"fit": np.setdiff1d(positions, val), "val": val}
    reader = BandReader(store, target, storage_options)
    sizes = dict(n_train=ds.sizes["train"], rows=rows["fit"].size, shard_rows=reader.shard_rows, block=target_batch,
                 val_rows=rows["val"].size)
    on_cores = scheduler is None and (device == "cpu" or device is CPU)  # target groups on threads
    dev = device_of(device)
    # int8 products where they pay for importing torch, and where torch provides them
    int8 = uses_int8(sizes["rows"], sizes["n_train"]) and dev.mask_matmul() is not None
    plan = plan_fit(memory=budget, solvers=os.cpu_count() or 1 if on_cores else 1, int8=int8, **sizes)
    dev = replace(_checked_device(dev, plan, scheduler), int8=plan.int8)
    options = dict(
        lambdas=lambdas,
        lambda_ratio=lambda_ratio,
        standardize=standardize,
        tol=tol,
        patience=patience,
        val_models=val_models,
        dtype=dtype,
        target_batch=target_batch,
    )
    with store_lock(store, f"fit-{target}", f"dmstore fit --target {target}", storage_options), ExitStack() as stack:
        models = rows_digest(positions)
        done = _check_group(store, target, options, models, overwrite, storage_options)
        # a cluster the user has is checked now, before the statistics pass, not after it
        scheduler = stack.enter_context(_checked_cluster(scheduler, budget, plan))
        if recompute:
            for name in rows:
                Moments(store, name, storage_options).delete()
        hold = scheduler is None  # the blocks run in this process: the pass's counts stay for them
        _fill_moments(store, reader, rows, target, columns, ds.sizes[target], plan, hold, dev, progress,
                      storage_options)
        Moments(store, "val", storage_options).group("a").attrs["val_models"] = val_models
        _check_data(Moments(store, "fit", storage_options), target, columns)
        if done is None:  # only now: a pass that fails on damaged data leaves no datamodels group
            attrs = dict(
                options,
                method="lasso: working-set FISTA on persisted statistics, validation-selected "
                "path, refit on fit + validation models",
                estimated_by=f"dmstore {__version__} fit",
                models_digest=models,
            )
            start_blocks(store, target, ds.sizes["train"], ds[target].values, target_batch, attrs, storage_options)
            done = {}
        passed = time.perf_counter()
        todo = target_blocks(columns, target_batch, done)
        with tqdm(total=sum(b - a for a, b in todo), desc="datamodels", unit="target", disable=not progress) as bar:
            try:
                block_options = dict(options, device=dev.name if dev.name in DEVICES else dev)  # workers: a name
                _run_blocks(store, target, todo, block_options, sizes, plan, budget, scheduler, bar.update,
                            storage_options)
            finally:
                release_counts()  # the in-memory counts (5 GB at CIFAR width) go with the fit
        consolidate(store, storage_options)
        result = read_datamodels(store, target, storage_options)
        result.attrs.update(
            _summary(fitted_blocks(store, target, storage_options)),
            n_fit=int(rows["fit"].size),
            n_val=int(n_val),
            **written_models(ds),
            plan_peak_bytes=plan.peak,
            solvers=plan.solvers,
            mask_products="int8" if plan.int8 else "float",
            seconds_pass=round(passed - started, 3),
            seconds_path=round(time.perf_counter() - passed, 3),
        )
        return result


def _checked_device(device: str | Device, plan: FitPlan, scheduler: Any) -> Device:
    """The :class:`Device` of ``device``, refused where it cannot run this fit: a GPU with less
    free memory than the plan's peak (the budget bounds the device too), an object (not a name)
    for a cluster."""
    dev = device_of(device)
    if scheduler is not None and dev.name not in DEVICES:
        raise DmstoreError(f"device {dev.name!r} runs in this process only: fit without a scheduler")
    free = dev.free_bytes()
    need = plan.peak - BASE  # what the device holds of the plan: all of it but the interpreter
    if free is not None and free < need:
        raise DmstoreError(
            f"--device {dev.name}: this fit's plan needs up to {need / 2**30:.1f} GiB on the GPU but "
            f"{free / 2**30:.1f} GiB is free there: lower --memory (the plan shrinks to fit) or free the GPU"
        )
    return dev


def _check_group(
    store: str, target: str, options: dict, models: str, overwrite: bool, storage_options: dict | None
) -> dict | None:
    """The recorded blocks of an earlier fit with the same options on the same models (digest
    ``models``), None for a new group."""
    if not has_datamodels(store, target, storage_options) or overwrite:
        return None
    existing = xr.open_zarr(
        store, group=group_path(target), zarr_format=3, consolidated=False, storage_options=storage_options
    ).attrs
    if not (existing.get("dmstore_blocks") and all(existing.get(k) == v for k, v in options.items())):
        raise DmstoreError(
            f"the store holds {target!r} datamodels fitted with other options or imported: pass --overwrite "
            "(overwrite=True) to replace them, or export them first with `dmstore export`"
        )
    if existing.get("models_digest", models) != models:
        raise DmstoreError(
            f"the store's {target!r} datamodels were fitted on other models (the store has more since): pass "
            "--overwrite (overwrite=True) to fit them again (the statistics of the models added are added)"
        )
    return fitted_blocks(store, target, storage_options)


def _fill_moments(
    store: str,
    reader: BandReader,
    rows: dict[str, np.ndarray],
    target: str,
    columns: slice,
    n_targets: int,
    plan: FitPlan,
    hold: bool,
    device: Device,
    progress: bool,
    storage_options: dict | None,
) -> None:
    """Run the passes the persisted statistics still lack for these rows and targets: where the
    fit rows grew (an experiment store), only the added rows are read. With ``hold`` (and the
    plan's room) counts computed afresh stay in memory for the solver."""
    wanted = list(range(columns.start // XTY_BLOCK, -(-columns.stop // XTY_BLOCK)))
    pass_plan = PassPlan(plan.tile, plan.cache_masks, plan.target_blocks, plan.hold_counts and hold)
    n_tiles = -(-reader.n_train // plan.tile)
    work, total = [], 0
    for name, positions in rows.items():
        moments = Moments(store, name, storage_options)
        digest = rows_digest(positions)
        added = added_rows(moments, positions) if name == "fit" else None
        group: Any = moments.group()
        if added is not None and group is not None:
            held = sum(-(-len(group.attrs[k]) // plan.target_blocks) for k in group.attrs if k.startswith("xty_"))
            total += added.size * (1 + held + n_tiles)
            missing = [b for b in wanted if b not in moments.target_blocks(target)]
        else:
            complete = moments.is_complete(digest)
            tiles_left = n_tiles - (int(group.attrs.get("panels", 0)) if group and moments.matches(digest) else 0)
            total += positions.size * (0 if complete else (tiles_left if name == "fit" else 1))
            missing = [b for b in wanted if not (moments.matches(digest) and b in moments.target_blocks(target))]
        total += positions.size * -(-len(missing) // plan.target_blocks)
        work.append((moments, positions))
    with tqdm(total=total, desc="statistics", unit="model", disable=not progress or total == 0) as bar:
        for moments, positions in work:
            if moments.name == "fit":
                while added_rows(moments, positions) is not None:
                    grow_pass(moments, reader, positions, pass_plan, bar.update, device)
                gram_pass(moments, reader, positions, pass_plan, bar.update, device)  # nothing left where it grew
            else:
                mask_pass(moments, reader, positions, bar.update)
            missing = [b for b in wanted if b not in moments.target_blocks(target)]
            target_pass(moments, reader, positions, target, n_targets, missing, pass_plan, bar.update, device)


def _check_data(moments: Moments, target: str, columns: slice) -> None:
    """Refuse degenerate data: masks that never vary, or every target's margins constant."""
    stats = moments.statistics(target, slice(columns.start, columns.start + 1))
    solver.Space.build(stats, True, np.float64)  # raises where no mask varies
    n, ysum, yy = moments.target_sums(target, columns)
    spread = yy / n - (ysum / n) ** 2
    if not (spread > 1e-12 * np.maximum(yy / n, 1.0)).any():
        raise DmstoreError(
            f"{target}_margins are constant over the {n} fit models for every requested target: there is nothing "
            "to fit; check that the margins were converted from the right file"
        )


def fit_block(store: str, target: str, block: tuple[int, int], args: dict, storage_options: dict | None) -> None:
    """Fit, write and record the target ``block`` from the persisted statistics: one batch where
    the plan is dense, else groups of ``SOLVE_TARGETS``, the plan's ``solvers`` at a time on
    threads, each with one BLAS thread.

    A block is solved on its own: a BLAS may round a row of a product by the rows beside it, so a
    batch across blocks would make a fit resumed after a kill, or a cluster's tasks, differ from
    an uninterrupted fit in the last bits."""
    start, stop = block
    columns = slice(start, stop)
    fit_stats = Moments(store, "fit", storage_options).statistics(target, columns, in_memory=args["cache_gram"])
    val_stats = Moments(store, "val", storage_options).statistics(target, columns)
    width = stop - start
    step = width if args["dense"] else SOLVE_TARGETS  # dense: one batch
    groups = [slice(a, min(a + step, width)) for a in range(0, width, step)]
    threads = min(args["solvers"], len(groups))
    buffers: SimpleQueue = SimpleQueue()  # a working set's rows per thread, reused from group to group
    for _ in range(threads):
        buffers.put(solver.row_buffer(args["cap"], fit_stats.n_train, args["dtype"], _block_device(args)))

    def solve(group: slice) -> tuple:
        rows = buffers.get()  # at most ``threads`` groups run at once: one is always free
        # OpenMP's limit is the calling thread's: torch's int8 products on one thread here too;
        # so is the gathering of Gram rows
        with threadpool_limits(1, user_api="openmp") if threads > 1 else nullcontext(), \
                gather_threads(1) if threads > 1 else nullcontext():
            try:
                return _solve(fit_stats, val_stats, group, start, args, rows)
            finally:
                buffers.put(rows)

    with threadpool_limits(1) if threads > 1 else nullcontext(), ThreadPoolExecutor(threads) as pool:
        parts = list(pool.map(solve, groups))
    weight, bias, lam, gap, r2 = (np.concatenate([p[i] for p in parts], axis=-1) for i in range(5))
    summary = {
        "lam": [float(v) for v in lam],
        "nonzeros": [int(v) for v in (weight != 0).sum(axis=0)],
        "val_r2": [float(v) if np.isfinite(v) else None for v in r2],
        "not_converged": int((gap > args["tol"]).sum()),
    }
    write_block(store, target, start, weight, bias, lam, summary, storage_options)


def _solve(
    fit_stats: Statistics, val_stats: Statistics, cols: slice, offset: int, args: dict, rows: Any = None
) -> tuple:
    """Path and refit of the targets ``cols`` of a block (halved where the working set outgrows
    the plan), the working set's rows in ``rows``: raw weights, bias, lam, the larger of the two
    relative gaps, validation R^2."""
    common = dict(standardize=args["standardize"], tol=args["tol"], max_iter=MAX_ITER, dtype=args["dtype"],
                  cap=args["cap"], dense=args["dense"], device=_block_device(args), rows=rows)
    fit_part, val_part = fit_stats.targets(cols), val_stats.targets(cols)
    try:
        path = solver.path(fit_part, val_part, lambdas=args["lambdas"], lambda_ratio=args["lambda_ratio"],
                           patience=args["patience"], **common)
        weight, bias, gap, _ = solver.refit(fit_part, path.lam, path.weight, val=val_part, **common)
    except solver.WorkingSetFull:
        if cols.stop - cols.start == 1:
            raise DmstoreError(
                f"the datamodel of target {offset + cols.start} needs more features than --memory allows: "
                "raise --memory"
            ) from None
        middle = (cols.start + cols.stop) // 2
        halves = [_solve(fit_stats, val_stats, part, offset, args, rows)
                  for part in (slice(cols.start, middle), slice(middle, cols.stop))]
        return tuple(np.concatenate([h[i] for h in halves], axis=-1) for i in range(5))
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = 1.0 - path.val_mse / path.val_var
    return weight, bias, path.lam, np.maximum(path.gap, gap), r2


@contextmanager
def _checked_cluster(scheduler: Any, budget: int, plan: FitPlan) -> Iterator[Any]:
    """``scheduler`` as the fit uses it: a cluster the user has is joined and its workers checked
    against a block solved under ``plan`` (the blocks then run on that client)."""
    if scheduler is None or scheduler == "local":
        yield scheduler
        return
    from dmstore.io.cluster import budget_client

    with budget_client(scheduler, budget, driver=BASE, worker=plan.solver_peak, option="--memory") as client:
        yield client


def _block_device(args: dict) -> Device:
    """The device of :func:`fit_block`'s ``args``, with int8 products only where the plan has them."""
    return replace(device_of(args["device"]), int8=args["int8"])


def _block_args(options: dict, plan: FitPlan) -> dict:
    """The arguments of :func:`fit_block` for blocks solved under ``plan``."""
    return dict(options, dtype=DTYPES[options["dtype"]], cap=plan.cap, cache_gram=plan.cache_gram, dense=plan.dense,
                solvers=plan.solvers, int8=plan.int8)


def _run_blocks(
    store: str,
    target: str,
    blocks: list[tuple[int, int]],
    options: dict,
    sizes: dict,
    plan: FitPlan,
    budget: int,
    scheduler: Any,
    progress: Any,
    storage_options: dict | None,
) -> None:
    """Solve the target ``blocks``: in this process under ``plan``; on a local cluster, as many
    workers as ``budget`` holds (each planned for its share, this process keeping ``BASE``); on
    another cluster, whose workers' memory limits must hold a block solved under ``plan``.
    ``sizes`` are the arguments of :func:`plan_fit` but the memory."""
    if scheduler is None:
        for block in blocks:
            fit_block(store, target, block, _block_args(options, plan), storage_options)
            progress(block[1] - block[0])
        return
    from dask.distributed import as_completed

    from dmstore.io.cluster import budget_client

    release_counts()  # the workers read the counts from the store; this process keeps none
    need = plan.solver_peak
    if scheduler == "local":  # the workers budget_client starts, each planned for its share
        need = solver_floor(sizes["n_train"], sizes["block"], sizes["val_rows"], plan.int8)
        workers = local_workers(budget, BASE, need, os.cpu_count() or 1, "--memory")
        plan = plan_fit(memory=worker_share(budget, BASE, workers), int8=plan.int8, **sizes)
    with budget_client(scheduler, budget, driver=BASE, worker=need, option="--memory") as client:
        args = _block_args(options, plan)
        futures = {
            client.submit(fit_block, store, target, (a, b), args, storage_options, pure=False): b - a
            for a, b in blocks
        }
        for future in as_completed(futures, loop=client.loop):
            future.result()
            progress(futures[future])
        client.run(release_counts)


def _summary(blocks: dict[tuple[int, int], dict]) -> dict:
    """The group's summary over its recorded blocks."""
    lam = [v for s in blocks.values() for v in s["lam"]]
    nonzeros = [v for s in blocks.values() for v in s["nonzeros"]]
    r2 = [v for s in blocks.values() for v in s["val_r2"] if v is not None]
    return {
        "n_targets": len(lam),
        "median_lam": float(np.median(lam)) if lam else float("nan"),
        "mean_nonzeros": float(np.mean(nonzeros)) if nonzeros else float("nan"),
        "val_r2": float(np.mean(r2)) if r2 else float("nan"),
        "not_converged": int(sum(s["not_converged"] for s in blocks.values())),
    }
