"""Every bash and python snippet in README.md and docs/*.md runs, in order, as written.

Each file runs in a fresh folder. Commands against ``s3://madrylab-datamodels`` reach a moto S3
server on loopback (``AWS_ENDPOINT_URL_S3``) holding a small CIFAR-shaped bucket in the published
layout. Not run: the README's ``make demo``/``make test`` (``make test`` runs this suite; the
demo runs in ``test_demo.py``), and blocks marked ``<!-- needs: gpu -->`` on machines without a GPU.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import upload, write_layout

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- needs: (\w+) -->\n)?```(bash|python)\n(.*?)```", re.S)


def has_gpu() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def snippets(path: Path) -> list[tuple[str, str]]:
    blocks = []
    for match in BLOCK.finditer(path.read_text()):
        needs, language, code = match.group(2), match.group(3), match.group(4)
        if needs == "gpu" and not has_gpu():
            continue
        if language == "bash" and code.lstrip().startswith("make "):
            continue
        blocks.append((language, code))
    return blocks


@pytest.fixture(scope="module")
def published_bucket(s3_client, tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    write_layout(root, dataset="cifar", pct=50, models=10_600, n_train=300, n_test=600, seed=11)
    upload(s3_client, root)


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_snippets_run(path, published_bucket, tmp_path, monkeypatch):
    blocks = snippets(path)
    if not blocks:
        pytest.skip(f"{path.name} has no runnable snippet")
    monkeypatch.chdir(tmp_path)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    namespace: dict = {"__name__": "__main__"}
    for language, code in blocks:
        if language == "bash":
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", code], env=env, capture_output=True, text=True, timeout=900
            )
            assert done.returncode == 0, f"{path.name}:\n{code}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        else:
            exec(compile(code, f"{path.name}:python", "exec"), namespace)
