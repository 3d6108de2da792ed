"""Datamodel estimation: persisted statistics (moments, passes, tiles), the working-set LASSO
solver (solver, fista), the memory plan and ``fit``. Imports ``dmstore.io`` only."""
