"""FISTA for a batch of targets on one Gram: the inner solver of :mod:`dmstore.fitting.solver`.

Per target ``t`` the problem is (the same objective as scikit-learn's ``Lasso``)::

    minimise_{w, b}  1/(2n) ||y_t - X w - b||^2 + lam_t ||w||_1

The intercept is not penalised, so it is eliminated by centring: with the centred Gram
``G = X^T X / n - mean mean^T`` and the centred ``c_t = X^T y_t / n - mean * ybar_t`` the problem
becomes ``minimise 1/2 w^T G w - c_t^T w + lam_t ||w||_1`` and ``b_t = ybar_t - mean^T w``.
With ``standardize`` the solver works on standardised features ``(x - mean) / std`` (as fast_l1
does); the weights returned are always in raw mask space (prediction = ``mask @ weight + bias``).

Here ``G`` is the Gram of a working set of features (:mod:`dmstore.fitting.solver` checks the
optimality conditions over all features). The solver is FISTA with function-value restart, for a
batch of targets at once (one GEMM ``W @ G`` per iteration, restricted to the features where
``W`` is not all zero), step ``1 / L`` with ``L`` the largest eigenvalue of ``G``, and a
per-target duality-gap stopping rule. A batch is target-major (``[B, K]``, one row per target),
so that targets leaving the batch and per-target reductions touch contiguous memory. All arrays
live in the namespace ``xp`` (:mod:`dmstore.fitting.device`: numpy, CuPy, or any namespace of the
array API standard).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dmstore.errors import DmstoreError

#: Multiplies the estimated largest eigenvalue of ``G``: a step slightly under ``1/L``.
STEP_SAFETY = 1.01
#: Relative tolerance of the Lanczos estimate of that eigenvalue (its error is far smaller).
EIGEN_TOL = 1e-3


def top_eigenvalue(gram: Any, xp: Any, start: np.ndarray | None = None) -> tuple[float, np.ndarray | None]:
    """Largest eigenvalue of the symmetric positive semi-definite ``gram`` to a relative
    :data:`EIGEN_TOL` (below ``STEP_SAFETY``), and its eigenvector (host): Lanczos (``eigsh``) on
    numpy and CuPy, from ``start`` (host: the eigenvector of a similar matrix, a warm start) or a
    fixed random vector; a dense ``eigvalsh`` in other namespaces (no vector)."""
    n = gram.shape[0]
    if n > 16 and (xp is np or type(gram).__module__.startswith("cupy")):
        if start is None or not start.any():
            start = np.random.default_rng(0).standard_normal(n)  # deterministic
        if xp is np:
            from scipy.sparse.linalg import eigsh
        else:
            from cupyx.scipy.sparse.linalg import eigsh
        values, vectors = eigsh(gram, k=1, which="LM", tol=EIGEN_TOL, v0=xp.asarray(start, dtype=gram.dtype))
        vector = vectors[:, 0] if xp is np else vectors[:, 0].get()
        return max(float(values.max()), 1e-30), vector
    return max(float(xp.max(xp.linalg.eigvalsh(gram))), 1e-30), None


def used_features(w: Any, xp: Any) -> Any:
    """Positions of the features (columns of ``w``) that are not zero for every target."""
    return xp.nonzero(xp.any(w != 0, axis=0))[0]


def gram_product(gram: Any, w: Any, xp: Any) -> Any:
    """``w @ gram`` (``[B, M]``, = ``(gram @ w.T).T`` where ``gram`` is symmetric) for ``gram``
    with a row per feature, using only the features (columns of ``w``) that are not all zero."""
    cols = used_features(w, xp)
    if cols.shape[0] > gram.shape[0] // 2:
        return w @ gram
    if cols.shape[0] == 0:
        return xp.zeros_like(w)
    return xp.take(w, cols, axis=1) @ xp.take(gram, cols, axis=0)


def row_dots(a: Any, b: Any, xp: Any) -> Any:
    """``[B]`` dot products of the rows (targets) of ``a`` and ``b``, summed in float64."""
    return xp.sum(a * b, axis=1, dtype=xp.float64)


def duality_gap(w: Any, gw: Any, c: Any, lam: Any, syy: Any, xp: Any) -> tuple[Any, Any]:
    """Duality gap and primal objective of ``1/2 w'Gw - c'w + lam |w|_1`` (+ ``syy / 2``) per target.

    ``w``, ``gw`` (``w @ G``) and ``c`` are ``[B, N]``; ``lam`` and ``syy`` ``[B]`` float64. The
    dual point is the residual scaled into the feasible set (as scikit-learn does), so the gap
    bounds the suboptimality of the primal objective ``1/(2n)||y - Xw - b||^2 + lam |w|_1``.
    """
    cw = row_dots(c, w, xp)
    wgw = row_dots(w, gw, xp)
    l1 = xp.sum(xp.abs(w), axis=1, dtype=xp.float64)
    residual = xp.maximum(syy - 2.0 * cw + wgw, 0.0)
    dual_norm = xp.astype(xp.max(xp.abs(c - gw), axis=1), xp.float64)
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
    xp: Any,
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
        ``[B]`` float64 regularisation and margin variance of each target.
    lipschitz
        An upper estimate of the largest eigenvalue of ``gram`` (the step is its inverse).
    tol
        A target stops when its duality gap is at most ``tol * syy``; a target whose gap is
        not there after ``max_iter`` iterations stops too (its gap says so).
    xp
        The arrays' namespace (array API standard).

    Returns
    -------
    The weights and ``weights @ gram`` ``[B, N]``, the relative gaps (float64) and the iterations
    of each target (both ``[B]``, in ``xp``).

    Notes
    -----
    Memory: ``gram`` plus about ten ``[B, N]`` arrays of its dtype. Targets that reach their
    gap leave the batch, so the GEMM shrinks as the batch converges.
    """
    n_cols = c.shape[0]
    dtype = w.dtype
    running = xp.arange(n_cols, device=w.device)
    finished: list[tuple[Any, Any, Any, Any, int]] = []  # targets, weights, products, gaps, iteration
    threshold = tol * xp.maximum(syy, 1e-300)
    step = 1.0 / lipschitz
    gw = gram_product(gram, w, xp) if gw is None else gw
    w_prev, gw_prev = w, gw
    t = xp.ones(n_cols, dtype=xp.float64, device=w.device)
    primal_prev = xp.full(n_cols, xp.inf, dtype=xp.float64, device=w.device)
    for iteration in range(max_iter + 1):
        gap, primal = duality_gap(w, gw, c, lam, syy, xp)
        done = (gap <= threshold) | (iteration == max_iter)
        if bool(xp.any(done)):
            finished.append((running[done], w[done], gw[done], gap[done] / xp.maximum(syy[done], 1e-300),
                             iteration))
            keep = ~done
            if not bool(xp.any(keep)):
                break
            running, threshold, primal, t = running[keep], threshold[keep], primal[keep], t[keep]
            c, lam, syy = c[keep], lam[keep], syy[keep]
            w, gw, w_prev, gw_prev = w[keep], gw[keep], w_prev[keep], gw_prev[keep]
            primal_prev = primal_prev[keep]
        # momentum, restarted where the objective went up
        t = xp.where(primal > primal_prev, 1.0, t)
        t_next = 0.5 * (1.0 + xp.sqrt(1.0 + 4.0 * t * t))
        beta = xp.astype((t - 1.0) / t_next, dtype)[:, None]
        y = w - w_prev
        y *= beta
        y += w
        gy = gw - gw_prev
        gy *= beta
        gy += gw
        # proximal gradient step from y: soft-threshold y - (Gy - c) / L at lam / L
        gy -= c
        gy *= step
        y -= gy
        shrink = xp.astype(lam * step, dtype)[:, None]
        w_new = y - xp.clip(y, -shrink, shrink)
        w_prev, gw_prev = w, gw
        w, gw = w_new, gram_product(gram, w_new, xp)
        t, primal_prev = t_next, primal
    order = xp.argsort(xp.concat([f[0] for f in finished]))
    out = [xp.take(xp.concat([f[i] for f in finished]), order, axis=0) for i in (1, 2, 3)]
    iterations = xp.concat([xp.full(f[0].shape[0], f[4], dtype=xp.int64, device=order.device) for f in finished])
    return out[0], out[1], out[2], xp.take(iterations, order)


def lambda_grid(lam_max: np.ndarray, lambdas: int, lambda_ratio: float) -> np.ndarray:
    """``[lambdas, T]`` geometric grid from ``lam_max`` down to ``lam_max * lambda_ratio``."""
    if lambdas == 1:
        return (lam_max * lambda_ratio)[None, :]
    powers = np.arange(lambdas) / (lambdas - 1)
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
