"""Options shared by several commands."""

from __future__ import annotations

import argparse
import os

from dmstore.io.source import Source


def add_source_options(parser: argparse.ArgumentParser) -> None:
    """S3 options: requester pays, endpoint, profile."""
    group = parser.add_argument_group("S3 source")
    pays = group.add_mutually_exclusive_group()
    pays.add_argument(
        "--requester-pays",
        dest="requester_pays",
        action="store_true",
        default=None,
        help="send the requester-pays header (default: only for s3://madrylab-datamodels)",
    )
    pays.add_argument(
        "--no-requester-pays", dest="requester_pays", action="store_false", help="do not send the requester-pays header"
    )
    group.add_argument("--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL_S3 or AWS)")
    group.add_argument("--profile", help="AWS profile (default: AWS_PROFILE or 'default')")


def source_from_args(url: str, args: argparse.Namespace) -> Source:
    """A :class:`Source` from the S3 options."""
    options = {"profile": args.profile} if args.profile else {}
    return Source(url, requester_pays=args.requester_pays, endpoint_url=args.endpoint_url, storage_options=options)


def written_note(attrs: dict) -> str:
    """`` (3,100 of 5,000 model slots written)`` for a result from an experiment store, else ``""``."""
    if "model_slots" not in attrs:
        return ""
    return f" ({attrs['models_written']:,} of {attrs['model_slots']:,} model slots written)"


def add_scheduler_option(parser: argparse.ArgumentParser, default: str = "the default here too") -> None:
    """``--scheduler ADDRESS``: run on an existing Dask cluster; ``default`` says where the
    command runs without it."""
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS|local",
        help="Dask scheduler of an existing cluster (its workers must reach the store), or 'local' "
        f"(a local cluster of worker processes: {default})",
    )


def add_memory_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--max-memory SIZE``: the bound on the peak memory of ``what``."""
    parser.add_argument(
        "--max-memory",
        default="2GB",
        metavar="SIZE",
        help=f"peak memory of {what}; on an existing cluster, each worker's own memory limit must hold "
        "one task (default: %(default)s)",
    )


#: The default of ``--cache`` (``dmstore example``, ``dmstore demo``).
CACHE_ENV = "DMSTORE_EXAMPLE_CACHE"


def add_cache_option(parser: argparse.ArgumentParser) -> None:
    """``--cache DIR``: finished examples kept and copied instead of trained again."""
    parser.add_argument(
        "--cache",
        default=os.environ.get(CACHE_ENV) or None,
        metavar="DIR",
        help=f"keep finished examples in DIR and copy one made with the same arguments instead of training "
        f"again (default: ${CACHE_ENV}, else no cache)",
    )
