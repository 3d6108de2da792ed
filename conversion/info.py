"""``dmstore info``: what a store holds, how it is laid out and how well it compresses."""

from __future__ import annotations

import zarr

from dmstore.errors import DmstoreError
from dmstore.io import labels
from dmstore.io.dataset import known_warnings, open_group


def describe(dest: str, storage_options: dict | None = None) -> str:
    """A summary of the store for people: arrays, layout, compression, datamodels, status."""
    try:
        root = open_group(dest, storage_options)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
        raise DmstoreError(f"no store at {dest}: check the path") from exc
    except zarr.errors.ContainsArrayError as exc:
        raise DmstoreError(f"{dest} is a single Zarr array, not a dmstore store: give the store's folder") from exc
    attrs = root.attrs.asdict()
    lines = [
        f"{dest}: {attrs.get('dataset', '?')} {attrs.get('pct', '?')}% "
        f"({attrs.get('dmstore_status', 'no dmstore status')})"
    ]
    if "source" in attrs:
        lines.append(f"  source {attrs['source']}")
    with known_warnings():
        arrays = sorted(root.arrays())
    for name, array in arrays:
        if array.ndim < 2:
            continue
        stored = array.nbytes_stored()
        shape = " x ".join(f"{n:,}" for n in array.shape)
        ratio = array.nbytes / stored if stored else float("nan")
        lines.append(
            f"  {name:14} {shape:>24} {str(array.dtype):8} chunks {'x'.join(map(str, array.chunks))} "
            ""
            f"shards {'x'.join(map(str, array.shards or array.chunks))}  {stored / 2**20:,.1f} MiB stored "
            f"({ratio:.2f}x)"
        )
    if "split" in root:
        split = root["split"][:]
        if "flag_meanings" in root["split"].attrs:
            split = labels.labels_of(split, root["split"].attrs["flag_meanings"])
        lines.append(f"  models: {int((split == 'fit').sum()):,} fit, {int((split == 'eval').sum()):,} eval")
    groups = open_group(dest, storage_options, consolidated=False)
    if "moments" in groups:
        with known_warnings():
            moments = sorted(groups["moments"].groups())
        for name, group in moments:
            a = group.attrs.asdict()
            kept = group["xtx"] if "xtx" in group else group["masks"]
            what = f"counts {kept.shape[0]:,} x {kept.shape[1]:,}" if "xtx" in group else "their masks"
            state = "complete" if a.get("complete") else f"{a.get('panels', 0)} tile rows written"
            targets = ", ".join(
                f"{k.removeprefix('xty_')} target blocks {len(v)}" for k, v in sorted(a.items()) if k.startswith("xty_")
            )
            lines.append(
                f"  moments/{name}: statistics of {a.get('n', 0):,} models, {what} "
                f"({state}, {kept.nbytes_stored() / 2**20:,.1f} MiB stored)" + (f", {targets}" if targets else "")
            )
    if "datamodels" in groups:
        with known_warnings():
            datamodels = sorted(groups["datamodels"].groups())
        for name, group in datamodels:
            weight = group["weight"]
            lines.append(
                f"  datamodels/{name}: {weight.shape[1]:,} targets x {weight.shape[0]:,} train "
                f"({group.attrs.get('method', '?')})"
            )
    return "\n".join(lines)
