"""Score datamodels, or any attribution scores, on the held-out evaluation models: per-target
Spearman (the LDS), Pearson, MSE; with replicated masks the replicate-averaged LDS and the noise
ceiling; bootstrap intervals over evaluation masks and over targets (:mod:`dmstore.analysis.lds`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from dask.distributed import Client, as_completed
from tqdm.auto import tqdm

from dmstore.analysis import lds, plots
from dmstore.analysis.predict import SUB_BAND, TARGET_CHUNK, predict
from dmstore.errors import DmstoreError
from dmstore.io import attributions
from dmstore.io.budget import DRIVER_BYTES, WORKER_BYTES, parse_budget
from dmstore.io.cluster import budget_client
from dmstore.io.datamodels import read_datamodels
from dmstore.io.dataset import consolidate
from dmstore.io.dataset import open as open_store
from dmstore.io.rows import band_bytes, band_size, model_bands, written_models

MEMORY = 512 << 20  # bytes for one batch of targets on the client: its weights and gathered margins
#: Peak bytes of an evaluate worker per byte of one task's inputs as stored (a band of masks and of
#: margins, a block of weights, the float32 sub-band; tests/test_memory.py measured 2.1).
TASK_MEMORY_FACTOR = 3.0
BYTES_PER_CELL = 48  # gathered float32 predicted and true margins, float64 ranks and centred copies
SAMPLE_QUANTILES = (0.1, 0.5, 0.9)  # targets whose margins the result keeps (by Spearman)


def target_batch(n_eval: int, n_train: int, memory: int = MEMORY) -> int:
    """Targets scored at once: their float32 weights (``4 x n_train`` bytes each) and their
    gathered margins (``BYTES_PER_CELL x n_eval``) fit in ``memory`` bytes (at least one target)."""
    return max(1, memory // (4 * n_train + BYTES_PER_CELL * n_eval))


@contextmanager
def evaluation_client(
    store: Any,
    target: str = "test",
    scheduler: Any = None,
    *,
    memory: int = MEMORY,
    max_memory: int | str = "2GB",
    storage_options: dict | None = None,
) -> Iterator[Client]:
    """The Dask client :func:`evaluate` would use to score ``target`` on the store (same
    arguments): pass it as ``scheduler`` to several evaluations to start one local cluster for all."""
    with _client(open_store(store, storage_options=storage_options), target, scheduler, memory, max_memory) as client:
        yield client


def _client(ds: xr.Dataset, target: str, scheduler: Any, memory: int, max_memory: int | str) -> Any:
    """:func:`budget_client` for scoring ``target`` of ``ds``: each worker holds one prediction
    task (a band of evaluation masks, a chunk of weights, a band of margins)."""
    bands = model_bands(ds, "eval")
    n_train = ds.sizes["train"]
    task = band_bytes(ds, ["train_masks"], bands) + 4 * (TARGET_CHUNK + SUB_BAND) * n_train
    task += max(map(band_size, bands)) * 2 * max(ds[f"{target}_margins"].data.chunks[1])  # a band of margins
    return budget_client(
        scheduler,
        parse_budget(max_memory),
        driver=DRIVER_BYTES + memory,
        worker=WORKER_BYTES + int(TASK_MEMORY_FACTOR * task),
        threads=True,
    )


def evaluation_group(target: str, name: str | None = None) -> str:
    """Where the evaluation of the store's datamodels (``name`` None) or of the attributions
    ``name`` is kept."""
    return f"evaluation/{target}" if name is None else f"{attributions.group_path(name)}/evaluation/{target}"


def _gather(client: Any, arrays: list[da.Array], bands: list, bar: tqdm, count: bool = True) -> list[np.ndarray]:
    """Compute row-chunked ``arrays`` band by band on the cluster into arrays on the client."""
    offsets = np.cumsum([0, *map(band_size, bands)])
    out = [np.empty((offsets[-1], a.shape[1]), dtype=a.dtype) for a in arrays]
    where = [(i, k) for i in range(len(bands)) for k in range(len(arrays))]
    futures = dict(zip(client.compute([arrays[k].blocks[i] for i, k in where]), where))
    for future, block in as_completed(futures, loop=client.loop, with_results=True):
        i, k = futures.pop(future)
        out[k][offsets[i] : offsets[i + 1]] = block
        if k == 0 and count:
            bar.update()
    return out


def evaluate(
    store: Any,
    target: str = "test",
    *,
    scores: Any = None,
    name: str | None = None,
    scheduler: Any = None,
    plot: str | Path | None = None,
    write: bool = True,
    memory: int = MEMORY,
    max_memory: int | str = "2GB",
    seed: int = 0,
    progress: bool = True,
    storage_options: dict | None = None,
) -> xr.Dataset:
    """Score the ``target`` datamodels of a store, or attribution ``scores``, on its evaluation
    models (``split == "eval"``).

    For each target example t, the predicted margins ``mask @ weight[:, t] + bias[t]`` of the
    evaluation models are compared with their true margins: Spearman and Pearson correlation
    across models, and the mean squared error (the correlations are taken before the bias is
    added: a shift changes no rank, and float32 rounding could tie two predictions). The LDS
    (linear datamodeling score) is the mean Spearman over targets (targets with no correlation,
    NaN, are left out of the means).

    Models trained on the same mask (found by comparing the masks) are that mask's replicates.
    When there are any, the result also holds the LDS against the margins averaged over each
    mask's replicates (as the datamodels paper reports it) and the noise ceiling
    (:func:`dmstore.analysis.lds.noise_ceiling`). Intervals (``LEVEL``): a bias-corrected bootstrap
    over evaluation masks (``MODEL_RESAMPLES`` resamples of the masks with their replicates, all
    targets, :func:`~dmstore.analysis.lds.resampled_spearman`) and a percentile bootstrap over
    targets.

    Targets are scored in batches of ``target_batch(n_eval, N_train, memory)``. For each batch,
    predictions run on Dask, one task per shard-aligned band of evaluation rows and 512 targets;
    the client gathers the batch's predicted and true margins of all evaluation models and ranks
    them. Memory: the batch's weights (``N_train x batch`` float32, on the workers, at worst one
    copy per worker), one band of masks (bool, all training examples) per worker, and on the
    client the batch's margins, ranks and centred copies (48 bytes per model and target);
    ``memory`` bounds the weights plus the client's share; ``max_memory`` the whole run.

    Parameters
    ----------
    store
        Path, fsspec URL or zarr store with datamodels in ``datamodels/{target}``.
    target
        ``test`` or ``train``: which datamodels to score (against ``{target}_margins``).
    scores
        Score these instead of the store's datamodels: a ``[train x targets]`` matrix, the path
        of a ``.npy``, ``.pt`` or Zarr file (:func:`dmstore.io.attributions.read_scores`), or the
        name of attributions the store keeps.
    name
        With ``scores`` and ``write``: keep the scores and their evaluation in the store as
        ``attributions/{name}`` (default: the file's name without its suffix).
    scheduler
        ``None`` (threads of this process), ``"local"`` (a local cluster of worker processes), a
        scheduler address or a ``dask.distributed.Client``.
    plot
        Where to write a PNG (predicted vs true margins of a few targets, the per-target
        correlations with their ceiling); no plot by default.
    write
        Write the result into the store (group :func:`evaluation_group`).
    memory
        Bytes for one batch of targets (weights and gathered margins).
    max_memory
        Bound on the peak memory of the whole run on this machine (this process with its
        ``memory`` and its threads, or the workers of ``"local"``,
        :func:`dmstore.io.cluster.budget_client`); on another cluster each worker's memory limit
        must hold one task.
    seed
        Seed of the bootstrap resamples.

    Returns
    -------
    xarray.Dataset
        ``spearman``, ``pearson``, ``mse`` (``target``); with replicates ``spearman_averaged``
        and ``noise_ceiling`` (``target``); ``predicted`` and ``true`` margins (``model``,
        ``sample``) of the targets at the 10%, 50% and 90% quantiles of Spearman in the first
        batch of targets; ``mask`` (``model``): the mask group of each evaluation model (its
        replicates share it); attributes ``lds``, ``lds_interval_models``,
        ``lds_interval_targets``, ``mean_pearson``, ``mean_mse``, ``n_eval_models``,
        ``n_masks``, ``n_targets``, ``level``, ``scored`` and, with replicates,
        ``lds_averaged`` (and its intervals), ``noise_ceiling``, ``noise_ceiling_single``.
    """
    ds = open_store(store, storage_options=storage_options)
    dm, scored, name, new = _weights(store, target, scores, name, write, ds.sizes["train"], storage_options)
    margins_name = f"{target}_margins"
    if margins_name not in ds:
        raise DmstoreError(f"the store has no {margins_name}: convert it with --arrays {margins_name}")
    targets = dm["target"].values
    if targets.size == 0:
        raise DmstoreError(f"the {scored} have no targets")
    columns = ds.indexes[target].get_indexer(targets)
    if (columns < 0).any():
        raise DmstoreError(f"{scored} targets missing from the store's {target} examples: {targets[columns < 0][:5]}")
    bands = model_bands(ds, "eval")
    masks = da.concatenate([ds["train_masks"].data[band] for band in bands])
    margins = da.concatenate([ds[margins_name].data[band] for band in bands])
    n_eval, n_train = masks.shape
    batch = target_batch(n_eval, n_train, memory)
    starts = range(0, len(targets), batch)
    per_target: dict[str, list[np.ndarray]] = {}
    resampled: dict[str, np.ndarray] = {}  # per resample of the masks: sum and count of Spearman
    with (
        _client(ds, target, scheduler, memory, max_memory) as client,
        tqdm(total=len(starts) * len(bands), desc=f"evaluate {scored}", unit="band", disable=not progress) as bar,
    ):
        digests = masks.rechunk({1: -1}).map_blocks(lds.mask_digests, chunks=(masks.chunks[0], (1,)), dtype=np.uint64)
        groups = lds.mask_groups(_gather(client, [digests], bands, bar, count=False)[0])
        counts = lds.mask_resamples(groups, seed=seed)
        biases = np.asarray(dm["bias"].values, dtype=np.float32)  # added to the scores, not before ranking
        for start in starts:
            cols = slice(start, start + batch)
            bias = biases[cols]
            predicted = predict(masks, dm["weight"].data[:, cols], np.zeros_like(bias))
            true = margins[:, columns[cols]].astype(np.float32)
            predicted, true = _gather(client, [predicted, true], bands, bar)
            predicted = lds.tied(predicted, groups)  # a mask's replicates: one prediction, exact ties
            batch_scores, batch_resampled = _batch_scores(predicted, true, bias, groups, counts)
            for key, values in batch_scores.items():
                per_target.setdefault(key, []).append(values)
            if start == 0:
                samples = _sample_targets(per_target["spearman"][0])
                sample_margins = {"predicted": predicted[:, samples] + bias[samples], "true": true[:, samples]}
            for key, values in batch_resampled.items():
                add = np.stack([np.nansum(values, axis=1), np.isfinite(values).sum(axis=1)])
                resampled[key] = resampled[key] + add if key in resampled else add
            del predicted, true  # before the next batch is gathered
    eval_models = np.concatenate([ds["model"].values[band] for band in bands])
    result = xr.Dataset(
        {key: ("target", np.concatenate(values)) for key, values in per_target.items()}
        | {key: (("model", "sample"), values) for key, values in sample_margins.items()},
        coords={"target": targets, "model": eval_models, "mask": ("model", groups), "sample": targets[samples]},
    )
    result.attrs = {
        "target_split": target,
        "scored": scored,
        **({"name": name} if name else {}),
        **_summary(result, resampled, groups, seed),
        "n_eval_models": int(n_eval),
        "n_targets": len(targets),
        **written_models(ds),
    }
    if write:
        if new:
            attributions.write_scores(store, name, dm, storage_options)
        result.to_zarr(
            store,
            group=evaluation_group(target, name),
            mode="w",
            zarr_format=3,
            consolidated=False,
            storage_options=storage_options,
        )
        consolidate(store, storage_options)
    if plot is not None:
        plot_evaluation(result, plot)
    return result


def _weights(
    store: Any, target: str, scores: Any, name: str | None, write: bool, n_train: int, storage_options: dict | None
) -> tuple[xr.Dataset, str, str | None, bool]:
    """The weights to score, what they are (for messages), the name they are kept under and
    whether they are new to the store."""
    if scores is None:
        dm = read_datamodels(store, target, storage_options)
        if dm.sizes["train"] != n_train:
            raise DmstoreError(
                f"the datamodels have {dm.sizes['train']} training examples but the store has "
                f"{n_train}: fit or import datamodels for this store"
            )
        return dm, f"{target} datamodels", None, False
    if isinstance(scores, str) and not Path(scores).exists() and "://" not in scores:
        if scores in attributions.stored_names(store, storage_options):  # attributions the store keeps
            return attributions.read_stored(store, scores, storage_options), f"attributions {scores}", scores, False
        raise DmstoreError(f"no scores file {scores} and no attributions of that name in the store")
    if name is None and isinstance(scores, str | Path):
        name = Path(scores).name.split(".")[0]
    if name is None and write:
        raise DmstoreError("name the scores (name=...) to keep them in the store, or pass write=False")
    attributions.group_path(name or "scores")  # a bad name fails before any work
    return attributions.read_scores(scores, n_train), f"attributions {name}" if name else "scores", name, True


def _batch_scores(
    predicted: np.ndarray, true: np.ndarray, bias: np.ndarray, groups: np.ndarray, counts: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One batch (``predicted`` without the ``bias``): its per-target scores (with replicated masks
    also against the averaged margins, and the noise ceiling), and per resample of the masks
    (``counts``) and target the Spearman of single models (``lds``) and, with replicates, of the
    averaged margins (``lds_averaged``)."""
    ranked = lds.ranks(predicted), lds.ranks(true)  # once, for the scores and their resamples
    scores = lds.target_scores(predicted, true, bias, ranked)
    resampled = {"lds": lds.resampled_spearman(counts[:, groups], *ranked)}
    ceiling = lds.noise_ceiling(true, groups)
    if ceiling is not None:
        ranked = lds.ranks(lds.group_means(predicted, groups)), lds.ranks(lds.group_means(true, groups))
        scores |= {
            "spearman_averaged": lds.pearson(*ranked),
            "noise_ceiling": ceiling["averaged"],
            "noise_ceiling_single": ceiling["single"],
        }
        resampled["lds_averaged"] = lds.resampled_spearman(counts, *ranked)
    return scores, resampled


def _summary(result: xr.Dataset, resampled: dict[str, np.ndarray], groups: np.ndarray, seed: int) -> dict:
    """The result's attributes: means over targets and their bootstrap intervals."""
    summary: dict[str, Any] = {
        "lds": float(np.nanmean(result["spearman"])),
        "mean_pearson": float(np.nanmean(result["pearson"])),
        "mean_mse": float(np.nanmean(result["mse"])),
        "n_masks": int(groups.max()) + 1,
        "level": lds.LEVEL,
    }
    if "spearman_averaged" in result:
        summary["lds_averaged"] = float(np.nanmean(result["spearman_averaged"]))
        summary["noise_ceiling"] = float(np.nanmean(result["noise_ceiling"]))
        summary["noise_ceiling_single"] = float(np.nanmean(result["noise_ceiling_single"]))
    for key, variable in (("lds", "spearman"), ("lds_averaged", "spearman_averaged")):
        if key in resampled:
            total, count = resampled[key]
            with np.errstate(invalid="ignore", divide="ignore"):
                summary[f"{key}_interval_models"] = list(lds.bootstrap_interval(total / count, summary[key]))
            summary[f"{key}_interval_targets"] = list(lds.bootstrap_targets(result[variable].values, seed=seed))
    return summary


def compare(store: Any, target: str = "test", *, plot: str | Path | None = None,
            storage_options: dict | None = None) -> list[dict]:
    """The evaluations kept in the store (its datamodels' and every ``attributions/{name}``'s),
    ranked by LDS: one dict per method with ``name``, ``lds``, its intervals, ``lds_averaged``
    and ``noise_ceiling`` where replicates exist, ``n_targets``; a bar chart in ``plot``."""
    groups = {"datamodels": evaluation_group(target)}
    groups |= {name: evaluation_group(target, name) for name in attributions.stored_names(store, storage_options)}
    rows = []
    for name, group in groups.items():
        try:
            attrs = xr.open_zarr(store, group=group, zarr_format=3, consolidated=False,
                                 storage_options=storage_options).attrs
        except FileNotFoundError:  # not evaluated (yet)
            continue
        rows.append({"name": name, **{k: v for k, v in attrs.items() if k.startswith(("lds", "noise", "n_", "level"))}})
    if not rows:
        raise DmstoreError(f"nothing in the store was evaluated on {target}: run `dmstore evaluate` first")
    rows.sort(key=lambda row: -row["lds"])
    if plot is not None:
        plot_comparison(rows, target, plot)
    return rows


def plot_comparison(rows: list[dict], target: str, path: str | Path) -> Path:
    """PNG: the LDS of each method with its interval over evaluation masks, best on top."""
    fig, axes = plots.panels(1, width=7.0)
    ax = axes[0]
    y = np.arange(len(rows))[::-1]
    lds_values = np.array([row["lds"] for row in rows])
    low, high = np.array([row["lds_interval_models"] for row in rows]).T
    ax.barh(y, lds_values, xerr=[lds_values - low, high - lds_values], color="tab:blue", alpha=0.7, capsize=4)
    ceilings = [row["noise_ceiling_single"] for row in rows if "noise_ceiling_single" in row]
    if ceilings:
        ax.axvline(ceilings[0], color="k", linestyle="--", label="noise ceiling (one model)")
        ax.legend(fontsize="small")
    ax.set_yticks(y, [row["name"] for row in rows])
    ax.set_xlabel(f"LDS on {target} targets ({rows[0]['level']:.0%} interval over evaluation masks)")
    return plots.save(fig, path, f"{len(rows)} methods, {target} targets")


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
    labels = {"spearman": "Spearman", "spearman_averaged": "Spearman, replicates averaged", "noise_ceiling": "ceiling"}
    for name, label in labels.items():
        if name in result:
            values = result[name].values
            hist.hist(values[np.isfinite(values)], bins=40, alpha=0.5, label=label)
    low, high = result.attrs["lds_interval_models"]
    hist.axvline(result.attrs["lds"], color="k", linestyle="--", label=f"LDS {result.attrs['lds']:.3f}")
    hist.axvspan(low, high, color="k", alpha=0.1, label=f"{result.attrs['level']:.0%} interval (models)")
    hist.set_xlabel("correlation across evaluation models, per target")
    hist.set_ylabel("targets")
    hist.legend(fontsize="small")
    return plots.save(
        fig, path, f"{result.attrs['n_targets']} targets, {result.attrs['n_eval_models']} evaluation models"
    )
