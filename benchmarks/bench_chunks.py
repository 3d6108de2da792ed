"""Codecs and inner chunk shapes of the store: compression, speed, and both access patterns.

Usage: python benchmarks/bench_chunks.py [--models 16384] [--repeat 3] [--data /work/bench-data]

1. Codecs: one band (2048 models x 20,000 examples) of random masks (bool, 50%) and of margins
   (float16 from N(1, 2)), plus the margins of a real small experiment (``dmstore example`` on
   digits, made once under ``--data/example``), cut into the store's (2048, 256) inner chunks and
   encoded with each Blosc setting in a worker thread, as zarr does: compression ratio, encode and
   decode MB/s (one core), and for margins the ratio an ideal i.i.d. coder would reach
   (16 bits / entropy of the float16 values).
2. The write path: one band written as one shard with the store's codecs, by zarr with and without
   its check for empty chunks (``array.write_empty_chunks``), by assembling the shard's bytes
   directly (checked byte-identical to zarr's), and encoding alone.
3. Inner chunk shapes (rows x cols; a shard is rows x all columns, as ``dmstore.conversion.plan`` lays it
   out): a local store of ``--models`` x 20,000 masks and margins per shape, with the store's
   codecs: write time, compression ratio, time to read a band of 2048 models across all examples,
   time to read one example across all models, and the bytes and requests such a column read
   costs on object storage; then, per shape, one example across all models read with plain zarr from
   a moto S3 server (127.0.0.1) against one GET of the whole ``.npy`` (``--models`` x 5,000 margins).

Prints tables; writes ``bench-out/bench_chunks.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import google_crc32c
import numpy as np
import zarr
from numcodecs import Blosc
from tqdm.auto import tqdm

from dmstore.io.store import codec

N_TRAIN, N_TEST = 20_000, 5_000
BAND = 2048
CHUNK = (2048, 256)
OUT = Path(__file__).resolve().parent.parent / "bench-out"
MOTO = (
    "import sys\nfrom moto.server import ThreadedMotoServer\n"
    "server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)\nserver.start()\n"
    "host, port = server.get_host_and_port()\nprint(f'http://{host}:{port}', flush=True)\nsys.stdin.read()\n"
)
SHAPES = [(2048, 256), (1024, 512), (4096, 128), (2048, 1024), (2048, 128), (2048, 512)]
# (cname, clevel, shuffle, blocksize) candidates
MASK_CODECS = [
    ("zstd", 1, "bitshuffle", 0),
    ("zstd", 3, "bitshuffle", 0),
    ("zstd", 1, "bitshuffle", 2**18),
    ("zstd", 3, "bitshuffle", 2**18),
    ("lz4", 5, "bitshuffle", 0),
    ("blosclz", 5, "bitshuffle", 0),
]
MARGIN_CODECS = [
    ("zstd", 3, "shuffle", 0),
    ("zstd", 1, "shuffle", 0),
    ("zstd", 5, "shuffle", 0),
    ("zstd", 1, "shuffle", 2**17),
    ("zstd", 1, "shuffle", 2**18),
    ("zstd", 3, "shuffle", 2**18),
    ("zstd", 5, "shuffle", 2**18),
    ("zstd", 1, "shuffle", 2**20),
    ("zstd", 1, "bitshuffle", 2**18),
    ("lz4", 5, "shuffle", 0),
]
SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


def best_of(fn, repeat: int) -> float:
    """Best wall time of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return min(times)


def in_thread(fn):
    """Run ``fn`` in another thread (Blosc then compresses on one core, as inside zarr)."""

    def run():
        thread = threading.Thread(target=fn)
        thread.start()
        thread.join()

    return run


def chunks_of(band: np.ndarray, cols: int = CHUNK[1]) -> list[np.ndarray]:
    return [np.ascontiguousarray(band[:, c : c + cols]) for c in range(0, band.shape[1] - cols + 1, cols)]


def entropy_limit(values: np.ndarray) -> float:
    """Ratio of an ideal coder of i.i.d. values: bits per value / entropy of the value distribution."""
    _, counts = np.unique(values.view(np.uint16), return_counts=True)
    p = counts / counts.sum()
    return 16 / float(-(p * np.log2(p)).sum())


def codec_table(samples: dict[str, np.ndarray], repeat: int) -> list[dict]:
    rows = []
    for label, band in samples.items():
        candidates = MASK_CODECS if band.dtype == bool else MARGIN_CODECS
        chunks = chunks_of(band, min(CHUNK[1], band.shape[1]))
        nbytes = sum(c.nbytes for c in chunks)
        current = codec(band.dtype)
        for cname, clevel, shuffle, blocksize in tqdm(candidates, desc=f"codecs {label}"):
            blosc = Blosc(cname, clevel, SHUFFLE[shuffle], blocksize)
            encoded = [blosc.encode(c) for c in chunks]
            stored = sum(len(e) for e in encoded)
            encode_s = best_of(in_thread(lambda: [blosc.encode(c) for c in chunks]), repeat)
            decode_s = best_of(in_thread(lambda: [blosc.decode(e) for e in encoded]), repeat)
            rows.append(
                {
                    "data": label,
                    "cname": cname,
                    "clevel": clevel,
                    "shuffle": shuffle,
                    "blocksize": blocksize,
                    "ratio": nbytes / stored,
                    "encode_mb_s": nbytes / encode_s / 1e6,
                    "decode_mb_s": nbytes / decode_s / 1e6,
                    "limit": entropy_limit(band) if band.dtype != bool else 8.0,
                    "store": (cname, clevel, shuffle, blocksize)
                    == (current.cname.name, current.clevel, current.shuffle.name, current.blocksize),
                }
            )
    return rows


def shard_bytes(band: np.ndarray, encode, cols: int) -> bytes:
    """One shard of a band as zarr lays it out: encoded chunks (Blosc, CRC32C), then the CRC'd index."""
    n_chunks = -(-band.shape[1] // cols)
    index = np.empty((n_chunks, 2), dtype="<u8")
    parts, offset = [], 0
    for i in range(n_chunks):
        chunk = np.zeros((band.shape[0], cols), dtype=band.dtype)  # zarr pads the edge chunk
        part = band[:, i * cols : (i + 1) * cols]
        chunk[:, : part.shape[1]] = part
        encoded = encode(chunk)
        encoded += google_crc32c.value(encoded).to_bytes(4, "little")
        index[i] = offset, len(encoded)
        offset += len(encoded)
        parts.append(encoded)
    table = index.tobytes()
    return b"".join([*parts, table, google_crc32c.value(table).to_bytes(4, "little")])


def write_path(margins: np.ndarray, work: Path, repeat: int) -> dict:
    """One band written as one shard: by zarr (empty-chunk check on and off), by assembling the shard
    directly (one core), and encoding alone (one core)."""
    band = margins[:BAND]
    compressors = [codec(band.dtype), zarr.codecs.Crc32cCodec()]
    result = {"band_bytes": band.nbytes}
    path = work / "write-path.zarr"
    for empty in (False, True):
        shutil.rmtree(path, ignore_errors=True)
        array = zarr.create_array(
            path,
            shape=band.shape,
            dtype=band.dtype,
            chunks=CHUNK,
            shards=(BAND, -(-band.shape[1] // CHUNK[1]) * CHUNK[1]),
            compressors=compressors,
            config={"write_empty_chunks": empty},
        )

        def write():
            array[:] = band

        result[f"zarr_write_empty_chunks_{empty}_mb_s"] = band.nbytes / best_of(write, repeat) / 1e6
    config = codec(band.dtype).to_dict()["configuration"]
    blosc = Blosc.from_config({**config, "shuffle": SHUFFLE[config["shuffle"]]})
    shard = path / "c" / "0" / "0"
    direct = work / "direct-shard"
    result["direct_shard_mb_s"] = (
        band.nbytes
        / best_of(in_thread(lambda: direct.write_bytes(shard_bytes(band, blosc.encode, CHUNK[1]))), repeat)
        / 1e6
    )
    result["direct_shard_identical_to_zarr"] = direct.read_bytes() == shard.read_bytes()
    direct.unlink()
    shutil.rmtree(path)
    chunks = chunks_of(band)
    result["encode_only_mb_s"] = (
        band.nbytes / best_of(in_thread(lambda: [blosc.encode(c) for c in chunks]), repeat) / 1e6
    )
    return result


def shape_table(arrays: dict[str, np.ndarray], work: Path, repeat: int) -> list[dict]:
    rows = []
    models = next(iter(arrays.values())).shape[0]
    rng = np.random.default_rng(1)
    for chunk_rows, cols in tqdm(SHAPES, desc="chunk shapes"):
        path = work / f"chunks-{chunk_rows}x{cols}.zarr"
        shutil.rmtree(path, ignore_errors=True)
        group = zarr.open_group(path, mode="w", zarr_format=3)
        for name, data in arrays.items():
            shards = (chunk_rows, -(-data.shape[1] // cols) * cols)
            array = group.create_array(
                name,
                shape=data.shape,
                dtype=data.dtype,
                chunks=(chunk_rows, cols),
                shards=shards,
                compressors=[codec(data.dtype), zarr.codecs.Crc32cCodec()],
            )
            began = time.perf_counter()
            array[:] = data
            write_s = time.perf_counter() - began
            stored = array.nbytes_stored()
            columns = iter(rng.choice(data.shape[1], size=repeat, replace=False).tolist())
            band_s = best_of(lambda: array[:BAND, :], repeat)
            column_s = best_of(lambda: array[:, next(columns)], repeat)
            assert np.array_equal(array[:, 123], data[:, 123])
            rows.append(
                {
                    "array": name,
                    "chunks": [chunk_rows, cols],
                    "ratio": data.nbytes / stored,
                    "write_mb_s": data.nbytes / write_s / 1e6,
                    "band_read_s": band_s,
                    "column_read_s": column_s,
                    "column_bytes": models * cols * data.dtype.itemsize * stored / data.nbytes,
                    "column_requests": 2 * -(-models // chunk_rows),
                    "chunk_bytes": chunk_rows * cols * data.dtype.itemsize,
                }
            )
        shutil.rmtree(path)
    return rows


def s3_columns(test_margins: np.ndarray, work: Path, repeat: int) -> dict:
    """One example across all models on a moto S3 server, per chunk shape, vs one GET of the whole .npy."""
    import boto3
    import s3fs
    from zarr.storage import FsspecStore

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
        client.create_bucket(Bucket="bench")
        npy = work / "test_margins.npy"
        np.save(npy, test_margins)
        client.upload_file(str(npy), "bench", "test_margins.npy")
        fs = s3fs.S3FileSystem(endpoint_url=endpoint)
        get_s = best_of(lambda: np.load(io.BytesIO(fs.cat_file("bench/test_margins.npy"))), repeat)
        rows = []
        rng = np.random.default_rng(2)
        for chunk_rows, cols in tqdm(SHAPES, desc="S3 column reads"):
            path = work / "s3-shape.zarr"
            shutil.rmtree(path, ignore_errors=True)
            array = zarr.create_array(
                path,
                shape=test_margins.shape,
                dtype=test_margins.dtype,
                chunks=(chunk_rows, cols),
                shards=(chunk_rows, -(-test_margins.shape[1] // cols) * cols),
                compressors=[codec(test_margins.dtype), zarr.codecs.Crc32cCodec()],
            )
            array[:] = test_margins
            prefix = f"{chunk_rows}x{cols}"
            for file in path.rglob("*"):
                if file.is_file():
                    client.upload_file(str(file), "bench", f"{prefix}/{file.relative_to(path).as_posix()}")
            remote = zarr.open_array(
                FsspecStore.from_url(
                    f"s3://bench/{prefix}", storage_options={"endpoint_url": endpoint}, read_only=True
                ),
                mode="r",
            )
            columns = iter(rng.choice(test_margins.shape[1], size=repeat, replace=False).tolist())
            column_s = best_of(lambda: remote[:, next(columns)], repeat)
            rows.append({"chunks": [chunk_rows, cols], "column_read_s": column_s, "speedup": get_s / column_s})
            fs.rm(f"bench/{prefix}", recursive=True)
            shutil.rmtree(path)
        npy.unlink()
        return {"models": test_margins.shape[0], "examples": test_margins.shape[1], "npy_get_s": get_s, "shapes": rows}
    finally:
        server.stdin.close()
        server.wait(timeout=30)


def example_margins(root: Path) -> dict[str, np.ndarray]:
    """Margins of a real small experiment (digits MLPs from dmstore.experiment.example), made once."""
    from dmstore.experiment.example import make_example

    folder = root / "digits" / "data"
    if not (folder / "test_margins_50pct.npy").exists():
        make_example(root, "digits", pct=50, models=2000, eval_models=500)
    return {
        f"example {kind}": np.load(folder / f"{kind}_50pct.npy")[:BAND] for kind in ("train_margins", "test_margins")
    }


def report(results: dict) -> None:
    print("\n== codecs on (2048, 256) chunks, one core (MB/s of raw bytes)")
    print(f"{'data':24} {'codec':30} {'ratio':>7} {'limit':>6} {'enc MB/s':>9} {'dec MB/s':>9}")
    for r in results["codecs"]:
        name = f"{r['cname']} {r['clevel']} {r['shuffle']} bs={r['blocksize'] // 1024}K" + (" *" if r["store"] else "")
        print(
            f"{r['data']:24} {name:30} {r['ratio']:7.3f} {r['limit']:6.3f} {r['encode_mb_s']:9.0f} "
            f"{r['decode_mb_s']:9.0f}"
        )
    print("  (* = dmstore.io.store.codec() now; bs=0K: Blosc picks the block size)")
    w = results["write_path"]
    print("\n== one margins band written by zarr as one shard (store codecs), MB/s")
    print(
        f"zarr, empty-chunk check on (default): {w['zarr_write_empty_chunks_False_mb_s']:.0f}; "
        f"off: {w['zarr_write_empty_chunks_True_mb_s']:.0f}; shard assembled directly (one core): "
        f"{w['direct_shard_mb_s']:.0f} (bytes identical to zarr's: {w['direct_shard_identical_to_zarr']}); "
        f"encoding alone (one core): {w['encode_only_mb_s']:.0f}"
    )
    print(
        f"\n== chunk shapes ({results['models']:,} models x {N_TRAIN:,} examples; shard = rows x all columns; "
        f"best of {results['repeat']})"
    )
    print(
        f"{'array':14} {'chunk':>10} {'ratio':>6} {'write MB/s':>10} {'band 2048 s':>12} {'column s':>9} "
        f"{'column MB':>10} {'requests':>9}"
    )
    for r in results["shapes"]:
        print(
            f"{r['array']:14} {'x'.join(map(str, r['chunks'])):>10} {r['ratio']:6.3f} {r['write_mb_s']:10.0f} "
            ""
            f"{r['band_read_s']:12.3f} {r['column_read_s']:9.4f} {r['column_bytes'] / 1e6:10.2f} "
            f"{r['column_requests']:9d}"
        )
    s3 = results["s3"]
    print(
        f"\n== one example across {s3['models']:,} models on moto S3, plain zarr, vs one GET of the whole "
        f".npy ({s3['models']:,} x {s3['examples']:,} float16: {s3['npy_get_s']:.2f} s)"
    )
    for r in s3["shapes"]:
        print(f"{'x'.join(map(str, r['chunks'])):>10} {r['column_read_s']:8.3f} s  {r['speedup']:6.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=16384, help="models of the chunk-shape stores")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path("/work/bench-data"), help="scratch stores (outside the repo)")
    args = parser.parse_args()
    work = args.data / "chunks-work"
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 2, size=(args.models, N_TRAIN), dtype=np.uint8).view(bool)
    margins = (rng.standard_normal((args.models, N_TRAIN), dtype=np.float32) * 2 + 1).astype(np.float16)
    samples = {
        "masks (random, 50%)": masks[:BAND],
        "margins N(1, 2)": margins[:BAND],
        **example_margins(args.data / "example"),
    }
    results = {
        "command": " ".join(["python", "benchmarks/bench_chunks.py", *sys.argv[1:]]),
        "models": args.models,
        "repeat": args.repeat,
    }
    results["codecs"] = codec_table(samples, args.repeat)
    results["write_path"] = write_path(margins, work, args.repeat)
    results["shapes"] = shape_table({"train_masks": masks, "train_margins": margins}, work, args.repeat)
    results["s3"] = s3_columns(margins[:, :N_TEST], work, args.repeat)
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_chunks.json").write_text(json.dumps(results, indent=1))
    report(results)
    print(f"\nwrote {OUT / 'bench_chunks.json'}")


if __name__ == "__main__":
    main()
