"""Goodfellow et al.'s invariance score: local firing rate over global firing rate.

Goodfellow, Le, Saxe, Lee & Ng, "Measuring invariances in deep networks", NIPS 2009. A unit
*fires* when its (signed) activation exceeds a threshold t set so that it fires rarely on
untransformed inputs. Its **global** firing rate G is the fraction of untransformed inputs it
fires on; its **local** firing rate L is the fraction of transformed inputs it fires on — over
every (sample, transformation) cell (``local="all"``, as the reference library does), or over the
transformations of the Z samples that activate it most (``local="top"``, as the paper does). An
invariant unit keeps firing when its preferred inputs are transformed: score = L / G is high.

Per unit u, with s = ``sign`` ∈ {1, −1} and R the reference (untransformed) transformations:

- threshold ``"normal"``: t = μ + σ Φ⁻¹(1 − rate), μ and σ the mean and standard deviation (ddof
  = 0, the population σ) of s·a over the N·R reference cells;
- threshold ``"percentile"``: t = the (1 − rate) quantile of s·a over the reference cells,
  ``numpy.quantile``'s default linear interpolation (Hyndman & Fan's method 7);
- fires: s·a > t (strict);
- G = #{reference cells that fire} / (N·R) — measured, not assumed to be ``rate``;
- L (``"all"``) = #{cells that fire} / (N·T);
- L (``"top"``) = #{cells (i, j), i ∈ top(u), any j, that fire} / (|top(u)|·T), where top(u)
  are the samples with the Z largest mean s·a over the reference transformations; samples tied
  with the Z-th value are all included, so |top(u)| ≥ Z (reported as ``n_top``);
- score = L / G; G = 0 gives +inf when L > 0 and NaN when L = 0.
"""

from __future__ import annotations

import math
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from scipy import stats

from .._schema import check_cube
from .._validate import fraction, str_array
from ._common import (
    base_attrs,
    choice,
    divide,
    merge_moments,
    minus,
    moments,
    unit_result,
)

__all__ = ["LOCALS", "THRESHOLDS", "goodfellow"]

THRESHOLDS = ("normal", "percentile")
LOCALS = ("all", "top")


# -- validation ---------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _reference_positions(cube: xr.DataArray, reference: Any) -> np.ndarray:
    """Positions of the reference transformations, sorted."""
    t = cube.sizes["transformation"]
    if reference is None:
        coord = cube.coords.get("transform")
        if coord is not None and coord.dims == ("transformation",):
            found = np.flatnonzero(str_array(coord.values) == "identity")
            if found.size:
                return found
        return np.arange(t)
    if isinstance(reference, str):
        if reference == "all":
            return np.arange(t)
        raise ValueError(
            f"reference must be None, 'all', a transformation position or a list of them; "
            f"got {reference!r}"
        )
    items = [reference] if _is_int(reference) else reference
    try:
        items = list(items)
    except TypeError:
        raise ValueError(
            f"reference must be None, 'all', a transformation position or a list of them; "
            f"got {reference!r}"
        ) from None
    if not items or not all(_is_int(i) for i in items):
        raise ValueError(f"reference positions must be a non-empty list of ints; got {reference!r}")
    positions = []
    for i in items:
        if not -t <= i < t:
            raise ValueError(f"reference position {i} is out of range for T = {t}")
        positions.append(int(i) % t)
    if len(set(positions)) != len(positions):
        raise ValueError(f"reference positions repeat: {reference!r}")
    return np.array(sorted(positions), dtype=np.int64)


def _check_top(top: Any, local: str, n: int) -> int | None:
    if local == "all":
        if top is not None:
            raise ValueError("top applies to local='top' only; got local='all' with top set")
        return None
    if top is None:
        return max(1, math.ceil(0.01 * n))
    if not _is_int(top) or not 1 <= top <= n:
        raise ValueError(f"top must be an int in [1, N = {n}]; got {top!r}")
    return int(top)


# -- block functions (the same for numpy and dask, so the same numbers) ---------------------------
def _ref_sum(xref: np.ndarray, sign: int) -> np.ndarray:
    """s·Σ_r a[:, r, :] in float64, summed in order over r (so per element, whatever the
    block's shape): the ranking key of the top-Z samples."""
    out = np.array(xref[:, 0, :], dtype=np.float64)
    for r in range(1, xref.shape[1]):
        out += xref[:, r, :]
    return out if sign == 1 else -out


def _top_sorted(x: Any, k: int) -> Any:
    """The k largest values along axis 0, largest first (NaN counts as largest), as
    ``dask.array.topk``."""
    if isinstance(x, da.Array):
        return da.topk(x, k, axis=0)
    k = min(k, x.shape[0])
    part = np.partition(x, x.shape[0] - k, axis=0)[x.shape[0] - k :]
    return np.sort(part, axis=0)[::-1]


def _quantile_from_top(top: np.ndarray, count: int, q: float) -> np.ndarray:
    """numpy.quantile(values, q) (method "linear") from the values' largest ``len(top)`` values,
    largest first: the virtual index h = (count − 1) q, and numpy's interpolation between the
    order statistics ⌊h⌋ and ⌊h⌋ + 1."""
    h = (count - 1) * q
    lo = math.floor(h)
    gamma = h - lo
    k = count - lo  # values at ascending positions lo … count − 1
    a = top[k - 1]
    if h >= count - 1:
        out = np.array(a, dtype=np.float64)
    else:
        b = top[k - 2]
        diff = b - a
        out = a + diff * gamma
        if gamma >= 0.5:
            out = b - diff * (1 - gamma)
    return np.where(np.isnan(top).any(axis=0), np.nan, out)


def _k_for_quantile(count: int, q: float) -> int:
    return count - math.floor((count - 1) * q)


# -- the measure --------------------------------------------------------------------------------
def goodfellow(
    cube: xr.DataArray,
    *,
    reference: Any = None,
    threshold: str = "normal",
    rate: float = 0.01,
    local: str = "all",
    top: int | None = None,
    sign: int = 1,
) -> xr.Dataset:
    """Goodfellow et al.'s (2009) invariance score L / G per unit.

    Parameters
    ----------
    cube : xr.DataArray
        The activation cube, dims (sample, transformation, unit), numpy- or dask-backed.
    reference : None | "all" | int | list of int
        The untransformed transformations, where the threshold and G are measured. None: those
        whose ``transform`` coordinate is exactly ``"identity"`` (all of them if several), or
        every transformation if there is none. "all": every transformation. Ints: positions
        along ``transformation`` (negative ones count from the end; no repeats).
    threshold : "normal" | "percentile"
        ``"normal"``: t = μ + σ Φ⁻¹(1 − rate), μ, σ (ddof = 0) of s·a over the reference cells.
        ``"percentile"``: t = ``numpy.quantile(s·a over the reference cells, 1 − rate)``.
    rate : float in (0, 1)
        The intended global firing rate; G is measured, and differs from ``rate`` when the
        activations are not normal or tie.
    local : "all" | "top"
        ``"all"``: L over every (sample, transformation) cell (the reference library).
        ``"top"``: L over all T transformations of the top-Z samples of each unit (the paper).
    top : int, optional
        Z for ``local="top"`` (1 ≤ Z ≤ N), default max(1, ⌈0.01 N⌉). The samples are ranked by
        their mean s·a over the reference transformations (computed as the float64 sum in
        order, the same ranking); every sample tied with the Z-th is included. Only valid with
        ``local="top"``.
    sign : 1 | −1
        −1 measures the unit's negative direction (fires when −a > t).

    Returns
    -------
    xr.Dataset
        Over ``unit``: ``score`` = L / G (G = 0: +inf if L > 0, NaN if L = 0), ``local`` (L),
        ``global`` (G), ``threshold`` (t, float64), and for ``local="top"`` ``n_top`` (the number
        of samples used, ≥ Z with ties). attrs: ``measure`` = "goodfellow", N, T, the options
        (``reference`` as the list of positions, ``top`` = Z, "None" for ``local="all"``) and
        ``tmx_version``, in the one attr encoding (booleans 0/1, None "None").

    Notes
    -----
    Two passes: the thresholds (and the top-Z cut-off) need every reference cell, the firing rates
    need the thresholds. For a dask-backed cube, the first pass is computed here (one
    ``dask.compute``: the float64 moments for "normal"; for "percentile" and the top-Z ranking,
    ``dask.array.topk`` of the ≈ rate·N·R + 1 largest values per unit, so memory stays
    proportional to that, not to N); the firing rates are returned lazily (the second pass). A lazy
    cube that is not stored therefore runs its forward passes twice: save it first
    (``tmx.save``) for big models. Counts are exact integers and the thresholds are computed by the
    same functions for numpy and dask, so the rates do not depend on the backend or the chunking
    ("percentile" thresholds are exactly equal; "normal" ones agree to rounding, as the float64
    moments merge in a chunk-dependent order).

    Reference: I. J. Goodfellow, Q. V. Le, A. M. Saxe, H. Lee, A. Y. Ng, "Measuring invariances in
    deep networks", Advances in Neural Information Processing Systems 22, 2009.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx.measures.goodfellow import goodfellow
    >>> a = np.random.default_rng(0).normal(size=(200, 3, 2))   # N=200, T=3, 2 units
    >>> a[:, 1:, 1] = a[:, :1, 1]                 # unit 1: the same under every transformation
    >>> g = goodfellow(tmx.from_array({"dense": a}), reference=0, rate=0.1)
    >>> fires = a > g.threshold.values            # t = μ + σ Φ⁻¹(0.9) over a[:, 0, u]
    >>> bool(np.allclose(g["global"], fires[:, 0].mean(axis=0)))
    True
    >>> bool(np.allclose(g["local"], fires.mean(axis=(0, 1)))), float(g.score[1])
    (True, 1.0)
    """
    cube = check_cube(
        cube,
        measure="goodfellow",
        min_transformations=2,
        need={"transformations": "the score compares transformed with untransformed cells"},
    )
    threshold = choice(threshold, "threshold", THRESHOLDS)
    local = choice(local, "local", LOCALS)
    rate = fraction(rate, "rate")
    sign = int(choice(sign, "sign", (1, -1)))
    ref = _reference_positions(cube, reference)
    n, t = cube.sizes["sample"], cube.sizes["transformation"]
    z = _check_top(top, local, n)
    x = cube.data
    lazy = isinstance(x, da.Array)
    n_ref = len(ref)
    all_ref = n_ref == t
    xref = x if all_ref else x[:, ref, :]
    if lazy:
        xref = xref.rechunk({1: -1})

    # -- pass 1: the thresholds and the top-Z cut-off ----------------------------------------
    first: dict[str, Any] = {}
    if threshold == "normal":
        # around one value of each unit, so the pooled mean keeps its digits (merged below)
        first["origin"] = xref[0:1, 0:1, :]
        first["moments"] = moments(xref, axis=0, ref=first["origin"])
    else:
        k = _k_for_quantile(n * n_ref, 1 - rate)
        signed = xref.astype(np.float64) * sign
        cells = signed.reshape(n * n_ref, signed.shape[2])
        first["top_values"] = _top_sorted(cells, k)
    if z is not None:  # local == "top"
        if lazy:
            key = xref.map_blocks(_ref_sum, sign, drop_axis=1, dtype=np.float64)
        else:
            key = _ref_sum(xref, sign)
        first["top_key"] = _top_sorted(key, z)
    if lazy:
        (first,) = dask.compute(first)
    if threshold == "normal":
        count, mu, m2 = merge_moments(first["moments"], axis=1, keepdims=False)
        mu = sign * (mu + minus(first["origin"][0, 0], 0))
        sigma = np.sqrt(m2 / count)
        thr = mu + sigma * stats.norm.isf(rate)
    else:
        thr = _quantile_from_top(first["top_values"], n * n_ref, 1 - rate)
    thr = np.asarray(thr, dtype=np.float64)

    # -- pass 2: the firing rates (lazy for a lazy cube) --------------------------------------
    fire = x > thr if sign == 1 else x < -thr
    fire_ref = fire if all_ref else fire[:, ref, :]
    g = fire_ref.sum(axis=(0, 1)) / (n * n_ref)
    n_top = None
    if z is None:  # local == "all"
        loc = fire.sum(axis=(0, 1)) / (n * t)
    else:
        cutoff = first["top_key"][z - 1]
        in_top = key >= cutoff
        n_top = in_top.sum(axis=0)
        loc = (fire.sum(axis=1) * in_top).sum(axis=0) / (n_top * t)
    score = divide(loc, g, "nan")  # G = 0: inf if L > 0, NaN if L = 0

    attrs = base_attrs(
        cube,
        "goodfellow",
        reference=[int(i) for i in ref],
        threshold=threshold,
        rate=rate,
        local=local,
        top=z,
        sign=sign,
    )
    variables = {
        "score": unit_result(score, cube, "score", {"long_name": "L / G"}),
        "local": unit_result(loc, cube, "local", {"long_name": "local firing rate"}),
        "global": unit_result(g, cube, "global", {"long_name": "global firing rate"}),
        "threshold": unit_result(thr, cube, "threshold", {"long_name": "threshold"}),
    }
    if n_top is not None:
        variables["n_top"] = unit_result(
            n_top, cube, "n_top", {"long_name": "samples in the top-Z set (ties in)"}
        )
    return xr.Dataset(variables, attrs=attrs)
