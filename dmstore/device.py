"""The array-namespace seam: numpy on the CPU, CuPy (imported only when asked for) on a GPU."""

from __future__ import annotations

from types import ModuleType

import numpy as np

from dmstore.errors import DmstoreError

DEVICES = ("cpu", "cuda")


def array_namespace(device: str) -> ModuleType:
    """The module that computes on ``device``: ``numpy`` for ``cpu``, ``cupy`` for ``cuda``.

    Raises
    ------
    DmstoreError
        For an unknown device, or ``cuda`` where CuPy or a GPU is missing.
    """
    if device == "cpu":
        return np
    if device != "cuda":
        raise DmstoreError(f"unknown device {device!r}: use one of {', '.join(DEVICES)}")
    try:
        import cupy
    except ImportError as exc:
        raise DmstoreError(
            "--device cuda needs CuPy: install it with `pip install dmstore[gpu]` "
            "(cupy-cuda12x) or run with --device cpu"
        ) from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        raise DmstoreError(f"--device cuda: CUDA is not usable here ({exc}); run with --device cpu") from exc
    if count == 0:
        raise DmstoreError("--device cuda: no GPU found; run with --device cpu")
    return cupy
