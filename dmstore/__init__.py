"""dmstore: a Zarr/Dask data store and out-of-core analysis system for datamodels data."""

from __future__ import annotations

# The Python API: one function per command. No function shadows a module: the modules live in
# the layer packages (``dmstore.fitting.fit`` holds ``fit``).
import dmstore.analysis.accessor  # noqa: F401  (registers the ``ds.dm`` accessor)
from dmstore._version import __version__
from dmstore.analysis.evaluate import evaluate
from dmstore.analysis.stats import stats
from dmstore.conversion.convert import convert
from dmstore.conversion.verify import verify
from dmstore.errors import DmstoreError
from dmstore.experiment.compact import compact, grow, status
from dmstore.experiment.create import create
from dmstore.experiment.example import make_example
from dmstore.experiment.writer import writer
from dmstore.fitting.fit import fit
from dmstore.io.datamodels import read_datamodels, write_datamodels
from dmstore.io.dataset import open

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
