"""`dmstore demo` (what `make demo` runs), end to end on a small real example."""

from __future__ import annotations

import re

import numpy as np

import dmstore
from dmstore.cli import main


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", str(out), "--models", "1200", "--eval-models", "240", "--no-progress"]) == 0
    text = capsys.readouterr().out
    for step in ("1/4 dmstore example", "2/4 dmstore convert", "3/4 dmstore fit", "4/4 dmstore evaluate"):
        assert step in text
    lds = float(re.search(r"LDS (-?[0-9.]+):", text).group(1))
    assert lds > 0.1  # real datamodel signal, scored on models the fit never saw
    ds = dmstore.open(out / "digits.zarr")
    assert ds.attrs["dmstore_status"] == "complete" and int((ds.split == "eval").sum()) == 240
    dm = ds.dm.datamodels("test")
    assert dm.sizes["target"] == ds.sizes["test"] and np.isfinite(dm.weight.values).all()
    assert float(re.search(r"replicates \(as the paper reports it\): ([0-9.]+)", text).group(1)) > lds
    for plot in ("evaluate-test.png", "stats.png", "influencers.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / plot).stat().st_size > 20_000
