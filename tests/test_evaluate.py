"""dmstore evaluate: the LDS and its companions against a straightforward numpy/scipy computation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr
from analysis_stores import TEST_TARGETS, assert_png, example_store, synthetic_store
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr

import dmstore
from dmstore.analysis.evaluate import BYTES_PER_CELL, evaluate, target_batch
from dmstore.analysis.lds import target_scores
from dmstore.cli import main
from dmstore.errors import DmstoreError
from dmstore.io.cluster import dask_client
from dmstore.io.datamodels import write_datamodels


@pytest.fixture(scope="module")
def client():
    """A local cluster of two worker processes for the whole module."""
    with dask_client(n_workers=2) as client:
        yield client


def reference_scores(masks, weight, bias, true):
    """What a user would write: predictions in memory (float64, one per distinct mask: the exact
    ranks, replicates exactly tied), scipy and numpy per target."""
    distinct, rows = np.unique(masks, axis=0, return_inverse=True)
    predicted = (distinct.astype(np.float64) @ weight.astype(np.float64))[rows] + bias
    true = true.astype(np.float32)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):  # NaN for constant input
        warnings.simplefilter("ignore")
        spearman = np.array([spearmanr(predicted[:, t], true[:, t]).statistic for t in range(true.shape[1])])
        pearson = np.array([np.corrcoef(predicted[:, t], true[:, t])[0, 1] for t in range(true.shape[1])])
    mse = ((predicted.astype(np.float64) - true) ** 2).mean(0)
    return spearman, pearson, mse


@pytest.mark.parametrize(
    ("n_eval", "n_train", "memory", "expected"),
    [
        (10_000, 50_000, 1 << 30, 1579),  # CIFAR: 680 kB per target, 7 batches for 10,000 targets
        (100, 0, 100 * BYTES_PER_CELL * 7, 7),
        (100, 0, 100 * BYTES_PER_CELL * 7 + 1, 7),
        (100, 50, (100 * BYTES_PER_CELL + 200) * 3, 3),
        (100, 50, 10, 1),  # always at least one target
    ],
)
def test_target_batch(n_eval, n_train, memory, expected):
    assert target_batch(n_eval, n_train, memory) == expected


@settings(max_examples=40, deadline=None)
@given(
    n_models=st.integers(3, 60),
    n_targets=st.integers(1, 5),
    seed=st.integers(0, 2**31),
    coarse=st.booleans(),
)
def test_target_scores_match_scipy(n_models, n_targets, seed, coarse):
    rng = np.random.default_rng(seed)
    predicted = rng.standard_normal((n_models, n_targets)).astype(np.float32)
    true = predicted + rng.standard_normal((n_models, n_targets))
    if coarse:  # many ties, as float16 margins have
        predicted, true = np.round(predicted), np.round(true)
    true = true.astype(np.float32)  # both sides score the same float32 values
    scores = target_scores(predicted, true)
    for t in range(n_targets):
        with warnings.catch_warnings():  # constant columns: scipy warns and gives NaN
            warnings.simplefilter("ignore")
            expected = spearmanr(predicted[:, t], true[:, t]).statistic
        np.testing.assert_allclose(scores["spearman"][t], expected, rtol=1e-9, atol=1e-12, equal_nan=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            np.testing.assert_allclose(
                scores["pearson"][t],
                np.corrcoef(predicted[:, t].astype(np.float64), true[:, t].astype(np.float64))[0, 1],
                rtol=1e-6,
                atol=1e-9,
                equal_nan=True,
            )
    np.testing.assert_allclose(scores["mse"], ((predicted - true) ** 2).mean(0), rtol=1e-5)


def test_constant_predictions_have_no_correlation():
    predicted = np.ones((10, 2), dtype=np.float32)
    predicted[:, 1] = np.arange(10)
    scores = target_scores(predicted, np.arange(20, dtype=np.float32).reshape(10, 2))
    assert np.isnan(scores["spearman"][0]) and np.isnan(scores["pearson"][0])
    assert scores["spearman"][1] == pytest.approx(1.0)


def test_evaluate_matches_scipy_in_target_batches(client, tmp_path):
    path, arrays = synthetic_store()
    eval_rows = arrays["split"] == "eval"
    # 4 targets per batch: 3 batches over the 12 targets, each over the shard-aligned bands
    memory = 4 * (BYTES_PER_CELL * int(eval_rows.sum()) + 4 * arrays["masks"].shape[1])
    result = evaluate(path, scheduler=client, plot=tmp_path / "eval.png", memory=memory, progress=False)
    spearman, pearson, mse = reference_scores(
        arrays["masks"][eval_rows],
        arrays["test_weight"],
        arrays["test_bias"],
        arrays["test_margins"][eval_rows][:, TEST_TARGETS],
    )
    np.testing.assert_array_equal(result["target"], TEST_TARGETS)
    np.testing.assert_allclose(result["spearman"], spearman, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(result["pearson"], pearson, rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(result["mse"], mse, rtol=1e-5)
    assert np.isnan(spearman[4]) and result.attrs["lds"] == pytest.approx(np.nanmean(spearman), rel=1e-9)
    assert result.attrs["n_eval_models"] == eval_rows.sum()
    np.testing.assert_array_equal(result["model"], np.flatnonzero(eval_rows))
    sample = int(result["sample"][0])
    column = list(TEST_TARGETS).index(sample)
    np.testing.assert_allclose(result["true"].sel(sample=sample), arrays["test_margins"][eval_rows, sample])
    masks, weight, bias = arrays["masks"][eval_rows], arrays["test_weight"][:, column], arrays["test_bias"][column]
    exact = masks @ weight.astype(np.float64) + bias
    terms = masks @ np.abs(weight.astype(np.float64)) + abs(bias)  # float32 rounds relative to these, not the sum
    assert (np.abs(result["predicted"].sel(sample=sample) - exact) <= 1e-6 * terms).all()
    stored = xr.open_zarr(path, group="evaluation/test")
    np.testing.assert_allclose(stored["spearman"], result["spearman"])
    assert stored.attrs["lds"] == result.attrs["lds"]
    assert_png(tmp_path / "eval.png")


def test_evaluate_train_datamodels(client):
    path, arrays = synthetic_store()
    eval_rows = arrays["split"] == "eval"
    result = evaluate(path, "train", scheduler=client, write=False, progress=False)
    spearman, _, mse = reference_scores(
        arrays["masks"][eval_rows],
        arrays["train_weight"],
        0.0,
        arrays["train_margins"][eval_rows][:, arrays["train_targets"]],
    )
    np.testing.assert_allclose(result["spearman"], spearman, rtol=1e-6)
    np.testing.assert_allclose(result["mse"], mse, rtol=1e-5)


def test_evaluate_real_example_on_worker_processes(client, tmp_path):
    path = example_store()
    ds = dmstore.open(path)
    dm = xr.open_zarr(path, group="datamodels/test")
    eval_rows = ds["split"].values == "eval"
    result = evaluate(str(path), scheduler=client, plot=tmp_path / "example.png", progress=False)
    spearman, pearson, mse = reference_scores(
        ds["train_masks"].values[eval_rows],
        dm["weight"].values,
        dm["bias"].values,
        ds["test_margins"].values[eval_rows],
    )
    assert result.attrs["n_targets"] == 797 and result.attrs["n_eval_models"] == 240
    # float32 predictions summed in another order may swap two nearly tied models: one swap
    # moves a Spearman correlation by about 1e-5 here
    np.testing.assert_allclose(result["spearman"], spearman, atol=2e-4)
    assert np.mean(np.isclose(result["spearman"], spearman, rtol=1e-6, atol=1e-9)) > 0.98
    np.testing.assert_allclose(result["pearson"], pearson, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(result["mse"], mse, rtol=1e-4)
    assert result.attrs["lds"] == pytest.approx(np.nanmean(spearman), abs=1e-6)
    assert_png(tmp_path / "example.png")


def test_cli_prints_the_lds(client, tmp_path, capsys):
    path, arrays = synthetic_store()
    eval_rows = arrays["split"] == "eval"
    spearman, _, _ = reference_scores(
        arrays["masks"][eval_rows],
        arrays["test_weight"],
        arrays["test_bias"],
        arrays["test_margins"][eval_rows][:, TEST_TARGETS],
    )
    plot = tmp_path / "cli.png"
    code = main(
        [
            "evaluate",
            str(path),
            "--plot",
            str(plot),
            "--no-write",
            "--no-progress",
            "--scheduler",
            client.cluster.scheduler_address,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert float(out.split("evaluation models): ")[1].split()[0]) == pytest.approx(np.nanmean(spearman), abs=1e-4)
    assert "targets without correlation: 1" in out
    assert_png(plot)


def test_missing_pieces_are_one_line_errors(client, tmp_path, capsys):
    path, arrays = synthetic_store()
    ds = xr.open_zarr(path)[["train_masks", "test_margins"]].load().drop_encoding()
    ds.to_zarr(tmp_path / "plain.zarr", zarr_format=3)
    with pytest.raises(DmstoreError, match="no datamodels for 'test'"):
        evaluate(tmp_path / "plain.zarr", scheduler=client, progress=False)
    all_fit = np.full(ds.sizes["model"], "fit", dtype=object)
    ds.assign_coords(split=("model", all_fit)).to_zarr(tmp_path / "fit.zarr", zarr_format=3)
    write_datamodels(
        str(tmp_path / "fit.zarr"),
        "test",
        arrays["test_weight"],
        arrays["test_bias"],
        arrays["test_bias"],
        targets=TEST_TARGETS,
    )
    with pytest.raises(DmstoreError, match="no models as 'eval'"):
        evaluate(tmp_path / "fit.zarr", scheduler=client, progress=False)
    assert main(["evaluate", str(tmp_path / "nowhere.zarr"), "--no-plot"]) == 2
    assert "no dmstore store" in capsys.readouterr().err
