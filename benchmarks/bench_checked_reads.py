"""The checked read path against plain xarray, on the same store and the same shard-sized chunks.

``dmstore.open`` reads every per-model variable through ``dmstore.io.reads.CheckedArray`` (missing
shards listed once when the store is opened, checksum failures turned into one line). Before it,
``dmstore.open`` was ``xarray.open_zarr`` with shard-sized chunks, which is what this compares
against, each timed best of ``--repeat`` in this process:

- open: opening the store (the checked path lists each array's shards once);
- column: one test example across all models (``test_margins[:, j]``), the query access pattern;
- band sum: ``train_masks.sum("model")`` over all models, the analysis access pattern.

    python benchmarks/bench_checked_reads.py STORE [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import time

import xarray as xr


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import dask

    import dmstore
    from dmstore.io.dataset import shard_chunks

    chunks = shard_chunks(args.store)

    def plain() -> xr.Dataset:
        return xr.open_zarr(args.store, chunks=chunks, zarr_format=3, mask_and_scale=False)

    def checked() -> xr.Dataset:
        return dmstore.open(args.store)

    results = {}
    with dask.config.set(scheduler="threads"):
        for name, opener in (("xarray", plain), ("dmstore", checked)):
            ds = opener()
            results[name] = {
                "open_s": best(opener, args.repeat),
                "column_s": best(lambda: ds["test_margins"][:, 17].values, args.repeat),
                "band_sum_s": best(lambda: ds["train_masks"].sum("model").values, args.repeat),
            }
    results["ratio_dmstore_over_xarray"] = {
        k: round(results["dmstore"][k] / results["xarray"][k], 2) for k in results["xarray"]
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
