"""DNIKit 2.0.0 side of ``benchmarks/introspect.py``; run by the DNIKit venv's python.

Not a module of the tmx benchmarks package: ``benchmarks/introspect.py`` executes this file with
``benchmarks/.venv-dnikit/bin/python`` (which has DNIKit and not tmx) as

    python _dnikit_runner.py RESPONSES.npy OPTIONS_JSON

``RESPONSES.npy`` is a (sample, unit) array, one layer. ``OPTIONS_JSON`` holds ``repeats``,
``score_repeats``, ``batch_sizes`` (each step that reads data is timed at each), ``components``,
``seed``, ``threads`` (BLAS / OpenMP threads, 0: the libraries' default) and optionally
``tmx_gmm``, the path of an .npz with a fitted mixture (``means``, ``covariances`` (diag),
``weights``) to score the first samples with DNIKit's scoring code for the cross-check. Prints
one JSON object on stdout: ``seconds`` (step -> batch size -> median), ``check`` (results to
compare with tmx) and ``versions``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import warnings
from importlib.metadata import version

import numpy as np
from dnikit.base import Batch, pipeline
from dnikit.introspectors import IUA, PFA, Familiarity
from numpy.random import RandomState

LAYER = "dense"


def make_producer(x: np.ndarray):
    """A DNIKit Producer over the rows of ``x`` (views, no copies)."""

    def producer(batch_size: int):
        for start in range(0, x.shape[0], batch_size):
            yield Batch({LAYER: x[start : start + batch_size]})

    return producer


def median_seconds(fn, repeats: int, warmup: bool) -> tuple[float, object]:
    """Median wall time of ``fn()`` over ``repeats`` runs and the last result."""
    out = fn() if warmup else None
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    x = np.load(sys.argv[1])
    opts = json.loads(sys.argv[2])
    repeats = int(opts["repeats"])
    score_repeats = int(opts.get("score_repeats", repeats))
    sizes = [int(b) for b in opts["batch_sizes"]]
    components = int(opts["components"])
    seed = int(opts["seed"])
    producer = make_producer(x)
    warnings.simplefilter("ignore")
    if int(opts.get("threads", 0)) > 0:
        from threadpoolctl import threadpool_limits

        threadpool_limits(int(opts["threads"]))
    # seconds[step][batch size]: the median at each batch size; the caller takes the best.
    seconds: dict[str, dict[int, float]] = {}
    check: dict[str, object] = {}

    def timed(step, make_fn, warmup, n=repeats, batch_sizes=sizes):
        seconds[step] = {}
        out = None
        for bs in batch_sizes:
            seconds[step][bs], res = median_seconds(make_fn(bs), n, warmup)
            out = res if out is None else out
        return out  # the result at the first batch size

    # PFA: covariance + eigendecomposition, then the KL recipe (with the default L1Max units).
    pfa = timed("pfa", lambda bs: lambda: PFA.introspect(producer, batch_size=bs), True)
    recipe = timed(
        "pfa_recipe",
        lambda bs: (
            lambda: pfa.get_recipe(
                strategy=PFA.Strategy.KL(), unit_strategy=PFA.UnitSelectionStrategy.L1Max()
            )
        ),
        True,
        batch_sizes=sizes[:1],  # no data access: the batch size plays no part
    )
    r = recipe[LAYER]
    check["pfa"] = {
        "original": int(r.original_output_count),
        "recommended": int(r.recommended_output_count),
        "kl": float(r.diagnostics.kl_divergence),
        "n_inactive": int(r.number_inactive_units),
        "removed": [int(u) for u in r.maximally_correlated_units],
        "eigenvalues_top": pfa._internal_result[LAYER].eigenvalues[:10].tolist(),
    }

    # IUA, including the per-layer results (mean / std / per-unit lists) tmx returns too.
    res = timed("iua", lambda bs: lambda: IUA.introspect(producer, batch_size=bs).results, True)
    ir = res[LAYER]
    check["iua"] = {
        "mean_inactive": float(ir.mean_inactive),
        "std_inactive": float(ir.std_inactive),
        "unit_inactive_count": [int(c) for c in ir.unit_inactive_count],
    }

    # Familiarity: fit (sklearn GaussianMixture on the accumulated responses: the batch size
    # only changes how they are gathered, so it is timed with the first one) and scoring
    # (DNIKit's own scipy multivariate_normal mixture, run through a pipeline).
    def fit(bs):
        def run():
            strategy = Familiarity.Strategy.GMM(
                gaussian_count=components, _random_state=RandomState(seed)
            )
            return Familiarity.introspect(producer, strategy=strategy, batch_size=bs)

        return run

    fam = timed("familiarity_fit", fit, False, batch_sizes=sizes[:1])

    def score(bs):
        def run():
            scored = pipeline(producer, fam)
            return np.array(
                [res.score for b in scored(bs) for res in b.metadata[fam.meta_key][LAYER]]
            )

        return run

    scores = timed("familiarity_score", score, False, n=score_repeats)
    check["familiarity"] = {"scores_first100": scores[:100].tolist()}

    if opts.get("tmx_gmm"):
        # Score the first samples under tmx's fitted mixture with DNIKit's scoring code.
        from dnikit.introspectors._familiarity._gaussian_familiarity import (
            _MixtureOfMultivariateGaussianDistributions as Mixture,
        )

        g = np.load(opts["tmx_gmm"])
        mix = Mixture._create(
            mean_list=g["means"],
            covariance_list=np.array([np.diag(c) for c in g["covariances"]]),
            weights=g["weights"],
        )
        check["familiarity"]["scores_first100_tmx_model"] = [
            float(res.score) for res in mix.compute_familiarity_score(x[:100])
        ]

    versions = {pkg: version(pkg) for pkg in ("dnikit", "numpy", "scipy", "scikit-learn")}
    print(json.dumps({"seconds": seconds, "check": check, "versions": versions}))


if __name__ == "__main__":
    main()
