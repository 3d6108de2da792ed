"""``dmstore demo``: the main job end to end on the built-in example, explained as it goes.

example (train small networks, held-out subsets replicated) -> convert (local folder -> store) ->
fit (datamodels) -> evaluate (LDS on held-out models, its interval, the replicate-averaged LDS and
the noise ceiling) -> stats, each where the command runs it by default (threads of this process, within
its default memory budget); then one target's influencers as images.
"""

from __future__ import annotations

import time
from pathlib import Path

from dmstore.analysis.evaluate import evaluate
from dmstore.analysis.stats import plot_stats, stats
from dmstore.conversion.convert import convert
from dmstore.conversion.info import describe
from dmstore.experiment.example import make_example
from dmstore.fitting.fit import fit
from dmstore.io.dataset import open as open_store

REPLICATES = 4  # models trained on each held-out subset
INFLUENCERS_OF = 17  # the test example whose influencers the demo draws


def demo(
    out: str | Path,
    *,
    models: int = 3000,
    eval_models: int = 1000,
    seed: int = 0,
    progress: bool = True,
    say=print,
    cache: str | Path | None = None,
) -> dict:
    """Run the demo into ``out``; ``say`` receives each line of the running commentary; ``cache``
    is :func:`make_example`'s.

    Returns the figures it reports: ``lds``, ``n_targets``, ``n_eval``, ``seconds``, the paths.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = str(out / "digits.zarr")
    figures: dict = {"store": store}
    clock = time.perf_counter()

    def step(title: str) -> None:
        say(f"\n== {title} [{time.perf_counter() - clock:.0f} s]")

    step(f"1/4 dmstore example: train {models + eval_models:,} small networks on random halves of the digits data")
    say(
        "   Each row of the published matrices is one trained model; so it is here. The last "
        f"{eval_models:,} models are held out to evaluate datamodels."
    )
    replicates = REPLICATES if eval_models % REPLICATES == 0 else 1
    if replicates > 1:
        say(f"   Each held-out subset is trained {replicates} times (from other initial weights): its replicates.")
    make_example(
        out / "example-data",
        "digits",
        pct=50,
        models=models,
        eval_models=eval_models,
        replicates=replicates,
        seed=seed,
        progress=progress,
        cache=cache,
    )
    step("2/4 dmstore convert: stream the .npy matrices (local folder, the bucket's layout) into a Zarr store")
    convert(str(out / "example-data"), store, "digits", 50, progress=progress)
    say(describe(store))
    step("3/4 dmstore fit: one LASSO datamodel per test example, from one pass over the store")
    dm = fit(store, "test", overwrite=True, progress=progress)
    a = dm.attrs
    say(
        f"   {a['n_targets']} datamodels from {a['n_fit']:,} + {a['n_val']:,} validation models; "
        f"median lam {a['median_lam']:.3g}, on average {a['mean_nonzeros']:.0f} of {dm.sizes['train']} "
        f"training examples matter per test example"
    )
    step("4/4 dmstore evaluate: predict the held-out models' margins from their training subsets")
    result = evaluate(store, "test", plot=out / "evaluate-test.png", progress=progress)
    summary = stats(store, progress=progress)
    plot_stats(summary, out / "stats.png")
    open_store(store).dm.plot_influencers(test=INFLUENCERS_OF, path=out / "influencers.png")
    figures.update(
        lds=float(result.attrs["lds"]),
        n_targets=int(result.attrs["n_targets"]),
        n_eval=int(result.attrs["n_eval_models"]),
        seconds=time.perf_counter() - clock,
        plots=[str(out / "evaluate-test.png"), str(out / "stats.png"), str(out / "influencers.png")],
    )
    a = result.attrs
    say(
        f"\nLDS {figures['lds']:.3f}: across {figures['n_eval']:,} models it never saw, a datamodel's prediction "
        "(mask @ weight + bias) ranks their margins with this mean Spearman correlation (0 = chance, 1 = perfect); "
        f"95% interval over held-out subsets {a['lds_interval_models'][0]:.3f} to {a['lds_interval_models'][1]:.3f}."
    )
    if "lds_averaged" in a:
        say(
            f"Against margins averaged over each subset's {replicates} replicates (as the paper reports it): "
            f"{a['lds_averaged']:.3f}; the noise ceiling, the best any predictor could do given how much "
            f"retraining on the same subset changes a margin: {a['noise_ceiling']:.3f}."
        )
    say(
        f"plots: {figures['plots'][0]} (predicted vs true margins), {figures['plots'][1]} (per-example statistics), "
        f"{figures['plots'][2]} (test {INFLUENCERS_OF} beside its strongest training examples)"
    )
    say(f"next: python -c \"import dmstore; ds = dmstore.open('{store}'); print(ds.dm.top_influencers(test=0, k=5))\"")
    say(f"done in {figures['seconds']:.0f} s")
    return figures
