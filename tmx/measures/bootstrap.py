"""Bootstrap confidence intervals for measures that average over samples and transformations.

``bootstrap(tmx.normalized_variance, cube, n=1000)`` resamples samples and/or transformations
with replacement and reports percentile confidence intervals per unit (or per layer).

For the variance family the resampling is **vectorised**: a resample is a vector of
multiplicities (how often each sample / transformation was drawn), and every replicate's TV and
SV are weighted moments of the same data. One streaming pass over the cube's sample blocks
computes all replicates at once with matrix products (BLAS), on data centred per block so that
the weighted sums of squares do not cancel:

    TV*_b = (1/N) Σ_i w_bi D_{v_b}(a[i, ·, u]),   SV*_b = (1/T) Σ_j v_bj D_{w_b}(a[·, j, u])

with w_b the sample multiplicities (Σ w = N) and v_b the transformation multiplicities
(Σ v = T) of replicate b, and D_w the dispersion of a weighted sample with count Σ w. Replicate
0 has all multiplicities 1: it is the estimate itself. Every other measure is bootstrapped by
recomputing it on each resample (a loop; the cube is loaded first when it is lazy and small).

Same seed, same interval, whatever the chunking: the sums run over blocks of samples fixed by
the cube's shape (a lazy cube's chunks are read once each and regrouped), so the replicates are
the same bits for every chunking; and a dispersion that is exactly zero (a replicate that did
not draw a sparse unit's one active sample, a support of equal values) is decided by exact
comparisons — one supported value, or equal dense ranks within a block and equal values across
blocks — and set to 0, never left as the rounding residue of S2 − S1²/S0 (which made
NV = 0/residue instead of the zero-division policy's value, and moved with the chunks).

References
----------
Efron, B. & Tibshirani, R. (1993). An Introduction to the Bootstrap. Chapman & Hall (ch. 13,
percentile intervals).
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from scipy.stats import norm
from scipy.stats import t as student_t

from .. import _deprecation
from .._batching import parse_memory
from .._progress import dask_bar, steps
from .._progress import resolve as resolve_progress
from .._schema import check_cube
from .._validate import seed as check_seed
from . import _jackknife as jk
from ._common import (
    DISPERSIONS,
    ZERO_DIVS,
    base_attrs,
    channel_groups,
    check_ddof,
    choice,
    dispersion_from_m2,
    divide,
    group_reduce,
    is_lazy,
    minus,
    unit_coords_of,
)
from .reduce import REDUCES
from .reduce import by_layer as _by_layer
from .variance import (
    normalized_variance,
    pool_activations,
    sample_variance,
    transformation_variance,
)

log = logging.getLogger("tmx")

OVER = ("sample", "transformation")
_VECTORISED = {
    transformation_variance: "tv",
    sample_variance: "sv",
    normalized_variance: "nv",
}
_WORK_BYTES = 64 * 2**20  # per replicate batch in the vectorised path
METHODS = ("jackknife", "bc", "percentile")
_JACKKNIFE_REDUCES = (None, "mean", "ratio_of_means")


def _column_quantiles(sorted_values: np.ndarray, count: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Linear-interpolation quantiles (numpy's default) per column at per-column levels ``q``,
    over the first ``count`` entries of each column of ``sorted_values`` (NaN sorted last)."""
    pos = q * (count - 1)
    below = np.clip(np.floor(pos).astype(np.int64), 0, np.maximum(count - 1, 0))
    above = np.clip(below + 1, 0, np.maximum(count - 1, 0))
    lo = np.take_along_axis(sorted_values, below[None], axis=0)[0]
    hi = np.take_along_axis(sorted_values, above[None], axis=0)[0]
    frac = pos - below
    with np.errstate(invalid="ignore"):
        out = np.where(lo == hi, lo, lo + (hi - lo) * frac)
    return np.where(count > 0, out, np.nan)


def interval(
    estimate: np.ndarray, replicates: np.ndarray, ci: float, method: str = "bc"
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap interval bounds per position from ``replicates`` (B, ...) of ``estimate``.

    Non-finite replicates are left out; a position whose estimate is not finite gets NaN.
    """

    estimate = np.asarray(estimate, dtype=np.float64)
    finite = np.isfinite(replicates)
    count = finite.sum(axis=0)
    ordered = np.sort(np.where(finite, replicates, np.nan), axis=0)
    alpha = (1 - ci) / 2
    levels = np.array([alpha, 1 - alpha])
    if method == "percentile":
        q = np.broadcast_to(levels.reshape(2, *([1] * estimate.ndim)), (2, *estimate.shape))
    else:
        with np.errstate(invalid="ignore"):
            below = (finite & (replicates < estimate)).sum(axis=0)
            ties = (finite & (replicates == estimate)).sum(axis=0)
            share = (below + 0.5 * ties) / np.maximum(count, 1)
        share = np.clip(share, 0.5 / np.maximum(count, 1), 1 - 0.5 / np.maximum(count, 1))
        z0 = norm.ppf(share)
        q = norm.cdf(2 * z0[None] + norm.ppf(levels).reshape(2, *([1] * estimate.ndim)))
    low = _column_quantiles(ordered, count, q[0])
    high = _column_quantiles(ordered, count, q[1])
    bad = ~np.isfinite(estimate)
    return np.where(bad, np.nan, low), np.where(bad, np.nan, high)


def _check_over(over: Any) -> tuple[str, ...]:
    items = (over,) if isinstance(over, str) else tuple(over)
    if not items or any(o not in OVER for o in items) or len(set(items)) != len(items):
        raise ValueError(f"over must be 'sample', 'transformation' or both (a tuple); got {over!r}")
    return items


def _draws(
    seed: int, first: int, stop: int, n: int, t: int, over: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Multiplicities of replicates ``first`` … ``stop − 1``: w (k, N) and v (k, T).

    Replicate 0 is the estimate (all ones); replicate b ≥ 1 draws from its own generator
    ``default_rng([seed, b])``, so a replicate is the same whichever batch computes it (the
    memory budget changes how many passes run, never the numbers).
    """
    w = np.ones((stop - first, n))
    v = np.ones((stop - first, t))
    for row, b in enumerate(range(first, stop)):
        if b == 0:
            continue
        rng = np.random.default_rng([int(seed), b])
        if "sample" in over:
            w[row] = np.bincount(rng.integers(0, n, size=n), minlength=n)
        if "transformation" in over:
            v[row] = np.bincount(rng.integers(0, t, size=t), minlength=t)
    return w, v


_MEMORY = 2**30  # default bytes for the replicates' sums
_BLOCK_VALUES = 2**21  # values per sample block of the vectorised path (16 MiB in float64)
_EXACT = 2**53  # integers up to here are exact in float64


def _replicates_per_pass(t: int, u: int, memory: int, itemsize: int = 8) -> int:
    """Replicates whose sums fit ``memory``: per replicate, S1 and S2 over (T, U), their
    dispersions and the per-unit TV, SV, NV in float64, and the exact-zero state and its
    per-block update (a value of the cube's ``itemsize`` and a few flags per (T, U), twice)."""
    per_replicate = 8 * (4 * t * u + 4 * u) + (2 * itemsize + 3) * t * u
    return max(1, int(memory // per_replicate))


def _block_size(n: int, t: int, u: int) -> int:
    """Samples per block of the vectorised path, from the cube's shape only (never from its
    chunks: the same sums in the same order, so the same bits, whatever the chunking), with
    N · size < 2**26 so that the rank sums of ``_support_constant`` stay exact."""
    size = max(1, _BLOCK_VALUES // max(1, t * u))
    return max(1, min(n, size, 2**26 // max(1, n)))


def _reads(data: Any, size: int) -> int:
    """How many reads ``_sample_blocks`` makes: the chunks of a dask array, else the blocks."""
    if isinstance(data, da.Array):
        return len(data.chunks[0])
    return -(-data.shape[0] // size)


def _sample_blocks(data: Any, size: int, bar: Any = None) -> Any:
    """(start, block) for consecutive blocks of ``size`` samples (the last may be shorter),
    numpy, in the data's dtype. A dask array is read chunk by chunk (each chunk computed
    once) and its samples regrouped into these blocks. ``bar`` advances once per read."""
    n = data.shape[0]
    if not isinstance(data, da.Array):
        for lo in range(0, n, size):
            if bar is not None:
                bar.advance()
            yield lo, np.asarray(data[lo : lo + size])
        return
    pending: list[np.ndarray] = []
    held = start = 0
    for lo, hi in itertools.pairwise(np.cumsum((0, *data.chunks[0]))):
        pending.append(np.asarray(data[lo:hi].compute()))
        if bar is not None:
            bar.advance()
        held += hi - lo
        while held >= size or (held and hi == n):
            joined = pending[0] if len(pending) == 1 else np.concatenate(pending)
            take = min(size, held)
            yield start, joined[:take]
            pending = [joined[take:]] if take < held else []
            held -= take
            start += take


class _Classes:
    """The classes of equal values of each column of ``x`` (s, C): per column the size of its
    largest class and that class's value (the mode); on demand, per column, whether each value
    is off the mode, and the values' dense ranks (equal values share a rank; NaN has its own)."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        s = x.shape[0]
        if s == 0 or x.shape[1] == 0:
            self.largest = np.zeros(x.shape[1], dtype=np.int64)
            self.mode = np.zeros(x.shape[1], dtype=x.dtype)
            return
        self.rows = np.ascontiguousarray(x.T)  # (C, s): each column's values contiguous
        ordered = np.sort(self.rows, axis=1)
        self.same = ordered[:, 1:] == ordered[:, :-1]
        idx = np.arange(s)
        first = np.concatenate([np.ones((len(ordered), 1), bool), ~self.same], axis=1)
        starts = np.maximum.accumulate(np.where(first, idx, 0), axis=1)
        runs = idx - starts + 1  # length of the run of equal values ending at each position
        end = runs.argmax(axis=1)
        self.largest = runs[np.arange(len(runs)), end]
        self.mode = ordered[np.arange(len(runs)), end]

    def off_mode(self, cols: np.ndarray, dtype: Any) -> np.ndarray:
        """(s, k): 1 where x[i, c] is not its column's mode, else 0."""
        return (self.rows[cols] != self.mode[cols, None]).astype(dtype).T

    def ranks(self, cols: np.ndarray) -> np.ndarray:
        """(s, k): the dense ranks of the columns ``cols``, float64 integers."""
        k, s = len(cols), self.x.shape[0]
        order = np.argsort(self.rows[cols], axis=1)
        dense = np.zeros((k, s))
        np.cumsum(~self.same[cols], axis=1, out=dense[:, 1:])
        ranks = np.empty((k, s))
        ranks[np.arange(k)[:, None], order] = dense
        return ranks.T


def _rank_sums(w: np.ndarray, ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """R1 = w @ ρ and R2 = w @ ρ², exactly, as int64: one float64 product of the encoded
    ρ + m ρ² (m above any R1) when every sum stays below 2**53 (integers are exact in float64
    whatever the summation order), else two, else int64 products."""
    top = float(max(ranks.shape[0] - 1, 1))
    n_max = float(max(w.sum(axis=1).max(), 1.0))
    m = n_max * top + 1.0
    if n_max * top + m * n_max * top * top < _EXACT:
        both = np.rint(w @ (ranks + m * ranks * ranks)).astype(np.int64)
        r2, r1 = np.divmod(both, int(m))
        return r1, r2
    if n_max * top * top < _EXACT:
        return (np.rint(w @ ranks).astype(np.int64), np.rint(w @ (ranks * ranks)).astype(np.int64))
    wi, ri = w.astype(np.int64), ranks.astype(np.int64)
    return wi @ ri, wi @ (ri * ri)


def _support_constant(
    w: np.ndarray, x: np.ndarray, classes: _Classes | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Which columns of ``x`` (s, C) are constant over each row's support, exactly.

    ``w`` (B, s): integer multiplicities. Returns ``const`` (B, C), True where every x[i, c]
    with w[b, i] > 0 is the same (non-NaN) value — False where row b has no support — and
    ``value`` (B, C), that value (x at the row's first supported i, in x's dtype).

    Exact facts only, never a float sum compared with 0. With d the number of supported i:
    d = 1 → constant; d ≥ 2 → constant only in a column with a class of at least d equal
    values. For d > s/2 that class can only be the column's mode, so the support is constant
    iff no supported value is off the mode: an integer count Σ w [x ≠ mode] = 0 (one product
    of small integers, exact whatever the summation order). For 2 ≤ d ≤ s/2 it is decided
    from the dense ranks ρ: with n_b = Σ w and the integer sums R1 = Σ w ρ, R2 = Σ w ρ²
    (``_rank_sums``), iff n_b R2 = R1² (Cauchy–Schwarz). ``classes``: ``_Classes(x)``.
    """
    s = x.shape[0]
    supp = w > 0
    count = supp.sum(axis=1)
    value = x[supp.argmax(axis=1)]
    const = np.zeros(value.shape, dtype=bool)
    const[count == 1] = True
    if (count >= 2).any():
        classes = _Classes(x) if classes is None else classes
        major = np.flatnonzero(2 * count > s)
        if major.size:
            cols = np.flatnonzero(classes.largest >= count[major].min())
            if cols.size:
                wm = w[major]
                # counts below 2**24 are exact in float32 (half the work of float64)
                small = float(wm.sum(axis=1).max()) < 2**24
                dtype = np.float32 if small else np.float64
                off = wm.astype(dtype) @ classes.off_mode(cols, dtype)
                const[np.ix_(major, cols)] = off == 0
        minor = np.flatnonzero((count >= 2) & (2 * count <= s))
        if minor.size:
            cols = np.flatnonzero(classes.largest >= max(2, count[minor].min()))
            if cols.size:
                wm = w[minor]
                r1, r2 = _rank_sums(wm, classes.ranks(cols))
                nb = np.rint(wm.sum(axis=1)).astype(np.int64)
                const[np.ix_(minor, cols)] = nb[:, None] * r2 == r1 * r1
    if value.dtype.kind == "f":
        const &= ~np.isnan(value)
    return const, value


class _ZeroState:
    """Per (replicate, position): is the column constant over the replicate's whole support?
    Updated block by block from ``_support_constant`` (exact comparisons only)."""

    def __init__(self, b: int, width: int, dtype: np.dtype) -> None:
        self.seen = np.zeros(b, dtype=bool)
        self.const = np.zeros((b, width), dtype=bool)
        self.value = np.zeros((b, width), dtype=dtype)

    def add(self, w: np.ndarray, x: np.ndarray) -> None:
        const, value = _support_constant(w, x)
        has = (w > 0).any(axis=1)
        old = has & self.seen
        if old.all():  # in place, without copies of the rows
            self.const &= const
            self.const &= self.value == value
        else:
            rows = np.flatnonzero(old)
            self.const[rows] &= const[rows] & (self.value[rows] == value[rows])
            new = np.flatnonzero(has & ~self.seen)
            self.const[new] = const[new]
            self.value[new] = value[new]
        self.seen |= has


def _weighted_dispersion(vb, xt, xt2, ddof: int, dispersion: str) -> np.ndarray:
    """Dispersion over transformations with multiplicities ``vb`` (b, T) of centred data
    ``xt`` (s, T, U): (s, b, U), in place to limit temporaries."""
    s1 = np.matmul(vb, xt)
    m2 = np.matmul(vb, xt2)
    count = vb.sum(axis=1)[None, :, None]
    np.multiply(s1, s1, out=s1)
    s1 /= count
    m2 -= s1
    m2 /= count - ddof
    np.maximum(m2, 0.0, out=m2)
    return np.sqrt(m2, out=m2) if dispersion == "std" else m2


def _weighted_replicates(
    data: Any, w: np.ndarray, v: np.ndarray, ddof: int, dispersion: str, bar: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """TV and SV of the replicates of ``w``, ``v``: (B, U) each, in one pass over blocks of
    samples (``bar`` advances once per read, see ``_sample_blocks``).

    The blocks are fixed by the cube's shape (``_block_size``), not by its chunks, so the
    replicates are the same bits for every chunking. A dispersion that is exactly zero — a
    replicate's support constant over samples (a sparse unit without its one active sample)
    or over transformations — is decided by exact comparisons (``_support_constant``) and set
    to 0, never left as the rounding residue of S2 − S1²/S0.
    """
    n, t, u = data.shape
    b_total = w.shape[0]
    resample_t = bool((v != 1).any())
    tv_acc = np.zeros((b_total, u))
    # SV: weighted sums over samples around a per-(j, u) shift c (the first sample, so
    # deviations are of the order of the spread and S2 − S1²/S0 does not cancel)
    shift = s0 = s1 = s2 = zero = None
    for lo, raw in _sample_blocks(data, _block_size(n, t, u), bar):
        s = raw.shape[0]
        if shift is None:
            shift = raw[:1].copy()  # one of the unit's own values: constant units stay exactly 0
            s0 = np.zeros(b_total)
            s1 = np.zeros((b_total, t * u))
            s2 = np.zeros((b_total, t * u))
            zero = _ZeroState(b_total, t * u, raw.dtype)
        # set on the first block
        assert s0 is not None and s1 is not None and s2 is not None and zero is not None
        xs = minus(raw, shift).reshape(s, t * u)
        wb_all = w[:, lo : lo + s]
        s0 += wb_all.sum(axis=1)
        s1 += wb_all @ xs
        np.multiply(xs, xs, out=xs)
        s2 += wb_all @ xs
        del xs
        zero.add(wb_all, raw.reshape(s, t * u))
        xt = minus(raw, raw[:, :1])  # shifted by a value of each cell first: constant cells give 0
        xt -= xt.mean(axis=1, keepdims=True)  # centred over transformations, per (i, u)
        xt2 = xt * xt
        if not resample_t:  # per-cell dispersions, re-weighted: one matrix product
            cells = dispersion_from_m2(xt2.sum(axis=1), t, ddof, dispersion)  # (s, U)
            tv_acc += wb_all @ cells
            continue
        # replicates per batch: the (s, batch, U) intermediates stay within _WORK_BYTES
        batch = max(1, min(b_total, int(_WORK_BYTES // (8 * s * u))))
        cells_by_t = np.ascontiguousarray(raw.transpose(1, 0, 2)).reshape(t, s * u)
        classes = _Classes(cells_by_t)
        for b0 in range(0, b_total, batch):
            vb, wb = v[b0 : b0 + batch], wb_all[b0 : b0 + batch]
            disp = _weighted_dispersion(vb, xt, xt2, ddof, dispersion)  # (s, b, U)
            const, _ = _support_constant(vb, cells_by_t, classes)  # (b, s·U): constant over supp(v)
            np.copyto(disp, 0.0, where=const.reshape(len(vb), s, u).transpose(1, 0, 2))
            tv_acc[b0 : b0 + batch] += np.einsum("sb,sbu->bu", wb.T, disp, optimize=True)
    # the cube has samples, so the loop ran and set the sums
    assert s0 is not None and s1 is not None and s2 is not None and zero is not None
    m2 = s2 - s1 * s1 / s0[:, None]
    m2[zero.const] = 0.0  # exactly constant over the replicate's samples
    m2 = m2.reshape(b_total, t, u)
    sv_cells = dispersion_from_m2(m2, s0[:, None, None], ddof, dispersion)  # (B, T, U)
    sv = np.einsum("bj,bju->bu", v, sv_cells, optimize=True) / t
    return tv_acc / n, sv


def _vectorised(
    measure: Callable,
    cube: xr.DataArray,
    draws: tuple[int, int, tuple[str, ...]],
    options: dict[str, Any],
    reduce: str | None,
    memory: int,
    progress: bool,
) -> tuple[xr.DataArray, int]:
    """Replicates (with replicate 0 the estimate) of a variance-family measure, per unit or
    reduced per layer, computed in passes of as many replicates as ``memory`` holds."""
    dispersion = choice(options.get("dispersion", "std"), "dispersion", DISPERSIONS)
    zero_div = choice(options.get("zero_div", "tmeasures"), "zero_div", ZERO_DIVS)
    pool = options.get("pool")
    n, t = cube.sizes["sample"], cube.sizes["transformation"]
    ddof = check_ddof(options.get("ddof", 1), n, t, OVER)
    # validate the options the measure's own way (and get its attrs and unit coords)
    template = measure(cube.isel(sample=slice(0, 2 + ddof)), **options)
    target = pool_activations(cube, pool[4:]) if pool in ("pre_mean", "pre_max") else cube
    coords = {k: c for k, c in unit_coords_of(template).items() if k != "inactive"}
    seed, n_boot, over = draws
    total = n_boot + 1
    per_pass = min(
        total, _replicates_per_pass(t, target.sizes["unit"], memory, target.dtype.itemsize)
    )
    passes = -(-total // per_pass)
    log.info(
        "bootstrap: %d replicate(s) (the estimate and %d draws) in %d pass(es) over the cube, "
        "%d per pass within memory=%d bytes",
        total,
        n_boot,
        passes,
        per_pass,
        memory,
    )
    if passes > 1 and isinstance(target.data, da.Array) and cube.attrs.get("model_name"):
        warnings.warn(
            f"bootstrap: {total} replicates of this cube's sums need {passes} passes over the "
            f"cube within memory={memory} bytes, and each pass recomputes the model's forward "
            "passes; save the cube (tmx.save) and bootstrap the opened store, or raise memory",
            stacklevel=3,
        )
    blocks = _reads(target.data, _block_size(n, t, target.sizes["unit"]))
    codes, groups = channel_groups(cube) if pool == "mean" else (None, None)
    rows: list[xr.DataArray] = []
    with steps(passes * blocks, progress, unit="block") as bar:
        for first in range(0, total, per_pass):
            stop = min(total, first + per_pass)
            w, v = _draws(seed, first, stop, n, t, over)
            tv, sv = _weighted_replicates(target.data, w, v, ddof, dispersion, bar)
            if codes is not None and groups is not None:  # both or neither
                tv = group_reduce(tv, codes, len(groups["layer"]), "mean")
                sv = group_reduce(sv, codes, len(groups["layer"]), "mean")
            nv = divide(tv, sv, zero_div)
            parts = xr.Dataset(
                {k: (("replicate", "unit"), x) for k, x in (("tv", tv), ("sv", sv), ("nv", nv))},
                coords=coords,
                attrs=template.attrs,
            )
            if reduce == "ratio_of_means":
                layer = _by_layer(parts, reduce="ratio_of_means")
                assert isinstance(layer, xr.DataArray)  # ratio_of_means gives one DataArray
                reps = layer
            else:
                reps = parts[_VECTORISED[measure]].rename(template.name)
                reps.attrs = dict(template.attrs)
                if reduce is not None:
                    reps = _by_layer(reps, reduce=reduce)
            rows.append(reps)
    out = rows[0] if len(rows) == 1 else xr.concat(rows, dim="replicate", coords="minimal")
    return out, passes


def _loop(
    measure: Callable,
    cube: xr.DataArray,
    w: np.ndarray,
    v: np.ndarray,
    options: dict[str, Any],
    progress: bool = False,
) -> xr.DataArray:
    """Replicates by recomputing the measure on each resample (replicate 0 = the estimate)."""
    if isinstance(cube.data, da.Array):
        if cube.nbytes > 2**30:
            warnings.warn(
                "bootstrap recomputes this measure on every resample of a lazy cube larger "
                "than 1 GiB: each replicate recomputes the cube. Save it with tmx.save and "
                "bootstrap the opened store, or load a subset.",
                stacklevel=3,
            )
        else:
            cube = cube.load()
    results = []
    with steps(w.shape[0], progress, unit="replicate") as bar:
        for b in range(w.shape[0]):
            idx = np.repeat(np.arange(w.shape[1]), w[b].astype(int))
            jdx = np.repeat(np.arange(v.shape[1]), v[b].astype(int))
            result = measure(cube.isel(sample=idx, transformation=jdx), **options)
            if isinstance(result, xr.Dataset):
                raise ValueError(
                    "measure must return a DataArray to be bootstrapped (pass the measure's "
                    "main output, e.g. a lambda selecting one variable)"
                )
            results.append(result.compute())
            bar.advance()
    return xr.concat(results, dim="replicate", coords="minimal", compat="override")


def _resolve_method(method: Any, measure: Callable, options: dict, over, reduce) -> str:
    """None → "jackknife" where it applies (the variance family, samples resampled, a smooth
    layer summary), "bc" elsewhere; an explicit "jackknife" where it does not apply is an error."""
    applies = (
        measure in _VECTORISED
        and options.get("by") is None
        and "sample" in over
        and reduce in _JACKKNIFE_REDUCES
    )
    if method is None:
        return "jackknife" if applies else "bc"
    choice(method, "method", METHODS)
    if method == "jackknife" and not applies:
        raise ValueError(
            "method='jackknife' needs a variance-family measure (transformation_variance, "
            "sample_variance, normalized_variance) without by=..., with 'sample' in over and "
            f"reduce in {list(_JACKKNIFE_REDUCES)}; use method='bc' or 'percentile'"
        )
    return method


def _jackknife_interval(
    measure: Callable,
    cube: xr.DataArray,
    ci: float,
    reduce: str | None,
    options: dict,
    progress: bool = False,
) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray, int]:
    """θ_J, its standard error and θ̂ of a variance-family measure (per unit or per layer)."""
    groups = options.pop("jackknife_groups", None)
    options.pop("bias_correction", None)
    parts = normalized_variance(
        cube, parts=True, bias_correction="jackknife", jackknife_groups=groups, **options
    )
    with dask_bar(progress and is_lazy(parts)):
        parts = parts.compute()
    sizes = np.asarray(parts["jackknife_size"].values, dtype=np.float64)
    if reduce == "ratio_of_means":
        layer = _by_layer(parts, reduce="ratio_of_means")
        extra = ["jackknife_se", "uncorrected"]
        se, raw = (layer[k].drop_vars(extra, errors="ignore") for k in extra)
        return layer.drop_vars(extra), se, raw, len(sizes)
    var = _VECTORISED[measure]
    raw = parts[f"{var}_raw"]
    if var == "nv":
        loo = xr.apply_ufunc(
            divide, parts["tv_loo"], parts["sv_loo"], parts.attrs["zero_div"], dask="allowed"
        )
    else:
        loo = parts[f"{var}_loo"]
    if reduce == "mean":
        ok = np.isfinite(raw) & np.isfinite(loo).all("jackknife")
        raw = _by_layer(raw.where(ok), reduce="mean")
        loo = _by_layer(loo.where(ok), reduce="mean")
    value, se = jk.combine(raw.values, loo.transpose("jackknife", ...).values, sizes)
    return raw.copy(data=value), raw.copy(data=se), raw, len(sizes)


def _jackknife_result(
    measure: Callable,
    cube: xr.DataArray,
    ci: float,
    reduce: str | None,
    options: dict[str, Any],
    return_replicates: bool,
    progress: bool = False,
) -> xr.Dataset:
    """The studentised jackknife interval θ_J ± t_(G−1) SE_J, as a bootstrap-shaped Dataset."""

    if return_replicates:
        raise ValueError(
            "return_replicates needs bootstrap replicates: pass method='bc' or 'percentile' "
            "(method='jackknife', the default for the variance family, draws none)"
        )
    options = dict(options)
    value, se, raw, n_groups = _jackknife_interval(measure, cube, ci, reduce, options, progress)
    half = student_t.ppf(0.5 + ci / 2, n_groups - 1) * np.asarray(se.values)
    estimate = value.rename(getattr(measure, "__name__", "measure"))
    out = xr.Dataset(
        {
            "estimate": estimate,
            "low": estimate.copy(data=np.asarray(value.values) - half),
            "high": estimate.copy(data=np.asarray(value.values) + half),
            "se": estimate.copy(data=np.asarray(se.values)),
            "uncorrected": estimate.copy(data=np.asarray(raw.values)),
        }
    )
    out["se"].attrs = {"long_name": "jackknife standard error"}
    out["uncorrected"].attrs = {"long_name": "estimate without the jackknife bias correction"}
    name = getattr(measure, "__name__", "measure")
    out.attrs = {
        **(value.attrs or {}),
        **base_attrs(
            cube,
            f"bootstrap({name})",
            over=["sample"],
            ci=float(ci),
            reduce=reduce,
            bias_correction="jackknife",
        ),
        "method": "jackknife",
        "jackknife_groups": int(n_groups),
        "path": "jackknife",
    }
    return out


def bootstrap(
    measure: Callable[..., xr.DataArray],
    cube: xr.DataArray,
    *,
    n: int = 1000,
    over: str | Sequence[str] = ("sample", "transformation"),
    seed: int = 0,
    ci: float = 0.95,
    reduce: str | None = None,
    method: str | None = None,
    return_replicates: bool = False,
    memory: int | str | None = None,
    progress: bool | None = None,
    by_layer: Any = _deprecation.UNSET,
    **options: Any,
) -> xr.Dataset:
    """Bootstrap confidence intervals of a measure, per unit or per layer.

    Parameters
    ----------
    measure : callable
        A measure of ``tmx`` (``normalized_variance``, ``transformation_variance``, …) or any
        function ``measure(cube, **options) -> DataArray`` over ``unit`` (or over ``layer``).
    cube : xr.DataArray
        The activation cube.
    n : int, default 1000
        Number of bootstrap replicates.
    over : "sample", "transformation" or both
        What is resampled with replacement.
    seed : int, default 0
        Seed of the resampling (``numpy.random.default_rng``): same seed, same intervals.
    ci : float, default 0.95
        Coverage of the percentile interval.
    reduce : str, optional
        Bootstrap the per-layer summary instead of the per-unit values: the ``reduce=`` of
        ``tmx.by_layer`` ("mean", "median", …, or "ratio_of_means" for the variance
        family). ``by_layer=``, its former name, still works and warns.
    method : {None, "jackknife", "bc", "percentile"}, default None
        None: "jackknife" where it applies (the variance family without ``by``, with
        "sample" in ``over`` and ``reduce`` None, "mean" or "ratio_of_means"), "bc"
        elsewhere.

        "jackknife": the studentised delete-m jackknife interval over samples,
        θ_J ± t_(G−1, (1+ci)/2) SE_J, centred on the bias-corrected estimate θ_J (see
        ``normalized_variance(..., bias_correction="jackknife")``; Efron & Tibshirani 1993,
        ch. 11; Busing et al. 1999). No replicates are drawn (``n`` and ``seed`` are unused) and
        the transformations are held fixed: the interval is for the measure of this set of
        transformations over the population of samples. It is what covers: a layer's NV is a
        ratio of dispersions whose estimate moves with N (sparse units); resampling samples
        with replacement duplicates samples, which lowers every replicate's sample dispersion,
        so "bc" and "percentile" intervals of the variance family sit beside the estimate and
        cover the large-N value far less often than their nominal level (a simulation in the
        test suite and ``benchmarks/coverage.py``: 95 % jackknife intervals cover 93–97 %).

        "percentile": the (1 − ci)/2 and (1 + ci)/2 quantiles of the replicates. "bc": the
        bias-corrected percentile interval (Efron 1987): with z0 = Φ⁻¹(share of replicates below
        the estimate, ties counted half), the quantile levels Φ(2 z0 ± z_(1+ci)/2). Both
        bootstrap the plain estimate; they are the only choice for other measures, for
        ``reduce`` "median", "max", "min", and for ``over="transformation"``.
    return_replicates : bool, default False
        Also return the replicates (dim ``replicate``).
    memory : int or str, optional
        Bytes (or a size such as ``"2GB"``; at least 1 MiB) the vectorised path may hold for
        the replicates' sums (default 1 GiB). Every
        replicate's SV needs float64 sums over (T, U) until the last block is read, so the
        replicates are computed in passes of as many as fit (about 43 T U bytes each for a
        float32 cube, 51 for float64: the sums and the exact-zero state): one pass
        over the cube when they all fit, more otherwise (a model-backed lazy cube then reruns
        its forward passes each pass: save it with ``tmx.save`` first). The numbers do not
        depend on it: replicate b always draws from ``default_rng([seed, b])``.
    progress : bool, optional
        A progress bar over the cube's blocks (and passes; over replicates for the loop path).
        Default: shown when run interactively, not under pytest or CI.
    by_layer : str, optional
        Deprecated name of ``reduce`` (``DeprecationWarning``).
    **options
        Passed to the measure (e.g. ``dispersion="var"``, ``pool="mean"``).

    Returns
    -------
    xr.Dataset
        ``estimate`` (the measure on the whole cube; with "jackknife" its bias-corrected value
        θ_J, the uncorrected one in ``uncorrected`` and the standard error in ``se``), ``low``,
        ``high`` (the interval's bounds, from the finite replicates; NaN where the estimate is
        not finite), and ``replicates`` if asked; ``attrs`` record n, over, seed, ci, the
        method and the measure's own attrs.

    Examples
    --------
    >>> import numpy as np, xarray as xr, tmx
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(60, 4, 3)) + rng.normal(size=(60, 1, 3))
    >>> cube = xr.DataArray(a, dims=("sample", "transformation", "unit"),
    ...     coords={"layer": ("unit", ["d"] * 3), "channel": ("unit", [0, 1, 2]),
    ...             "y": ("unit", [-1] * 3), "x": ("unit", [-1] * 3)})
    >>> out = tmx.bootstrap(tmx.normalized_variance, cube, reduce="ratio_of_means")
    >>> out.attrs["method"]
    'jackknife'
    >>> bool(out.low.item() < out.estimate.item() < out.high.item())
    True

    Notes
    -----
    The variance family (without ``by``) is vectorised: one pass over the cube computes every
    replicate with matrix products, memory bounded by a block of samples (about 16 MiB of
    float64, fixed by the cube's shape so that the numbers do not depend on the chunks) and one
    chunk of the cube; for a lazy cube each chunk's forward pass runs once. Other measures are
    recomputed per replicate.

    The result is computed (numpy-backed) even for a lazy cube, and ``progress=`` shows that
    work (the cube's blocks and passes; the replicates of the loop path; dask's bar over the
    jackknife's one pass). It must be: an interval needs every replicate of its unit at once
    (they are ranked, and the bias correction counts those below the estimate), and the
    replicates' sums are one sequential fold over fixed blocks of samples, carrying the exact
    zero-dispersion state from block to block in passes bounded by ``memory`` — the order that
    makes the replicates the same bits for every chunking. A lazy result would also run the
    cube's pass again for each of ``estimate``, ``low`` and ``high`` read separately. The result
    is small (a few values per unit or per layer).
    """
    reduce = _deprecation.renamed("bootstrap", "by_layer", "reduce", by_layer, reduce, None)
    over = _check_over(over)
    cube = check_cube(
        cube,
        measure="bootstrap",
        min_transformations=2 if "transformation" in over else 1,
        need={"transformations": "resampling transformations needs two"},
    )
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
        raise ValueError(f"n must be an integer >= 2; got {n!r}")
    seed = check_seed(seed)
    if not isinstance(ci, float | int) or not 0 < ci < 1:
        raise ValueError(f"ci must lie strictly between 0 and 1; got {ci!r}")
    if reduce is not None:
        choice(reduce, "reduce", REDUCES)
    if not callable(measure):
        raise ValueError(f"measure must be a callable measure; got {measure!r}")
    if options.get("parts"):
        raise ValueError("parts=True is not bootstrapped; use reduce='ratio_of_means'")
    progress = resolve_progress(progress)
    memory = parse_memory(memory, default=_MEMORY, minimum=2**20)
    method = _resolve_method(method, measure, options, over, reduce)
    name = getattr(measure, "__name__", "measure")
    if method == "jackknife":
        log.info(
            "bootstrap(%s): method 'jackknife' over %d sample(s), one pass over the cube",
            name,
            cube.sizes["sample"],
        )
        return _jackknife_result(measure, cube, ci, reduce, options, return_replicates, progress)
    if "jackknife_groups" in options or options.get("bias_correction") is not None:
        raise ValueError(
            "bias_correction and jackknife_groups apply to method='jackknife' (the default "
            "for the variance family); method='bc'/'percentile' bootstrap the plain estimate"
        )
    vectorised = measure in _VECTORISED and options.get("by") is None
    log.info(
        "bootstrap(%s): method %r, n=%d over %s, %s path",
        name,
        method,
        int(n),
        list(over),
        "vectorised" if vectorised else "loop (the measure once per replicate)",
    )
    passes = 1
    if vectorised:
        draws = (int(seed), int(n), over)
        reps, passes = _vectorised(measure, cube, draws, options, reduce, memory, progress)
    else:
        if reduce == "ratio_of_means":
            raise ValueError("reduce='ratio_of_means' needs a variance-family measure")
        n_s, n_t = cube.sizes["sample"], cube.sizes["transformation"]
        w, v = _draws(int(seed), 0, int(n) + 1, n_s, n_t, over)  # every replicate at once
        reps = _loop(measure, cube, w, v, options, progress)
        if reduce is not None:
            reps = _by_layer(reps, reduce=reduce)
    reps = reps.transpose("replicate", ...)
    values = np.asarray(reps.values, dtype=np.float64)
    low, high = interval(values[0], values[1:], ci, method)
    estimate = reps.isel(replicate=0, drop=True)
    out = xr.Dataset(
        {
            "estimate": estimate,
            "low": estimate.copy(data=low),
            "high": estimate.copy(data=high),
        }
    )
    if return_replicates:
        out["replicates"] = reps.isel(replicate=slice(1, None))
    out.attrs = {
        **(reps.attrs or {}),
        **base_attrs(
            cube,
            f"bootstrap({name})",
            n=int(n),
            over=list(over),
            seed=int(seed),
            ci=float(ci),
            reduce=reduce,
        ),
        "method": method,
        "path": "vectorised" if vectorised else "loop",
        "passes": int(passes),
    }
    return out
