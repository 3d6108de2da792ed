"""Experiment stores at CIFAR-10 width: the writer's cost per model row, and compaction's speed.

One row is what one trained model gives: masks over 50,000 train examples, margins over 50,000
train and 10,000 test examples. Compared, in one run, on the same rows and the same disk:

- write: ``dmstore.writer(...).write`` per row (check, encode, one exclusive segment), against
  what the MadryLab/datamodels pipeline does per row (assign the row of three preallocated
  ``.npy`` memmaps, flush, and touch a ``_completed`` flag file);
- writers: ``--writers`` processes writing at once (rows per second in all);
- compact: folding those rows into the sharded arrays, against ``dmstore convert`` of the same
  rows from ``.npy`` files (uncompressed MB/s of both; convert runs its local Dask cluster);
- killed: ``--killed K`` writer processes at once, each killed with SIGKILL at a random moment
  while it writes, restarted on the models ``dmstore.status`` lists as missing until none are,
  then compacted: the store must equal the serial one byte for byte (every object).

    python benchmarks/bench_experiment.py [--models 2048] [--writers 2] [--killed 8] [--out /tmp/bench-experiment]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TRAIN, TEST = 50_000, 10_000


def rows(model: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(model)
    return {
        "train_masks": rng.random(TRAIN) < 0.5,
        "train_margins": rng.standard_normal(TRAIN).astype(np.float16),
        "test_margins": rng.standard_normal(TEST).astype(np.float16),
    }


def write_dmstore(store: str, models: range | list[int]) -> list[float]:
    import dmstore

    times = []
    with dmstore.writer(store) as w:
        for model in models:
            values = rows(model)
            start = time.perf_counter()
            w.write(model, **values)
            times.append(time.perf_counter() - start)
    return times


def write_memmaps(folder: Path, n_models: int) -> list[float]:
    """The MadryLab/datamodels way: a row of each preallocated memmap, then a completion flag."""
    folder.mkdir(parents=True)
    shapes = {"train_masks": (TRAIN, bool), "train_margins": (TRAIN, np.float16), "test_margins": (TEST, np.float16)}
    maps = {
        name: np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype, shape=(n_models, width))
        for name, (width, dtype) in shapes.items()
    }
    (folder / "_completed").mkdir()
    times = []
    for model in range(n_models):
        values = rows(model)
        start = time.perf_counter()
        for name, array in maps.items():
            array[model] = values[name]
            array.flush()
        (folder / "_completed" / str(model)).touch()
        times.append(time.perf_counter() - start)
    return times


def killed_writers(out: Path, n: int, processes: int) -> dict:
    """Write ``n`` models with ``processes`` jobs killed at random moments until none is missing."""
    import dmstore

    store = str(out / "killed.zarr")
    dmstore.create(store, train=TRAIN, test=TEST, models=n)
    rng, rounds, kills = np.random.default_rng(0), 0, 0
    start = time.perf_counter()
    while (missing := dmstore.status(store).missing).size:
        rounds += 1
        jobs = [
            subprocess.Popen([sys.executable, __file__, "--job", store, *map(str, part)], stdout=subprocess.PIPE)
            for part in np.array_split(rng.permutation(missing), processes)
            if part.size
        ]
        for job in jobs:
            assert job.stdout is not None and job.stdout.readline() == b"writing\n"
        for job in rng.permutation(len(jobs)):
            time.sleep(rng.uniform(0, 0.5))
            if jobs[job].poll() is None and rng.random() < 0.75:
                jobs[job].kill()
                kills += 1
        for job in jobs:
            job.wait()
    dmstore.compact(store, progress=False)
    seconds = time.perf_counter() - start
    serial = out / "serial.zarr"
    files = [p for p in serial.rglob("*") if p.is_file() and "_dmstore/locks" not in p.as_posix()]
    theirs = [p for p in Path(store).rglob("*") if p.is_file() and "_dmstore/locks" not in p.as_posix()]
    same = len(files) == len(theirs) and all((Path(store) / p.relative_to(serial)).read_bytes() == p.read_bytes()
                                             for p in files)
    return {"processes": processes, "rounds": rounds, "kills": kills, "seconds": seconds, "equals_serial": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=2048)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--out", default="/tmp/bench-experiment")
    parser.add_argument("--killed", type=int, default=8)
    parser.add_argument("--job", nargs="+", help=argparse.SUPPRESS)  # STORE MODEL...: one writer process
    args = parser.parse_args()
    if args.job:
        print("writing", flush=True)
        write_dmstore(args.job[0], [int(m) for m in args.job[1:]])
        return
    import dmstore

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    n = args.models
    results: dict = {"models": n, "train": TRAIN, "test": TEST}

    store = str(out / "serial.zarr")
    dmstore.create(store, train=TRAIN, test=TEST, models=n)
    ours = write_dmstore(store, range(n))
    theirs = write_memmaps(out / "memmaps", n)
    results["write_ms"] = {"dmstore": 1e3 * float(np.mean(ours)), "memmaps": 1e3 * float(np.mean(theirs))}
    results["write_p95_ms"] = 1e3 * float(np.quantile(ours, 0.95))

    parallel = str(out / "parallel.zarr")
    dmstore.create(parallel, train=TRAIN, test=TEST, models=n)
    bounds = np.linspace(0, n, args.writers + 1).astype(int)
    start = time.perf_counter()
    jobs = [
        subprocess.Popen([sys.executable, __file__, "--job", parallel, *map(str, range(a, b))])
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    for job in jobs:
        job.wait()
    results["writers"] = {"processes": args.writers, "rows_per_s": n / (time.perf_counter() - start)}

    row_bytes = TRAIN + 2 * (TRAIN + TEST)
    start = time.perf_counter()
    dmstore.compact(store, progress=False)
    compact_s = time.perf_counter() - start
    source = out / "source" / "bench" / "data"
    source.mkdir(parents=True)
    for name in ("train_masks", "train_margins", "test_margins"):
        np.save(source / f"{name}_50pct.npy", np.load(out / "memmaps" / f"{name}.npy", mmap_mode="r"))
    start = time.perf_counter()
    dmstore.convert(str(out / "source"), str(out / "converted.zarr"), "bench", 50, eval_rows=0, progress=False)
    convert_s = time.perf_counter() - start
    results["compact_mb_s"] = {"compact": n * row_bytes / compact_s / 1e6, "convert": n * row_bytes / convert_s / 1e6}
    same = all(
        (out / "serial.zarr" / p.relative_to(out / "converted.zarr")).read_bytes() == p.read_bytes()
        for p in (out / "converted.zarr").rglob("*")
        if p.is_file() and "/c/" in p.as_posix()
    )
    results["compacted_equals_converted"] = same
    results["killed"] = killed_writers(out, n, args.killed)
    print(json.dumps(results, indent=1))
    (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
