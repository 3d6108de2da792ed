"""The cluster for real: a ``dask scheduler`` and two ``dask worker`` processes, each started in its
own empty folder, and the store on a moto S3 server. Convert S3 -> S3, info, verify, fit, evaluate,
stats and the ``ds.dm`` accessor through ``--scheduler`` give what the same commands give on local
disk without a cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import dask
import numpy as np
import psutil
import pytest
import zarr
from conftest import LOOPBACK, upload, write_layout
from dask.distributed import Client, LocalCluster

import dmstore
from dmstore.cli import main
from dmstore.io.cluster import dask_client

DASK = str(Path(sys.executable).with_name("dask"))
#: A Dask process keeps an HTTP server without its dashboard, on all interfaces unless told
LOOPBACK_HTTP = ["--no-dashboard", "--dashboard-address", "127.0.0.1:0"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_endpoint):
    """The scheduler's address; its two workers have 1 thread and 2 GiB each, and no folder of ours."""
    root = tmp_path_factory.mktemp("cluster")
    scheduler_file = root / "scheduler.json"
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes = [
        subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", *LOOPBACK_HTTP, "--scheduler-file",
             str(scheduler_file)],
            cwd=root,
            **quiet,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        for i in range(2):
            folder = root / f"worker-{i}"
            folder.mkdir()
            processes.append(
                subprocess.Popen(
                    [DASK, "worker", address, "--nthreads", "1", "--memory-limit", "2GiB", "--host", "127.0.0.1",
                     *LOOPBACK_HTTP, "--local-directory", str(folder)],
                    cwd=folder,
                    **quiet,
                )
            )
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=120)  # asked of the scheduler, not slept for
        yield address
    finally:  # the workers first: with their scheduler gone they would wait for it to say goodbye (6 s)
        for group in (processes[1:], processes[:1]):
            for process in group:
                process.terminate()
            for process in group:  # a graceful close is not under test: a few seconds, then killed
                try:
                    process.wait(3)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def test_the_commands_on_a_cluster_with_the_store_on_s3_equal_the_local_ones(cluster, s3_client, tmp_path, capsys):
    folder = tmp_path / "source"
    write_layout(folder, models=1200, n_train=120, n_test=40, seed=4)
    source = upload(s3_client, folder, bucket="cluster-source")
    s3_client.create_bucket(Bucket="cluster-store")
    remote, local = "s3://cluster-store/toy.zarr", str(tmp_path / "toy.zarr")
    convert = ["--dataset", "toy", "--pct", "50", "--eval-rows", "300", "--no-progress"]

    assert main(["convert", source, remote, *convert, "--scheduler", cluster]) == 0
    assert f"joined the Dask cluster at {cluster}" in capsys.readouterr().err
    assert main(["convert", str(folder), local, *convert]) == 0
    assert "started a local Dask cluster" in capsys.readouterr().err
    assert main(["info", remote]) == 0
    assert main(["verify", remote, "--scheduler", cluster, "--no-progress"]) == 0
    assert "every band matches" in capsys.readouterr().out

    fit = ["--target", "test", "--targets", "0:10", "--target-batch", "4", "--lambdas", "6", "--no-progress"]
    assert main(["fit", remote, *fit, "--scheduler", cluster]) == 0
    assert main(["fit", local, *fit]) == 0  # in this process
    ours, theirs = dmstore.read_datamodels(remote, "test"), dmstore.read_datamodels(local, "test")
    np.testing.assert_array_equal(ours["weight"].values, theirs["weight"].values)
    np.testing.assert_array_equal(ours["bias"].values, theirs["bias"].values)

    scored = dmstore.evaluate(remote, "test", scheduler=cluster, write=False, progress=False)
    expected = dmstore.evaluate(local, "test", write=False, progress=False)
    assert scored.attrs["lds"] == pytest.approx(expected.attrs["lds"], abs=1e-6)
    summary = dmstore.stats(remote, models="all", scheduler=cluster, progress=False)
    reference = dmstore.stats(local, models="all", progress=False)
    for name in reference.data_vars:
        np.testing.assert_allclose(summary[name].values, reference[name].values, rtol=1e-12, equal_nan=True)
    top = dmstore.open(remote).dm.top_influencers(test=3, k=5)
    same = dmstore.open(local).dm.top_influencers(test=3, k=5)
    assert top.sizes == same.sizes and set(top.variables) == set(same.variables)
    for name in same.variables:
        if same[name].dtype.kind == "f":
            np.testing.assert_allclose(top[name].values, same[name].values, atol=1e-6)
        else:
            np.testing.assert_array_equal(top[name].values, same[name].values)


def test_a_cluster_whose_workers_cannot_hold_a_task_is_refused(tmp_path):
    folder = tmp_path / "source"
    write_layout(folder, models=600, n_train=100_000, n_test=10, seed=1)  # 100 MB mask bands
    write_layout(tmp_path / "narrow", models=300, n_train=50, n_test=10, seed=2)
    dest, narrow = str(tmp_path / "wide.zarr"), str(tmp_path / "narrow.zarr")
    dmstore.convert(str(tmp_path / "narrow"), narrow, "toy", 50, eval_rows=100, scheduler="local", progress=False)
    small_workers = "workers have 300 MiB each but one task of this job needs"
    # the worker runs in this process, whose memory it would count: it only reports its limit
    unmanaged = {f"distributed.worker.memory.{k}": False for k in ("target", "spill", "pause", "terminate")}
    with (
        dask.config.set(unmanaged),
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, memory_limit="300MiB", **LOOPBACK
        ) as small,
        Client(small, set_as_default=False) as client,  # the test process itself is over 300 MiB
    ):
        with pytest.raises(dmstore.DmstoreError, match=small_workers):
            dmstore.convert(str(folder), dest, "toy", 50, eval_rows=100, arrays=("masks",), scheduler=client,
                            progress=False)
        with pytest.raises(dmstore.DmstoreError, match="unfinished conversion"):
            dmstore.verify(dest, progress=False)
        with pytest.raises(dmstore.DmstoreError, match=small_workers):  # a block of the solver: 450 MiB at least
            dmstore.fit(narrow, scheduler=client, progress=False)
        assert "moments" not in zarr.open_group(narrow, mode="r")  # refused before its statistics pass
        dmstore.convert(str(folder), dest, "toy", 50, eval_rows=100, arrays=("masks",), progress=False)
        with pytest.raises(dmstore.DmstoreError, match=small_workers):  # a band of 100,000 examples
            dmstore.stats(dest, scheduler=client, progress=False)
        assert dmstore.stats(narrow, scheduler=client, progress=False).attrs["n_models"] == 300


def listening(process: psutil.Process) -> set[str]:
    """The addresses that ``process`` and its children listen on."""
    found = set()
    for p in (process, *process.children(recursive=True)):
        try:
            found |= {c.laddr.ip for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:  # exited between the listing and the reading
            continue
    return found


def test_every_server_of_a_local_cluster_listens_on_this_machine_only(cluster):
    """The schedulers, workers and their HTTP servers (kept without a dashboard) of both kinds of
    local cluster, and the test cluster's processes, listen on loopback only: one in-process
    worker once listened on every interface."""
    for scheduler, threads in ((None, True), ("local", False)):
        with dask_client(scheduler, n_workers=1, threads=threads):
            assert listening(psutil.Process()) == {"127.0.0.1"}, scheduler
