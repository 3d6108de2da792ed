"""``dmstore info``."""

from __future__ import annotations

from dmstore.conversion.info import describe


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "info",
        help="what a store holds, its layout and compression",
        description="Summarise a store: arrays, chunks, shards, compression, datamodels.",
    )
    parser.add_argument("store", help="store path or URL")
    parser.set_defaults(func=run)


def run(args) -> int:
    print(describe(args.store))
    return 0
