"""The learning curve: the LDS of datamodels fitted on more and more of the fit models, so that a
user can see whether training more models is worth it."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from dmstore.analysis import plots
from dmstore.analysis.evaluate import evaluate, evaluation_client
from dmstore.errors import DmstoreError
from dmstore.fitting.fit import fit
from dmstore.io.dataset import open as open_store
from dmstore.io.rows import model_positions

#: Points of the default curve: the fit models halved this many times, up to all of them.
POINTS = 5


def curve_sizes(n_fit: int, points: int = POINTS) -> list[int]:
    """Fit-model counts of a curve: ``n_fit``, halved ``points - 1`` times (at least 8 models)."""
    return sorted({min(n_fit, max(8, n_fit >> k)) for k in range(points)})


def learning_curve(
    store: str,
    sizes: list[int] | None = None,
    *,
    target: str = "test",
    targets: slice | None = None,
    scheduler: Any = None,
    plot: str | Path | None = None,
    progress: bool = True,
    **fit_options: Any,
) -> xr.Dataset:
    """Fit the ``target`` datamodels on the first ``size`` fit models for each of ``sizes``
    (smallest first) and score each fit on the evaluation models.

    The persisted statistics grow with the sizes, so each fit reads only the models added since
    the one before; the validation rows stay those of the smallest size. The store is left with
    the datamodels of the largest size (all fit models by default), as a plain ``dmstore fit``
    on them would leave it (same options), and the LDS of each size is returned.

    Returns
    -------
    xarray.Dataset
        Along ``models`` (fit models, validation included): ``lds`` with ``lds_low`` and
        ``lds_high`` (interval over evaluation masks), and with replicated evaluation masks
        ``lds_averaged`` and ``noise_ceiling``; attributes ``target_split``, ``n_targets``.
    """
    n_fit = model_positions(open_store(store), "fit").size
    sizes = sorted(set(sizes)) if sizes else curve_sizes(n_fit)
    if sizes[-1] > n_fit or sizes[0] < 3:
        raise DmstoreError(f"learning-curve sizes must be within 3..{n_fit} (the store's fit models): got {sizes}")
    rows: dict[str, list[float]] = {}
    # one local cluster of worker processes scores every size; threads of this process start in no
    # time, and none runs while a size is fitted (they set the allocator for their own work)
    clients = nullcontext(None) if scheduler is None else evaluation_client(store, target, scheduler)
    with clients as client:
        for size in sizes:
            fit(store, target, targets=targets, models=size, overwrite=True, scheduler=scheduler, progress=progress,
                **fit_options)
            attrs = evaluate(store, target, scheduler=client, write=False, progress=progress).attrs
            point = {"lds": attrs["lds"], "lds_low": attrs["lds_interval_models"][0],
                     "lds_high": attrs["lds_interval_models"][1]}
            if "lds_averaged" in attrs:
                point |= {"lds_averaged": attrs["lds_averaged"], "noise_ceiling": attrs["noise_ceiling"]}
            for key, value in point.items():
                rows.setdefault(key, []).append(value)
    result = xr.Dataset(
        {key: ("models", np.array(values)) for key, values in rows.items()},
        coords={"models": sizes},
        attrs={"target_split": target, "n_targets": int(attrs["n_targets"])},
    )
    if plot is not None:
        plot_curve(result, plot)
    return result


def plot_curve(result: xr.Dataset, path: str | Path) -> Path:
    """PNG: LDS against fit models (log scale) with its interval, and the ceiling where known."""
    fig, axes = plots.panels(1, width=6.0, height=4.2)
    ax = axes[0]
    models = result["models"].values
    ax.plot(models, result["lds"], "o-", label="LDS (single models)")
    ax.fill_between(models, result["lds_low"], result["lds_high"], alpha=0.2, label="95% interval (masks)")
    if "lds_averaged" in result:
        ax.plot(models, result["lds_averaged"], "s-", label="LDS (replicates averaged)")
        ax.axhline(float(result["noise_ceiling"][-1]), color="k", linestyle="--", label="noise ceiling")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("fit models (validation included)")
    ax.set_ylabel(f"LDS on {result.attrs['n_targets']} {result.attrs['target_split']} targets")
    ax.legend(fontsize="small")
    return plots.save(fig, path, "learning curve: is training more models worth it?")
