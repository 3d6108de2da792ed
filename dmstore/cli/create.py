"""``dmstore create``."""

from __future__ import annotations

import argparse

from dmstore.errors import DmstoreError


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser(
        "create",
        help=summary,
        description="Create an experiment store: the arrays of a converted store, empty, with MODELS model "
        "slots. Training runs write their rows with dmstore.writer(STORE) (any number at once, local or S3); "
        "`dmstore status` lists what is missing, `dmstore compact` folds written rows into the shards.",
    )
    parser.add_argument("store", help="new store path or URL")
    parser.add_argument("--train", type=int, required=True, help="train examples (mask and margin columns)")
    parser.add_argument("--test", type=int, required=True, help="test examples (margin columns)")
    parser.add_argument("--models", type=int, required=True, help="model slots (grow later with --grow)")
    parser.add_argument("--eval-models", type=int, default=0, help="the last K slots are evaluation models")
    parser.add_argument("--classes", type=int, help="also store logits over this many classes")
    parser.add_argument(
        "--extra", action="append", default=[], metavar="NAME=DTYPE", help="a per-model number, e.g. seed=int64"
    )
    parser.add_argument("--dataset", default="experiment", help="a name kept in the store's attributes")
    parser.add_argument(
        "--grow", action="store_true", help="STORE exists: give it --models slots in all (more than it has)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dmstore.experiment.compact import grow
    from dmstore.experiment.create import create

    if args.grow:
        grow(args.store, args.models)
        print(f"{args.store}: {args.models:,} model slots")
        return 0
    extras = {}
    for item in args.extra:
        name, sep, dtype = item.partition("=")
        if not sep:
            raise DmstoreError(f"--extra {item!r} is not NAME=DTYPE (e.g. seed=int64)")
        extras[name] = dtype
    create(
        args.store,
        train=args.train,
        test=args.test,
        models=args.models,
        eval_models=args.eval_models,
        classes=args.classes,
        extras=extras,
        dataset=args.dataset,
    )
    print(f"created {args.store}: {args.models:,} model slots, {args.train:,} train and {args.test:,} test examples")
    return 0
