"""Experiment stores: created empty, filled by many killed-and-restarted writers, compacted into
the bytes convert writes, and analysed mid-experiment on exactly the written models."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import numpy as np
import pytest
from jobs import grow_statistics, row, start, write_models

import dmstore
from dmstore.cli import main
from dmstore.io.segments import Segments

SPEC = dict(train=300, test=100, models=2200, eval_models=500, extras={"seed": "int64", "accuracy": "float32"})


def store_files(url: str) -> dict[str, bytes]:
    """Every object of a store but its locks, by path inside the store."""
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    return {p[len(root) :]: fs.cat_file(p) for p in fs.find(root) if "/_dmstore/locks/" not in p}


def serial_store(url: str, spec: dict) -> None:
    dmstore.create(url, **spec)
    with dmstore.writer(url) as w:
        for model in range(spec["models"]):
            w.write(model, **row(model, w.spec))
    dmstore.compact(url, progress=False)


def killed_writers(url: str, seed: int, processes: int = 8) -> int:
    """Write every model with ``processes`` jobs at a time, each killed with SIGKILL at a random
    moment, resubmitting exactly the missing models until none remain; return the kills."""
    rng, kills = np.random.default_rng(seed), 0
    while (missing := dmstore.status(url).missing).size:
        parts = [part.tolist() for part in np.array_split(rng.permutation(missing), processes) if part.size]
        jobs = [start(write_models, url, part) for part in parts]
        for job in rng.permutation(len(jobs)):  # kill most of them at random moments while they write
            time.sleep(rng.uniform(0, 0.15))
            if jobs[job].is_alive() and rng.random() < 0.75:
                jobs[job].kill()  # SIGKILL
                kills += 1
        for job in jobs:
            job.join()
        dmstore.compact(url, progress=False)  # between rounds, as a cron job would
    dmstore.compact(url, progress=False)
    return kills


def test_killed_writers_give_the_serial_store_byte_for_byte(tmp_path):
    serial, killed = str(tmp_path / "serial.zarr"), str(tmp_path / "killed.zarr")
    serial_store(serial, SPEC)
    dmstore.create(killed, **SPEC)
    assert killed_writers(killed, seed=1) >= 4
    assert dmstore.status(killed).missing.size == 0
    assert store_files(killed) == store_files(serial)
    assert not Segments(killed).listing()


def test_killed_writers_on_s3_give_the_serial_store(s3_client, tmp_path):
    """The store the killed writers leave on S3 holds, object for object, the bytes of one writer's
    store on local disk."""
    s3_client.create_bucket(Bucket="experiments")
    spec = {**SPEC, "models": 300, "eval_models": 60}
    serial, killed = str(tmp_path / "serial.zarr"), "s3://experiments/killed.zarr"
    serial_store(serial, spec)
    dmstore.create(killed, **spec)
    killed_writers(killed, seed=2)
    assert store_files(killed) == store_files(serial)


def test_compacted_blocks_hold_the_bytes_convert_writes(layout, tmp_path):
    root, arrays = layout  # 5000 models, 700 train, 300 test examples
    url = str(tmp_path / "run.zarr")
    dmstore.create(url, train=700, test=300, models=5000, eval_models=1000)
    with dmstore.writer(url) as w:
        for model in range(5000):
            w.write(model, **{name: arrays[name][model] for name in w.spec["arrays"]})
    dmstore.compact(url, progress=False)
    converted = str(tmp_path / "converted.zarr")
    dmstore.convert(str(root), converted, "toy", 50, eval_rows=1000, progress=False)
    ours, theirs = store_files(url), store_files(converted)
    shards = [p for p in theirs if "/c/" in p and p.split("/")[1].endswith(("masks", "margins"))]
    assert len(shards) == 9
    assert all(ours[p] == theirs[p] for p in shards)
    bands = [p for p in theirs if p.startswith("/_dmstore/bands/")]
    assert all(ours[p] == theirs[p] for p in bands)
    ds = dmstore.open(url)
    assert ds.attrs["dmstore_status"] == "complete"
    np.testing.assert_array_equal(ds["test_margins"].values, arrays["test_margins"])
    assert dmstore.verify(url, progress=False) == []  # every compacted band matches its record


def test_analyses_mid_experiment_use_exactly_the_written_models(layout, tmp_path, capsys):
    _, arrays = layout
    url = str(tmp_path / "run.zarr")
    dmstore.create(url, train=700, test=300, models=5000, eval_models=1000, extras={"seed": "int64"})
    rng = np.random.default_rng(0)
    written = np.sort(rng.choice(5000, size=3100, replace=False))
    with dmstore.writer(url) as w:
        for model in written[written < 2048]:  # the first shard row-block: compacted
            w.write(model, seed=model, **{name: arrays[name][model] for name in w.spec["arrays"]})
    dmstore.compact(url, progress=False)
    with dmstore.writer(url) as w:
        for model in written[written >= 2048]:  # the others: segments
            w.write(model, seed=model, **{name: arrays[name][model] for name in w.spec["arrays"]})
    state = dmstore.status(url)
    assert np.array_equal(np.flatnonzero(state.done), written)

    ds = dmstore.open(url)
    assert np.array_equal(np.flatnonzero(ds["done"].values), written)
    assert set(ds["split"].values[~ds["done"].values]) == {"missing"}
    picked = ds.isel(model=written)
    np.testing.assert_array_equal(picked["train_masks"].values, arrays["train_masks"][written])
    np.testing.assert_array_equal(picked["seed"].values, written)

    result = dmstore.stats(url, models="all", progress=False)
    assert result.attrs["n_models"] == written.size
    np.testing.assert_allclose(result["mask_frequency"].values, arrays["train_masks"][written].mean(axis=0))
    assert main(["stats", url, "--plot", "", "--no-progress"]) == 0
    assert "of 5,000 model slots written" in capsys.readouterr().out

    fitted = dmstore.fit(url, targets=slice(0, 3), lambdas=4, progress=False)
    fit_rows = written[written < 4000]
    assert fitted.attrs["n_fit"] + fitted.attrs["n_val"] == fit_rows.size
    assert fitted.attrs["models_written"] == written.size
    scored = dmstore.evaluate(url, write=False, progress=False)
    assert scored.attrs["n_eval_models"] == (written >= 4000).sum()
    np.testing.assert_array_equal(scored["model"].values, written[written >= 4000])


BAD_WRITES = [
    (dict(model=5000), "not a model slot"),
    (dict(model=-1), "not a model slot"),
    (dict(model=1.0), "not a model slot"),
    (dict(drop="test_margins"), "missing test_margins"),
    (dict(extra={"loss": 1.0}), "unknown loss"),
    (dict(replace={"train_masks": np.ones(699, bool)}), "has shape (699,)"),
    (dict(replace={"train_masks": np.full(700, 2)}), "is not 0/1"),
    (dict(replace={"test_margins": np.full(300, np.nan)}), "NaN or infinite"),
    (dict(replace={"test_margins": np.full(300, 1e6)}), "float16's range"),
    (dict(replace={"test_margins": np.array(["a"] * 300)}), "margins are numbers"),
    (dict(replace={"seed": 1.5}), "does not fit int64"),
    (dict(replace={"seed": [1, 2]}), "give one number"),
]


@pytest.mark.parametrize("bad, message", BAD_WRITES, ids=[m for _, m in BAD_WRITES])
def test_bad_writes_are_one_clear_error_and_change_nothing(tmp_path, bad, message):
    url = str(tmp_path / "run.zarr")
    dmstore.create(url, train=700, test=300, models=5000, extras={"seed": "int64"})
    with dmstore.writer(url) as w:
        values = row(3, w.spec) | dict(bad.get("replace", {})) | dict(bad.get("extra", {}))
        values.pop(bad.get("drop", ""), None)
        with pytest.raises(dmstore.DmstoreError, match=message.replace("(", r"\(").replace(")", r"\)")):
            w.write(bad.get("model", 3), **values)
    assert not Segments(url).listing()
    assert dmstore.status(url).missing.size == 5000


def test_a_model_is_written_once(tmp_path):
    url = str(tmp_path / "run.zarr")
    dmstore.create(url, train=50, test=20, models=10)
    with dmstore.writer(url) as w:
        first, other = row(4, w.spec), row(5, w.spec)
        assert w.write(4, **first) is True
        assert w.write(4, **first) is False  # the same values again: nothing to do
        with pytest.raises(dmstore.DmstoreError, match="already written with other values"):
            w.write(4, **other)
        for model in range(10):
            w.write(model, **row(model, w.spec))
    dmstore.compact(url, progress=False)
    with dmstore.writer(url) as w:  # after compaction: compared with the stored rows
        assert w.write(4, **first) is False
        with pytest.raises(dmstore.DmstoreError, match="already written with other values"):
            w.write(4, **other)
    np.testing.assert_array_equal(dmstore.open(url)["train_masks"].values[4], first["train_masks"])


def test_a_store_grows_and_keeps_its_models(tmp_path):
    url = str(tmp_path / "run.zarr")
    dmstore.create(url, train=40, test=10, models=100, eval_models=20)
    with dmstore.writer(url) as w:
        for model in range(100):
            w.write(model, **row(model, w.spec))
    dmstore.compact(url, progress=False)
    assert main(["create", url, "--train", "40", "--test", "10", "--models", "150", "--grow"]) == 0
    assert dmstore.status(url).missing.tolist() == list(range(100, 150))
    with dmstore.writer(url) as w:
        for model in range(100, 150):
            w.write(model, **row(model, w.spec))
    dmstore.compact(url, progress=False)
    ds = dmstore.open(url)
    spec = dmstore.writer(url).spec
    expected = np.stack([row(m, spec)["train_masks"] for m in range(150)])
    np.testing.assert_array_equal(ds["train_masks"].values, expected)
    assert (ds["split"].values == "eval").sum() == 20 and ds.attrs["dmstore_status"] == "complete"


def test_cli_create_status_compact(tmp_path, capsys):
    url = str(tmp_path / "run.zarr")
    assert main(["create", url, "--train", "30", "--test", "10", "--models", "8", "--extra", "seed=int64"]) == 0
    assert main(["create", url, "--train", "30", "--test", "10", "--models", "8"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["create", str(tmp_path / "x.zarr"), "--train", "3", "--test", "1", "--models", "2",
                 "--extra", "seed=str"]) == 2
    assert "extras are numbers" in capsys.readouterr().err
    with dmstore.writer(url) as w:
        for model in (0, 1, 2, 6):
            w.write(model, **row(model, w.spec))
    assert main(["status", url, "--missing"]) == 0
    assert capsys.readouterr().out.split() == ["3", "4", "5", "7"]
    assert main(["status", url]) == 0
    assert "4 written (0 compacted, 4 in segments), 4 missing: 3-5,7" in capsys.readouterr().out
    assert main(["compact", url, "--no-progress"]) == 0
    assert "0 row-block(s)" in capsys.readouterr().out  # the one row-block is not complete
    assert main(["status", str(tmp_path / "none.zarr")]) == 2
    assert "no dmstore store" in capsys.readouterr().err


def test_two_compactions_at_once_one_proceeds(tmp_path):
    url = str(tmp_path / "run.zarr")
    dmstore.create(url, train=30, test=10, models=4)
    held = Path(url, "_dmstore", "locks", "compact.0.json")
    held.parent.mkdir(parents=True)
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        held.write_text(f'{{"host": "{os.uname().nodename}", "pid": {job.pid}, "heartbeat": {time.time()}}}')
        with pytest.raises(dmstore.DmstoreError, match="is busy"):
            dmstore.compact(url, progress=False)
    finally:
        job.kill()
        job.wait()
    dmstore.compact(url, progress=False)  # its owner is gone: the lock is stale


def test_a_refit_after_more_models_reads_only_those_models(tmp_path, monkeypatch):
    """Statistics grow by the models added: only their rows are read, and the counts, sums and
    target statistics equal those computed from all the rows in numpy."""
    from dmstore.fitting.moments import Moments
    from dmstore.fitting.reads import BandReader

    rng = np.random.default_rng(7)
    slots, n_train, n_test = 1100, 40, 12
    masks = rng.random((slots, n_train)) < 0.5
    weights = np.where(rng.random((n_train, n_test)) < 0.2, rng.standard_normal((n_train, n_test)), 0)
    margins = (masks @ weights + 0.3 * rng.standard_normal((slots, n_test))).astype(np.float16)
    url = str(tmp_path / "run.zarr")
    dmstore.create(url, train=n_train, test=n_test, models=slots, eval_models=100)

    def write(models: np.ndarray) -> None:
        with dmstore.writer(url) as w:
            for m in models:
                w.write(int(m), train_masks=masks[m], train_margins=np.zeros(n_train), test_margins=margins[m])

    first = np.r_[0:900, 1000:1100]
    write(first)
    dmstore.fit(url, targets=slice(0, 6), lambdas=4, progress=False)
    added = np.arange(900, 1000)  # 11% more fit models
    write(added)
    read: list[np.ndarray] = []
    for method in ("masks", "margins"):
        original = getattr(BandReader, method)

        def spy(self, band, *args, _original=original):
            read.append(np.asarray(band))
            return _original(self, band, *args)

        monkeypatch.setattr(BandReader, method, spy)
    with pytest.raises(dmstore.DmstoreError, match="fitted on other models"):
        dmstore.fit(url, targets=slice(0, 6), lambdas=4, progress=False)
    result = dmstore.fit(url, targets=slice(0, 6), lambdas=4, overwrite=True, progress=False)
    assert read and set(np.concatenate(read).tolist()) == set(added.tolist())
    fit_rows = Moments(url, "fit").positions()
    val_rows = Moments(url, "val").positions()
    assert np.array_equal(np.union1d(fit_rows, val_rows), np.arange(1000)) and added[0] in fit_rows
    assert result.attrs["n_fit"] == fit_rows.size and result.attrs["n_val"] == val_rows.size == 90
    stats = Moments(url, "fit").statistics("test", slice(0, 6))
    x, y = masks[fit_rows].astype(np.float64), margins[fit_rows].astype(np.float64)
    assert stats.n == fit_rows.size
    np.testing.assert_array_equal(stats.counts(np.arange(n_train)), x.T @ x)
    np.testing.assert_array_equal(stats.xsum, x.sum(axis=0))
    np.testing.assert_allclose(stats.xty, x.T @ y[:, :6], rtol=1e-12)
    np.testing.assert_allclose(stats.yy, (y[:, :6] ** 2).sum(axis=0), rtol=1e-12)


class Crash(Exception):
    """The process stopping right after a write (the writes before it done, none after)."""


def test_adding_rows_stopped_after_each_record_never_shows_wrong_counts(tmp_path, monkeypatch):
    """Each run of ``grow_pass`` stops right after its first write of the statistics' record
    (``zarr.json``): one after another, the runs stop after every record the addition makes. At
    each stop, statistics marked complete are exactly those of the rows they list, and the last run
    leaves exactly all rows (zarr writes ``attrs.update`` one key at a time: the record is one write)."""
    from zarr.storage import LocalStore

    from dmstore.fitting.moments import Moments
    from dmstore.fitting.passes import PassPlan, gram_pass, grow_pass, target_pass
    from dmstore.fitting.reads import BandReader

    url = str(tmp_path / "run.zarr")
    dmstore.create(url, train=600, test=4, models=400)
    with dmstore.writer(url) as w:
        rows = [row(m, w.spec) for m in range(400)]
        for model in range(400):
            w.write(model, **rows[model])
    x = np.stack([r["train_masks"] for r in rows]).astype(np.float64)
    plan, reader = PassPlan(128, False, 1), BandReader(url, "test")
    gram_pass(Moments(url, "fit"), reader, np.arange(300), plan, lambda rows: None)
    target_pass(Moments(url, "fit"), reader, np.arange(300), "test", 4, [0], plan, lambda rows: None)
    n_tiles = Moments(url, "fit").tile_file().n_tiles
    record, write = "moments/fit/zarr.json", LocalStore.set

    async def set_then_stop(self, key, value):
        await write(self, key, value)
        if key == record:
            raise Crash

    monkeypatch.setattr(LocalStore, "set", set_then_stop)
    stops = 0
    for _ in range(100):
        try:
            grow_pass(Moments(url, "fit"), reader, np.arange(400), plan, lambda rows: None)
        except Crash:
            stops += 1
        positions = Moments(url, "fit").positions()
        if positions is not None:  # what a reader (a fit, an analysis) would use
            counts = Moments(url, "fit").statistics("test", slice(0, 4)).counts(np.arange(600))
            np.testing.assert_array_equal(counts, x[positions].T @ x[positions])
            if positions.size == 400:
                break
    assert positions is not None and positions.tolist() == list(range(400))
    assert stops > n_tiles * (n_tiles + 1) // 2  # at least one stop per tile updated


def test_adding_rows_killed_at_random_moments_gives_exact_counts(tmp_path):
    from dmstore.fitting.moments import Moments
    from dmstore.fitting.passes import PassPlan, gram_pass, grow_pass, target_pass
    from dmstore.fitting.reads import BandReader

    url = str(tmp_path / "run.zarr")
    spec = dict(train=1500, test=8, models=700)
    dmstore.create(url, **spec)
    with dmstore.writer(url) as w:
        for model in range(700):
            w.write(model, **row(model, w.spec))
    plan, reader, moments = PassPlan(256, False, 1), BandReader(url, "test"), Moments(url, "fit")
    gram_pass(moments, reader, np.arange(500), plan, lambda rows: None)
    target_pass(moments, reader, np.arange(500), "test", 8, [0], plan, lambda rows: None)
    rng, kills = np.random.default_rng(3), 0
    for _ in range(6):  # killed at random moments, each run resuming where the last stopped
        job = start(grow_statistics, url, 700)
        time.sleep(rng.uniform(0.2, 1.5))
        if job.is_alive():
            job.kill()  # SIGKILL
            kills += 1
        job.join()
        if job.exitcode == 0:
            break
    grow_pass(Moments(url, "fit"), reader, np.arange(700), plan, lambda rows: None)  # the rest, if any
    assert kills >= 1 and Moments(url, "fit").positions().tolist() == list(range(700))
    rows = [row(m, dmstore.writer(url).spec) for m in range(700)]
    x = np.stack([r["train_masks"] for r in rows]).astype(np.float64)
    y = np.stack([r["test_margins"] for r in rows]).astype(np.float16)
    stats = Moments(url, "fit").statistics("test", slice(0, 8))
    np.testing.assert_array_equal(stats.counts(np.arange(1500)), x.T @ x)
    np.testing.assert_allclose(stats.xty, x.T @ y.astype(np.float64), rtol=1e-12)
