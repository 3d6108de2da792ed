"""Flaky S3: dropped connections, delays, 500/503 SlowDown and truncated bodies between dmstore
and the S3 server. The conversion retries with backoff and ends identical; a persistent failure
stops with one clear line and leaves a store that resumes."""

from __future__ import annotations

import re

import numpy as np
import pytest
import xarray as xr
from conftest import upload, write_layout
from dmstore.conversion.convert import convert
from faulty_proxy import FAULTS, FaultyProxy

from dmstore.cli import main
from dmstore.errors import DmstoreError
from dmstore.io.source import MAX_BACKOFF, Source, is_transient

BUCKET = "flaky-bucket"
#: Seconds before a first retry here (dmstore's default is 0.25): the faults come every other request.
BACKOFF = 0.01
# how each fault reads in dmstore's retry warnings
KINDS = {
    "drop": "ConnectionClosedError",
    "500": "InternalError",
    "503": "request rate",
    "truncate": "ClientPayloadError",
}


@pytest.fixture(scope="module")
def flaky_source(s3_client, tmp_path_factory):
    root = tmp_path_factory.mktemp("flaky") / "source"
    arrays = write_layout(root, models=9000, n_train=600, n_test=200, seed=7)
    upload(s3_client, root, bucket=BUCKET)
    return arrays


def test_conversion_survives_faults(flaky_source, s3_endpoint, tmp_path, capfd):
    with FaultyProxy(s3_endpoint, rate=0.5, seed=1) as proxy:
        # every other read fails: 16 retries make a read failing every try a 1-in-130,000 event
        source = Source(f"s3://{BUCKET}", endpoint_url=proxy.url, retries=16, backoff=BACKOFF)
        convert(source, str(tmp_path / "s.zarr"), "toy", 50, eval_rows=1000, progress=False)
    assert set(proxy.injected) == set(FAULTS) and sum(proxy.injected.values()) >= 8, proxy.injected
    # dmstore is the one retry layer (botocore and s3fs try once): every 500, 503 and truncated
    # body is one retry of dmstore's own, logged by the process that made it. A dropped connection
    # is retried once by aiohttp itself (a pooled connection gone stale) and reaches dmstore only
    # when that second request fails too; a short delay is no failure.
    retries = [line for line in capfd.readouterr().err.splitlines() if re.search(r"retry \d+ of \d+", line)]
    seen = {kind: sum(text in line for line in retries) for kind, text in KINDS.items()}
    exact = ("500", "503", "truncate")
    assert {k: seen[k] for k in exact} == {k: proxy.injected[k] for k in exact}, (retries, proxy.injected)
    assert seen["drop"] <= proxy.injected["drop"] and len(retries) == sum(seen.values()), (retries, proxy.injected)
    # each retry waits twice as long as the one before it
    waits = {(int(m[1]), float(m[2])) for m in (re.search(r"retry (\d+) of \d+ in ([\d.]+) s", r) for r in retries)}
    assert waits and all(wait == round(min(MAX_BACKOFF, BACKOFF * 2 ** (n - 1)), 2) for n, wait in waits), waits
    ds = xr.open_zarr(tmp_path / "s.zarr", zarr_format=3)
    for name, array in flaky_source.items():
        np.testing.assert_array_equal(ds[name].values, array)


def test_persistent_failure_stops_clearly_and_resumes(flaky_source, s3_endpoint, tmp_path):
    dest = tmp_path / "s.zarr"
    # the headers and a few bands come through, then S3 fails for good
    with FaultyProxy(s3_endpoint, rate=1.0, healthy_first=8, faults=("503", "drop", "truncate")) as proxy:
        source = Source(f"s3://{BUCKET}", endpoint_url=proxy.url, retries=2, backoff=BACKOFF)
        with pytest.raises(DmstoreError) as failure:
            convert(source, str(dest), "toy", 50, eval_rows=1000, progress=False)
    message = str(failure.value)
    assert failure.value.exit_code == 1 and "\n" not in message
    assert "failed 3 times" in message and "run the same command again to resume" in message
    recorded = list(dest.glob("_dmstore/bands/*/*.json"))
    assert 0 < len(recorded) < 15  # some bands done, none of the failed ones recorded
    argv = [
        "convert",
        f"s3://{BUCKET}",
        str(dest),
        "--dataset",
        "toy",
        "--pct",
        "50",
        "--eval-rows",
        "1000",
        "--no-progress",
    ]
    assert main([*argv, "--endpoint-url", s3_endpoint]) == 0  # healthy again: the resume finishes
    ds = xr.open_zarr(dest, zarr_format=3)
    for name, array in flaky_source.items():
        np.testing.assert_array_equal(ds[name].values, array)


def _client_error(code: str, status: int) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


def _translated(error: Exception) -> OSError:
    """``error`` as s3fs hands it on (an OSError raised from it)."""
    try:
        raise OSError(5, str(error)) from error
    except OSError as exc:
        return exc


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (_client_error("SlowDown", 503), True),
        (_translated(_client_error("InternalError", 500)), True),
        (_client_error("NoSuchKey", 404), False),
        (_client_error("AccessDenied", 403), False),
        (_translated(_client_error("InvalidRange", 416)), False),
        (ValueError("a bug"), False),
        (TypeError("a bug"), False),
    ],
)
def test_only_named_transient_failures_are_retried(error, transient, tmp_path, capfd):
    assert is_transient(error) is transient
    source = Source(str(tmp_path), retries=2, backoff=BACKOFF)
    calls = []

    def failing() -> bytes:
        calls.append(1)
        raise error

    with pytest.raises((DmstoreError, ValueError, TypeError)):
        source.retrying("k", failing)
    assert len(calls) == (3 if transient else 1)
    # a wait before each retry, none after the last try
    waits = re.findall(r"retry \d of 2 in ([\d.]+ s)", capfd.readouterr().err)
    assert waits == (["0.01 s", "0.02 s"] if transient else [])
