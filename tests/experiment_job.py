"""A training job of the experiment-store tests: writes the rows of the models named on the
command line into an experiment store, slowly, as training would (``python experiment_job.py
STORE MODEL...``). Every row is a function of the model number, so a serial write and any
number of killed and restarted jobs must give the same store."""

from __future__ import annotations

import sys
import time

import numpy as np


def row(model: int, spec: dict) -> dict:
    """The values of ``model`` for a store with this spec (deterministic)."""
    rng = np.random.default_rng(model)
    values: dict = {}
    for name, array in sorted(spec["arrays"].items()):
        shape = tuple(array["shape"])
        if name.endswith("masks"):
            values[name] = rng.random(shape) < 0.5
        else:
            values[name] = rng.standard_normal(shape).astype(np.float32)
    for name in sorted(spec["extras"]):
        values[name] = model if spec["extras"][name].startswith("int") else float(rng.random())
    return values


def main(store: str, models: list[int], pause: float) -> None:
    import dmstore

    with dmstore.writer(store) as w:
        print("writing", flush=True)  # started: the tests kill jobs from here on
        for model in models:
            time.sleep(pause)  # training
            w.write(model, **row(model, w.spec))


if __name__ == "__main__":
    main(sys.argv[1], [int(m) for m in sys.argv[2:]], pause=0.002)
