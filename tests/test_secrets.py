"""Credentials stay private: no secret in output, errors, progress, store attributes or records."""

from __future__ import annotations

import pytest
from conftest import upload, write_layout
from dmstore.conversion.convert import convert

from dmstore.errors import DmstoreError
from dmstore.io.source import Source

KEY, SECRET = "AKIAKEEPTHISPRIVATE1", "s3cr3t/KeepThisOutOfEveryLog+x"


def test_no_secret_anywhere(s3_client, tmp_path, capfd):
    root = tmp_path / "source"
    write_layout(root, dataset="sec", models=3000, n_train=100, n_test=50)
    url = upload(s3_client, root, bucket="secret-bucket")
    source = Source(url, storage_options={"key": KEY, "secret": SECRET})
    dest = tmp_path / "s.zarr"
    convert(source, str(dest), "sec", 50, eval_rows=500, progress=True)
    with pytest.raises(DmstoreError) as missing:
        convert(source, str(tmp_path / "t.zarr"), "sec", 20, eval_rows=500)
    out, err = capfd.readouterr()
    texts = [out, err, str(missing.value), repr(source)]
    texts += [p.read_text(errors="replace") for p in dest.rglob("*.json")]  # metadata, attributes, records
    for text in texts:
        assert KEY not in text and SECRET not in text
    assert "sec/data/train_masks_20pct.npy does not exist" in str(missing.value)
