"""Where the fit computes: an array namespace and a device (numpy on the CPU, CuPy on a GPU).

The solver (:mod:`dmstore.fitting.solver`, :mod:`dmstore.fitting.fista`) and the products of
the statistics pass are written against the array API standard and run on one :class:`Device`.
Host data (counts gathered from the store, target statistics, masks) enter through
:meth:`Device.put` and results leave through :meth:`Device.get`: the only crossings. The test
suite runs them on array-api-strict's second device as well, where any other crossing raises.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dmstore.errors import DmstoreError

#: The names ``--device`` takes.
DEVICES = ("cpu", "cuda")
#: int8 products ``out = a @ b`` with int32 results: ``(a, b, out)``, numpy arrays.
Int8Matmul = Callable[[np.ndarray, np.ndarray, np.ndarray], None]


@dataclass(frozen=True)
class Device:
    """An array namespace ``xp``, the device its arrays are made on (``where``) and, for a
    namespace whose arrays live elsewhere than in host memory, the device ``host`` of the host.
    ``int8``: numpy's mask products may use :func:`int8_matmul` where it is available."""

    xp: Any
    where: Any = None
    host: Any = None
    name: str = "cpu"
    int8: bool = True

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

    def mask_matmul(self) -> Int8Matmul | None:
        """The int8 product mask products on this device use (:func:`int8_matmul`: numpy with
        ``int8``, where torch provides it), or None (float)."""
        return int8_matmul() if self.xp is np and self.int8 else None

    def free_bytes(self) -> int | None:
        """Free memory on the device (None where it shares the host's)."""
        if self.name != "cuda":
            return None
        import cupy

        return int(cupy.cuda.runtime.memGetInfo()[0])


CPU = Device(np)

@functools.cache
def int8_matmul() -> Int8Matmul | None:
    """torch's int8 GEMM with int32 accumulation on the CPU (oneDNN: AMX or VNNI on x86; sums of
    0/1 products exact up to 2^31), where torch is installed and it is exact on a check product;
    None otherwise. Measured on this project's machine (AMX): 5-8x numpy's float32 ``sgemm`` on
    the same masks. The operands may be strided views (a bool array viewed as int8)."""
    try:
        import torch

        matmul = torch._int_mm
    except (ImportError, AttributeError, OSError):  # no torch, an old one, or a broken install
        return None

    def product(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        # a view with a dimension of 1 has strides oneDNN can misread (measured: a wrong product);
        # a read-only operand would make torch warn
        a, b = (x.copy() if 1 in x.shape or not x.flags.writeable else x for x in (a, b))
        matmul(torch.from_numpy(a), torch.from_numpy(b), out=torch.from_numpy(out))

    rng = np.random.default_rng(0)
    masks = rng.integers(0, 2, (45, 83), dtype=np.int8)  # odd shapes, strided operands as the pass has
    a, b = masks[:, 3:20].T, masks[:, 7:70]
    out = np.zeros((a.shape[0], b.shape[1]), dtype=np.int32)
    try:
        product(a, b, out)
    except (RuntimeError, ValueError):  # a build of torch without the CPU kernel
        return None
    return product if np.array_equal(out, a.astype(np.int32) @ b) else None


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
