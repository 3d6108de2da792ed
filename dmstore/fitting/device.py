"""Where the fit computes: an array namespace and a device (numpy on the CPU, CuPy on a GPU).

The solver (:mod:`dmstore.fitting.solver`, :mod:`dmstore.fitting.fista`) and the products of
the statistics pass are written against the array API standard and run on one :class:`Device`.
Host data (counts gathered from the store, target statistics, masks) enter through
:meth:`Device.put` and results leave through :meth:`Device.get`: the only crossings. The test
suite runs them on array-api-strict's second device as well, where any other crossing raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dmstore.errors import DmstoreError

#: The names ``--device`` takes.
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Device:
    """An array namespace ``xp``, the device its arrays are made on (``where``) and, for a
    namespace whose arrays live elsewhere than in host memory, the device ``host`` of the host."""

    xp: Any
    where: Any = None
    host: Any = None
    name: str = "cpu"

    def put(self, array: Any, dtype: Any = None) -> Any:
        """``array`` (host) on this device, in ``dtype`` (a numpy dtype or one of ``xp``'s)."""
        if isinstance(dtype, (type, np.dtype)):  # a numpy dtype: the namespace's
            dtype = self.dtype(dtype)
        if self.xp is np:
            return np.asarray(array, dtype=dtype)
        return self.xp.asarray(np.ascontiguousarray(array), dtype=dtype, device=self.where)

    def get(self, array: Any) -> np.ndarray:
        """``array`` (this device) as a numpy array in host memory."""
        if self.xp is np:
            return np.asarray(array)
        to_host = getattr(array, "get", None)  # CuPy
        if to_host is not None:
            return to_host()
        return np.asarray(array.to_device(self.host))

    def dtype(self, dtype: Any) -> Any:
        """The namespace's dtype of a numpy ``dtype``."""
        return np.dtype(dtype).type if self.xp is np else getattr(self.xp, np.dtype(dtype).name)

    def free_bytes(self) -> int | None:
        """Free memory on the device (None where it shares the host's)."""
        if self.name != "cuda":
            return None
        import cupy

        return int(cupy.cuda.runtime.memGetInfo()[0])


CPU = Device(np)


def device(name: str | Device) -> Device:
    """The :class:`Device` of ``--device NAME`` (``cpu``, ``cuda``), or ``name`` itself."""
    if isinstance(name, Device):
        return name
    if name == "cpu":
        return CPU
    if name == "cuda":
        try:
            import array_api_compat.cupy as xp
            import cupy

            cupy.cuda.runtime.getDeviceCount()
        except Exception as error:  # no CuPy, no driver, no GPU: one line either way
            raise DmstoreError(
                f"--device cuda needs CuPy and an NVIDIA GPU ({type(error).__name__}: {error}): install "
                "cupy-cuda12x (pip install 'dmstore[gpu]') on a machine with a GPU, or use --device cpu"
            ) from None
        return Device(xp, name="cuda")
    raise DmstoreError(f"unknown device {name!r}: use one of {', '.join(DEVICES)}")
