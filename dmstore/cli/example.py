"""``dmstore example``."""

from __future__ import annotations

import time

from dmstore.cli.common import add_cache_option
from dmstore.experiment.example import BATCH_MODELS, KINDS, make_example
from dmstore.io.datasets import DATASETS


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser(
        "example",
        help=summary,
        description="Train many small MLPs, each on its own random PCT% subset of a bundled dataset's "
        "training examples (nothing is downloaded), and write OUT/DATASET/data/{"
        + ",".join(KINDS)
        + "}_PCTpct.npy plus the labels, in the published bucket's layout. "
        "The evaluation models are the last EVAL_MODELS rows. Same seed, same bytes; re-run the same "
        f"command to resume (progress is kept every {BATCH_MODELS} models).",
    )
    parser.add_argument(
        "dataset", nargs="?", default="digits", help=f"bundled dataset: {', '.join(DATASETS)} (default: %(default)s)"
    )
    parser.add_argument("out", help="folder to write into (the files go to OUT/DATASET/data/)")
    parser.add_argument(
        "--pct",
        type=int,
        default=50,
        help="percent of the training examples each model sees, 1..99 (default: %(default)s)",
    )
    parser.add_argument(
        "--models", type=int, default=20000, help="models for fitting datamodels (default: %(default)s)"
    )
    parser.add_argument(
        "--eval-models",
        type=int,
        default=2000,
        help="extra held-out evaluation models, the last rows (default: %(default)s)",
    )
    parser.add_argument(
        "--replicates",
        type=int,
        default=1,
        help="models trained on each evaluation mask, from their own initial weights (evaluate then reports "
        "the replicate-averaged LDS and the noise ceiling; default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--workers", type=int, help="training threads (default: one per core)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier example with other parameters for this PCT"
    )
    add_cache_option(parser)
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    trained = 0

    def count(start: int, stop: int) -> None:
        nonlocal trained
        trained += stop - start

    began = time.perf_counter()
    folder = make_example(
        args.out,
        args.dataset,
        pct=args.pct,
        models=args.models,
        eval_models=args.eval_models,
        replicates=args.replicates,
        seed=args.seed,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=args.progress,
        on_batch=count,
        cache=args.cache,
    )
    seconds = time.perf_counter() - began
    rows = args.models + args.eval_models
    print(
        f"{rows} models ({args.models} fit + {args.eval_models} eval, the last rows) "
        f"in {folder / 'data'}: {', '.join(f'{kind}_{args.pct}pct.npy' for kind in KINDS)}, "
        "train_labels.npy, test_labels.npy, classes.json"
    )
    if trained:
        print(f"trained {trained} models in {seconds:.1f} s: {trained / seconds * 60:.0f} models/min")
    else:
        print("nothing to train: the example was already complete" + (" or in the cache" if args.cache else ""))
    return 0
