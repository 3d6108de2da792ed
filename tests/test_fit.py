"""``dmstore fit``: the persisted statistics, the datamodels it writes block by block, resume, its errors,
its CLI, and a real example."""

from __future__ import annotations

import os
import shutil
import tracemalloc

import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import shared_example
from sklearn.linear_model import Lasso, lasso_path

import dmstore
from dmstore.analysis.lds import target_scores
from dmstore.cli import main
from dmstore.errors import DmstoreError
from dmstore.fitting import fit as fit_module
from dmstore.fitting import solver
from dmstore.fitting.device import Device
from dmstore.fitting.fit import fit, target_blocks, target_columns, validation_count
from dmstore.fitting.moments import Moments, in_memory
from dmstore.io.cluster import dask_client
from dmstore.io.datamodels import read_datamodels

SHARD_ROWS = 64

pytestmark = pytest.mark.filterwarnings("ignore:The data type .* does not have a Zarr V3 specification")


def nonlinear_margins(masks: np.ndarray, n_targets: int, rng: np.random.Generator) -> np.ndarray:
    """Margins that depend on a few masks through tanh and squares (no planted linear model), plus noise."""
    drivers = rng.integers(0, masks.shape[1], (n_targets, 8))
    effects = rng.normal(0, 0.5, (n_targets, 8))
    z = np.stack([masks[:, d].astype(np.float64) @ e for d, e in zip(drivers, effects)], axis=1)
    return (2 * np.tanh(z) + 0.2 * z**2 + rng.normal(0, 0.7, z.shape)).astype(np.float16)


def write_store(path, models=900, n_train=40, n_test=24, seed=0, drop=(), nan_at=()):
    """A contract store (plain xarray): eval rows inside the table and at its end, small shards."""
    rng = np.random.default_rng(seed)
    masks = rng.random((models, n_train)) < 0.5
    test_margins = nonlinear_margins(masks, n_test, rng)
    for row, col in nan_at:
        test_margins[row, col] = np.nan
    split = np.full(models, "fit", dtype="<U4")
    split[200:380:3] = "eval"
    split[-100:] = "eval"
    ds = xr.Dataset(
        {
            "train_masks": (("model", "train"), masks),
            "train_margins": (("model", "train"), nonlinear_margins(masks, n_train, rng)),
            "test_margins": (("model", "test"), test_margins),
        },
        coords={
            "model": np.arange(1000, 1000 + models, dtype=np.int64),
            "split": ("model", split),
            "train": np.arange(n_train, dtype=np.int64),
            "test": np.arange(500, 500 + n_test, dtype=np.int64),
        },
        attrs={"dataset": "synthetic", "pct": 50},
    ).drop_vars(list(drop))
    encoding = {name: {"chunks": (SHARD_ROWS, ds[name].shape[1])} for name in ds.data_vars}
    encoding["split"] = {"chunks": (SHARD_ROWS,)}
    ds.to_zarr(path, mode="w", zarr_format=3, encoding=encoding, consolidated=False)
    zarr.consolidate_metadata(str(path))
    return {"masks": masks, "test_margins": test_margins, "split": split}


@pytest.fixture(scope="module")
def base_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("fit") / "base.zarr"
    return path, write_store(path)


@pytest.fixture
def store(base_store, tmp_path):
    path = tmp_path / "store.zarr"
    shutil.copytree(base_store[0], path)
    return str(path), base_store[1]


@pytest.fixture(scope="module")
def client():
    with dask_client(n_workers=2) as c:
        yield c


def fit_and_val_rows(split: np.ndarray, n_val: int) -> tuple[np.ndarray, np.ndarray]:
    fit_rows = np.flatnonzero(split == "fit")
    return fit_rows[:-n_val], fit_rows[-n_val:]


def test_persisted_statistics_are_the_exact_moments_of_the_fit_and_validation_rows(store):
    path, arrays = store
    fit(path, targets=slice(3, 20), progress=False)
    fit_rows, val_rows = fit_and_val_rows(arrays["split"], 74)
    for name, positions in (("fit", fit_rows), ("val", val_rows)):
        got = Moments(path, name).statistics("test", slice(3, 20))
        expected = in_memory(arrays["masks"][positions], arrays["test_margins"][positions, 3:20])
        assert got.n == positions.size
        every = np.arange(arrays["masks"].shape[1])
        np.testing.assert_array_equal(got.counts(every), expected.counts(every))  # exact integer counts
        np.testing.assert_array_equal(got.xsum, expected.xsum)
        for name_ in ("xty", "ysum", "yy"):
            np.testing.assert_allclose(getattr(got, name_), getattr(expected, name_), rtol=1e-13)
    from dmstore.conversion.info import describe

    assert "moments/fit: statistics of 666 models, counts 40 x 40 (complete" in describe(path)


def test_fit_writes_the_datamodels_of_the_in_memory_lasso(store, client):
    path, arrays = store
    result = fit(
        path,
        targets=slice(2, 18),
        val_models=0.1,
        tol=1e-10,
        dtype="float64",
        target_batch=5,
        scheduler=client,
        progress=False,
    )
    stored = read_datamodels(path, "test")
    np.testing.assert_array_equal(stored["target"].values, np.arange(502, 518))
    np.testing.assert_array_equal(stored["weight"].values, result["weight"].values)
    fit_rows, val_rows = fit_and_val_rows(arrays["split"], result.attrs["n_val"])
    assert result.attrs["n_val"] == round(0.1 * (fit_rows.size + val_rows.size))
    masks, margins = arrays["masks"], arrays["test_margins"][:, 2:18]
    fit_m, val_m = in_memory(masks[fit_rows], margins[fit_rows]), in_memory(masks[val_rows], margins[val_rows])
    common = dict(standardize=True, tol=1e-10, max_iter=100_000, dtype=np.float64, cap=40)
    path_result = solver.path(fit_m, val_m, lambdas=100, lambda_ratio=1e-3, patience=5, **common)
    weight, bias, _, _ = solver.refit(fit_m + val_m, path_result.lam, path_result.weight, **common)
    np.testing.assert_allclose(stored["lam"].values, path_result.lam, rtol=1e-6)
    np.testing.assert_allclose(stored["weight"].values, weight, atol=1e-6)
    np.testing.assert_allclose(stored["bias"].values, bias, atol=1e-6)
    # the refit is the LASSO of all fit rows at the chosen lam (scikit-learn, standardised features)
    rows = np.concatenate([fit_rows, val_rows])
    x = masks[rows].astype(np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    for t in (0, 7, 15):
        model = Lasso(alpha=path_result.lam[t], tol=1e-12, max_iter=100_000).fit((x - mean) / std, margins[rows, t])
        np.testing.assert_allclose(stored["weight"].values[:, t], model.coef_ / std, atol=1e-5)
    attrs = result.attrs
    assert attrs["n_fit"] == fit_rows.size and attrs["n_targets"] == 16 and attrs["not_converged"] == 0
    assert 0 < attrs["val_r2"] < 1 and attrs["mean_nonzeros"] > 0 and attrs["standardize"] is True


def test_a_fit_on_a_second_namespace_and_device_writes_the_numpy_fit(store, tmp_path):
    """The passes and the solver on array-api-strict's second device (where an array refuses to
    become a numpy one): the same persisted statistics, byte for byte, and the same datamodels."""
    xp = pytest.importorskip("array_api_strict")
    device = Device(xp, xp.Device("device1"), xp.Device("CPU_DEVICE"), name="array-api-strict")
    path, _ = store
    other = str(tmp_path / "other.zarr")
    shutil.copytree(path, other)
    options = dict(targets=slice(0, 12), tol=1e-10, dtype="float64", target_batch=6, progress=False)
    on_numpy = fit(path, **options)
    on_device = fit(other, device=device, **options)
    np.testing.assert_array_equal(on_device["lam"].values, on_numpy["lam"].values)
    np.testing.assert_allclose(on_device["weight"].values, on_numpy["weight"].values, atol=1e-9)
    np.testing.assert_allclose(on_device["bias"].values, on_numpy["bias"].values, atol=1e-9)
    for name in ("moments/fit/xtx", "moments/fit/xty_test", "moments/val/xty_test", "moments/val/masks"):
        a, b = zarr.open_array(f"{path}/{name}", mode="r"), zarr.open_array(f"{other}/{name}", mode="r")
        np.testing.assert_array_equal(b[...], a[...])


def test_int8_products_give_the_statistics_and_datamodels_of_float32(store, tmp_path, monkeypatch):
    """Above the plan's threshold (here lowered to 0) the pass and the refit take torch's int8
    products: the same counts byte for byte, and the same datamodels to float32."""
    pytest.importorskip("torch")
    path, _ = store
    other = str(tmp_path / "other.zarr")
    shutil.copytree(path, other)
    options = dict(targets=slice(0, 12), target_batch=6, progress=False)
    floats = fit(path, **options)
    monkeypatch.setattr("dmstore.fitting.plan.INT8_WORK", 0)
    ints = fit(other, **options)
    assert (floats.attrs["mask_products"], ints.attrs["mask_products"]) == ("float", "int8")
    for name in ("moments/fit/xtx", "moments/fit/xty_test"):
        a, b = zarr.open_array(f"{path}/{name}", mode="r"), zarr.open_array(f"{other}/{name}", mode="r")
        np.testing.assert_array_equal(b[...], a[...])
    np.testing.assert_array_equal(ints["lam"].values, floats["lam"].values)
    np.testing.assert_allclose(ints["weight"].values, floats["weight"].values, atol=1e-5)


def test_a_second_fit_with_other_lambdas_reads_no_mask(store, monkeypatch):
    path, _ = store
    fit(path, targets=slice(0, 8), progress=False)
    from dmstore.fitting.reads import BandReader

    def refuse(*args):
        raise AssertionError("a mask band was read")

    monkeypatch.setattr(BandReader, "masks", refuse)
    again = fit(path, targets=slice(0, 8), lambdas=30, overwrite=True, progress=False)
    assert again.attrs["lambdas"] == 30 and again.sizes["target"] == 8


def test_target_ranges_fill_one_group_and_an_interrupted_fit_finishes_the_same(store, tmp_path, monkeypatch):
    path, _ = store
    other = str(tmp_path / "other.zarr")
    shutil.copytree(path, other)
    for store_ in (other, path):
        fit(store_, targets=slice(0, 6), target_batch=4, progress=False)
    whole = fit(other, target_batch=4, progress=False)  # the same commands, never interrupted
    calls = []
    original = dmstore.fitting.fit.write_block

    def crash_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed while the third block is written
        return original(*args, **kwargs)

    monkeypatch.setattr(dmstore.fitting.fit, "write_block", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        fit(path, target_batch=4, progress=False)
    monkeypatch.setattr(dmstore.fitting.fit, "write_block", original)
    # blocks 0:4, 4:6 (first call), 6:8, 8:12 were written; the rest is missing
    assert sorted(dmstore.io.datamodels.fitted_blocks(path, "test")) == [(0, 4), (4, 6), (6, 8), (8, 12)]
    written = []
    monkeypatch.setattr(
        dmstore.fitting.fit,
        "write_block",
        lambda *a, **k: (written.append(a[2]), dmstore.io.datamodels.write_block(*a, **k)),
    )
    result = fit(path, target_batch=4, progress=False)
    assert written == [12, 16, 20]  # only the missing blocks
    np.testing.assert_array_equal(result["weight"].values, whole["weight"].values)
    np.testing.assert_array_equal(result["target"].values, whole["target"].values)


@pytest.mark.parametrize(
    ("columns", "block", "expected"),
    [
        (slice(0, 10), 4, [(0, 4), (4, 8), (8, 10)]),
        (slice(2, 9), 4, [(2, 4), (4, 8), (8, 9)]),
        (slice(4, 8), 4, [(4, 8)]),
        (slice(5, 6), 256, [(5, 6)]),
    ],
)
def test_target_blocks_are_aligned(columns, block, expected):
    assert target_blocks(columns, block) == expected


def test_target_blocks_leave_out_what_is_done():
    assert target_blocks(slice(0, 12), 4, [(0, 4), (4, 6), (9, 10)]) == [(6, 8), (8, 9), (10, 12)]


def test_evaluation_rows_are_never_read(tmp_path):
    path = tmp_path / "store.zarr"
    arrays = write_store(path, nan_at=[(212, 1), (850, 3)])  # NaN margins in evaluation rows only
    assert arrays["split"][212] == arrays["split"][850] == "eval"
    result = fit(str(path), progress=False)
    assert np.isfinite(result["weight"].values).all()


def test_non_finite_fit_margins_are_named(tmp_path):
    path = tmp_path / "store.zarr"
    write_store(path, nan_at=[(5, 2), (700, 9), (701, 9)])
    with pytest.raises(DmstoreError, match=r"NaN or infinite values in the fit models \(first: model 1005 test 502\)"):
        fit(str(path), progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(targets=slice(0, 25)), r"--targets 0:25 is outside the 24 test examples"),
        (dict(targets=slice(-3, None)), r"outside"),
        (dict(target="valid"), r"unknown target split"),
        (dict(memory="lots"), r"--memory 'lots' is not a size"),
        (dict(memory="1MB"), r"needs at least .* GiB but --memory allows"),
        (dict(val_models=5000), r"only 740 fit models"),
        (dict(lambda_ratio=2.0), r"lambda_ratio"),
        (dict(dtype="float16"), r"unknown dtype"),
        (dict(device="tpu"), r"unknown device 'tpu': use one of cpu, cuda"),
        (dict(device="cuda"), r"--device cuda needs CuPy and an NVIDIA GPU"),
    ],
)
def test_bad_input_raises_one_clear_error(store, kwargs, message):
    with pytest.raises(DmstoreError, match=message):
        fit(store[0], scheduler="tcp://127.0.0.1:9", progress=False, **kwargs)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("constant masks", "the train masks are the same in all"),
        ("constant margins", "constant over the"),
        ("nan margins", "NaN or infinite values in the fit models"),
    ],
)
def test_degenerate_data_is_one_clear_error_and_writes_no_datamodels(tmp_path, damage, message):
    path = tmp_path / "store.zarr"
    write_store(path)
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    if damage == "constant masks":
        group["train_masks"][:] = np.ones(group["train_masks"].shape, dtype=bool)
    else:
        group["test_margins"][:] = np.full(
            group["test_margins"].shape, 1.5 if damage == "constant margins" else np.nan, dtype=np.float16
        )
    with pytest.raises(DmstoreError, match=message):
        fit(str(path), progress=False)
    assert not dmstore.io.datamodels.has_datamodels(str(path), "test")


@pytest.mark.parametrize("missing", ["train_masks", "test_margins"])
def test_store_without_masks_or_margins(tmp_path, missing):
    path = tmp_path / "store.zarr"
    write_store(path, drop=[missing])
    with pytest.raises(DmstoreError, match=f"the store has no {missing}"):
        fit(str(path), scheduler="tcp://127.0.0.1:9", progress=False)


def test_datamodels_of_other_options_are_kept_unless_overwrite_and_checked_before_the_pass(store):
    path, _ = store
    first = fit(path, targets=slice(0, 4), progress=False)
    with pytest.raises(DmstoreError, match="fitted with other options"):
        fit(path, lambdas=20, scheduler="tcp://127.0.0.1:9", progress=False)
    again = fit(path, targets=slice(4, 10), lambdas=20, overwrite=True, progress=False)
    assert first.sizes["target"] == 4 and again.sizes["target"] == 6
    np.testing.assert_array_equal(read_datamodels(path, "test")["target"].values, np.arange(504, 510))


@pytest.mark.parametrize(
    ("val_models", "n_fit", "expected"),
    [(0.1, 1000, 100), (0.1, 5, 1), (0.5, 9, 4), (250, 1000, 250), (250.0, 1000, 250), (3, 5, 3)],
)
def test_validation_count(val_models, n_fit, expected):
    assert validation_count(val_models, n_fit) == expected


@pytest.mark.parametrize("val_models", [0, -0.1, 1.5, 4, True])
def test_validation_count_refuses(val_models):
    with pytest.raises(DmstoreError):
        validation_count(val_models, 5)


@pytest.mark.parametrize(
    ("targets", "expected"),
    [(None, slice(0, 10)), (slice(None, 4), slice(0, 4)), (slice(3, None), slice(3, 10)), (slice(2, 10), slice(2, 10))],
)
def test_target_columns(targets, expected):
    assert target_columns(targets, 10, "test") == expected


@pytest.mark.parametrize("targets", [slice(0, 11), slice(5, 5), slice(-1, 4), slice(0, 10, 2)])
def test_target_columns_refuses(targets):
    with pytest.raises(DmstoreError, match="--targets"):
        target_columns(targets, 10, "test")


def test_peak_memory_stays_under_the_plan(tmp_path):
    path = tmp_path / "store.zarr"
    write_store(path, models=1200, n_train=120, n_test=60)
    tracemalloc.start()
    try:
        result = fit(str(path), dtype="float64", target_batch=16, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # numpy reports its buffers to tracemalloc; the plan's peak includes BASE for the interpreter
    from dmstore.fitting.plan import BASE

    assert peak < result.attrs["plan_peak_bytes"] - BASE + 2**20


def test_cli(store, capsys):
    path, _ = store
    code = main(
        [
            "fit",
            path,
            "--targets",
            "0:6",
            "--val-models",
            "60",
            "--lambdas",
            "40",
            "--no-progress",
            "--scheduler",
            "local",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "6 test datamodels fitted on 680 + 60 models" in out and "mean validation R^2" in out
    assert read_datamodels(path, "test").attrs["lambdas"] == 40
    assert main(["fit", path, "--no-progress"]) == 2
    assert "fitted with other options" in capsys.readouterr().err
    assert main(["fit", path, "--memory", "foo", "--overwrite"]) == 2
    assert "--memory 'foo' is not a size" in capsys.readouterr().err
    assert main(["fit", path, "--targets", "a:b", "--overwrite"]) == 2
    assert "--targets 'a:b' is not START:STOP" in capsys.readouterr().err


# -- a real example: small MLPs trained on digits (dmstore example), converted, fitted -------------------------

EXAMPLE_TARGETS = slice(0, 12)


@pytest.fixture(scope="module")
def example_store(tmp_path_factory, client):
    from dmstore.conversion.convert import convert

    root = tmp_path_factory.mktemp("example")
    folder = shared_example(root / "source")
    path = root / "digits.zarr"
    convert(
        str(folder.parent),
        str(path),
        "digits",
        50,
        arrays=("masks", "margins"),
        progress=False,
        max_memory="1GB",
        scheduler=client,
    )
    return str(path)


def sklearn_datamodels(masks, margins, n_val, lambdas, ratio):
    """What a careful scikit-learn user writes: per target ``lasso_path`` on a shared precomputed Gram
    (standardised features), validation MSE on the last ``n_val`` fit rows, a refit on all fit rows."""
    x = masks.astype(np.float64)
    fit_x, val_x = x[:-n_val], x[-n_val:]
    mean, std = fit_x.mean(axis=0), fit_x.std(axis=0)
    scale = np.where(std > 0, std, 1.0)
    z = (fit_x - mean) / scale
    gram = z.T @ z
    all_mean, all_std = x.mean(axis=0), x.std(axis=0)
    all_scale = np.where(all_std > 0, all_std, 1.0)
    weights, biases = [], []
    for t in range(margins.shape[1]):
        y = margins[:, t].astype(np.float64)
        fit_y, val_y = y[:-n_val], y[-n_val:]
        xy = z.T @ (fit_y - fit_y.mean())
        alphas = np.abs(xy).max() / len(fit_y) * ratio ** (np.arange(lambdas) / (lambdas - 1))
        _, coefs, _ = lasso_path(
            z, fit_y - fit_y.mean(), alphas=alphas, precompute=gram, Xy=xy, tol=1e-4, check_input=False
        )
        raw = coefs / scale[:, None]
        mse = ((val_y[:, None] - val_x @ raw - (fit_y.mean() - mean @ raw)) ** 2).mean(axis=0)
        model = Lasso(alpha=alphas[np.argmin(mse)], tol=1e-4).fit((x - all_mean) / all_scale, y)
        weights.append(model.coef_ / all_scale)
        biases.append(model.intercept_ - all_mean @ weights[-1])
    return np.stack(weights, axis=1), np.array(biases)


def test_real_example_is_as_good_as_sklearn_on_held_out_models(example_store, client):
    result = fit(
        example_store, targets=EXAMPLE_TARGETS, lambdas=30, lambda_ratio=1e-2, scheduler=client, progress=False
    )
    ds = dmstore.open(example_store)
    split = ds["split"].values
    fit_rows, eval_rows = np.flatnonzero(split == "fit"), np.flatnonzero(split == "eval")
    masks = ds["train_masks"].values
    margins = ds["test_margins"].values[:, EXAMPLE_TARGETS].astype(np.float32)
    weight, bias = sklearn_datamodels(masks[fit_rows], margins[fit_rows], result.attrs["n_val"], 30, 1e-2)
    eval_masks = masks[eval_rows].astype(np.float32)
    ours = target_scores(eval_masks @ result["weight"].values + result["bias"].values, margins[eval_rows])
    theirs = target_scores(eval_masks @ weight + bias, margins[eval_rows])
    for name in ("pearson", "spearman"):
        assert np.nanmean(ours[name]) >= np.nanmean(theirs[name]) - 0.005, name
    assert np.nanmean(ours["spearman"]) > 0.05  # real signal: the datamodels predict held-out models


def test_a_second_fit_of_the_same_target_refuses_while_one_runs(store, capsys):
    from dmstore.io.lock import store_lock

    path, _ = store
    with store_lock(path, "fit-test", "dmstore fit --target test"):
        assert main(["fit", path, "--target", "test", "--no-progress"]) == 2
        assert "is busy: dmstore fit --target test" in capsys.readouterr().err
        assert main(["fit", path, "--target", "train", "--no-progress"]) == 0  # another group is free
    assert main(["fit", path, "--target", "test", "--no-progress"]) == 0  # released


def test_a_block_whose_working_set_outgrows_the_plan_is_halved_to_the_same_datamodels():
    """Four targets of 10 features each: together their working set outgrows a cap of 128, so the
    block is solved in halves, which give the datamodels of an uncapped solve; a target whose own
    working set outgrows the cap (80 features) is one error that says what to raise."""
    rng = np.random.default_rng(5)
    masks = rng.random((2000, 200)) < 0.5
    weight = np.zeros((200, 5))
    for t in range(4):
        weight[10 * t : 10 * t + 10, t] = rng.uniform(1, 2, 10)
    weight[40:120, 4] = rng.uniform(1, 2, 80)
    margins = masks @ weight + rng.standard_normal((2000, 5))
    fit_m, val_m = in_memory(masks[:1800], margins[:1800]), in_memory(masks[1800:], margins[1800:])
    common = dict(standardize=True, tol=1e-8, dtype=np.float64, dense=False)
    args = common | dict(device="cpu", int8=True, lambdas=30, lambda_ratio=1e-2, patience=3)
    with pytest.raises(solver.WorkingSetFull):  # the four together do not fit
        solver.path(fit_m.targets(slice(0, 4)), val_m.targets(slice(0, 4)), lambdas=30, lambda_ratio=1e-2,
                    patience=3, max_iter=10_000, cap=128, **common)
    capped = fit_module._solve(fit_m, val_m, slice(0, 4), 0, args | {"cap": 128})
    uncapped = fit_module._solve(fit_m, val_m, slice(0, 4), 0, args | {"cap": 200})
    np.testing.assert_array_equal(capped[2], uncapped[2])  # the same lam
    np.testing.assert_allclose(capped[0], uncapped[0], atol=1e-6)
    assert (capped[0][weight[:, :4] != 0] != 0).all()  # every planted feature found
    with pytest.raises(DmstoreError, match="datamodel of target 4 needs more features than --memory allows"):
        fit_module._solve(fit_m, val_m, slice(3, 5), 0, args | {"cap": 128})


def test_target_groups_solved_at_once_on_threads_give_the_datamodels_of_one_at_a_time(tmp_path, client):
    """Past DENSE_FEATURES the targets are solved in groups of four, in this process the plan's
    ``solvers`` groups at a time on threads (one per core, one BLAS thread each): the datamodels
    are those of the same fit on Dask workers, which solve one group at a time."""
    path = tmp_path / "wide.zarr"
    write_store(path, models=700, n_train=4200, n_test=8, seed=4)
    shutil.copytree(path, tmp_path / "copy.zarr")
    options = dict(dtype="float64", lambdas=20, lambda_ratio=1e-2, progress=False)
    threaded = fit(str(path), **options)
    assert threaded.attrs["solvers"] == min(2, os.cpu_count() or 1)  # two cores: two groups at once
    workers = fit(str(tmp_path / "copy.zarr"), scheduler=client, **options)
    assert workers.attrs["solvers"] == 1
    np.testing.assert_array_equal(threaded["lam"].values, workers["lam"].values)
    np.testing.assert_allclose(threaded["weight"].values, workers["weight"].values, rtol=1e-6, atol=1e-9)
