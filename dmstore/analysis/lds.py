"""The statistics of the LDS (pure numpy and scipy, no I/O): per-target correlations, margins
averaged over the models trained on the same mask (replicates), the noise ceiling those replicates
imply, and bootstrap intervals over evaluation masks and over targets.

Arrays are ``[models, targets]``: one row per evaluation model, one column per target example.
"""

from __future__ import annotations

import hashlib

import numpy as np
from scipy.special import ndtr, ndtri  # the normal cdf and its inverse (scipy.stats takes 0.3 s to import)

#: Bootstrap resamples of the evaluation masks.
MODEL_RESAMPLES = 500
#: Bootstrap resamples of the targets (each a mean of per-target correlations).
TARGET_RESAMPLES = 2000
#: The confidence level of the intervals.
LEVEL = 0.95
#: Targets ranked at once: the ranking's scratch is about 57 bytes per model and target of these
#: (37 MB at 10,000 models, measured with tracemalloc).
RANK_COLUMNS = 64


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of ``a`` with the same column of ``b`` (NaN if constant)."""
    a = np.asarray(a, dtype=np.float64)
    a = a - a.mean(axis=0)
    b = np.asarray(b, dtype=np.float64)
    b = b - b.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("mt,mt->t", a, b) / np.sqrt(np.einsum("mt,mt->t", a, a) * np.einsum("mt,mt->t", b, b))


def ranks(x: np.ndarray) -> np.ndarray:
    """The ranks (from 1, float64) of each column of ``x`` ``[models, targets]``, tied values given
    their average rank: ``scipy.stats.rankdata(x, axis=0)`` (a column with a NaN is all NaN), from
    one argsort per target of its contiguous values (float16 as float32) and the runs of ties found
    in one pass, :data:`RANK_COLUMNS` targets at a time."""
    x = np.asarray(x)
    wide = np.promote_types(x.dtype, np.float32)  # float16 sorted as float32 (exactly): numpy's SIMD sort
    m = x.shape[0]
    out = np.empty(x.shape, dtype=np.float64)
    position = np.arange(m)
    for start in range(0, x.shape[1], RANK_COLUMNS):
        part = np.ascontiguousarray(x[:, start : start + RANK_COLUMNS].T, dtype=wide)  # a target per row
        order = np.argsort(part, axis=1)  # ties are averaged: their order does not matter
        ordered = np.take_along_axis(part, order, axis=1)
        tied = ordered[:, 1:] == ordered[:, :-1]  # equal to the value before it
        edge = np.ones((part.shape[0], 1), dtype=bool)
        first = np.maximum.accumulate(np.where(np.hstack([edge, ~tied]), position, 0), axis=1)
        last = np.minimum.accumulate(np.where(np.hstack([~tied, edge]), position, m - 1)[:, ::-1], axis=1)[:, ::-1]
        rank = np.empty(part.shape)
        np.put_along_axis(rank, order, (first + last) / 2 + 1, axis=1)
        rank[np.isnan(part).any(axis=1)] = np.nan
        out[:, start : start + RANK_COLUMNS] = rank.T
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of each column of ``a`` with the same column of ``b``; ties get their
    average rank, as ``scipy.stats.spearmanr`` gives them (NaN if a column is constant)."""
    return pearson(ranks(a), ranks(b))


def target_scores(
    predicted: np.ndarray,
    true: np.ndarray,
    bias: np.ndarray | float = 0.0,
    ranked: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Per target (column): Spearman and Pearson correlation across models (rows) and the MSE of
    ``predicted + bias`` (the correlations are those of ``predicted``: a shift changes no rank, and
    adding it in float32 first could round two nearly tied predictions together). ``ranked``: the
    :func:`ranks` of ``predicted`` and ``true``, where the caller has them."""
    ranked = (ranks(predicted), ranks(true)) if ranked is None else ranked
    return {
        "spearman": pearson(*ranked),
        "pearson": pearson(predicted, true),
        "mse": np.mean((np.asarray(predicted, np.float64) + np.asarray(bias, np.float64) - true) ** 2, axis=0),
    }


def mask_digests(masks: np.ndarray) -> np.ndarray:
    """One 64-bit digest per row of ``masks`` (``[rows, N_train]`` 0/1): equal masks, equal digests."""
    packed = np.packbits(np.asarray(masks, dtype=bool), axis=1)
    digests = [int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little") for row in packed]
    return np.array(digests, dtype=np.uint64).reshape(-1, 1)


def mask_groups(digests: np.ndarray) -> np.ndarray:
    """The group of each model row (``0..G-1`` in order of first appearance): rows with the same
    mask share a group; the rows of a group are the replicates of its mask."""
    _, first, inverse = np.unique(np.ravel(digests), return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # number the groups by first appearance
    return order[inverse]


def tied(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``values`` with every row of a group replaced by the group's first row: the replicates of a
    mask share one prediction. A matrix product may round the same mask's rows differently by
    their position, and a tie broken by rounding moves a Spearman correlation by up to 1e-3."""
    first = np.unique(groups, return_index=True)[1]
    return values[first[groups]]


def group_means(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``[G, targets]``: the mean of ``values`` over the rows of each group."""
    n_groups = int(groups.max()) + 1 if groups.size else 0
    sums = np.zeros((n_groups, values.shape[1]), dtype=np.float64)
    np.add.at(sums, groups, values)
    return sums / np.bincount(groups, minlength=n_groups)[:, None]


def split_halves(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of the replicated groups dealt alternately into halves A and B (first replicate to A,
    second to B, ...): ``(rows, half, group)`` for the rows of groups with two replicates or more,
    ``half`` 0 for A and 1 for B, ``group`` renumbered ``0..G2-1``."""
    counts = np.bincount(groups)
    rows = np.flatnonzero(counts[groups] >= 2)
    order = rows[np.argsort(groups[rows], kind="stable")]
    sorted_groups = groups[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    position = np.arange(order.size) - np.repeat(starts, np.diff(np.r_[starts, order.size]))
    _, renumbered = np.unique(sorted_groups, return_inverse=True)
    return order, position % 2, renumbered


def noise_ceiling(true: np.ndarray, groups: np.ndarray) -> dict[str, np.ndarray] | None:
    """Per target, the best Spearman any predictor of the mask could reach against the margins
    averaged over each mask's replicates (``averaged``) and against one model (``single``).

    Replicates are dealt into halves (:func:`split_halves`); the Spearman correlation ``r`` of the
    two half-averages across masks is the reliability of an average over half the replicates.
    Spearman-Brown gives the reliability of ``k`` times as many replicates,
    ``k r / (1 + (k - 1) r)``: ``k = 2`` for the full average, ``k = 2 / R`` for one model (``R``
    the mean number of replicates of a replicated mask). A predictor's correlation with noisy
    margins is at most the square root of their reliability. None when no mask is replicated.
    """
    rows, half, group = split_halves(groups)
    if rows.size == 0:
        return None
    n_groups = int(group.max()) + 1
    means = [group_means(true[rows[half == h]], group[half == h]) for h in (0, 1)]
    complete = np.intersect1d(np.unique(group[half == 0]), np.unique(group[half == 1]))
    r = spearman(means[0][complete], means[1][complete])
    replicates = rows.size / n_groups

    def ceiling(k: float) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            reliability = k * r / (1 + (k - 1) * r)
        return np.sqrt(np.clip(reliability, 0.0, 1.0))

    return {"averaged": ceiling(2.0), "single": ceiling(2.0 / replicates), "split_half": r}


def mask_resamples(groups: np.ndarray, resamples: int = MODEL_RESAMPLES, seed: int = 0) -> np.ndarray:
    """``[resamples, G]``: how often each mask (group) is drawn in each bootstrap resample (``G``
    draws with replacement; a drawn mask brings all its replicates)."""
    n_groups = int(groups.max()) + 1
    draws = np.random.default_rng(seed).integers(0, n_groups, (resamples, n_groups))
    counts = np.zeros((resamples, n_groups))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)
    return counts


def resampled_spearman(weights: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[resamples, targets]``: the Spearman correlation of each target in each resample, a
    resample given by the ``weights`` of the rows (``[resamples, rows]`` draw counts); ``a`` and
    ``b`` are the :func:`ranks` of the two sides (predicted and true margins).

    The rows are ranked once, in the full sample, and each resample's correlation is the
    weighted Pearson correlation of those ranks: five matrix products for all resamples instead
    of ranking every resample again (which moves the result by about ``1/rows``).
    """
    n = weights.sum(axis=1, keepdims=True)
    mean_a, mean_b = weights @ a / n, weights @ b / n
    cov = weights @ (a * b) / n - mean_a * mean_b
    var_a = weights @ (a * a) / n - mean_a**2
    var_b = weights @ (b * b) / n - mean_b**2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((var_a > 1e-9) & (var_b > 1e-9), cov / np.sqrt(var_a * var_b), np.nan)


def bootstrap_interval(values: np.ndarray, estimate: float, level: float = LEVEL) -> tuple[float, float]:
    """Bias-corrected percentile interval (Efron's BC) from the resampled ``values`` of a
    statistic whose estimate is ``estimate``: the quantiles ``Phi(2 z0 -+ z)`` of ``values``, with
    ``z0 = Phi^-1(share of values below the estimate)`` (NaN values left out)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0 or not np.isfinite(estimate):
        return float("nan"), float("nan")
    below = (np.sum(values < estimate) + 0.5 * np.sum(values == estimate)) / values.size
    z0 = ndtri(np.clip(below, 0.5 / values.size, 1 - 0.5 / values.size))
    z = ndtri((1 + level) / 2)
    low, high = np.quantile(values, ndtr([2 * z0 - z, 2 * z0 + z]))
    return float(low), float(high)


def bootstrap_models(
    predicted: np.ndarray,
    true: np.ndarray,
    groups: np.ndarray,
    *,
    resamples: int = MODEL_RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Bootstrap intervals over evaluation masks (:func:`bootstrap_interval`) of the LDS (mean
    Spearman over targets) of single models (``single``) and, when masks are replicated, of the
    replicate-averaged margins (``averaged``): each resample draws the masks with replacement,
    with all their replicates (:func:`mask_resamples`, :func:`resampled_spearman`)."""
    counts = mask_resamples(groups, resamples, seed)
    ranked = ranks(predicted), ranks(true)
    single = np.nanmean(resampled_spearman(counts[:, groups], *ranked), axis=1)
    intervals = {"single": bootstrap_interval(single, float(np.nanmean(pearson(*ranked))), level)}
    if counts.shape[1] < groups.size:
        ranked = ranks(group_means(predicted, groups)), ranks(group_means(true, groups))
        averaged = np.nanmean(resampled_spearman(counts, *ranked), axis=1)
        intervals["averaged"] = bootstrap_interval(averaged, float(np.nanmean(pearson(*ranked))), level)
    return intervals


def bootstrap_targets(
    scores: np.ndarray, *, resamples: int = TARGET_RESAMPLES, level: float = LEVEL, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-target ``scores`` over targets (NaN left out)."""
    finite = np.asarray(scores, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = finite[rng.integers(0, finite.size, (resamples, finite.size))].mean(axis=1)
    low, high = np.quantile(means, ((1 - level) / 2, (1 + level) / 2))
    return float(low), float(high)
