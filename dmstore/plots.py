"""PNG figures off screen: one row of panels in, one file out."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def panels(n: int, width: float = 4.0, height: float = 3.8) -> tuple[Any, Any]:
    """A figure with ``n`` panels side by side (matplotlib's Agg backend: no screen needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, n, figsize=(width * n, height))


def save(fig: Any, path: str | Path, title: str) -> Path:
    """Title, lay out, write ``fig`` as PNG to ``path`` and free it."""
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
