"""The distance family: transformation, sample and normalized distance.

With a[i, j, u] the activation of unit u for sample i under transformation j (N samples,
T transformations) and δ a distance between activations:

    TD[u] = mean_i  mean_{j < k} δ(a[i, j, u], a[i, k, u])    (all T(T−1)/2 pairs per sample)
    SD[u] = mean_j  mean_{i < k} δ(a[i, j, u], a[k, j, u])    (all N(N−1)/2 pairs per transform)
    ND[u] = TD[u] / SD[u]                                      (0: invariant)

Always **all** pairs: the reference library averages only the pairs inside one batch, so its
values change with the batch size; these do not (nor with chunking, nor with the order of the
samples and transformations).

``per="unit"``: a[i, j, u] is a scalar and δ = |a − b|. The mean over the pairs is computed from
the sorted values in O(n log n) instead of O(n²): with x_(0) ≤ … ≤ x_(n−1),

    Σ_{i<j} |x_i − x_j| = Σ_k x_(k) (2k − n + 1) = Σ_{k=1}^{n−1} (x_(k) − x_(k−1)) · k (n − k),

the second form (summation by parts) adds non-negative terms only, so nothing cancels however
large the mean is compared to the spread.

``per="channel"``: one vector per (layer, channel), the channel's (y, x) map (h·w values); a
unit of a layer without spatial axes is its own channel with a 1-vector. δ is the euclidean
or the cosine distance between those vectors, in float64, for all pairs of a set at once:

- euclidean: from one Gram product per set (‖a − b‖² = ‖a‖² + ‖b‖² − 2 a·b, a BLAS call),
  the vectors first shifted by one of the set (an all-zero vector where the set has one, else
  its first), which leaves the distances unchanged, keeps the Gram free of cancellation and
  puts vectors equal to the shift (a constant channel's maps, dead maps) at distance exactly
  0; a pair whose Gram value still lost ten bits or more (‖a − b‖² < 2⁻¹⁰ (‖a‖² + ‖b‖²): two
  equal or nearly equal maps) is recomputed directly as Σ (a − b)², so equal vectors are
  always at distance exactly 0;
- cosine: δ = 1 − a·b / (‖a‖ ‖b‖) = ‖â − b̂‖² / 2 with â = a / ‖a‖ (the same number, without
  the cancellation of 1 − â·b̂ for nearly parallel vectors), δ = 0 between two zero vectors
  and δ = 1 between a zero and a non-zero vector. Squared distances sum over the pairs without
  forming them, Σ_{i<j} ‖â_i − â_j‖² = m Σ_i ‖â_i − ā‖² over the m non-zero vectors (ā their
  mean; the unit vectors are first shifted by one of them, so equal maps give exactly 0).

``normalize=True`` divides each vector of d ≥ 2 values by its L2 norm first (zero vectors stay
zero); a 1-vector (a unit of a layer without spatial axes) is left unnormalized, as
``tmeasures`` does: its unit vector would be its sign, and the distance would only count sign
flips. Exactly constant units and channels have TD = SD = 0 exactly, so
ND = 0/0 (1 under ``zero_div="tmeasures"``).

Cost: per unit O(N T log T + T N log N); per channel of d values, euclidean O(N T² d + T N² d)
(Gram products), cosine O(N T d) (no pairs). Memory of a lazy cube's blocks: TD needs every
transformation of a sample (blocks s × T × u), SD every sample of a transformation (blocks
N × t × u); s, t and u are chosen so that a block's float64 copy stays within dask's
``array.chunk-size`` where that is possible (at least one sample or transformation and, for
``per="channel"``, whole channels: a channel's units are spread over its whole layer in
(y, x, channel) order, so an SD block holds at least N × 1 × (units of the layer)). The sets
of a block are handled in batches of at most ~32 MiB (their float64 maps and Gram matrices),
read straight from the block where a layer's units form a regular (y, x, channel) or
(channel, y, x) grid.

References
----------
Quiroga, F., Torrents-Barrena, J., Lanzarini, L., Puig, D. (2019). Measuring (in)variances in
convolutional networks. Conference on Cloud Computing and Big Data, 98–109.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any, Literal, overload

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.utils import parse_bytes

from .._schema import check_cube
from .._validate import flag
from ._common import (
    ZERO_DIVS,
    base_attrs,
    channel_groups,
    choice,
    divide,
    unit_coords_of,
)

PERS = ("unit", "channel")
METRICS = ("euclidean", "cosine")
GRAM_BYTES = 32 * 2**20  # at most ~this much per batch of sets (maps, Gram matrices)


# -- kernels on numpy blocks --------------------------------------------------------------------
def _unit_pairs(v: np.ndarray) -> np.ndarray:
    """Mean |x_j − x_k| over all pairs j < k along axis 1 of ``v`` (A, n, U) → (A, U)."""
    n = v.shape[1]
    gaps = np.diff(np.sort(v, axis=1), axis=1)  # (A, n − 1, U), all ≥ 0
    k = np.arange(1, n, dtype=np.float64)
    total = np.einsum("akU,k->aU", gaps, k * (n - k))
    return total / (n * (n - 1) / 2)


def _vector_pairs(w: np.ndarray, metric: str, normalize: bool) -> np.ndarray:
    """Mean distance over all pairs of the n vectors of each set: ``w`` (..., n, d) → (...).

    ``w`` is float64, C-contiguous, and is overwritten. ``normalize``: divide each vector by
    its L2 norm first (zero vectors stay zero).

    Cosine, δ = 1 − â·b̂ = ‖â − b̂‖² / 2 for the unit vectors â = a / ‖a‖: the sum over the pairs
    of the m non-zero vectors is m Σ ‖â_i − ā‖² (ā their mean), so no pair is formed (O(n d));
    a zero vector is at distance 1 from a non-zero one and 0 from a zero one. The unit vectors
    are first shifted by one of them, so that equal vectors are at distance exactly 0.

    Euclidean: one Gram product per set, ‖a − b‖² = ‖a‖² + ‖b‖² − 2 a·b, of the vectors shifted
    by one of the set (a zero vector where the set has one, else its first vector): the Gram
    then does not cancel (translation invariance) and vectors equal to the shift are at
    distance exactly 0. Pairs whose value still lost ten bits or more to cancellation
    (‖a − b‖² < 2⁻¹⁰ (‖a‖² + ‖b‖²): equal or nearly equal vectors) are recomputed directly as
    Σ (a − b)², exactly 0 for equal vectors.
    """
    n, d = w.shape[-2:]
    if metric == "cosine" or normalize:
        norms = np.sqrt(np.einsum("...nd,...nd->...n", w, w))
        zero = norms == 0
        w /= np.where(zero, 1.0, norms)[..., None]
    if metric == "cosine":
        nonzero = ~zero
        m = nonzero.sum(axis=-1)
        first = np.argmax(nonzero, axis=-1)[..., None, None]
        w -= np.take_along_axis(w, first, axis=-2)  # equal vectors → exactly 0
        w *= nonzero[..., None]  # zero vectors out of the spread
        w -= w.sum(axis=-2, keepdims=True) / np.maximum(m, 1)[..., None, None]
        spread = np.einsum("...nd,...nd,...n->...", w, w, nonzero.astype(np.float64))
        # Σ_{i<j} ‖â_i − â_j‖² / 2 = m Σ ‖â_i − ā‖² / 2, plus 1 per (zero, non-zero) pair
        return (m * spread / 2 + (n - m) * m) / (n * (n - 1) / 2)
    if not normalize:
        zero = ~w.any(axis=-1)
    has_zero = zero.any(axis=-1)
    if not has_zero.all():
        shift = w[..., :1, :].copy()
        shift[has_zero] = 0.0
        w -= shift
    sq = np.einsum("...nd,...nd->...n", w, w)
    d2 = w @ np.swapaxes(w, -1, -2)  # (..., n, n), one BLAS call per set
    d2 *= -2.0
    d2 += sq[..., :, None]
    d2 += sq[..., None, :]
    flat = d2.reshape(-1, n * n)
    flat[:, :: n + 1] = np.inf  # the diagonal, out of the minimum
    sq_sets = sq.reshape(-1, n)
    # a pair that lost ten bits has ‖a − b‖² < 2⁻⁹ max(‖a‖², ‖b‖²): look in the rows where the
    # nearest vector is that close (2⁻⁸: a margin for rounding), usually none
    rows = np.nonzero(flat.reshape(-1, n, n).min(axis=-1) < sq_sets * 2.0**-8)
    if len(rows[0]):
        _recompute_near(flat, sq_sets, w.reshape(-1, n, d), rows)
    flat[:, :: n + 1] = 0.0
    with np.errstate(invalid="ignore"):  # every entry is ≥ 0 here, or NaN from the data
        np.sqrt(d2, out=d2)
    return d2.sum(axis=(-2, -1)) / (n * (n - 1))


def _recompute_near(
    flat: np.ndarray, sq: np.ndarray, w: np.ndarray, rows: tuple[np.ndarray, ...]
) -> None:
    """Replace, in the flattened squared distances ``flat`` (S, n·n), the pairs with
    ‖a − b‖² < 2⁻¹⁰ (‖a‖² + ‖b‖²) that involve one of the (set, vector) ``rows`` by Σ (a − b)²
    of the vectors ``w`` (S, n, d), on both sides of the diagonal."""
    n, d = w.shape[1:]
    sets, first = rows
    step = max(1, 2**20 // n)
    found = []
    for k in range(0, len(sets), step):
        s, i = sets[k : k + step], first[k : k + step]
        d2 = flat.reshape(-1, n, n)[s, i]  # (k, n): the rows' squared distances
        near = d2 < (sq[s, i][:, None] + sq[s]) * 2.0**-10  # the diagonal is +inf
        kk, j = np.nonzero(near)
        found.append(np.stack([s[kk], np.minimum(i[kk], j), np.maximum(i[kk], j)]))
    s, i, j = np.unique(np.concatenate(found, axis=1), axis=1)  # each pair once
    step = max(1, 2**20 // d)
    for k in range(0, len(s), step):
        sk, ik, jk = s[k : k + step], i[k : k + step], j[k : k + step]
        diff = w[sk, ik] - w[sk, jk]
        val = np.einsum("kd,kd->k", diff, diff)
        flat[sk, ik * n + jk] = val
        flat[sk, jk * n + ik] = val


def _grid_view(v: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``v[..., idx]`` for an (G, d) index array: a strided view where ``idx`` is a regular grid
    (a layer in (y, x, channel) or (channel, y, x) order), else a copy."""
    g, d = idx.shape
    step_g = int(idx[1, 0] - idx[0, 0]) if g > 1 else 1
    step_d = int(idx[0, 1] - idx[0, 0]) if d > 1 else 1
    grid = idx[0, 0] + step_g * np.arange(g)[:, None] + step_d * np.arange(d)
    if step_g < 1 or step_d < 1 or not np.array_equal(idx, grid):
        return v[..., idx]
    s = v.strides[-1]
    return np.lib.stride_tricks.as_strided(
        v[..., int(idx[0, 0]) :],
        shape=(*v.shape[:-1], g, d),
        strides=(*v.strides[:-1], step_g * s, step_d * s),
        writeable=False,
    )


def _channel_pairs(v: np.ndarray, codes: np.ndarray, metric: str, normalize: bool) -> np.ndarray:
    """Per-channel mean pair distance: ``v`` (A, n, u) with group ``codes`` (u,) → (A, G).

    The groups of a block are the consecutive codes min(codes)..max(codes); groups of the same
    size d are taken as (a, g, n, d) float64 sets, a batch of at most ~``GRAM_BYTES`` at a
    time, and handled together.
    """
    local = codes - codes.min()
    sizes = np.bincount(local)
    order = np.argsort(local, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    n_a, n, _ = v.shape
    out = np.full((n_a, len(sizes)), np.nan)
    for d in np.unique(sizes[sizes > 0]).tolist():
        groups = np.flatnonzero(sizes == d)
        idx = order[starts[groups][:, None] + np.arange(d)]  # (G_d, d) unit positions
        if metric == "euclidean" and d == 1:
            out[:, groups] = _unit_pairs(np.asarray(v[:, :, idx[:, 0]], dtype=np.float64))
            continue
        maps = _grid_view(v, idx)  # (A, n, G_d, d)
        # a 1-vector is left unnormalized (its unit vector would be its sign)
        norm = normalize and d > 1
        per_set = 8 * (2 * n * d + (0 if metric == "cosine" else 2 * n * n))
        cap = max(1, GRAM_BYTES // per_set)
        g_step = -(-len(groups) // -(-len(groups) // cap))  # balanced batches of ≤ cap
        a_step = max(1, cap // g_step)
        for a0 in range(0, n_a, a_step):
            for g0 in range(0, len(groups), g_step):
                w = maps[a0 : a0 + a_step, :, g0 : g0 + g_step].transpose(0, 2, 1, 3)
                w = np.array(w, dtype=np.float64, order="C")  # (a, g, n, d), a copy
                out[a0 : a0 + a_step, groups[g0 : g0 + g_step]] = _vector_pairs(w, metric, norm)
    return out


def _cells(
    x: np.ndarray, codes: np.ndarray, *, axis: int, per: str, metric: str, normalize: bool
) -> np.ndarray:
    """Mean pair distance along ``axis`` (0: samples, 1: transformations) of a block
    (s, t, u): (t, groups) for axis 0, (s, groups) for axis 1. float64."""
    v = np.asarray(x)
    if axis == 0:
        v = v.transpose(1, 0, 2)
    if per == "unit":
        return _unit_pairs(np.asarray(v, dtype=np.float64))
    return _channel_pairs(v, np.asarray(codes), metric, normalize)  # float64 set by set


# -- chunking of a lazy cube --------------------------------------------------------------------
def _cuts(codes: np.ndarray | None, n_units: int) -> np.ndarray:
    """Unit positions where a chunk may end without splitting a group (0 and U included)."""
    if codes is None:
        return np.arange(n_units + 1)
    n_groups = int(codes.max()) + 1
    pos = np.arange(n_units)
    first = np.full(n_groups, n_units)
    last = np.full(n_groups, -1)
    np.minimum.at(first, codes, pos)
    np.maximum.at(last, codes, pos)
    cover = np.zeros(n_units + 2, dtype=np.int64)
    np.add.at(cover, first + 1, 1)
    np.add.at(cover, last + 1, -1)
    inside = np.cumsum(cover)[: n_units + 1] > 0  # position b lies inside a group
    return np.flatnonzero(~inside)


def _unit_chunks(existing: tuple[int, ...], cuts: np.ndarray, cap: int) -> tuple[int, ...]:
    """The cube's unit chunks, merged where they would split a group, then split (at allowed
    positions) into pieces of at most ``cap`` units where possible."""
    bounds = np.intersect1d(np.cumsum((0, *existing)), cuts)
    out: list[int] = []
    for a, b in pairwise(bounds.tolist()):
        start = a
        while b - start > cap:
            nxt = int(cuts[np.searchsorted(cuts, start + cap, side="right") - 1])
            if nxt <= start:  # one group larger than cap: take it whole
                nxt = int(cuts[np.searchsorted(cuts, start, side="right")])
            if nxt >= b:
                break
            out.append(nxt - start)
            start = nxt
        out.append(b - start)
    return tuple(out)


def _split(chunks: tuple[int, ...], cap: int) -> tuple[int, ...]:
    out: list[int] = []
    for c in chunks:
        out += [cap] * (c // cap) + ([c % cap] if c % cap else [])
    return tuple(out)


def _lazy_cells(
    data: da.Array, codes: np.ndarray, *, axis: int, per: str, metric: str, normalize: bool
) -> da.Array:
    """Per (sample | transformation, group) mean pair distance of a dask (N, T, U) array.

    The pair axis is gathered into one chunk; blocks are kept within ``array.chunk-size``
    (float64) where possible by splitting the other two axes.
    """
    budget = parse_bytes(dask.config.get("array.chunk-size"))
    n_pair = data.shape[axis]
    other = 1 - axis
    grouped = per == "channel"
    u_chunks = _unit_chunks(
        data.chunks[2],
        _cuts(codes if grouped else None, data.shape[2]),
        max(1, budget // (8 * n_pair)),
    )
    o_cap = max(1, budget // (8 * n_pair * max(u_chunks)))
    chunks: dict[int, Any] = {axis: -1, other: _split(data.chunks[other], o_cap), 2: u_chunks}
    data = data.rechunk(chunks)
    bounds = np.cumsum((0, *u_chunks))
    if grouped:
        g_chunks = tuple(len(np.unique(codes[a:b])) for a, b in pairwise(bounds.tolist()))
    else:
        g_chunks = u_chunks
    codes_da = da.from_array(codes, chunks=(u_chunks,))
    ind = "stu"
    out_ind = ind[other] + "u"
    return da.blockwise(
        _cells,
        out_ind,
        data,
        ind,
        codes_da,
        "u",
        adjust_chunks={"u": g_chunks},
        concatenate=True,
        dtype=np.float64,
        meta=np.empty((0, 0), dtype=np.float64),
        axis=axis,
        per=per,
        metric=metric,
        normalize=normalize,
    )


# -- assembly -----------------------------------------------------------------------------------
def _check_options(per: Any, metric: Any, normalize: Any) -> None:
    choice(per, "per", PERS)
    choice(metric, "metric", METRICS)
    flag(normalize, "normalize")
    if per == "unit" and (metric != "euclidean" or normalize):
        raise ValueError(
            f"per='unit' compares scalars, for which metric={metric!r} / normalize={normalize!r} "
            "is meaningless (a scalar's cosine distance and L2-normalization only see its sign); "
            "use per='channel' to compare each channel's (y, x) map as a vector"
        )


def _distance_parts(
    cube: Any,
    which: tuple[str, ...],
    measure: str,
    *,
    per: str,
    metric: str,
    normalize: bool,
    zero_div: str | None = None,
) -> xr.Dataset:
    """A Dataset over ``unit`` with the requested parts among "td", "sd", "nd"."""
    _check_options(per, metric, normalize)
    if zero_div is not None:
        choice(zero_div, "zero_div", ZERO_DIVS)
    need_t = "td" in which or "nd" in which
    need_s = "sd" in which or "nd" in which
    cube = check_cube(
        cube,
        measure=measure,
        min_samples=2,
        min_transformations=2 if need_t else 1,
        need="a pairwise distance needs a pair",
    )
    if per == "channel":
        codes, groups = channel_groups(cube)
        coords: dict[str, Any] = {k: ("unit", v) for k, v in groups.items()}
        coords["unit"] = ("unit", np.arange(len(groups["layer"])))
    else:
        codes = np.arange(cube.sizes["unit"])
        coords = unit_coords_of(cube)
    lazy = isinstance(cube.data, da.Array)
    opts: dict[str, Any] = {"per": per, "metric": metric, "normalize": bool(normalize)}

    def cells(axis: int) -> Any:
        if lazy:
            return _lazy_cells(cube.data, codes, axis=axis, **opts)
        return _cells(cube.values, codes, axis=axis, **opts)

    values: dict[str, Any] = {}
    if need_t:
        values["td"] = cells(1).mean(axis=0)
    if need_s:
        values["sd"] = cells(0).mean(axis=0)
    if "nd" in which:
        assert zero_div is not None  # normalized_distance, the one caller with "nd", passes it
        if lazy:
            td = values["td"]
            sd = values["sd"].rechunk(td.chunks)
            values["nd"] = da.map_blocks(divide, td, sd, zero_div=zero_div, dtype=np.float64)
        else:
            values["nd"] = divide(values["td"], values["sd"], zero_div)
    names = {"td": "transformation", "sd": "sample", "nd": "normalized"}
    extra = {} if zero_div is None else {"zero_div": zero_div}
    attrs = base_attrs(cube, measure, **opts, **extra, pairs="all")
    return xr.Dataset(
        {
            k: xr.Variable("unit", values[k], {"long_name": f"{names[k]} distance"})
            for k in ("td", "sd", "nd")
            if k in which
        },
        coords=coords,
        attrs=attrs,
    )


def _single(ds: xr.Dataset, var: str, name: str) -> xr.DataArray:
    out = ds[var].rename(name)
    out.attrs = {**ds.attrs, **out.attrs, "measure": name}
    return out


# -- public functions ---------------------------------------------------------------------------
def transformation_distance(
    cube: xr.DataArray,
    *,
    per: str = "unit",
    metric: str = "euclidean",
    normalize: bool = False,
) -> xr.DataArray:
    """Transformation distance: TD[u] = mean_i mean_{j<k} δ(a[i, j, u], a[i, k, u]).

    The mean, over samples, of the mean distance between the activations of a sample under
    every pair of distinct transformations (all T(T − 1)/2 pairs; T ≥ 2).

    Parameters
    ----------
    cube : xr.DataArray
        Dims (sample, transformation, unit) with the unit coordinates of ``tmx.activations``;
        numpy- or dask-backed (the result is lazy when the cube is).
    per : {"unit", "channel"}, default "unit"
        "unit": each unit's scalar activation, δ = |a − b| (O(T log T) per cell from the sorted
        values). "channel": each (layer, channel)'s (y, x) map as one vector; a unit of a layer
        without spatial axes is its own channel (a 1-vector; its cosine distance only sees the
        signs: 0 for equal signs, 2 for opposite ones, as scipy's and tmeasures' do).
    metric : {"euclidean", "cosine"}, default "euclidean"
        Distance between vectors (``per="channel"`` only for "cosine"). Cosine distance is
        1 − a·b / (‖a‖ ‖b‖), 0 between two zero vectors and 1 between a zero and a non-zero one.
    normalize : bool, default False
        L2-normalize each vector before comparing, â = a / ‖a‖ (zero vectors stay zero);
        ``per="channel"`` only. Vectors of one value (units of layers without spatial axes)
        are left unnormalized, as ``tmeasures`` does (â would be the sign of a, so δ would only
        count sign flips): for them ``normalize=True`` gives the ``normalize=False`` distance.

    Returns
    -------
    xr.DataArray
        float64 over ``unit``: the cube's units for ``per="unit"``; for ``per="channel"`` one
        entry per (layer, channel) with coordinates ``layer``, ``channel``, ``y``, ``x``
        (−1 for a channel pooled over a map) and ``units`` (its vector length). ``attrs``
        record the options (``pairs="all"``), N and T.

    Raises
    ------
    ValueError
        T < 2; an unknown ``per`` or ``metric``; ``per="unit"`` with ``metric="cosine"`` or
        ``normalize=True``.

    References
    ----------
    Quiroga, F., Torrents-Barrena, J., Lanzarini, L., Puig, D. (2019). Measuring (in)variances
    in convolutional networks. Conference on Cloud Computing and Big Data, 98–109.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> rng = np.random.default_rng(0)
    >>> conv, dense = rng.normal(size=(5, 3, 2, 2, 2)), rng.normal(size=(5, 3, 3))
    >>> dense[:, :, 0] = dense[:, :1, 0]          # unit 0 of "dense": same under every t
    >>> cube = tmx.from_array({"conv": conv, "dense": dense})
    >>> td = tmx.transformation_distance(cube)
    >>> a = cube.values                           # mean over samples and pairs j < k of |Δ|
    >>> pairs = [abs(a[:, j] - a[:, k]) for j in range(3) for k in range(j + 1, 3)]
    >>> bool(np.allclose(td, np.mean(pairs, axis=0).mean(axis=0))), float(td[8])
    (True, 0.0)
    >>> tmx.transformation_distance(cube, per="channel").sizes["unit"]   # 2 + 3 channels
    5
    """
    ds = _distance_parts(
        cube,
        ("td",),
        "transformation_distance",
        per=per,
        metric=metric,
        normalize=normalize,
    )
    return _single(ds, "td", "transformation_distance")


def sample_distance(
    cube: xr.DataArray,
    *,
    per: str = "unit",
    metric: str = "euclidean",
    normalize: bool = False,
) -> xr.DataArray:
    """Sample distance: SD[u] = mean_j mean_{i<k} δ(a[i, j, u], a[k, j, u]).

    The mean, over transformations, of the mean distance between the activations of every pair
    of distinct samples under that transformation (all N(N − 1)/2 pairs; N ≥ 2). Options and
    result as in ``transformation_distance``. A lazy cube is regrouped so that a block holds
    every sample: N × t × u values per block (see the module notes on memory).

    References
    ----------
    Quiroga, F., Torrents-Barrena, J., Lanzarini, L., Puig, D. (2019). Measuring (in)variances
    in convolutional networks. Conference on Cloud Computing and Big Data, 98–109.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> a = np.random.default_rng(0).normal(size=(4, 3, 2))     # N=4, T=3, 2 units
    >>> sd = tmx.sample_distance(tmx.from_array({"dense": a}))
    >>> pairs = [abs(a[i] - a[k]) for i in range(4) for k in range(i + 1, 4)]   # (T, U) each
    >>> sd.dims, bool(np.allclose(sd, np.mean(pairs, axis=0).mean(axis=0)))
    (('unit',), True)
    """
    ds = _distance_parts(
        cube, ("sd",), "sample_distance", per=per, metric=metric, normalize=normalize
    )
    return _single(ds, "sd", "sample_distance")


@overload
def normalized_distance(
    cube: xr.DataArray,
    *,
    per: str = "unit",
    metric: str = "euclidean",
    normalize: bool = False,
    zero_div: str = "tmeasures",
    parts: Literal[False] = False,
) -> xr.DataArray: ...


@overload
def normalized_distance(
    cube: xr.DataArray,
    *,
    per: str = "unit",
    metric: str = "euclidean",
    normalize: bool = False,
    zero_div: str = "tmeasures",
    parts: Literal[True],
) -> xr.Dataset: ...


@overload
def normalized_distance(
    cube: xr.DataArray,
    *,
    per: str = "unit",
    metric: str = "euclidean",
    normalize: bool = False,
    zero_div: str = "tmeasures",
    parts: bool = False,
) -> xr.DataArray | xr.Dataset: ...


def normalized_distance(
    cube: xr.DataArray,
    *,
    per: str = "unit",
    metric: str = "euclidean",
    normalize: bool = False,
    zero_div: str = "tmeasures",
    parts: bool = False,
) -> xr.DataArray | xr.Dataset:
    """Normalized distance: ND[u] = TD[u] / SD[u] (0 = invariant, 1 = as variable as across
    samples).

    Parameters
    ----------
    cube, per, metric, normalize
        As in ``transformation_distance``.
    zero_div : {"tmeasures", "nan"}, default "tmeasures"
        A zero SD: "tmeasures" gives 0/0 → 1 and x/0 → +inf; "nan" gives 0/0 → NaN and
        x/0 → +inf.
    parts : bool, default False
        Return a Dataset with ``td``, ``sd`` and ``nd``.

    Notes
    -----
    TD and SD are built in one graph from the same cube blocks, so one ``compute`` of the
    result (or ``dask.compute`` of the parts) runs each of a lazy cube's blocks once.

    References
    ----------
    Quiroga, F., Torrents-Barrena, J., Lanzarini, L., Puig, D. (2019). Measuring (in)variances
    in convolutional networks. Conference on Cloud Computing and Big Data, 98–109.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> rng = np.random.default_rng(0)
    >>> dense = rng.normal(size=(5, 3, 2))
    >>> dense[:, :, 0] = dense[:, :1, 0]          # unit 0: same under every transformation
    >>> ds = tmx.normalized_distance(tmx.from_array({"dense": dense}), parts=True)
    >>> bool(np.allclose(ds.nd, ds.td / ds.sd)), float(ds.nd[0])
    (True, 0.0)
    """
    parts = flag(parts, "parts")
    ds = _distance_parts(
        cube,
        ("td", "sd", "nd"),
        "normalized_distance",
        per=per,
        metric=metric,
        normalize=normalize,
        zero_div=zero_div,
    )
    return ds if parts else _single(ds, "nd", "normalized_distance")
