"""Models per minute of ``dmstore example`` (batched MLPs) against a per-model training loop.

Usage: python benchmarks/bench_example.py [--models 3000] [--eval-models 1000] [--loop-models 100]

Reports the batched rate (wall clock, and models per minute of 2 cores' CPU time, which is
steadier on a shared machine), the rate of the loop a user would write (one ``nn.Sequential`` and one
Adam per model, same data, subsets, steps and learning rate), peak RSS after the first batches
and at the end (bounded memory), the models' test accuracy, and the linear datamodeling score
of difference-of-means datamodels fitted on the fit rows and scored on the eval rows.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import numpy as np
import torch
from scipy.stats import rankdata

from dmstore.experiment.example import HIDDEN, LR, STEPS, draw_model, make_example, subset_size
from dmstore.io.datasets import load_digits_split


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def loop_rate(n_models: int, pct: int) -> tuple[float, float]:
    """Models per minute of the plain loop (wall clock, and per 2 cores of CPU time)."""
    split = load_digits_split()
    x_train, y_train = torch.from_numpy(split.x_train), torch.from_numpy(split.y_train)
    x_eval = torch.from_numpy(np.concatenate([split.x_train, split.x_test]))
    k = subset_size(pct, len(y_train))
    began, cpu_began = time.perf_counter(), time.process_time()
    for row in range(n_models):
        subset, _ = draw_model(0, row, len(y_train), k, x_train.shape[1], 10)
        model = torch.nn.Sequential(torch.nn.Linear(64, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 10))
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        xs, ys = x_train[subset], y_train[subset]
        for _ in range(STEPS):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xs), ys).backward()
            optimizer.step()
        with torch.no_grad():
            model(x_eval).half().numpy()
    return n_models / (time.perf_counter() - began) * 60, n_models / (time.process_time() - cpu_began) * 120


def column_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    return (a * b).sum(axis=0) / np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=3000)
    parser.add_argument("--eval-models", type=int, default=1000)
    parser.add_argument("--loop-models", type=int, default=100)
    parser.add_argument("--pct", type=int, default=50)
    args = parser.parse_args()
    rows = args.models + args.eval_models
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )

    rss: dict[int, float] = {}

    def record(start: int, stop: int) -> None:
        rss[stop] = peak_rss_mb()

    with tempfile.TemporaryDirectory() as out:
        began, cpu_began = time.perf_counter(), time.process_time()
        folder = make_example(
            out, pct=args.pct, models=args.models, eval_models=args.eval_models, progress=True, on_batch=record
        )
        seconds, cpu = time.perf_counter() - began, time.process_time() - cpu_began
        data = folder / "data"
        masks = np.load(data / f"train_masks_{args.pct}pct.npy")
        margins = np.load(data / f"test_margins_{args.pct}pct.npy").astype(np.float64)
        size_mb = sum(p.stat().st_size for p in data.iterdir()) / 2**20
    batched, batched_cpu = rows / seconds * 60, rows / cpu * 120
    loop, loop_cpu = loop_rate(args.loop_models, args.pct)

    fit = args.models
    seen = masks[:fit].astype(np.float64)
    count = seen.sum(axis=0)[:, None]
    weight = seen.T @ margins[:fit] / count - (1 - seen).T @ margins[:fit] / (fit - count)
    predicted = masks[fit:].astype(np.float64) @ weight
    pearson = np.mean(column_correlation(predicted, margins[fit:]))
    spearman = np.mean(column_correlation(rankdata(predicted, axis=0), rankdata(margins[fit:], axis=0)))
    accuracy = (margins > 0).mean(axis=1)
    first = min(rss)

    print(
        f"dmstore example, digits {args.pct}%: {rows} models in {seconds:.1f} s = {batched:.0f} models/min "
        f"({batched_cpu:.0f} per 2 cores of CPU time; files {size_mb:.0f} MiB)"
    )
    print(
        f"per-model loop (nn.Sequential + Adam, {args.loop_models} models): {loop:.0f} models/min "
        f"({loop_cpu:.0f} per 2 cores of CPU time); batched / loop = {batched / loop:.1f}x "
        f"({batched_cpu / loop_cpu:.1f}x in CPU time)"
    )
    print(f"peak RSS after {first} rows: {rss[first]:.0f} MiB; after {rows} rows: {rss[rows]:.0f} MiB")
    print(f"test accuracy per model: mean {accuracy.mean():.3f}, min {accuracy.min():.3f}, max {accuracy.max():.3f}")
    print(
        f"difference-of-means datamodels ({fit} fit rows) on {args.eval_models} eval rows: "
        f"mean Pearson {pearson:.3f}, mean Spearman {spearman:.3f} over {margins.shape[1]} test examples"
    )
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
