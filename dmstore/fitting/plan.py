"""The fit's memory plan: pure arithmetic from the problem's sizes and one budget (no I/O).

A fit has two phases that never overlap: the passes that fill the persisted statistics, and the
solver that walks the path of one target block at a time. Their peaks, in bytes, for ``N`` train
examples:

- pass: one panel of counts ``tile x N`` float32, one band of masks converted to float32
  (``shard_rows x (N x 5 + tile x 4)``), the masks of the rows kept between panels when they fit
  (``rows x N`` bool; otherwise they are read again for each panel), and the target statistics
  of ``target_blocks`` blocks (``N x 256`` float64 each, plus the band's margins); where the
  solver holds the counts in memory and they fit beside the pass, the pass fills them
  (``hold_counts``) and the solver reads no tile back;
- solver: the counts in memory as int16 differences when they fit beside the rest
  (``2 N^2``: 5 GB at N = 50,000; otherwise rows are read from the store as needed), the Gram
  rows of the working set (``cap x N`` float32), about ``8 x block x N`` float32 target arrays,
  three copies of ``G[U, U]`` and the raw weights of the block (``3 x N x block`` float64).

The plan picks the largest working set (``cap``) the budget allows; a block whose working set
would outgrow it is solved in halves. Where the budget holds a working set of ``SOLVER_CAP``
features for each, several groups of targets are solved at once (``solvers``, at most one per
core): each concurrent solver has its own working set, ``G[U, U]`` and validation columns.
"""

from __future__ import annotations

from dataclasses import dataclass

from dmstore.errors import DmstoreError

#: The interpreter, numpy, zarr, dask and friends, resident before any data (measured: 0.35 GiB).
BASE = 450 * 2**20
#: The largest tile of the persisted counts (64 MiB of float32 per shard).
TILE = 4096
#: Targets per block of the persisted target statistics (mirrors moments.XTY_BLOCK).
XTY_TARGETS = 256
#: The smallest useful working set: below this the budget is too small for the problem.
MIN_CAP = 64
#: Up to this many train examples the solver works on every feature at once, a block of targets
#: in one batch (measured on the digits example, N = 1,000: 6x faster than working sets; at
#: N = 50,000 working sets are what fits).
DENSE_FEATURES = 4096
#: A second concurrent solver only where each can have a working set this large (measured at
#: CIFAR-10 width, where the working sets of four targets reach 2,600 features: two solvers with
#: 4,096 each walked the path of 1,000 targets 1.94x faster than one; with 2,048 each, 64 targets
#: were no faster, their blocks being halved).
SOLVER_CAP = 4096
#: Dense problems solve up to this many targets in one batch (several blocks: the per-iteration
#: costs are shared; measured on the digits example, 797 targets, 1.2x faster than blocks of 256).
DENSE_TARGETS = 4096


@dataclass(frozen=True)
class FitPlan:
    """How a fit uses its memory budget."""

    tile: int
    cache_masks: bool
    target_blocks: int
    cap: int
    cache_gram: bool
    dense: bool
    peak: int
    solver_peak: int
    batch: int
    solvers: int = 1
    hold_counts: bool = False


def pass_bytes(n_train: int, rows: int, shard_rows: int, tile: int, cache: bool, target_blocks: int) -> int:
    """Peak bytes of a pass (see the module docstring)."""
    panel = 4 * tile * n_train
    band = shard_rows * (5 * n_train + 4 * tile)  # the masks, as float32, and their left part
    masks = rows * n_train if cache else 0
    targets = target_blocks * XTY_TARGETS * (8 * n_train + 10 * shard_rows)
    return BASE + max(panel + band + masks, band + targets)


def solver_bytes(
    n_train: int, block: int, cap: int, cache_gram: bool = False, val_rows: int = 0, solvers: int = 1
) -> int:
    """Peak bytes of the solver for one block with ``solvers`` working sets of ``cap`` features (and
    the counts held in memory as int16 with ``cache_gram``), and the validation masks (``val_rows``)."""
    gram = 2 * n_train * n_train if cache_gram else 0
    each = 4 * cap * n_train + 12 * cap * cap + 4 * val_rows * (cap + 4096)  # rows, G[U, U], val columns
    return BASE + gram + val_rows * n_train + solvers * each + 32 * block * n_train + 24 * n_train * block


def plan_fit(
    n_train: int, rows: int, shard_rows: int, block: int, memory: int, val_rows: int = 0, solvers: int = 1
) -> FitPlan:
    """The plan for a fit of ``block`` targets at a time on ``rows`` model rows (and ``val_rows``
    validation rows) within ``memory`` bytes, with up to ``solvers`` groups of targets solved at
    once.

    Raises
    ------
    DmstoreError
        When even the smallest plan does not fit, with the budget that would.
    """
    tile = min(TILE, n_train)
    need = pass_bytes(n_train, rows, shard_rows, tile, False, 1)
    while tile > 256 and need > memory:
        tile //= 2
        need = pass_bytes(n_train, rows, shard_rows, tile, False, 1)
    smallest = max(need, solver_floor(n_train, block, val_rows))
    if smallest > memory:
        raise DmstoreError(
            f"a fit of {n_train} train examples in blocks of {block} targets needs at least "
            f"{smallest / 2**30:.2f} GiB but --memory allows {memory / 2**30:.2f} GiB: raise --memory "
            "or lower --target-batch"
        )
    cache = pass_bytes(n_train, rows, shard_rows, tile, True, 1) <= memory
    # the counts in memory when they leave room for a working set of a tenth of the features; the
    # pass keeps those it computes for the solver when they fit beside it
    cache_gram = solver_bytes(n_train, block, max(MIN_CAP, n_train // 10), True, val_rows) <= memory
    gram = 2 * n_train * n_train
    hold = cache_gram and pass_bytes(n_train, rows, shard_rows, tile, cache, 1) + gram <= memory
    held = gram if hold else 0
    target_blocks = 1
    while target_blocks < 64 and pass_bytes(n_train, rows, shard_rows, tile, cache, 2 * target_blocks) + held <= memory:
        target_blocks *= 2
    cap = largest_cap(n_train, block, memory, cache_gram, val_rows)
    dense = n_train <= DENSE_FEATURES and cap == n_train
    count = 1  # concurrent solvers: dense blocks are one batch
    while not dense and count < solvers and solver_bytes(
        n_train, block, min(SOLVER_CAP, n_train), cache_gram, val_rows, count + 1
    ) <= memory:
        count += 1
    cap = largest_cap(n_train, block, memory, cache_gram, val_rows, count)
    solver_peak = solver_bytes(n_train, block, cap, cache_gram, val_rows, count)
    peak = max(pass_bytes(n_train, rows, shard_rows, tile, cache, target_blocks) + held, solver_peak)
    batch = block  # targets solved together in this process: dense ones as many blocks as fit
    while dense and 2 * batch <= DENSE_TARGETS:
        if solver_bytes(n_train, 2 * batch, cap, cache_gram, val_rows) > memory:
            break
        batch *= 2
    peak = max(peak, solver_bytes(n_train, batch, cap, cache_gram, val_rows))
    return FitPlan(tile, cache, target_blocks, cap, cache_gram, dense, peak, solver_peak, batch, count, hold)


def largest_cap(n_train: int, block: int, memory: int, cache_gram: bool, val_rows: int, solvers: int = 1) -> int:
    """The largest working set (a power of two times ``MIN_CAP``, or ``n_train``) of each of
    ``solvers`` that ``memory`` holds (``MIN_CAP`` where none does)."""
    cap = min(MIN_CAP, n_train)
    while cap < n_train:
        larger = min(2 * cap, n_train)
        if solver_bytes(n_train, block, larger, cache_gram, val_rows, solvers) > memory:
            break
        cap = larger
    return cap


def solver_floor(n_train: int, block: int, val_rows: int = 0) -> int:
    """Peak bytes of the smallest solver plan (a working set of ``MIN_CAP`` features)."""
    return solver_bytes(n_train, block, min(MIN_CAP, n_train), val_rows=val_rows)
