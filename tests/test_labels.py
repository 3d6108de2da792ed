"""String coordinates as uint8 codes with CF flag attributes: a round trip, and bad labels refused."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import given
from hypothesis import strategies as st

from dmstore.cli import main
from dmstore.errors import DmstoreError
from dmstore.io import labels


@given(st.lists(st.sampled_from(["fit", "eval", "a class"]), max_size=50))
def test_codes_round_trip_to_the_labels(values):
    """Blanks in a label become ``_`` (CF's flag_meanings are one blank-separated list)."""
    coord = labels.encode("model", values, ("fit", "eval", "a class"))
    assert coord.dtype == np.uint8 and coord.attrs["flag_meanings"] == "fit eval a_class"
    decoded = labels.decode(xr.Dataset(coords={"model": coord}))
    assert list(decoded["model"].values) == [v.replace(" ", "_") for v in values]


def test_lazy_codes_decode_without_a_scheduler():
    """A store's ``split`` is a Dask array: its codes are read on the calling thread (asking Dask
    for a scheduler imports ``distributed`` first: 0.4 s of a small fit)."""
    code = textwrap.dedent(
        """
        import sys
        import numpy as np, xarray as xr
        from dmstore.io import labels
        split = labels.encode("model", ["fit", "eval", "fit"], ("fit", "eval"))
        ds = xr.Dataset(coords={"split": split}).chunk()
        assert not isinstance(ds["split"].data, np.ndarray)
        assert list(labels.decode(ds)["split"].values) == ["fit", "eval", "fit"]
        assert "distributed" not in sys.modules, "a scheduler was asked for"
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("values", "meanings", "message"),
    [
        (["fit"], ["fit", "fit"], "at most 255 distinct names"),
        (["fit"], [str(i) for i in range(256)], "at most 255 distinct names"),
        (["train"], ["fit", "eval"], "model label 'train' is not one of"),
    ],
)
def test_bad_labels_are_one_error(values, meanings, message):
    with pytest.raises(DmstoreError, match=message):
        labels.encode("model", values, meanings)


def test_info_on_no_store_or_a_lone_array_is_one_line(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nothing.zarr")]) == 2
    assert "no store at" in capsys.readouterr().err
    zarr.create_array(str(tmp_path / "array.zarr"), shape=(2,), dtype="int8")
    assert main(["info", str(tmp_path / "array.zarr")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a single Zarr array, not a dmstore store" in err[0]
