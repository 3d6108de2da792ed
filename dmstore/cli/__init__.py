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

# command modules, in the order ``dmstore --help`` lists them
COMMANDS = (
    "catalog", "convert", "info", "verify", "export", "create", "status", "compact", "example", "fit", "evaluate",
    "curve", "stats", "demo",
)


def build_parser() -> argparse.ArgumentParser:
    """The full ``dmstore`` parser with every command registered."""
    parser = argparse.ArgumentParser(
        prog="dmstore",
        description="A Zarr/Dask store and out-of-core analysis for datamodels data.",
    )
    parser.add_argument("--version", action="version", version=f"dmstore {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"dmstore.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``dmstore``; a :class:`DmstoreError` becomes one line on stderr and its exit code."""
    parser = build_parser()
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
