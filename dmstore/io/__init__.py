"""The store and its sources: ``.npy`` headers, sources, the catalogue, the store format, shards,
locks, the checked read path, opening a store, model rows, datamodels groups, the Dask client.

The bottom layer: it imports no other dmstore layer.
"""
