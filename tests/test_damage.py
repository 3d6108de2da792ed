"""Never compute on damaged data: each analysis refuses a missing shard and a flipped byte with one line.

A real store (``dmstore example`` -> ``dmstore convert``) is damaged in a shard every analysis reads
(the last shard row-block holds fit and evaluation rows); each command must exit non-zero with one
line naming the array and the model rows and pointing to ``dmstore verify`` / ``dmstore convert``,
and must write no result into the store.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import error_lines, fresh_stderr

import dmstore
from dmstore.cli import main


@pytest.fixture(scope="module")
def converted(example_source, tmp_path_factory):
    path = tmp_path_factory.mktemp("damage") / "digits.zarr"
    dmstore.convert(str(example_source), str(path), "digits", 50, progress=False, max_memory="1GB")
    dmstore.fit(str(path), targets=slice(0, 8), lambdas=20, progress=False)  # for evaluate and the accessor
    return path


def last_shard(store: Path, name: str) -> Path:
    blocks = sorted((store / name / "c").iterdir(), key=lambda p: int(p.name))
    return blocks[-1] / "0"


def damage(store: Path, name: str, how: str) -> None:
    shard = last_shard(store, name)
    if how == "deleted":
        shard.unlink()
    else:
        data = bytearray(shard.read_bytes())
        data[200] ^= 0x01  # inside the first inner chunk's compressed bytes
        shard.write_bytes(bytes(data))


COMMANDS = {
    "fit": (["fit", "--targets", "0:8", "--lambdas", "10", "--overwrite", "--recompute"], "datamodels/test"),
    "evaluate": (["evaluate", "--no-plot"], "evaluation/test"),
    "stats": (["stats", "--no-plot", "--out", "{out}"], None),
}


@pytest.mark.parametrize("how", ["deleted", "flipped"])
@pytest.mark.parametrize("array", ["train_masks", "test_margins"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_analysis_refuses_damaged_data_in_one_line(converted, tmp_path, capsys, command, array, how):
    store = tmp_path / "store.zarr"
    shutil.copytree(converted, store)
    args, result_group = COMMANDS[command]
    before = {p.relative_to(store) for p in store.rglob("*") if result_group and p.is_relative_to(store / result_group)}
    damage(store, array, how)
    out = tmp_path / "stats.zarr"
    argv = [args[0], str(store), *[a.replace("{out}", str(out)) for a in args[1:]], "--no-progress"]
    fresh_stderr(capsys)
    code = main(argv)
    err = error_lines(capsys.readouterr().err)
    assert code != 0
    assert len(err) == 1 and err[0].startswith("dmstore: error: ")
    assert f"{array} is damaged for models" in err[0] and "dmstore verify" in err[0]
    if result_group:  # nothing new was written where the result would go
        after = {p.relative_to(store) for p in store.rglob("*") if p.is_relative_to(store / result_group)}
        assert after == before
    assert not out.exists()


@pytest.mark.parametrize("how", ["deleted", "flipped"])
def test_python_queries_and_the_accessor_refuse_damaged_data(converted, tmp_path, how):
    store = tmp_path / "store.zarr"
    shutil.copytree(converted, store)
    damage(store, "train_masks", how)
    ds = dmstore.open(str(store))
    n_models = ds.sizes["model"]
    with pytest.raises(dmstore.DmstoreError, match=r"train_masks is damaged for models .*dmstore verify"):
        ds["train_masks"].sum("model").compute()
    with pytest.raises(dmstore.DmstoreError, match=r"train_masks is damaged"):
        ds.dm.predict(ds["train_masks"].isel(model=np.arange(n_models - 3, n_models))).compute()
    # rows in undamaged shards still read (when the store has more than one shard row-block)
    blocks = len(list((store / "train_masks" / "c").iterdir()))
    if blocks > 1:
        assert ds["train_masks"][:10].values.shape[0] == 10
    assert zarr.open_group(str(store), mode="r")  # the store itself is untouched by the refusals


def test_a_store_on_s3_with_a_lost_shard_is_refused_too(converted, tmp_path, s3_client, capsys):
    """The same check on the S3 server: the shard listing and the records come from the bucket."""
    store = tmp_path / "store.zarr"
    shutil.copytree(converted, store)
    damage(store, "test_margins", "deleted")
    existing = {b["Name"] for b in s3_client.list_buckets()["Buckets"]}
    if "stores" not in existing:
        s3_client.create_bucket(Bucket="stores")
    for path in store.rglob("*"):
        if path.is_file():
            s3_client.upload_file(str(path), "stores", f"damaged.zarr/{path.relative_to(store).as_posix()}")
    fresh_stderr(capsys)
    code = main(["evaluate", "s3://stores/damaged.zarr", "--no-plot", "--no-write", "--no-progress"])
    # the in-process moto server logs its requests to stderr too (when first started by this test)
    err = error_lines(capsys.readouterr().err)
    assert code == 1 and len(err) == 1
    assert "test_margins is damaged for models" in err[0] and "dmstore verify" in err[0]
