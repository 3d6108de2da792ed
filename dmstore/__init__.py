"""dmstore: a Zarr/Dask data store and out-of-core analysis system for datamodels data."""

from __future__ import annotations

import warnings

__version__ = "0.1.0"

# dmstore writes consolidated metadata on purpose (one read opens the whole store).
warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
# band records (_dmstore/bands/...) are plain objects beside the Zarr hierarchy
warnings.filterwarnings("ignore", message="Object at _dmstore is not recognized")

# The Python API. The functions keep the names of their modules (``dmstore.fit`` is the
# function); import a module's other names from its module (``dmstore.fitting.fit``).
import dmstore.accessor  # noqa: E402,F401  (registers the ``ds.dm`` accessor)
from dmstore.convert import convert  # noqa: E402
from dmstore.datamodels import read_datamodels, write_datamodels  # noqa: E402
from dmstore.dataset import open  # noqa: E402
from dmstore.errors import DmstoreError  # noqa: E402
from dmstore.evaluate import evaluate  # noqa: E402
from dmstore.example import make_example  # noqa: E402
from dmstore.fitting.fit import fit  # noqa: E402
from dmstore.stats import stats  # noqa: E402
from dmstore.verify import verify  # noqa: E402

__all__ = [
    "DmstoreError", "__version__", "convert", "evaluate", "fit", "make_example", "open",
    "read_datamodels", "stats", "verify", "write_datamodels",
]
