"""The catalogue of the published data (``conversion/catalog.toml``): files, sizes, cost."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from dmstore.errors import DmstoreError

# published data matrices: kind -> (dtype, row axis of examples)
KINDS = {
    "train_masks": (np.dtype(bool), "train"),
    "train_margins": (np.dtype(np.float16), "train"),
    "test_margins": (np.dtype(np.float16), "test"),
    "train_logits": (np.dtype(np.float16), "train"),
    "test_logits": (np.dtype(np.float16), "test"),
}


@cache
def catalog() -> dict:
    """The parsed catalogue."""
    text = resources.files("dmstore.conversion").joinpath("catalog.toml").read_text()
    return tomllib.loads(text)


@dataclass(frozen=True)
class Entry:
    """One published file."""

    dataset: str
    pct: int
    kind: str
    key: str
    nbytes: int | None

    @property
    def cost(self) -> float | None:
        """Download cost in USD."""
        return None if self.nbytes is None else self.nbytes / 2**30 * catalog()["price_per_gb"]


def dataset_info(dataset: str) -> dict:
    """The catalogue's record of ``dataset`` (``cifar``, ``fmow``)."""
    datasets = catalog()["datasets"]
    if dataset not in datasets:
        raise DmstoreError(f"unknown dataset {dataset!r}: the published ones are {', '.join(datasets)}")
    return datasets[dataset]


def models(dataset: str, pct: int) -> int | None:
    """Rows of each matrix (table models + evaluation models), or None if not published."""
    table = dataset_info(dataset)["models"].get(str(pct))
    return None if table is None else table + catalog()["eval_models"]


def entries() -> list[Entry]:
    """Every published file with its size in bytes where the catalogue can compute it."""
    rows: list[Entry] = []
    for name, info in catalog()["datasets"].items():
        for pct_text in info["models"]:
            pct = int(pct_text)
            m = models(name, pct)
            for kind, (dtype, axis) in KINDS.items():
                if "logits" in kind and not info["logits"]:
                    continue
                n = info.get(f"n_{axis}")
                size = None if n is None else m * n * dtype.itemsize * (10 if "logits" in kind else 1)
                rows.append(Entry(name, pct, kind, f"{name}/data/{kind}_{pct}pct.npy", size))
        for split, pcts in info["datamodels"].items():
            for pct in pcts:
                n_target = info.get(f"n_{split}")
                n_train = info.get("n_train")
                size = None if n_target is None else n_train * n_target * 4 + 2 * n_target * 4
                rows.append(Entry(name, pct, f"{split} datamodels", f"{name}/datamodels/{split}_{pct}pct.pt", size))
    return rows


def format_catalog() -> str:
    """The catalogue as a table for ``dmstore catalog``."""
    price = catalog()["price_per_gb"]
    lines = [
        f"s3://{catalog()['bucket']} (requester pays: you pay about ${price:.2f} per GB downloaded)",
        f"{'dataset':8} {'pct':>4} {'models':>10}  {'file':45} {'size':>10} {'cost':>9}",
    ]
    for e in entries():
        m = models(e.dataset, e.pct)
        size = "?" if e.nbytes is None else f"{e.nbytes / 2**30:,.1f} GB"
        cost = "?" if e.cost is None else f"${e.cost:,.2f}"
        lines.append(f"{e.dataset:8} {e.pct:>4} {m:>10,}  {e.key:45} {size:>10} {cost:>9}")
    for name, info in catalog()["datasets"].items():
        for pct, gib in info["size_gib"].items():
            logits = info.get("logits_size_gib", {}).get(pct)
            extra = f", logits {logits:,} GB (${logits * price:,.2f})" if logits else ""
            lines.append(f"published total {name} {pct}%: masks+margins {gib:,} GB (${gib * price:,.2f}){extra}")
    lines.append("FMoW sizes per file depend on its example counts, which dmstore reads from the .npy headers.")
    return "\n".join(lines)
