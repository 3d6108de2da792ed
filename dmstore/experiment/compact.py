"""Fold written models into the sharded arrays, and see what an experiment store holds.

A compaction (one at a time: the store's ``compact`` lock) writes every shard row-block whose
models are all written, with the bytes ``dmstore convert`` writes (:mod:`dmstore.io.shard`),
then its band record, then deletes the segments it folded. Killed at any point, it leaves
segments or records that the next compaction completes: readers see the same rows throughout.
Once every model is written and folded, the store is ``complete``, like a converted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import zarr
from tqdm.auto import tqdm

from dmstore.errors import DmstoreError
from dmstore.experiment.writer import experiment_attrs, experiment_spec, matches_stored, stored_arrays
from dmstore.io import labels
from dmstore.io import store as layout
from dmstore.io.dataset import known_warnings, open_group
from dmstore.io.lock import store_lock
from dmstore.io.reads import CheckedArray
from dmstore.io.segments import Segments, Snapshot, model_variables
from dmstore.io.shard import blosc, shard_pieces


@dataclass
class ExperimentStatus:
    """The models of an experiment store: written (``done``) and not, and how many are folded."""

    models: int
    done: np.ndarray  # [models] bool
    compacted: int
    segments: int

    @property
    def missing(self) -> np.ndarray:
        """Model slots not yet written (resubmit exactly these)."""
        return np.flatnonzero(~self.done)

    def describe(self) -> str:
        done = int(self.done.sum())
        text = (
            f"{self.models:,} model slots: {done:,} written ({self.compacted:,} compacted, {self.segments:,} "
            f"in segments), {self.models - done:,} missing"
        )
        if self.missing.size:
            text += f": {ranges(self.missing, SHOWN)}"
        return text


#: Ranges of missing models that ``describe`` shows (``dmstore status --missing`` lists all).
SHOWN = 12


def ranges(models: np.ndarray, limit: int | None = None) -> str:
    """Sorted model numbers as ranges, ``0-3,7,9-10``; past ``limit`` ranges, ``...``."""
    if models.size == 0:
        return ""
    cuts = np.flatnonzero(np.diff(models) != 1) + 1
    runs = np.split(models, cuts)
    text = ",".join(f"{run[0]}" if run.size == 1 else f"{run[0]}-{run[-1]}" for run in runs[:limit])
    return text + ",..." if limit is not None and len(runs) > limit else text


def status(store: str, storage_options: dict | None = None) -> ExperimentStatus:
    """Which model slots of the experiment store ``store`` are written (one listing)."""
    spec = experiment_spec(store, storage_options)
    snapshot = Segments(store, storage_options).snapshot()
    models = int(spec["models"])
    folded = snapshot.folded(model_variables(spec), models)
    done = snapshot.done(model_variables(spec), models)
    return ExperimentStatus(models, done, int(folded.sum()), len(snapshot.paths))


@dataclass
class Compaction:
    """What one compaction did."""

    blocks: int = 0
    folded: set[int] = field(default_factory=set)
    deleted: int = 0
    conflicts: list[int] = field(default_factory=list)


def compact(store: str, storage_options: dict | None = None, progress: bool = True) -> Compaction:
    """Fold every complete shard row-block of the experiment store ``store`` into its arrays.

    Memory: the segments of one row-block of the widest shard (2,048 models at most) at a time.
    """
    attrs = experiment_attrs(store, storage_options)
    spec = attrs["dmstore_experiment"]
    with store_lock(store, "compact", "dmstore compact", storage_options):
        with known_warnings():
            root = open_group(store, storage_options, mode="r+", consolidated=False)
            arrays = {name: root[name] for name in model_variables(spec)}
        segments = Segments(store, storage_options)
        snapshot = segments.snapshot()
        models = int(spec["models"])
        done = snapshot.done(model_variables(spec), models)
        stored = stored_arrays(store, storage_options, attrs, snapshot)  # rows folded before, checked
        step = max((a.shards or a.chunks)[0] for a in arrays.values())
        report = Compaction()
        for start in tqdm(range(0, models, step), desc="compact", unit="block", disable=not progress):
            rows = slice(start, min(start + step, models))
            _fold(store, storage_options, arrays, stored, snapshot, done, rows, report)
        snapshot = segments.snapshot()
        _clean(segments, snapshot, stored_arrays(store, storage_options, attrs, snapshot), models, report)
        segments.delete(segments.abandoned())
        if snapshot.done(model_variables(spec), models).all() and not segments.listing():
            bands = {
                name: sorted([a, b, crc] for (n, a, b), crc in snapshot.records.items() if n == name)
                for name in model_variables(spec)
            }
            layout.set_root_attrs(store, storage_options, {"dmstore_status": "complete", "dmstore_bands": bands})
    return report


def _fold(
    store: str,
    options: dict | None,
    arrays: dict[str, zarr.Array],
    stored: dict[str, CheckedArray],
    snapshot: Snapshot,
    done: np.ndarray,
    rows: slice,
    report: Compaction,
) -> None:
    """Write the complete, not yet compacted row-blocks of every array inside ``rows``
    (``stored``: the same arrays read through the checked path)."""
    todo = []
    for name, array in arrays.items():
        height = (array.shards or array.chunks)[0]
        compacted = stored[name].compacted
        assert compacted is not None
        for start in range(rows.start, rows.stop, height):
            stop = min(start + height, rows.stop)
            if done[start:stop].all() and not compacted[start:stop].all():
                todo.append((name, start, stop))
    if not todo:
        return
    segments = snapshot.read(np.arange(rows.start, rows.stop))
    for name, start, stop in todo:
        array = arrays[name]
        band = snapshot.rows(name, np.arange(start, stop), array.shape[1:], array.dtype, segments)
        compacted = stored[name].compacted
        assert compacted is not None
        kept = np.flatnonzero(compacted[start:stop])
        if kept.size:  # rows folded before the store grew: from the array itself
            band[kept] = stored[name].read(kept + start)
        band = np.ascontiguousarray(band)
        if array.ndim == 1:
            array[start:stop] = band
        else:
            block = start // array.shards[0]
            pieces = shard_pieces(band, array.chunks, blosc(layout.codec(array.dtype)))
            layout.write_shard(store, options, name, block, array.ndim, pieces)
        for old in [r for r in snapshot.records if r[0] == name and r[1] == start and r[2] != stop]:
            layout.delete_record(store, options, *old)
        layout.write_record(store, options, name, start, stop, layout.checksum(band.tobytes()))
        report.blocks += 1
    report.folded.update(segments)


def _clean(
    segments: Segments, snapshot: Snapshot, stored: dict[str, CheckedArray], models: int, report: Compaction
) -> None:
    """Delete the segments of models folded into every array; a segment written after its
    model was folded (by a writer that started before) is deleted where it holds the same
    values, else kept and reported."""
    folded = snapshot.folded(list(stored), models)
    done = [p for m, p in snapshot.paths.items() if m < models and folded[m] and m in report.folded]
    segments.delete(done)
    report.deleted += len(done)
    stale = {m: p for m, p in snapshot.paths.items() if m < models and folded[m] and m not in report.folded}
    for start in range(0, len(stale), 4096):
        batch = dict(list(stale.items())[start : start + 4096])
        delete = []
        for model, segment in segments.read(batch).items():
            if matches_stored(stored, model, {**segment.rows, **segment.extras}):
                delete.append(batch[model])
            else:
                report.conflicts.append(model)
        segments.delete(delete)
        report.deleted += len(delete)
    if report.conflicts:
        raise DmstoreError(
            f"models {ranges(np.array(sorted(report.conflicts)))} were written again with other values after "
            "they were compacted: their segments are kept; delete them to keep the stored rows",
            exit_code=1,
        )


def grow(store: str, models: int, storage_options: dict | None = None) -> None:
    """Give the experiment store ``store`` ``models`` model slots (more than it has)."""
    spec = experiment_spec(store, storage_options)
    old = int(spec["models"])
    if models <= old:
        raise DmstoreError(f"the store has {old:,} model slots already: grow it to more than that")
    with store_lock(store, "compact", "dmstore grow", storage_options):
        with known_warnings():
            root = open_group(store, storage_options, mode="r+", consolidated=False)
            for name in model_variables(spec):
                array = root[name]
                array.resize((models, *array.shape[1:]))
            root["model"].resize((models,))
            root["model"][old:] = np.arange(old, models)
            split = root["split"]
            split.resize((models,))
            if "flag_meanings" in split.attrs:
                meanings = split.attrs["flag_meanings"].split()  # the store's own codes
                split[old:] = labels.encode("model", ["fit"] * (models - old), meanings).values
            else:  # a store from before the codes keeps strings
                split[old:] = np.full(models - old, "fit", dtype=object)
        spec = {**spec, "models": models}
        plan = dict((layout.root_attrs(store, storage_options) or {}).get("dmstore_plan", {}))
        plan["rows"] = [0, models]
        for array in plan.get("arrays", {}).values():
            array["shape"][0] = models
        attrs = {"dmstore_experiment": spec, "dmstore_status": "experiment", "dmstore_plan": plan}
        layout.set_root_attrs(store, storage_options, attrs)
