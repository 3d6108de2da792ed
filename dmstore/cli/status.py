"""``dmstore status``."""

from __future__ import annotations

import argparse


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser(
        "status",
        help=summary,
        description="List the written and missing model slots of an experiment store. With --missing, print "
        "the missing model numbers one per line, to resubmit exactly those (e.g. to a job array).",
    )
    parser.add_argument("store", help="store path or URL")
    parser.add_argument("--missing", action="store_true", help="print only the missing model numbers, one per line")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dmstore.experiment.compact import status

    state = status(args.store)
    if args.missing:
        print("\n".join(map(str, state.missing)))
    else:
        print(state.describe())
    return 0
