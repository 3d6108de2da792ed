"""``dmstore export``."""

from __future__ import annotations

from dmstore.conversion.torchio import export_datamodels


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser(
        "export",
        help=summary,
        description="Write datamodels/{target} as a .pt dict of weight [N_train x N], bias, lam.",
    )
    parser.add_argument("store", help="store path or URL")
    parser.add_argument("out", help="the .pt file to write")
    parser.add_argument("--target", default="test", choices=("test", "train"), help="which datamodels (default: test)")
    parser.set_defaults(func=run)


def run(args) -> int:
    export_datamodels(args.store, args.target, args.out)
    print(f"wrote {args.out}")
    return 0
