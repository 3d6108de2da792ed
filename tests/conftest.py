"""Shared fixtures: a real S3 server (moto) on loopback, and sources in the published layout."""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
from pathlib import Path

import boto3
import numpy as np
import pytest
from filelock import FileLock
from hypothesis import settings
from moto.server import ThreadedMotoServer

BUCKET = "madrylab-datamodels"

# examples are drawn as fast as the machine allows: with two pytest-xdist workers on two cores a
# draw's time says nothing about the code
settings.register_profile("dmstore", deadline=None)
settings.load_profile("dmstore")


#: The longest units of work, started first (in this order) so that no pytest-xdist worker is
#: left alone with one at the end: the memory test, then the docs pages. The memory test first:
#: every docs page waits for the shared example, which one worker trains (on threads, not two
#: cores' worth), and the other worker spends that time on the memory test, which needs no example.
LONGEST_FIRST = ("test_memory.py", "test_docs.py")


#: Environment variables that set the threads of the BLAS and OpenMP libraries of a new process.
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def pytest_configure(config):
    """Under pytest-xdist, each worker's BLAS and OpenMP get its share of the cores, in the worker
    and in every process it starts (as scikit-learn's suite does): two workers on two cores with
    two BLAS threads each spent a fifth of the suite's CPU time in BLAS threads waiting for work
    (measured: 393 s of CPU against 489 s, the same tests). What dmstore plans from the core count
    is unchanged: its solver and Dask threads still run, each with one BLAS thread."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers is None:
        return
    from threadpoolctl import threadpool_limits

    share = max(1, (os.cpu_count() or 1) // int(workers))
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(share))
    threadpool_limits(int(os.environ["OPENBLAS_NUM_THREADS"]))


def pytest_collection_modifyitems(config, items):
    """The :data:`LONGEST_FIRST` files first (``--no-loadscope-reorder`` keeps this order)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile``, but each docs page is a unit of work of its own: a test file is one
    unit (its module fixtures are built once), and the pages, the longest units, spread over the
    workers."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class FileOrDocsPage(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return nodeid if file.endswith("test_docs.py") else file

    return FileOrDocsPage(config, log)


#: A LocalCluster's servers on this machine only: its scheduler's and its workers' HTTP servers,
#: which run without a dashboard too, listen on every interface unless told.
LOOPBACK = {"dashboard_address": "127.0.0.1:0", "worker_dashboard_address": "127.0.0.1:0"}


#: stderr lines that are logs, not errors: the Dask dashboard link, moto's request log.
LOG_LINES = ("dmstore: started a local Dask cluster", "dmstore: joined the Dask cluster", "127.0.0.1 - - [")


def dead_pid() -> int:
    """The pid of a process that has exited (the owner of a lock or temporary left by a crash)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def error_lines(err: str) -> list[str]:
    """The lines of ``err`` that are not logs (a failed command must print exactly one)."""
    return [line for line in err.strip().splitlines() if not line.startswith(LOG_LINES)]


def fresh_stderr(capsys) -> None:
    """Drop what this test's stderr holds so far, after collecting garbage: a Dask cluster an
    earlier test in this process closed can leave a timed-out tornado future, whose exception
    asyncio logs ("Future exception was never retrieved") when the future is collected, seen
    once in CI-like runs inside the next command's captured stderr."""
    gc.collect()
    capsys.readouterr()


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1; the AWS environment points at it (Dask workers inherit it)."""
    # werkzeug would log each request through a handler bound to the stderr of the test that
    # made the first request, which pytest closes afterwards: keep its request log quiet
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3")
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=endpoint,
    )
    yield endpoint
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture(scope="session")
def s3_client(s3_endpoint):
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


def write_layout(
    root: Path,
    dataset: str = "toy",
    pct: int = 50,
    models: int = 5000,
    n_train: int = 700,
    n_test: int = 300,
    seed: int = 0,
    logits: bool = False,
) -> dict[str, np.ndarray]:
    """Write matrices in the bucket's layout under ``root``; return them by store name."""
    rng = np.random.default_rng(seed)

    def drawn(shape: tuple[int, ...], dtype: type, draw) -> np.ndarray:
        """``draw(rows)`` for 1,024 rows at a time (the same stream as one draw of all rows; small
        temporaries, used again: a fresh float32 array of all rows cost as much in page faults)."""
        out = np.empty(shape, dtype=dtype)
        for start in range(0, shape[0], 1024):
            out[start : start + 1024] = draw((min(1024, shape[0] - start), *shape[1:]))
        return out

    def normal(*shape: int) -> np.ndarray:  # drawn in float32: twice as fast as float64
        return drawn(shape, np.float16, lambda part: rng.standard_normal(part, dtype=np.float32))

    arrays = {
        "train_masks": drawn((models, n_train), bool, lambda part: rng.random(part, dtype=np.float32) < pct / 100),
        "train_margins": normal(models, n_train),
        "test_margins": normal(models, n_test),
    }
    if logits:
        arrays["train_logits"] = normal(models, n_train, 10)
        arrays["test_logits"] = normal(models, n_test, 10)
    folder = root / dataset / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        np.save(folder / f"{name}_{pct}pct.npy", array)
    return arrays


def upload(s3_client, root: Path, bucket: str = BUCKET) -> str:
    """Upload a local layout folder into ``bucket`` (created if needed); return ``s3://bucket``."""
    existing = {b["Name"] for b in s3_client.list_buckets()["Buckets"]}
    if bucket not in existing:
        s3_client.create_bucket(Bucket=bucket)
    for path in root.rglob("*"):
        if path.is_file():
            s3_client.upload_file(str(path), bucket, path.relative_to(root).as_posix())
    return f"s3://{bucket}"


@pytest.fixture
def layout(tmp_path):
    """A small random source in the published layout on local disk, and its matrices."""
    root = tmp_path / "source"
    return root, write_layout(root)


#: The real example the tests and the docs share, trained once per run (``dmstore example digits
#: OUT --models 1200 --eval-models 240 --replicates 4``): 1,200 fit models and 60 evaluation masks
#: trained 4 times each.
EXAMPLE = {"models": 1200, "eval_models": 240, "replicates": 4}


@pytest.fixture(scope="session", autouse=True)
def example_cache(tmp_path_factory):
    """One cache of finished examples for the run (``DMSTORE_EXAMPLE_CACHE``, shared by pytest-xdist
    workers): the docs' ``dmstore example`` commands, the demo and :func:`shared_example` train
    each example once."""
    root = tmp_path_factory.getbasetemp()
    cache = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "example-cache"
    saved = os.environ.get("DMSTORE_EXAMPLE_CACHE")
    os.environ["DMSTORE_EXAMPLE_CACHE"] = str(cache)
    yield cache
    if saved is None:
        os.environ.pop("DMSTORE_EXAMPLE_CACHE")
    else:
        os.environ["DMSTORE_EXAMPLE_CACHE"] = saved


def shared_example(out: Path) -> Path:
    """The shared example (:data:`EXAMPLE`) in ``out``, copied from the run's cache once trained
    (one pytest-xdist worker trains, the other waits); returns ``out/digits``."""
    from dmstore.experiment.example import make_example

    cache = Path(os.environ["DMSTORE_EXAMPLE_CACHE"])
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(cache / ".lock"):
        return make_example(out, "digits", pct=50, **EXAMPLE, progress=False, cache=cache)


@pytest.fixture(scope="session")
def example_source(tmp_path_factory) -> Path:
    """The shared real example (``dmstore example``) in the published layout: its root folder."""
    out = tmp_path_factory.mktemp("example")
    shared_example(out)
    return out
