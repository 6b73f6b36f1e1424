"""The delete-m jackknife of the variance family, from per-group sufficient statistics.

The N samples are split into G groups of near-equal sizes m_g (G = N: Quenouille's
leave-one-out jackknife). θ̂ is a statistic on all samples, θ_(g) the same statistic without
group g. With h_g = N / m_g, the bias-corrected estimate, the pseudo-values and the variance are
(Busing, Meijer & van der Leeden 1999; equal m_g give the textbook forms of Efron & Tibshirani
1993, ch. 10–11):

    θ_J = G θ̂ − Σ_g (1 − m_g / N) θ_(g)
    θ̃_g = h_g θ̂ − (h_g − 1) θ_(g)
    var_J = (1 / G) Σ_g (θ̃_g − θ_J)² / (h_g − 1)

Every θ_(g) of the variance family follows from sums collected in the **same single pass** as
the estimate:

- TV is a mean over samples of per-sample cell dispersions c_i[u] = D_j a[i, j, u], so with
  C_g = Σ_{i∈g} c_i:  TV_(g) = (Σ_g' C_g' − C_g) / (N − m_g).
- SV needs, per (j, u), the count, sum and sum of squares of the other groups. With a shift
  s[j, u] = a[0, j, u] (one of the unit's own values, so that a constant unit has shifted values
  exactly 0 and its spreads stay exactly 0), S1_g = Σ_{i∈g} (a − s), S2_g = Σ_{i∈g} (a − s)²
  and the complement's M2 = S2 − S1² / n (clamped at 0). A complement whose values are all
  equal (a sparse unit without the group holding its one active sample) has M2 = 0 exactly:
  that is decided from the per-group minimum and maximum (the complement's minimum equals its
  maximum), exact comparisons, never from the rounding residue of S2 − S1² / n, whose value
  depends on the summation order and so on the chunks.

Groups are a seeded permutation of the sample indices taken modulo G, so the statistics do not
depend on the cube's chunks or on the order in which blocks are reduced.

References
----------
Quenouille, M. H. (1956). Notes on bias in estimation. Biometrika 43, 353–360.
Efron, B. & Tibshirani, R. (1993). An Introduction to the Bootstrap, ch. 10–11.
Busing, F., Meijer, E. & van der Leeden, R. (1999). Delete-m jackknife for unequal m.
Statistics and Computing 9, 3–8.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph
from scipy.sparse import csr_matrix

from ._common import compiled, minus

BIAS_CORRECTIONS = (None, "jackknife")
DEFAULT_GROUPS = 50  # G = min(N, 50): the sums and extremes take 4 G T U float64 values
_SEED = 20261206  # fixed: the groups are part of the estimator, not a user's random draw


def check_groups(groups: Any, n: int) -> int:
    """G: ``None`` → min(N, 50); otherwise an int in [2, N]."""
    if groups is None:
        return min(n, DEFAULT_GROUPS)
    if isinstance(groups, bool) or not isinstance(groups, int | np.integer) or groups < 2:
        raise ValueError(f"jackknife_groups must be an integer >= 2 (or None); got {groups!r}")
    if groups > n:
        raise ValueError(
            f"jackknife_groups={groups} exceeds the number of samples N = {n}; use at most N "
            "(N: leave one sample out)"
        )
    return int(groups)


def assign(n: int, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Group of every sample (seeded permutation mod G) and the group sizes m_g."""
    code = np.random.default_rng(_SEED).permutation(n) % groups
    return code, np.bincount(code, minlength=groups).astype(np.float64)


def group_sums(values: Any, code: np.ndarray, groups: int) -> Any:
    """Σ_{i∈g} values[i, ...] for every group: shape (G, ...) (numpy or dask).

    Per sample block, the block's rows sorted by group and added with ``np.add.reduceat``
    (O(n U) additions, not the O(G n U) of an indicator-matrix product); the blocks' (G, ...)
    sums are then added."""
    if not isinstance(values, da.Array):
        return _block_group_sums(np.asarray(values), code, groups)
    codes = da.from_array(code, chunks=(values.chunks[0],))
    rest = "".join(chr(ord("a") + k) for k in range(values.ndim - 1))
    per_block = da.blockwise(
        _one_block_group_sums,
        "zg" + rest,
        values,
        "z" + rest,
        codes,
        "z",
        groups=groups,
        new_axes={"g": groups},
        adjust_chunks={"z": 1},
        dtype=np.float64,
        meta=np.empty((0,) * (values.ndim + 1), dtype=np.float64),
    )
    return per_block.sum(axis=0)


def _one_block_group_sums(values: np.ndarray, code: np.ndarray, groups: int) -> np.ndarray:
    """(1, G, ...): one block's group sums, as dask's blockwise stacks them."""
    return _block_group_sums(values, code, groups)[None]


def _block_group_sums(values: np.ndarray, code: np.ndarray, groups: int) -> np.ndarray:
    """(G, ...) group sums of the rows of ``values`` (numpy)."""
    order = np.argsort(code, kind="stable")
    present, starts = np.unique(code[order], return_index=True)
    out = np.zeros((groups, *values.shape[1:]), dtype=np.float64)
    if present.size:
        out[present] = np.add.reduceat(values[order].astype(np.float64, copy=False), starts, axis=0)
    return out


_BLOCKS_PER_TASK = 8  # sample blocks added into one (4, G, T, U) accumulator per task


def shifted_power_sums(data: Any, code: np.ndarray, groups: int) -> tuple[Any, Any, Any, Any]:
    """S1_g and S2_g of (a − a[0]) over the samples of each group, and the minimum and maximum
    of (a − a[0]) over each group: (G, T, U) each, float64.

    Chains of up to 8 consecutive sample blocks add their samples into one (4, G, T, U)
    accumulator each (a compiled loop, or a sparse indicator product: O(N T U) work, not the
    O(G N T U) of a dense indicator-matrix product); the chains' sums are then added. numpy or
    dask (lazy); the sums do not depend on the chunks but for float64 rounding.
    """
    if not isinstance(data, da.Array):
        out = _block_power_sums(np.asarray(data), np.asarray(data[0:1]), code, groups)[0]
        return out[0], out[1], out[2], out[3]

    first = data[0:1]
    s_chunks, t_chunks, u_chunks = data.chunks
    starts = np.cumsum((0, *s_chunks))
    token = tokenize(data, code, groups)
    name, step = "tmx-jackknife-sums-" + token, "tmx-jackknife-step-" + token
    # chains of at most _BLOCKS_PER_TASK blocks, of even lengths (10 blocks: 5 + 5, not 8 + 2,
    # so that two threads finish together)
    n_chains = -(-len(s_chunks) // _BLOCKS_PER_TASK)
    tasks = [c for c in np.array_split(np.arange(len(s_chunks)), n_chains) if c.size]
    layer: dict[Any, Any] = {}
    for n_task, chain in enumerate(tasks):
        blocks = [int(b) for b in chain]
        for j in range(len(t_chunks)):
            for k in range(len(u_chunks)):
                # a chain: each step adds one block into the previous step's accumulator, so a
                # block (a lazy cube's forward pass) is released as soon as it is added
                previous = None
                for b in blocks:
                    key = (step, b, j, k)
                    layer[key] = (
                        _chain_step,
                        previous,
                        (data.name, b, j, k),
                        (first.name, 0, j, k),
                        code,
                        int(starts[b]),
                        groups,
                    )
                    previous = key
                layer[(name, n_task, 0, 0, j, k)] = previous
    # dask's Array does not match its own DaskCollection protocol (__dask_scheduler__)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[data, first])  # type: ignore[list-item]
    chunks = ((1,) * len(tasks), (4,), (groups,), t_chunks, u_chunks)
    per_task = da.Array(graph, name, chunks=chunks, dtype=np.float64)
    if len(tasks) == 1:
        out = per_task[0]
        return out[0], out[1], out[2], out[3]
    # the chains' accumulators merged in one task per (T, U) block: sums added, minima and
    # maxima folded, without the slices and tree reductions of four separate dask reductions
    merged = da.blockwise(
        _merge_chains, "agju", per_task, "cagju", concatenate=False, dtype=np.float64
    )
    return merged[0], merged[1], merged[2], merged[3]


def _merge_chains(parts: list[np.ndarray]) -> np.ndarray:
    """(4, G, T, U) from each chain's (1, 4, G, T, U): S1 and S2 added (in chain order), the
    minima's minimum and the maxima's maximum."""
    out = parts[0][0].copy()
    for part in parts[1:]:
        np.add(out[:2], part[0, :2], out=out[:2])
        np.minimum(out[2], part[0, 2], out=out[2])
        np.maximum(out[3], part[0, 3], out=out[3])
    return out


def _chain_step(
    previous: np.ndarray | None, x: Any, first: Any, code: np.ndarray, lo: int, groups: int
) -> np.ndarray:
    """One step of a chain: the block's power sums added into the previous accumulator (which
    no other task reads)."""
    return _block_power_sums(np.asarray(x), np.asarray(first), code, groups, lo=lo, out=previous)


def _block_power_sums(
    x: np.ndarray,
    first: np.ndarray,
    code: np.ndarray,
    groups: int,
    lo: int = 0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """(1, 4, G, T, U): Σ (x − first), Σ (x − first)², min (x − first) and max (x − first)
    over each group's samples in the block (samples ``lo`` …), added into ``out`` when given."""
    s = x.shape[0]
    block_code = np.ascontiguousarray(code[lo : lo + s], dtype=np.int64)
    if out is None:
        out = np.zeros((1, 4, groups, *x.shape[1:]))
        out[0, 2] = np.inf
        out[0, 3] = -np.inf
    if x.dtype not in (np.float32, np.float64):  # integers: exact differences first
        x, first = minus(x, first), np.zeros(first.shape)
    kernel = compiled(_power_sums_kernel)
    if kernel is not None and x.ndim == 3 and x.dtype in (np.float32, np.float64):
        kernel(np.ascontiguousarray(x), np.ascontiguousarray(first[0]), block_code, out[0])
        return out

    # the (G, s) indicator of the block's samples, sparse: each sample's row is added once
    member = csr_matrix((np.ones(s), (block_code, np.arange(s))), shape=(groups, s))
    shifted = np.subtract(x, first, dtype=np.float64).reshape(s, -1)
    out[0, 0] += (member @ shifted).reshape(groups, *x.shape[1:])
    for g in np.unique(block_code):
        rows = shifted[block_code == g]
        lo_g, hi_g = out[0, 2, g].reshape(-1), out[0, 3, g].reshape(-1)
        np.minimum(lo_g, rows.min(axis=0), out=lo_g)
        np.maximum(hi_g, rows.max(axis=0), out=hi_g)
    np.multiply(shifted, shifted, out=shifted)
    out[0, 1] += (member @ shifted).reshape(groups, *x.shape[1:])
    return out


def _power_sums_kernel(x, first, code, out):  # pragma: no cover - run compiled by numba
    """out[0, g] += x[i] − first and out[1, g] += (x[i] − first)² for each sample i of group
    g = code[i], out[2, g] and out[3, g] their minimum and maximum (NaN kept), in float64,
    without temporaries (the numba path of ``_block_power_sums``)."""
    s, t, u = x.shape
    for i in range(s):
        g = code[i]
        for j in range(t):
            for k in range(u):
                d = np.float64(x[i, j, k]) - np.float64(first[j, k])
                out[0, g, j, k] += d
                out[1, g, j, k] += d * d
                if d < out[2, g, j, k] or d != d:
                    out[2, g, j, k] = d
                if d > out[3, g, j, k] or d != d:
                    out[3, g, j, k] = d


def complement_constant(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(G, ...): True where the samples outside group g all hold one value, from the groups'
    minima and maxima (G, ...): the complement's minimum equals its maximum (NaN: never)."""
    with np.errstate(invalid="ignore"):
        comp_lo = np.minimum(
            _exclusive_scan(low, np.minimum, np.inf),
            _exclusive_scan(low[::-1], np.minimum, np.inf)[::-1],
        )
        comp_hi = np.maximum(
            _exclusive_scan(high, np.maximum, -np.inf),
            _exclusive_scan(high[::-1], np.maximum, -np.inf)[::-1],
        )
        return comp_lo == comp_hi


def _exclusive_scan(a: np.ndarray, op: Any, edge: float) -> np.ndarray:
    """out[g] = op over a[:g] (``edge`` for g = 0), along axis 0: ``op.accumulate`` of the
    shifted array, computed one slice at a time (``accumulate`` along a leading axis runs a
    short inner loop per element, ~20× slower than elementwise work on the same data)."""
    out = np.empty(a.shape, dtype=np.result_type(a, np.float64))
    out[0] = edge
    for g in range(1, a.shape[0]):
        op(out[g - 1 : g], a[g - 1 : g], out=out[g : g + 1])
    return out


def leave_out_dispersion(
    s1: Any,
    s2: Any,
    sizes: np.ndarray,
    ddof: int,
    dispersion: str,
    low: Any = None,
    high: Any = None,
) -> Any:
    """D over samples of each complement: (G, T, U) from the group sums (numpy); with the
    groups' minima and maxima, exactly 0 where the complement is constant."""
    n = sizes.sum()
    rest = (n - sizes)[:, None, None]
    c1 = s1.sum(axis=0)[None] - s1
    c2 = s2.sum(axis=0)[None] - s2
    m2 = np.maximum(c2 - c1 * c1 / rest, 0.0)
    if low is not None:
        m2 = np.where(complement_constant(low, high) & ~np.isnan(c1), 0.0, m2)
    var = m2 / (rest - ddof)
    return np.sqrt(var) if dispersion == "std" else var


def leave_out_mean_dispersion(
    s1: Any, s2: Any, sizes: np.ndarray, ddof: int, dispersion: str, low: Any, high: Any
) -> Any:
    """mean_j D over samples of each complement: (G, U), without (G, T, U) temporaries when
    numba is there (``leave_out_dispersion(...).mean(axis=1)`` otherwise). ``low``/``high``:
    the groups' minima and maxima (``shifted_power_sums``): a constant complement has D = 0
    exactly."""
    kernel = compiled(_leave_out_kernel)
    rest = (sizes.sum() - sizes).astype(np.float64)

    def block(a, b, lo, hi):
        if kernel is None:
            return leave_out_dispersion(a, b, sizes, ddof, dispersion, lo, hi).mean(axis=1)
        a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
        lo, hi = (np.ascontiguousarray(v, dtype=np.float64) for v in (lo, hi))
        return kernel(a, b, lo, hi, rest, float(ddof), dispersion == "std")

    if isinstance(s1, da.Array):
        parts = [da.asarray(x).rechunk({0: -1, 1: -1}) for x in (s1, s2, low, high)]
        parts = [parts[0], *(x.rechunk(parts[0].chunks) for x in parts[1:])]
        return da.map_blocks(
            block,
            *parts,
            drop_axis=1,
            dtype=np.float64,
            chunks=(parts[0].chunks[0], parts[0].chunks[2]),
        )
    return block(s1, s2, low, high)


def _leave_out_kernel(s1, s2, lo, hi, rest, ddof, std):  # pragma: no cover - run by numba
    """(G, U): mean over j of D(complement of group g at (j, u)) from the group sums; 0 where
    the complement is constant (its minimum, over the other groups' minima ``lo``, equals its
    maximum, over their maxima ``hi``; never when one of those is NaN) and its sum is not NaN.

    The complement's extremes come from each (j, u)'s two smallest minima and two largest
    maxima (``complement_constant`` without its (G, T, U) temporaries)."""
    g_count, t, u = s1.shape
    total1 = np.zeros((t, u))
    total2 = np.zeros((t, u))
    for g in range(g_count):
        total1 += s1[g]
        total2 += s2[g]
    # per (j, u): the smallest minimum, its group and the second smallest; the same for the
    # largest maximum; and how many groups have a NaN minimum or maximum
    lo1 = np.full((t, u), np.inf)
    lo2 = np.full((t, u), np.inf)
    arg_lo = np.zeros((t, u), dtype=np.int64)
    hi1 = np.full((t, u), -np.inf)
    hi2 = np.full((t, u), -np.inf)
    arg_hi = np.zeros((t, u), dtype=np.int64)
    nans = np.zeros((t, u), dtype=np.int64)
    for g in range(g_count):
        for j in range(t):
            for k in range(u):
                a = lo[g, j, k]
                b = hi[g, j, k]
                if a != a or b != b:
                    nans[j, k] += 1
                    continue
                if a < lo1[j, k]:
                    lo2[j, k] = lo1[j, k]
                    lo1[j, k] = a
                    arg_lo[j, k] = g
                elif a < lo2[j, k]:
                    lo2[j, k] = a
                if b > hi1[j, k]:
                    hi2[j, k] = hi1[j, k]
                    hi1[j, k] = b
                    arg_hi[j, k] = g
                elif b > hi2[j, k]:
                    hi2[j, k] = b
    out = np.zeros((g_count, u))
    for g in range(g_count):
        for j in range(t):
            for k in range(u):
                c1 = total1[j, k] - s1[g, j, k]
                m2 = total2[j, k] - s2[g, j, k] - c1 * c1 / rest[g]
                own_nan = lo[g, j, k] != lo[g, j, k] or hi[g, j, k] != hi[g, j, k]
                if nans[j, k] - (1 if own_nan else 0) == 0 and g_count > 1 and c1 == c1:
                    c_lo = lo2[j, k] if arg_lo[j, k] == g else lo1[j, k]
                    c_hi = hi2[j, k] if arg_hi[j, k] == g else hi1[j, k]
                    if c_lo == c_hi:
                        m2 = 0.0
                var = max(m2, 0.0) / (rest[g] - ddof)
                out[g, k] += np.sqrt(var) if std else var
    return out / t


def leave_out_mean(sums: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Mean over the samples of each complement, (G, ...), from per-group sums."""
    n = sizes.sum()
    rest = (n - sizes).reshape(-1, *([1] * (sums.ndim - 1)))
    return (sums.sum(axis=0)[None] - sums) / rest


def combine(estimate: Any, leave_out: Any, sizes: np.ndarray) -> tuple[Any, Any]:
    """θ_J and its standard error from θ̂ (...) and θ_(g) (G, ...) along a leading group axis.

    Non-finite θ_(g) give a non-finite θ_J (NaN), never a silently dropped group. numpy or
    dask (lazy: one block per block of θ̂).
    """
    if isinstance(estimate, da.Array) or isinstance(leave_out, da.Array):
        estimate = da.asarray(estimate)
        leave_out = da.asarray(leave_out).rechunk({0: -1})
        estimate = estimate.rechunk(leave_out.chunks[1:])
        both = da.map_blocks(
            _combine_block,
            estimate[None],
            leave_out,
            sizes,
            dtype=np.float64,
            chunks=((2,), *leave_out.chunks[1:]),
        )
        return both[0], both[1]
    out = _combine_block(np.asarray(estimate)[None], np.asarray(leave_out), sizes)
    return out[0], out[1]


def _combine_block(estimate: np.ndarray, leave_out: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """(2, ...): θ_J and SE for one block (``estimate`` with a leading axis of 1)."""
    estimate = np.asarray(estimate, dtype=np.float64)[0]
    leave_out = np.asarray(leave_out, dtype=np.float64)
    n = sizes.sum()
    g = len(sizes)
    shape = (g, *([1] * estimate.ndim))
    weight = (1.0 - sizes / n).reshape(shape)
    h = (n / sizes).reshape(shape)
    with np.errstate(invalid="ignore", over="ignore"):
        corrected = g * estimate - (weight * leave_out).sum(axis=0)
        pseudo = h * estimate[None] - (h - 1.0) * leave_out
        var = ((pseudo - corrected[None]) ** 2 / (h - 1.0)).sum(axis=0) / g
        # a unit whose every θ equals θ̂ exactly (e.g. an exact 0 or the 0/0 → 1 policy value)
        # keeps θ̂ exactly, not θ̂ up to rounding
        same = (leave_out == estimate[None]).all(axis=0)
    both = np.isfinite(estimate) & np.isfinite(leave_out).all(axis=0)
    corrected = np.where(same, estimate, np.where(both, corrected, np.nan))
    se = np.where(same, 0.0, np.where(both, np.sqrt(np.maximum(var, 0.0)), np.nan))
    return np.stack([corrected, se])
