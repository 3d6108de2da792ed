"""``dmstore fit``."""

from __future__ import annotations

import inspect

from dmstore.cli.common import written_note
from dmstore.errors import DmstoreError
from dmstore.fitting.fit import DTYPES, fit
from dmstore.io.datamodels import SPLITS

#: The solver's defaults live in one place, the signature of ``fit``.
DEFAULTS = {name: p.default for name, p in inspect.signature(fit).parameters.items()}


def parse_targets(text: str | None) -> slice | None:
    """``START:STOP`` (either side may be empty) as a slice of target columns."""
    if text is None:
        return None
    try:
        start, stop = (int(v) if v else None for v in text.split(":"))
    except ValueError as exc:
        raise DmstoreError(f"--targets {text!r} is not START:STOP (e.g. 0:500)") from exc
    return slice(start, stop)


def parse_val_models(text: str) -> float:
    """A fraction (``0.1``) or a count (``1000``) of validation models."""
    try:
        return float(text)
    except ValueError as exc:
        raise DmstoreError(f"--val-models {text!r} is neither a fraction (0.1) nor a count (1000)") from exc


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser(
        "fit",
        help=summary,
        description="Estimate the datamodels of a store's target examples: for each target, a LASSO of its "
        "margins on the training masks over the fit models (split == fit; the evaluation models are never "
        "read). Passes over the masks persist the sufficient statistics in the store (group moments/, reused by "
        "later fits of the same rows); a geometric lam path per target, chosen by validation MSE on the last "
        "VAL_MODELS fit models, then a refit on all fit models, run from these statistics with working sets. "
        "Target blocks are written into the store's group datamodels/TARGET as they finish (weights in raw "
        "mask space: prediction = mask @ weight + bias); an interrupted fit continues where it stopped.",
    )
    parser.add_argument("store", help="store path or URL")
    parser.add_argument(
        "--target", choices=SPLITS, default="test", help="whose margins are the targets (default: %(default)s)"
    )
    parser.add_argument(
        "--targets", metavar="START:STOP", help="a range of target examples, by position (default: all)"
    )
    parser.add_argument(
        "--val-models",
        default=str(DEFAULTS["val_models"]),
        metavar="FRACTION|COUNT",
        help="validation models, the last fit rows: a fraction or a count (default: %(default)s)",
    )
    parser.add_argument(
        "--lambdas", type=int, default=DEFAULTS["lambdas"], help="points on the lam path (default: %(default)s)"
    )
    parser.add_argument(
        "--lambda-ratio",
        type=float,
        default=DEFAULTS["lambda_ratio"],
        help="smallest lam / largest lam of the path (default: %(default)s)",
    )
    parser.add_argument(
        "--standardize",
        action="store_true",
        default=True,
        help="solve on standardised features, as fast_l1 does (default)",
    )
    parser.add_argument(
        "--no-standardize", dest="standardize", action="store_false", help="solve on raw (centred) masks"
    )
    parser.add_argument(
        "--tol",
        type=float,
        default=DEFAULTS["tol"],
        help="relative duality gap at which a solve stops (default: %(default)s)",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=DEFAULTS["patience"],
        help="path points without a better validation MSE before a target stops (default: %(default)s)",
    )
    parser.add_argument(
        "--target-batch",
        type=int,
        default=DEFAULTS["target_batch"],
        help="targets per block, solved, written and recorded together (default: %(default)s)",
    )
    parser.add_argument(
        "--memory",
        metavar="SIZE",
        help="bound on the fit's memory, e.g. 8GiB (default: 8 GiB or 90%% of the free memory)",
    )
    parser.add_argument(
        "--dtype",
        choices=tuple(DTYPES),
        default=DEFAULTS["dtype"],
        help="solver precision (default: %(default)s; float64 for --tol below 1e-6)",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where the products and the solver run: cpu (numpy) or cuda (CuPy on the GPU; its free memory must "
        "hold --memory) (default: %(default)s)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace datamodels fitted with other options, or imported ones"
    )
    parser.add_argument(
        "--recompute",
        action="store_true",
        help="compute the persisted statistics (group moments/) afresh, e.g. after damage",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS|local",
        help="run the target blocks on an existing Dask cluster (its workers must reach the "
        "store), or 'local' for a local cluster of worker processes (default: in this process)",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    result = fit(
        args.store,
        args.target,
        targets=parse_targets(args.targets),
        val_models=parse_val_models(args.val_models),
        lambdas=args.lambdas,
        lambda_ratio=args.lambda_ratio,
        standardize=args.standardize,
        tol=args.tol,
        patience=args.patience,
        target_batch=args.target_batch,
        dtype=args.dtype,
        memory=args.memory,
        scheduler=args.scheduler,
        overwrite=args.overwrite,
        recompute=args.recompute,
        device=args.device,
        progress=args.progress,
    )
    a = result.attrs
    print(
        f"{a['n_targets']} {args.target} datamodels fitted on {a['n_fit']} + {a['n_val']} models "
        f"(fit + validation){written_note(a)} in {a['seconds_pass']:.1f} s (pass) + {a['seconds_path']:.1f} s (path)"
    )
    print(
        f"median lam {a['median_lam']:.4g}   mean nonzero weights {a['mean_nonzeros']:.1f} of "
        f"{result.sizes['train']}   mean validation R^2 {a['val_r2']:.4f}"
    )
    if a["not_converged"]:
        print(f"warning: {a['not_converged']} targets stopped above the duality-gap tolerance {a['tol']}")
    print(
        f"written to {args.store} (group datamodels/{args.target}); score them with "
        f"`dmstore evaluate {args.store} --target {args.target}`"
    )
    return 0
