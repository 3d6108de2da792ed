"""Flaky S3: dropped connections, delays, 500/503 SlowDown and truncated bodies between dmstore
and the S3 server. The conversion retries with backoff and ends identical; a persistent failure
stops with one clear line and leaves a store that resumes."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from conftest import upload, write_layout
from dmstore.conversion.convert import convert
from faulty_proxy import FAULTS, FaultyProxy

from dmstore.cli import main
from dmstore.errors import DmstoreError
from dmstore.io.source import Source

BUCKET = "flaky-bucket"


@pytest.fixture(scope="module")
def flaky_source(s3_client, tmp_path_factory):
    root = tmp_path_factory.mktemp("flaky") / "source"
    arrays = write_layout(root, models=9000, n_train=600, n_test=200, seed=7)
    upload(s3_client, root, bucket=BUCKET)
    return arrays


def test_conversion_survives_faults(flaky_source, s3_endpoint, tmp_path):
    with FaultyProxy(s3_endpoint, rate=0.5, seed=1) as proxy:
        source = Source(f"s3://{BUCKET}", endpoint_url=proxy.url)
        convert(source, str(tmp_path / "s.zarr"), "toy", 50, eval_rows=1000, progress=False)
    assert set(proxy.injected) == set(FAULTS) and sum(proxy.injected.values()) >= 8, proxy.injected
    ds = xr.open_zarr(tmp_path / "s.zarr", zarr_format=3)
    for name, array in flaky_source.items():
        np.testing.assert_array_equal(ds[name].values, array)


def test_persistent_failure_stops_clearly_and_resumes(flaky_source, s3_endpoint, tmp_path):
    dest = tmp_path / "s.zarr"
    # the headers and a few bands come through, then S3 fails for good
    with FaultyProxy(s3_endpoint, rate=1.0, healthy_first=8, faults=("503", "drop", "truncate")) as proxy:
        source = Source(f"s3://{BUCKET}", endpoint_url=proxy.url, retries=2)
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
