"""Create an experiment store: the labelled, sharded skeleton of a converted store, empty, for
training runs to write their models' rows into (:mod:`dmstore.experiment.writer`).

The arrays, chunks, shards and codecs are those ``dmstore convert`` plans for the same shapes,
so every command works on the store, and a compacted row-block holds the bytes convert writes.
The root attribute ``dmstore_experiment`` holds the spec: the per-model arrays (row shape and
dtype), the extras (small per-model numbers) and the number of model slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import fsspec
import numpy as np
from zarr.codecs import Crc32cCodec

from dmstore._version import __version__
from dmstore.conversion.plan import ArrayPlan, plan_array
from dmstore.errors import DmstoreError
from dmstore.io import labels
from dmstore.io import store as layout
from dmstore.io.dataset import consolidate, open_group

DTYPES = {"masks": np.dtype(bool), "margins": np.dtype(np.float16), "logits": np.dtype(np.float16)}
COORDS = ("model", "split", "done", "train", "test", "class")


def array_plans(train: int, test: int, models: int, classes: int | None) -> list[ArrayPlan]:
    """The arrays of an experiment with these sizes, planned as ``dmstore convert`` plans them."""
    shapes: dict[str, tuple[int, ...]] = {
        "train_masks": (models, train),
        "train_margins": (models, train),
        "test_margins": (models, test),
    }
    if classes:
        shapes |= {"train_logits": (models, train, classes), "test_logits": (models, test, classes)}
    return [plan_array(name, shape, DTYPES[name.split("_")[1]]) for name, shape in shapes.items()]


def create(
    store: str,
    *,
    train: int,
    test: int,
    models: int,
    eval_models: int = 0,
    classes: int | Sequence[str] | None = None,
    extras: dict[str, str] | None = None,
    dataset: str = "experiment",
    pct: int | None = None,
    provenance: dict[str, Any] | None = None,
    storage_options: dict | None = None,
) -> None:
    """Create an empty experiment store with ``models`` model slots.

    Parameters
    ----------
    store
        A new local path or fsspec URL (``s3://bucket/run.zarr``).
    train, test
        Train and test examples: masks ``[models, train]`` bool, margins ``[models, train]`` and
        ``[models, test]`` float16.
    models
        Model slots (rows); :func:`dmstore.experiment.compact.grow` adds more later.
    eval_models
        The last ``eval_models`` slots are evaluation models (``split == "eval"``), as in the
        published data.
    classes
        Number of classes or their names: also store logits ``[models, examples, classes]``.
    extras
        Per-model numbers every write records, name -> dtype (``{"seed": "int64",
        "accuracy": "float32"}``).
    dataset, pct, provenance
        Labels kept in the root attributes.
    """
    extras = dict(extras or {})
    names = list(classes) if classes is not None and not isinstance(classes, int) else None
    n_classes = len(names) if names is not None else classes
    _check(train, test, models, eval_models, n_classes, extras)
    if layout.root_attrs(store, storage_options) is not None or _nonempty(store, storage_options):
        raise DmstoreError(f"{store} already exists: choose a new path for the experiment store (nothing was changed)")
    plans = array_plans(train, test, models, n_classes)
    model = np.arange(models, dtype=np.int64)
    split = np.where(model >= models - eval_models, "eval", "fit")
    coords: dict[str, Any] = {"model": model, "split": labels.encode("model", split, labels.MODEL_SPLITS)}
    coords |= {"train": np.arange(train, dtype=np.int64), "test": np.arange(test, dtype=np.int64)}
    if n_classes:
        names = names or [str(c) for c in range(n_classes)]
        coords["class"] = labels.encode("class", names, names)
    spec = {
        "models": models,
        "arrays": {p.name: {"shape": list(p.shape[1:]), "dtype": p.dtype.str} for p in plans},
        "extras": extras,
    }
    attrs = {
        "dataset": dataset,
        **({"pct": pct} if pct is not None else {}),
        "provenance": provenance or {},
        "dmstore_version": __version__,
        "dmstore_status": "experiment",
        "dmstore_experiment": spec,
        "dmstore_plan": {"rows": [0, models], "arrays": layout.array_fingerprints(plans)},
    }
    layout.create_skeleton(store, plans, coords, attrs, storage_options)
    root = open_group(store, storage_options, mode="r+")
    rows = min(p.shards[0] for p in plans)
    for name, dtype in extras.items():
        root.create_array(
            name,
            shape=(models,),
            dtype=dtype,
            chunks=(rows,),
            compressors=[layout.codec(np.dtype(dtype)), Crc32cCodec()],
            fill_value=0,
            dimension_names=("model",),
            config={"write_empty_chunks": True},  # a compacted block always has its chunk
        )
    consolidate(store, storage_options)


def _check(train: int, test: int, models: int, eval_models: int, classes: int | None, extras: dict) -> None:
    for what, n in (("train", train), ("test", test), ("models", models)):
        if int(n) < 1:
            raise DmstoreError(f"{what} must be at least 1, not {n}")
    if not 0 <= eval_models < models:
        raise DmstoreError(f"eval_models {eval_models} must be below the {models} model slots")
    if classes is not None and classes < 2:
        raise DmstoreError(f"classes must be at least 2, not {classes}")
    for name, dtype in extras.items():
        if name in COORDS or name.endswith(("_masks", "_margins", "_logits")) or not name.isidentifier():
            raise DmstoreError(f"extra {name!r} is not a usable name: choose an identifier like seed or accuracy")
        try:
            kind = np.dtype(dtype).kind
        except TypeError:
            kind = ""
        if kind not in "biuf" or not kind:
            raise DmstoreError(f"extra {name!r} has dtype {dtype!r}: extras are numbers (int64, float32, bool...)")


def _nonempty(store: str, storage_options: dict | None) -> bool:
    fs, path = fsspec.core.url_to_fs(store, **(storage_options or {}))
    return bool(fs.exists(path) and fs.ls(path))
