"""dmstore convert: exact values, S3 (moto on loopback), requester pays on the wire, bad input."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import time

import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import BUCKET, EXAMPLE, dead_pid, error_lines, fresh_stderr, upload, write_layout
from dmstore.conversion.convert import convert
from dmstore.conversion.verify import verify

import dmstore
from dmstore.cli import main
from dmstore.errors import DmstoreError
from dmstore.io.source import Source


def assert_store_equals(path, arrays: dict[str, np.ndarray], rows=slice(None)):
    ds = xr.open_zarr(path, zarr_format=3)  # plain xarray, no dmstore needed
    for name, array in arrays.items():
        assert ds[name].dtype == array.dtype
        np.testing.assert_array_equal(ds[name].values, array[rows])


def test_local_folder_exact_and_labelled(layout, tmp_path):
    root, arrays = layout
    dest = str(tmp_path / "toy.zarr")
    convert(str(root), dest, "toy", 50, eval_rows=1000, progress=False)
    assert_store_equals(dest, arrays)
    ds = dmstore.open(dest)
    assert ds.train_masks.dims == ("model", "train") and ds.test_margins.dims == ("model", "test")
    assert list(ds.split.values[:4000]) == ["fit"] * 4000 and set(ds.split.values[4000:]) == {"eval"}
    np.testing.assert_array_equal(ds.model.values, np.arange(5000))
    # Dask chunks are whole shards
    assert ds.train_masks.chunks[0][0] == zarr.open_array(dest, path="train_masks").shards[0]
    assert ds.attrs["dataset"] == "toy" and ds.attrs["pct"] == 50 and ds.attrs["dmstore_status"] == "complete"
    assert set(ds.attrs["dmstore_bands"]) == set(arrays)
    assert verify(dest, progress=False) == []
    assert verify(dest, source=str(root), progress=False) == []


def test_model_range_and_logits(tmp_path):
    root = tmp_path / "source"
    arrays = write_layout(root, models=3000, n_train=300, n_test=200, logits=True)
    dest = str(tmp_path / "part.zarr")
    convert(
        str(root),
        dest,
        "toy",
        50,
        arrays=("masks", "margins", "logits"),
        models="700:2900",
        eval_rows=500,
        progress=False,
    )
    assert_store_equals(dest, arrays, slice(700, 2900))
    ds = dmstore.open(dest)
    np.testing.assert_array_equal(ds.model.values, np.arange(700, 2900))
    assert int((ds.split == "eval").sum()) == 400  # rows 2500:2900 of the evaluation rows 2500:3000
    assert ds.train_logits.dims == ("model", "train", "class")
    assert list(ds["class"].values) == [str(c) for c in range(arrays["train_logits"].shape[2])]
    assert_tensorstore_reads(dest)


def assert_tensorstore_reads(dest: str) -> None:
    """Another Zarr v3 implementation (tensorstore, C++) reads every array and coordinate of the
    store as zarr-python does: only data types and codecs the spec defines are used."""
    import tensorstore as ts

    root = zarr.open_group(dest, mode="r")
    names = sorted(name for name, _ in root.arrays())
    assert {"train_masks", "train_logits", "split", "class", "model"} <= set(names)
    for name in names:
        spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{dest}/{name}/"}}
        np.testing.assert_array_equal(ts.open(spec, open=True).result().read().result(), root[name][...])
    # the labels of the codes, CF's way
    assert root["split"].attrs["flag_meanings"] == "fit eval" and root["split"].dtype == np.uint8


def test_s3_source_on_a_local_cluster(s3_client, tmp_path):
    root = tmp_path / "source"
    arrays = write_layout(root, dataset="cifar", models=10_500, n_train=400, n_test=100)
    url = upload(s3_client, root)
    dest = str(tmp_path / "cifar.zarr")
    # worker processes, each reading S3 with a filesystem of its own
    convert(url, dest, "cifar", 50, progress=False, scheduler="local")  # catalogued: the last 10,000 rows evaluate
    assert_store_equals(dest, arrays)
    assert int((dmstore.open(dest).split == "fit").sum()) == 500
    assert dmstore.open(dest).attrs["source_files"] == {
        f"s3://{BUCKET}/cifar/data/{name}_50pct.npy": os.path.getsize(root / f"cifar/data/{name}_50pct.npy")
        for name in arrays
    }


def test_requester_pays_header_on_the_wire(s3_client, tmp_path):
    root = tmp_path / "source"
    write_layout(root, dataset="rp", models=50, n_train=20, n_test=10)
    upload(s3_client, root)
    seen = []

    def record(request, **_):
        seen.append(request.headers.get("x-amz-request-payer"))

    for pays, expected in ((None, b"requester"), (False, None)):  # published bucket: on by default
        source = Source(f"s3://{BUCKET}", requester_pays=pays)
        source.fs.connect()
        source.fs.s3.meta.events.register("before-send.s3", record)
        seen.clear()
        header = source.header("rp/data/train_masks_50pct.npy")
        source.read("rp/data/train_masks_50pct.npy", header.offset, header.offset + header.row_bytes)
        assert seen and all(value == expected for value in seen)


def test_a_store_on_s3_is_read_without_asking_for_zarr_v2_metadata(s3_client):
    # zarr looks for .zgroup, .zattrs and .zmetadata beside zarr.json unless told the format: on S3
    # each missing key costs a HEAD and a listing (six requests per group opened)
    s3_client.create_bucket(Bucket="zarr-v3-only")
    url = "s3://zarr-v3-only/run.zarr"
    dmstore.create(url, train=30, test=10, models=20, eval_models=4)
    requests: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: requests.append(record.getMessage())  # type: ignore[method-assign]
    server_log = logging.getLogger("werkzeug")
    level = server_log.level
    server_log.addHandler(handler)
    server_log.setLevel(logging.INFO)
    try:
        dmstore.open(url).load()
        assert main(["info", url]) == 0
    finally:
        server_log.removeHandler(handler)
        server_log.setLevel(level)
    assert any("/run.zarr/zarr.json" in line for line in requests)
    assert not [line for line in requests if any(name in line for name in (".zgroup", ".zattrs", ".zmetadata"))]


def test_resume_skips_recorded_bands_and_repairs_a_forgotten_one(layout, tmp_path):
    root, arrays = layout
    dest = tmp_path / "toy.zarr"
    convert(str(root), str(dest), "toy", 50, eval_rows=1000, progress=False)
    records = sorted((dest / "_dmstore/bands/train_margins").iterdir())
    stamp = {p: p.stat().st_mtime_ns for p in records}
    # damage one band's shard and forget its record: a resume rewrites exactly that band
    shard = sorted((dest / "train_margins/c").rglob("*"))[-1]
    shard.write_bytes(b"\0" * shard.stat().st_size)
    assert records[-1].name == "4096-5000.json" and shard.relative_to(dest).parts[-2:] == ("2", "0")
    records[-1].unlink()
    convert(str(root), str(dest), "toy", 50, eval_rows=1000, progress=False)
    assert_store_equals(str(dest), arrays)
    assert all(p.stat().st_mtime_ns == stamp[p] for p in records[:-1])


def test_a_record_cut_short_counts_as_none(layout, tmp_path):
    # an empty record, as a full disk left one before records were written whole: the same
    # command does not trust its band, writes it again and records it whole
    root, arrays = layout
    dest = tmp_path / "toy.zarr"
    convert(str(root), str(dest), "toy", 50, eval_rows=1000, progress=False)
    record = dest / "_dmstore/bands/train_margins/4096-5000.json"
    whole = record.read_bytes()
    record.write_bytes(b"")
    convert(str(root), str(dest), "toy", 50, eval_rows=1000, progress=False)
    assert record.read_bytes() == whole
    assert_store_equals(str(dest), arrays)
    assert not list(dest.glob("_dmstore/bands/*/.*.tmp"))  # no temporary left beside the records


@pytest.mark.parametrize("damage", ["flip", "delete", "truncate"])
def test_corruption_is_detected_named_and_repaired(layout, tmp_path, capsys, damage):
    root, arrays = layout
    dest = tmp_path / "toy.zarr"
    convert(str(root), str(dest), "toy", 50, eval_rows=1000, progress=False)
    shard = dest / "test_margins/c/1/0"  # models 2048:4096
    raw = bytearray(shard.read_bytes())
    if damage == "flip":
        raw[len(raw) // 3] ^= 0x5A
        shard.write_bytes(raw)
    elif damage == "delete":
        shard.unlink()
    else:
        shard.write_bytes(raw[: len(raw) // 2])
    if damage != "delete":  # reading damaged data fails loudly instead of returning wrong numbers
        with pytest.raises(Exception, match="checksum|Checksum|decompress|index|size"):
            dmstore.open(str(dest)).test_margins.compute()
    assert main(["verify", str(dest), "--no-progress"]) == 1
    assert "DAMAGED test_margins models 2048:4096" in capsys.readouterr().out
    convert(str(root), str(dest), "toy", 50, eval_rows=1000, progress=False)  # resume repairs from the source
    assert_store_equals(str(dest), arrays)
    assert verify(str(dest), progress=False) == []


def test_a_second_convert_into_a_busy_store_refuses(layout, tmp_path, capsys):
    from dmstore.io.lock import store_lock

    root, _ = layout
    dest = tmp_path / "busy.zarr"
    with store_lock(str(dest), "convert", "dmstore convert toy 50%"):
        err = cli_error(capsys, convert_args(root, dest))
    assert "is busy: dmstore convert toy 50%" in err
    assert not (dest / "zarr.json").exists()
    convert(str(root), str(dest), "toy", 50, eval_rows=1000, progress=False)  # the lock was released


def test_a_stale_lock_is_taken_over(layout, tmp_path):
    root, arrays = layout
    dest = tmp_path / "stale.zarr"
    dead = dead_pid()
    (dest / "_dmstore/locks").mkdir(parents=True)
    lock = {
        "host": socket.gethostname(),
        "pid": dead,
        "token": "x",
        "what": "crashed",
        "heartbeat": time.time(),
    }
    (dest / "_dmstore/locks/convert.0.json").write_text(json.dumps(lock))
    convert(str(root), str(dest), "toy", 50, eval_rows=1000, progress=False)
    assert_store_equals(str(dest), arrays)
    assert not list((dest / "_dmstore/locks").iterdir())  # the stale lock and its successor are gone


def test_dry_run_reads_no_data_and_writes_nothing(layout, tmp_path, capsys):
    root, _ = layout
    dest = tmp_path / "dry.zarr"
    assert (
        main(["convert", str(root), str(dest), "--dataset", "toy", "--pct", "50", "--eval-rows", "1000", "--dry-run"])
        == 0
    )
    out = capsys.readouterr().out
    assert "train_masks" in out and "store about" in out and "dry run" in out
    assert not dest.exists()


def test_dry_run_prices_s3(s3_client, tmp_path, capsys):
    root = tmp_path / "source"
    write_layout(root, dataset="cifar", models=10_001, n_train=10, n_test=5)
    url = upload(s3_client, root)
    assert main(["convert", url, str(tmp_path / "x.zarr"), "--dataset", "cifar", "--pct", "50", "--dry-run"]) == 0
    assert "AWS cost about $" in capsys.readouterr().out


def test_datamodels_round_trip_through_pt(layout, tmp_path):
    torch = pytest.importorskip("torch")
    root, _ = layout
    rng = np.random.default_rng(1)
    published = {
        "weight": torch.from_numpy(rng.standard_normal((700, 300)).astype(np.float32)),
        "bias": torch.from_numpy(rng.standard_normal(300).astype(np.float32)),
        "lam": torch.from_numpy(rng.random(300).astype(np.float32)),
    }
    (root / "toy/datamodels").mkdir()
    torch.save(published, root / "toy/datamodels/test_50pct.pt")
    dest = str(tmp_path / "dm.zarr")
    convert(str(root), dest, "toy", 50, arrays=("masks", "datamodels"), eval_rows=1000, progress=False)
    dm = dmstore.read_datamodels(dest, "test")
    np.testing.assert_array_equal(dm.weight.values, published["weight"].numpy())
    out = tmp_path / "out.pt"
    assert main(["export", dest, str(out), "--target", "test"]) == 0
    again = torch.load(out, weights_only=True)
    for key in ("weight", "bias", "lam"):
        assert again[key].dtype == published[key].dtype
        assert torch.equal(again[key], published[key])


# ---- bad input: one clear line, exit code 2, nothing trusted left behind ----


def cli_error(capsys, argv) -> str:
    fresh_stderr(capsys)
    code = main(argv)
    lines = error_lines(capsys.readouterr().err)
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("dmstore: error: ") and "Traceback" not in lines[0]
    return lines[0]


def convert_args(root, dest, *extra):
    return [
        "convert",
        str(root),
        str(dest),
        "--dataset",
        "toy",
        "--pct",
        "50",
        "--eval-rows",
        "1000",
        "--no-progress",
        *extra,
    ]


def test_missing_key(layout, tmp_path, capsys):
    root, _ = layout
    (root / "toy/data/test_margins_50pct.npy").unlink()
    err = cli_error(capsys, convert_args(root, tmp_path / "d.zarr"))
    assert "test_margins_50pct.npy does not exist" in err
    assert not (tmp_path / "d.zarr").exists()


def test_wrong_bucket(s3_endpoint, tmp_path, capsys):
    err = cli_error(capsys, convert_args("s3://no-such-bucket-here", tmp_path / "d.zarr"))
    assert "does not exist" in err


def test_no_credentials(s3_endpoint, layout, tmp_path, capsys, monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    err = cli_error(capsys, convert_args(f"s3://{BUCKET}", tmp_path / "d.zarr"))
    assert "no AWS credentials" in err


@pytest.mark.parametrize(
    ("name", "array", "message"),
    [
        ("train_masks", np.zeros((5000, 700), dtype=bool, order="F"), "Fortran-ordered"),
        ("train_margins", np.zeros((5000, 700), dtype=np.float32), "dtype float32"),
        ("test_margins", np.zeros((5000,), dtype=np.float16), "expected 2 dimensions"),
        ("train_margins", np.zeros((4999, 700), dtype=np.float16), "different numbers of models"),
    ],
)
def test_bad_matrices(layout, tmp_path, capsys, name, array, message):
    root, _ = layout
    np.save(root / f"toy/data/{name}_50pct.npy", array)
    err = cli_error(capsys, convert_args(root, tmp_path / "d.zarr"))
    assert message in err
    assert not (tmp_path / "d.zarr").exists()


def test_truncated_npy(layout, tmp_path, capsys):
    root, _ = layout
    path = root / "toy/data/train_margins_50pct.npy"
    os.truncate(path, path.stat().st_size - 1000)
    assert "is truncated" in cli_error(capsys, convert_args(root, tmp_path / "d.zarr"))


def test_destination_holding_another_dataset(layout, tmp_path, capsys):
    root, _ = layout
    dest = tmp_path / "d.zarr"
    convert(str(root), str(dest), "toy", 50, eval_rows=1000, progress=False)
    before = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    other = tmp_path / "other"
    write_layout(other, dataset="toy", pct=20, models=100, n_train=700, n_test=300)
    err = cli_error(capsys, ["convert", str(other), str(dest), "--dataset", "toy", "--pct", "20", "--eval-rows", "10"])
    assert "already holds toy 50%" in err
    assert {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()} == before  # nothing the user had is lost


def test_destination_that_is_not_a_store(layout, tmp_path, capsys):
    root, _ = layout
    dest = tmp_path / "precious"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    assert "is not a dmstore store" in cli_error(capsys, convert_args(root, dest))
    assert (dest / "notes.txt").read_text() == "mine"


def test_unfinished_store_is_not_trusted(layout, tmp_path):
    root, _ = layout
    dest = tmp_path / "d.zarr"
    convert(str(root), str(dest), "toy", 50, eval_rows=1000, progress=False)
    meta = json.loads((dest / "zarr.json").read_text())
    meta["attributes"]["dmstore_status"] = "converting"
    (dest / "zarr.json").write_text(json.dumps(meta))
    shutil.rmtree(dest / "_dmstore")
    with pytest.raises(DmstoreError, match="unfinished conversion"):
        verify(str(dest), progress=False)


def test_real_example_through_s3_with_logits(example_source, s3_client, tmp_path):
    url = upload(s3_client, example_source, bucket="example-bucket")
    dest = str(tmp_path / "digits.zarr")
    # the example recorded its evaluation models: no --eval-rows needed
    convert(url, dest, "digits", 50, arrays=("masks", "margins", "logits"), progress=False)
    ds = dmstore.open(dest)
    for name in ("train_masks", "train_margins", "test_margins", "train_logits", "test_logits"):
        np.testing.assert_array_equal(ds[name].values, np.load(example_source / f"digits/data/{name}_50pct.npy"))
    n_eval = EXAMPLE["eval_models"]
    assert int((ds.split == "eval").sum()) == n_eval and set(ds.split.values[-n_eval:]) == {"eval"}
    assert verify(dest, source=url, progress=False) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs (needs root; skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


def test_full_disk_stops_clearly_and_resumes(layout, small_disk, capsys):
    root, arrays = layout
    dest = small_disk / "d.zarr"
    fresh_stderr(capsys)
    assert main(convert_args(root, dest)) == 1
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("dmstore: error: ") and "is full" in err[0]
    assert dmstore_status(dest) == "converting"  # not trusted as done
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    assert main(convert_args(root, dest)) == 0
    assert_store_equals(str(dest), arrays)


def dmstore_status(dest) -> str:
    return json.loads((dest / "zarr.json").read_text())["attributes"]["dmstore_status"]
