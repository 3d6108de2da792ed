"""``dmstore convert``."""

from __future__ import annotations

from dmstore.cli.common import add_memory_option, add_scheduler_option, add_source_options, source_from_args
from dmstore.conversion.convert import ARRAY_GROUPS, DEFAULT_ARRAYS, convert


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser(
        "convert",
        help=summary,
        description="Stream the published matrices (S3, any fsspec URL or a local folder in the bucket's layout) "
        "into a compressed, sharded, labelled Zarr v3 store. Bounded memory; re-run the same command to resume.",
    )
    parser.add_argument("source", help="s3://madrylab-datamodels, another URL, or a local folder")
    parser.add_argument("dest", help="the store to write (path or URL)")
    parser.add_argument("--dataset", required=True, help="cifar, fmow, or the dataset folder of your source")
    parser.add_argument("--pct", required=True, type=int, help="subsampling fraction in percent (e.g. 50)")
    parser.add_argument(
        "--arrays",
        default=",".join(DEFAULT_ARRAYS),
        help=f"comma-separated, from {', '.join(ARRAY_GROUPS)} (default: %(default)s; logits are 7x larger)",
    )
    parser.add_argument("--models", metavar="START:STOP", help="convert only these model rows")
    parser.add_argument(
        "--eval-rows",
        metavar="N|START:STOP",
        help="the evaluation models: the last N rows, or a range (default: 10000 for published data, or what "
             "`dmstore example` recorded)",
    )
    add_memory_option(parser, "the whole conversion: this process and any local workers")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (bytes, cost, store size) and stop")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_scheduler_option(parser, "by default the bands run on threads of this process")
    add_source_options(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    plan = convert(
        source_from_args(args.source, args),
        args.dest,
        args.dataset,
        args.pct,
        arrays=tuple(a.strip() for a in args.arrays.split(",") if a.strip()),
        models=args.models,
        eval_rows=args.eval_rows,
        max_memory=args.max_memory,
        scheduler=args.scheduler,
        dry_run=args.dry_run,
        progress=args.progress,
    )
    print(plan.describe())
    print(
        "dry run: nothing was read or written"
        if args.dry_run
        else f"done: {args.dest} (check it with `dmstore verify {args.dest}`)"
    )
    return 0
