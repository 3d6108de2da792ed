"""``dmstore verify``."""

from __future__ import annotations

from dmstore.cli.common import add_memory_option, add_scheduler_option, add_source_options, source_from_args
from dmstore.conversion.verify import verify


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser(
        "verify",
        help=summary,
        description="Re-read every band and compare it with the checksum recorded at "
        "conversion; with --source, also with the source's bytes. Exit code 1 if any differ.",
    )
    parser.add_argument("store", help="store path or URL")
    parser.add_argument("--source", help="also compare with this source (URL or folder)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_memory_option(parser, "the whole check: this process and any local workers")
    add_scheduler_option(parser, "by default the bands are checked on threads of this process")
    add_source_options(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    source = source_from_args(args.source, args) if args.source else None
    damaged = verify(
        args.store, source=source, scheduler=args.scheduler, max_memory=args.max_memory, progress=args.progress
    )
    for band in damaged:
        print(f"DAMAGED {band}")
    print(f"{len(damaged)} damaged band(s)" if damaged else f"{args.store}: every band matches its checksum")
    return 1 if damaged else 0
