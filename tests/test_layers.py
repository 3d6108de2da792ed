"""The layers import only downward: io <- conversion, fitting, analysis (side by side) <- experiment
<- cli. Every import in the source counts, including those inside functions. (import-linter cannot
see ``dmstore.conversion``, which lives in the top-level ``conversion/`` folder, so the check is here.)"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import zarr

import dmstore

ROOT = Path(__file__).resolve().parents[1]
RANK = {"io": 0, "conversion": 1, "fitting": 1, "analysis": 1, "experiment": 2, "cli": 3}


def modules() -> dict[str, Path]:
    found = {}
    for path in (ROOT / "dmstore").rglob("*.py"):
        found[".".join(("dmstore", *path.relative_to(ROOT / "dmstore").with_suffix("").parts))] = path
    for path in (ROOT / "conversion").rglob("*.py"):
        found[".".join(("dmstore", "conversion", *path.relative_to(ROOT / "conversion").with_suffix("").parts))] = path
    return {name.removesuffix(".__init__"): path for name, path in found.items()}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name.startswith("dmstore.")}


@pytest.mark.parametrize("module", sorted(m for m in modules() if layer(m)))
def test_a_module_imports_only_its_own_layer_and_those_below(module):
    own = layer(module)
    known = modules()
    for name in imported(known[module]):
        target = layer(name)
        if target is None or target == own:
            continue
        assert RANK[target] < RANK[own], f"{module} imports {name}: layer {own} may not import {target}"


def test_every_module_is_in_a_layer():
    loose = {m for m in modules() if layer(m) is None} - {
        "dmstore",
        "dmstore.__main__",
        "dmstore._version",
        "dmstore.errors",
    }
    assert not loose, f"modules outside the layers: {sorted(loose)}"


HEAVY = ("dask.array", "scipy", "scipy.stats", "matplotlib", "sklearn", "torch", "distributed")


def loaded_after(code: str) -> dict:
    """What running ``code`` in a fresh interpreter leaves loaded and changed (the heavy packages,
    the warning filters dmstore sets: xarray's own are set before)."""
    probe = f"""
import json, sys, warnings
import xarray
filters = list(warnings.filters)
{code}
print(json.dumps({{
    "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules),
    "filters_changed": list(warnings.filters) != filters,
}}))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_import_and_the_cli_start_with_only_what_they_need(tmp_path):
    # import dmstore: the API is loaded on first use; nothing global changes
    assert loaded_after("import dmstore") == {"heavy": [], "filters_changed": False}
    # the command list, and a command, import only that command's modules
    help_ = "from dmstore.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    assert loaded_after(help_)["heavy"] == []
    store = tmp_path / "s.zarr"
    zarr.open_group(store, mode="w", zarr_format=3).create_array("train_margins", shape=(4, 3), dtype="f2")
    info = f"from dmstore.cli import main\nmain(['info', {str(store)!r}])"
    assert loaded_after(info)["heavy"] == []
    # a training job writing its rows into an experiment store (started once per job, often killed)
    dmstore.create(str(tmp_path / "run.zarr"), train=5, test=2, models=4, eval_models=1)
    write = f"import dmstore\nwith dmstore.writer({str(tmp_path / 'run.zarr')!r}) as w:\n" \
            "    w.write(0, train_masks=[1, 0, 1, 0, 1], train_margins=[0.0] * 5, test_margins=[1.0, 2.0])"
    assert loaded_after(write)["heavy"] == []
    # and the API and the accessor load when used
    used = "import dmstore, xarray as xr\ndmstore.fit\nxr.Dataset().dm"
    assert set(loaded_after(used)["heavy"]) >= {"dask.array", "scipy"}
    # the analyses' own statistics need no scipy.stats (0.3 s to import)
    assert "scipy.stats" not in loaded_after("import dmstore\ndmstore.evaluate\ndmstore.fit\ndmstore.stats")["heavy"]
