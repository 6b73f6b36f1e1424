"""Representation similarity: centred kernel alignment (CKA) between layers, and under a
transformation.

With X (n × p) and Y (n × q) the activations of two layers on the same n rows (samples at one
transformation, or every (sample, transformation) row with ``transformation="stack"``), K and L
their n × n kernel matrices and H = I − 11ᵀ/n the centring matrix:

    HSIC_0(K, L) = tr(K H L H) / (n − 1)²                              (Gretton et al. 2005)
    CKA(K, L)    = HSIC(K, L) / sqrt(HSIC(K, K) · HSIC(L, L))          (Kornblith et al. 2019)

Kernels: ``"linear"``, K = X Xᵀ, for which with centred features X_c, Y_c

    CKA = ‖Y_cᵀ X_c‖_F² / (‖X_cᵀ X_c‖_F · ‖Y_cᵀ Y_c‖_F);

``"rbf"``, K_ij = exp(−‖x_i − x_j‖² / (2σ²)), with σ = ``sigma`` or, by default, the median
heuristic of Kornblith et al.: σ = ``sigma_factor`` × the median Euclidean distance between
distinct rows (i < j) of that layer (so each layer, and each side of a pair, has its own σ).

Linear CKA is invariant to orthogonal transforms and isotropic scaling of the units (and to
adding a constant to them), not to other invertible linear maps; RBF CKA with the median
heuristic is invariant to the same (σ scales with the data). It needs no correspondence between
the units of the two layers, which may even differ in number.

Estimators (``estimator``):

- ``"full"``: HSIC_0 on all n rows, the CKA of Kornblith et al. (2019).
- ``"unbiased"``: the unbiased HSIC_1 of Song et al. (2012) on all n rows (n ≥ 4). With
  K̃, L̃ the kernels with their diagonals set to 0,

      HSIC_1 = [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1) / ((n − 1)(n − 2)) − 2/(n − 2) · 1ᵀK̃L̃1] / (n(n − 3)).

- ``"minibatch"``: the estimator of Nguyen, Raghu & Kornblith (2021): each epoch draws a seeded
  permutation of the rows, splits it into ⌊n / k⌋ minibatches of ``batch_size`` = k rows (the
  remainder is left out) and computes HSIC_1 on each; then

      CKA = mean_b HSIC_1(K_b, L_b) / sqrt(mean_b HSIC_1(K_b, K_b) · mean_b HSIC_1(L_b, L_b)).

  HSIC_1 is a U-statistic, so its mean over all k-subsets is HSIC_1 on the n rows: as the number
  of minibatches grows, the minibatch CKA tends to the ``"unbiased"`` one. Only k × k kernels
  are held. With ``"rbf"`` and no ``sigma``, σ of each layer comes from the pairs of the first
  minibatch (then fixed for every minibatch, so all use one kernel).

Memory and streaming (``estimator="full"`` and ``"unbiased"``; ``method``):

- ``"features"`` (linear kernel, ``"full"`` only): one pass over the sample blocks (a lazy
  cube's own chunks; blocks of 4096 samples for numpy) accumulating, in float64, the centred
  cross-products X_cᵀ Y_c of every pair of layers (and X_cᵀ X_c of each) with the pairwise
  co-moment update of Chan et al. (block means merged, no cancellation). Memory 8 p q bytes
  per pair (8 U² for all pairs of a cube with U units), whatever n.
- ``"gram"``: the n × n kernel of every layer in float64, 8 n² bytes each, built from products
  of pairs of sample blocks (block j is read about n_blocks / 2 times: save or persist a lazy
  cube whose blocks are costly, such as one computed by a model). Needed for ``"rbf"`` and
  ``"unbiased"``.
- ``"auto"``: ``"features"`` when it applies and needs less memory, else ``"gram"``.

The chosen route must fit ``memory`` (default 1 GiB), or the call is refused with the sizes
and the alternatives (``estimator="minibatch"``, fewer layers or samples). The minibatch
estimator reads the rows of several minibatches at a time (as many as fit ``memory``): one pass
over the cube when all fit, several otherwise (``attrs["passes"]``).

A layer whose activations are constant over the rows has HSIC(K, K) = 0: its CKA is NaN (as
is any CKA whose unbiased self-HSIC estimate comes out ≤ 0, possible with very few rows).

References
----------
Gretton, A., Bousquet, O., Smola, A., Schölkopf, B. (2005). Measuring statistical dependence
with Hilbert-Schmidt norms. Algorithmic Learning Theory (ALT), 63–77.

Song, L., Smola, A., Gretton, A., Bedo, J., Borgwardt, K. (2012). Feature selection via
dependence maximization. Journal of Machine Learning Research 13, 1393–1434.

Kornblith, S., Norouzi, M., Lee, H., Hinton, G. (2019). Similarity of neural network
representations revisited. ICML 2019, PMLR 97, 3519–3529.

Nguyen, T., Raghu, M., Kornblith, S. (2021). Do wide and deep networks learn the same things?
Uncovering how neural network representations vary with width and depth. ICLR 2021.

Chan, T. F., Golub, G. H., LeVeque, R. J. (1979). Updating formulae and a pairwise algorithm for
computing sample variances. Technical Report STAN-CS-79-773, Stanford University.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from .. import _validate as v
from .._batching import parse_memory
from .._progress import Steps, steps
from .._progress import resolve as resolve_progress
from .._schema import check_cube, unit_index, units_by_layer
from ._common import base_attrs, choice

__all__ = ["ESTIMATORS", "KERNELS", "METHODS", "cka", "cka_invariance"]

KERNELS = ("linear", "rbf")
ESTIMATORS = ("full", "unbiased", "minibatch")
METHODS = ("auto", "features", "gram")
_BLOCK = 4096  # samples per block of a numpy-backed cube


# -- numpy kernels --------------------------------------------------------------------------------
def centre_gram(k: np.ndarray) -> np.ndarray:
    """H K H in place (float64): K minus its row and column means plus its grand mean."""
    rows = k.mean(axis=1)
    grand = rows.mean()
    k -= rows[:, None]
    k -= rows[None, :]
    k += grand
    return k


def hsic_biased(kc: np.ndarray, lc: np.ndarray) -> float:
    """HSIC_0 = tr(K H L H) / (n − 1)² from the *centred* kernels H K H and H L H."""
    n = kc.shape[0]
    return float(np.vdot(kc.ravel(), lc.ravel())) / (n - 1) ** 2


def hsic_unbiased(kt: np.ndarray, lt: np.ndarray) -> float:
    """HSIC_1 of Song et al. (2012) from kernels K̃, L̃ whose diagonals are 0 (n ≥ 4)."""
    n = kt.shape[0]
    k1, l1 = kt.sum(axis=1), lt.sum(axis=1)
    trace = float(np.vdot(kt.ravel(), lt.ravel()))  # tr(K̃ L̃), both symmetric
    value = trace + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2.0 * float(k1 @ l1) / (n - 2)
    return value / (n * (n - 3))


def squared_distances(gram: np.ndarray) -> np.ndarray:
    """‖x_i − x_j‖² from the Gram matrix X Xᵀ, in place, clipped at 0, exact 0 diagonal."""
    diag = np.diag(gram).copy()
    gram *= -2.0
    gram += diag[:, None]
    gram += diag[None, :]
    np.maximum(gram, 0.0, out=gram)
    np.fill_diagonal(gram, 0.0)
    return gram


def median_distance(sq: np.ndarray) -> float:
    """The median Euclidean distance between distinct rows (pairs i < j)."""
    iu = np.triu_indices(sq.shape[0], k=1)
    return float(np.median(np.sqrt(sq[iu])))


def rbf_from_sq(sq: np.ndarray, sigma: float) -> np.ndarray:
    """exp(−d² / (2σ²)) in place; σ = 0 gives 1 where d = 0 and 0 elsewhere.

    Rows that are all equal (every d = 0) give the zero kernel instead of the constant one:
    the same HSIC (0) with any estimator, without rounding residues.
    """
    if not sq.any():
        return np.zeros_like(sq)
    if sigma > 0:
        sq *= -1.0 / (2.0 * sigma * sigma)
        return np.exp(sq, out=sq)
    return (sq == 0).astype(np.float64)


def cka_from_hsic(xy: float, xx: float, yy: float) -> float:
    """HSIC_xy / sqrt(HSIC_xx · HSIC_yy); NaN when a self-HSIC is not positive."""
    den = xx * yy
    if not den > 0:
        return float("nan")
    return float(xy / np.sqrt(den))


# -- groups of features --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Group:
    """The features of one layer at one transformation (or stacked): ``src[:, t, units]``."""

    src: Any  # (N, T, U), numpy or dask
    t: int | None  # None: stack every transformation
    units: Any  # slice or integer positions
    p: int


def _rows_per_sample(groups: list[_Group]) -> int:
    g = groups[0]
    return 1 if g.t is not None else int(g.src.shape[1])


def _fetch(groups: list[_Group], index: Any, bar: Steps) -> list[np.ndarray]:
    """The float64 rows (sample-major, then transformation) of every group at ``index``
    (``bar`` advances once: one read of the cube)."""
    parts = []
    for g in groups:
        x = g.src[index]
        x = x[:, g.t] if g.t is not None else x
        parts.append(x[..., g.units])
    lazy = [i for i, x in enumerate(parts) if isinstance(x, da.Array)]
    if lazy:
        done = dask.compute(*[parts[i] for i in lazy])
        for i, x in zip(lazy, done, strict=True):
            parts[i] = x
    out = [
        np.asarray(x, dtype=np.float64).reshape(-1, g.p) for x, g in zip(parts, groups, strict=True)
    ]
    bar.advance()
    return out


def _sample_blocks(groups: list[_Group], n: int) -> list[slice]:
    src = next((g.src for g in groups if isinstance(g.src, da.Array)), None)
    if src is not None:
        bounds = np.cumsum((0, *src.chunks[0]))
    else:
        bounds = np.append(np.arange(0, n, _BLOCK), n)
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]


# -- routes ---------------------------------------------------------------------------------------
def _add_block(xs, needed, means, comoments, count):
    """Merge one block's rows ``xs`` into the running ``means`` and centred ``comoments`` (in
    place; ``count`` rows merged so far), with Chan et al.'s pairwise update."""
    m = xs[0].shape[0]
    total = count + m
    # relative to the block's first row (exactly 0 for a constant unit), then centred
    centred = [x - x[0] for x in xs]
    shifts = [d.mean(axis=0) for d in centred]
    for d, sh in zip(centred, shifts, strict=True):
        d -= sh
    block_means = [x[0] + sh for x, sh in zip(xs, shifts, strict=True)]
    deltas = [bm - mu for bm, mu in zip(block_means, means, strict=True)]
    for g, h in needed:
        c = comoments[g, h]
        c += centred[g].T @ centred[h]
        if count:
            c += (count * m / total) * np.outer(deltas[g], deltas[h])
    for mu, d in zip(means, deltas, strict=True):
        mu += d * (m / total)


def _by_features(groups, pairs, n, show):
    """Linear CKA (HSIC_0) of each pair from float64 centred cross-products, one pass."""
    needed = sorted({(g, h) for g, h in pairs} | {(g, g) for pair in pairs for g in pair})
    count = 0
    means = [np.zeros(g.p) for g in groups]
    comoments = {pair: np.zeros((groups[pair[0]].p, groups[pair[1]].p)) for pair in needed}
    blocks = _sample_blocks(groups, n)
    with steps(len(blocks), show, unit="block") as bar:
        for block in blocks:
            xs = _fetch(groups, block, bar)
            _add_block(xs, needed, means, comoments, count)
            count += xs[0].shape[0]
    norms = {g: np.linalg.norm(comoments[g, g]) ** 2 for g in range(len(groups))}
    out = []
    for g, h in pairs:
        xy = np.linalg.norm(comoments[g, h]) ** 2
        out.append(cka_from_hsic(xy, norms[g], norms[h]))
    return np.array(out), {}


def _grams(groups, n, show):
    """The Gram matrix X Xᵀ of every group over all rows, from products of sample blocks
    (block i is read once and block j > i once more for each pair: B (B + 1) / 2 reads).

    Features are taken relative to the first row (for the digits; no effect on the centred or
    RBF kernels, nor on HSIC_1): a constant layer has an exactly zero Gram matrix.
    """
    r = _rows_per_sample(groups)
    rows = n * r
    grams = [np.empty((rows, rows)) for _ in groups]
    blocks = _sample_blocks(groups, n)
    shifts = None
    reads = len(blocks) * (len(blocks) + 1) // 2
    with steps(reads, show, unit="block") as bar:
        for i, bi in enumerate(blocks):
            xi = _fetch(groups, bi, bar)
            if shifts is None:
                shifts = [x[0].copy() for x in xi]
            xi = [x - s for x, s in zip(xi, shifts, strict=True)]
            ri = slice(bi.start * r, bi.stop * r)
            for bj in blocks[i + 1 :]:
                xj = [x - s for x, s in zip(_fetch(groups, bj, bar), shifts, strict=True)]
                _put(grams, xi, xj, ri, slice(bj.start * r, bj.stop * r))
            _put(grams, xi, xi, ri, ri)
    return grams


def _put(grams, xi, xj, ri, rj):
    """The blocks X_i X_jᵀ (and their transposes) of every group's Gram matrix."""
    for gram, a, b in zip(grams, xi, xj, strict=True):
        block = a @ b.T
        gram[ri, rj] = block
        gram[rj, ri] = block.T


def _kernelize(gram, kernel, sigma, sigma_factor):
    """(K, σ) in place of ``gram``; σ NaN for the linear kernel."""
    if kernel == "linear":
        return gram, float("nan")
    sq = squared_distances(gram)
    s = float(sigma) if sigma is not None else sigma_factor * median_distance(sq)
    return rbf_from_sq(sq, s), s


def _by_gram(groups, pairs, n, kernel, estimator, sigma, sigma_factor, show):
    kernels, sigmas = [], []
    for gram in _grams(groups, n, show):
        k, s = _kernelize(gram, kernel, sigma, sigma_factor)
        if estimator == "full":
            centre_gram(k)
        else:
            np.fill_diagonal(k, 0.0)
        kernels.append(k)
        sigmas.append(s)
    hsic = hsic_biased if estimator == "full" else hsic_unbiased
    self_hsic = [hsic(k, k) for k in kernels]
    out = [
        cka_from_hsic(hsic(kernels[g], kernels[h]), self_hsic[g], self_hsic[h]) for g, h in pairs
    ]
    return np.array(out), {"sigma": np.array(sigmas)}


def _batch_hsic(xs, b, pairs, kernel, sigma, sigma_factor, sigmas):
    """HSIC_1 of every group with itself and of every pair on the minibatch rows ``b`` of the
    fetched rows ``xs``; ``sigmas`` (RBF) are set from the first minibatch, then reused."""
    kernels = []
    for x in xs:
        xb = x[b]
        xb = xb - xb[0]  # HSIC_1 is unchanged by a shift; constant → exact 0
        kernels.append(xb @ xb.T)
    if kernel == "rbf":
        sqs = [squared_distances(g) for g in kernels]
        if sigmas is None:
            sigmas = [
                float(sigma) if sigma is not None else sigma_factor * median_distance(s)
                for s in sqs
            ]
        kernels = [rbf_from_sq(s, sg) for s, sg in zip(sqs, sigmas, strict=True)]
    for kk in kernels:
        np.fill_diagonal(kk, 0.0)
    self_h = [hsic_unbiased(kk, kk) for kk in kernels]
    return self_h, [hsic_unbiased(kernels[g], kernels[h]) for g, h in pairs], sigmas


def _by_minibatch(groups, pairs, n, kernel, sigma, sigma_factor, k, epochs, seed, memory, show):
    r = _rows_per_sample(groups)
    rows = n * r
    per_epoch = rows // k
    width = sum(g.p for g in groups)
    batches_per_read = max(1, int(memory // max(1, 8 * k * width * r)))
    sigmas: list[float] | None = None
    sum_xy = np.zeros(len(pairs))
    sum_self = np.zeros(len(groups))
    passes = 0
    reads = epochs * -(-per_epoch // batches_per_read)
    with steps(reads, show, unit="read") as bar:
        for epoch in range(epochs):
            order = np.random.default_rng([seed, epoch]).permutation(rows)[: per_epoch * k]
            batches = order.reshape(per_epoch, k)
            for start in range(0, per_epoch, batches_per_read):
                chunk = batches[start : start + batches_per_read]
                samples = np.unique(chunk // r)
                xs = _fetch(groups, samples, bar)
                passes += 1
                # position of each row of the chunk among the fetched rows
                where = np.searchsorted(samples, chunk // r) * r + chunk % r
                for b in where:
                    self_h, xy, sigmas = _batch_hsic(
                        xs, b, pairs, kernel, sigma, sigma_factor, sigmas
                    )
                    sum_self += self_h
                    sum_xy += xy
    n_batches = per_epoch * epochs
    mean_xy, mean_self = sum_xy / n_batches, sum_self / n_batches
    out = [cka_from_hsic(mean_xy[i], mean_self[g], mean_self[h]) for i, (g, h) in enumerate(pairs)]
    info: dict[str, Any] = {"n_batches": n_batches, "passes": passes}
    if kernel == "rbf":
        info["sigma"] = np.array(sigmas)
    return np.array(out), info


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GiB"


def _compute(
    groups,
    pairs,
    n,
    *,
    kernel,
    estimator,
    method,
    sigma,
    sigma_factor,
    batch_size,
    epochs,
    seed,
    memory,
    show,
):
    """CKA of every pair of groups (indices into ``groups``) and the route's information;
    ``show``: a progress bar over the reads of the cube."""
    rows = n * _rows_per_sample(groups)
    if estimator == "minibatch":
        if method != "auto":
            raise ValueError(
                f"method={method!r} applies to estimator='full' or 'unbiased'; the minibatch "
                "estimator always streams k × k kernels (use method='auto')"
            )
        if batch_size > rows:
            raise ValueError(
                f"batch_size={batch_size} exceeds the {rows} rows available (samples"
                f"{' × transformations' if _rows_per_sample(groups) > 1 else ''})"
            )
        values, info = _by_minibatch(
            groups, pairs, n, kernel, sigma, sigma_factor, batch_size, epochs, seed, memory, show
        )
        return values, {"method": "minibatch", **info}
    need = 4 if estimator == "unbiased" else 2
    if rows < need:
        raise ValueError(
            f"estimator={estimator!r} needs at least {need} rows (samples); got {rows}"
        )
    needed = {(g, h) for g, h in pairs} | {(g, g) for pair in pairs for g in pair}
    feature_bytes = 8.0 * sum(groups[g].p * groups[h].p for g, h in needed)
    gram_bytes = 8.0 * len(groups) * rows * rows
    features_ok = kernel == "linear" and estimator == "full"
    if method == "features" and not features_ok:
        raise ValueError(
            "method='features' computes linear CKA with the biased HSIC_0 only; use "
            "method='gram' (or 'auto') for kernel='rbf' or estimator='unbiased'"
        )
    if method == "auto":
        method = "features" if features_ok and feature_bytes <= gram_bytes else "gram"
    nbytes = feature_bytes if method == "features" else gram_bytes
    if nbytes > memory:
        what = (
            "float64 cross-products of every pair of layers (8 p q bytes a pair)"
            if method == "features"
            else f"the {rows} × {rows} float64 kernel of each of {len(groups)} layer views"
        )
        raise ValueError(
            f"CKA with kernel={kernel!r}, estimator={estimator!r} (method={method!r}) needs "
            f"{_gib(nbytes)} for {what}, more than memory={memory} bytes ({_gib(memory)}); use "
            "estimator='minibatch' (k × k kernels, streamed), fewer layers or samples, or "
            "raise memory"
        )
    if method == "features":
        values, info = _by_features(groups, pairs, n, show)
    else:
        values, info = _by_gram(groups, pairs, n, kernel, estimator, sigma, sigma_factor, show)
    return values, {"method": method, "passes": 1, **info}


# -- validation -----------------------------------------------------------------------------------
def _check_options(kernel, estimator, method, sigma, sigma_factor, batch_size, epochs, seed):
    choice(kernel, "kernel", KERNELS)
    choice(estimator, "estimator", ESTIMATORS)
    choice(method, "method", METHODS)
    if sigma is not None:
        if isinstance(sigma, bool) or not isinstance(sigma, int | float | np.number):
            raise ValueError(f"sigma must be a positive number or None; got {sigma!r}")
        if not np.isfinite(sigma) or sigma <= 0:
            raise ValueError(f"sigma must be a positive number or None; got {sigma!r}")
        if kernel != "rbf":
            raise ValueError("sigma is the RBF bandwidth; it needs kernel='rbf'")
    if (
        isinstance(sigma_factor, bool)
        or not isinstance(sigma_factor, int | float | np.number)
        or not np.isfinite(sigma_factor)
        or sigma_factor <= 0
    ):
        raise ValueError(f"sigma_factor must be a positive number; got {sigma_factor!r}")
    for value, name, low in ((batch_size, "batch_size", 4), (epochs, "epochs", 1)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    v.seed(seed)


def _check_transformation(transformation: Any, t: int, name: str) -> int | None:
    """An index into the transformations (None for "stack")."""
    if isinstance(transformation, str) and transformation == "stack":
        return None
    if isinstance(transformation, bool) or not isinstance(transformation, int | np.integer):
        raise ValueError(f'{name} must be an int or "stack"; got {transformation!r}')
    if not -t <= transformation < t:
        raise ValueError(f"{name}={transformation} is out of range for T = {t}")
    return int(transformation) % t


def _layers(cube: xr.DataArray) -> list[tuple[str, Any, int]]:
    """(layer, unit positions as a slice when contiguous, count), in order of appearance."""
    return [(layer, unit_index(pos), int(pos.size)) for layer, pos in units_by_layer(cube).items()]


def _route_attrs(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if k in ("method", "passes", "n_batches")}


# -- public functions -----------------------------------------------------------------------------
def cka(
    cube_a: xr.DataArray,
    cube_b: xr.DataArray | None = None,
    *,
    transformation: int | str = 0,
    kernel: str = "linear",
    sigma: float | None = None,
    sigma_factor: float = 0.8,
    estimator: str = "full",
    method: str = "auto",
    batch_size: int = 256,
    epochs: int = 1,
    seed: int = 0,
    memory: int | str = 2**30,
    progress: bool | None = None,
) -> xr.DataArray:
    """CKA between every pair of layers of one cube, or of two cubes on the same samples.

    Formulas, estimators and memory: see the module docstring (``tmx.measures.similarity``).
    CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), 1 for representations equal up to an
    orthogonal transform, isotropic scaling and a shift of the units; about 0 for independent
    ones (exactly E = 0 with ``"unbiased"``/``"minibatch"``; HSIC_0 is biased upwards).

    Parameters
    ----------
    cube_a : xr.DataArray
        A cube (sample, transformation, unit) with the unit coordinate ``layer``; numpy- or
        dask-backed (streamed over its sample chunks, never loaded whole).
    cube_b : xr.DataArray, optional
        A second cube on the same samples (e.g. another model); default ``cube_a`` (then the
        result is symmetric with a diagonal of 1).
    transformation : int or "stack", default 0
        The transformation whose activations are compared (the rows are the samples), or
        ``"stack"``: every (sample, transformation) pair is a row (both cubes need the same T).
    kernel : {"linear", "rbf"}, default "linear"
    sigma : float, optional
        RBF bandwidth σ for every layer; by default ``sigma_factor`` × each layer's median
        distance between distinct rows (Kornblith et al. used 0.2, 0.4 and 0.8).
    sigma_factor : float, default 0.8
    estimator : {"full", "unbiased", "minibatch"}, default "full"
        HSIC_0 on all rows (Kornblith et al. 2019), HSIC_1 on all rows (Song et al. 2012), or
        the mean of HSIC_1 over seeded minibatches (Nguyen, Raghu & Kornblith 2021).
    method : {"auto", "features", "gram"}, default "auto"
        How the full estimators are computed (module docstring); the numbers agree.
    batch_size, epochs, seed : int
        Minibatch size k (≥ 4), number of passes over a fresh seeded permutation of the rows,
        and the seed (epoch e uses ``np.random.default_rng([seed, e])``).
    memory : int or str, default 2**30
        Bytes the computation may hold (or a size such as ``"2GB"``; at least 1 MiB); beyond
        it the full estimators are refused.
    progress : bool, optional
        A progress bar over the reads of the cube(s): one per sample block for
        ``method="features"``, B (B + 1) / 2 for ``"gram"`` (B blocks: each pair of blocks of
        the Gram matrix), one per group of minibatches for ``"minibatch"``. Default: shown when
        run interactively, not under pytest or CI.

    Returns
    -------
    xr.DataArray
        ``cka`` over (layer_a, layer_b); with RBF the coordinates ``sigma_a`` / ``sigma_b``
        (the σ used per layer); ``attrs``: measure, n_samples, n_rows, kernel, estimator,
        method, transformation, ... and ``tmx_version``. Computed (numpy-backed) even for a
        dask-backed cube: every estimator is a ratio of sums over all samples (the kernels'
        σ from the median heuristic too), streamed block by block here; ``progress=`` shows it.

    Examples
    --------
    >>> import numpy as np, xarray as xr, tmx
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(100, 1, 4))
    >>> q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    >>> a = np.concatenate([x, 3 * x @ q, rng.normal(size=(100, 1, 4))], axis=2)
    >>> cube = xr.DataArray(a, dims=("sample", "transformation", "unit"),
    ...     coords={"layer": ("unit", ["in"] * 4 + ["rotated"] * 4 + ["noise"] * 4),
    ...             "channel": ("unit", np.tile(np.arange(4), 3)),
    ...             "y": ("unit", [-1] * 12), "x": ("unit", [-1] * 12)})
    >>> sim = tmx.cka(cube)
    >>> sim.dims
    ('layer_a', 'layer_b')
    >>> print(np.round(sim.values, 2))
    [[1.   1.   0.03]
     [1.   1.   0.03]
     [0.03 0.03 1.  ]]
    >>> u = tmx.cka(cube, estimator="unbiased").sel(layer_a="in", layer_b="noise")
    >>> bool(abs(u) < 0.05)
    True
    """
    cube_a = check_cube(cube_a, "cube_a", measure="cka")
    same = cube_b is None
    cube_b = cube_a if same else check_cube(cube_b, "cube_b", measure="cka")
    memory = parse_memory(memory, default=2**30, minimum=2**20)
    show = resolve_progress(progress)
    _check_options(kernel, estimator, method, sigma, sigma_factor, batch_size, epochs, seed)
    n = cube_a.sizes["sample"]
    if cube_b.sizes["sample"] != n:
        raise ValueError(
            f"cube_a and cube_b must hold the same samples; got N = {n} and "
            f"N = {cube_b.sizes['sample']}"
        )
    if not same and "sample" in cube_a.coords and "sample" in cube_b.coords:
        if not np.array_equal(cube_a["sample"].values, cube_b["sample"].values):
            raise ValueError(
                "cube_a and cube_b must hold the same samples in the same order; their "
                "'sample' coordinates differ"
            )
    t_a = _check_transformation(transformation, cube_a.sizes["transformation"], "transformation")
    t_b = _check_transformation(transformation, cube_b.sizes["transformation"], "transformation")
    if t_a is None and cube_a.sizes["transformation"] != cube_b.sizes["transformation"]:
        raise ValueError(
            'transformation="stack" pairs the rows (sample, transformation) of both cubes: '
            f"they need the same T; got {cube_a.sizes['transformation']} and "
            f"{cube_b.sizes['transformation']}"
        )
    src_a, src_b = cube_a.data, cube_b.data
    layers_a, layers_b = _layers(cube_a), _layers(cube_b)
    groups = [_Group(src_a, t_a, u, p) for _, u, p in layers_a]
    if same:
        idx_b = list(range(len(groups)))
        pairs = [(g, h) for g in range(len(groups)) for h in range(g, len(groups))]
    else:
        idx_b = [len(groups) + i for i in range(len(layers_b))]
        groups += [_Group(src_b, t_b, u, p) for _, u, p in layers_b]
        pairs = [(g, h) for g in range(len(layers_a)) for h in idx_b]
    values, info = _compute(
        groups,
        pairs,
        n,
        kernel=kernel,
        estimator=estimator,
        method=method,
        sigma=sigma,
        sigma_factor=sigma_factor,
        batch_size=int(batch_size),
        epochs=int(epochs),
        seed=int(seed),
        memory=int(memory),
        show=show,
    )
    out = np.full((len(layers_a), len(layers_b)), np.nan)
    for value, (g, h) in zip(values, pairs, strict=True):
        i, j = g, idx_b.index(h)
        out[i, j] = value
        if same:
            out[j, i] = value
    coords: dict[str, Any] = {
        "layer_a": [name for name, _, _ in layers_a],
        "layer_b": [name for name, _, _ in layers_b],
    }
    if "sigma" in info:
        coords["sigma_a"] = ("layer_a", info["sigma"][: len(layers_a)])
        coords["sigma_b"] = ("layer_b", info["sigma"][idx_b])
    attrs = base_attrs(
        cube_a,
        "cka",
        kernel=kernel,
        estimator=estimator,
        transformation=transformation,
        sigma=sigma,
        sigma_factor=sigma_factor if kernel == "rbf" and sigma is None else None,
        batch_size=batch_size if estimator == "minibatch" else None,
        epochs=epochs if estimator == "minibatch" else None,
        seed=seed if estimator == "minibatch" else None,
        **_route_attrs(info),
    )
    attrs["n_rows"] = int(n * _rows_per_sample(groups))
    attrs["two_cubes"] = int(not same)
    return xr.DataArray(out, dims=("layer_a", "layer_b"), coords=coords, name="cka", attrs=attrs)


def cka_invariance(
    cube: xr.DataArray,
    *,
    reference: int = 0,
    kernel: str = "linear",
    sigma: float | None = None,
    sigma_factor: float = 0.8,
    estimator: str = "full",
    method: str = "auto",
    batch_size: int = 256,
    epochs: int = 1,
    seed: int = 0,
    memory: int | str = 2**30,
    progress: bool | None = None,
) -> xr.DataArray:
    """Invariance as similarity: per layer and transformation j, the CKA over samples between
    the layer's activations at j (a(g_j x)) and at the ``reference`` transformation (a(x)).

    1: the layer's representation of g_j x is that of x up to an orthogonal transform (a
    rotation or permutation of its units), isotropic scaling and a shift; about 0: unrelated.
    Unlike the variance family it needs no correspondence between units (a transformation that
    permutes a layer's channels, as a rotation does to a rotation-equivariant layer's
    orientation channels, still gives 1). Formulas, estimators, options and memory: as
    ``cka`` (module docstring ``tmx.measures.similarity``); with RBF and the median heuristic
    each (layer, transformation) has its own σ.

    Parameters
    ----------
    cube : xr.DataArray
        A cube (sample, transformation, unit), numpy- or dask-backed (streamed).
    reference : int, default 0
        The transformation compared against (the identity in most sets).
    kernel, sigma, sigma_factor, estimator, method, batch_size, epochs, seed, memory, progress
        As in ``cka``.

    Returns
    -------
    xr.DataArray
        ``cka_invariance`` over (transformation, layer), with the cube's coordinates along
        ``transformation`` (1 at the reference). Computed (numpy-backed) even for a
        dask-backed cube, as ``cka``'s result; ``progress=`` shows the reads.

    Examples
    --------
    >>> import numpy as np, xarray as xr, tmx
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 3))
    >>> perm = np.stack([x, x[:, [2, 0, 1]], x[:, [1, 2, 0]]], axis=1)  # units permuted
    >>> noise = np.stack([x, rng.normal(size=(200, 3)), rng.normal(size=(200, 3))], axis=1)
    >>> cube = xr.DataArray(np.concatenate([perm, noise], axis=2),
    ...     dims=("sample", "transformation", "unit"),
    ...     coords={"layer": ("unit", ["perm"] * 3 + ["noise"] * 3),
    ...             "channel": ("unit", [0, 1, 2] * 2),
    ...             "y": ("unit", [-1] * 6), "x": ("unit", [-1] * 6)})
    >>> inv = tmx.cka_invariance(cube, estimator="unbiased")
    >>> inv.dims
    ('transformation', 'layer')
    >>> print(np.round(inv.sel(layer="perm").values, 3))
    [1. 1. 1.]
    >>> bool(abs(inv.sel(layer="noise")[1:]).max() < 0.05)
    True
    """
    cube = check_cube(
        cube,
        measure="cka_invariance",
        min_transformations=2,
        need={"transformations": "a transformation to compare with the reference"},
    )
    memory = parse_memory(memory, default=2**30, minimum=2**20)
    show = resolve_progress(progress)
    _check_options(kernel, estimator, method, sigma, sigma_factor, batch_size, epochs, seed)
    t = cube.sizes["transformation"]
    ref = _check_transformation(reference, t, "reference")
    if ref is None:
        raise ValueError(f"reference must be an int (a transformation index); got {reference!r}")
    layers = _layers(cube)
    src = cube.data
    groups: list[_Group] = []
    pairs: list[tuple[int, int]] = []
    for _, units, p in layers:
        first = len(groups)
        groups += [_Group(src, j, units, p) for j in range(t)]
        pairs += [(first + ref, first + j) for j in range(t)]
    values, info = _compute(
        groups,
        pairs,
        cube.sizes["sample"],
        kernel=kernel,
        estimator=estimator,
        method=method,
        sigma=sigma,
        sigma_factor=sigma_factor,
        batch_size=int(batch_size),
        epochs=int(epochs),
        seed=int(seed),
        memory=int(memory),
        show=show,
    )
    out = values.reshape(len(layers), t).T
    coords: dict[str, Any] = {
        str(k): c.variable for k, c in cube.coords.items() if c.dims == ("transformation",)
    }
    coords["layer"] = [name for name, _, _ in layers]
    if "sigma" in info:
        coords["sigma"] = (("transformation", "layer"), info["sigma"].reshape(len(layers), t).T)
    attrs = base_attrs(
        cube,
        "cka_invariance",
        kernel=kernel,
        estimator=estimator,
        reference=ref,
        sigma=sigma,
        sigma_factor=sigma_factor if kernel == "rbf" and sigma is None else None,
        batch_size=batch_size if estimator == "minibatch" else None,
        epochs=epochs if estimator == "minibatch" else None,
        seed=seed if estimator == "minibatch" else None,
        **_route_attrs(info),
    )
    return xr.DataArray(
        out, dims=("transformation", "layer"), coords=coords, name="cka_invariance", attrs=attrs
    )
