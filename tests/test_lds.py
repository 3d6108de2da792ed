"""Evaluation a researcher can trust: replicate-averaged LDS and the noise ceiling on a real example
with replicated evaluation masks (against scipy on the same arrays), bootstrap intervals whose
coverage is measured, and any score matrix scored and ranked on the same footing."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import xarray as xr
from analysis_stores import assert_png
from conftest import shared_example
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import rankdata, spearmanr

import dmstore
from dmstore.analysis import lds
from dmstore.cli import main


def scipy_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([spearmanr(a[:, t], b[:, t]).statistic for t in range(a.shape[1])])


@pytest.fixture(scope="module")
def replicated(tmp_path_factory):
    """The digits example with 60 evaluation masks trained 4 times each, converted and fitted."""
    root = tmp_path_factory.mktemp("replicated")
    folder = shared_example(root / "source")
    store = str(root / "digits.zarr")
    dmstore.convert(str(folder.parent), store, "digits", 50, progress=False)
    dmstore.fit(store, targets=slice(0, 120), lambdas=30, lambda_ratio=1e-2, progress=False)
    return store


def test_replicated_masks_give_averaged_lds_between_single_lds_and_ceiling(replicated):
    result = dmstore.evaluate(replicated, write=False, progress=False)
    ds = dmstore.open(replicated)
    dm = ds.dm.datamodels("test")
    eval_rows = ds["split"].values == "eval"
    masks = ds["train_masks"].values[eval_rows]
    true = ds["test_margins"].values[eval_rows][:, dm["target"].values].astype(np.float64)
    # the masks group the rows: 60 masks, 4 models each, one prediction per mask
    distinct, groups, counts = np.unique(masks, axis=0, return_inverse=True, return_counts=True)
    predicted = (distinct.astype(np.float64) @ dm["weight"].values + dm["bias"].values)[groups]
    assert result.attrs["n_masks"] == 60 and (counts == 4).all()
    _, stored_groups = np.unique(result["mask"].values, return_inverse=True)
    np.testing.assert_array_equal(np.unique(np.c_[stored_groups, groups], axis=0).shape, (60, 2))  # same partition
    single = scipy_spearman(predicted, true)
    averaged = scipy_spearman(
        np.stack([predicted[groups == g].mean(axis=0) for g in range(60)]),
        np.stack([true[groups == g].mean(axis=0) for g in range(60)]),
    )
    # split halves: the 1st and 3rd model of each mask against the 2nd and 4th
    order = [np.flatnonzero(groups == g) for g in range(60)]
    half_a = np.stack([true[rows[0::2]].mean(axis=0) for rows in order])
    half_b = np.stack([true[rows[1::2]].mean(axis=0) for rows in order])
    r = scipy_spearman(half_a, half_b)
    ceiling = np.sqrt(np.clip(2 * r / (1 + r), 0, 1))
    np.testing.assert_allclose(result["spearman"], single, atol=2e-4)
    np.testing.assert_allclose(result["spearman_averaged"], averaged, atol=2e-4)
    np.testing.assert_allclose(result["noise_ceiling"], ceiling, atol=1e-6)
    attrs = result.attrs
    assert attrs["lds"] < attrs["lds_averaged"] < attrs["noise_ceiling"], attrs
    assert attrs["lds_averaged"] == pytest.approx(np.nanmean(averaged), abs=1e-4)
    for key in ("lds", "lds_averaged"):
        for side in ("models", "targets"):
            low, high = attrs[f"{key}_interval_{side}"]
            assert low < attrs[key] < high


@given(
    st.integers(1, 40),
    st.integers(1, 150),
    st.sampled_from([np.float16, np.float32, np.float64]),
    st.integers(0, 2**32 - 1),
    st.booleans(),
)
def test_ranks_are_scipys_average_ranks(models, targets, dtype, seed, nan):
    """:func:`lds.ranks` gives ``scipy.stats.rankdata(x, axis=0)`` bit for bit: runs of ties
    (a few distinct values), columns without ties, a NaN column, more targets than one chunk."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 4, (models, targets)).astype(dtype)
    x[:, ::3] = rng.standard_normal((models, x[:, ::3].shape[1])).astype(dtype)
    if nan:
        x[rng.integers(models), rng.integers(targets)] = np.nan
    np.testing.assert_array_equal(lds.ranks(x), rankdata(x, axis=0))


def test_replicates_rounded_apart_are_tied_again_to_the_exact_ranks():
    """A product that rounds one mask's replicates a ulp apart breaks their tie and moves the
    Spearman correlation; :func:`lds.tied` gives back the exact ties (scipy's average ranks)."""
    rng = np.random.default_rng(4)
    groups = np.repeat(np.arange(30), 4)
    exact = rng.standard_normal((30, 5)).astype(np.float32)[groups]
    true = exact + rng.standard_normal(exact.shape).astype(np.float32)
    rounded = exact.copy()
    rounded[1::4] = np.nextafter(rounded[1::4], np.float32(np.inf))  # the 2nd replicate a ulp higher
    rounded[3::4] = np.nextafter(rounded[3::4], np.float32(-np.inf))  # the 4th a ulp lower
    reference = scipy_spearman(exact, true)
    assert np.abs(lds.spearman(rounded, true) - reference).max() > 1e-3
    np.testing.assert_array_equal(lds.tied(rounded, groups), exact)
    np.testing.assert_allclose(lds.spearman(lds.tied(rounded, groups), true), reference, rtol=1e-12)
    shuffled = rng.permutation(groups.size)  # groups in any order: each row takes its group's first
    first = {g: rounded[shuffled][i] for i, g in reversed(list(enumerate(groups[shuffled])))}
    np.testing.assert_array_equal(lds.tied(rounded[shuffled], groups[shuffled]),
                                  np.stack([first[g] for g in groups[shuffled]]))


def test_bootstrap_intervals_cover_the_lds_of_new_evaluation_models_as_often_as_stated():
    """Each trial draws 150 evaluation masks, 2 replicates each, and takes the 95% interval over
    masks; a second, independent set of 6,000 masks gives the LDS it should cover."""
    rng = np.random.default_rng(2026)
    n_train, n_targets = 60, 24
    true_weight = rng.standard_normal((n_train, n_targets)) * (rng.random((n_train, n_targets)) < 0.3)
    estimate = true_weight + 0.6 * rng.standard_normal((n_train, n_targets))  # an imperfect predictor
    scale = 1 + rng.random(n_targets)  # each target's run-to-run noise

    def draw(n_masks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        masks = np.repeat(rng.random((n_masks, n_train)) < 0.5, 2, axis=0)
        noise = rng.standard_normal((2 * n_masks, n_targets)) * scale
        return masks @ estimate, masks @ true_weight + noise, np.repeat(np.arange(n_masks), 2)

    predicted, true, _ = draw(6000)
    population = np.nanmean(lds.spearman(predicted, true))
    trials, covered, widths = 60, 0, []
    for seed in range(trials):
        predicted, true, groups = draw(150)
        intervals = lds.bootstrap_models(predicted, true, groups, seed=seed)
        low, high = intervals["single"]
        covered += low <= population <= high
        widths.append(high - low)
    # 95% stated: at least 51 of 60 (a binomial(60, 0.95) falls below that with probability < 2%;
    # 300 trials of the same draw: 284 covered)
    assert covered >= 51, (covered, trials)
    assert np.mean(widths) < 0.15  # and not by being uselessly wide


def test_any_scores_ranked_beside_the_datamodels(replicated, tmp_path, capsys, monkeypatch):
    ds = dmstore.open(replicated)
    dm = ds.dm.datamodels("test")
    targets = dm["target"].values
    influence = dmstore.stats(replicated, models="fit", targets=list(targets), progress=False)["influence"]
    np.save(tmp_path / "difference_of_means.npy", np.nan_to_num(influence.values).astype(np.float32))
    np.save(tmp_path / "datamodels_copy.npy", dm["weight"].values)
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", replicated, "--no-progress", "--no-plot"]) == 0
    for name in ("difference_of_means", "datamodels_copy"):
        assert main(["evaluate", replicated, "--scores", f"{name}.npy", "--no-progress", "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "LDS of the attributions difference_of_means" in out
    # the same weights read from a file (no bias) rank the models exactly as the store's datamodels:
    # the bias is left out of the ranks (added in float32 it once rounded a near tie together)
    own = xr.open_zarr(replicated, group="evaluation/test")
    copy = xr.open_zarr(replicated, group="attributions/datamodels_copy/evaluation/test")
    np.testing.assert_array_equal(copy["spearman"], own["spearman"])
    assert main(["evaluate", replicated, "--compare", "--plot", "compare.png"]) == 0
    table = capsys.readouterr().out.splitlines()
    ranked = [line.split()[0] for line in table[1:4]]
    assert set(ranked[:2]) == {"datamodels", "datamodels_copy"} and ranked[2] == "difference_of_means", table
    assert_png(tmp_path / "compare.png")
    # stored attributions are scored again by name, and bad input is one line
    assert dmstore.evaluate(replicated, scores="difference_of_means", write=False, progress=False).attrs["lds"] > 0
    np.save(tmp_path / "wrong.npy", np.zeros((ds.sizes["train"] + 1, 3), np.float32))
    assert main(["evaluate", replicated, "--scores", "wrong.npy", "--no-progress", "--no-plot"]) == 2
    assert "rows but the store has 1000 training examples" in capsys.readouterr().err


def test_learning_curve_grows_and_leaves_the_datamodels_a_plain_fit_leaves(replicated, tmp_path, capsys):
    store = str(tmp_path / "copy.zarr")
    shutil.copytree(replicated, store)
    args = ["--targets", "0:40", "--no-progress"]
    assert main(["curve", store, "--sizes", "150,300,1200", "--plot", str(tmp_path / "curve.png"), *args]) == 0
    table = [line.split() for line in capsys.readouterr().out.splitlines()[1:4]]
    assert [int(row[0]) for row in table] == [150, 300, 1200]
    single, averaged, ceiling = (np.array([float(row[i]) for row in table]) for i in (1, 5, 6))
    assert single[0] + 0.1 < single[-1] and (single < averaged).all() and (averaged < ceiling).all(), table
    assert_png(tmp_path / "curve.png")
    curve_weights = dmstore.open(store).dm.datamodels("test")["weight"].values
    # the same fit from scratch on a fresh copy: the curve's incremental statistics changed nothing
    fresh = str(tmp_path / "fresh.zarr")
    shutil.copytree(replicated, fresh)
    dmstore.fit(fresh, targets=slice(0, 40), overwrite=True, recompute=True, progress=False)
    np.testing.assert_allclose(curve_weights, dmstore.open(fresh).dm.datamodels("test")["weight"].values, atol=1e-5)


def test_influencers_drawn_as_images(replicated, tmp_path):
    ds = dmstore.open(replicated)
    path = ds.dm.plot_influencers(test=17, k=4, path=tmp_path / "influencers.png")
    assert_png(path)
    fig = ds.dm.plot_influencers(test=17, k=4)  # no path: the figure, to show in a notebook
    shown = [ax.get_title() for ax in fig.axes]
    top = ds.dm.top_influencers(test=17, k=4)
    assert shown[0].startswith("test 17") and shown[1].startswith(f"train {int(top.example[0, 0])}")
    with pytest.raises(dmstore.DmstoreError, match="pass images="):
        ds.assign_attrs(dataset="cifar").dm.plot_influencers(test=17)


def test_score_matrices_read_alike_from_npy_pt_and_zarr(tmp_path):
    import torch
    import zarr

    from dmstore.io.attributions import read_scores

    scores = np.random.default_rng(3).standard_normal((50, 7)).astype(np.float32)
    np.save(tmp_path / "s.npy", scores)
    torch.save(torch.from_numpy(scores), tmp_path / "tensor.pt")
    torch.save({"weight": torch.from_numpy(scores), "bias": torch.zeros(7)}, tmp_path / "dict.pt")
    zarr.save_array(str(tmp_path / "array.zarr"), scores)
    group = zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    group.create_array("scores", data=scores)
    group.create_array("target", data=np.arange(10, 17))
    for source in ("s.npy", "tensor.pt", "dict.pt", "array.zarr", "group.zarr"):
        read = read_scores(str(tmp_path / source), 50)
        np.testing.assert_array_equal(read["weight"].values, scores)
        assert (read["bias"].values == 0).all()
    np.testing.assert_array_equal(read["target"].values, np.arange(10, 17))  # the group names its targets
    np.testing.assert_array_equal(read_scores(str(tmp_path / "s.npy"), 50)["target"].values, np.arange(7))
    with pytest.raises(dmstore.DmstoreError, match=r"7 rows but the store has 50 training examples.*\(transpose it\)"):
        read_scores(scores.T, 50)
    with pytest.raises(dmstore.DmstoreError, match="give a \\[train x targets\\] matrix"):
        read_scores(scores[0], 50)
