"""``dmstore curve``."""

from __future__ import annotations

from dmstore.cli.common import add_scheduler_option
from dmstore.cli.fit import parse_targets
from dmstore.errors import DmstoreError
from dmstore.experiment.curve import learning_curve


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser(
        "curve",
        help=summary,
        description="Fit the datamodels on the first N fit models for growing N and score each fit on the "
        "evaluation models (LDS with its interval; with replicated evaluation masks also the averaged LDS and "
        "the noise ceiling). The persisted statistics grow with N, so each size reads only the models added. "
        "The store keeps the datamodels of the largest size. Prints a table and writes a PNG plot.",
    )
    parser.add_argument("store", help="store path or URL")
    parser.add_argument("--sizes", metavar="N,N,...", help="fit-model counts (default: all fit models, halved 4 times)")
    parser.add_argument("--target", choices=("test", "train"), default="test", help="whose datamodels (default: test)")
    parser.add_argument("--targets", metavar="START:STOP", help="fit and score only these target columns")
    plot = parser.add_mutually_exclusive_group()
    plot.add_argument("--plot", metavar="PNG", help="plot file (default: curve-TARGET.png here)")
    plot.add_argument("--no-plot", dest="plot", action="store_const", const="", help="no plot")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    add_scheduler_option(parser, "by default each fit runs in this process, the evaluations on threads of this process")
    parser.set_defaults(func=run)


def run(args) -> int:
    try:
        sizes = [int(v) for v in args.sizes.split(",")] if args.sizes else None
    except ValueError as exc:
        raise DmstoreError(f"--sizes {args.sizes!r} is not a list of model counts (e.g. 250,500,1000)") from exc
    plot = f"curve-{args.target}.png" if args.plot is None else args.plot or None
    result = learning_curve(
        args.store,
        sizes,
        target=args.target,
        targets=parse_targets(args.targets),
        scheduler=args.scheduler,
        plot=plot,
        progress=args.progress,
    )
    averaged = "lds_averaged" in result
    header = f"{'fit models':>10}{'LDS':>9}  {'95% interval':<17}"
    print(header + (f"{'averaged':>9}{'ceiling':>9}" if averaged else ""))
    for i, models in enumerate(result["models"].values):
        line = f"{models:>10}{float(result['lds'][i]):>9.4f}  "
        line += f"{float(result['lds_low'][i]):.4f} to {float(result['lds_high'][i]):.4f}"
        if averaged:
            line += f"{float(result['lds_averaged'][i]):>9.4f}{float(result['noise_ceiling'][i]):>9.4f}"
        print(line)
    if plot:
        print(f"plot: {plot}")
    return 0
