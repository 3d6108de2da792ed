"""``dmstore evaluate``."""

from __future__ import annotations

import numpy as np
from dask.utils import parse_bytes

from dmstore.analysis.evaluate import MEMORY, evaluate
from dmstore.cli.common import add_scheduler_option, written_note


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score datamodels on the held-out evaluation models (LDS)",
        description="Predict the margins of the evaluation models (split == eval) with the store's datamodels "
        "(mask @ weight + bias) and compare them with the true margins: per target Spearman and Pearson "
        "correlation across models and the MSE; the LDS is the mean Spearman. Writes the scores into the store "
        "(group evaluation/TARGET) and a PNG plot.",
    )
    parser.add_argument("store", help="store path or URL")
    parser.add_argument(
        "--target", choices=("test", "train"), default="test", help="which datamodels to score (default: test)"
    )
    plot = parser.add_mutually_exclusive_group()
    plot.add_argument("--plot", metavar="PNG", help="plot file (default: evaluate-TARGET.png here)")
    plot.add_argument("--no-plot", dest="plot", action="store_const", const="", help="no plot")
    parser.add_argument(
        "--no-write",
        dest="write",
        action="store_false",
        help="do not write the scores into the store (e.g. a read-only store)",
    )
    parser.add_argument(
        "--memory",
        default=f"{MEMORY >> 20}MiB",
        help="memory for one batch of targets: its weights and gathered margins (default: %(default)s)",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_scheduler_option(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    plot = f"evaluate-{args.target}.png" if args.plot is None else args.plot or None
    result = evaluate(
        args.store,
        args.target,
        scheduler=args.scheduler,
        plot=plot,
        write=args.write,
        memory=parse_bytes(args.memory),
        progress=args.progress,
    )
    attrs = result.attrs
    spearman = result["spearman"].values
    print(
        f"LDS (mean Spearman over {attrs['n_targets']} {args.target} targets, "
        f"{attrs['n_eval_models']} evaluation models{written_note(attrs)}): {attrs['lds']:.4f}"
    )
    print(f"mean Pearson: {attrs['mean_pearson']:.4f}   mean MSE: {attrs['mean_mse']:.4f}")
    low, mid, high = np.nanquantile(spearman, [0, 0.5, 1])
    print(
        f"per-target Spearman: min {low:.4f}  median {mid:.4f}  max {high:.4f}"
        + (f"  (targets without correlation: {np.isnan(spearman).sum()})" if np.isnan(spearman).any() else "")
    )
    if args.write:
        print(f"scores written to {args.store} (group evaluation/{args.target})")
    if plot:
        print(f"plot: {plot}")
    return 0
