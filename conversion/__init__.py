"""What describes the published data: the catalogue (``catalog.toml``) and how it is read."""
