"""dmstore: a Zarr/Dask data store and out-of-core analysis system for datamodels data."""

from __future__ import annotations

import warnings

__version__ = "0.1.0"

# dmstore writes consolidated metadata on purpose (one read opens the whole store).
warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
# band records (_dmstore/bands/...) are plain objects beside the Zarr hierarchy
warnings.filterwarnings("ignore", message="Object at _dmstore is not recognized")

from dmstore.dataset import open  # noqa: E402
from dmstore.datamodels import read_datamodels, write_datamodels  # noqa: E402
from dmstore.errors import DmstoreError  # noqa: E402
import dmstore.accessor  # noqa: E402,F401  (registers the ``ds.dm`` accessor)

__all__ = ["DmstoreError", "__version__", "open", "read_datamodels", "write_datamodels"]
