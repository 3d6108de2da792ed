"""``ds.dm``: datamodel queries against eager numpy on the same datamodels."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from analysis_stores import TEST_TARGETS, example_store, synthetic_store
from hypothesis import given, settings
from hypothesis import strategies as st

import dmstore
from dmstore.analysis.predict import SUB_BAND, predict, predict_band
from dmstore.errors import DmstoreError


@pytest.fixture(scope="module")
def store():
    path, arrays = synthetic_store()
    return dmstore.open(path), arrays


def column(arrays, test):
    return list(TEST_TARGETS).index(test)


def test_datamodels_are_the_stored_ones(store):
    ds, arrays = store
    dm = ds.dm.datamodels("test")
    assert isinstance(dm["weight"].data, da.Array)  # lazy
    np.testing.assert_array_equal(dm["weight"].values, arrays["test_weight"])
    np.testing.assert_array_equal(dm["target"], TEST_TARGETS)
    np.testing.assert_array_equal(ds.dm.datamodels("train")["target"], arrays["train_targets"])


def test_the_store_survives_selection(store):
    ds, arrays = store
    picked = ds.sel(test=17).isel(model=slice(0, 10))
    np.testing.assert_array_equal(picked.dm.weights(test=3).values, arrays["test_weight"][:, column(arrays, 3)])


@pytest.mark.parametrize("k", [1, 5, 200])
def test_top_influencers(store, k):
    ds, arrays = store
    top = ds.dm.top_influencers(test=12, k=k)
    w = arrays["test_weight"][:, column(arrays, 12)]
    k = min(k, w.size)
    np.testing.assert_array_equal(top["weight"].sel(direction="positive"), np.sort(w)[::-1][:k])
    np.testing.assert_array_equal(top["weight"].sel(direction="negative"), np.sort(w)[:k])
    np.testing.assert_array_equal(w[top["example"].sel(direction="positive").values], np.sort(w)[::-1][:k])
    assert top.attrs == {"target_split": "test", "target": 12}


def test_top_influencers_of_a_training_example(store):
    ds, arrays = store
    top = ds.dm.top_influencers(train=30, k=1)
    assert int(top["example"].sel(direction="positive", rank=0)) == 30  # the synthetic example helps itself most


def test_predict_numpy_one_subset_and_lazy_xarray(store):
    ds, arrays = store
    rng = np.random.default_rng(3)
    masks = rng.random((SUB_BAND + 9, arrays["masks"].shape[1])) < 0.5
    expected = masks.astype(np.float32) @ arrays["test_weight"] + arrays["test_bias"]
    predicted = ds.dm.predict(masks)
    assert predicted.dims == ("model", "target") and isinstance(predicted.data, np.ndarray)
    np.testing.assert_allclose(predicted.values, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ds.dm.predict(masks[4]).values, expected[4], rtol=1e-5, atol=1e-5)
    lazy = ds.dm.predict(ds["train_masks"].isel(model=slice(50, 200)))
    assert isinstance(lazy.data, da.Array) and lazy.chunks[0] == (14, 64, 64, 8)  # shard-aligned bands
    np.testing.assert_array_equal(lazy["model"], np.arange(50, 200))
    np.testing.assert_allclose(
        lazy.values, arrays["masks"][50:200] @ arrays["test_weight"] + arrays["test_bias"], rtol=1e-5, atol=1e-5
    )
    with pytest.raises(DmstoreError, match="masks have 3 training examples"):
        ds.dm.predict(np.ones((2, 3), dtype=bool))


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(0, 2 * SUB_BAND + 3),
    n_train=st.integers(1, 7),
    n_targets=st.integers(1, 4),
    seed=st.integers(0, 2**31),
)
def test_predict_band_matches_matmul(rows, n_train, n_targets, seed):
    rng = np.random.default_rng(seed)
    masks = rng.random((rows, n_train)) < 0.5
    weight = rng.standard_normal((n_train, n_targets)).astype(np.float32)
    bias = rng.standard_normal(n_targets).astype(np.float32)
    expected = masks.astype(np.float64) @ weight + bias
    np.testing.assert_allclose(predict_band(masks, weight, bias), expected, rtol=1e-5, atol=1e-5)
    lazy = predict(
        da.from_array(masks, chunks=(max(rows // 3, 1), 2)),
        da.from_array(weight, chunks=(3, 1)),
        da.from_array(bias, chunks=1),
        target_chunk=2,
    )
    np.testing.assert_allclose(lazy.compute(), expected, rtol=1e-5, atol=1e-5)


def test_counterfactual(store):
    ds, arrays = store
    w = arrays["test_weight"][:, column(arrays, 3)].astype(np.float64)
    b = float(arrays["test_bias"][column(arrays, 3)])
    result = ds.dm.counterfactual(test=3, remove=3)
    top = np.argsort(w)[::-1][:3]
    assert (w[top] > 0).all()
    np.testing.assert_array_equal(result["removed"], top)
    assert float(result["baseline"]) == pytest.approx(b + 0.5 * w.sum(), rel=1e-6)
    assert float(result["change"]) == pytest.approx(-0.5 * w[top].sum(), rel=1e-6)
    assert float(result["counterfactual"]) == pytest.approx(b + 0.5 * (w.sum() - w[top].sum()), rel=1e-6)
    # only positive weights are removed by count; named examples are removed whatever their weight
    assert result["removed"].size == 3
    many = ds.dm.counterfactual(test=3, remove=w.size)
    assert many["removed"].size == (w > 0).sum()
    named = ds.dm.counterfactual(test=3, remove=[0, 5])
    assert float(named["change"]) == pytest.approx(-0.5 * (w[0] + w[5]), rel=1e-6, abs=1e-9)


def test_nearest_by_cosine(store):
    ds, arrays = store
    weight = arrays["test_weight"].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = weight[:, column(arrays, 7)]
        cosine = weight.T @ w / (np.linalg.norm(weight, axis=0) * np.linalg.norm(w))
    others = [i for i in range(TEST_TARGETS.size) if TEST_TARGETS[i] != 7]
    order = sorted(others, key=lambda i: -np.nan_to_num(cosine[i], nan=-np.inf))
    nearest = ds.dm.nearest(test=7, k=20)
    np.testing.assert_array_equal(nearest["target"], TEST_TARGETS[order])
    np.testing.assert_allclose(nearest.values, cosine[order], rtol=1e-5, equal_nan=True)
    assert np.isnan(nearest.values[-1])  # the all-zero datamodel: no similarity, last
    assert ds.dm.nearest(test=7, k=3).sizes["target"] == 3


def test_targets_and_stores_are_checked(store):
    ds, _ = store
    with pytest.raises(DmstoreError, match="name one target"):
        ds.dm.top_influencers(test=1, train=2)
    with pytest.raises(DmstoreError, match="no datamodel for test example 2"):
        ds.dm.nearest(test=2)
    with pytest.raises(DmstoreError, match="does not say which store"):
        xr.Dataset({"x": ("test", [1.0])}).dm.datamodels()


def test_queries_on_a_real_example():
    ds = dmstore.open(example_store())
    dm = ds.dm.datamodels("test")
    eval_rows = ds["split"].values == "eval"
    masks = ds["train_masks"].values[eval_rows]
    predicted = ds.dm.predict(ds["train_masks"].isel(model=np.flatnonzero(eval_rows))).values
    np.testing.assert_allclose(predicted, masks @ dm["weight"].values + dm["bias"].values, rtol=1e-4, atol=1e-4)
    top = ds.dm.top_influencers(test=17, k=5)
    assert list(top["example"].sel(direction="positive").values) == list(np.argsort(-dm["weight"].values[:, 17])[:5])
