"""Published datamodels (``.pt``: a dict of ``weight`` [N_train x N], ``bias``, ``lam``) in and out.

Files are loaded with ``torch.load(weights_only=True)``: nothing from a bucket is unpickled as code.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from dmstore.errors import DmstoreError
from dmstore.io.datamodels import read_datamodels, write_datamodels
from dmstore.io.source import Source

KEYS = ("weight", "bias", "lam")


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise DmstoreError("reading or writing .pt files needs torch: pip install 'dmstore[torch]'") from exc
    return torch


def load_pt(path: str) -> dict[str, np.ndarray]:
    """``weight``, ``bias``, ``lam`` of a local ``.pt`` file, memory-mapped where torch can."""
    torch = _torch()
    try:
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise DmstoreError(
            f"{path} is not a datamodels .pt file torch can load safely ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(content, dict) or any(k not in content for k in KEYS):
        raise DmstoreError(f"{path} does not hold a dict with {', '.join(KEYS)}: is it a datamodels file?")
    arrays = {k: content[k].numpy() for k in KEYS}
    n_train, n_targets = arrays["weight"].shape
    if arrays["bias"].shape != (n_targets,) or arrays["lam"].reshape(-1).shape != (n_targets,):
        raise DmstoreError(f"{path}: bias and lam must have one value per column of weight ({n_targets})")
    return arrays


def import_datamodels(source: Source, key: str, dest: str, split: str, dest_options: dict | None = None) -> None:
    """Copy the ``.pt`` at ``key`` to a temporary local file and write it into ``datamodels/{split}``."""
    with tempfile.TemporaryDirectory(prefix="dmstore-pt-") as tmp:
        local = os.path.join(tmp, os.path.basename(key))
        source.retrying(key, lambda: source.fs.get_file(source.path(key), local))
        arrays = load_pt(local)
        write_datamodels(
            dest,
            split,
            arrays["weight"],
            arrays["bias"],
            arrays["lam"].reshape(-1),
            attrs={"method": "imported", "source": source.describe(key), "source_dtype": str(arrays["weight"].dtype)},
            overwrite=True,
            storage_options=dest_options,
        )


def export_datamodels(store: str, split: str, out: str, storage_options: dict | None = None) -> None:
    """Write ``datamodels/{split}`` as a ``.pt`` dict in the published format, value for value.

    Memory: the weight matrix is held once (N_train x N float32).
    """
    torch = _torch()
    dm = read_datamodels(store, split, storage_options)
    dtype = np.dtype(dm.attrs.get("source_dtype", "float32"))
    tensors = {k: torch.from_numpy(np.ascontiguousarray(dm[k].values.astype(dtype))) for k in KEYS}
    partial = f"{out}.partial"
    torch.save(tensors, partial)
    os.replace(partial, out)
