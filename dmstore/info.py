"""``dmstore info``: what a store holds, how it is laid out and how well it compresses."""

from __future__ import annotations

import zarr

from dmstore.dataset import as_store
from dmstore.errors import DmstoreError


def describe(dest: str, storage_options: dict | None = None) -> str:
    """A summary of the store for people: arrays, layout, compression, datamodels, status."""
    try:
        root = zarr.open_group(as_store(dest, storage_options, read_only=True), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
        raise DmstoreError(f"no store at {dest}: check the path") from exc
    attrs = root.attrs.asdict()
    lines = [f"{dest}: {attrs.get('dataset', '?')} {attrs.get('pct', '?')}% ({attrs.get('dmstore_status', 'no dmstore status')})"]
    if "source" in attrs:
        lines.append(f"  source {attrs['source']}")
    for name, array in sorted(root.arrays()):
        if array.ndim < 2:
            continue
        stored = array.nbytes_stored()
        shape = " x ".join(f"{n:,}" for n in array.shape)
        ratio = array.nbytes / stored if stored else float("nan")
        lines.append(
            f"  {name:14} {shape:>24} {str(array.dtype):8} chunks {'x'.join(map(str, array.chunks))} "
            f"shards {'x'.join(map(str, array.shards or array.chunks))}  {stored / 2**20:,.1f} MiB stored ({ratio:.2f}x)"
        )
    if "split" in root:
        split = root["split"][:]
        lines.append(f"  models: {int((split == 'fit').sum()):,} fit, {int((split == 'eval').sum()):,} eval")
    if "datamodels" in root:
        for name, group in sorted(root["datamodels"].groups()):
            weight = group["weight"]
            lines.append(f"  datamodels/{name}: {weight.shape[1]:,} targets x {weight.shape[0]:,} train ({group.attrs.get('method', '?')})")
    return "\n".join(lines)
