"""Batched LASSO for all targets at once, from the sufficient statistics alone (no data).

Per target ``t`` the problem is (the same objective as scikit-learn's ``Lasso``)::

    minimise_{w, b}  1/(2n) ||y_t - X w - b||^2 + lam_t ||w||_1

The intercept is not penalised, so it is eliminated by centring: with the centred Gram
``G = X^T X / n - mean mean^T`` and the centred ``c_t = X^T y_t / n - mean * ybar_t`` the problem
becomes ``minimise 1/2 w^T G w - c_t^T w + lam_t ||w||_1`` and ``b_t = ybar_t - mean^T w``.
With ``standardize`` the solver works on standardised features ``(x - mean) / std`` (as fast_l1
does); the weights returned are always in raw mask space (prediction = ``mask @ weight + bias``).

The solver is FISTA with function-value restart on the Gram, for a batch of targets at once
(one GEMM ``W @ G`` per iteration, restricted to the features where ``W`` is not all zero),
step ``1 / L`` with ``L`` the largest eigenvalue of ``G``, and a per-target duality-gap stopping
rule. Inside the solver a batch is target-major (``[B, N]``, one row per target), so that
targets leaving the batch and per-target reductions touch contiguous memory. All arrays live in
the namespace ``xp`` (numpy, or cupy on a GPU); the inputs are
:class:`~dmstore.moments.Moments` and the results come back as numpy arrays (``[N, T]``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from dmstore.errors import DmstoreError
from dmstore.moments import Moments, to_numpy

#: Multiplies the estimated largest eigenvalue of ``G``: a step slightly under ``1/L``.
STEP_SAFETY = 1.01
#: ``G @ W`` products below this many flops run on one BLAS thread: waking threads costs more than
#: it saves, and far more on a busy machine (measured: N=1000, B=40 in 12 ms on two threads of a
#: loaded 2-core machine, 1.4 ms on one).
SMALL_GEMM_FLOPS = 1e9
#: Rows of the Gram centred at once.
CENTRE_ROWS = 1024


@dataclass(frozen=True)
class SolverSpace:
    """The centred (and optionally standardised) Gram of one set of rows, in the solver's space.

    ``scale[j]`` maps raw features to solver features (``1/std`` or 1; 0 for a feature that
    never varies, whose weight is then always 0): ``w_raw = scale * w_solver``.
    """

    moments: Moments
    mean: Any
    scale: Any
    gram: Any
    lipschitz: float

    @classmethod
    def build(cls, moments: Moments, *, standardize: bool, xp: ModuleType, dtype: Any) -> SolverSpace:
        """Centre (and standardise) the Gram of ``moments`` on the device of ``xp``."""
        mean, cov = centred_gram(moments, xp)
        var = xp.diagonal(cov).copy()
        varies = var > 1e-12
        if standardize:
            scale = xp.where(varies, 1.0 / xp.sqrt(xp.where(varies, var, 1.0)), 0.0)
        else:
            scale = varies.astype(xp.float64)
        cov *= scale[:, None]
        cov *= scale[None, :]
        gram = cov.astype(dtype, copy=False)
        return cls(moments, mean, scale, gram, STEP_SAFETY * top_eigenvalue(gram, xp))

    def targets(self, columns: slice | np.ndarray, xp: ModuleType) -> tuple[Any, Any, Any]:
        """``c`` ``[B, N]`` in the solver space, ``ybar`` and the margin variance ``syy`` ``[B]``."""
        m = self.moments
        ybar = xp.asarray(m.ysum[columns]) / m.n
        syy = xp.maximum(xp.asarray(m.yy[columns]) / m.n - ybar**2, 0.0)
        c = xp.asarray(m.xty[:, columns]).T / m.n - ybar[:, None] * self.mean[None, :]
        c *= self.scale[None, :]
        return xp.ascontiguousarray(c.astype(self.gram.dtype)), ybar, syy

    def to_raw(self, w: Any, ybar: Any, xp: ModuleType) -> tuple[Any, Any]:
        """Raw mask-space weights ``[N, B]`` and intercepts ``[B]`` of solver-space weights ``w`` ``[B, N]``."""
        weight = w.astype(xp.float64) * self.scale[None, :]
        return weight.T, ybar - weight @ self.mean

    def from_raw(self, weight: Any, xp: ModuleType) -> Any:
        """Solver-space weights ``[B, N]`` of raw weights ``[N, B]`` (0 for features that never vary)."""
        safe = xp.where(self.scale > 0, self.scale, 1.0)
        w = xp.where(self.scale[None, :] > 0, xp.asarray(weight).T / safe[None, :], 0.0)
        return xp.ascontiguousarray(w.astype(self.gram.dtype))


@dataclass(frozen=True)
class LassoResult:
    """Datamodels of a set of targets (numpy arrays).

    Attributes
    ----------
    weight
        ``[N, T]`` raw mask-space weights; ``bias`` ``[T]``; prediction = ``mask @ weight + bias``.
    lam
        ``[T]`` regularisation strength of each target (in the solver's space).
    gap
        ``[T]`` relative duality gap reached (gap / margin variance).
    iterations
        ``[T]`` solver iterations spent on each target (all path points together).
    """

    weight: np.ndarray
    bias: np.ndarray
    lam: np.ndarray
    gap: np.ndarray
    iterations: np.ndarray


@dataclass(frozen=True)
class PathResult(LassoResult):
    """A validation-selected point of the path for each target (fitted on the fit rows only).

    Attributes
    ----------
    val_mse, val_var
        ``[T]`` validation mean squared error at the chosen ``lam`` and the variance of the
        margins over the validation rows (``1 - val_mse / val_var`` is the validation R^2).
    steps
        ``[T]`` path points solved before the target stopped.
    """

    val_mse: np.ndarray
    val_var: np.ndarray
    steps: np.ndarray


def centred_gram(moments: Moments, xp: ModuleType) -> tuple[Any, Any]:
    """Mask means ``[N]`` and centred Gram ``X^T X / n - mean mean^T`` ``[N, N]`` (float64)."""
    if moments.n < 1:
        raise DmstoreError("no model rows to fit: the fit (or validation) set is empty")
    mean = xp.asarray(moments.xsum) / moments.n
    cov = xp.asarray(moments.xtx) / moments.n
    for start in range(0, cov.shape[0], CENTRE_ROWS):  # row blocks: no second N x N array
        rows = slice(start, start + CENTRE_ROWS)
        cov[rows] -= mean[rows, None] * mean[None, :]
    return mean, cov


def top_eigenvalue(gram: Any, xp: ModuleType) -> float:
    """Largest eigenvalue of the symmetric positive semi-definite ``gram`` (Lanczos, ``eigsh``)."""
    n = gram.shape[0]
    if n <= 16:
        return max(float(xp.linalg.eigvalsh(gram).max()), 1e-30)
    if xp is np:
        from scipy.sparse.linalg import eigsh

        start = {"v0": np.random.default_rng(0).standard_normal(n).astype(gram.dtype)}  # deterministic
    else:
        from cupyx.scipy.sparse.linalg import eigsh

        start = {}  # CuPy starts from a fixed vector (older CuPy has no v0)
    value = eigsh(gram, k=1, which="LM", tol=1e-6, return_eigenvectors=False, **start)
    return max(float(value.max()), 1e-30)


def gram_product(gram: Any, w: Any, xp: ModuleType) -> Any:
    """``w @ gram`` (``[B, N]``, = ``(gram @ w.T).T`` as ``gram`` is symmetric), using only the
    features (columns of ``w``) that are not all zero."""
    cols = xp.flatnonzero(w.any(axis=0))
    if cols.size > gram.shape[0] // 2:
        return w @ gram
    if cols.size == 0:
        return xp.zeros_like(w)
    return w[:, cols] @ gram[cols]


def row_dots(a: Any, b: Any, xp: ModuleType) -> Any:
    """``[B]`` dot products of the rows (targets) of ``a`` and ``b``, summed in float64."""
    return (a * b).sum(axis=1, dtype=xp.float64)


def duality_gap(w: Any, gw: Any, c: Any, lam: Any, syy: Any, xp: ModuleType) -> tuple[Any, Any]:
    """Duality gap and primal objective of ``1/2 w'Gw - c'w + lam |w|_1`` (+ ``syy / 2``) per target.

    ``w``, ``gw`` (``w @ G``) and ``c`` are ``[B, N]``; ``lam`` and ``syy`` ``[B]``. The dual point
    is the residual scaled into the feasible set (as scikit-learn does), so the gap bounds the
    suboptimality of the primal objective ``1/(2n)||y - Xw - b||^2 + lam |w|_1``.
    """
    cw = row_dots(c, w, xp)
    wgw = row_dots(w, gw, xp)
    l1 = xp.abs(w).sum(axis=1, dtype=xp.float64)
    residual = xp.maximum(syy - 2.0 * cw + wgw, 0.0)
    grad = c - gw
    dual_norm = xp.maximum(grad.max(axis=1), -grad.min(axis=1)).astype(xp.float64)
    kappa = xp.where(dual_norm > lam, lam / xp.maximum(dual_norm, 1e-300), 1.0)
    primal = 0.5 * residual + lam * l1
    dual = kappa * (syy - cw) - 0.5 * kappa**2 * residual
    return primal - dual, primal


def solve(
    gram: Any,
    c: Any,
    lam: Any,
    syy: Any,
    lipschitz: float,
    w: Any,
    gw: Any | None = None,
    *,
    tol: float,
    max_iter: int,
    xp: ModuleType,
) -> tuple[Any, Any, Any, Any]:
    """FISTA with restart for a batch of targets at once, each to its own duality gap.

    Parameters
    ----------
    gram
        ``[N, N]`` centred Gram in the solver's space.
    c, w
        ``[B, N]`` centred ``X^T y / n`` of each target and the starting weights (warm start).
    gw
        ``w @ gram`` if known (a warm start from the previous path point), saving one product.
    lam, syy
        ``[B]`` regularisation and margin variance of each target.
    lipschitz
        An upper estimate of the largest eigenvalue of ``gram`` (the step is its inverse).
    tol
        A target stops when its duality gap is at most ``tol * syy``; a target whose gap is
        not there after ``max_iter`` iterations stops too (its gap says so).

    Returns
    -------
    The weights and ``weights @ gram`` ``[B, N]``, the relative gaps and the iterations of each target.

    Notes
    -----
    Memory: ``gram`` plus about ten ``[B, N]`` arrays of its dtype. Targets that reach their
    gap leave the batch, so the GEMM shrinks as the batch converges.
    """
    n_cols = c.shape[0]
    out_w, out_gw = xp.empty_like(w), xp.empty_like(w)
    out_gap = xp.zeros(n_cols)
    out_iter = xp.zeros(n_cols, dtype=xp.int64)
    running = xp.arange(n_cols)
    threshold = tol * xp.maximum(syy, 1e-300)
    step = 1.0 / lipschitz
    w = w.copy()
    gw = gram_product(gram, w, xp) if gw is None else gw
    w_prev, gw_prev = w.copy(), gw.copy()
    y, gy = xp.empty_like(w), xp.empty_like(w)
    t = xp.ones(n_cols)
    primal_prev = xp.full(n_cols, xp.inf)
    for iteration in range(max_iter + 1):
        gap, primal = duality_gap(w, gw, c, lam, syy, xp)
        done = (gap <= threshold) | (iteration == max_iter)
        if bool(done.any()):
            cols = running[done]
            out_w[cols] = w[done]
            out_gw[cols] = gw[done]
            out_gap[cols] = gap[done] / xp.maximum(syy[done], 1e-300)
            out_iter[cols] = iteration
            keep = ~done
            if not bool(keep.any()):
                break
            running, threshold, primal, t = running[keep], threshold[keep], primal[keep], t[keep]
            c, lam, syy = c[keep], lam[keep], syy[keep]
            w, gw, w_prev, gw_prev = w[keep], gw[keep], w_prev[keep], gw_prev[keep]
            primal_prev = primal_prev[keep]
            y, gy = xp.empty_like(w), xp.empty_like(w)
        # momentum, restarted where the objective went up
        t = xp.where(primal > primal_prev, 1.0, t)
        t_next = 0.5 * (1.0 + xp.sqrt(1.0 + 4.0 * t * t))
        beta = ((t - 1.0) / t_next).astype(w.dtype)[:, None]
        xp.subtract(w, w_prev, out=y)
        y *= beta
        y += w
        xp.subtract(gw, gw_prev, out=gy)
        gy *= beta
        gy += gw
        # proximal gradient step from y: soft-threshold y - (Gy - c) / L at lam / L
        gy -= c
        gy *= step
        y -= gy
        w_new = w_prev
        xp.abs(y, out=w_new)
        w_new -= (lam * step).astype(w.dtype)[:, None]
        xp.maximum(w_new, 0, out=w_new)
        xp.copysign(w_new, y, out=w_new)
        w_prev, gw_prev = w, gw
        w, gw = w_new, gram_product(gram, w_new, xp)
        t, primal_prev = t_next, primal
    return out_w, out_gw, out_gap, out_iter


def blas_threads(n_train: int, batch: int, xp: ModuleType) -> AbstractContextManager:
    """One BLAS thread for the solver's small products on the CPU; no limit otherwise."""
    if xp is not np or 2.0 * n_train**2 * batch >= SMALL_GEMM_FLOPS:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def target_batches(n_targets: int, batch: int) -> Iterator[slice]:
    """Consecutive slices of at most ``batch`` targets."""
    for start in range(0, n_targets, batch):
        yield slice(start, min(start + batch, n_targets))


def lambda_grid(lam_max: Any, lambdas: int, lambda_ratio: float, xp: ModuleType) -> Any:
    """``[lambdas, T]`` geometric grid from ``lam_max`` down to ``lam_max * lambda_ratio``."""
    if lambdas == 1:
        return (lam_max * lambda_ratio)[None, :]
    powers = xp.arange(lambdas) / (lambdas - 1)
    return lam_max[None, :] * lambda_ratio ** powers[:, None]


def check_options(lambdas: int, lambda_ratio: float, tol: float, patience: int, target_batch: int) -> None:
    """Raise a :class:`DmstoreError` for an option out of its range."""
    if lambdas < 1:
        raise DmstoreError(f"lambdas must be at least 1, got {lambdas}")
    if not 0 < lambda_ratio <= 1:
        raise DmstoreError(f"lambda_ratio must be in (0, 1], got {lambda_ratio}")
    if not tol > 0:
        raise DmstoreError(f"tol must be positive, got {tol}")
    if patience < 1:
        raise DmstoreError(f"patience must be at least 1, got {patience}")
    if target_batch < 1:
        raise DmstoreError(f"target_batch must be at least 1, got {target_batch}")


def lasso(
    moments: Moments,
    lam: np.ndarray,
    *,
    standardize: bool = True,
    tol: float = 1e-4,
    weight: np.ndarray | None = None,
    target_batch: int = 1024,
    max_iter: int = 10_000,
    xp: ModuleType = np,
    dtype: Any = np.float64,
    progress: Callable[[int], None] | None = None,
) -> LassoResult:
    """The LASSO of every target of ``moments`` at its own ``lam`` (solver space).

    Parameters
    ----------
    moments
        Statistics of the rows to fit (``T`` targets).
    lam
        ``[T]`` regularisation strengths.
    weight
        ``[N, T]`` raw weights to start from (warm start), zeros by default.
    progress
        Called with the number of targets finished after each batch.

    Notes
    -----
    Memory on the device: the Gram (``N^2`` of ``dtype``, plus a float64 ``N^2`` while it is
    built) and about twelve ``[N, target_batch]`` arrays.
    """
    check_options(1, 1.0, tol, 1, target_batch)
    space = SolverSpace.build(moments, standardize=standardize, xp=xp, dtype=dtype)
    n_targets = moments.n_targets
    weights, biases, gaps, iterations = [], [], [], []
    for batch in target_batches(n_targets, target_batch):
        c, ybar, syy = space.targets(batch, xp)
        lam_b = xp.asarray(np.asarray(lam, dtype=np.float64)[batch])
        w0 = xp.zeros_like(c) if weight is None else space.from_raw(weight[:, batch], xp)
        with blas_threads(moments.n_train, c.shape[0], xp):
            w, _, gap, iters = solve(
                space.gram, c, lam_b, syy, space.lipschitz, w0, tol=tol, max_iter=max_iter, xp=xp
            )
        raw, bias = space.to_raw(w, ybar, xp)
        weights.append(to_numpy(raw))
        biases.append(to_numpy(bias))
        gaps.append(to_numpy(gap))
        iterations.append(to_numpy(iters))
        if progress is not None:
            progress(batch.stop - batch.start)
    return LassoResult(
        np.concatenate(weights, axis=1) if weights else np.zeros((moments.n_train, 0)),
        np.concatenate(biases) if biases else np.zeros(0),
        np.asarray(lam, dtype=np.float64),
        np.concatenate(gaps) if gaps else np.zeros(0),
        np.concatenate(iterations) if iterations else np.zeros(0, dtype=np.int64),
    )


def lasso_path(
    fit: Moments,
    val: Moments,
    *,
    lambdas: int = 100,
    lambda_ratio: float = 1e-3,
    standardize: bool = True,
    tol: float = 1e-4,
    patience: int = 5,
    target_batch: int = 1024,
    max_iter: int = 10_000,
    xp: ModuleType = np,
    dtype: Any = np.float64,
    progress: Callable[[int], None] | None = None,
) -> PathResult:
    """Solve down a geometric ``lam`` path per target, fitted on ``fit``, selected on ``val``.

    Each target's path runs from its ``lam_max = max_j |c_j|`` (where the weights are all zero)
    down to ``lam_max * lambda_ratio`` in ``lambdas`` points, warm-starting each point from the
    previous one. After each point the validation MSE of each target follows from ``val``'s
    statistics (``var - 2 c_val'w + w'G_val w + offset^2``, no data); a target stops, and
    leaves the batch, once ``patience`` points in a row have not improved on its best, and
    keeps the weights of its best point.

    Notes
    -----
    Memory on the device: two Grams (fit and validation, ``2 N^2`` of ``dtype`` plus one float64
    ``N^2`` while each is built) and about seventeen ``[target_batch, N]`` arrays.
    """
    check_options(lambdas, lambda_ratio, tol, patience, target_batch)
    space = SolverSpace.build(fit, standardize=standardize, xp=xp, dtype=dtype)
    val_mean, val_cov = centred_gram(val, xp)
    val_cov *= space.scale[:, None]
    val_cov *= space.scale[None, :]
    val_space = SolverSpace(val, val_mean, space.scale, val_cov.astype(dtype, copy=False), space.lipschitz)
    del val_cov
    parts: dict[str, list[np.ndarray]] = {k: [] for k in PathResult.__dataclass_fields__}
    for batch in target_batches(fit.n_targets, target_batch):
        with blas_threads(fit.n_train, batch.stop - batch.start, xp):
            result = _path_batch(
                space, val_space, batch, lambdas=lambdas, lambda_ratio=lambda_ratio, tol=tol,
                patience=patience, max_iter=max_iter, xp=xp, progress=progress,
            )
        for name, value in result.items():
            parts[name].append(to_numpy(value))
    return PathResult(**{k: np.concatenate(v, axis=-1) for k, v in parts.items()})


def _path_batch(
    space: SolverSpace,
    val_space: SolverSpace,
    batch: slice,
    *,
    lambdas: int,
    lambda_ratio: float,
    tol: float,
    patience: int,
    max_iter: int,
    xp: ModuleType,
    progress: Callable[[int], None] | None,
) -> dict[str, Any]:
    """The path of one batch of targets (see :func:`lasso_path`); the fields of a :class:`PathResult`."""
    c, ybar, syy = space.targets(batch, xp)
    c_val, ybar_val, syy_val = val_space.targets(batch, xp)
    # validation residual mean = offset - shift @ w (fit-space intercept on the validation rows)
    offset = ybar_val - ybar
    shift = ((val_space.mean - space.mean) * space.scale).astype(c.dtype)

    def val_mse(w: Any, rows: Any) -> Any:
        fitted = row_dots(w, gram_product(val_space.gram, w, xp), xp)
        fitted -= 2 * row_dots(c_val[rows], w, xp)
        return syy_val[rows] + fitted + (offset[rows] - w @ shift) ** 2

    n_cols = c.shape[0]
    grid = lambda_grid(xp.abs(c).max(axis=1).astype(xp.float64), lambdas, lambda_ratio, xp)
    w, gw = xp.zeros_like(c), xp.zeros_like(c)
    best_w = xp.zeros_like(c)
    best_mse = val_mse(w, xp.arange(n_cols))
    best_step = xp.zeros(n_cols, dtype=xp.int64)
    gap = xp.zeros(n_cols)
    iterations = xp.zeros(n_cols, dtype=xp.int64)
    steps = xp.zeros(n_cols, dtype=xp.int64)
    stale = xp.zeros(n_cols, dtype=xp.int64)
    active = xp.arange(n_cols)
    for step in range(1 if lambdas > 1 else 0, lambdas):
        w_a, gw[active], gap_a, iters_a = solve(
            space.gram, c[active], grid[step, active], syy[active], space.lipschitz,
            w[active], gw[active], tol=tol, max_iter=max_iter, xp=xp,
        )
        w[active] = w_a
        iterations[active] += iters_a
        steps[active] = step
        mse = val_mse(w_a, active)
        better = (mse < best_mse[active]) | (lambdas == 1)
        improved = active[better]
        best_mse[improved] = mse[better]
        best_step[improved] = step
        best_w[improved] = w_a[better]
        gap[improved] = gap_a[better]
        stale[active] = xp.where(better, 0, stale[active] + 1)
        finished = stale[active] >= patience
        if progress is not None and bool(finished.any()):
            progress(int(finished.sum()))
        active = active[~finished]
        if active.size == 0:
            break
    if progress is not None and active.size:
        progress(int(active.size))
    weight, bias = space.to_raw(best_w, ybar, xp)
    return {
        "weight": weight, "bias": bias, "lam": grid[best_step, xp.arange(n_cols)], "gap": gap,
        "iterations": iterations, "val_mse": best_mse, "val_var": syy_val, "steps": steps,
    }
