"""``dmstore compact``."""

from __future__ import annotations

import argparse


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser(
        "compact",
        help=summary,
        description="Write every shard row-block of an experiment store whose models are all written, with the "
        "bytes dmstore convert writes, and delete the segments folded. Safe to run while writers write, and "
        "to interrupt: run it again.",
    )
    parser.add_argument("store", help="store path or URL")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dmstore.experiment.compact import compact, status

    report = compact(args.store, progress=args.progress)
    print(f"compacted {report.blocks} row-block(s), deleted {report.deleted} segment(s)")
    print(status(args.store).describe())
    return 0
