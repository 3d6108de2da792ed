"""``dmstore stats``."""

from __future__ import annotations

import numpy as np

from dmstore.analysis.stats import SPLITS, plot_stats, stats
from dmstore.cli.common import add_memory_option, add_scheduler_option, written_note
from dmstore.io.rows import MODEL_SETS


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser(
        "stats",
        help=summary,
        description="One out-of-core pass over the store: per example the mean, variance and accuracy "
        "(margin > 0) of its margins; per training example the share of subsets holding it (checked against "
        "the subsampling fraction pct); optionally the difference-of-means influence of every training "
        "example on chosen targets. Prints a table and writes a PNG plot.",
    )
    parser.add_argument("store", help="store path or URL")
    parser.add_argument(
        "--models", choices=MODEL_SETS, default="all", help="which model rows to summarise (default: all)"
    )
    parser.add_argument(
        "--influence",
        metavar="INDEX",
        type=int,
        nargs="+",
        help="target examples whose difference-of-means influence to estimate",
    )
    parser.add_argument(
        "--target", choices=SPLITS, default="test", help="the split of the --influence examples (default: test)"
    )
    parser.add_argument("--top", type=int, default=10, help="influencers listed per target (default: 10)")
    plot = parser.add_mutually_exclusive_group()
    plot.add_argument("--plot", metavar="PNG", help="plot file (default: stats.png here)")
    plot.add_argument("--no-plot", dest="plot", action="store_const", const="", help="no plot")
    parser.add_argument("--out", metavar="ZARR", help="also save the statistics as a Zarr store")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_memory_option(parser, "the whole run: this process and any local workers")
    add_scheduler_option(parser, "by default the bands run on threads of this process")
    parser.set_defaults(func=run)


def run(args) -> int:
    result = stats(
        args.store,
        models=args.models,
        targets=args.influence,
        target=args.target,
        scheduler=args.scheduler,
        max_memory=args.max_memory,
        progress=args.progress,
    )
    print(f"{result.attrs['n_models']} models ({args.models}){written_note(result.attrs)}")
    print(f"{'margins':<8}{'examples':>10}{'mean':>10}{'mean std':>10}{'accuracy':>10}{'min acc':>10}{'max acc':>10}")
    for split in SPLITS:
        if f"{split}_mean" in result:
            accuracy = result[f"{split}_accuracy"].values
            print(
                f"{split:<8}{accuracy.size:>10}{float(result[f'{split}_mean'].mean()):>10.4f}"
                f"{float(np.sqrt(result[f'{split}_var']).mean()):>10.4f}{accuracy.mean():>10.4f}"
                f"{accuracy.min():>10.4f}{accuracy.max():>10.4f}"
            )
    frequency = result["mask_frequency"].values
    line = f"mask frequency: mean {frequency.mean():.4f}  min {frequency.min():.4f}  max {frequency.max():.4f}"
    if "pct" in result.attrs:
        line += f"  (pct {result.attrs['pct']}: largest |z| {result.attrs['mask_max_z']:.2f})"
    print(line)
    if "influence" in result:
        for target in result["target"].values:
            influence = result["influence"].sel(target=target).dropna("train")
            order = np.argsort(influence.values, kind="stable")
            for label, picks in (("positive", order[::-1][: args.top]), ("negative", order[: args.top])):
                top = influence.isel(train=picks)
                listed = ", ".join(f"{j} ({v:+.3f})" for j, v in zip(top["train"].values, top.values))
                print(f"influence on {args.target} {target}, {label}: {listed}")
    plot = "stats.png" if args.plot is None else args.plot or None
    if plot:
        plot_stats(result, plot)
        print(f"plot: {plot}")
    if args.out:
        result.to_zarr(args.out, mode="w", zarr_format=3)
        print(f"statistics saved to {args.out}")
    return 0
