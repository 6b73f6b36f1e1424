"""tmx's introspectors (pfa, iua, familiarity) against DNIKit 2.0.0 on 10,000 × 512 responses.

Run: .venv/bin/python -m benchmarks.introspect [--n 10000] [--units 512] [--repeats 3]
         [--threads 1] [--batch-sizes 1024,4096] [--pca-only]
     .venv/bin/python -m benchmarks.introspect --setup-dnikit   # once: create the DNIKit venv

Data (seeded, float32, one dense layer "dense" of ``--units`` units): ReLU of correlated Gaussian
pre-activations with a low-rank structure (24 latent factors plus independent noise and a
per-unit bias), so PFA recommends a non-trivial count; 5 % of the units are dead (always 0) and
many others are often 0, so IUA has something to count.

Baseline: DNIKit 2.0.0, run in the same benchmark on the same data (saved to a temporary .npy)
by ``benchmarks/_dnikit_runner.py`` in its own venv, ``benchmarks/.venv-dnikit`` (DNIKit cannot
share tmx's venv). ``--setup-dnikit`` creates it with the python running this script:

    python -m venv benchmarks/.venv-dnikit
    benchmarks/.venv-dnikit/bin/pip install dnikit==2.0.0 numpy==<tmx's> scipy==<tmx's> \
        scikit-learn==<tmx's>

pinning numpy, scipy and scikit-learn to the versions in tmx's venv, so that both sides run the
same BLAS, eigensolvers and GaussianMixture and the ratios measure the libraries' own code.
DNIKit 2.0.0 (2022) declares no upper bounds and works with numpy 2.4 / scipy 1.17 /
scikit-learn 1.9 (tested: numpy 2.4.6, scipy 1.17.1, scikit-learn 1.9.1, annoy 1.17.3, Python
3.11). Its dependency ``annoy`` is built from source and needs a C++ compiler; it is needed even
here, since ``dnikit.introspectors`` imports Duplicates (which uses it) unconditionally. When the
venv is absent or does not import ``dnikit.introspectors``, only tmx's times are printed.

Threads: ``--threads`` (default 1) limits BLAS / OpenMP threads on both sides with
threadpoolctl. One thread gives stable ratios on a shared machine; with the default thread pools
(``--threads 0``) a busy machine makes both sides' BLAS calls (covariance, eigh, GMM) several
times slower at random, and the ratios mean little.

Rows (medians of ``--repeats``). tmx gets the in-memory DataArray and streams it in its own
4096-row chunks; DNIKit reads the responses through a Producer of batches, and each DNIKit step
that reads data is timed at every ``--batch-sizes`` (default 1024, DNIKit's Familiarity default,
and 4096, tmx's chunk; at DNIKit's PFA / IUA default, 32, it is 3-50x slower) and the fastest
is kept, so the baseline is DNIKit at its best of those (the table says which):

- pfa: ``tmx.introspect.pfa`` vs ``PFA.introspect`` (covariance + eigendecomposition). Both are
  bound by the same two LAPACK/BLAS calls (the 512 × 512 Gram matrix and ``eigh``); tmx also
  centres each chunk before its Gram product (the stable update that keeps a unit with mean 1e4
  and std 1e-3 exact; DNIKit's uncentred sums lose it), so this step alone is at parity or
  slightly slower. ``pfa(eigenvectors=False)`` (``eigvalsh``; the recipe needs only the
  eigenvalues) is compared with the same DNIKit step.
- pfa_recipe (KL): ``pfa_recipe(stats, "kl")`` vs ``pfa.get_recipe(KL, L1Max)``; both pick the
  count and the channels (tmx orders every active channel, DNIKit only the removed ones).
- iua: ``tmx.introspect.iua`` vs ``IUA.introspect`` + ``.results``.
- familiarity fit: ``familiarity(X, score=X[:1])`` (the fit plus scoring one sample; tmx has no
  separate fit call) vs ``Familiarity.introspect`` with the GMM strategy; both fit
  ``sklearn.mixture.GaussianMixture(5, "diag", random_state=seed, max_iter=200)`` on the
  float32 responses (tmx's defaults are DNIKit's), so the fit is at parity by construction.
- familiarity scoring: scoring the 10,000 samples under a fitted model. tmx (through its
  public call only, which always fits first): ``familiarity(small, score=X)`` minus
  ``familiarity(small, score=X[:1])``, with ``small = X[:500]`` (the same seeded fit both
  times, cheap next to the scoring), the two calls interleaved ``5 × --repeats`` times and the
  median of the differences kept; so the row is the cost of scoring 10,000 samples rather than
  one (sklearn ``score_samples`` per 4096-row chunk, in float64 like DNIKit, and the labeled
  result). The scoring cost does not depend on what the mixture was fitted on, only on its
  size (5 components × 512 units). DNIKit: the fitted ``Familiarity`` stage in a ``pipeline``
  (per batch and component, scipy ``multivariate_normal.logpdf`` with the diagonal covariance
  expanded to a full 512 × 512 matrix, then one result object per sample). Both compute the
  same log-likelihood.
- familiarity end to end: ``familiarity(X)`` vs fit + scoring.
- familiarity cross-checks (not timed): the benchmark fits
  ``GaussianMixture(5, "diag", random_state=seed, max_iter=200, tol=1e-3)`` on the float32
  responses itself (the model tmx documents it fits) and asserts that the float64
  log-likelihood of the first 100 samples under that mixture (computed here from its weights,
  means and variances) equals the scores of ``familiarity(X)`` (so tmx fits that model); the
  same first 100 samples are then scored under that mixture by DNIKit's code and compared.

PCA row (``--pca-only`` runs it alone, without the 10,000 × 512 data): ``tmx.introspect.reduce(
responses, "pca", 2)`` on 1797 × 128 float32 responses (the digits' sample count, the same
generator) against ``sklearn.decomposition.PCA(2, random_state=0).fit_transform`` of the same
numpy array as float64 (what tmx fits: the like-for-like baseline, target ratio ≤ 1.5) and as
float32 (scikit-learn's own precision, for information), in memory and held by dask (256-sample
chunks, already in memory) as a saved or lazy cube is. For the dask-backed row scikit-learn is
handed ``responses.values`` (the read a user must do before fitting; one dask compute), and tmx
reads the labels and the data in that one compute too; each timing is the median of
``--repeats`` runs of 20 calls, interleaved; ratio = tmx / scikit-learn time. The projection is
checked against scikit-learn's up to sign. Why tmx fits float64: scikit-learn's covariance solver
forms XᵀX in the input's precision before centering, so float32 responses with a common offset
lose the spectrum; the row ``float32 offset 1e3`` prints the overlap |⟨v₁, v₁*⟩| of each one's
first component with the float64 SVD of the centred data (1 = right).

Ratio = DNIKit / tmx (> 1: tmx is faster). Targets (the issue): ≥ 1 on pfa, iua and familiarity
(each as a user runs it: spectrum + recipe, the IUA, fit + scoring), ≥ 20 on familiarity
scoring; the indented rows are their steps, for information.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import xarray as xr
from scipy.special import logsumexp
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from tmx.introspect import familiarity, iua, pfa, pfa_recipe, reduce

from ._timing import median_seconds

HERE = Path(__file__).resolve().parent
DNIKIT_VENV = HERE / ".venv-dnikit"
DNIKIT_PYTHON = DNIKIT_VENV / "bin" / "python"
RUNNER = HERE / "_dnikit_runner.py"
LAYER = "dense"
COMPONENTS = 5
SEED = 0
SMALL_FIT = 500  # samples of the fit in the familiarity scoring row
CHECKED = 100  # first samples of the familiarity cross-checks


def make_responses(n: int, units: int, seed: int = SEED) -> np.ndarray:
    """ReLU of low-rank correlated Gaussian pre-activations, float32, with 5 % dead units."""
    rng = np.random.default_rng(seed)
    k = 24
    z = rng.standard_normal((n, k))
    w = rng.standard_normal((k, units)) * rng.uniform(0.2, 1.5, size=(1, units)) / np.sqrt(k)
    pre = z @ w + 0.3 * rng.standard_normal((n, units)) + rng.normal(0.0, 0.5, size=units)
    dead = rng.choice(units, size=max(1, units // 20), replace=False)
    pre[:, dead] = -1.0
    return np.maximum(pre, 0.0).astype(np.float32)


def as_dataarray(x: np.ndarray) -> xr.DataArray:
    n, units = x.shape
    return xr.DataArray(
        x,
        dims=("sample", "unit"),
        coords={"sample": np.arange(n), "layer": ("unit", np.full(units, LAYER))},
        name="responses",
    )


def dnikit_available() -> bool:
    if not DNIKIT_PYTHON.exists():
        return False
    probe = subprocess.run(
        [str(DNIKIT_PYTHON), "-c", "import dnikit.introspectors"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def setup_dnikit() -> None:
    pins = [f"{pkg}=={version(pkg)}" for pkg in ("numpy", "scipy", "scikit-learn")]
    cmds = [
        [sys.executable, "-m", "venv", str(DNIKIT_VENV)],
        [str(DNIKIT_VENV / "bin" / "pip"), "install", "dnikit==2.0.0", *pins],
    ]
    for cmd in cmds:
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    print(f"DNIKit venv ready: {DNIKIT_VENV} (keep it out of git)")


def time_tmx(data: xr.DataArray, repeats: int) -> tuple[dict[str, float], dict[str, object]]:
    sec: dict[str, float] = {}
    out: dict[str, object] = {}
    stats = pfa(data)
    sec["pfa"] = median_seconds(lambda: pfa(data), repeats)
    sec["pfa_values"] = median_seconds(lambda: pfa(data, eigenvectors=False), repeats)
    sec["pfa_recipe"] = median_seconds(lambda: pfa_recipe(stats, "kl"), repeats)
    recipe = pfa_recipe(stats, "kl")
    sec["iua"] = median_seconds(lambda: iua(data), repeats)
    out["pfa"], out["recipe"], out["iua"] = stats, recipe, iua(data)

    one = data[:1]
    sec["familiarity_fit"] = median_seconds(
        lambda: familiarity(data, one, n_components=COMPONENTS, seed=SEED), repeats, warmup=False
    )
    sec["familiarity_score"] = scoring_seconds(data, 5 * repeats)
    sec["familiarity_total"] = median_seconds(
        lambda: familiarity(data, n_components=COMPONENTS, seed=SEED), repeats, warmup=False
    )
    scores = familiarity(data, n_components=COMPONENTS, seed=SEED)["familiarity"].values[:, 0]
    out["model"], out["scores"] = checked_model(data, scores), scores
    return sec, out


def scoring_seconds(data: xr.DataArray, rounds: int) -> float:
    """Seconds ``familiarity`` spends scoring every sample of ``data`` rather than one.

    The median over ``rounds`` interleaved rounds of ``familiarity(small, score=data)`` minus
    ``familiarity(small, score=data[:1])``, ``small`` = the first ``SMALL_FIT`` samples: the
    same seeded fit in both calls, so the difference is the scoring of the other samples.
    """
    small, one = data[:SMALL_FIT], data[:1]

    def seconds(score: xr.DataArray) -> float:
        start = time.perf_counter()
        familiarity(small, score, n_components=COMPONENTS, seed=SEED)
        return time.perf_counter() - start

    seconds(data)  # warm-up
    return float(np.median([seconds(data) - seconds(one) for _ in range(rounds)]))


def checked_model(data: xr.DataArray, scores: np.ndarray) -> GaussianMixture:
    """The mixture tmx's ``familiarity(data)`` documents it fits, fitted here on the float32
    responses; asserts that its float64 log-likelihood of the first ``CHECKED`` samples equals
    ``scores`` (tmx's) there."""
    x = np.asarray(data.values)
    model = GaussianMixture(
        n_components=COMPONENTS, covariance_type="diag", random_state=SEED, max_iter=200, tol=1e-3
    ).fit(x)
    # log Σ_k π_k N(x; μ_k, diag σ²_k), in float64 from the fitted (float32) parameters
    rows = x[:CHECKED].astype(np.float64)[:, None, :]
    var = model.covariances_.astype(np.float64)
    mean = model.means_.astype(np.float64)
    per_component = np.log(model.weights_.astype(np.float64)) - 0.5 * np.sum(
        np.log(2 * np.pi * var) + (rows - mean) ** 2 / var, axis=-1
    )
    np.testing.assert_allclose(scores[:CHECKED], logsumexp(per_component, axis=1), rtol=1e-9)
    return model


def time_pca(repeats: int, n: int = 1797, units: int = 128) -> dict[str, tuple[float, ...]]:
    """(tmx s, scikit-learn float64 s, scikit-learn float32 s) per call of a 2-component PCA,
    in memory and dask-backed."""
    from sklearn.decomposition import PCA

    x = make_responses(n, units)
    x64 = x.astype(np.float64)
    data = as_dataarray(x)
    lazy = data.chunk({"sample": 256})
    direct = PCA(2, random_state=SEED).fit_transform(x64)
    out = {}
    for label, responses in (("in memory", data), ("dask-backed", lazy)):
        got = reduce(responses, "pca", 2).values[:, 0]
        for k in range(2):  # the same projection up to sign
            sign = np.sign(got[:, k] @ direct[:, k]) or 1.0
            np.testing.assert_allclose(got[:, k], sign * direct[:, k], rtol=1e-6, atol=1e-6)
        calls = 20
        # scikit-learn gets what a user would hand it: the numpy array in memory, or the
        # dask-backed responses read into numpy first (`.values`, one dask compute), since a
        # lazy or saved cube has to be read by whoever fits on it
        sides = {
            "tmx": lambda r=responses: reduce(r, "pca", 2),
            "sklearn64": lambda r=responses: PCA(2, random_state=SEED).fit_transform(
                np.asarray(r.values, dtype=np.float64)
            ),
            "sklearn32": lambda r=responses: PCA(2, random_state=SEED).fit_transform(r.values),
        }
        runs: dict[str, list[float]] = {side: [] for side in sides}
        for _ in range(max(3, repeats)):
            for side, fn in sides.items():
                start = time.perf_counter()
                for _ in range(calls):
                    fn()
                runs[side].append((time.perf_counter() - start) / calls)
        out[label] = tuple(float(np.median(runs[side])) for side in sides)
    return out


def pca_offset_overlap(n: int = 1797, units: int = 128, offset: float = 1e3) -> tuple[float, float]:
    """|<v1, v1*>| of tmx's and of scikit-learn-on-float32's first component with the float64
    SVD of the centred data, on float32 responses with a common offset."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(SEED)
    z = rng.normal(size=(n, units)) * np.linspace(0.1, 3.0, units)
    x = (z + offset).astype(np.float32)
    x64 = x.astype(np.float64)
    truth = np.linalg.svd(x64 - x64.mean(0), full_matrices=False)[2][0]
    sk = PCA(2, random_state=SEED).fit(x).components_[0].astype(np.float64)
    proj = reduce(as_dataarray(x), "pca", 2).values[:, 0, 0]
    mine = np.linalg.lstsq(x64 - x64.mean(0), proj, rcond=None)[0]
    mine /= np.linalg.norm(mine)
    return float(abs(mine @ truth)), float(abs(sk @ truth) / np.linalg.norm(sk))


def print_pca(sec: dict[str, tuple[float, ...]], repeats: int, threads: int) -> None:
    print(
        "reduce(..., 'pca', 2) on 1797 x 128 float32 vs sklearn PCA on the numpy array "
        "(dask-backed: read with .values) as "
        f"float64 (like for like) and float32; medians of {max(3, repeats)} runs of 20 calls; "
        f"BLAS threads {threads or 'default'}; ratio = tmx / sklearn time (target <= 1.5 vs "
        "float64)"
    )
    print(
        f"{'responses':14s} {'tmx ms':>8s} {'sk64 ms':>8s} {'ratio64':>8s} {'sk32 ms':>8s} "
        f"{'ratio32':>8s}  met"
    )
    for label, (t, b64, b32) in sec.items():
        print(
            f"{label:14s} {1e3 * t:8.2f} {1e3 * b64:8.2f} {t / b64:8.2f} {1e3 * b32:8.2f} "
            f"{t / b32:8.2f}  {'yes' if t / b64 <= 1.5 else 'NO'}"
        )
    ours, theirs = pca_offset_overlap()
    print(
        f"float32 offset 1e3: first-component overlap with the float64 SVD: tmx {ours:.6f}, "
        f"sklearn on float32 {theirs:.6f}"
    )


def run_dnikit(x: np.ndarray, model, args: argparse.Namespace) -> dict:
    tmp = tempfile.mkdtemp(prefix="tmx-bench-dnikit-")
    try:
        path = os.path.join(tmp, "responses.npy")
        np.save(path, x)
        gmm = os.path.join(tmp, "tmx_gmm.npz")
        np.savez(gmm, means=model.means_, covariances=model.covariances_, weights=model.weights_)
        opts = {
            "repeats": args.repeats,
            "score_repeats": args.repeats,
            "batch_sizes": args.batch_sizes,
            "components": COMPONENTS,
            "seed": SEED,
            "threads": args.threads,
            "tmx_gmm": gmm,
        }
        proc = subprocess.run(
            [str(DNIKIT_PYTHON), str(RUNNER), path, json.dumps(opts)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"the DNIKit runner failed:\n{proc.stderr}")
        return json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# (key, label, target): the targeted rows are the "pfa, iua and familiarity" as a user
# runs them (a PFA is the spectrum plus its recipe); the others are their steps, for information.
ROWS = [
    ("pfa_both", "pfa + pfa_recipe", 1.0),
    ("pfa_values_both", "pfa(eigenvectors=False) + pfa_recipe", 1.0),
    ("iua", "iua", 1.0),
    ("familiarity_total", "familiarity fit + scoring", 1.0),
    ("familiarity_score", "familiarity scoring (all samples)", 20.0),
    ("pfa", "  step: pfa (covariance + eigh)", None),
    ("pfa_values", "  step: pfa(eigenvectors=False)", None),
    ("pfa_recipe", "  step: pfa_recipe (KL + L1Max units)", None),
    ("familiarity_fit", "  step: familiarity fit (GMM 5 diag)", None),
]


def print_table(tmx_s: dict[str, float], dnk: dict[str, dict[str, float]] | None) -> list[str]:
    """Print the table; return the rows that miss their target."""
    tmx_s = {
        **tmx_s,
        "pfa_both": tmx_s["pfa"] + tmx_s["pfa_recipe"],
        "pfa_values_both": tmx_s["pfa_values"] + tmx_s["pfa_recipe"],
    }
    best: dict[str, tuple[float, str]] = {}
    if dnk is not None:
        for step, by_size in dnk.items():
            size, sec = min(by_size.items(), key=lambda kv: kv[1])
            best[step] = (sec, size if len(by_size) > 1 else "-")
        best["pfa_both"] = (best["pfa"][0] + best["pfa_recipe"][0], best["pfa"][1])
        best["pfa_values"] = best["pfa"]  # DNIKit always computes eigenvectors
        best["pfa_values_both"] = best["pfa_both"]
        best["familiarity_total"] = (
            best["familiarity_fit"][0] + best["familiarity_score"][0],
            best["familiarity_score"][1],
        )
    misses = []
    print(
        f"{'step':36s} {'tmx s':>8s} {'DNIKit s':>9s} {'batch':>6s} {'ratio':>7s} "
        f"{'target':>7s}  met"
    )
    for key, label, target in ROWS:
        t = tmx_s[key]
        goal = "-" if target is None else f">={target:g}"
        if dnk is None:
            print(f"{label:36s} {t:8.4f} {'-':>9s} {'-':>6s} {'-':>7s} {goal:>7s}  -")
            continue
        d, size = best[key]
        ratio = d / t
        met = "-" if target is None else ("yes" if ratio >= target else "NO")
        if target is not None and ratio < target:
            misses.append(label)
        print(f"{label:36s} {t:8.4f} {d:9.4f} {size:>6} {ratio:7.2f} {goal:>7s}  {met}")
    return misses


def print_checks(out: dict[str, object], check: dict) -> None:
    stats, recipe, iu = out["pfa"], out["recipe"], out["iua"]
    p = int(stats["n_channels"].values[0])
    rec = int(recipe["recommended"].values[0])
    dp = check["pfa"]
    print("agreement:")
    print(
        f"  pfa KL recommended: tmx {rec} / DNIKit {dp['recommended']} of {p} "
        f"({'same' if rec == dp['recommended'] else 'DIFFERENT'}); KL tmx "
        f"{float(recipe['kl'].values[0]):.6f} / DNIKit {dp['kl']:.6f}; inactive channels tmx "
        f"{p - int(stats['n_active'].values[0])} / DNIKit {dp['n_inactive']}"
    )
    eig_t = np.asarray(stats["eigenvalues"].values[0, :10])
    eig_d = np.asarray(dp["eigenvalues_top"])
    rel = np.max(np.abs(eig_t / eig_d - 1))
    print(f"  pfa top-10 eigenvalues: max relative difference {rel:.1e}")
    removed_t = set(np.asarray(recipe["removal_order"].values[0, : p - rec]).tolist())
    removed_d = set(dp["removed"])
    print(
        f"  pfa removed channels (L1Max): tmx {len(removed_t)} / DNIKit {len(removed_d)}, "
        f"{len(removed_t & removed_d)} in common"
    )
    di = check["iua"]
    same_units = np.array_equal(
        np.asarray(iu["inactive_count"].values), np.asarray(di["unit_inactive_count"])
    )
    print(
        f"  iua per-unit inactive counts: {'identical' if same_units else 'DIFFERENT'}; mean "
        f"inactive per probe tmx {float(iu['mean_inactive'].values[0]):.4f} / DNIKit "
        f"{di['mean_inactive']:.4f}, std tmx {float(iu['std_inactive'].values[0]):.4f} / DNIKit "
        f"{di['std_inactive']:.4f}"
    )
    tmx100 = np.asarray(out["scores"])[:100]
    df = check["familiarity"]
    if "scores_first100_tmx_model" in df:
        same_model = np.asarray(df["scores_first100_tmx_model"])
        print(
            "  familiarity, tmx's fitted model scored by DNIKit's code (first 100): max |diff| "
            f"{np.max(np.abs(same_model - tmx100)):.2e} "
            f"(|score| ~ {np.median(np.abs(tmx100)):.0f}; "
            "both score in float64)"
        )
    own = np.asarray(df["scores_first100"])
    corr = np.corrcoef(own, tmx100)[0, 1]
    print(
        f"  familiarity, each library's own fit (first 100): Pearson r {corr:.6f}, max |diff| "
        f"{np.max(np.abs(own - tmx100)):.2e} (both fit the float32 responses with max_iter=200)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--units", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--batch-sizes",
        type=lambda v: [int(b) for b in v.split(",")],
        default=[1024, 4096],
        help="DNIKit batch sizes, comma-separated; the fastest is kept per step",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS / OpenMP threads on both sides (threadpoolctl; default 1); 0: the libraries' "
        "default (all cores)",
    )
    parser.add_argument(
        "--pca-only", action="store_true", help="only the reduce(pca) vs scikit-learn row"
    )
    parser.add_argument(
        "--setup-dnikit", action="store_true", help=f"create {DNIKIT_VENV} with DNIKit 2.0.0"
    )
    args = parser.parse_args()
    if args.setup_dnikit:
        setup_dnikit()
        return
    start = time.perf_counter()
    if args.threads > 0:
        threadpool_limits(args.threads)
    print_pca(time_pca(args.repeats), args.repeats, args.threads)
    if args.pca_only:
        print(f"total wall time {time.perf_counter() - start:.1f} s")
        return
    x = make_responses(args.n, args.units)
    data = as_dataarray(x)
    tmx_s, out = time_tmx(data, args.repeats)
    result = None
    if dnikit_available():
        result = run_dnikit(x, out["model"], args)
    print(
        f"{args.n} x {args.units} float32 responses, one layer; medians of {args.repeats}; "
        f"ratio = DNIKit / tmx (> 1: tmx faster); DNIKit best of batch sizes "
        f"{','.join(map(str, args.batch_sizes))}; "
        f"BLAS threads {args.threads or 'default'}"
    )
    if result is None:
        print(
            "DNIKit 2.0.0 not found in benchmarks/.venv-dnikit: run "
            "`python -m benchmarks.introspect --setup-dnikit` to compare"
        )
        print_table(tmx_s, None)
    else:
        v = result["versions"]
        print(
            f"DNIKit {v['dnikit']} (numpy {v['numpy']}, scipy {v['scipy']}, scikit-learn "
            f"{v['scikit-learn']}); tmx side numpy {version('numpy')}, scipy {version('scipy')}, "
            f"scikit-learn {version('scikit-learn')}"
        )
        misses = print_table(tmx_s, result["seconds"])
        print_checks(out, result["check"])
        print("targets missed: " + (", ".join(misses) if misses else "none"))
    print(f"total wall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
