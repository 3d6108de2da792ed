"""What every benchmark reports of a command: its wall time and the peak resident memory of its
whole process tree (the process and all its children, Dask workers included), sampled every 20 ms.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass
class Measured:
    seconds: float
    peak_bytes: int
    out: str  # the command's stdout (empty when it went to a log file)


def run(cmd: list[str], log: Path | None = None, every: float = 0.02) -> Measured:
    """Run ``cmd`` to its end (stdout captured, or with stderr into ``log``); exit on failure."""
    start = time.perf_counter()
    sink = open(log, "w") if log is not None else None
    try:
        proc = subprocess.Popen(
            cmd, stdout=sink or subprocess.PIPE, stderr=subprocess.STDOUT if sink else None, text=True
        )
        root, peak, done = psutil.Process(proc.pid), [0], threading.Event()

        def sample() -> None:
            while not done.is_set():
                try:
                    tree = [root, *root.children(recursive=True)]
                    peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree if p.is_running()))
                except psutil.Error:
                    pass
                time.sleep(every)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out, _ = proc.communicate()
        done.set()
        sampler.join()
    finally:
        if sink is not None:
            sink.close()
    if proc.returncode:
        where = f"; see {log}" if log else ""
        raise SystemExit(f"{' '.join(map(str, cmd))} failed with exit code {proc.returncode}{where}")
    return Measured(time.perf_counter() - start, peak[0], out or "")
