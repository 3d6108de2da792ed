"""A real, small datamodels experiment made offline, in the published bucket's layout.

``make_example(out, "digits", pct=50, models=20000, eval_models=2000)`` trains many small MLPs,
each on its own random ``pct``% subset of the training examples, and writes
``out/digits/data/{train_masks,train_margins,test_margins,train_logits,test_logits}_50pct.npy``
plus ``train_labels.npy``, ``test_labels.npy`` and ``classes.json``: the same names, dtypes,
shapes and row order as ``madrylab-datamodels/{ds}/data/`` (the evaluation models are the last
``eval_models`` rows, drawn and trained exactly like the others).

Training threads write their models' rows into an experiment store (``out/digits/
experiment_50pct.zarr``, :mod:`dmstore.experiment`), several writers at once; the published
layout is exported from it once every model is written. ``out/digits/example_50pct.json`` records
the parameters and the rows written, and running the same call again trains only what is missing.
With a ``cache`` folder (``dmstore example --cache DIR``, or ``DMSTORE_EXAMPLE_CACHE``), a finished
example is kept there and the same call into another folder copies it instead of training again.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import itertools
import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any
from uuid import uuid4

import numpy as np
from tqdm.auto import tqdm

from dmstore._version import __version__
from dmstore.errors import DmstoreError
from dmstore.experiment.compact import compact, status
from dmstore.experiment.create import create
from dmstore.experiment.writer import writer
from dmstore.io.dataset import open as open_store
from dmstore.io.datasets import DATASETS, DataSplit

KINDS = ("train_masks", "train_margins", "test_margins", "train_logits", "test_logits")
BATCH_MODELS = 500  # models trained by one thread between writes; fixed, so that batch boundaries never move
STACK_MODELS = 20  # models of a batch trained as one set of tensors (train_models); fixed, like the batches
HIDDEN = 32  # hidden units of the one-hidden-layer MLP
STEPS = 50  # full-batch Adam steps
LR = 0.02  # Adam learning rate
RECORD_FORMAT = 1
EXPORT_ROWS = 2048  # rows of the published layout written at once
LABELS = ("train_labels.npy", "test_labels.npy", "classes.json")  # beside the matrices in data/




def subset_size(pct: int, n_train: int) -> int:
    """How many training examples a model sees: ``pct``% of ``n_train``, rounded half up."""
    return (pct * n_train + 50) // 100


def margins_from_logits(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Correct-class margins: the correct logit minus the largest other logit, as float16.

    Parameters
    ----------
    logits
        ``[..., N, C]`` logits of any float dtype (computed in float32).
    labels
        ``[N]`` correct classes.
    """
    x = np.asarray(logits, dtype=np.float32)
    labels = np.asarray(labels)
    if x.ndim < 2 or x.shape[-1] < 2 or labels.shape != x.shape[-2:-1]:
        raise DmstoreError(f"logits {x.shape} and labels {labels.shape} do not match: need [..., N, C>=2] and [N]")
    if labels.size and (labels.min() < 0 or labels.max() >= x.shape[-1]):
        raise DmstoreError(f"labels must lie in 0..{x.shape[-1] - 1}")
    at = np.broadcast_to(labels[:, None], x.shape[:-1] + (1,))
    correct = np.take_along_axis(x, at, axis=-1)[..., 0]
    others = x.copy()
    np.put_along_axis(others, at, -np.inf, axis=-1)
    return (correct - others.max(axis=-1)).astype(np.float16)


def draw_model(
    seed: int,
    row: int,
    n_train: int,
    k: int,
    n_features: int,
    n_classes: int,
    hidden: int = HIDDEN,
    mask_row: int | None = None,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The random draws of model ``row``: its training subset and its initial MLP parameters.

    They depend only on ``(seed, row)``: the generator is seeded with
    ``SeedSequence([seed, row])``; the subset is ``k`` sorted indices drawn without
    replacement from ``range(n_train)``, then ``w1 [H, d], b1 [H, 1], w2 [C, H], b2 [C, 1]``
    (float32, weights ``[out, in]`` as in ``nn.Linear``) are uniform in ``±1/sqrt(fan_in)``,
    as PyTorch initialises ``nn.Linear``. A replicate takes the subset of model ``mask_row``
    instead (the same mask, its own initial parameters).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, row]))
    subset = np.sort(rng.choice(n_train, size=k, replace=False))
    if mask_row is not None and mask_row != row:
        subset = draw_model(seed, mask_row, n_train, k, n_features, n_classes, hidden)[0]
    layers = [((hidden, n_features), n_features), ((hidden, 1), n_features)]
    layers += [((n_classes, hidden), hidden), ((n_classes, 1), hidden)]
    params = [(rng.uniform(-1.0, 1.0, size=shape) / np.sqrt(fan_in)).astype(np.float32) for shape, fan_in in layers]
    return subset, params


def train_models(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_eval: np.ndarray,
    subsets: np.ndarray,
    init: list[np.ndarray],
    *,
    steps: int = STEPS,
    lr: float = LR,
) -> np.ndarray:
    """Train B MLPs, :data:`STACK_MODELS` at a time, each on its own subset; return their logits
    on ``x_eval``.

    Each model minimises the mean cross-entropy over its ``k`` subset examples with ``steps``
    full-batch Adam steps; the models of a stack are one set of tensors (``bmm``), with examples
    on the last axis (``[S, features, k]``), where the softmax over classes is fastest. The hidden
    layer's bias rides on a constant input feature, which saves a pass over the hidden units. A
    stack's tensors (about 4 MB for digits) stay in the CPU's caches and each step reuses the
    memory the step before freed: stacks of 500 models took 1.6x the time, each step mapping and
    faulting in tens of MB of fresh tensors (the same bytes either way).

    Parameters
    ----------
    subsets
        ``[B, k]`` indices into ``x_train`` of each model's training examples.
    init
        ``w1 [B, H, d], b1 [B, H, 1], w2 [B, C, H], b2 [B, C, 1]`` float32 (see
        :func:`draw_model`).

    Returns
    -------
    ``[B, len(x_eval), C]`` float32 logits. Memory: those, and about
    ``4 * S * (k * (d + 4 H + 4 C) + len(x_eval) * (H + 2 C))`` bytes for a stack of ``S`` models.
    """
    torch = _require("torch")
    inputs, labels = torch.from_numpy(_with_ones(x_train)), torch.from_numpy(y_train)
    eval_inputs = torch.from_numpy(_with_ones(x_eval).T.copy())
    out = np.empty((len(subsets), len(x_eval), init[2].shape[1]), dtype=np.float32)
    k = subsets.shape[1]
    for start in range(0, len(subsets), STACK_MODELS):
        stack = slice(start, start + STACK_MODELS)
        index = torch.from_numpy(subsets[stack])
        xs = inputs[index].transpose(1, 2).contiguous()
        ys = labels[index]
        w1 = torch.tensor(np.concatenate([init[0][stack], init[1][stack]], axis=2), requires_grad=True)
        w2, b2 = (torch.tensor(p[stack], requires_grad=True) for p in init[2:])
        optimizer = torch.optim.Adam([w1, w2, b2], lr=lr, fused=True)
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            logits = torch.baddbmm(b2, w2, torch.bmm(w1, xs).relu_())
            loss = torch.nn.functional.cross_entropy(logits, ys, reduction="sum") / k
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            x = eval_inputs.expand(len(index), -1, -1)
            out[stack] = torch.baddbmm(b2, w2, torch.bmm(w1, x).relu_()).transpose(1, 2).numpy()
    return out


def _with_ones(x: np.ndarray) -> np.ndarray:
    """``x`` with a constant 1 appended to every example's features."""
    return np.hstack([x, np.ones((len(x), 1), dtype=x.dtype)])


def make_example(
    out: str | Path,
    dataset: str = "digits",
    *,
    pct: int = 50,
    models: int = 20000,
    eval_models: int = 2000,
    replicates: int = 1,
    seed: int = 0,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
    cache: str | Path | None = None,
) -> Path:
    """Train ``models + eval_models`` MLPs on random ``pct``% subsets into an experiment store,
    then write the bucket layout from it.

    The models are trained in batches of :data:`BATCH_MODELS` by ``workers`` threads of this
    process (one per core by default; torch releases the GIL), each writing its models' rows into the
    experiment store ``out/{dataset}/experiment_{pct}pct.zarr`` through
    :func:`dmstore.experiment.writer.writer` (with each model's test accuracy as the extra
    ``accuracy``). Once every model is written, the store is compacted and exported as
    ``out/{dataset}/data/{kind}_{pct}pct.npy`` for every kind in :data:`KINDS` (masks bool
    ``[M, N_train]``, margins float16 ``[M, N]``, logits float16 ``[M, N, C]``, ``.npy`` version
    1.0, C order) plus ``train_labels.npy``, ``test_labels.npy`` (int64) and ``classes.json``, so
    that ``dmstore convert`` has the published layout to read.
    Row ``r``'s subset and initial weights depend only on ``(seed, r)`` and every batch uses
    the same number of torch threads, so the same call gives the same bytes; margins are
    computed from the stored float16 logits.

    ``out/{dataset}/example_{pct}pct.json`` records the parameters and the rows written; the same
    call again trains only the batches with models missing from the store. Other parameters for
    an existing ``pct`` raise :class:`DmstoreError` unless ``overwrite``.

    Memory: one batch of :data:`BATCH_MODELS` models per thread, independent of ``models``:
    the tensors of one stack of :data:`STACK_MODELS` models (:func:`train_models`) and the
    batch's logits, about ``4 * BATCH_MODELS * N * 2 C`` bytes; for digits the whole process
    peaked at 0.78 GB on one thread and 0.83 GB on two (1,440 models).

    Parameters
    ----------
    replicates
        Models trained on each evaluation mask (each from its own initial parameters): the
        ``eval_models`` are ``eval_models / replicates`` masks, so that evaluate can average
        their margins and estimate the noise ceiling.
    workers
        Training threads; the torch threads of each are the cores divided among them.
    on_batch
        Called as ``on_batch(start, stop)`` after rows ``start:stop`` are written, in the order
        batches finish.
    cache
        A folder of finished examples, one per parameters and dmstore, torch, numpy version: a fresh
        ``out`` gets a copy of the cached one (the bytes training would give), and a trained
        example is added to it.

    Returns
    -------
    The dataset folder ``out/{dataset}``.
    """
    if dataset not in DATASETS:
        raise DmstoreError(f"unknown example dataset {dataset!r}: use one of {', '.join(DATASETS)}")
    if not 1 <= pct <= 99:
        raise DmstoreError(f"--pct must be an integer percentage in 1..99, not {pct}")
    if models < 1:
        raise DmstoreError(f"--models must be at least 1, not {models}")
    if eval_models < 0:
        raise DmstoreError(f"--eval-models must be 0 or more, not {eval_models}")
    if seed < 0:
        raise DmstoreError(f"--seed must be 0 or more, not {seed}")
    if replicates < 1 or eval_models % replicates:
        raise DmstoreError(f"--replicates {replicates} must be at least 1 and divide --eval-models {eval_models}")
    cores = _cores()
    workers = workers or cores
    if workers < 1:
        raise DmstoreError(f"--workers must be at least 1, not {workers}")
    folder = Path(out) / dataset
    record_path = folder / f"example_{pct}pct.json"
    paths = {kind: folder / "data" / f"{kind}_{pct}pct.npy" for kind in KINDS}
    store = folder / f"experiment_{pct}pct.zarr"
    if overwrite:
        for path in [record_path, *paths.values()]:
            path.unlink(missing_ok=True)
        shutil.rmtree(store, ignore_errors=True)
    names = [p.relative_to(folder) for p in [record_path, store, *paths.values()]] + [Path("data", n) for n in LABELS]
    request = {
        "format": RECORD_FORMAT,
        "dataset": dataset,
        "pct": pct,
        "models": models,
        "eval_models": eval_models,
        "seed": seed,
        **({"replicates": replicates} if replicates > 1 else {}),
        "batch_models": BATCH_MODELS,
        "model": {"kind": "mlp", "hidden": HIDDEN, "optimizer": "adam", "steps": STEPS, "lr": LR},
    }
    entry = None if cache is None else Path(cache) / _cache_key(request)
    if entry is not None and entry.exists() and not record_path.exists() and not store.exists():
        _rows_done(record_path, {}, paths)  # refuses files that dmstore example did not make
        _copy(entry, folder, names)  # without importing torch and the dataset: 3 s less
        return folder
    torch = _require("torch")
    split = DATASETS[dataset]()
    rows = models + eval_models
    n_train, n_test = len(split.y_train), len(split.y_test)
    params = {**request, "split": split.description, "subset_size": subset_size(pct, n_train)}
    rows_done = _rows_done(record_path, params, paths)
    if rows_done == rows:
        return folder
    if entry is not None and entry.exists() and rows_done == 0 and not store.exists():
        _copy(entry, folder, names)
        return folder
    if not store.exists():
        create(
            str(store),
            train=n_train,
            test=n_test,
            models=rows,
            eval_models=eval_models,
            classes=list(split.classes),
            extras={"accuracy": "float32"},
            dataset=dataset,
            pct=pct,
            provenance={"dmstore example": params},
        )
    done = status(str(store)).done
    _write_record(record_path, params, int(done.sum()))
    batches = [(a, min(a + BATCH_MODELS, rows)) for a in range(0, rows, BATCH_MODELS)]
    todo = [(a, b) for a, b in batches if not done[a:b].all()]
    threads = max(1, cores // workers)
    bar = tqdm(total=rows, initial=int(done.sum()), unit="model", desc=f"{dataset} {pct}%", disable=not progress)
    job = (str(store), dataset, seed, pct, models, replicates)

    def written(start: int, stop: int) -> None:
        done[start:stop] = True
        _write_record(record_path, params, int(done.sum()))
        bar.update(stop - start)
        if on_batch is not None:
            on_batch(start, stop)

    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # process-wide: each training thread's own operations use them
    try:
        with bar:
            if todo:
                _train_in_threads(job, todo, done, min(workers, len(todo)), written)
    finally:
        torch.set_num_threads(before)
    compact(str(store), progress=False)
    _export(str(store), paths, split)
    _write_record(record_path, params, rows)
    if entry is not None and not entry.exists():
        _keep(folder, entry, names)
    return folder


def _train_in_threads(
    job: tuple[str, str, int, int, int, int], todo: list[tuple[int, int]], done: np.ndarray, size: int,
    written: Callable[[int, int], None],
) -> None:
    """Train the batches ``todo`` on ``size`` threads, one batch each at a time (so that an
    interruption starts no other batch; those in training finish and are written first);
    ``written(start, stop)`` after each."""
    with ThreadPoolExecutor(size, thread_name_prefix="dmstore-example") as pool:
        queue, running = iter(todo), {}

        def submit() -> None:
            for a, b in itertools.islice(queue, 1):
                running[pool.submit(train_batch, *job, a, b, a + np.flatnonzero(done[a:b]))] = (a, b)

        for _ in range(size):
            submit()
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                start, stop = running.pop(future)
                future.result()
                written(start, stop)
                submit()


def _cache_key(request: dict[str, Any]) -> str:
    """The cache entry of an example: the arguments that choose it and the versions that would train
    it (dmstore's fixes the model, the batches and the datasets' splits; scikit-learn's holds the data),
    read without importing torch or scikit-learn."""
    versions = {
        "dmstore": __version__,
        "numpy": np.__version__,
        "torch": _version("torch"),
        "scikit-learn": _version("scikit-learn"),
    }
    digest = hashlib.sha256(json.dumps([request, versions], sort_keys=True).encode()).hexdigest()
    return f"{request['dataset']}-{request['pct']}pct-{digest[:16]}"


def _copy(source: Path, folder: Path, names: list[Path]) -> None:
    """Copy a cached example into ``folder``: the record first (no rows done), each file and the
    experiment store atomically, the complete record last, so that an interrupted copy resumes."""
    record, store, *files = names
    params = json.loads((source / record).read_text())["params"]
    _write_record(folder / record, params, 0)
    temporary = folder / f"{store}.{uuid4().hex}.tmp"
    shutil.copytree(source / store, temporary)
    os.replace(temporary, folder / store)
    for name in files:
        temporary = folder / f"{name}.tmp"
        temporary.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, temporary)
        os.replace(temporary, folder / name)
    shutil.copyfile(source / record, folder / record)


def _keep(folder: Path, entry: Path, names: list[Path]) -> None:
    """Add a finished example to the cache in one rename (another process may add it first)."""
    temporary = entry.parent / f".{entry.name}.{uuid4().hex}"
    for name in names:
        (temporary / name).parent.mkdir(parents=True, exist_ok=True)
        copy = shutil.copytree if (folder / name).is_dir() else shutil.copyfile
        copy(folder / name, temporary / name)
    try:
        os.rename(temporary, entry)
    except OSError:  # already there: the same bytes
        shutil.rmtree(temporary)


def mask_row(row: int, models: int, replicates: int) -> int:
    """The row whose subset model ``row`` is trained on: its own, or for the evaluation models
    (rows from ``models`` on) in groups of ``replicates``, the first row of its group."""
    if row < models or replicates == 1:
        return row
    return models + (row - models) // replicates * replicates


def train_batch(
    store: str,
    dataset: str,
    seed: int,
    pct: int,
    models: int,
    replicates: int,
    start: int,
    stop: int,
    written: np.ndarray,
) -> None:
    """A training thread's job: train models ``start:stop`` and write those not yet ``written``."""
    split = DATASETS[dataset]()
    n_train, n_classes = len(split.y_train), len(split.classes)
    k = subset_size(pct, n_train)
    draws = [
        draw_model(seed, r, n_train, k, split.x_train.shape[1], n_classes, mask_row=mask_row(r, models, replicates))
        for r in range(start, stop)
    ]
    subsets = np.stack([subset for subset, _ in draws])
    init = [np.stack(layer) for layer in zip(*(weights for _, weights in draws))]
    x_eval = np.concatenate([split.x_train, split.x_test])
    logits16 = train_models(split.x_train, split.y_train, x_eval, subsets, init).astype(np.float16)
    margins = margins_from_logits(logits16, np.concatenate([split.y_train, split.y_test]))
    masks = np.zeros((stop - start, n_train), dtype=bool)
    np.put_along_axis(masks, subsets, True, axis=1)
    with writer(store) as w:
        for i, model in enumerate(range(start, stop)):
            if model in written:
                continue
            w.write(
                model,
                train_masks=masks[i],
                train_margins=margins[i, :n_train],
                test_margins=margins[i, n_train:],
                train_logits=logits16[i, :n_train],
                test_logits=logits16[i, n_train:],
                accuracy=float((margins[i, n_train:] > 0).mean()),
            )


def _export(store: str, paths: dict[str, Path], split: DataSplit) -> None:
    """Write the published layout from the complete experiment store (each file atomically)."""
    ds = open_store(store)
    for kind, path in paths.items():
        array = ds[kind].data
        temporary = path.with_suffix(".npy.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        out = np.lib.format.open_memmap(temporary, mode="w+", dtype=array.dtype, shape=array.shape, version=(1, 0))
        for start in range(0, array.shape[0], EXPORT_ROWS):
            out[start : start + EXPORT_ROWS] = array[start : start + EXPORT_ROWS].compute(scheduler="synchronous")
        out.flush()
        del out
        os.replace(temporary, path)
    data = next(iter(paths.values())).parent
    train_labels, test_labels, classes = LABELS
    _save_npy(data / train_labels, split.y_train)
    _save_npy(data / test_labels, split.y_test)
    (data / classes).write_text(json.dumps(list(split.classes)) + "\n")


def _rows_done(record_path: Path, params: dict[str, Any], paths: dict[str, Path]) -> int:
    """Rows already written by an earlier run of the same call (0 for a fresh start)."""
    if not record_path.exists():
        existing = [p.name for p in paths.values() if p.exists()]
        if existing:
            raise DmstoreError(
                f"{existing[0]} in {record_path.parent / 'data'} was not made by dmstore example; "
                "use another folder or pass --overwrite to replace it"
            )
        return 0
    record = json.loads(record_path.read_text())
    if record.get("params") != params:
        old = record.get("params", {})
        changed = sorted(key for key in params if old.get(key) != params[key])
        raise DmstoreError(
            f"{record_path.parent} holds a {params['pct']}% example made with other parameters "
            f"({', '.join(changed) or 'format'} differ); use another folder or pass --overwrite"
        )
    done = int(record["rows_done"])
    if done and not all(p.exists() for p in paths.values()):
        return 0  # the export is not finished
    return done


def _write_record(path: Path, params: dict[str, Any], rows_done: int) -> None:
    """Atomically replace the progress record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"params": params, "rows_done": rows_done}, indent=1) + "\n")
    os.replace(tmp, path)


def _cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _save_npy(path: Path, array: np.ndarray) -> None:
    """Save ``array`` as a version 1.0 ``.npy`` file."""
    with open(path, "wb") as f:
        np.lib.format.write_array(f, np.ascontiguousarray(array), version=(1, 0))


def _require(module: str) -> Any:
    """Import an optional dependency of the example, or say how to install it."""
    try:
        return __import__(module)
    except ImportError:
        raise _missing(module) from None


def _version(distribution: str) -> str:
    """The installed version of an optional dependency of the example, or say how to install it."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise _missing(distribution) from None


def _missing(name: str) -> DmstoreError:
    """The one-line error for an optional dependency of the example that is not installed."""
    return DmstoreError(f"dmstore example needs {name}: pip install 'dmstore[example]'", exit_code=1)
