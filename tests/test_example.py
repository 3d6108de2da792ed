"""``dmstore example``: real MLPs trained on random subsets of digits, in the bucket's layout."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLE, shared_example
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import rankdata

import dmstore
from dmstore.cli import main
from dmstore.errors import DmstoreError
from dmstore.experiment.example import (
    BATCH_MODELS,
    KINDS,
    draw_model,
    make_example,
    margins_from_logits,
    subset_size,
)
from dmstore.io.datasets import load_digits_split

#: Rows ``0..599`` of an example of seed 0 in two batches (500 and 100); a row depends only on the
#: seed and its number, so these are the first 600 rows of the shared example (:data:`EXAMPLE`).
FIRST_600 = dict(pct=50, models=550, eval_models=50, seed=0)


def files(folder: Path, pct: int = 50) -> dict[str, Path]:
    return {kind: folder / "data" / f"{kind}_{pct}pct.npy" for kind in KINDS}


def assert_opens_shared(folder: Path, shared: Path, rows: int) -> None:
    """Each array of the example ``folder`` is, byte for byte, the first ``rows`` rows of the shared
    example's (a row depends only on the seed and its number)."""
    for kind in KINDS:
        ours, theirs = np.load(files(folder)[kind]), np.load(files(shared)[kind], mmap_mode="r")[:rows]
        assert (ours.dtype, ours.shape, ours.tobytes()) == (theirs.dtype, theirs.shape, theirs.tobytes()), kind


@pytest.fixture(scope="module")
def signal(tmp_path_factory) -> Path:
    """The example the tests and docs share (trained once per run): 1,200 fit models, 60
    evaluation masks of 4 replicates."""
    return shared_example(tmp_path_factory.mktemp("signal"))


def test_layout_dtypes_shapes_and_labels(signal):
    split = load_digits_split()
    rows = EXAMPLE["models"] + EXAMPLE["eval_models"]
    expected = {
        "train_masks": (np.bool_, (rows, 1000)),
        "train_margins": (np.float16, (rows, 1000)),
        "test_margins": (np.float16, (rows, 797)),
        "train_logits": (np.float16, (rows, 1000, 10)),
        "test_logits": (np.float16, (rows, 797, 10)),
    }
    assert signal.name == "digits"
    for kind, path in files(signal).items():
        with open(path, "rb") as f:
            assert np.lib.format.read_magic(f) == (1, 0)
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
        assert (dtype, shape, fortran_order) == (np.dtype(expected[kind][0]), expected[kind][1], False)
    train_labels = np.load(signal / "data" / "train_labels.npy")
    test_labels = np.load(signal / "data" / "test_labels.npy")
    assert train_labels.dtype == test_labels.dtype == np.int64
    np.testing.assert_array_equal(train_labels, split.y_train)
    np.testing.assert_array_equal(test_labels, split.y_test)
    assert json.loads((signal / "data" / "classes.json").read_text()) == [str(c) for c in range(10)]
    assert sorted(p.name for p in (signal / "data").iterdir()) == sorted(
        [p.name for p in files(signal).values()] + ["train_labels.npy", "test_labels.npy", "classes.json"]
    )


def test_every_row_sees_exactly_pct_percent(signal):
    masks = np.load(files(signal)["train_masks"])
    assert (masks.sum(axis=1) == 500).all()
    fit, masks_of_replicates = EXAMPLE["models"], EXAMPLE["eval_models"] // EXAMPLE["replicates"]
    assert len({row.tobytes() for row in masks}) == fit + masks_of_replicates  # replicates share a mask


def test_masks_depend_only_on_seed_and_row(signal):
    masks = np.load(files(signal)["train_masks"], mmap_mode="r")
    for row in (0, 499, 500, 1199):
        subset, _ = draw_model(0, row, 1000, 500, 64, 10)
        np.testing.assert_array_equal(np.flatnonzero(masks[row]), subset)


def test_stored_margins_are_the_margins_of_the_stored_logits(signal):
    labels = {
        "train": np.load(signal / "data" / "train_labels.npy"),
        "test": np.load(signal / "data" / "test_labels.npy"),
    }
    for split in ("train", "test"):
        logits = np.load(files(signal)[f"{split}_logits"])
        margins = np.load(files(signal)[f"{split}_margins"])
        np.testing.assert_array_equal(margins_from_logits(logits, labels[split]), margins)


def test_models_fit_their_subsets_and_generalise(signal):
    masks = np.load(files(signal)["train_masks"])
    train_margins = np.load(files(signal)["train_margins"]).astype(np.float32)
    test_margins = np.load(files(signal)["test_margins"]).astype(np.float32)
    assert (train_margins[masks] > 0).mean() > 0.99  # every model fits the examples it saw
    assert train_margins[masks].mean() > train_margins[~masks].mean() + 1.0
    accuracy = (test_margins > 0).mean(axis=1)
    assert np.median(accuracy) > 0.9 and accuracy.min() > 0.85


def test_same_seed_same_bytes_other_seed_other_bytes(signal, tmp_path):
    args = dict(models=75, eval_models=25, progress=False)
    first = make_example(tmp_path / "a", seed=0, **args)
    other = make_example(tmp_path / "c", seed=1, **args)
    for kind in KINDS:
        assert files(first)[kind].read_bytes() != files(other)[kind].read_bytes()
    # the same seed gives the 100 rows that open the shared example, trained by another run in
    # batches of another size
    assert_opens_shared(first, signal, 100)


def test_interrupted_run_resumes_to_the_same_bytes(signal, tmp_path):
    def interrupt(start: int, stop: int) -> None:
        if stop == BATCH_MODELS:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # one worker: the second batch has not started
        make_example(tmp_path, progress=False, workers=1, on_batch=interrupt, **FIRST_600)
    record = json.loads((tmp_path / "digits" / "example_50pct.json").read_text())
    written = dmstore.status(str(tmp_path / "digits" / "experiment_50pct.zarr")).done
    assert record["rows_done"] == written.sum() == BATCH_MODELS
    resumed = []
    folder = make_example(tmp_path, progress=False, on_batch=lambda a, b: resumed.append((a, b)), **FIRST_600)
    assert resumed == [(500, 600)]  # only the batch with models missing from the store
    assert_opens_shared(folder, signal, 600)  # the rows an uninterrupted run gives
    assert make_example(tmp_path, progress=False, on_batch=lambda a, b: resumed.append((a, b)), **FIRST_600)
    assert len(resumed) == 1  # complete: nothing trained again


def test_a_missing_optional_dependency_is_one_line(tmp_path, monkeypatch, capsys):
    real = importlib.metadata.version

    def version(name: str) -> str:
        if name == "torch":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    argv = ["example", str(tmp_path), "--models", "20", "--eval-models", "5", "--no-progress"]
    assert main([*argv, "--cache", str(tmp_path / "cache")]) == 1
    error = "dmstore: error: dmstore example needs torch: pip install 'dmstore[example]'"
    assert capsys.readouterr().err.strip() == error


def test_a_cached_example_is_copied_with_the_bytes_training_gives(tmp_path, capsys):
    cache, args = tmp_path / "cache", dict(models=40, eval_models=10, progress=False)
    trained = make_example(tmp_path / "a", cache=cache, **args)
    assert len(list(cache.iterdir())) == 1  # the finished example, kept
    batches: list = []
    copied = make_example(tmp_path / "b", cache=cache, on_batch=lambda a, b: batches.append((a, b)), **args)
    assert batches == []  # nothing trained
    names = sorted(p.relative_to(trained).as_posix() for p in trained.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(copied).as_posix() for p in copied.rglob("*") if p.is_file())
    assert all((trained / name).read_bytes() == (copied / name).read_bytes() for name in names)
    # a copy interrupted after the store (record at 0 rows, no .npy yet) finishes without training
    record = copied / "example_50pct.json"
    params = json.loads(record.read_text())["params"]
    record.write_text(json.dumps({"params": params, "rows_done": 0}))
    for path in files(copied).values():
        path.unlink()
    make_example(tmp_path / "b", cache=cache, on_batch=lambda a, b: batches.append((a, b)), **args)
    assert batches == [] and all((trained / name).read_bytes() == (copied / name).read_bytes() for name in names)
    # and one interrupted before the store (the record at 0 rows, no store) copies it again
    record.write_text(json.dumps({"params": params, "rows_done": 0}))
    shutil.rmtree(copied / "experiment_50pct.zarr")
    make_example(tmp_path / "b", cache=cache, on_batch=lambda a, b: batches.append((a, b)), **args)
    assert batches == [] and all((trained / name).read_bytes() == (copied / name).read_bytes() for name in names)
    # other arguments are another entry, trained; the CLI takes --cache
    make_example(tmp_path / "c", cache=cache, seed=1, on_batch=lambda a, b: batches.append((a, b)), **args)
    assert batches == [(0, 50)] and len(list(cache.iterdir())) == 2
    argv = ["example", str(tmp_path / "d"), "--models", "40", "--eval-models", "10", "--no-progress"]
    assert main([*argv, "--cache", str(cache)]) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert files(tmp_path / "d" / "digits")["train_masks"].read_bytes() == files(trained)["train_masks"].read_bytes()


def test_workers_write_through_the_experiment_store(signal):
    ds = dmstore.open(signal / "experiment_50pct.zarr")
    assert ds.attrs["dmstore_status"] == "complete"
    np.testing.assert_array_equal(ds["test_margins"].values, np.load(files(signal)["test_margins"]))
    accuracy = (np.load(files(signal)["test_margins"]) > 0).mean(axis=1)
    np.testing.assert_allclose(ds["accuracy"].values, accuracy, rtol=1e-6)


def test_other_parameters_need_overwrite_and_pcts_live_side_by_side(tmp_path):
    make_example(tmp_path, models=20, eval_models=5, progress=False)
    with pytest.raises(DmstoreError, match="other parameters.*models differ.*--overwrite"):
        make_example(tmp_path, models=30, eval_models=5, progress=False)
    folder = make_example(tmp_path, models=30, eval_models=5, overwrite=True, progress=False)
    assert np.load(files(folder)["train_masks"]).shape == (35, 1000)
    make_example(tmp_path, pct=10, models=3, eval_models=2, progress=False)
    assert (np.load(files(folder, 10)["train_masks"]).sum(axis=1) == 100).all()
    assert np.load(files(folder)["train_masks"]).shape == (35, 1000)


def test_foreign_files_are_not_overwritten(tmp_path):
    data = tmp_path / "digits" / "data"
    data.mkdir(parents=True)
    np.save(data / "train_masks_50pct.npy", np.ones((2, 3), dtype=bool))
    with pytest.raises(DmstoreError, match="not made by dmstore example"):
        make_example(tmp_path, models=2, eval_models=1, progress=False)
    assert np.load(data / "train_masks_50pct.npy").shape == (2, 3)


def test_models_are_accurate(signal):
    accuracy = (np.load(files(signal)["test_margins"]) > 0).mean(axis=1)
    assert accuracy.mean() > 0.92  # measured 0.940


def test_difference_of_means_datamodels_predict_eval_models(signal):
    """Fitted on the fit rows, ``mask @ w`` tracks the eval rows' margins (LDS well above 0)."""
    fit = EXAMPLE["models"]
    masks = np.load(files(signal)["train_masks"])
    margins = np.load(files(signal)["test_margins"]).astype(np.float64)
    seen = masks[:fit].astype(np.float64)
    count = seen.sum(axis=0)[:, None]
    weight = seen.T @ margins[:fit] / count - (1 - seen).T @ margins[:fit] / (fit - count)
    predicted = masks[fit:].astype(np.float64) @ weight
    true = margins[fit:]
    pearson = np.mean(column_correlation(predicted, true))
    spearman = np.mean(column_correlation(rankdata(predicted, axis=0), rankdata(true, axis=0)))
    assert pearson > 0.3 and spearman > 0.3  # measured 0.40 and 0.39
    shuffled = np.random.default_rng(0).permutation(masks[fit:], axis=0).astype(np.float64) @ weight
    assert abs(np.mean(column_correlation(shuffled, true))) < 0.05


def column_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    return (a * b).sum(axis=0) / np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))


@pytest.mark.parametrize(
    "logits, labels, margins",
    [
        ([[1.0, 3.0, 2.0]], [1], [1.0]),
        ([[1.0, 3.0, 2.0]], [0], [-2.0]),
        ([[2.0, 2.0, -1.0]], [0], [0.0]),
        ([[[0.5, -0.5], [4.0, 1.0]], [[-1.0, 1.0], [0.0, 0.0]]], [0, 1], [[1.0, -3.0], [-2.0, 0.0]]),
    ],
)
def test_margins_from_logits(logits, labels, margins):
    result = margins_from_logits(np.array(logits, dtype=np.float16), np.array(labels))
    assert result.dtype == np.float16
    np.testing.assert_array_equal(result, np.array(margins, dtype=np.float16))


@pytest.mark.parametrize(
    "logits, labels",
    [
        (np.zeros((3, 4)), np.zeros(2, int)),  # one label too few
        (np.zeros((3, 4)), np.full(3, 4)),  # label out of range
        (np.zeros((3, 1)), np.zeros(3, int)),  # one class: no margin
    ],
)
def test_margins_from_logits_rejects_mismatches(logits, labels):
    with pytest.raises(DmstoreError):
        margins_from_logits(logits, labels)


@pytest.mark.parametrize(
    "pct, n, k", [(50, 1000, 500), (1, 50, 1), (33, 10, 3), (99, 1000, 990), (25, 2, 1), (10, 797, 80)]
)
def test_subset_size(pct, n, k):
    assert subset_size(pct, n) == k


@given(st.integers(1, 99), st.integers(1, 10**7))
def test_subset_size_rounds_half_up(pct, n):
    k = subset_size(pct, n)
    assert abs(100 * k - pct * n) <= 50 and (100 * k - pct * n != -50)


def test_digits_split_is_fixed_stratified_and_standardised():
    split = load_digits_split()
    assert (len(split.y_train), len(split.y_test), split.x_train.shape[1]) == (1000, 797, 64)
    assert np.array_equal(np.sort(np.concatenate([split.train_index, split.test_index])), np.arange(1797))
    assert np.array_equal(split.train_index, np.sort(split.train_index))
    assert np.abs(np.bincount(split.y_train, minlength=10) / 1000 - np.bincount(split.y_test) / 797).max() < 0.01
    np.testing.assert_allclose(split.x_train.mean(axis=0), 0, atol=1e-5)
    assert split.x_train.dtype == split.x_test.dtype == np.float32
    again = load_digits_split()
    assert np.array_equal(again.x_test, split.x_test) and np.array_equal(again.test_index, split.test_index)


def test_cli_writes_the_example_and_reports_the_rate(tmp_path, capsys):
    assert main(["example", "digits", str(tmp_path), "--models", "20", "--eval-models", "5", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "digits" / "data") in out and "models/min" in out
    assert np.load(files(tmp_path / "digits")["test_logits"]).shape == (25, 797, 10)
    assert main(["example", str(tmp_path), "--models", "20", "--eval-models", "5", "--no-progress"]) == 0
    assert "already complete" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--pct", "0"], "--pct must be"),
        (["--pct", "100"], "--pct must be"),
        (["--models", "0"], "--models must be"),
        (["--eval-models", "-1"], "--eval-models must be"),
        (["--seed", "-2"], "--seed must be"),
    ],
)
def test_cli_rejects_bad_arguments(tmp_path, capsys, argv, message):
    assert main(["example", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_cli_rejects_an_unknown_dataset(tmp_path, capsys):
    assert main(["example", "cifar", str(tmp_path)]) == 2
    assert "unknown example dataset 'cifar'" in capsys.readouterr().err
