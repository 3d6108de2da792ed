"""The LASSO path of a block of targets with working sets: only the Gram rows it needs.

Per target ``t`` (the objective of scikit-learn's ``Lasso`` and of fast_l1)::

    minimise_{w, b}  1/(2n) ||y_t - X w - b||^2 + lam_t ||w||_1

Centring eliminates the intercept: with ``G = X^T X / n - m m^T`` and
``c_t = X^T y_t / n - m ybar_t`` the problem is ``1/2 w'Gw - c_t'w + lam_t |w|_1`` and
``b_t = ybar_t - m'w``; with ``standardize`` features are scaled to unit variance (``s = 1/std``,
as fast_l1 does). Stored weights are in raw mask space either way.

At CIFAR-10 width ``G`` is ``50,000 x 50,000`` and the solutions have tens to thousands of
non-zeros, so a block of targets works on a *working set* ``U`` of features shared by the
block: the rows ``G[U, :]`` are gathered from the persisted counts, FISTA
(:mod:`dmstore.fitting.fista`) solves the problem restricted to ``U`` on ``G[U, U]``, and the
exact optimality (KKT) conditions are then checked over **all** features with the full gradient
``c - w G[U, :]``: every feature outside ``U`` whose gradient exceeds ``lam`` joins ``U`` and the
solve repeats. A point is accepted only when no feature violates them, so its duality gap is
that of the full problem. Before each path point the features that violate the conditions at the
new ``lam`` join (a working set in the manner of celer and skglm: the sequential strong rule's
wider set, ``|grad_j| >= 2 lam_k - lam_{k-1}``, grows far faster once ``lam`` reaches the noise
level), and after it the features no running target uses leave.

Validation needs no second ``N x N`` array: the validation MSE of weights ``w`` on ``U`` needs
``w' G_val[U, U] w``, the mean square of the centred validation predictions, computed from the
validation rows' masks of ``U`` (kept beside ``G[U, :]``), and ``c_val[U]``.

The arrays of the solve live on a :class:`~dmstore.fitting.device.Device` (numpy, or CuPy on a
GPU): the counts gathered from the store and the target statistics enter through its ``put``;
the features that join or leave the working set, the validation MSE and the chosen weights come
back through its ``get`` (vectors of ``N`` or ``[B, K]`` weights per path point).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import sparse

from dmstore.errors import DmstoreError
from dmstore.fitting.device import CPU, Device
from dmstore.fitting.fista import STEP_SAFETY, gram_product, lambda_grid, row_dots, solve, top_eigenvalue, used_features
from dmstore.fitting.moments import MASK_COLUMNS, Statistics
from dmstore.fitting.products import masks_times

#: A feature outside the working set violates the optimality conditions when its gradient exceeds
#: ``lam`` by more than this relative margin (float32 rounding of a feature exactly at ``lam``).
KKT_MARGIN = 1e-5
#: Rows converted from counts to the solver's space at once on a device other than the CPU (the
#: host buffer they pass through).
CONVERT_ROWS = 1024
#: The working set is compacted once fewer than this share of its features are in use (compacting
#: copies its rows, so not after every path point).
PRUNE_BELOW = 0.5


class WorkingSetFull(Exception):
    """The working set of a block outgrew its memory: solve fewer targets together."""


@dataclass(frozen=True)
class Space:
    """The solver's space for one :class:`Statistics`: feature means and scales (host, float64),
    target sums, and the device the solver's arrays live on."""

    stats: Statistics
    mean: np.ndarray
    scale: np.ndarray
    dtype: Any
    device: Device = field(default=CPU)
    divisor: int = 0  # the rows the Gram is an average over (0: the statistics' own)

    @classmethod
    def build(
        cls, stats: Statistics, standardize: bool, dtype: Any, scale: np.ndarray | None = None, device: Device = CPU
    ) -> Space:
        """Centre on ``stats``' means; scale to unit variance (or by a given ``scale``)."""
        mean = stats.xsum / stats.n
        if scale is None:
            var = np.maximum(mean - mean**2, 0.0)  # 0/1 masks: the diagonal of X^T X is xsum
            varies = var > 1e-12
            if not varies.any():
                raise DmstoreError(
                    f"the train masks are the same in all {stats.n} models fitted on (every model saw the same "
                    "subset): datamodels need models trained on different subsets; check the masks' source"
                )
            if standardize:
                scale = np.where(varies, 1.0 / np.sqrt(np.where(varies, var, 1.0)), 0.0)
            else:
                scale = varies.astype(np.float64)
        return cls(stats, mean, scale, dtype, device)

    def targets(self) -> tuple[Any, np.ndarray, np.ndarray]:
        """``c`` ``[B, N]`` in this space (on the device), the target means ``ybar`` and variances
        ``syy`` ``[B]`` (host)."""
        s = self.stats
        ybar = s.ysum / s.n
        syy = np.maximum(s.yy / s.n - ybar**2, 0.0)
        c = (s.xty.T / s.n - ybar[:, None] * self.mean[None, :]) * self.scale[None, :]
        return self.device.put(c, self.dtype), ybar, syy

    def _scale(self, centred: Any, a: Any, b: Any) -> Any:
        """``G[a][:, b]`` of the centred counts ``(X^T X)[a][:, b] - xsum_a xsum_b / n`` (on the
        device, in place): ``G = S (centred / n) S`` with ``S`` the features' scales."""
        dev = self.device
        centred *= dev.put(self.scale[a] / (self.divisor or self.stats.n), self.dtype)[:, None]
        centred *= dev.put(self.scale[b], self.dtype)[None, :]
        return centred

    def gram_rows(self, rows: np.ndarray, out: Any) -> None:
        """Write ``G[rows, :]`` (this space) into ``out`` ``[len(rows), N]`` (on the device): on
        numpy straight into ``out``, else through a host buffer of :data:`CONVERT_ROWS` rows."""
        dev = self.device
        if dev.xp is np:  # scaled as the counts are centred (while in the CPU's cache)
            row_factors = (self.scale[rows] / (self.divisor or self.stats.n)).astype(out.dtype)
            self.stats.centred_counts(rows, out, (row_factors, self.scale.astype(out.dtype)))
            return
        host = np.empty((min(CONVERT_ROWS, rows.size), self.mean.size), dtype=self.dtype)
        for start in range(0, rows.size, CONVERT_ROWS):
            part = rows[start : start + CONVERT_ROWS]
            self.stats.centred_counts(part, host[: part.size])
            out[start : start + part.size, :] = self._scale(dev.put(host[: part.size], self.dtype), part, slice(None))

    def to_raw(self, w: np.ndarray, features: np.ndarray, ybar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw ``[N, B]`` weights and ``[B]`` intercepts of solver weights ``w`` ``[B, K]`` (host)
        on ``features``."""
        weight = np.zeros((self.mean.size, w.shape[0]))
        weight[features] = (w.astype(np.float64) * self.scale[features]).T
        return weight, ybar - weight.T @ self.mean

    def from_raw(self, weight: np.ndarray, features: np.ndarray) -> Any:
        """Solver weights ``[B, K]`` on ``features`` (on the device) of raw weights ``[N, B]``."""
        scale = self.scale[features]
        safe = np.where(scale > 0, scale, 1.0)
        return self.device.put(np.where(scale > 0, weight[features].T / safe, 0.0), self.dtype)


def row_buffer(cap: int, n_train: int, dtype: Any, device: Device = CPU) -> Any:
    """Room for the Gram rows of a working set of up to ``cap`` features, ``[min(cap, N), N]`` on
    ``device``. Pass one to the :func:`path` and :func:`refit` of one block after another: memory
    used again has its pages already (fresh memory costs a page fault per 4 KiB on first touch,
    measured 40% of gathering rows at CIFAR-10 width)."""
    return device.xp.empty((min(cap, n_train), n_train), dtype=device.dtype(dtype), device=device.where)


class WorkingSet:
    """The features ``U`` of a block (host): their Gram rows ``G[U, :]`` (``[cap, N]`` on the
    device, filled as ``U`` grows; untouched rows cost no memory), ``G[U, U]``, and where
    ``masks`` (``[N, n_v]`` bool, host: validation rows' masks, transposed) are given, their
    columns of ``U`` (``[cap, n_v]``: the validation predictions of weights on ``U``). ``rows``
    (:func:`row_buffer`) is where the rows go."""

    def __init__(
        self,
        space: Space,
        cap: int,
        row_space: Space | None = None,
        extra: Pooled | None = None,
        masks: np.ndarray | None = None,
        rows: Any = None,
    ) -> None:
        n_train = space.mean.size
        self.space, self.cap = space, min(cap, n_train)
        # the rows gathered (default: G[U, :] of the space) and what the product adds to them
        self.row_space, self.extra, self.masks = row_space or space, extra, masks
        self.device = dev = space.device
        xp, dtype = dev.xp, dev.dtype(space.dtype)
        self.features = np.zeros(0, dtype=np.int64)
        self.index = dev.put(self.features)  # the features on the device
        self.member = np.zeros(n_train, dtype=bool)
        self.rows = row_buffer(cap, n_train, space.dtype, dev) if rows is None else rows
        self.gram = xp.empty((0, 0), dtype=dtype, device=dev.where)
        n_val = 0 if masks is None else masks.shape[1]
        self.columns = xp.empty((self.cap, n_val), dtype=dtype, device=dev.where)
        self._lipschitz: tuple[int, float] = (-1, 1.0)
        self._direction = np.zeros(n_train)  # the top eigenvector of the last G[U, U], by feature

    @property
    def size(self) -> int:
        return self.features.size

    def add(self, features: np.ndarray) -> None:
        """Add ``features`` (host positions; those not yet in ``U``) and gather their rows."""
        new = np.unique(features[~self.member[features]])
        if new.size == 0:
            return
        if self.size + new.size > self.cap:
            raise WorkingSetFull
        dev, old = self.device, self.size
        xp = dev.xp
        self.features = np.concatenate([self.features, new])
        self.index = dev.put(self.features)
        self.member[new] = True
        self.row_space.gram_rows(new, self.rows[old : self.size, :])
        gram = xp.empty((self.size, self.size), dtype=self.gram.dtype, device=dev.where)
        gram[:old, :old] = self.gram
        gram[old:, :] = xp.take(self.rows[old : self.size, :], self.index, axis=1)
        if self.extra is not None:  # what the pooled rows add to the rows just gathered
            gram[old:, :] += self.extra.block(new, self.features)
        gram[:old, old:] = gram[old:, :old].T  # G is symmetric
        self.gram = gram
        if self.masks is not None:
            self.columns[old : self.size, :] = dev.put(self.masks[new], self.space.dtype)

    def keep(self, mask: np.ndarray) -> None:
        """Keep only the features ``mask`` (host) selects (by position in the set), in order;
        their rows move up in place, one at a time (no copy of the set)."""
        xp, kept = self.device.xp, np.flatnonzero(mask)
        self.member[self.features[~mask]] = False
        self.features = self.features[mask]
        self.index = self.device.put(self.features)
        for target, source in enumerate(kept.tolist()):  # a row moves only up: no source is overwritten first
            if target != source:
                self.rows[target, :] = self.rows[source, :]
                self.columns[target, :] = self.columns[source, :]
        index = self.device.put(kept)
        self.gram = xp.take(xp.take(self.gram, index, axis=0), index, axis=1)
        self._lipschitz = (-1, 1.0)

    def product(self, w: Any) -> Any:
        """``w @ G[U, :]`` ``[B, N]`` of weights ``w`` ``[B, |U|]``."""
        xp, k = self.device.xp, self.size
        if xp is np:  # sparse times dense: reads only the rows of non-zero weights, in place (4x a GEMM);
            # column-major, each row once for all the targets that use it (1.15-1.4x row-major, measured)
            product = sparse.csc_array(w) @ self.rows[:k, :]
        elif (used := used_features(w, xp)).shape[0] > k // 4:  # most rows: one GEMM on the rows in place
            product = w @ self.rows[:k, :]
        else:
            product = xp.take(w, used, axis=1) @ xp.take(self.rows, used, axis=0)
        if self.extra is not None:
            product += self.extra.product(w, self)
        return product

    def lipschitz(self, gram: Any) -> float:
        """An upper bound on the largest eigenvalue of ``G[U, U]`` (cached while ``U`` is unchanged;
        Lanczos starts from the eigenvector of the previous ``U``)."""
        if self._lipschitz[0] != self.size:
            value, vector = top_eigenvalue(gram, self.device.xp, self._direction[self.features])
            if vector is not None:
                self._direction[self.features] = vector
            self._lipschitz = (self.size, STEP_SAFETY * value)
        return self._lipschitz[1]


def solve_on(
    ws: WorkingSet, c: Any, lam: Any, syy: Any, w: Any, gw: Any = None, *, tol: float, max_iter: int
) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """Solve targets ``c`` ``[A, N]`` at ``lam`` (float64 ``[A]``), growing ``ws`` until the KKT
    conditions hold.

    ``w`` ``[A, ws.size]`` is the warm start on ``ws.features`` (and ``gw``, if given, ``w @ G[U, U]``
    for a working set of every feature). Returns the weights on the final
    ``ws.features`` and the full gradient ``[A, N]`` (on the device), the relative duality gaps
    and iterations (host).
    """
    dev = ws.device
    xp = dev.xp
    iterations = np.zeros(c.shape[0], dtype=np.int64)
    gap = np.zeros(c.shape[0])
    while True:
        k = ws.size
        if k == 0:
            grad = c
            w = xp.zeros((c.shape[0], 0), dtype=c.dtype, device=dev.where)
        else:
            gram = ws.gram
            w, gw, gap_d, iters = solve(
                gram,
                xp.take(c, ws.index, axis=1),
                lam,
                syy,
                ws.lipschitz(gram),
                w,
                gw if k == ws.member.size else None,
                tol=tol,
                max_iter=max_iter,
                xp=xp,
            )
            gap = dev.get(gap_d)
            iterations += dev.get(iters)
            if k == ws.member.size:  # every feature: the conditions hold, the gradient is FISTA's
                return w, c - gw, gap, iterations
            grad = c - ws.product(w)
        limit = xp.astype(lam * (1.0 + KKT_MARGIN), grad.dtype)[:, None]
        violated = dev.get(xp.any(xp.abs(grad) > limit, axis=0)) & ~ws.member
        if not violated.any():
            return w, grad, gap, iterations
        ws.add(np.flatnonzero(violated))
        w, gw = widened(w, ws.size, xp), None


def widened(w: Any, size: int, xp: Any) -> Any:
    """Weights ``w`` ``[B, K]`` with zero columns added up to ``size`` (features that joined)."""
    if w.shape[1] == size:
        return w
    return xp.concat([w, xp.zeros((w.shape[0], size - w.shape[1]), dtype=w.dtype, device=w.device)], axis=1)


@dataclass(frozen=True)
class BlockResult:
    """Datamodels of a block of targets (raw ``weight`` ``[N, B]``; the rest ``[B]``; host)."""

    weight: np.ndarray
    bias: np.ndarray
    lam: np.ndarray
    gap: np.ndarray
    iterations: np.ndarray
    val_mse: np.ndarray
    val_var: np.ndarray
    steps: np.ndarray


def path(
    fit: Statistics,
    val: Statistics,
    *,
    lambdas: int,
    lambda_ratio: float,
    standardize: bool,
    tol: float,
    patience: int,
    max_iter: int,
    dtype: Any,
    cap: int,
    dense: bool = False,
    device: Device = CPU,
    progress: Callable[[int], None] | None = None,
    rows: Any = None,
) -> BlockResult:
    """Walk the ``lam`` path of a block of targets on ``fit``; choose ``lam`` by validation on ``val``.

    Each target's path runs from its ``lam_max`` (all weights zero) down to
    ``lam_max * lambda_ratio`` in ``lambdas`` geometric points, warm-started; a target stops once
    ``patience`` points in a row have not improved its best validation MSE and keeps its best point.
    ``cap`` bounds the working set (:class:`WorkingSetFull` beyond it); ``dense`` starts it with
    every feature and keeps them (narrow problems: one batched solve on the whole Gram is fastest).
    The solve runs on ``device``, its working set's rows in ``rows`` (:func:`row_buffer`) if given.
    """
    dev, xp = device, device.xp
    space = Space.build(fit, standardize, dtype, device=dev)
    val_space = Space.build(val, standardize, dtype, scale=space.scale, device=dev)
    c, ybar, syy = space.targets()
    c_val, ybar_val, syy_val = val_space.targets()
    offset = ybar_val - ybar  # validation residual mean = offset - shift'w
    shift = (val_space.mean - space.mean) * space.scale
    n_targets = c.shape[0]
    lam_max = dev.get(xp.astype(xp.max(xp.abs(c), axis=1), xp.float64))
    grid = lambda_grid(lam_max, lambdas, lambda_ratio)
    assert val.masks_t is not None, "the validation statistics keep their rows' masks"
    ws = WorkingSet(space, cap, masks=val.masks_t, rows=rows)
    if dense:
        ws.add(np.arange(fit.n_train))
    w = xp.zeros((n_targets, ws.size), dtype=c.dtype, device=dev.where)
    syy_d = dev.put(syy, np.float64)
    grad = xp.asarray(c, copy=True)
    best = np.zeros((n_targets, fit.n_train))  # each target's weights (solver space) at its best point
    best_mse = syy_val + offset**2
    best_step = np.zeros(n_targets, dtype=np.int64)
    gap = np.zeros(n_targets)
    iterations = np.zeros(n_targets, dtype=np.int64)
    steps = np.zeros(n_targets, dtype=np.int64)
    stale = np.zeros(n_targets, dtype=np.int64)
    active = np.arange(n_targets)
    for step in range(1 if lambdas > 1 else 0, lambdas):
        running = np.zeros(n_targets, dtype=bool)
        running[active] = True
        act: Any = ... if active.size == n_targets else dev.put(running)  # all running: views, no copies
        lam = grid[step, active]
        lam_d = dev.put(lam, np.float64)
        if not dense:  # the features that violate the optimality conditions at the new lam join the set
            limit = xp.astype(lam_d, c.dtype)[:, None]
            ws.add(np.flatnonzero(dev.get(xp.any(xp.abs(grad[act]) > limit, axis=0))))
        w = widened(w, ws.size, xp)
        gw = c[act] - grad[act] if dense else None  # every feature: the gradient holds w @ G already
        w_a, grad_a, gap_a, iters = solve_on(ws, c[act], lam_d, syy_d[act], w[act], gw, tol=tol, max_iter=max_iter)
        w = widened(w, ws.size, xp)
        w[act], grad[act] = w_a, grad_a
        iterations[active] += iters
        steps[active] = step
        u = ws.features
        # the validation MSE, on the features some target uses: w'G_val w - 2 c_val'w + the means' shift,
        # w'G_val w the mean square of the centred validation predictions Xv[:, U] S_U w
        v = w_a * dev.put(space.scale[u], c.dtype)[None, :]
        z = gram_product(ws.columns[: ws.size, :], v, xp)
        z -= (v @ dev.put(val_space.mean[u], c.dtype))[:, None]
        fitted = row_dots(z, z, xp) / val.n
        fitted -= 2 * row_dots(xp.take(c_val[act], ws.index, axis=1), w_a, xp)
        moved = w_a @ dev.put(shift[u], c.dtype)
        mse = syy_val[active] + dev.get(fitted) + (offset[active] - dev.get(moved)) ** 2
        better = (mse < best_mse[active]) | (lambdas == 1)
        improved = active[better]
        if improved.size and dense:  # the set is every feature, in order
            best[improved] = dev.get(w_a)[better]
        elif improved.size:
            rows = np.zeros((improved.size, fit.n_train))
            rows[:, u] = dev.get(w_a)[better]
            best[improved] = rows
        best_mse[improved], best_step[improved], gap[improved] = mse[better], step, gap_a[better]
        stale[active] = np.where(better, 0, stale[active] + 1)
        finished = stale[active] >= patience
        if progress is not None and finished.any():
            progress(int(finished.sum()))
        active = active[~finished]
        if active.size == 0:
            break
        running[:] = False
        running[active] = True
        if dense:
            continue
        used = dev.get(xp.any(w[dev.put(running)] != 0, axis=0))  # drop the features no running target uses
        if used.sum() < PRUNE_BELOW * used.size:
            ws.keep(used)
            w = xp.take(w, dev.put(np.flatnonzero(used)), axis=1)
    if progress is not None and active.size:
        progress(int(active.size))
    weight = (best * space.scale).T
    bias = ybar - weight.T @ space.mean
    return BlockResult(weight, bias, grid[best_step, np.arange(n_targets)], gap, iterations, best_mse, syy_val, steps)


class Pooled:
    """What the rows ``val`` keeps the masks of add to the Gram of ``fit + val`` (``space``) where
    the working set gathers only ``fit``'s centred counts: with ``n = n_f + n_v`` and ``d`` the
    difference of the two parts' means, the pooled identity
    ``C - xs xs'/n = Cc_f + Cc_v + (n_f n_v / n) d d'`` with ``Cc_v = Xvc' Xvc``. For the product
    ``w @ G[U, :]`` that is ``(z' Xvc + kappa (v.d_U) d') S / n`` with ``v = w S_U`` and
    ``z = Xvc[:, U] v'``: two products with the masks per check instead of an ``N``-wide product
    per gathered row."""

    def __init__(self, fit: Statistics, val: Statistics, space: Space) -> None:
        assert val.masks_t is not None
        self.val, self.space, self.n = val, space, fit.n + val.n
        self.mean_v = val.xsum / val.n
        self.d = fit.xsum / fit.n - self.mean_v
        self.kappa = fit.n * val.n / self.n

    def block(self, a: np.ndarray, b: np.ndarray) -> Any:
        """The validation rows' and the means' share of ``G[a][:, b]`` (on the device)."""
        val = self.val
        centred = val.block(a, b).astype(np.float64) - np.multiply.outer(val.xsum[a], self.mean_v[b])
        centred += self.kappa * np.multiply.outer(self.d[a], self.d[b])
        return self.space._scale(self.space.device.put(centred, self.space.dtype), a, b)

    def product(self, w: Any, ws: WorkingSet) -> Any:
        """Their share of ``w @ G[U, :]`` ``[B, N]`` for weights ``w`` on ``ws.features``."""
        xt, dev, u = self.val.masks_t, self.space.device, ws.features
        assert xt is not None
        xp = dev.xp
        v = w * dev.put(self.space.scale[u], w.dtype)[None, :]  # [B, k]
        z = dev.put(xt[u], w.dtype).T @ v.T  # [n_v, B]: Xv[:, U] v'
        z -= (v @ dev.put(self.mean_v[u], w.dtype))[None, :]  # centred: its columns sum to zero
        out = xp.empty((w.shape[0], xt.shape[0]), dtype=w.dtype, device=dev.where)
        matmul = dev.mask_matmul()
        if matmul is not None and w.dtype == np.float32:  # z' Xv: int8 products of the masks as they are
            out[...] = masks_times(xt, z, matmul).T
        else:
            for start in range(0, xt.shape[0], MASK_COLUMNS):  # a float32 block of masks at a time
                stop = min(start + MASK_COLUMNS, xt.shape[0])
                out[:, start:stop] = (dev.put(xt[start:stop], w.dtype) @ z).T
        out -= xp.sum(z, axis=0)[:, None] * dev.put(self.mean_v, w.dtype)[None, :]
        out += (self.kappa * (v @ dev.put(self.d[u], w.dtype)))[:, None] * dev.put(self.d, w.dtype)[None, :]
        out *= dev.put(self.space.scale / self.n, w.dtype)[None, :]
        return out


def refit(
    stats: Statistics,
    lam: np.ndarray,
    start: np.ndarray,
    *,
    standardize: bool,
    tol: float,
    max_iter: int,
    dtype: Any,
    cap: int,
    dense: bool = False,
    device: Device = CPU,
    val: Statistics | None = None,
    rows: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The LASSO of a block of targets at ``lam`` on ``stats`` (and ``val``, if given: on both
    sets of rows), warm-started from raw ``start`` ``[N, B]``, on ``device``; returns raw weights
    ``[N, B]``, intercepts, relative gaps and iterations (host). Where ``val`` keeps its masks,
    the working set gathers only ``stats``' rows (:class:`Pooled`), into ``rows`` if given."""
    pooled = val is not None and val.masks_t is not None and not dense
    both = stats if val is None else stats + val
    space = Space.build(both, standardize, dtype, device=device)
    c, ybar, syy = space.targets()
    if pooled:
        assert val is not None
        row_space = replace(Space.build(stats, standardize, dtype, space.scale, device), divisor=both.n)
        ws = WorkingSet(space, cap, row_space=row_space, extra=Pooled(stats, val, space), rows=rows)
    else:
        ws = WorkingSet(space, cap, rows=rows)
    ws.add(np.arange(stats.n_train) if dense else np.flatnonzero((start != 0).any(axis=1)))
    w0 = space.from_raw(start, ws.features)
    lam_d, syy_d = device.put(lam, np.float64), device.put(syy, np.float64)
    w, _, gap, iterations = solve_on(ws, c, lam_d, syy_d, w0, tol=tol, max_iter=max_iter)
    weight, bias = space.to_raw(device.get(w), ws.features, ybar)
    return weight, bias, gap, iterations
