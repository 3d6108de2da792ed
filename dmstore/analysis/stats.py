"""Per-example summaries of a store, out of core: margin mean, variance and accuracy, mask frequency,
and the difference-of-means influence estimate."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from dask import delayed
from dask.distributed import as_completed
from tqdm.auto import tqdm

from dmstore.analysis import plots
from dmstore.analysis.predict import SUB_BAND, sub_bands
from dmstore.errors import DmstoreError
from dmstore.io.budget import DRIVER_BYTES, WORKER_BYTES, parse_budget
from dmstore.io.cluster import budget_client
from dmstore.io.dataset import open as open_store
from dmstore.io.rows import band_bytes, model_bands, written_models

SPLITS = ("train", "test")
#: Peak bytes of a stats task per byte of its band as stored: the band of every array read and
#: the float64 sums of a sub-band (measured 2.6 with tracemalloc on a CIFAR-width band of 2,048 x
#: 50,000 masks and 20 influence targets; tests/test_memory.py measures the whole run).
BAND_MEMORY_FACTOR = 3.5


def band_sums(ds: xr.Dataset, targets: Sequence[int] | None = None, target: str = "test") -> xr.Dataset:
    """Sufficient statistics of the model rows of ``ds`` (one band, in memory), all additive over
    bands, summed ``SUB_BAND`` rows at a time in float64 through one buffer (``SUB_BAND x N``
    float64, reused: no allocation per sub-band).

    Returns ``n`` (models); per margins variable ``{split}_sum``, ``{split}_sumsq``,
    ``{split}_positive`` (``split``); ``mask_count`` (``train``); with ``targets`` (example
    indices of ``target``) also ``target_sum`` (``target``) and ``influence_in`` (``train``,
    ``target``): the sum of the target's margins over the models whose subset holds the example.
    """
    n = ds.sizes["model"]
    masks = ds["train_masks"].values
    width = max([ds.sizes[split] for split in SPLITS if f"{split}_margins" in ds] + [masks.shape[1]])
    buffer = np.empty((min(SUB_BAND, n), width))
    sums: dict[str, Any] = {"n": xr.DataArray(n)}
    for split in SPLITS:
        name = f"{split}_margins"
        if name in ds:
            margins = ds[name].values
            total, squares = np.zeros(margins.shape[1]), np.zeros(margins.shape[1])
            for _, x in sub_bands(margins, buffer):
                total += x.sum(axis=0)
                squares += np.einsum("ij,ij->j", x, x)
            sums[f"{split}_sum"] = (split, total)
            sums[f"{split}_sumsq"] = (split, squares)
            sums[f"{split}_positive"] = (split, np.count_nonzero(margins > 0, axis=0))
    sums["mask_count"] = ("train", np.count_nonzero(masks, axis=0))
    if targets is not None:
        y = ds[f"{target}_margins"].sel({target: list(targets)}).values.astype(np.float64)
        inside = np.zeros((masks.shape[1], y.shape[1]))
        for rows, x in sub_bands(masks, buffer):
            inside += x.T @ y[rows]
        sums["target_sum"] = ("target", y.sum(axis=0))
        sums["influence_in"] = (("train", "target"), inside)
    coords = {split: ds[split] for split in SPLITS if split in ds.coords}
    if targets is not None:
        coords["target"] = xr.DataArray(list(targets), dims="target")
    return xr.Dataset(sums, coords=coords)


def finalize(sums: xr.Dataset) -> xr.Dataset:
    """Per-example statistics from the summed :func:`band_sums` of all bands.

    ``{split}_mean``, ``{split}_var`` (population variance, ddof 0) and ``{split}_accuracy``
    (share of models with margin > 0); ``mask_frequency`` (share of models whose subset holds
    the training example); ``influence`` (``train``, ``target``): mean target margin over models
    holding the example minus the mean over models without it (NaN if either set is empty).
    """
    n = sums["n"]
    out = {}
    for split in SPLITS:
        if f"{split}_sum" in sums:
            mean = sums[f"{split}_sum"] / n
            out[f"{split}_mean"] = mean
            out[f"{split}_var"] = np.maximum(sums[f"{split}_sumsq"] / n - mean**2, 0.0)
            out[f"{split}_accuracy"] = sums[f"{split}_positive"] / n
    count = sums["mask_count"]
    out["mask_frequency"] = count / n
    if "influence_in" in sums:
        inside = sums["influence_in"]
        with np.errstate(invalid="ignore", divide="ignore"):
            out["influence"] = inside / count - (sums["target_sum"] - inside) / (n - count)
    return xr.Dataset(out)


def mask_z(frequency: np.ndarray, pct: float, n: int) -> np.ndarray:
    """z-scores of mask column frequencies against the subsampling fraction ``pct`` (percent)."""
    p = pct / 100
    return (np.asarray(frequency) - p) / np.sqrt(p * (1 - p) / n)


def stats(
    store: Any,
    *,
    models: str = "all",
    targets: Sequence[int] | None = None,
    target: str = "test",
    scheduler: Any = None,
    max_memory: int | str = "2GB",
    progress: bool = True,
    storage_options: dict | None = None,
) -> xr.Dataset:
    """Per-example statistics of a store in one pass over shard-aligned bands of model rows.

    Each band is one Dask task: read, then reduced to its :func:`band_sums`; the
    client adds them up as they arrive, so it holds two sets of sums: ``N_train x (4 +
    len(targets))`` and ``N_test x 3`` float64 numbers each. A task holds one band of each array
    as stored and the float64 sums of a sub-band (``BAND_MEMORY_FACTOR`` x the band at peak).

    Parameters
    ----------
    store
        Path, fsspec URL or zarr store.
    models
        ``all``, ``fit`` or ``eval``: which model rows to summarise.
    targets, target
        Example indices of the ``target`` split whose difference-of-means influence of every
        training example is estimated (none by default).
    scheduler
        ``None`` (threads of this process), ``"local"`` (a local cluster of worker processes), a
        scheduler address or a ``dask.distributed.Client``.
    max_memory
        Bound on the peak memory of the whole run on this machine (this process and its
        threads, or the workers of ``"local"``, :func:`dmstore.io.cluster.budget_client`); on
        another cluster each worker's memory limit must hold one band.

    Returns
    -------
    xarray.Dataset
        The variables of :func:`finalize`; attributes ``models``, ``n_models``, ``pct`` and
        ``mask_max_z`` (largest |z| of a mask frequency against ``pct``) where ``pct`` is known.
    """
    ds = open_store(store, storage_options=storage_options)
    if targets is not None:
        if f"{target}_margins" not in ds:
            raise DmstoreError(f"the store has no {target}_margins to estimate influence on")
        missing = np.setdiff1d(targets, ds[target].values)
        if missing.size:
            raise DmstoreError(f"no {target} examples {missing[:5].tolist()} in the store")
    bands = model_bands(ds, models)
    names = [name for name in ("train_masks", "train_margins", "test_margins") if name in ds]
    sums = 8 * 2 * (ds.sizes["train"] * (4 + len(targets or ())) + 3 * ds.sizes.get("test", 0))
    total = None
    with budget_client(
        scheduler,
        parse_budget(max_memory),
        driver=DRIVER_BYTES + sums,
        worker=WORKER_BYTES + int(BAND_MEMORY_FACTOR * band_bytes(ds, names, bands)),
        threads=True,
    ) as client:
        # one task a band: its reads (the checked path), then its sums in memory; one band in
        # flight per thread of the cluster, so that no worker reads a band ahead of its sums
        todo = iter(bands)

        def submit(band: Any) -> Any:
            return client.compute(delayed(band_sums)(ds.isel(model=band), targets, target))

        running = as_completed(
            [submit(band) for band in islice(todo, sum(client.nthreads().values()))],
            loop=client.loop,
            with_results=True,
        )
        for _, part in tqdm(running, total=len(bands), desc="stats", unit="band", disable=not progress):
            total = part if total is None else total + part
            band = next(todo, None)
            if band is not None:
                running.add(submit(band))
    result = finalize(total)
    result.attrs = {"models": models, "n_models": int(total["n"]), **written_models(ds)}
    if "pct" in ds.attrs:
        z = mask_z(result["mask_frequency"].values, ds.attrs["pct"], int(total["n"]))
        result.attrs.update(pct=ds.attrs["pct"], mask_max_z=float(np.abs(z).max()))
    return result


def plot_stats(result: xr.Dataset, path: str | Path) -> Path:
    """PNG: histograms of per-example mean margin, accuracy and mask frequency; sorted influence."""
    fig, axes = plots.panels(4, width=4.25)
    for split in SPLITS:
        if f"{split}_mean" in result:
            axes[0].hist(result[f"{split}_mean"].values, bins=50, alpha=0.6, label=split)
            axes[1].hist(result[f"{split}_accuracy"].values, bins=50, alpha=0.6, label=split)
    axes[0].set_xlabel("mean margin of an example")
    axes[1].set_xlabel("accuracy of an example (margin > 0)")
    axes[1].set_yscale("log")
    axes[2].hist(result["mask_frequency"].values, bins=50)
    if "pct" in result.attrs:
        axes[2].axvline(result.attrs["pct"] / 100, color="k", linestyle="--", label=f"pct {result.attrs['pct']}")
    axes[2].set_xlabel("share of subsets holding a training example")
    for ax in axes[:3]:
        ax.set_ylabel("examples")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if "influence" in result:
        for t in result["target"].values[:5]:
            axes[3].plot(np.sort(result["influence"].sel(target=t).values)[::-1], label=f"target {t}")
        axes[3].set_xlabel("training examples, by influence")
        axes[3].set_ylabel("difference of mean margins")
        axes[3].legend()
    else:
        for split in SPLITS:
            if f"{split}_var" in result:
                axes[3].hist(np.sqrt(result[f"{split}_var"].values), bins=50, alpha=0.6, label=split)
        axes[3].set_xlabel("std of an example's margin")
        axes[3].legend()
    return plots.save(fig, path, f"{result.attrs['n_models']} models ({result.attrs['models']})")
