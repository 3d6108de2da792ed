"""``dmstore evaluate``."""

from __future__ import annotations

import numpy as np

from dmstore.analysis.evaluate import MEMORY, compare, evaluate, evaluation_group
from dmstore.cli.common import add_memory_option, add_scheduler_option, written_note
from dmstore.io.budget import parse_budget


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help=summary,
        description="Predict the margins of the evaluation models (split == eval) with the store's datamodels "
        "(mask @ weight + bias), or with --scores, and compare them with the true margins: per target Spearman "
        "and Pearson correlation across models and the MSE; the LDS is the mean Spearman, with bootstrap "
        "intervals over evaluation masks and over targets. Models trained on the same mask are replicates: "
        "then also the LDS against replicate-averaged margins and the noise ceiling. Writes the scores into the "
        "store (group evaluation/TARGET, or attributions/NAME) and a PNG plot; --compare ranks them all.",
    )
    parser.add_argument("store", help="store path or URL")
    parser.add_argument(
        "--target", choices=("test", "train"), default="test", help="which datamodels to score (default: test)"
    )
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--scores",
        metavar="FILE|NAME",
        help="score this [train x targets] matrix (.npy, .pt or Zarr; columns: targets 0..T-1) or the "
        "attributions the store keeps under NAME, instead of the datamodels",
    )
    what.add_argument("--compare", action="store_true", help="rank every evaluation the store keeps (table, plot)")
    parser.add_argument("--name", help="keep --scores in the store under this name (default: the file's name)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: %(default)s)")
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
    add_memory_option(parser, "the whole run: this process and any local workers")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_scheduler_option(parser, "by default the bands run on threads of this process")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.compare:
        return _compare(args)
    plot = f"evaluate-{args.target}.png" if args.plot is None else args.plot or None
    result = evaluate(
        args.store,
        args.target,
        scores=args.scores,
        name=args.name,
        scheduler=args.scheduler,
        plot=plot,
        write=args.write,
        memory=parse_budget(args.memory, "--memory"),
        max_memory=args.max_memory,
        seed=args.seed,
        progress=args.progress,
    )
    attrs = result.attrs
    spearman = result["spearman"].values
    level = f"{attrs['level']:.0%}"
    print(
        f"LDS of the {attrs['scored']} (mean Spearman over {attrs['n_targets']} {args.target} targets, "
        f"{attrs['n_eval_models']} evaluation models{written_note(attrs)}): {attrs['lds']:.4f}"
    )
    print(f"  {level} interval: {_interval(attrs, 'lds')}")
    if "lds_averaged" in attrs:
        print(
            f"LDS against margins averaged over the replicates of {attrs['n_masks']} masks: "
            f"{attrs['lds_averaged']:.4f}  ({level} interval: {_interval(attrs, 'lds_averaged')})"
        )
        print(
            f"noise ceiling (split-half, Spearman-Brown): {attrs['noise_ceiling']:.4f} for averaged margins, "
            f"{attrs['noise_ceiling_single']:.4f} for one model"
        )
    print(f"mean Pearson: {attrs['mean_pearson']:.4f}   mean MSE: {attrs['mean_mse']:.4f}")
    low, mid, high = np.nanquantile(spearman, [0, 0.5, 1])
    print(
        f"per-target Spearman: min {low:.4f}  median {mid:.4f}  max {high:.4f}"
        + (f"  (targets without correlation: {np.isnan(spearman).sum()})" if np.isnan(spearman).any() else "")
    )
    if args.write:
        print(f"scores written to {args.store} (group {evaluation_group(args.target, result.attrs.get('name'))})")
    if plot:
        print(f"plot: {plot}")
    return 0


def _interval(attrs: dict, key: str) -> str:
    models, targets = attrs[f"{key}_interval_models"], attrs[f"{key}_interval_targets"]
    return (
        f"{models[0]:.4f} to {models[1]:.4f} over evaluation masks, "
        f"{targets[0]:.4f} to {targets[1]:.4f} over targets"
    )


def _compare(args) -> int:
    plot = f"compare-{args.target}.png" if args.plot is None else args.plot or None
    rows = compare(args.store, args.target, plot=plot)
    print(f"{'method':<24}{'LDS':>8}  {'interval (masks)':<19}{'averaged':>9}{'ceiling':>9}{'targets':>9}")
    for row in rows:
        low, high = row["lds_interval_models"]
        averaged = f"{row['lds_averaged']:>9.4f}" if "lds_averaged" in row else f"{'':>9}"
        ceiling = f"{row['noise_ceiling']:>9.4f}" if "noise_ceiling" in row else f"{'':>9}"
        print(f"{row['name']:<24}{row['lds']:>8.4f}  {low:.4f} to {high:.4f}  {averaged}{ceiling}{row['n_targets']:>9}")
    if plot:
        print(f"plot: {plot}")
    return 0
