"""``dmstore info``."""

from __future__ import annotations

from dmstore.conversion.info import describe


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser(
        "info",
        help=summary,
        description="Summarise a store: arrays, chunks, shards, compression, datamodels.",
    )
    parser.add_argument("store", help="store path or URL")
    parser.set_defaults(func=run)


def run(args) -> int:
    print(describe(args.store))
    return 0
