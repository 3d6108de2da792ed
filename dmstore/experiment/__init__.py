"""Experiments that land in a store: the bundled example (``dmstore example``) and the demo.
Imports the layers below (io, conversion, fitting, analysis)."""
