"""dmstore: a Zarr/Dask data store and out-of-core analysis system for datamodels data.

The Python API is one function per command (``dmstore.fit``, ``dmstore.evaluate``...), each
imported on first use, so that ``import dmstore`` and the ``dmstore`` command start fast. No
function shadows a module: the modules live in the layer packages (``dmstore.fitting.fit`` holds
``fit``). Importing dmstore registers the ``ds.dm`` accessor on xarray Datasets.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import xarray as xr

from dmstore._version import __version__
from dmstore.errors import DmstoreError

# each public name and the module that defines it
_API = {
    "compact": "dmstore.experiment.compact",
    "convert": "dmstore.conversion.convert",
    "create": "dmstore.experiment.create",
    "evaluate": "dmstore.analysis.evaluate",
    "fit": "dmstore.fitting.fit",
    "grow": "dmstore.experiment.compact",
    "make_example": "dmstore.experiment.example",
    "open": "dmstore.io.dataset",
    "read_datamodels": "dmstore.io.datamodels",
    "stats": "dmstore.analysis.stats",
    "status": "dmstore.experiment.compact",
    "verify": "dmstore.conversion.verify",
    "write_datamodels": "dmstore.io.datamodels",
    "writer": "dmstore.experiment.writer",
}

__all__ = [
    "DmstoreError",
    "__version__",
    "compact",
    "convert",
    "create",
    "evaluate",
    "fit",
    "grow",
    "make_example",
    "open",
    "read_datamodels",
    "stats",
    "status",
    "verify",
    "write_datamodels",
    "writer",
]

if TYPE_CHECKING:
    from dmstore.analysis.evaluate import evaluate
    from dmstore.analysis.stats import stats
    from dmstore.conversion.convert import convert
    from dmstore.conversion.verify import verify
    from dmstore.experiment.compact import compact, grow, status
    from dmstore.experiment.create import create
    from dmstore.experiment.example import make_example
    from dmstore.experiment.writer import writer
    from dmstore.fitting.fit import fit
    from dmstore.io.datamodels import read_datamodels, write_datamodels
    from dmstore.io.dataset import open


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # found once
        return value
    raise AttributeError(f"module 'dmstore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


@xr.register_dataset_accessor("dm")
class _DatamodelsAccessor:
    """``ds.dm``: datamodel queries (:class:`dmstore.analysis.accessor.DatamodelsAccessor`, loaded
    on first use)."""

    def __new__(cls, ds: xr.Dataset) -> Any:
        from dmstore.analysis.accessor import DatamodelsAccessor

        return DatamodelsAccessor(ds)
