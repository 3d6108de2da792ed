"""Crash and resume: a conversion killed with SIGKILL (the driver, or one Dask worker) ends,
after resuming, with a store byte-for-byte identical to an uninterrupted run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import dead_pid, write_layout
from dmstore.conversion.convert import convert

MODELS, N_TRAIN, N_TEST = 40_000, 1500, 500


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume") / "source"
    write_layout(root, models=MODELS, n_train=N_TRAIN, n_test=N_TEST, seed=3)
    return root


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory):
    dest = tmp_path_factory.mktemp("reference") / "ref.zarr"
    convert(str(source), str(dest), "toy", 50, eval_rows=4000, progress=False)
    return dest


def files(store: Path) -> dict[str, bytes]:
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def start(source: Path, dest: Path, *extra: str) -> subprocess.Popen:
    argv = [
        sys.executable,
        "-m",
        "dmstore",
        "convert",
        str(source),
        str(dest),
        "--dataset",
        "toy",
        "--pct",
        "50",
        "--eval-rows",
        "4000",
        "--no-progress",
        "--max-memory",
        "1200MB",
        *extra,
    ]
    return subprocess.Popen(argv, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for_records(dest: Path, count: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list(dest.glob("_dmstore/bands/*/*.json"))) >= count:
            return
        assert process.poll() is None, process.stdout.read().decode()
        time.sleep(0.02)
    raise AssertionError("the conversion made no progress")


def test_driver_killed_then_resumed(source, reference, tmp_path):
    dest = tmp_path / "killed.zarr"
    process = start(source, dest)
    wait_for_records(dest, 3, process)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and every worker, mid-way
    process.wait()
    done = len(list(dest.glob("_dmstore/bands/*/*.json")))
    assert 3 <= done < 3 * 20  # 20 bands per array: the run was really cut short
    # a record's temporary file, as the kill leaves it when it lands between writing and linking
    # (seen once in CI): the resumed run removes it
    dead = dead_pid()
    abandoned = dest / "_dmstore/bands/train_masks" / f".2048-4096.json.{socket.gethostname()}.{dead}.0f.tmp"
    abandoned.parent.mkdir(parents=True, exist_ok=True)
    abandoned.write_text('{"array": "train_masks"')
    convert(str(source), str(dest), "toy", 50, eval_rows=4000, progress=False)
    assert files(dest) == files(reference)


def writing_shard(worker: psutil.Process, dest: Path) -> str | None:
    """The shard file under ``dest`` that ``worker`` has open for writing, if any."""
    try:
        files = worker.open_files()
    except psutil.Error:
        return None
    return next((f.path for f in files if f.path.startswith(f"{dest}/") and "/c/" in f.path and "w" in f.mode), None)


def test_worker_killed_mid_way(source, reference, tmp_path):
    dest = tmp_path / "worker.zarr"
    process = start(source, dest, "--scheduler", "local")  # worker processes (the default is threads)
    wait_for_records(dest, 2, process)
    workers = [p for p in psutil.Process(process.pid).children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]
    assert workers
    # catch a worker in the middle of writing a shard: stop it, make sure the shard is still open
    # and its band not recorded, then kill it
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline and process.poll() is None, "no worker was seen writing a shard"
        worker, shard = next(((w, path) for w in workers if (path := writing_shard(w, dest))), (None, None))
        if worker is None:
            time.sleep(0.001)
            continue
        worker.send_signal(signal.SIGSTOP)
        array, _, block = Path(shard).relative_to(dest).parts[:3]
        start_row = int(block) * 2048
        record = dest / "_dmstore" / "bands" / array / f"{start_row}-{min(start_row + 2048, MODELS)}.json"
        if writing_shard(worker, dest) == shard and not record.exists():
            worker.send_signal(signal.SIGKILL)
            break
        worker.send_signal(signal.SIGCONT)  # it had just finished that shard: try again
    output = process.communicate(timeout=300)[0].decode()
    assert process.returncode == 0, output  # Dask ran the lost band again on a fresh worker
    assert record.exists() and files(dest) == files(reference)
