"""Analyses of a store: predictions, evaluation (LDS), per-example statistics, the ``ds.dm``
accessor and the figures. Imports ``dmstore.io`` only."""
