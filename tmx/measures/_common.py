"""Shared machinery of the measures: labeled results, chunked float64 moments.

Every measure validates its input with ``tmx._schema.check_cube`` (the cube contract),
computes with plain numpy on blocks (through dask when the cube is lazy, directly when it is
numpy-backed: the same functions, so the same numbers), and wraps the result with
``unit_result``, which carries the cube's unit coordinates and records the options in
``attrs``.

Moments are accumulated in float64 and merged between chunks with the pairwise update of Chan,
Golub & LeVeque (1979), so a unit with mean 1e4 and standard deviation 1e-2 keeps its digits:
per block, ``count``, ``mean`` and ``M2`` (sum of squared deviations from the mean) are computed
with two passes; blocks are merged with

    n = n_a + n_b,  δ = m_b − m_a,  m = m_a + δ n_b / n,  M2 = M2_a + M2_b + δ² n_a n_b / n.

Exactly constant data have exactly zero spread, whatever the chunking and the dtype: a block's
values are taken relative to one of its own values (x − x_0 is exactly 0 where x = x_0, whereas
the float64 mean of n copies of c need not round back to c), and blocks relative to one block's
mean (equal block means give δ = 0 exactly). So a dead unit at a non-zero bias has TV = SV = 0
and NV = 0/0, never a rounding residue divided by another.

The block means are kept relative to one reference per position common to every block (the
array's first value along the reduced axis: the value the numpy path, one block, is taken
around), from exact differences (integers are subtracted as integers). The merge then works on
numbers of the size of the spread, not of the mean, so a chunked float64 cube at 1e8 ± 1e-4 or
an int64 cube near 2**53 keeps the digits of the numpy path: before, its block means were
rounded to the mean's precision first (ANOVA's F off by 1e-3, NV off by 1 %).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from .._provenance import cube_provenance, provenance
from .._schema import layer_array, units_by_layer
from .._validate import check_sizes
from .._validate import choice as choice  # re-exported: the one ``choice``, in _validate

DISPERSIONS = ("std", "var")
ZERO_DIVS = ("tmeasures", "nan")


# -- validation ---------------------------------------------------------------------------------
def check_per_unit(per_unit: Any, measure: str, name: str = "per_unit") -> None:
    """A per-unit result (a ``unit`` dim) must hold at least one unit."""
    sizes = getattr(per_unit, "sizes", {})
    if "unit" in sizes:
        check_sizes(name, measure, units=(sizes["unit"], 1))


def check_ddof(ddof: Any, n: int, t: int, what: Sequence[str]) -> int:
    """ddof must be a non-negative int smaller than every count a dispersion is taken over."""
    if isinstance(ddof, bool) or not isinstance(ddof, int | np.integer) or ddof < 0:
        raise ValueError(f"ddof must be a non-negative integer; got {ddof!r}")
    counts = {"sample": n, "transformation": t}
    for dim in what:
        if counts[dim] <= ddof:
            raise ValueError(
                f"ddof={ddof} needs more than {ddof} {dim}s; the cube has {counts[dim]} "
                f"(a dispersion over {dim}s needs N > ddof)"
            )
    return int(ddof)


def is_lazy(obj: xr.DataArray | xr.Dataset) -> bool:
    if isinstance(obj, xr.Dataset):
        return any(isinstance(v.data, da.Array) for v in obj.data_vars.values())
    return isinstance(obj.data, da.Array)


# -- results ------------------------------------------------------------------------------------
def unit_coords_of(obj: xr.DataArray | xr.Dataset) -> dict[str, Any]:
    """Every coordinate of ``obj`` that lies along ``unit`` only."""
    return {str(k): c.variable for k, c in obj.coords.items() if c.dims == ("unit",)}


def base_attrs(cube: xr.DataArray, measure: str, **options: Any) -> dict[str, Any]:
    """Provenance for a result: the measure, N, T, its options (in the one attr encoding of
    ``tmx._provenance``: bools as 0/1, None as "None"), the library version and the cube's
    model and transformations (``cube_model_name``...)."""
    attrs = provenance(
        "measure",
        measure,
        n_samples=int(cube.sizes["sample"]),
        n_transformations=int(cube.sizes["transformation"]),
        **options,
    )
    attrs.update(cube_provenance(cube.attrs))
    return attrs


def unit_result(
    values: Any, cube: xr.DataArray, name: str, attrs: Mapping[str, Any]
) -> xr.DataArray:
    """A per-unit DataArray over ``unit`` with the cube's unit coordinates."""
    return xr.DataArray(
        values, dims=("unit",), coords=unit_coords_of(cube), name=name, attrs=dict(attrs)
    )


# -- dispersions --------------------------------------------------------------------------------
def dispersion_from_m2(m2, count, ddof: int, dispersion: str):
    """D from the sum of squared deviations: M2 / (n − ddof), or its square root."""
    var = m2 / (count - ddof)
    var = np.maximum(var, 0.0)
    return np.sqrt(var) if dispersion == "std" else var


def divide(num: Any, den: Any, zero_div: str) -> Any:
    """num / den with the zero-division policy of measures.md (numpy or dask, no warnings).

    ``"tmeasures"``: 0/0 → 1, x/0 → +inf. ``"nan"``: 0/0 → NaN, x/0 → +inf. (x ≥ 0.)
    """
    if isinstance(num, da.Array) or isinstance(den, da.Array):
        return da.map_blocks(_divide, num, den, zero_div, dtype=np.float64)
    return _divide(num, den, zero_div)


def _divide(num: Any, den: Any, zero_div: str) -> Any:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    zero = den == 0
    both = zero & (num == 0)
    out = np.where(zero & ~both, np.inf, out)
    return np.where(both, 1.0 if zero_div == "tmeasures" else np.nan, out)


# -- chunked moments ----------------------------------------------------------------------------
def minus(x: Any, ref: Any) -> np.ndarray:
    """``x − ref`` in float64 (broadcast), exact wherever the difference is representable.

    Floats are subtracted in float64 (exact for float32 inputs and for float64 values within
    a factor 2 of each other). 8-byte integers are subtracted as integers first, so values
    near or beyond 2**53 lose nothing before their (small) difference is rounded; smaller
    integers and booleans are exact in float64 anyway.
    """
    x, ref = np.asarray(x), np.asarray(ref)
    if x.dtype == np.bool_:
        x = x.astype(np.uint8)
    if ref.dtype == np.bool_:
        ref = ref.astype(np.uint8)
    if (
        x.dtype.kind in "iu"
        and ref.dtype.kind in "iu"
        and 8 in (x.dtype.itemsize, ref.dtype.itemsize)
    ):
        if x.size == 0 or ref.size == 0:
            return np.zeros(np.broadcast_shapes(x.shape, ref.shape))
        lo = min(int(x.min()), int(ref.min()))
        hi = max(int(x.max()), int(ref.max()))
        if lo >= -(2**63) and hi < 2**63 and hi - lo < 2**63:  # no int64 overflow
            diff = np.subtract(x.astype(np.int64), ref.astype(np.int64))
            return diff.astype(np.float64)
    return np.subtract(x, ref, dtype=np.float64)


def block_moments(x: np.ndarray, axis: int, ref: Any = None) -> np.ndarray:
    """(n, mean, M2) of a block along ``axis``, stacked: shape (3, *x.shape) with ``axis`` of
    size 1. Two passes in float64, around the block's first value along ``axis``.

    With x_0 the first value, d_k = x_k − x_0 and d̄ = (1/n) Σ_k d_k:

        mean = x_0 + d̄,    M2 = Σ_k (d_k − d̄)².

    The shift changes nothing mathematically, but a constant block has d = 0 exactly, hence
    mean = x_0 and M2 = 0 exactly (the float64 mean of n copies of c need not be c, and then
    x − mean is a rounding residue, not 0). An empty block gives (0, 0, 0).

    ``ref`` (broadcastable to the result's positions, ``axis`` of size 1): return the mean
    **relative to it**, mean − ref = (x_0 − ref) + d̄, from the exact differences x − ref
    (``minus``). Blocks of one array reduced around one common reference (the array's first
    value along ``axis``) keep the digits of means that are large compared to the spread:
    their merge (``merge_moments``) then subtracts small numbers, not large ones.
    """
    x = np.asarray(x)
    shape = list(x.shape)
    shape[axis] = 1
    if x.shape[axis] == 0:
        return np.zeros((3, *shape))
    first = np.take(x, [0], axis=axis)
    # one float64 temporary for the deviations, centred in place; their squares are summed by
    # einsum, without a temporary for the squares
    d = minus(x, first)
    shift = d.mean(axis=axis, keepdims=True)
    d -= shift
    letters = "abcdefghijklmnopqrstuvwxyz"[: x.ndim]
    kept = letters.replace(letters[axis], "")
    m2 = np.expand_dims(np.einsum(f"{letters},{letters}->{kept}", d, d), axis)
    if ref is None:
        mean = minus(first, 0) + shift
    else:
        mean = np.broadcast_to(minus(first, ref), shift.shape) + shift
    return np.stack([np.full(mean.shape, float(x.shape[axis])), mean, m2])


def merge_moments(stacked: np.ndarray, axis: int, keepdims: bool = True) -> np.ndarray:
    """Merge stacked moments along ``axis`` (an axis of ``stacked``, after the leading 3).

    The k-way form of Chan et al.'s update, around the mean m_r of the block with the largest
    count (r): with δ_k = m_k − m_r, n = Σ n_k and δ̄ = Σ n_k δ_k / n,

        m = m_r + δ̄,    M2 = Σ M2_k + Σ n_k (δ_k − δ̄)².

    No difference of large sums, so no cancellation; and blocks with equal means give δ = 0
    exactly, so their merged mean is that mean and exactly-zero M2 stay exactly zero. The
    means may be relative to a common reference (``block_moments(..., ref=...)``): the merge
    is the same, and keeps their digits.
    """
    n, mean, m2 = stacked[0], stacked[1], stacked[2]
    ax = axis - 1
    total = n.sum(axis=ax, keepdims=True)
    ref = np.take_along_axis(mean, n.argmax(axis=ax, keepdims=True), axis=ax)
    dev = mean - ref
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.where(total > 0, (n * dev).sum(axis=ax, keepdims=True) / total, 0.0)
    dev -= shift
    spread = m2.sum(axis=ax, keepdims=True) + (n * dev * dev).sum(axis=ax, keepdims=True)
    out = np.stack([total, ref + shift, spread])
    return out if keepdims else np.squeeze(out, axis=axis)


# -- both moment reductions of a cube from one pass over each block ------------------------------
_COMPILED: dict[Any, Any] = {}  # python function → its numba compilation, or None


def compiled(fn: Any) -> Any:
    """``fn`` compiled by numba (``nogil``: dask's threads run it in parallel with TensorFlow),
    or None when numba is not installed; the caller then takes its numpy path."""
    if fn not in _COMPILED:
        try:
            import numba
        except ImportError:  # pragma: no cover - numba ships with the test extras
            _COMPILED[fn] = None
        else:
            try:
                _COMPILED[fn] = numba.njit(nogil=True, cache=True)(fn)
            except RuntimeError:  # pragma: no cover - no writable cache directory
                _COMPILED[fn] = numba.njit(nogil=True)(fn)
    return _COMPILED[fn]


def _numba_kernel() -> Any:
    """The compiled kernel of ``block_moments_both``, or None without numba."""
    return compiled(_both_kernel)


def _both_kernel(x):  # pragma: no cover - run compiled by numba
    """Shifts and M2 along axis 1 and along axis 0 of a C-contiguous (n, t, u) float block.

    The two passes of ``block_moments`` for both axes at once, reading the block twice and
    making no temporaries: around x[i, 0, k] along axis 1 and x[0, j, k] along axis 0, in
    float64 (exact differences of float32 values), the shift's mean first (returned: the mean
    is the first value plus it), then the squared deviations from it. Rows along the unit axis
    are the inner loops (vectorised).
    """
    n, t, u = x.shape
    s1 = np.zeros((n, u))
    s0 = np.zeros((t, u))
    for i in range(n):
        first_t = x[i, 0]
        acc_t = s1[i]
        for j in range(t):
            row = x[i, j]
            first_s = x[0, j]
            acc_s = s0[j]
            for k in range(u):
                v = np.float64(row[k])
                acc_t[k] += v - np.float64(first_t[k])
                acc_s[k] += v - np.float64(first_s[k])
    s1 /= t
    s0 /= n
    q1 = np.zeros((n, u))
    q0 = np.zeros((t, u))
    for i in range(n):
        first_t = x[i, 0]
        shift_t = s1[i]
        acc_t = q1[i]
        for j in range(t):
            row = x[i, j]
            first_s = x[0, j]
            shift_s = s0[j]
            acc_s = q0[j]
            for k in range(u):
                v = np.float64(row[k])
                e = (v - np.float64(first_t[k])) - shift_t[k]
                acc_t[k] += e * e
                d = (v - np.float64(first_s[k])) - shift_s[k]
                acc_s[k] += d * d
    return s1, q1, s0, q0


def block_moments_both(
    x: np.ndarray, ref_t: Any = None, ref_s: Any = None, *, fast: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(block_moments(x, 1, ref_t), block_moments(x, 0, ref_s))`` of an (n, t, u) block
    from one pass.

    The same two-pass moments around the same values (so the same exactness for constant
    units), computed by one compiled loop over the block, in float64 from the block's own
    dtype, without the float64 copies of the block (numba; without it, or with
    ``fast=False``, ``block_moments`` twice). ``ref_t`` (n, 1, u) / ``ref_s`` (1, t, u): means
    relative to them (see ``block_moments``).
    """
    x = np.asarray(x)
    kernel = _numba_kernel() if fast is not False else None
    if kernel is None or x.ndim != 3 or 0 in x.shape:
        return block_moments(x, 1, ref_t), block_moments(x, 0, ref_s)
    work = x
    if x.dtype not in (np.float32, np.float64):
        # integers relative to one of their values (exact), so the kernel's float64 deviations
        # are exact even beyond 2**53; the means are taken from the integers below
        work = minus(x, x[:1, :1])
    s1, q1, s0, q0 = kernel(np.ascontiguousarray(work))
    first_t, first_s = x[:, 0], x[0]
    mean1 = minus(first_t, 0 if ref_t is None else np.asarray(ref_t)[:, 0]) + s1
    mean0 = minus(first_s, 0 if ref_s is None else np.asarray(ref_s)[0]) + s0
    n, t, _ = x.shape
    along_t = np.stack([np.full(mean1.shape, float(t)), mean1, q1])[:, :, None, :]
    along_s = np.stack([np.full(mean0.shape, float(n)), mean0, q0])[:, None, :, :]
    return along_t, along_s


def _both_task(block: np.ndarray, ref_t: Any, ref_s: Any) -> tuple[np.ndarray, np.ndarray]:
    return block_moments_both(block, ref_t, ref_s)


def moments_both(data: Any) -> tuple[Any, Any]:
    """``(moments(data, 1), moments(data, 0))`` of an (N, T, U) array from one pass per block.

    ``data`` dask: one task per block computes both reductions' block moments (one read of the
    block instead of two float64 reductions), each then merged across blocks as in
    ``moments``: around the array's first value along the reduced axis (``data[:, 0]``,
    ``data[0]``) where that axis has several blocks. The results are those of ``moments`` up
    to float64 rounding.
    """
    if not isinstance(data, da.Array):
        along_t, along_s = block_moments_both(np.asarray(data))
        return along_t[:, :, 0], along_s[:, 0]

    s_chunks, t_chunks, u_chunks = data.chunks
    # the common references of the blocks along a reduced axis with several blocks
    ref_t = data[:, 0:1, :] if len(t_chunks) > 1 else None
    ref_s = data[0:1] if len(s_chunks) > 1 else None
    token = tokenize(data, "tmx-moments-both-ref")
    both = f"tmx-moments-both-{token}"
    names = (f"tmx-moments-t-{token}", f"tmx-moments-s-{token}")
    both_layer: dict = {}
    out_layers: tuple[dict, dict] = ({}, {})
    for i in range(len(s_chunks)):
        for j in range(len(t_chunks)):
            for k in range(len(u_chunks)):
                both_layer[(both, i, j, k)] = (
                    _both_task,
                    (data.name, i, j, k),
                    None if ref_t is None else (ref_t.name, i, 0, k),
                    None if ref_s is None else (ref_s.name, 0, j, k),
                )
                for which in (0, 1):
                    out_layers[which][(names[which], 0, i, j, k)] = (
                        _getitem,
                        (both, i, j, k),
                        which,
                    )
    refs = [r for r in (ref_t, ref_s) if r is not None]
    base_layers = dict(data.dask.layers)
    base_deps = dict(data.dask.dependencies)
    for r in refs:
        base_layers.update(r.dask.layers)
        base_deps.update(r.dask.dependencies)
    block_chunks = (
        ((3,), s_chunks, (1,) * len(t_chunks), u_chunks),
        ((3,), (1,) * len(s_chunks), t_chunks, u_chunks),
    )
    results = []
    for which, axis, ref in ((0, 1, ref_t), (1, 0, ref_s)):
        graph = HighLevelGraph(
            {**base_layers, both: both_layer, names[which]: out_layers[which]},
            {
                **base_deps,
                both: {data.name, *(r.name for r in refs)},
                names[which]: {both},
            },
        )
        per_block = da.Array(graph, names[which], chunks=block_chunks[which], dtype=np.float64)
        merged = _merge_blocks(per_block, axis)
        results.append(merged if ref is None else _add_ref(merged, ref, axis))
    return results[0], results[1]


def _getitem(pair: tuple[np.ndarray, np.ndarray], which: int) -> np.ndarray:
    return pair[which]


def _add_ref(merged: da.Array, ref: da.Array, axis: int) -> da.Array:
    """Merged moments (3, ...) with means relative to ``ref`` (``axis`` of size 1) made
    absolute."""
    ref = ref[(slice(None),) * axis + (0,)]
    letters = "abcdefghijklmnopqrstuvwxyz"[: ref.ndim]
    return da.blockwise(
        _add_mean, "m" + letters, merged, "m" + letters, ref, letters, dtype=np.float64
    )


def _add_mean(moments: np.ndarray, ref: np.ndarray) -> np.ndarray:
    out = np.array(moments, dtype=np.float64)
    out[1] += minus(ref, 0)
    return out


def _merge_blocks(per_block: da.Array, axis: int) -> da.Array:
    """Merge per-block moments (3, ...) with one entry per block along ``axis + 1``."""
    if per_block.numblocks[axis + 1] == 1:
        return per_block[(slice(None),) * (axis + 1) + (0,)]
    return da.reduction(
        per_block,
        chunk=_reduce_step,
        combine=_reduce_step,
        aggregate=_reduce_last,
        axis=axis + 1,
        keepdims=False,
        dtype=np.float64,
        concatenate=True,
    )


def _reduce_step(x, axis, keepdims, **kwargs):
    (ax,) = axis
    return merge_moments(x, ax, keepdims=True)


def _reduce_last(x, axis, keepdims, **kwargs):
    (ax,) = axis
    return merge_moments(x, ax, keepdims=keepdims)


def moments(data: Any, axis: int, ref: Any = None) -> Any:
    """Per-position (n, mean, M2) of ``data`` along ``axis``: shape (3, *shape without axis).

    float64 whatever the input dtype. ``data`` numpy: computed directly. ``data`` dask: one
    ``map_blocks`` step per block (several reductions over the same cube in one graph share the
    cube's blocks, so a lazy cube's forward passes run once) and a tree merge across the blocks
    along ``axis``. Every block is reduced around one common reference per position, the
    array's first value along ``axis`` (as the numpy path does), so the merge keeps the digits
    of a mean that is large compared to the spread (1e8 ± 1e-4 in float64; integers near
    2**53), whatever the chunking.

    ``ref`` (numpy or dask, broadcastable to ``data`` with ``axis`` of size 1): the means are
    returned **relative to it** (mean − ref), e.g. around one value per unit when means of
    several positions are compared (ANOVA's group means).
    """
    relative = ref is not None
    if not isinstance(data, da.Array):
        if relative:
            shape = list(np.shape(data))
            shape[axis] = 1
            ref = np.broadcast_to(np.asarray(ref), shape)
        return np.squeeze(block_moments(data, axis, ref), axis=axis + 1)
    nb = data.numblocks[axis]
    chunks = tuple((1,) * nb if i == axis else c for i, c in enumerate(data.chunks))
    if not relative and nb == 1:
        per_block = da.map_blocks(
            block_moments, data, axis, new_axis=0, chunks=((3,), *chunks), dtype=np.float64
        )
        return _merge_blocks(per_block, axis)
    if relative:
        shape = list(data.shape)
        shape[axis] = 1
        ref_chunks = tuple((1,) if i == axis else c for i, c in enumerate(data.chunks))
        ref = da.broadcast_to(da.asarray(ref), shape).rechunk(ref_chunks)
    else:
        ref = data[(slice(None),) * axis + (slice(0, 1),)]
    letters = "abcdefghijklmnopqrstuvwxyz"[: data.ndim]
    per_block = da.blockwise(
        block_moments,
        "m" + letters,
        data,
        letters,
        axis,
        None,
        ref,
        letters,
        new_axes={"m": 3},
        adjust_chunks={letters[axis]: 1},
        dtype=np.float64,
    )
    merged = _merge_blocks(per_block, axis)
    return merged if relative else _add_ref(merged, ref, axis)


# -- grouping units by (layer, channel) ----------------------------------------------------------
def channel_groups(obj: xr.DataArray | xr.Dataset) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Group codes of the units by (layer, channel), in order of first appearance.

    Returns ``codes`` (one int per unit) and the coordinates of each group: ``layer``,
    ``channel``, ``y`` = ``x`` = −1 where the layer has spatial axes (the pooled unit stands for
    the whole map), the unit's own y/x otherwise, and ``units`` (how many units were pooled).
    """
    layer = layer_array(obj)
    channel = np.asarray(obj["channel"].values)
    ys = np.asarray(obj["y"].values)
    xs = np.asarray(obj["x"].values)
    keys: dict[tuple[str, int], int] = {}
    codes = np.empty(len(layer), dtype=np.int64)
    for u, key in enumerate(zip(layer.tolist(), channel.tolist(), strict=True)):
        codes[u] = keys.setdefault(key, len(keys))
    g_layer = np.array([k[0] for k in keys], dtype=str)
    g_channel = np.array([k[1] for k in keys], dtype=np.int64)
    counts = np.bincount(codes, minlength=len(keys))
    first = np.full(len(keys), -1, dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes))[::-1]
    spatial = counts > 1
    g_y = np.where(spatial, -1, ys[first]).astype(np.int64)
    g_x = np.where(spatial, -1, xs[first]).astype(np.int64)
    return codes, {"layer": g_layer, "channel": g_channel, "y": g_y, "x": g_x, "units": counts}


def spatial_layers(obj: xr.DataArray | xr.Dataset) -> list[str]:
    """Layers with spatial axes (some unit with y ≥ 0 or x ≥ 0), in order of appearance."""
    has = (np.asarray(obj["y"].values) >= 0) | (np.asarray(obj["x"].values) >= 0)
    return [name for name, units in units_by_layer(obj).items() if has[units].any()]


def group_reduce(values: Any, codes: np.ndarray, n_groups: int, how: str = "mean") -> Any:
    """Reduce ``values`` (last axis = unit) within each group: "mean" or "max"; numpy or dask.

    The unit axis is gathered into one chunk (per-unit results are small; for activations a
    block holds all units of its samples, as the cube's default chunks do).
    """
    counts = np.bincount(codes, minlength=n_groups).astype(np.float64)
    if isinstance(values, da.Array):
        values = values.rechunk({values.ndim - 1: -1})
        return values.map_blocks(
            _group_reduce_block,
            codes,
            counts,
            how,
            dtype=np.float64,
            chunks=(*values.chunks[:-1], (n_groups,)),
        )
    return _group_reduce_block(values, codes, counts, how)


def _group_reduce_block(
    values: np.ndarray, codes: np.ndarray, counts: np.ndarray, how: str
) -> np.ndarray:
    values = np.moveaxis(np.asarray(values, dtype=np.float64), -1, 0)
    order = np.argsort(codes, kind="stable")  # every group 0..G−1 has at least one unit
    starts = np.concatenate([[0], np.flatnonzero(np.diff(codes[order])) + 1])
    if how == "mean":
        out = np.add.reduceat(values[order], starts, axis=0)
        out /= counts.reshape(-1, *([1] * (values.ndim - 1)))
    elif how == "max":
        out = np.maximum.reduceat(values[order], starts, axis=0)
    else:  # pragma: no cover - callers validate
        raise ValueError(f"unknown group reduction {how!r}")
    return np.moveaxis(out, 0, -1)
