"""PNG figures off screen: one row of panels in, one file out.

Matplotlib's object API (``Figure`` with an Agg canvas): no global backend is switched and no
figure is registered with pyplot, so a notebook user's backend and figures are left alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def panels(n: int, width: float = 4.0, height: float = 3.8) -> tuple[Any, Any]:
    """A figure with ``n`` panels side by side, and its axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * n, height))
    return fig, fig.subplots(1, n, squeeze=False)[0]


def save(fig: Any, path: str | Path, title: str) -> Path:
    """Title, lay out and write ``fig`` as PNG to ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path
