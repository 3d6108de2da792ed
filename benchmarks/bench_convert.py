"""Throughput, peak memory, compression and S3 query speed of ``dmstore convert`` (issue 2).

Usage: python benchmarks/bench_convert.py [--size 5.6] [--small 2.8] [--repeat 3] [--data /work/bench-data]

Generates once, under ``--data``, masks+margins sources in the bucket's layout: M models x 20,000
train examples (masks random bool at 50%, margins float16 drawn from N(1, 2), i.e. loc 1, scale 2)
and M x 5,000 test margins, M chosen for ``--size`` GB (and ``--small`` GB). Then, in one run, side
by side, best of ``--repeat`` (runs interleaved, source files warm in the page cache):

- ``dmstore convert`` as a user runs it (the CLI: default local cluster, ``--max-memory 2GB``);
- naive: what a user would otherwise write: ``da.from_array(np.load(path, mmap_mode="r"),
  chunks=shards).to_zarr(...)`` with the chunks, shards and codecs dmstore wrote, Dask's default
  threaded scheduler;
- limit: the machine's limit: read the same bands from the files, encode every inner chunk with
  the same codecs and write the encoded bytes to files on the same disk, on all cores (a thread
  pool over bands).

The marginal rate (MB/s between the two sizes, default 2.8 and 5.6 GB) leaves out each run's fixed
cost (start-up, the store's metadata).

Each runs as a child process; the RSS of its whole process tree (driver and workers) is sampled
every 50 ms. Also measured: the resident-memory constants of ``dmstore.conversion.plan``, the compression
ratios of the store, and one test example's margins across all models read from a moto S3 server
out of the store against the same from the published ``.npy``.

Prints tables; writes ``bench-out/bench_convert.json`` and ``bench-out/convert_memory.png``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
from tqdm.auto import tqdm

N_TRAIN, N_TEST = 20_000, 5_000
DATASET, PCT, EVAL_ROWS = "bench", 50, 2000
KINDS = {
    "train_masks": (N_TRAIN, np.dtype(bool)),
    "train_margins": (N_TRAIN, np.dtype(np.float16)),
    "test_margins": (N_TEST, np.dtype(np.float16)),
}
ROW_BYTES = sum(cols * dtype.itemsize for cols, dtype in KINDS.values())
GENERATE_ROWS = 4096
RANGED_ROWS = 50  # rows read one range each, then scaled (moto reads the whole object per ranged GET)
METHODS = ("dmstore", "naive", "limit")
OUT = Path(__file__).resolve().parent.parent / "bench-out"
MOTO = (
    "import sys\nfrom moto.server import ThreadedMotoServer\n"
    "server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)\nserver.start()\n"
    "host, port = server.get_host_and_port()\nprint(f'http://{host}:{port}', flush=True)\nsys.stdin.read()\n"
)


# ---------------------------------------------------------------------------- source


def models_for(size_gb: float) -> int:
    """Models (rows) of a source of ``size_gb`` GB of masks and margins."""
    return max(EVAL_ROWS + 1, round(size_gb * 1e9 / ROW_BYTES))


def make_source(root: Path, models: int) -> Path:
    """Write (once) the source of ``models`` rows in the bucket's layout; return its folder."""
    folder = root / f"convert-{models}"
    data = folder / DATASET / "data"
    data.mkdir(parents=True, exist_ok=True)
    for seed, (name, (cols, dtype)) in enumerate(KINDS.items()):
        path = data / f"{name}_{PCT}pct.npy"
        if path.exists():
            continue
        part = path.with_suffix(".part")
        out = np.lib.format.open_memmap(part, mode="w+", dtype=dtype, shape=(models, cols))
        for start in tqdm(range(0, models, GENERATE_ROWS), desc=f"generate {name} ({models:,} models)"):
            stop = min(start + GENERATE_ROWS, models)
            rng = np.random.default_rng([seed, start])
            if np.dtype(dtype) == np.dtype(bool):
                out[start:stop] = rng.integers(0, 2, size=(stop - start, cols), dtype=np.uint8).view(bool)
            else:
                out[start:stop] = rng.standard_normal((stop - start, cols), dtype=np.float32) * 2 + 1
        out.flush()
        del out
        part.rename(path)
    return folder


def source_paths(folder: Path) -> dict[str, Path]:
    return {name: folder / DATASET / "data" / f"{name}_{PCT}pct.npy" for name in KINDS}


def warm(paths) -> None:
    """Read the files once so that every method starts from the same (warm) page cache."""
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.read(64 * 2**20):
                pass


# ---------------------------------------------------------------------------- memory sampling


class TreeSampler(threading.Thread):
    """Peak and timeline of the summed RSS of a process and all its descendants (every 50 ms)."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.per_process: dict[int, dict] = {}
        self.timeline: list[tuple[float, int]] = []
        self._done = threading.Event()

    def run(self) -> None:
        began = time.perf_counter()
        while not self._done.is_set():
            total = 0
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                    entry = self.per_process.setdefault(proc.pid, {"role": self._role(proc), "peak": 0, "first": rss})
                except psutil.Error:
                    continue
                entry["peak"] = max(entry["peak"], rss)
                total += rss
            self.peak = max(self.peak, total)
            self.timeline.append((time.perf_counter() - began, total))
            self._done.wait(self.interval)

    def _role(self, proc: psutil.Process) -> str:
        if proc.pid == self.root.pid:
            return "driver"
        cmdline = " ".join(proc.cmdline())
        return "tracker" if "resource_tracker" in cmdline else "worker"

    def stop(self) -> None:
        self._done.set()
        self.join()


def run_child(cmd: list[str]) -> dict:
    """Run ``cmd``; its wall time, its process tree's peak RSS, and its JSON output (if any)."""
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - began
    sampler.stop()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return {
        "seconds": seconds,
        "peak_rss": sampler.peak,
        "processes": list(sampler.per_process.values()),
        "timeline": sampler.timeline,
        "result": json.loads(lines[-1]) if lines else None,
    }


# ---------------------------------------------------------------------------- the three methods


def dmstore_cmd(folder: Path, dest: Path, max_memory: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dmstore",
        "convert",
        str(folder),
        str(dest),
        "--dataset",
        DATASET,
        "--pct",
        str(PCT),
        "--eval-rows",
        str(EVAL_ROWS),
        "--max-memory",
        max_memory,
        "--no-progress",
    ]


def layout_of(store: Path) -> dict[str, dict]:
    """Chunks, shards and compressors of the arrays of a store dmstore wrote."""
    import zarr

    group = zarr.open_group(store, mode="r")
    layout = {}
    for name in KINDS:
        meta = group[name].metadata.to_dict()
        sharding = meta["codecs"][0]["configuration"]
        layout[name] = {
            "chunks": list(sharding["chunk_shape"]),
            "shards": list(meta["chunk_grid"]["configuration"]["chunk_shape"]),
            "compressors": [c for c in sharding["codecs"] if c["name"] != "bytes"],
        }
    return layout


def child_job(folder: Path, dest: Path, layout: dict) -> dict:
    arrays = []
    for name, path in source_paths(folder).items():
        source = np.load(path, mmap_mode="r")
        arrays.append(
            {
                "name": name,
                "path": str(path),
                "offset": int(source.offset),
                "shape": list(source.shape),
                "dtype": str(source.dtype),
                **layout[name],
            }
        )
    return {"dest": str(dest), "arrays": arrays}


def naive(job: dict) -> dict:
    """What a user would write: Dask arrays over memory-mapped .npy files, ``to_zarr``, threaded scheduler."""
    import dask
    import dask.array as da

    stores = []
    for a in job["arrays"]:
        x = da.from_array(np.load(a["path"], mmap_mode="r"), chunks=(a["shards"][0], -1))
        stores.append(
            da.to_zarr(
                x,
                job["dest"],
                component=a["name"],
                compute=False,
                zarr_format=3,
                chunks=a["chunks"],
                shards=a["shards"],
                compressors=a["compressors"],
            )
        )
    dask.compute(*stores)
    return {}


def limit(job: dict) -> dict:
    """Read every band from its file, encode each inner chunk with the store's codecs and write the
    encoded bytes to a file on the same disk, on all cores (a thread pool over bands)."""
    import google_crc32c
    from numcodecs import Blosc

    shuffles = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}

    def encoder(compressors: list[dict]):
        (blosc,) = [c["configuration"] for c in compressors if c["name"] == "blosc"]
        codec = Blosc.from_config({**blosc, "shuffle": shuffles[blosc["shuffle"]]})
        crc = any(c["name"] == "crc32c" for c in compressors)

        def encode(chunk: np.ndarray) -> bytes:
            encoded = codec.encode(chunk)
            if crc:
                encoded += np.uint32(google_crc32c.value(encoded)).tobytes()
            return encoded

        return encode

    def encode_band(task) -> int:
        a, encode, start = task
        rows, cols = a["shape"]
        dtype = np.dtype(a["dtype"])
        stop = min(start + a["shards"][0], rows)
        buffer = bytearray((stop - start) * cols * dtype.itemsize)
        with open(a["path"], "rb", buffering=0) as f:
            f.seek(a["offset"] + start * cols * dtype.itemsize)
            view, done = memoryview(buffer), 0
            while done < len(buffer):
                done += f.readinto(view[done:])
        band = np.frombuffer(buffer, dtype=dtype).reshape(stop - start, cols)
        chunk_rows, chunk_cols = a["chunks"]
        stored = 0
        with open(Path(job["dest"]) / f"{a['name']}-{start}", "wb") as out:  # the encoded band, on the same disk
            for col in range(0, cols, chunk_cols):
                part = band[:, col : col + chunk_cols]
                if part.shape == (chunk_rows, chunk_cols):
                    chunk = np.ascontiguousarray(part)
                else:  # zarr pads edge chunks to the full chunk shape
                    chunk = np.zeros((chunk_rows, chunk_cols), dtype=dtype)
                    chunk[: part.shape[0], : part.shape[1]] = part
                stored += out.write(encode(chunk))
        return stored

    Path(job["dest"]).mkdir(parents=True, exist_ok=True)
    tasks = [
        (a, encoder(a["compressors"]), start)
        for a in job["arrays"]
        for start in range(0, a["shape"][0], a["shards"][0])
    ]
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        stored = sum(pool.map(encode_band, tasks))
    return {"stored_bytes": stored}


def baseline(job: dict) -> dict:
    """Resident bytes of the process with the convert command loaded and its in-process cluster of
    threads up, before any band is read."""
    from dmstore.cli import build_parser
    from dmstore.io.cluster import dask_client

    build_parser("convert")
    with dask_client(None, n_workers=job["threads"], threads=True):
        time.sleep(1)
        return {"driver": psutil.Process().memory_info().rss}


CHILDREN = {"naive": naive, "limit": limit, "baseline": baseline}


# ---------------------------------------------------------------------------- conversions


def check_store(store: Path, folder: Path) -> None:
    """The first and last rows of every array equal the source (a benchmark of a broken write is void)."""
    import zarr

    group = zarr.open_group(store, mode="r")
    for name, path in source_paths(folder).items():
        source = np.load(path, mmap_mode="r")
        for rows in (slice(0, 100), slice(len(source) - 100, len(source))):
            np.testing.assert_array_equal(group[name][rows], source[rows], err_msg=f"{store} {name}")


def compression(store: Path) -> dict[str, dict]:
    import zarr

    group = zarr.open_group(store, mode="r")
    return {
        name: {
            "nbytes": group[name].nbytes,
            "stored": group[name].nbytes_stored(),
            "ratio": group[name].nbytes / group[name].nbytes_stored(),
        }
        for name in KINDS
    }


def convert_runs(folder: Path, work: Path, repeat: int, max_memory: str, keep: Path) -> dict:
    """Time the three methods on one source, interleaved, ``repeat`` times each."""
    models = np.load(source_paths(folder)["train_masks"], mmap_mode="r").shape[0]
    nbytes = models * ROW_BYTES
    runs: dict[str, list[dict]] = {m: [] for m in METHODS}
    layout = None
    warm(source_paths(folder).values())
    bar = tqdm(total=repeat * len(METHODS), desc=f"convert {nbytes / 1e9:.1f} GB")
    for rep in range(repeat):
        for method in METHODS:
            dest = work / f"{method}.zarr"
            shutil.rmtree(dest, ignore_errors=True)
            if method == "dmstore":
                run = run_child(dmstore_cmd(folder, dest, max_memory))
                layout = layout or layout_of(dest)
            else:
                job = work / "job.json"
                job.write_text(json.dumps(child_job(folder, dest, layout)))
                run = run_child([sys.executable, __file__, "--child", method, "--job", str(job)])
            if rep == 0 and method != "limit":
                check_store(dest, folder)
            if method == "dmstore" and rep == repeat - 1:
                shutil.rmtree(keep, ignore_errors=True)
                dest.rename(keep)
            else:
                shutil.rmtree(dest, ignore_errors=True)
            runs[method].append(run)
            bar.update()
    bar.close()
    best = {m: min(r["seconds"] for r in runs[m]) for m in METHODS}
    return {
        "models": models,
        "source_bytes": nbytes,
        "layout": layout,
        "seconds": {m: [r["seconds"] for r in runs[m]] for m in METHODS},
        "best_seconds": best,
        "gb_per_s": {m: nbytes / best[m] / 1e9 for m in METHODS},
        "vs_naive": best["naive"] / best["dmstore"],
        "vs_limit": best["limit"] / best["dmstore"],
        "peak_rss": {m: max(r["peak_rss"] for r in runs[m]) for m in METHODS},
        "dmstore_processes": runs["dmstore"][-1]["processes"],
        "timelines": {m: runs[m][-1]["timeline"][::4] for m in METHODS},
        "limit_stored_bytes": runs["limit"][-1]["result"]["stored_bytes"],
    }


def constants(work: Path, big: dict, max_memory: str) -> dict:
    """DRIVER_BYTES and BAND_MEMORY_FACTOR as measured, next to dmstore's (the bands run on threads
    of the one process)."""
    from dmstore.conversion import plan

    from dmstore.io import budget

    band_bytes = max(big["layout"][name]["shards"][0] * cols * dtype.itemsize for name, (cols, dtype) in KINDS.items())
    threads = plan.threads_for(budget.parse_budget(max_memory), band_bytes, os.cpu_count() or 1)
    job = work / "baseline.json"
    job.write_text(json.dumps({"threads": threads}))
    base = run_child([sys.executable, __file__, "--child", "baseline", "--job", str(job)])["result"]
    procs = big["dmstore_processes"]
    driver_peak = max(p["peak"] for p in procs if p["role"] == "driver")
    return {
        "driver_idle": base["driver"],
        "driver_peak": driver_peak,
        "threads": threads,
        "largest_band_bytes": band_bytes,
        "band_memory_factor": (driver_peak - base["driver"]) / (threads * band_bytes),
        "worker_processes": sum(p["role"] == "worker" for p in procs),
        "plan": {"DRIVER_BYTES": budget.DRIVER_BYTES, "BAND_MEMORY_FACTOR": plan.BAND_MEMORY_FACTOR},
    }


# ---------------------------------------------------------------------------- S3 query


def s3_query(store: Path, folder: Path, repeat: int) -> dict:
    """One test example across all models on a moto S3 server: from the store vs from the .npy."""
    import boto3
    import s3fs
    import zarr
    from zarr.storage import FsspecStore

    import dmstore

    server = subprocess.Popen(
        [sys.executable, "-c", MOTO],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        endpoint = server.stdout.readline().strip()
        os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        for bucket in ("published", "stores"):
            client.create_bucket(Bucket=bucket)
        npy = source_paths(folder)["test_margins"]
        key = f"{DATASET}/data/{npy.name}"
        began = time.perf_counter()
        client.upload_file(str(npy), "published", key)
        # the store without the shards of the train arrays, which this query never reads
        files = [
            p
            for p in store.rglob("*")
            if p.is_file() and not p.relative_to(store).as_posix().startswith(("train_masks/c/", "train_margins/c/"))
        ]
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda p: client.upload_file(str(p), "stores", f"bench.zarr/{p.relative_to(store).as_posix()}"),
                    files,
                )
            )
        upload_s = time.perf_counter() - began
        options = {"endpoint_url": endpoint}
        url = "s3://stores/bench.zarr"
        source = np.load(npy, mmap_mode="r")
        models, n_test = source.shape
        offset = int(source.offset)
        fs = s3fs.S3FileSystem(**options)
        columns = iter(np.random.default_rng(0).choice(n_test, size=100, replace=False).tolist())
        ds = dmstore.open(url, storage_options=options)

        def store_open_read(j):
            return dmstore.open(url, storage_options=options)["test_margins"][:, j].values

        def store_read(j):
            return ds["test_margins"][:, j].values

        def zarr_read(j):
            return zarr.open_array(
                FsspecStore.from_url(f"{url}/test_margins", storage_options=options, read_only=True), mode="r"
            )[:, j]

        def download(j):
            with tempfile.TemporaryDirectory(dir=store.parent) as tmp:
                client.download_file("published", key, f"{tmp}/x.npy")
                return np.array(np.load(f"{tmp}/x.npy", mmap_mode="r")[:, j])

        def get(j):
            return np.load(io.BytesIO(fs.cat_file(f"published/{key}")))[:, j]

        def ranged(j):
            starts = [offset + (r * n_test + j) * 2 for r in range(RANGED_ROWS)]
            parts = fs.cat_ranges([f"published/{key}"] * RANGED_ROWS, starts, [s + 2 for s in starts])
            return np.frombuffer(b"".join(parts), dtype=np.float16)

        ways = {
            "store: open + read": store_open_read,
            "store: read (opened)": store_read,
            "plain zarr: open + read": zarr_read,
            "npy: boto3 download_file": download,
            "npy: one GET into memory": get,
            f"npy: ranged read per row ({RANGED_ROWS} rows)": ranged,
        }
        seconds: dict[str, list[float]] = {w: [] for w in ways}
        for _ in tqdm(range(repeat), desc="S3 query"):
            for way, fn in ways.items():
                j = next(columns)
                began = time.perf_counter()
                column = fn(j)
                seconds[way].append(time.perf_counter() - began)
                np.testing.assert_array_equal(column, source[: len(column), j], err_msg=way)
        best = {w: min(s) for w, s in seconds.items()}
        ranged_all = best[f"npy: ranged read per row ({RANGED_ROWS} rows)"] * models / RANGED_ROWS
        naive_best = min(best["npy: boto3 download_file"], best["npy: one GET into memory"], ranged_all)
        return {
            "models": models,
            "n_test": n_test,
            "npy_bytes": npy.stat().st_size,
            "upload_seconds": upload_s,
            "seconds": seconds,
            "best_seconds": best,
            "ranged_all_rows_estimate": ranged_all,
            "npy_best": naive_best,
            "speedup_open_read": naive_best / best["store: open + read"],
            "speedup_read": naive_best / best["store: read (opened)"],
        }
    finally:
        server.stdin.close()
        server.wait(timeout=30)


# ---------------------------------------------------------------------------- report


def plot(results: dict, max_memory: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dmstore.io.budget import parse_budget

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for _label, run in results["runs"].items():
        for method, style in (("dmstore", "-"), ("naive", ":")):
            t, rss = zip(*run["timelines"][method])
            ax.plot(t, np.array(rss) / 1e9, style, label=f"{method}, {run['source_bytes'] / 1e9:.1f} GB source")
    ax.axhline(parse_budget(max_memory) / 1e9, color="k", lw=0.8, ls="--", label=f"--max-memory {max_memory}")
    ax.set(xlabel="seconds", ylabel="RSS of the process tree (GB)", title="Peak memory of a conversion")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def report(results: dict) -> None:
    print("\n== conversion (best of %d; GB/s of source bytes; RSS = whole process tree)" % results["repeat"])
    print(f"{'source':>10} {'method':>8} {'best s':>8} {'MB/s':>6} {'peak RSS GB':>12}   runs (s)")
    for run in results["runs"].values():
        for m in METHODS:
            runs = " ".join(f"{s:.1f}" for s in run["seconds"][m])
            print(
                f"{run['source_bytes'] / 1e9:9.2f}G {m:>8} {run['best_seconds'][m]:8.2f} "
                f"{run['gb_per_s'][m] * 1000:6.0f} "
                f"{run['peak_rss'][m] / 1e9:12.2f}   {runs}"
            )
        print(f"{'':>10} dmstore = {run['vs_naive']:.2f}x naive, {run['vs_limit']:.2f}x limit")
    if "marginal_mb_per_s" in results:
        rates = results["marginal_mb_per_s"]
        print(
            "marginal rate (MB/s between the two sizes): "
            + ", ".join(f"{m} {rates[m]:.0f}" for m in METHODS)
            + f"; dmstore = {rates['dmstore'] / rates['limit']:.2f}x limit"
        )
    c = results["constants"]
    print("\n== memory constants of dmstore.conversion.plan (measured vs plan)")
    print(
        f"process: idle {c['driver_idle'] / 2**20:.0f} MiB (DRIVER_BYTES {c['plan']['DRIVER_BYTES'] / 2**20:.0f} MiB), "
        f"peak {c['driver_peak'] / 2**20:.0f} MiB with {c['threads']} threads on bands of "
        f"{c['largest_band_bytes'] / 2**20:.0f} MiB: {c['band_memory_factor']:.2f} per band byte "
        f"(BAND_MEMORY_FACTOR {c['plan']['BAND_MEMORY_FACTOR']}); worker processes: {c['worker_processes']}"
    )
    print("\n== compression of the store (dmstore info / zarr nbytes_stored)")
    for name, v in results["compression"].items():
        print(f"{name:14} {v['nbytes'] / 2**20:9.1f} MiB -> {v['stored'] / 2**20:9.1f} MiB  {v['ratio']:.3f}x")
    if "s3" in results:
        s3 = results["s3"]
        print(
            f"\n== one test example across {s3['models']:,} models on moto S3 "
            f"(test_margins {s3['models']:,} x {s3['n_test']:,}, .npy {s3['npy_bytes'] / 1e9:.2f} GB)"
        )
        for way, best in s3["best_seconds"].items():
            print(f"{way:32} {best:8.3f} s   runs: {' '.join(f'{s:.3f}' for s in s3['seconds'][way])}")
        print(f"ranged reads scaled to all {s3['models']:,} rows: {s3['ranged_all_rows_estimate']:.1f} s")
        print(
            f"store vs best .npy way ({s3['npy_best']:.2f} s): {s3['speedup_open_read']:.1f}x (open + read), "
            f"{s3['speedup_read']:.1f}x (read)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=5.6, help="GB of masks+margins of the main source")
    parser.add_argument("--small", type=float, default=2.8, help="GB of the second source (0: none)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-memory", default="2GB")
    parser.add_argument(
        "--data", type=Path, default=Path("/work/bench-data"), help="sources and stores (outside the repo)"
    )
    parser.add_argument("--no-s3", dest="s3", action="store_false", help="skip the S3 query")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](json.loads(args.job.read_text()))))
        return

    work = args.data / "convert-work"
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "repeat": args.repeat,
        "max_memory": args.max_memory,
        "cores": os.cpu_count(),
        "command": " ".join(["python", "benchmarks/bench_convert.py", *sys.argv[1:]]),
        "runs": {},
    }
    results["load_average_start"] = os.getloadavg()
    sizes = [s for s in (args.small, args.size) if s > 0]
    folders = {size: make_source(args.data, models_for(size)) for size in sizes}
    for size in sizes:
        results["runs"][f"{size:g}GB"] = convert_runs(
            folders[size], work, args.repeat, args.max_memory, keep=work / f"store-{size:g}GB.zarr"
        )
    big = results["runs"][f"{args.size:g}GB"]
    store = work / f"store-{args.size:g}GB.zarr"
    results["constants"] = constants(work, big, args.max_memory)
    if len(sizes) == 2:  # the marginal rate: what one more GB costs, without the fixed cost of a run
        small, large = (results["runs"][f"{size:g}GB"] for size in sizes)
        added = large["source_bytes"] - small["source_bytes"]
        results["marginal_mb_per_s"] = {
            m: added / (large["best_seconds"][m] - small["best_seconds"][m]) / 1e6 for m in METHODS
        }
    results["compression"] = compression(store)
    from dmstore.conversion.info import describe

    results["info"] = describe(str(store))
    if args.s3:
        results["s3"] = s3_query(store, folders[args.size], args.repeat)
    results["load_average_end"] = os.getloadavg()
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_convert.json").write_text(json.dumps(results, indent=1))
    plot(results, args.max_memory, OUT / "convert_memory.png")
    report(results)
    print("\n" + results["info"])
    print(f"\nwrote {OUT / 'bench_convert.json'} and {OUT / 'convert_memory.png'}")


if __name__ == "__main__":
    main()
