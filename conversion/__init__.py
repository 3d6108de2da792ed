"""The conversion layer (``dmstore.conversion``): the catalogue of the published data
(``catalog.toml``), planning, ``convert``, ``verify``, ``info`` and ``.pt`` datamodels in and
out. Imports ``dmstore.io`` only."""
