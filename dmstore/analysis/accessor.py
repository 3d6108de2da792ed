"""``ds.dm``: datamodel queries on a Dataset opened with ``dmstore.open`` (``import dmstore``
registers it on xarray Datasets and loads this module on first use)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from dmstore.analysis import plots
from dmstore.analysis.predict import SUB_BAND, predict
from dmstore.errors import DmstoreError
from dmstore.io.datamodels import read_datamodels


class DatamodelsAccessor:
    """Datamodel queries: ``ds.dm.datamodels("test")``, ``ds.dm.top_influencers(test=17)``, ...

    A target is named by keyword, ``test=INDEX`` or ``train=INDEX`` (an example index of that
    split); its datamodel is the weight column ``datamodels/{split}`` holds for it. The store is
    the one ``dmstore.open`` recorded in ``ds.encoding`` (or xarray's ``source``).
    """

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds
        self._datamodels: dict[str, xr.Dataset] = {}

    @property
    def store(self) -> Any:
        """The store this Dataset was opened from."""
        encoding = self._ds.encoding
        store = encoding.get("dmstore_store", encoding.get("source"))
        if store is None:
            raise DmstoreError("this Dataset does not say which store it came from: open it with dmstore.open(store)")
        return store

    def datamodels(self, split: str = "test") -> xr.Dataset:
        """The datamodels of ``split``: ``weight`` (``train``, ``target``), ``bias``, ``lam`` (lazy)."""
        if split not in self._datamodels:
            options = self._ds.encoding.get("dmstore_storage_options")
            self._datamodels[split] = read_datamodels(self.store, split, options)
        return self._datamodels[split]

    def weights(self, *, test: int | None = None, train: int | None = None) -> xr.DataArray:
        """The datamodel of one target: its weight on every training example (``train``), loaded."""
        split, index = _target(test, train)
        dm = self.datamodels(split)
        if index not in dm.indexes["target"]:
            raise DmstoreError(f"the store holds no datamodel for {split} example {index}")
        return dm["weight"].sel(target=index).compute()

    def top_influencers(self, *, test: int | None = None, train: int | None = None, k: int = 10) -> xr.Dataset:
        """The ``k`` training examples with the largest and the ``k`` with the smallest weights.

        Returns
        -------
        xarray.Dataset
            ``example`` (training example index) and ``weight``, both (``direction``, ``rank``),
            ``direction`` being ``positive`` (largest weights first) and ``negative`` (smallest
            first). A sparse datamodel may have fewer than ``k`` weights of a sign: the list then
            goes on with zero weights; read ``weight``.
        """
        w = self.weights(test=test, train=train)
        order = np.argsort(w.values, kind="stable")
        picks = np.stack([order[::-1][:k], order[:k]])
        return xr.Dataset(
            {
                "example": (("direction", "rank"), w["train"].values[picks]),
                "weight": (("direction", "rank"), w.values[picks]),
            },
            coords={"direction": ["positive", "negative"], "rank": np.arange(picks.shape[1])},
            attrs=dict(zip(("target_split", "target"), _target(test, train))),
        )

    def predict(self, masks: Any, split: str = "test") -> xr.DataArray:
        """Predicted margins ``masks @ weight + bias`` of every ``split`` target for new subsets.

        Parameters
        ----------
        masks
            ``[n, N_train]`` (or one ``[N_train]`` subset) of 0/1 or bool: numpy, Dask, or an
            ``xarray.DataArray`` with a ``train`` dimension (e.g. ``ds.train_masks.isel(...)``).

        Returns
        -------
        xarray.DataArray
            (``model``, ``target``), or (``target``) for one subset: loaded for numpy input, lazy
            (Dask) for Dask or xarray input. One task holds a band of masks and a
            ``[N_train, 512]`` block of weights.
        """
        dm = self.datamodels(split)
        lazy = isinstance(masks, xr.DataArray) or dask.is_dask_collection(masks)
        if isinstance(masks, xr.DataArray):
            if "train" not in masks.dims or masks.ndim > 2:
                raise DmstoreError("masks need a `train` dimension and at most one other (the subsets)")
            rows = [d for d in masks.dims if d != "train"]
            single = not rows
            masks = masks.expand_dims("model") if single else masks.transpose(rows[0], "train")
            row_dim, row_coord = masks.dims[0], masks[masks.dims[0]].values
            data = masks.data
        else:
            single = np.ndim(masks) == 1
            data = da.atleast_2d(masks) if lazy else np.atleast_2d(np.asarray(masks))
            row_dim, row_coord = "model", np.arange(data.shape[0])
        if data.shape[-1] != dm.sizes["train"]:
            raise DmstoreError(f"masks have {data.shape[-1]} training examples, the datamodels {dm.sizes['train']}")
        data = da.asarray(data) if lazy else da.from_array(data, chunks=(SUB_BAND, -1))
        margins = xr.DataArray(
            predict(data, dm["weight"].data, dm["bias"].data),
            dims=(row_dim, "target"),
            coords={row_dim: row_coord, "target": dm["target"].values},
            name="predicted_margin",
        )
        if single:
            margins = margins.isel({row_dim: 0}, drop=True)
        return margins if lazy else margins.compute()

    def counterfactual(
        self, *, test: int | None = None, train: int | None = None, remove: int | Sequence[int] = 10
    ) -> xr.Dataset:
        """Predicted change of a target's margin when training examples are removed.

        Definition: a typical model trains on a random subset that holds each training example
        with probability ``p = pct / 100`` (the store's subsampling fraction). Its expected
        predicted margin is ``baseline = bias + p * sum(weight)``. With the ``removed`` examples
        taken out of the pool (never in the subset, the others still with probability ``p``) it
        becomes ``counterfactual = baseline + change`` with ``change = -p * sum(weight[removed])``.

        Parameters
        ----------
        remove
            An int k: the (at most) k training examples with the largest positive weights; or
            the training example indices to remove.

        Returns
        -------
        xarray.Dataset
            Scalars ``baseline``, ``change``, ``counterfactual``; ``weight`` of the removed
            examples along coordinate ``removed``.
        """
        if "pct" not in self._ds.attrs:
            raise DmstoreError("the store records no subsampling fraction (attribute `pct`)")
        p = float(self._ds.attrs["pct"]) / 100
        split, index = _target(test, train)
        w = self.weights(test=test, train=train)
        if isinstance(remove, (int, np.integer)):
            top = np.argsort(w.values, kind="stable")[::-1][:remove]
            removed = w.isel(train=top[w.values[top] > 0])
        else:
            removed = w.sel(train=list(remove))
        bias = float(self.datamodels(split)["bias"].sel(target=index))
        baseline = bias + p * float(w.sum(dtype=np.float64))
        change = -p * float(removed.sum(dtype=np.float64))
        return xr.Dataset(
            {
                "baseline": baseline,
                "change": change,
                "counterfactual": baseline + change,
                "weight": ("removed", removed.values),
            },
            coords={"removed": removed["train"].values},
            attrs={"target_split": split, "target": int(index), "p": p},
        )

    def nearest(self, *, test: int | None = None, train: int | None = None, k: int = 10) -> xr.DataArray:
        """The ``k`` other targets of the split whose weight vectors have the largest cosine
        similarity with this target's; one streaming pass over the weights.

        Returns
        -------
        xarray.DataArray
            ``cosine`` along ``target`` (the neighbours' example indices), most similar first;
            targets with all-zero weights have no similarity and come last.
        """
        split, index = _target(test, train)
        w = self.weights(test=test, train=train).drop_vars("target")
        weight = self.datamodels(split)["weight"]
        dots, norms = dask.compute(xr.dot(weight, w, dim="train"), np.sqrt((weight**2).sum("train")))
        with np.errstate(invalid="ignore", divide="ignore"):
            cosine = (dots / (norms * np.sqrt(float((w**2).sum())))).drop_sel(target=index)
        order = np.argsort(-np.nan_to_num(cosine.values, nan=-np.inf), kind="stable")[:k]
        return cosine.isel(target=order).rename("cosine").assign_attrs(target_split=split, of=int(index))

    def plot_influencers(
        self,
        *,
        test: int | None = None,
        train: int | None = None,
        k: int = 5,
        images: dict[str, Any] | None = None,
        path: str | Path | None = None,
    ) -> Path | Any:
        """The paper's picture: a target example beside its ``k`` strongest positive and ``k``
        strongest negative training examples, as images, with their weights.

        Parameters
        ----------
        images
            ``{"train": [N_train, H, W(, 3)], "test": [N_test, ...]}`` arrays in the store's
            example order (for CIFAR-10: ``torchvision.datasets.CIFAR10(root, train=...).data``);
            by default the images of the bundled dataset the store records (``dataset`` attribute).
        path
            Where to write the PNG; without it the ``matplotlib`` figure is returned.
        """
        split, index = _target(test, train)
        images = images or _dataset_images(self._ds.attrs.get("dataset"))
        top = self.top_influencers(test=test, train=train, k=k)
        fig, axes = plots.panels(2 * k + 1, width=1.6, height=2.4)
        cells = [(axes[0], images[split][index], f"{split} {index}\n(target)")]
        for direction, offset in (("positive", 1), ("negative", k + 1)):
            for rank in range(k):
                example = int(top["example"].sel(direction=direction, rank=rank))
                weight = float(top["weight"].sel(direction=direction, rank=rank))
                cells.append((axes[offset + rank], images["train"][example], f"train {example}\n{weight:+.3f}"))
        for ax, image, title in cells:
            ax.imshow(image, cmap="gray_r" if np.ndim(image) == 2 else None)
            ax.set_title(title, fontsize="small")
            ax.set_xticks([])
            ax.set_yticks([])
        title = f"{split} {index}: {k} strongest positive, then {k} strongest negative training examples"
        if path is None:
            fig.suptitle(title)
            return fig
        return plots.save(fig, path, title)


def _dataset_images(dataset: str | None) -> dict[str, np.ndarray]:
    """The train and test images of a bundled dataset, or a one-line error asking for them."""
    from dmstore.io.datasets import DATASETS

    if dataset not in DATASETS:
        raise DmstoreError(
            f"dmstore has no images of the dataset {dataset!r}: pass images={{'train': ..., 'test': ...}} "
            "(for CIFAR-10, torchvision.datasets.CIFAR10(root, train=True/False).data)"
        )
    split = DATASETS[dataset]()
    return {"train": split.train_images, "test": split.test_images}


def _target(test: int | None, train: int | None) -> tuple[str, int]:
    """(split, example index) of a target named by ``test=`` or ``train=``."""
    if (test is None) == (train is None):
        raise DmstoreError("name one target: test=INDEX or train=INDEX")
    return ("test", int(test)) if test is not None else ("train", int(train))
