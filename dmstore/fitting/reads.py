"""What the fit's passes read: shard-aligned bands of masks and target margins, checked."""

from __future__ import annotations

from typing import Any

import numpy as np

from dmstore.io.dataset import open_group
from dmstore.io.reads import checked_arrays
from dmstore.io.rows import shard_bands
from dmstore.io.segments import experiment_snapshot


class BandReader:
    """Bands of ``train_masks`` and ``{split}_margins`` of a store, read through the checked path."""

    def __init__(self, store: Any, split: str, storage_options: dict | None = None) -> None:
        root = open_group(store, storage_options)
        self.split, self.margins_name = split, f"{split}_margins"
        self._models = root["model"][:] if "model" in root else np.arange(root["train_masks"].shape[0])
        attrs = root.attrs.asdict()
        arrays = checked_arrays(root, attrs, self._models, experiment_snapshot(store, storage_options, attrs))
        self._masks, self._margins = arrays["train_masks"], arrays[self.margins_name]
        self._targets = root[split][:] if split in root else np.arange(self._margins.shape[1])
        self.n_train = self._masks.shape[1]
        self.shard_rows = self._masks.rows_per_block

    def bands(self, positions: np.ndarray) -> list[np.ndarray]:
        """The positions cut into one band per shard they fall in (arrays of positions)."""
        n_models = self._masks.shape[0]
        edges = tuple(min(self.shard_rows, n_models - s) for s in range(0, n_models, self.shard_rows))
        return [np.arange(b.start, b.stop) if isinstance(b, slice) else b for b in shard_bands(positions, edges)]

    @staticmethod
    def _rows(band: np.ndarray) -> slice | np.ndarray:
        return slice(int(band[0]), int(band[-1]) + 1) if band[-1] - band[0] + 1 == band.size else band

    def masks(self, band: np.ndarray) -> np.ndarray:
        """``[rows, N]`` bool masks of the band."""
        return self._masks.read(self._rows(band))

    def margins(self, band: np.ndarray, columns: slice) -> np.ndarray:
        """``[rows, len(columns)]`` margins of the band's models on the target ``columns``."""
        return self._margins.read(self._rows(band), columns)

    def model_label(self, position: int) -> Any:
        return self._models[position]

    def target_label(self, column: int) -> Any:
        return self._targets[column]
