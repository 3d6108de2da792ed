"""Write models' rows into an experiment store, from any number of processes and machines.

Each :meth:`Writer.write` checks the row, then lands it as one immutable segment
(:mod:`dmstore.io.segments`): there is no lock and no shard is touched, so writers never wait
for each other and a killed writer leaves nothing behind that a reader would trust. Writing a
model again with the same values is a no-op; with other values it is refused.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import numpy as np

from dmstore.errors import DmstoreError
from dmstore.io import store as layout
from dmstore.io.dataset import known_warnings, open_group
from dmstore.io.reads import CheckedArray, checked_arrays
from dmstore.io.segments import SegmentConflict, Segments, Snapshot, encode, model_variables
from dmstore.io.store import read_records

FLOAT16_MAX = float(np.finfo(np.float16).max)


def experiment_attrs(store: str, storage_options: dict | None = None) -> dict:
    """The root attributes of the experiment store at ``store`` (its spec: ``dmstore_experiment``)."""
    attrs = layout.root_attrs(store, storage_options)
    if attrs is None:
        raise DmstoreError(f"no dmstore store at {store}: create one with `dmstore create`")
    if "dmstore_experiment" not in attrs:
        raise DmstoreError(f"{store} is a converted store, not an experiment store: create one with `dmstore create`")
    return attrs


def experiment_spec(store: str, storage_options: dict | None = None) -> dict:
    """The spec of the experiment store at ``store`` (root attribute ``dmstore_experiment``)."""
    return experiment_attrs(store, storage_options)["dmstore_experiment"]


def stored_arrays(store: str, storage_options: dict | None, attrs: dict, snapshot: Snapshot) -> dict[str, CheckedArray]:
    """The per-model arrays of the experiment store, read through the checked path."""
    root = open_group(store, storage_options, consolidated=False)
    with known_warnings():
        return checked_arrays(root, attrs, None, snapshot)


def matches_stored(arrays: dict[str, CheckedArray], model: int, values: dict[str, Any]) -> bool:
    """Whether the compacted row of ``model`` holds exactly ``values`` (rows and extras by name)."""
    return all(np.array_equal(arrays[name].read(np.array([model]))[0], value) for name, value in values.items())


class Writer:
    """Writes model rows into the experiment store ``store`` (see :func:`writer`)."""

    def __init__(self, store: str, storage_options: dict | None = None) -> None:
        self.store, self.storage_options = store, storage_options
        self.attrs = experiment_attrs(store, storage_options)
        self.spec = self.attrs["dmstore_experiment"]
        self.models = int(self.spec["models"])
        self.segments = Segments(store, storage_options)
        # the row-blocks compacted when this writer started (no segment listing: writers start often)
        self._snapshot = Snapshot(self.segments, {}, read_records(store, storage_options))
        self._folded = self._snapshot.folded(model_variables(self.spec), self.models)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        return None

    def write(self, model: int, **values: Any) -> bool:
        """Write the rows of ``model``: every array of the store and every extra, by name.

        Returns True where written, False where the model was already written with these values.

        Raises
        ------
        DmstoreError
            For a model outside the slots, a missing, unknown, misshapen or non-finite value, or a
            model already written with other values; nothing is written then.
        """
        model = self._check_model(model)
        expected = set(model_variables(self.spec))
        unknown, missing = set(values) - expected, expected - set(values)
        if unknown or missing:
            what = "; ".join(
                part
                for part in (
                    f"unknown {', '.join(sorted(unknown))}" if unknown else "",
                    f"missing {', '.join(sorted(missing))}" if missing else "",
                )
                if part
            )
            raise DmstoreError(
                f"model {model}: {what}; this store takes {', '.join(sorted(expected))} (nothing was written)"
            )
        rows = {name: self._row(model, name, values[name]) for name in self.spec["arrays"]}
        extras = {name: self._extra(model, name, values[name]) for name in self.spec["extras"]}
        if self._folded[model]:
            return self._same_as_stored(model, {**rows, **extras})
        return self.segments.put(model, encode(model, rows, extras))

    def _check_model(self, model: Any) -> int:
        if isinstance(model, bool) or not isinstance(model, (int, np.integer)) or not 0 <= model < self.models:
            raise DmstoreError(
                f"model {model!r} is not a model slot of this store: use 0 to {self.models - 1} (nothing was written)"
            )
        return int(model)

    def _row(self, model: int, name: str, value: Any) -> np.ndarray:
        spec = self.spec["arrays"][name]
        shape, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
        row = np.asarray(value)
        if row.shape != shape:
            raise DmstoreError(
                f"{name} of model {model} has shape {row.shape}, but the store's rows are {shape} (nothing was written)"
            )
        if dtype.kind == "b":
            if row.dtype != bool and not (row.dtype.kind in "iuf" and np.isin(row, (0, 1)).all()):
                raise DmstoreError(f"{name} of model {model} is not 0/1: masks are boolean (nothing was written)")
            return np.ascontiguousarray(row, dtype=bool)
        if row.dtype.kind not in "iuf":
            raise DmstoreError(
                f"{name} of model {model} has dtype {row.dtype}: margins are numbers (nothing was written)"
            )
        if not np.isfinite(row).all():
            raise DmstoreError(
                f"{name} of model {model} holds NaN or infinite values: did its training diverge? (nothing was written)"
            )
        if np.abs(row).max(initial=0) > FLOAT16_MAX:
            raise DmstoreError(
                f"{name} of model {model} exceeds float16's range (+-{FLOAT16_MAX:g}) (nothing was written)"
            )
        return np.ascontiguousarray(row, dtype=dtype)

    def _extra(self, model: int, name: str, value: Any) -> float | int | bool:
        dtype = np.dtype(self.spec["extras"][name])
        number = np.asarray(value)
        if number.shape != () or number.dtype.kind not in "biuf":
            raise DmstoreError(f"extra {name} of model {model} is {value!r}: give one number (nothing was written)")
        cast = number.astype(dtype)
        if dtype.kind != "f" and cast != number:  # floats round; integers and flags must fit
            raise DmstoreError(f"extra {name} of model {model} ({value!r}) does not fit {dtype} (nothing was written)")
        return cast.item()

    def _same_as_stored(self, model: int, values: dict[str, Any]) -> bool:
        """False where the compacted row of ``model`` holds ``values``; else a conflict."""
        arrays = stored_arrays(self.store, self.storage_options, self.attrs, self._snapshot)
        if not matches_stored(arrays, model, values):
            raise SegmentConflict(
                f"model {model} is already written with other values: a model row is written once; nothing was changed"
            )
        return False


def writer(store: str, storage_options: dict | None = None) -> Writer:
    """A :class:`Writer` for the experiment store ``store``, usable as a context manager::

        with dmstore.writer("run.zarr") as w:
            w.write(7, train_masks=mask, train_margins=m_train, test_margins=m_test, seed=7)
    """
    return Writer(store, storage_options)
