"""dmstore stats: per-example summaries against eager numpy on the same data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr
from analysis_stores import assert_png, synthetic_store
from conftest import LOOPBACK
from dask.distributed import Client, LocalCluster
from hypothesis import given, settings
from hypothesis import strategies as st

from dmstore.analysis.stats import band_sums, finalize, mask_z, plot_stats, stats
from dmstore.cli import main
from dmstore.errors import DmstoreError


@pytest.fixture(scope="module")
def client():
    """An in-process cluster (the process cluster is exercised by test_evaluate)."""
    with LocalCluster(processes=False, n_workers=1, threads_per_worker=2, **LOOPBACK) as cluster:
        with Client(cluster) as client:
            yield client


def reference(masks, margins, targets, target_margins):
    """What a user would write: per-example numpy reductions and a loop for the influence."""
    out = {}
    for split, values in margins.items():
        values = values.astype(np.float64)
        out[f"{split}_mean"] = values.mean(0)
        out[f"{split}_var"] = values.var(0)
        out[f"{split}_accuracy"] = (values > 0).mean(0)
    out["mask_frequency"] = masks.mean(0)
    if targets is not None:
        y = target_margins[:, targets].astype(np.float64)
        with warnings.catch_warnings(), np.errstate(invalid="ignore"):  # NaN where j is in all or no subsets
            warnings.simplefilter("ignore", RuntimeWarning)
            out["influence"] = np.array(
                [y[masks[:, j]].mean(0) - y[~masks[:, j]].mean(0) for j in range(masks.shape[1])]
            )
    return out


@pytest.mark.parametrize("models", ["all", "fit"])
def test_stats_match_numpy(client, models, tmp_path):
    path, arrays = synthetic_store()
    rows = slice(None) if models == "all" else arrays["split"] == "fit"
    targets = [3, 7, 30]
    result = stats(path, models=models, targets=targets, scheduler=client, progress=False)
    masks = arrays["masks"][rows]
    expected = reference(
        masks,
        {"train": arrays["train_margins"][rows], "test": arrays["test_margins"][rows]},
        targets,
        arrays["test_margins"][rows],
    )
    for name, values in expected.items():
        np.testing.assert_allclose(result[name].values, values, rtol=1e-9, atol=1e-12, err_msg=name)
    np.testing.assert_array_equal(result["target"], targets)
    assert result.attrs["n_models"] == masks.shape[0] and result.attrs["pct"] == 50
    z = (masks.mean(0) - 0.5) / np.sqrt(0.25 / masks.shape[0])
    assert result.attrs["mask_max_z"] == pytest.approx(np.abs(z).max())
    assert_png(plot_stats(result, tmp_path / "stats.png"))


@settings(max_examples=30, deadline=None)
@given(
    n_models=st.integers(2, 40),
    n_train=st.integers(1, 6),
    cuts=st.lists(st.integers(1, 39), max_size=5),
    seed=st.integers(0, 2**31),
)
def test_band_sums_add_up_over_any_bands(n_models, n_train, cuts, seed):
    rng = np.random.default_rng(seed)
    masks = rng.random((n_models, n_train)) < 0.5
    test_margins = rng.standard_normal((n_models, 3)).astype(np.float16) * 4
    ds = xr.Dataset(
        {"train_masks": (("model", "train"), masks), "test_margins": (("model", "test"), test_margins)},
        coords={"model": np.arange(n_models), "train": np.arange(n_train), "test": np.arange(3)},
    )
    edges = [0, *sorted({c for c in cuts if c < n_models}), n_models]
    parts = [band_sums(ds.isel(model=slice(a, b)), [2, 0]) for a, b in zip(edges[:-1], edges[1:])]
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    result = finalize(total)
    expected = reference(masks, {"test": test_margins}, [2, 0], test_margins)
    for name, values in expected.items():
        np.testing.assert_allclose(result[name].values, values, rtol=1e-9, atol=1e-9, err_msg=name)


def test_influence_is_undefined_for_an_example_in_every_subset():
    masks = np.array([[1, 1], [1, 0], [1, 1]], dtype=bool)
    ds = xr.Dataset(
        {
            "train_masks": (("model", "train"), masks),
            "test_margins": (("model", "test"), np.array([[1.0], [3.0], [5.0]])),
        },
        coords={"model": np.arange(3), "train": np.arange(2), "test": [0]},
    )
    influence = finalize(band_sums(ds, [0]))["influence"].values
    assert np.isnan(influence[0, 0])
    assert influence[1, 0] == pytest.approx((1 + 5) / 2 - 3)


@pytest.mark.parametrize(
    ("frequency", "pct", "n", "expected"),
    [
        ([0.5], 50, 100, [0.0]),
        ([0.55], 50, 100, [1.0]),  # std of a share at p = 0.5 over 100 models: 0.05
        ([0.1, 0.3], 10, 100, [0.0, 0.2 / 0.03]),
    ],
)
def test_mask_z(frequency, pct, n, expected):
    np.testing.assert_allclose(mask_z(np.array(frequency), pct, n), expected)


def test_cli_table_plot_and_saved_statistics(client, tmp_path, capsys):
    path, arrays = synthetic_store()
    code = main(
        [
            "stats",
            str(path),
            "--influence",
            "3",
            "--top",
            "4",
            "--plot",
            str(tmp_path / "s.png"),
            "--out",
            str(tmp_path / "s.zarr"),
            "--no-progress",
            "--scheduler",
            client.cluster.scheduler_address,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert f"{arrays['masks'].shape[0]} models (all)" in out
    test_row = next(line for line in out.splitlines() if line.startswith("test "))
    assert float(test_row.split()[2]) == pytest.approx(arrays["test_margins"].astype(np.float64).mean(), abs=1e-4)
    y = arrays["test_margins"][:, 3].astype(np.float64)
    masks = arrays["masks"]
    influence = np.array([y[masks[:, j]].mean() - y[~masks[:, j]].mean() for j in range(masks.shape[1])])
    positive = next(line for line in out.splitlines() if line.startswith("influence on test 3, positive"))
    assert [int(item.split()[0]) for item in positive.split(": ")[1].split(", ")] == list(np.argsort(-influence)[:4])
    assert_png(tmp_path / "s.png")
    saved = xr.open_zarr(tmp_path / "s.zarr")
    np.testing.assert_allclose(saved["mask_frequency"], masks.mean(0))


def test_unknown_influence_target(client):
    path, _ = synthetic_store()
    with pytest.raises(DmstoreError, match=r"no test examples \[999\]"):
        stats(path, targets=[999], scheduler=client, progress=False)
