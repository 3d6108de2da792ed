"""The fit's memory plan: pure arithmetic from the problem's sizes and one budget (no I/O).

A fit has two phases that never overlap: the passes that fill the persisted statistics, and the
solver that walks the path of one target block at a time. Their peaks, in bytes, for ``N`` train
examples:

- pass: one panel of counts ``tile x N`` (4-byte items), one band of masks (``shard_rows x N``
  bool) and what its products need (float32: the band converted, ``shard_rows x (4 N + 4 tile)``;
  int8, where the pass is large enough to pay for importing torch (:data:`INT8_WORK`): a
  ``tile x 4096`` int32 product and torch itself, :data:`TORCH`), the masks of the rows kept
  between panels when they fit (``rows x N`` bool; otherwise they are read again for each
  panel), and the target statistics of ``target_blocks`` blocks (``N x 256`` float64 each, plus
  the band as float64 and its margins); where the solver holds the counts in memory and they fit
  beside the pass, the pass fills them (``hold_counts``) and the solver reads no tile back;
- solver: the counts in memory as int16 differences when they fit beside the rest
  (``2 N^2``: 5 GB at N = 50,000; otherwise rows are read from the store as needed), the Gram
  rows of the working set (``cap x N`` float32), about ``8 x N`` float32 arrays per target a
  path works on (the block where it is dense, :data:`SOLVE_TARGETS` per solver otherwise),
  three copies of ``G[U, U]`` and the raw weights of the block (``3 x N x block`` float64), and
  torch where the int8 products are used (the refit's products of the validation masks).

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
#: Resident memory torch adds once imported for the int8 products (measured: 0.2 GiB).
TORCH = 256 * 2**20
#: The products of the masks are int8 (torch) from this many multiply-adds in the pass
#: (``rows x N^2 / 2``): importing torch takes about 1 s, which float32 products of this size
#: take longer than twice over; int8 is 5x faster at CIFAR-10 width (2.3e13), and the digits
#: example (1.4e9) stays float32 (the import made its fit 1.26x slower).
INT8_WORK = 2.5e11
#: Columns of a panel one int8 product computes (``passes.CHUNK`` is this).
INT8_CHUNK = 4096
#: Targets solved together inside a block: their working sets are shared, so more targets make a
#: larger set; measured at CIFAR-10 width, 1 to 8 cost the same per target (0.70-0.76 s).
SOLVE_TARGETS = 4


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
    solvers: int = 1
    hold_counts: bool = False
    int8: bool = False


def uses_int8(rows: int, n_train: int) -> bool:
    """Whether a pass over ``rows`` model rows of ``n_train`` examples takes int8 products."""
    return rows * n_train * n_train / 2 >= INT8_WORK


def pass_bytes(
    n_train: int, rows: int, shard_rows: int, tile: int, cache: bool, target_blocks: int, int8: bool = False
) -> int:
    """Peak bytes of a pass (see the module docstring)."""
    panel = 4 * tile * n_train
    products = 4 * tile * INT8_CHUNK + TORCH if int8 else shard_rows * (4 * n_train + 4 * tile)
    band = shard_rows * n_train + products
    masks = rows * n_train if cache else 0
    targets = target_blocks * XTY_TARGETS * (8 * n_train + 10 * shard_rows) + 8 * shard_rows * n_train
    return BASE + max(panel + band + masks, band + targets)


def solver_bytes(
    n_train: int,
    block: int,
    cap: int,
    cache_gram: bool = False,
    val_rows: int = 0,
    solvers: int = 1,
    int8: bool = False,
) -> int:
    """Peak bytes of the solver for one block with ``solvers`` working sets of ``cap`` features (and
    the counts held in memory as int16 with ``cache_gram``), the validation masks (``val_rows``)
    and torch (``int8``)."""
    gram = 2 * n_train * n_train if cache_gram else 0
    each = 4 * cap * n_train + 12 * cap * cap + 4 * val_rows * (cap + 4096)  # rows, G[U, U], val columns
    dense = cap >= n_train and n_train <= DENSE_FEATURES
    solving = block if dense else solvers * min(block, SOLVE_TARGETS)  # the targets a path works on at once
    torch = TORCH if int8 else 0
    return BASE + torch + gram + val_rows * n_train + solvers * each + 32 * solving * n_train + 24 * n_train * block


def plan_fit(
    n_train: int,
    rows: int,
    shard_rows: int,
    block: int,
    memory: int,
    val_rows: int = 0,
    solvers: int = 1,
    int8: bool = True,
) -> FitPlan:
    """The plan for a fit of ``block`` targets at a time on ``rows`` model rows (and ``val_rows``
    validation rows) within ``memory`` bytes, with up to ``solvers`` groups of targets solved at
    once, and int8 products where they are available (``int8``) and pay (:func:`uses_int8`).

    Raises
    ------
    DmstoreError
        When even the smallest plan does not fit, with the budget that would.
    """
    int8 = int8 and uses_int8(rows, n_train)
    tile = min(TILE, n_train)
    need = pass_bytes(n_train, rows, shard_rows, tile, False, 1, int8)
    while tile > 256 and need > memory:
        tile //= 2
        need = pass_bytes(n_train, rows, shard_rows, tile, False, 1, int8)
    smallest = max(need, solver_floor(n_train, block, val_rows, int8))
    if smallest > memory:
        raise DmstoreError(
            f"a fit of {n_train} train examples in blocks of {block} targets needs at least "
            f"{smallest / 2**30:.2f} GiB but --memory allows {memory / 2**30:.2f} GiB: raise --memory "
            "or lower --target-batch"
        )
    cache = pass_bytes(n_train, rows, shard_rows, tile, True, 1, int8) <= memory
    # the counts in memory when they leave room for a working set of a tenth of the features; the
    # pass keeps those it computes for the solver when they fit beside it
    cache_gram = solver_bytes(n_train, block, max(MIN_CAP, n_train // 10), True, val_rows, int8=int8) <= memory
    gram = 2 * n_train * n_train
    hold = cache_gram and pass_bytes(n_train, rows, shard_rows, tile, cache, 1, int8) + gram <= memory
    held = gram if hold else 0
    target_blocks = 1
    while target_blocks < 64:
        if pass_bytes(n_train, rows, shard_rows, tile, cache, 2 * target_blocks, int8) + held > memory:
            break
        target_blocks *= 2
    cap = largest_cap(n_train, block, memory, cache_gram, val_rows, int8=int8)
    dense = n_train <= DENSE_FEATURES and cap == n_train
    count = 1  # concurrent solvers: dense blocks are one batch
    while not dense and count < solvers and solver_bytes(
        n_train, block, min(SOLVER_CAP, n_train), cache_gram, val_rows, count + 1, int8
    ) <= memory:
        count += 1
    cap = largest_cap(n_train, block, memory, cache_gram, val_rows, count, int8)
    solver_peak = solver_bytes(n_train, block, cap, cache_gram, val_rows, count, int8)
    peak = max(pass_bytes(n_train, rows, shard_rows, tile, cache, target_blocks, int8) + held, solver_peak)
    return FitPlan(tile, cache, target_blocks, cap, cache_gram, dense, peak, solver_peak, count, hold, int8)


def largest_cap(
    n_train: int, block: int, memory: int, cache_gram: bool, val_rows: int, solvers: int = 1, int8: bool = False
) -> int:
    """The largest working set (a power of two times ``MIN_CAP``, or ``n_train``) of each of
    ``solvers`` that ``memory`` holds (``MIN_CAP`` where none does)."""
    cap = min(MIN_CAP, n_train)
    while cap < n_train:
        larger = min(2 * cap, n_train)
        if solver_bytes(n_train, block, larger, cache_gram, val_rows, solvers, int8) > memory:
            break
        cap = larger
    return cap


def solver_floor(n_train: int, block: int, val_rows: int = 0, int8: bool = False) -> int:
    """Peak bytes of the smallest solver plan (a working set of ``MIN_CAP`` features)."""
    return solver_bytes(n_train, block, min(MIN_CAP, n_train), val_rows=val_rows, int8=int8)
