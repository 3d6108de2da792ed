"""Score datamodels on the held-out evaluation models: per-target Spearman (the LDS), Pearson, MSE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from dask.distributed import as_completed
from scipy.stats import rankdata
from tqdm.auto import tqdm

from dmstore.analysis import plots
from dmstore.analysis.predict import predict
from dmstore.errors import DmstoreError
from dmstore.io.cluster import dask_client
from dmstore.io.datamodels import read_datamodels
from dmstore.io.dataset import consolidate
from dmstore.io.dataset import open as open_store
from dmstore.io.rows import band_size, model_bands, written_models

MEMORY = 1 << 30  # bytes for one batch of targets: its weights and its gathered margins
BYTES_PER_CELL = 48  # gathered float32 predicted and true margins, float64 ranks and centred copies
SAMPLE_QUANTILES = (0.1, 0.5, 0.9)  # targets whose margins the result keeps (by Spearman)


def target_batch(n_eval: int, n_train: int, memory: int = MEMORY) -> int:
    """Targets scored at once: their float32 weights (``4 x n_train`` bytes each) and their
    gathered margins (``BYTES_PER_CELL x n_eval``) fit in ``memory`` bytes (at least one target)."""
    return max(1, memory // (4 * n_train + BYTES_PER_CELL * n_eval))


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of ``a`` with the same column of ``b`` (NaN if constant)."""
    a = np.asarray(a, dtype=np.float64)
    a = a - a.mean(axis=0)
    b = np.asarray(b, dtype=np.float64)
    b = b - b.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("mt,mt->t", a, b) / np.sqrt(np.einsum("mt,mt->t", a, a) * np.einsum("mt,mt->t", b, b))


def target_scores(predicted: np.ndarray, true: np.ndarray) -> dict[str, np.ndarray]:
    """Per target (column): Spearman and Pearson correlation across models (rows), and the MSE.

    Spearman ranks ties by their average rank, as ``scipy.stats.spearmanr`` does; a target whose
    predicted or true margins are constant has no correlation (NaN).
    """
    return {
        "spearman": pearson(rankdata(predicted, axis=0), rankdata(true, axis=0)),
        "pearson": pearson(predicted, true),
        "mse": np.mean((np.asarray(predicted, np.float64) - true) ** 2, axis=0),
    }


def _gather(client: Any, arrays: list[da.Array], bands: list, bar: tqdm) -> list[np.ndarray]:
    """Compute row-chunked ``arrays`` band by band on the cluster into arrays on the client."""
    offsets = np.cumsum([0, *map(band_size, bands)])
    out = [np.empty((offsets[-1], a.shape[1]), dtype=a.dtype) for a in arrays]
    where = [(i, k) for i in range(len(bands)) for k in range(len(arrays))]
    futures = dict(zip(client.compute([arrays[k].blocks[i] for i, k in where]), where))
    for future, block in as_completed(futures, with_results=True):
        i, k = futures.pop(future)
        out[k][offsets[i] : offsets[i + 1]] = block
        if k == 0:
            bar.update()
    return out


def evaluate(
    store: Any,
    target: str = "test",
    *,
    scheduler: Any = None,
    plot: str | Path | None = None,
    write: bool = True,
    memory: int = MEMORY,
    progress: bool = True,
    storage_options: dict | None = None,
) -> xr.Dataset:
    """Score the ``target`` datamodels of a store on its evaluation models (``split == "eval"``).

    For each target example t, the predicted margins ``mask @ weight[:, t] + bias[t]`` of the
    evaluation models are compared with their true margins: Spearman and Pearson correlation
    across models, and the mean squared error. The LDS (linear datamodeling score) is the mean
    Spearman over targets (targets with no correlation, NaN, are left out of the means).

    Targets are scored in batches of ``target_batch(n_eval, N_train, memory)``. For each batch,
    predictions run on Dask, one task per shard-aligned band of evaluation rows and 512 targets;
    the client gathers the batch's predicted and true margins of all evaluation models and ranks
    them. Memory: the batch's weights (``N_train x batch`` float32, on the workers, at worst one
    copy per worker), one band of masks (bool, all training examples) per worker, and on the
    client the batch's margins, ranks and centred copies (48 bytes per model and target);
    ``memory`` bounds the weights plus the client's share.

    Parameters
    ----------
    store
        Path, fsspec URL or zarr store with datamodels in ``datamodels/{target}``.
    target
        ``test`` or ``train``: which datamodels to score (against ``{target}_margins``).
    scheduler
        ``None`` or ``"local"`` (a local cluster of worker processes), a scheduler address or a
        ``dask.distributed.Client``.
    plot
        Where to write a PNG (predicted vs true margins of a few targets, histograms of the
        per-target correlations); no plot by default.
    write
        Write the result into the store's group ``evaluation/{target}``.
    memory
        Bytes for one batch of targets (weights and gathered margins).

    Returns
    -------
    xarray.Dataset
        ``spearman``, ``pearson``, ``mse`` (``target``); ``predicted`` and ``true`` margins
        (``model``, ``sample``) of the targets at the 10%, 50% and 90% quantiles of Spearman
        in the first batch of targets (all targets when they fit in one batch); attributes
        ``lds``, ``mean_pearson``, ``mean_mse``, ``n_eval_models``, ``n_targets``.
    """
    ds = open_store(store, storage_options=storage_options)
    dm = read_datamodels(store, target, storage_options)
    margins_name = f"{target}_margins"
    if margins_name not in ds:
        raise DmstoreError(f"the store has no {margins_name}: convert it with --arrays {margins_name}")
    if dm.sizes["train"] != ds.sizes["train"]:
        raise DmstoreError(
            f"the datamodels have {dm.sizes['train']} training examples but the store has "
            f"{ds.sizes['train']}: fit or import datamodels for this store"
        )
    targets = dm["target"].values
    if targets.size == 0:
        raise DmstoreError(f"the store's {target} datamodels have no targets: fit them again")
    columns = ds.indexes[target].get_indexer(targets)
    if (columns < 0).any():
        raise DmstoreError(f"datamodel targets missing from the store's {target} examples: {targets[columns < 0][:5]}")
    bands = model_bands(ds, "eval")
    masks = da.concatenate([ds["train_masks"].data[band] for band in bands])
    margins = da.concatenate([ds[margins_name].data[band] for band in bands])
    n_eval = masks.shape[0]
    batch = target_batch(n_eval, masks.shape[1], memory)
    starts = range(0, len(targets), batch)
    scores: dict[str, list[np.ndarray]] = {"spearman": [], "pearson": [], "mse": []}
    with (
        dask_client(scheduler) as client,
        tqdm(total=len(starts) * len(bands), desc=f"evaluate {target}", unit="band", disable=not progress) as bar,
    ):
        for start in starts:
            cols = slice(start, start + batch)
            predicted = predict(masks, dm["weight"].data[:, cols], dm["bias"].data[cols])
            true = margins[:, columns[cols]].astype(np.float32)
            predicted, true = _gather(client, [predicted, true], bands, bar)
            batch_scores = target_scores(predicted, true)
            for name, values in batch_scores.items():
                scores[name].append(values)
            if start == 0:
                samples = _sample_targets(batch_scores["spearman"])
                sample_margins = {"predicted": predicted[:, samples], "true": true[:, samples]}
            del predicted, true  # before the next batch is gathered
    eval_models = np.concatenate([ds["model"].values[band] for band in bands])
    result = xr.Dataset(
        {name: ("target", np.concatenate(values)) for name, values in scores.items()}
        | {name: (("model", "sample"), values) for name, values in sample_margins.items()},
        coords={"target": targets, "model": eval_models, "sample": targets[samples]},
    )
    result.attrs = {
        "target_split": target,
        "lds": float(np.nanmean(result["spearman"])),
        "mean_pearson": float(np.nanmean(result["pearson"])),
        "mean_mse": float(np.nanmean(result["mse"])),
        "n_eval_models": int(n_eval),
        "n_targets": len(targets),
        **written_models(ds),
    }
    if write:
        result.to_zarr(
            store,
            group=f"evaluation/{target}",
            mode="w",
            zarr_format=3,
            consolidated=False,
            storage_options=storage_options,
        )
        consolidate(store, storage_options)
    if plot is not None:
        plot_evaluation(result, plot)
    return result


def _sample_targets(spearman: np.ndarray) -> np.ndarray:
    """Positions of the targets at the ``SAMPLE_QUANTILES`` of Spearman (distinct, in quantile order)."""
    finite = np.flatnonzero(np.isfinite(spearman))
    if finite.size == 0:
        return np.arange(min(len(spearman), len(SAMPLE_QUANTILES)))
    order = finite[np.argsort(spearman[finite], kind="stable")]
    picks = np.round(np.asarray(SAMPLE_QUANTILES) * (order.size - 1)).astype(int)
    return np.array(list(dict.fromkeys(order[picks].tolist())))


def plot_evaluation(result: xr.Dataset, path: str | Path) -> Path:
    """PNG: predicted vs true margins of the sample targets, and histograms of the correlations."""
    samples = result["sample"].values
    fig, axes = plots.panels(len(samples) + 1)
    for ax, sample in zip(axes, samples):
        true = result["true"].sel(sample=sample).values
        predicted = result["predicted"].sel(sample=sample).values
        ax.scatter(true, predicted, s=4, alpha=0.4)
        ax.set_title(f"{result.attrs['target_split']} {sample}: Spearman {result['spearman'].sel(target=sample):.3f}")
        ax.set_xlabel("true margin")
        ax.set_ylabel("predicted margin")
    hist = axes[-1]
    for name in ("spearman", "pearson"):
        values = result[name].values
        hist.hist(values[np.isfinite(values)], bins=40, alpha=0.6, label=name)
    hist.axvline(result.attrs["lds"], color="k", linestyle="--", label=f"LDS {result.attrs['lds']:.3f}")
    hist.set_xlabel("correlation across evaluation models")
    hist.set_ylabel("targets")
    hist.legend()
    return plots.save(
        fig, path, f"{result.attrs['n_targets']} targets, {result.attrs['n_eval_models']} evaluation models"
    )
