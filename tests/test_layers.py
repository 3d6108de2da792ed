"""The layers import only downward: io <- conversion, fitting, analysis (side by side) <- experiment
<- cli. Every import in the source counts, including those inside functions. (import-linter cannot
see ``dmstore.conversion``, which lives in the top-level ``conversion/`` folder, so the check is here.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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
