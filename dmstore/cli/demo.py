"""``dmstore demo``."""

from __future__ import annotations

from dmstore.cli.common import add_cache_option
from dmstore.experiment.demo import demo


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser(
        "demo",
        help=summary,
        description="Build the real digits example, convert it into a store, fit datamodels, evaluate them on "
        "held-out models and plot the results, explaining each step.",
    )
    parser.add_argument(
        "out", nargs="?", default="demo-out", help="folder for everything it makes (default: %(default)s)"
    )
    parser.add_argument("--models", type=int, default=3000, help="models to train (default: %(default)s)")
    parser.add_argument(
        "--eval-models", type=int, default=1000, help="held-out evaluation models (default: %(default)s)"
    )
    add_cache_option(parser)
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.set_defaults(func=run)


def run(args) -> int:
    demo(args.out, models=args.models, eval_models=args.eval_models, progress=args.progress, cache=args.cache)
    return 0
