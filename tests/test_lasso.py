"""The working-set LASSO from sufficient statistics, against scikit-learn and against first principles.

``lasso`` and ``lasso_path`` below run :mod:`dmstore.fitting.solver` exactly as a fit block does
(working sets grown from the strong rule and the KKT check over all features); ``cap`` bounds the
working set as the memory plan does.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import Lasso
from sklearn.linear_model import lasso_path as sk_lasso_path

from dmstore.errors import DmstoreError
from dmstore.fitting import solver
from dmstore.fitting.device import CPU, Device
from dmstore.fitting.fista import (
    EIGEN_TOL,
    STEP_SAFETY,
    check_options,
    duality_gap,
    gram_product,
    lambda_grid,
    solve,
    top_eigenvalue,
)
from dmstore.fitting.moments import in_memory as band_moments
from dmstore.fitting.moments import of_masks
from dmstore.fitting.solver import Space

TIGHT = 1e-13


def problem(models=400, n_train=30, n_targets=3, seed=0, p=0.5):
    """Masks and margins that depend on the masks non-linearly, plus noise."""
    rng = np.random.default_rng(seed)
    masks = rng.random((models, n_train)) < p
    drivers = rng.integers(0, n_train, (n_targets, 6))
    effects = rng.normal(0, 0.6, (n_targets, 6))
    z = np.stack([masks[:, d].astype(float) @ e for d, e in zip(drivers, effects)], axis=1)
    margins = 2 * np.tanh(z) + 0.3 * z**2 + rng.normal(0, 0.5, z.shape)
    return masks, margins.astype(np.float16)


class SolverSpace:
    """The dense Gram of a :class:`Space` (small problems only), for the FISTA tests."""

    @staticmethod
    def build(stats, standardize, xp, dtype):
        space = Space.build(stats, standardize, dtype)
        gram = np.empty((stats.n_train, stats.n_train), dtype=dtype)
        space.gram_rows(np.arange(stats.n_train), gram)
        space_ = type("Dense", (), {})()
        space_.gram, space_.lipschitz = gram, STEP_SAFETY * top_eigenvalue(gram, np)[0]
        space_.targets = lambda columns, xp: space.targets()
        return space_


def strict_device():
    """array-api-strict's second device: an array there refuses to become a numpy array, so a
    solve there proves the code makes no crossing but through ``Device.put`` and ``Device.get``."""
    xp = pytest.importorskip("array_api_strict")
    return Device(xp, xp.Device("device1"), xp.Device("CPU_DEVICE"), name="array-api-strict")


def lasso(stats, lam, *, standardize=True, tol=1e-4, dtype=np.float64, weight=None, cap=None, device=CPU):
    n = stats.n_train
    start = np.zeros((n, len(lam))) if weight is None else weight
    w, b, gap, _ = solver.refit(
        stats, np.asarray(lam), start, standardize=standardize, tol=tol, max_iter=1_000_000, dtype=dtype, cap=cap or n,
        device=device,
    )
    return solver.BlockResult(w, b, np.asarray(lam), gap, None, None, None, None)


def lasso_path(
    fit,
    val,
    *,
    lambdas=100,
    lambda_ratio=1e-3,
    standardize=True,
    tol=1e-4,
    patience=5,
    dtype=np.float64,
    target_batch=None,
    cap=None,
    dense=False,
    device=CPU,
):
    check_options(lambdas, lambda_ratio, tol, patience, 1 if target_batch is None else target_batch)
    n_targets = fit.ysum.size
    parts = []
    for start in range(0, n_targets, target_batch or n_targets):
        cols = slice(start, start + (target_batch or n_targets))
        parts.append(
            solver.path(
                fit.targets(cols),
                val.targets(cols),
                lambdas=lambdas,
                lambda_ratio=lambda_ratio,
                standardize=standardize,
                tol=tol,
                patience=patience,
                max_iter=1_000_000,
                dtype=dtype,
                cap=cap or fit.n_train,
                dense=dense,
                device=device,
            )
        )
    fields = solver.BlockResult.__dataclass_fields__
    return solver.BlockResult(**{k: np.concatenate([getattr(p, k) for p in parts], axis=-1) for k in fields})


def close(w, w_ref, rtol=1e-4):
    return np.linalg.norm(w - w_ref) <= rtol * max(np.linalg.norm(w_ref), 1e-8)


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("fraction", [0.5, 0.1, 0.02])
def test_lasso_matches_sklearn(standardize, fraction):
    masks, margins = problem()
    m = band_moments(masks, margins)
    space = SolverSpace.build(m, standardize=standardize, xp=np, dtype=np.float64)
    c, _, _ = space.targets(slice(None), np)
    lam = fraction * np.abs(c).max(axis=1)
    result = lasso(m, lam, standardize=standardize, tol=TIGHT, dtype=np.float64)
    y = margins.astype(np.float64)
    for t in range(y.shape[1]):
        x = masks.astype(np.float64)
        mean, std = x.mean(axis=0), x.std(axis=0)
        scale = std if standardize else np.ones_like(std)
        model = Lasso(alpha=lam[t], tol=TIGHT, max_iter=1_000_000).fit((x - mean) / scale, y[:, t])
        weight = model.coef_ / scale
        bias = model.intercept_ - mean @ weight
        assert np.count_nonzero(weight) > 0
        assert close(result.weight[:, t], weight)
        assert result.bias[t] == pytest.approx(bias, abs=1e-6 * max(1.0, abs(bias)))
        assert result.gap[t] <= TIGHT


@settings(max_examples=25, deadline=None)
@given(
    n_train=st.integers(2, 12),
    ratio=st.integers(3, 8),
    fraction=st.floats(0.05, 0.95),
    p=st.floats(0.2, 0.8),
    seed=st.integers(0, 2**31),
    standardize=st.booleans(),
)
def test_lasso_matches_sklearn_on_random_problems(n_train, ratio, fraction, p, seed, standardize):
    masks, margins = problem(models=ratio * n_train + 20, n_train=n_train, n_targets=2, seed=seed, p=p)
    m = band_moments(masks, margins)
    space = SolverSpace.build(m, standardize=standardize, xp=np, dtype=np.float64)
    c, _, _ = space.targets(slice(None), np)
    lam = np.maximum(fraction * np.abs(c).max(axis=1), 1e-6)
    result = lasso(m, lam, standardize=standardize, tol=TIGHT, dtype=np.float64)
    x = masks.astype(np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    scale = np.where(std > 0, std, 1.0) if standardize else np.ones_like(std)
    for t in range(2):
        y = margins[:, t].astype(np.float64)
        model = Lasso(alpha=lam[t], tol=TIGHT, max_iter=1_000_000).fit((x - mean) / scale, y)
        weight = np.where(std > 0, model.coef_ / scale, 0.0)
        assert close(result.weight[:, t], weight)


def test_lam_max_gives_zero_weights_and_just_below_does_not():
    masks, margins = problem()
    m = band_moments(masks, margins)
    for standardize in (False, True):
        space = SolverSpace.build(m, standardize=standardize, xp=np, dtype=np.float64)
        c, ybar, _ = space.targets(slice(None), np)
        lam_max = np.abs(c).max(axis=1)
        at_max = lasso(m, lam_max, standardize=standardize, tol=TIGHT, dtype=np.float64)
        assert not at_max.weight.any()
        np.testing.assert_allclose(at_max.bias, ybar)
        below = lasso(m, lam_max * 0.99, standardize=standardize, tol=TIGHT, dtype=np.float64)
        assert (np.count_nonzero(below.weight, axis=0) >= 1).all()


def test_duality_gap_bounds_suboptimality_and_reaches_tol():
    masks, margins = problem(models=300, n_train=40, n_targets=4, seed=3)
    m = band_moments(masks, margins)
    space = SolverSpace.build(m, standardize=True, xp=np, dtype=np.float64)
    c, _, syy = space.targets(slice(None), np)
    lam = 0.05 * np.abs(c).max(axis=1)
    zero = np.zeros_like(c)
    exact, _, _, _ = solve(space.gram, c, lam, syy, space.lipschitz, zero, tol=TIGHT, max_iter=100_000, xp=np)
    _, best = duality_gap(exact, exact @ space.gram, c, lam, syy, np)
    gaps = []
    for max_iter in (1, 3, 10, 30):
        w, gw, rel_gap, iters = solve(
            space.gram, c, lam, syy, space.lipschitz, zero, tol=TIGHT, max_iter=max_iter, xp=np
        )
        np.testing.assert_allclose(gw, w @ space.gram, atol=1e-12)
        gap, primal = duality_gap(w, gw, c, lam, syy, np)
        np.testing.assert_allclose(rel_gap, gap / syy)
        assert (primal - best <= gap * (1 + 1e-9) + 1e-15).all()  # the gap bounds the suboptimality
        assert (iters == max_iter).all()
        gaps.append(rel_gap)
    assert (gaps[-1] < gaps[0]).all()
    for tol in (1e-3, 1e-6, 1e-9):
        w, _, rel_gap, iters = solve(space.gram, c, lam, syy, space.lipschitz, zero, tol=tol, max_iter=100_000, xp=np)
        assert (rel_gap <= tol).all() and (iters < 100_000).all()
        assert close(w, exact, rtol=10 * np.sqrt(tol))


def test_duality_gap_is_zero_at_zero_weights_above_lam_max():
    masks, margins = problem()
    space = SolverSpace.build(band_moments(masks, margins), standardize=False, xp=np, dtype=np.float64)
    c, _, syy = space.targets(slice(None), np)
    zero = np.zeros_like(c)
    gap, primal = duality_gap(zero, zero, c, 1.5 * np.abs(c).max(axis=1), syy, np)
    np.testing.assert_allclose(gap, 0, atol=1e-15)
    np.testing.assert_allclose(primal, syy / 2)


@pytest.mark.parametrize("n", [3, 20, 60])
def test_top_eigenvalue(n):
    rng = np.random.default_rng(n)
    a = rng.standard_normal((2 * n, n))
    gram = a.T @ a / (2 * n)
    value, _ = top_eigenvalue(gram, np)
    assert value == pytest.approx(np.linalg.eigvalsh(gram).max(), rel=EIGEN_TOL)
    assert STEP_SAFETY * value > np.linalg.eigvalsh(gram).max()  # the step 1 / L stays below 1 / lambda_max


def test_top_eigenvalue_warm_start():
    """Started from the eigenvector of the working set before one feature joined, Lanczos needs
    fewer products for the same value (a working set's Gram grows a few features at a time)."""
    from scipy.sparse.linalg import LinearOperator

    rng = np.random.default_rng(7)
    x = (rng.random((3000, 400)) < 0.5).astype(np.float64)
    x -= x.mean(axis=0)
    gram = x.T @ x / 3000

    def counted(a):
        calls = []
        return LinearOperator(a.shape, matvec=lambda v: calls.append(1) or a @ v, dtype=a.dtype), calls

    _, before = top_eigenvalue(gram[:-1, :-1], np)
    cold, cold_calls = counted(gram)
    warm, warm_calls = counted(gram)
    cold_value, _ = top_eigenvalue(cold, np)
    warm_value, _ = top_eigenvalue(warm, np, np.append(before, 0.0))
    truth = np.linalg.eigvalsh(gram).max()
    assert cold_value == pytest.approx(truth, rel=EIGEN_TOL) and warm_value == pytest.approx(truth, rel=EIGEN_TOL)
    assert len(warm_calls) < len(cold_calls)


@pytest.mark.parametrize("features", [[], [2], [0, 4, 5], list(range(10))])
def test_gram_product_uses_nonzero_features_only(features):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((10, 10))
    gram = a @ a.T
    w = np.zeros((3, 10))  # three targets
    w[:, features] = rng.standard_normal((3, len(features)))
    np.testing.assert_allclose(gram_product(gram, w, np), (gram @ w.T).T, atol=1e-12)


def test_lambda_grid():
    grid = lambda_grid(np.array([1.0, 4.0]), 3, 0.01)
    np.testing.assert_allclose(grid, [[1.0, 4.0], [0.1, 0.4], [0.01, 0.04]])
    np.testing.assert_allclose(lambda_grid(np.array([2.0]), 1, 0.5), [[1.0]])


def split_rows(masks, margins, n_val):
    return (masks[:-n_val], margins[:-n_val]), (masks[-n_val:], margins[-n_val:])


def test_path_validation_mse_comes_from_the_statistics():
    masks, margins = problem(models=500, n_train=25, n_targets=5, seed=5)
    (xf, yf), (xv, yv) = split_rows(masks, margins, 120)
    path = lasso_path(
        band_moments(xf, yf), band_moments(xv, yv), lambdas=30, lambda_ratio=0.01, tol=1e-10, dtype=np.float64
    )
    predicted = xv.astype(np.float64) @ path.weight + path.bias
    direct = ((yv.astype(np.float64) - predicted) ** 2).mean(axis=0)
    np.testing.assert_allclose(path.val_mse, direct, rtol=1e-9)
    np.testing.assert_allclose(path.val_var, yv.astype(np.float64).var(axis=0), rtol=1e-9)
    assert (path.val_mse < path.val_var).all()


def test_path_selection_matches_sklearn_path_with_the_same_grid():
    masks, margins = problem(models=600, n_train=30, n_targets=4, seed=6)
    (xf, yf), (xv, yv) = split_rows(masks, margins, 150)
    lambdas, ratio = 25, 0.01
    path = lasso_path(
        band_moments(xf, yf),
        band_moments(xv, yv),
        lambdas=lambdas,
        lambda_ratio=ratio,
        patience=lambdas,
        tol=1e-12,
        standardize=False,
        dtype=np.float64,
    )
    x = xf.astype(np.float64)
    xc = x - x.mean(axis=0)
    for t in range(yf.shape[1]):
        y = yf[:, t].astype(np.float64)
        lam_max = np.abs(xc.T @ (y - y.mean())).max() / len(y)
        alphas = lam_max * ratio ** (np.arange(lambdas) / (lambdas - 1))
        _, coefs, _ = sk_lasso_path(xc, y - y.mean(), alphas=alphas, tol=1e-12, max_iter=1_000_000)
        bias = y.mean() - x.mean(axis=0) @ coefs
        mse = ((yv[:, t, None].astype(np.float64) - xv @ coefs - bias) ** 2).mean(axis=0)
        best = int(np.argmin(mse))
        assert path.lam[t] == pytest.approx(alphas[best], rel=1e-9)
        assert close(path.weight[:, t], coefs[:, best])
        assert path.steps[t] == lambdas - 1


def test_early_stop_leaves_the_path_patience_points_after_the_best():
    masks, margins = problem(models=500, n_train=25, n_targets=6, seed=7)
    (xf, yf), (xv, yv) = split_rows(masks, margins, 120)
    fit, val = band_moments(xf, yf), band_moments(xv, yv)
    lambdas, ratio, patience = 60, 1e-3, 3
    full = lasso_path(fit, val, lambdas=lambdas, lambda_ratio=ratio, patience=lambdas, tol=1e-10, dtype=np.float64)
    early = lasso_path(fit, val, lambdas=lambdas, lambda_ratio=ratio, patience=patience, tol=1e-10, dtype=np.float64)
    c, _, _ = SolverSpace.build(fit, standardize=True, xp=np, dtype=np.float64).targets(slice(None), np)
    lam_max = np.abs(c).max(axis=1)

    def step_of(lam):
        return np.rint(np.log(lam / lam_max) / np.log(ratio) * (lambdas - 1)).astype(int)

    assert (full.steps == lambdas - 1).all()
    assert (early.steps < full.steps).any()
    stopped = early.steps < lambdas - 1
    np.testing.assert_array_equal(early.steps[stopped] - step_of(early.lam[stopped]), patience)
    seen = step_of(full.lam) <= early.steps  # the full path's best was visited before the early stop
    assert seen.any()
    np.testing.assert_allclose(early.lam[seen], full.lam[seen], rtol=1e-12)
    np.testing.assert_allclose(early.weight[:, seen], full.weight[:, seen], atol=1e-9)
    assert (early.val_mse >= full.val_mse * (1 - 1e-9)).all()


def test_float32_solver_agrees_with_float64():
    masks, margins = problem(models=800, n_train=60, n_targets=5, seed=8)
    (xf, yf), (xv, yv) = split_rows(masks, margins, 150)
    fit, val = band_moments(xf, yf), band_moments(xv, yv)
    double = lasso_path(fit, val, tol=1e-6, dtype=np.float64)
    single = lasso_path(fit, val, tol=1e-6, dtype=np.float32)
    np.testing.assert_allclose(single.lam, double.lam, rtol=1e-6)
    for t in range(5):
        assert close(single.weight[:, t], double.weight[:, t], rtol=1e-2)


def test_constant_features_get_zero_weight():
    masks, margins = problem(models=200, n_train=8, n_targets=2, seed=9)
    masks[:, 3] = True
    masks[:, 5] = False
    (xf, yf), (xv, yv) = split_rows(masks, margins, 50)
    for standardize in (False, True):
        path = lasso_path(
            band_moments(xf, yf), band_moments(xv, yv), standardize=standardize, tol=1e-10, dtype=np.float64
        )
        assert not path.weight[[3, 5]].any()
        assert np.isfinite(path.weight).all() and np.isfinite(path.bias).all()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("lambdas", 0, "lambdas"),
        ("lambda_ratio", 0.0, "lambda_ratio"),
        ("lambda_ratio", 1.5, "lambda_ratio"),
        ("tol", 0.0, "tol"),
        ("patience", 0, "patience"),
        ("target_batch", 0, "target_batch"),
    ],
)
def test_bad_options_raise(option, value, message):
    masks, margins = problem(models=60, n_train=4, n_targets=1)
    m = band_moments(masks, margins)
    with pytest.raises(DmstoreError, match=message):
        lasso_path(m, m, **{option: value})


def test_target_batches_give_the_same_datamodels():
    masks, margins = problem(models=400, n_train=20, n_targets=7, seed=10)
    (xf, yf), (xv, yv) = split_rows(masks, margins, 100)
    fit, val = band_moments(xf, yf), band_moments(xv, yv)
    whole = lasso_path(fit, val, tol=1e-10, dtype=np.float64)
    batched = lasso_path(fit, val, tol=1e-10, dtype=np.float64, target_batch=3)
    np.testing.assert_allclose(batched.lam, whole.lam)
    np.testing.assert_allclose(batched.weight, whole.weight, atol=1e-7)


def test_working_sets_give_the_dense_solution_with_a_fraction_of_the_gram():
    """Strong rule + KKT check: the same weights as a solve on every feature, reading few Gram rows."""
    rng = np.random.default_rng(11)
    masks = rng.random((1500, 400)) < 0.5
    planted = np.zeros((400, 6))
    for t in range(6):
        planted[rng.choice(400, 5, replace=False), t] = rng.uniform(0.5, 1.0, 5)
    margins = (masks @ planted + rng.standard_normal((1500, 6))).astype(np.float16)
    (xf, yf), (xv, yv) = split_rows(masks, margins, 300)
    fit, val = band_moments(xf, yf), band_moments(xv, yv)
    read = []
    counts = fit.counts
    fit.counts = lambda rows: (read.append(len(rows)), counts(rows))[1]
    path = lasso_path(fit, val, tol=1e-10, dtype=np.float64, target_batch=1)
    assert sum(read) / 6 < fit.n_train / 2  # each target's path gathered under half of the Gram's rows
    x = xf.astype(np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    for t in range(6):  # scikit-learn's coordinate descent over every feature, at the lam the path chose
        model = Lasso(alpha=path.lam[t], tol=1e-12, max_iter=1_000_000).fit((x - mean) / std, yf[:, t].astype(float))
        assert close(path.weight[:, t], model.coef_ / std, rtol=1e-4)


def test_a_working_set_that_outgrows_its_cap_says_so():
    masks, margins = problem(models=400, n_train=60, n_targets=3, seed=12)
    (xf, yf), (xv, yv) = split_rows(masks, margins, 100)
    with pytest.raises(solver.WorkingSetFull):
        lasso_path(band_moments(xf, yf), band_moments(xv, yv), lambda_ratio=1e-4, patience=100, cap=2)


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_solver_on_a_second_namespace_and_device_gives_the_numpy_solution(dense, dtype, monkeypatch):
    """The path and the refit on array-api-strict's second device: the same lam, weights and
    gaps as on numpy (in float32 a target whose validation MSE is flat within rounding may pick
    the neighbouring lam: seen on an AMD EPYC), with working sets that grow and shrink (or one
    dense set)."""
    device = strict_device()
    masks, margins = problem(models=800, n_train=60, n_targets=8, seed=3)
    (xf, yf), (xv, yv) = split_rows(masks, margins, 150)
    fit, val = band_moments(xf, yf), band_moments(xv, yv)
    tol = 1e-10 if dtype is np.float64 else 1e-5
    kept = []
    keep = solver.WorkingSet.keep
    monkeypatch.setattr(solver.WorkingSet, "keep", lambda ws, mask: (kept.append(ws.device.name), keep(ws, mask))[1])
    results = {}
    for name, dev in (("numpy", CPU), ("strict", device)):
        path = lasso_path(fit, val, lambdas=40, lambda_ratio=1e-3, patience=2, tol=tol, dtype=dtype, dense=dense,
                          device=dev)
        refit = lasso(fit + val, path.lam, tol=tol, dtype=dtype, weight=path.weight, device=dev)
        results[name] = path, refit
    assert dense or "array-api-strict" in kept  # the working set shrank on the second device too
    (path, refit), (strict_path, strict_refit) = results["numpy"], results["strict"]
    assert (np.count_nonzero(path.weight, axis=0) > 0).all()
    same = strict_path.lam == path.lam
    if dtype is np.float64:
        assert same.all()
        np.testing.assert_array_equal(strict_path.steps, path.steps)
    else:  # float32: a target whose validation curve is flat within the solve's rounding may pick a neighbour
        assert same.sum() >= 6
        np.testing.assert_allclose(strict_path.val_mse[~same], path.val_mse[~same], rtol=1e-4)
    rtol = 1e-8 if dtype is np.float64 else 1e-3  # float32: iterates differ by rounding (eigsh vs eigvalsh step)
    for t in np.flatnonzero(same):
        assert close(strict_path.weight[:, t], path.weight[:, t], rtol)
        assert close(strict_refit.weight[:, t], refit.weight[:, t], rtol)
    assert (strict_refit.gap <= tol).all()


def test_a_hidden_crossing_to_numpy_fails_on_the_second_device():
    """The check above can fail: numpy applied to an array of the second device raises."""
    device = strict_device()
    array = device.put(np.ones((2, 3)), np.float32)
    with pytest.raises(RuntimeError, match="NumPy"):
        np.abs(array)
    np.testing.assert_array_equal(device.get(device.xp.abs(array)), np.ones((2, 3), dtype=np.float32))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_refit_on_kept_validation_masks_equals_the_refit_on_the_pooled_counts(dtype):
    """The refit's working set gathers only the fit rows' counts; the validation rows enter by
    their masks (the pooled identity): the solution of the LASSO on all rows, on either device."""
    masks, margins = problem(models=700, n_train=60, n_targets=4, seed=31)
    (xf, yf), (xv, yv) = split_rows(masks, margins, 200)
    fit, val = band_moments(xf, yf), band_moments(xv, yv)
    kept = of_masks(xv, val.xty, val.ysum, val.yy)
    tol = 1e-10 if dtype is np.float64 else 1e-5
    c, _, _ = SolverSpace.build(fit + val, standardize=True, xp=np, dtype=np.float64).targets(slice(None), np)
    lam = 0.05 * np.abs(c).max(axis=1)
    pooled = lasso(fit + val, lam, tol=1e-12, dtype=np.float64)  # every count gathered
    assert (np.count_nonzero(pooled.weight, axis=0) > 3).all()
    for device in (CPU, Device(np, int8=False), strict_device()):  # float32: int8 products of the masks first
        weight, bias, gap, _ = solver.refit(fit, lam, np.zeros((60, 4)), standardize=True, tol=tol, max_iter=100_000,
                                            dtype=dtype, cap=60, device=device, val=kept)
        rtol = 1e-7 if dtype is np.float64 else 1e-3
        for t in range(4):
            assert close(weight[:, t], pooled.weight[:, t], rtol)
        np.testing.assert_allclose(bias, pooled.bias, rtol=rtol, atol=rtol)
        assert (gap <= tol).all()
