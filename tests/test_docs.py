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
from conftest import shared_example, upload, write_layout

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- needs: (\w+) -->\n)?```(bash|python)\n(.*?)```", re.S)


def has_gpu() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def snippets(path: Path, gpu: bool) -> list[tuple[str, str]]:
    """The runnable blocks of ``path`` in order (``make`` lines are the Makefile's tests); the
    blocks marked as needing a GPU only with ``gpu``."""
    blocks = []
    for match in BLOCK.finditer(path.read_text()):
        needs, language, code = match.group(2), match.group(3), match.group(4)
        if needs == "gpu" and not gpu:
            continue
        if language == "bash" and code.lstrip().startswith("make "):
            continue
        blocks.append((language, code))
    return blocks


GPU_DOCS = [p for p in DOCS if "<!-- needs: gpu -->" in p.read_text()]


@pytest.fixture(scope="module")
def published_bucket(s3_client, tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    write_layout(root, dataset="cifar", pct=50, models=10_600, n_train=300, n_test=600, seed=11)
    upload(s3_client, root)
    shared_example(tmp_path_factory.mktemp("example"))  # the docs' `dmstore example` copies it


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_snippets_run(path, published_bucket, tmp_path, monkeypatch):
    blocks = snippets(path, gpu=False)
    if not blocks:
        pytest.skip(f"{path.name} has no runnable snippet")
    run_blocks(path, blocks, tmp_path, monkeypatch)


@pytest.mark.parametrize("path", GPU_DOCS, ids=[p.name for p in GPU_DOCS])
def test_gpu_snippets_run(path, published_bucket, tmp_path, monkeypatch):
    """A document with GPU blocks runs whole (with them) on a machine with a GPU; elsewhere the
    test shows as skipped, not as passed."""
    if not has_gpu():
        pytest.skip(f"{path.name} has blocks that need a GPU and this machine has none")
    run_blocks(path, snippets(path, gpu=True), tmp_path, monkeypatch)


def run_blocks(path: Path, blocks: list[tuple[str, str]], tmp_path: Path, monkeypatch) -> None:
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
