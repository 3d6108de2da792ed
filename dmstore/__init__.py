"""dmstore: a Zarr/Dask data store and out-of-core analysis system for datamodels data."""

from __future__ import annotations

__version__ = "0.1.0"

from dmstore.errors import DmstoreError

__all__ = ["DmstoreError", "__version__"]
