"""``dmstore catalog``."""

from __future__ import annotations

from dmstore.io.catalog import format_catalog


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser(
        "catalog",
        help=summary,
        description="List every published file with its size and its S3 download cost.",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    print(format_catalog())
    return 0
