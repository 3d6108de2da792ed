"""The ``dmstore`` command: a thin layer over the Python API.

Each command lives in its own module of this package with ``register(subparsers)``, which adds
its parser and sets ``func`` (a callable taking the parsed arguments and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from dmstore._version import __version__
from dmstore.errors import DmstoreError

# each command (its module in this package) and its line in ``dmstore --help``, in that order
COMMANDS = {
    "catalog": "list the published files, their sizes and download cost",
    "convert": "stream published .npy matrices into a sharded Zarr v3 store",
    "info": "what a store holds, its layout and compression",
    "verify": "re-check every band of a store against its checksum",
    "export": "write datamodels as a .pt file in the published format",
    "create": "create an empty experiment store for training runs to write into",
    "status": "which model slots of an experiment store are written and which are missing",
    "compact": "fold the written models of an experiment store into its shards",
    "example": "train a real, small datamodels experiment offline, in the bucket's layout",
    "fit": "estimate datamodels (LASSO) out of core, on numpy or CuPy, locally or on Dask",
    "evaluate": "score datamodels or any attribution scores on the held-out evaluation models (LDS)",
    "curve": "the learning curve: LDS against the number of models the datamodels are fitted on",
    "stats": "per-example summaries of a store (margins, masks, influence)",
    "demo": "run example -> convert -> fit -> evaluate end to end (a few minutes)",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``dmstore`` parser; only ``command``'s module is imported and its options registered
    (the others are listed by name), so that a command starts without importing the rest."""
    parser = argparse.ArgumentParser(
        prog="dmstore",
        description="A Zarr/Dask store and out-of-core analysis for datamodels data.",
    )
    parser.add_argument("--version", action="version", version=f"dmstore {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary in COMMANDS.items():
        if name == command:
            importlib.import_module(f"dmstore.cli.{name}").register(subparsers, summary)
        else:
            subparsers.add_parser(name, help=summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``dmstore``; a :class:`DmstoreError` becomes one line on stderr and its exit code."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(next((arg for arg in argv if not arg.startswith("-")), None))
    args = parser.parse_args(argv)
    _log_to_stderr()
    try:
        return int(args.func(args) or 0)
    except DmstoreError as exc:
        print(f"dmstore: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `dmstore catalog | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("dmstore: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


class _Stderr(logging.StreamHandler):
    """A log handler writing to whatever ``sys.stderr`` is when a message comes (not the stream
    of the moment the handler was made: tests and notebooks replace it)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _log_to_stderr() -> None:
    """Show dmstore's log messages (the Dask dashboard link) as ``dmstore: ...`` lines on stderr."""
    logger = logging.getLogger("dmstore")
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("dmstore: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


if __name__ == "__main__":
    sys.exit(main())
