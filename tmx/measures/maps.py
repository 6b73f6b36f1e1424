"""Learned equivariance and equivalence: linear maps between representations, fitted by ridge
regression on training samples and scored by R² on held-out samples (Lenc & Vedaldi).

Same-equivariance (``invert``) asks whether f(g x) = g f(x) for the known action of g on feature
maps. The general question of Lenc & Vedaldi (2015, 2019) is whether *some* map M_g exists with

    f(g x) ≈ M_g f(x)                          (equivariance; M_g = I: invariance)

and, for two layers f, h (of one model or two), whether h(x) ≈ E f(x) (equivalence).

Estimation (both functions). With x_i ∈ R^p the inputs and y_i ∈ R^q the outputs of the
regression on the *training* rows, x̄, ȳ their means and X_c, Y_c the centred rows (one row per
sample, or per (sample, position) with ``kind="conv1x1"``), the ridge regression with an
unpenalised bias

    min_{M, b} Σ_i ‖y_i − M x_i − b‖² + λ ‖M‖_F²

has the closed form

    M = Y_cᵀ X_c (X_cᵀ X_c + λ I)⁻¹,    b = ȳ − M x̄,

with λ = ``ridge`` × tr(X_cᵀ X_c) / p (``ridge`` is relative to the mean per-feature sum of
squares, so it does not depend on the scale of the activations or on N; ``ridge=0`` gives the
minimum-norm least-squares map, through the pseudo-inverse). The fit is scored on the
*held-out* rows: per output feature u,

    SS_res,u = Σ_i (y_iu − (M x_i)_u − b_u)²,    SS_tot,u = Σ_i (y_iu − ȳ_u^test)²,

    R²_u = 1 − SS_res,u / SS_tot,u,    R² = 1 − Σ_u SS_res,u / Σ_u SS_tot,u  (pooled).

R² is 1 for an exact map, about 0 when the outputs are unrelated to the inputs, and may be
negative (a map that fits noise predicts worse than the test mean). A unit constant over the
held-out rows has R²_u = NaN (and no weight in the pooled R²).

Split: the samples are split once by ``np.random.default_rng(seed).permutation(N)``, the first
round(``test_size`` × N) held out (all positions and transformations of a sample stay on the
same side); ``held_out`` in the result marks them.

Streaming: one pass over the sample blocks (a lazy cube's own chunks; blocks of about 64 MiB
for numpy), accumulating for the training and the held-out rows separately, in float64, the
means and the centred cross-products X_cᵀ X_c, X_cᵀ Y_c and the diagonal of Y_cᵀ Y_c, blocks
merged with the pairwise update of Chan, Golub & LeVeque (1979) (as the variance family). The
held-out sums of squares follow from these moments exactly (with e = ȳ^test − M x̄^test − b):

    SS_res,u = [Y_cᵀY_c]_uu − 2 [M X_cᵀY_c]_uu + [M X_cᵀX_c Mᵀ]_uu + n_test e_u²,

so the cube is read once, and memory is that of the matrices (8 (p² + J p q) bytes per side,
J the number of transformations), whatever N: a Zarr cube larger than memory is streamed.

Kinds (``kind``):

- ``"linear"``: x = the layer's units (all of them, p = q = U): a dense U × U map per
  transformation. For a spatial layer this includes any permutation of positions (an exact
  circular convolution under a cyclic shift gives M = the shift permutation), but U² grows
  fast; the call is refused beyond ``memory``.
- ``"conv1x1"``: for a layer with (y, x) axes, a C × C map acting on the channels only, shared
  by every position, *without* remapping positions:

      a(g x)[y, x, :] ≈ M_g a(x)[y, x, :] + b_g    for every (y, x),

  each (sample, position) being one row. Lenc & Vedaldi's map is a permutation of positions
  (the geometric action of g) followed by such a 1 × 1 convolution: apply it to
  ``tmx.invert(cube, tset)`` (positions mapped back by the inverse of each transformation) to
  fit exactly that. A layer without spatial axes has one position (conv1x1 = linear).

References
----------
Lenc, K., Vedaldi, A. (2015). Understanding image representations by measuring their
equivariance and equivalence. CVPR 2015, 991–999.

Lenc, K., Vedaldi, A. (2019). Understanding image representations by measuring their
equivariance and equivalence. International Journal of Computer Vision 127, 456–476.

Chan, T. F., Golub, G. H., LeVeque, R. J. (1979). Updating formulae and a pairwise algorithm for
computing sample variances. Technical Report STAN-CS-79-773, Stanford University.
"""

from __future__ import annotations

import itertools
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from .._batching import parse_memory
from .._progress import resolve as resolve_progress
from .._progress import steps
from .._schema import check_cube, select_layer
from .._validate import seed as check_seed
from .._validate import str_array
from ._common import base_attrs, choice

__all__ = ["KINDS", "equivalence", "equivariance_map"]

KINDS = ("linear", "conv1x1")
_BLOCK_BYTES = 64 * 2**20  # bytes of float64 rows per block of a numpy-backed cube


# -- numpy kernels --------------------------------------------------------------------------------
def _centre(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(x − block mean, block mean) along ``axis``, relative to the first row (constant → 0)."""
    first = np.take(x, [0], axis=axis)
    d = x - first
    shift = d.mean(axis=axis, keepdims=True)
    d -= shift
    return d, np.squeeze(first + shift, axis=axis)


class _Moments:
    """Streamed float64 moments of rows x (p) and J output sets y_j (q): n, means, X_cᵀX_c,
    X_cᵀY_c,j and diag(Y_c,jᵀY_c,j), blocks merged by Chan et al. (1979)."""

    def __init__(self, p: int, q: int, j: int):
        self.n = 0
        self.mx = np.zeros(p)
        self.my = np.zeros((j, q))
        self.cxx = np.zeros((p, p))
        self.cxy = np.zeros((j, p, q))
        self.syy = np.zeros((j, q))

    def add(self, x: np.ndarray, ys: np.ndarray) -> None:
        """x: (m, p) rows; ys: (J, m, q) the outputs of the same rows."""
        m = x.shape[0]
        if m == 0:
            return
        xc, bmx = _centre(x, 0)
        yc, bmy = _centre(ys, 1)
        total = self.n + m
        dx, dy = bmx - self.mx, bmy - self.my
        self.cxx += xc.T @ xc
        self.cxy += np.matmul(xc.T, yc)
        self.syy += np.einsum("jmq,jmq->jq", yc, yc)
        if self.n:
            f = self.n * m / total
            self.cxx += f * np.outer(dx, dx)
            self.cxy += f * dx[None, :, None] * dy[:, None, :]
            self.syy += f * dy * dy
        self.mx += dx * (m / total)
        self.my += dy * (m / total)
        self.n = total


def ridge_solve(train: _Moments, ridge: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(M (J, q, p), b (J, q), λ): M = Y_cᵀX_c (X_cᵀX_c + λI)⁻¹, b = ȳ − M x̄,
    λ = ridge · tr(X_cᵀX_c) / p (``ridge`` itself when the trace is 0); pseudo-inverse at 0."""
    p = train.cxx.shape[0]
    trace = float(np.trace(train.cxx))
    lam = ridge * trace / p if trace > 0 else float(ridge)
    if lam > 0:
        w = np.linalg.solve(train.cxx + lam * np.eye(p), train.cxy)  # (J, p, q)
    else:
        w = np.linalg.pinv(train.cxx, hermitian=True) @ train.cxy
    m = np.swapaxes(w, 1, 2)
    b = train.my - np.einsum("jqp,p->jq", m, train.mx)
    return m, b, lam


def held_out_r2(test: _Moments, m: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pooled R² (J,), per-output R² (J, q)) of y ≈ M x + b on the held-out moments."""
    e = test.my - np.einsum("jqp,p->jq", m, test.mx) - b
    quad = np.einsum("jqp,jqp->jq", m @ test.cxx, m)
    cross = np.einsum("jqp,jpq->jq", m, test.cxy)
    ssres = np.maximum(test.syy - 2.0 * cross + quad, 0.0) + test.n * e * e
    sstot = test.syy
    with np.errstate(divide="ignore", invalid="ignore"):
        unit = np.where(sstot > 0, 1.0 - ssres / sstot, np.nan)
        tot = sstot.sum(axis=-1)
        pooled = np.where(tot > 0, 1.0 - ssres.sum(axis=-1) / tot, np.nan)
    return pooled, unit


# -- helpers --------------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _check_number(value: Any, name: str, low: float, high: float | None = None) -> float:
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )
    if ok:
        value = float(value)
        ok = np.isfinite(value) and value >= low and (high is None or value < high)
    if not ok:
        where = f"in [{low}, {high})" if high is not None else f"≥ {low}"
        raise ValueError(f"{name} must be a finite number {where}; got {value!r}")
    return float(value)


def _split(n: int, test_size: Any, seed: Any) -> np.ndarray:
    """Boolean held-out mask over the samples (see the module docstring)."""
    test_size = _check_number(test_size, "test_size", 0.0, 1.0)
    seed = check_seed(seed)
    n_test = round(test_size * n)
    if n_test < 2 or n - n_test < 2:
        raise ValueError(
            f"test_size={test_size} holds out {n_test} of the cube's N = {n} samples; the fit "
            "and the held-out R² each need at least 2 samples"
        )
    held = np.zeros(n, dtype=bool)
    held[np.random.default_rng(int(seed)).permutation(n)[:n_test]] = True
    return held


def _grid(cube: xr.DataArray, units: np.ndarray, what: str) -> tuple[np.ndarray, ...]:
    """(positions (P, 2) of (y, x), channels (C,), index (P, C) into ``units``) of a layer
    whose units form a whole (position, channel) grid."""
    ys = np.asarray(cube["y"].values)[units]
    xs = np.asarray(cube["x"].values)[units]
    cs = np.asarray(cube["channel"].values)[units]
    pos, pos_of = np.unique(np.stack([ys, xs], axis=1), axis=0, return_inverse=True)
    chans, chan_of = np.unique(cs, return_inverse=True)
    index = np.full((len(pos), len(chans)), -1)
    index[pos_of.reshape(-1), chan_of] = np.arange(len(units))
    if len(units) != index.size or (index < 0).any():
        raise ValueError(
            f"kind='conv1x1' needs the units of {what} to form a whole (y, x, channel) grid "
            "(every channel at every position, once); use kind='linear'"
        )
    return pos, chans, index


def _blocks(srcs: list[Any], n: int, row_bytes: int) -> list[slice]:
    lazy = next((s for s in srcs if isinstance(s, da.Array)), None)
    if lazy is not None:
        bounds = np.cumsum((0, *lazy.chunks[0]))
    else:
        step = max(1, _BLOCK_BYTES // max(1, row_bytes))
        bounds = np.append(np.arange(0, n, step), n)
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]


def _materialize(parts: list[Any]) -> list[np.ndarray]:
    lazy = [i for i, x in enumerate(parts) if isinstance(x, da.Array)]
    if lazy:
        done = dask.compute(*[parts[i] for i in lazy])
        for i, x in zip(lazy, done, strict=True):
            parts[i] = x
    return [np.asarray(x, dtype=np.float64) for x in parts]


def _units_index(units: np.ndarray) -> Any:
    """A slice when the positions are contiguous (cheaper on dask), else the positions."""
    if units.size and np.array_equal(units, np.arange(units[0], units[0] + units.size)):
        return slice(int(units[0]), int(units[0]) + units.size)
    return units


def _check_memory(p: int, q: int, j: int, memory: Any, kind: str) -> None:
    memory = parse_memory(memory, default=2**30)
    need = 2 * 8.0 * (p * p + 2 * j * p * q)  # train and test moments, maps and solves
    if need > memory:
        hint = " or kind='conv1x1' (a channels × channels map)" if kind == "linear" else ""
        raise ValueError(
            f"the {kind} map of {p} → {q} features for {j} transformation(s) needs about "
            f"{need / 2**30:.3g} GiB of float64 moments, more than memory={memory} bytes; "
            f"select fewer transformations{hint}, or raise memory"
        )


def _feature_coords(
    cube: xr.DataArray, units: np.ndarray, kind: str, grid: tuple | None, side: str
) -> tuple[str, dict[str, Any]]:
    """(dim, coords) labelling one side (``side`` = "out" / "in") of the map."""
    if kind == "conv1x1":
        assert grid is not None  # a conv1x1 map always has its grid
        dim = f"channel_{side}"
        return dim, {dim: grid[1]}
    dim = f"unit_{side}"
    coords: dict[str, Any] = {dim: np.asarray(cube["unit"].values)[units]}
    for c in ("channel", "y", "x"):
        coords[f"{c}_{side}"] = (dim, np.asarray(cube[c].values)[units])
    return dim, coords


def _dims_coords(obj: xr.DataArray, dim: str) -> dict[str, Any]:
    return {str(k): c.variable for k, c in obj.coords.items() if c.dims == (dim,)}


# -- public functions -----------------------------------------------------------------------------
def equivariance_map(
    cube: xr.DataArray,
    *,
    layer: str | None = None,
    transformation: int | list[int] | None = None,
    reference: int | None = None,
    kind: str = "linear",
    ridge: float = 1e-6,
    test_size: float = 0.25,
    seed: int = 0,
    memory: int | str = 2**30,
    progress: bool | None = None,
) -> xr.Dataset:
    """Learned equivariance (Lenc & Vedaldi 2015, 2019): per transformation j, the linear map
    M_j (and bias b_j) with a(g_j x) ≈ M_j a(x) + b_j for one layer, fitted by ridge regression
    on training samples, and its R² on held-out samples.

    a(x) are the layer's activations at the ``reference`` transformation. M_j = I with R² = 1:
    the layer is invariant to g_j; R² = 1 with another M_j: equivariant (e.g. the shift
    permutation for a circular convolution under cyclic shifts); R² ≈ 0: no linear map
    predicts a(g_j x) from a(x). Formulas, split, streaming, kinds: module docstring
    ``tmx.measures.maps``.

    Parameters
    ----------
    cube : xr.DataArray
        A cube (sample, transformation, unit), numpy- or dask-backed (streamed, read once).
    layer : str, optional
        The layer (may be omitted when the cube has one layer).
    transformation : int or list of int, optional
        The transformations (positions) to fit; all by default (the reference included: M ≈ I).
    reference : int, optional
        The position of x itself: by default the transformation whose ``transform``
        coordinate is ``"identity"``, else 0.
    kind : {"linear", "conv1x1"}, default "linear"
        A dense map on all the layer's units, or a channels × channels map shared by every
        (y, x) position (positions not remapped; use ``tmx.invert`` first to remap them).
    ridge : float, default 1e-6
        λ relative to tr(X_cᵀX_c)/p (the mean per-feature sum of squares of the training
        inputs); 0: minimum-norm least squares. Raise it when the training samples (rows) are
        not many more than the features.
    test_size : float, default 0.25
        The fraction of samples held out for R² (at least 2 on each side).
    seed : int, default 0
        Seed of the split.
    memory : int or str, default 1 GiB
        Bytes (or a size such as ``"2GB"``); refuse the call when the float64 moments would
        exceed it.
    progress : bool, optional
        A progress bar over the sample blocks read (the cube's chunks for a dask-backed cube),
        the one pass the fit and the R² need. Default: shown when run interactively, not
        under pytest or CI.

    Returns
    -------
    xr.Dataset
        ``r2`` (transformation), ``r2_unit`` (transformation, out), ``map`` (transformation,
        out, in), ``bias`` (transformation, out) and ``held_out`` (sample), where out/in are
        ``unit_out``/``unit_in`` (with ``channel_*``, ``y_*``, ``x_*`` coordinates) for
        ``"linear"`` and ``channel_out``/``channel_in`` for ``"conv1x1"``; attrs with the
        options, ``reference``, ``ridge_lambda`` (the absolute λ), ``n_train``, ``n_test``.
        Read the map as ``ds["map"]`` (``ds.map`` is the Dataset method). Computed
        (numpy-backed) even for a dask-backed cube: the maps solve a linear system on moments
        summed over every training sample, streamed here block by block (``progress=``
        shows it).

    Examples
    --------
    >>> import numpy as np, xarray as xr, tmx
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(100, 3))
    >>> acts = np.stack([a, a[:, [2, 0, 1]]], axis=1)  # transformation 1 permutes the units
    >>> cube = xr.DataArray(acts, dims=("sample", "transformation", "unit"),
    ...     coords={"layer": ("unit", ["dense"] * 3), "channel": ("unit", [0, 1, 2]),
    ...             "y": ("unit", [-1] * 3), "x": ("unit", [-1] * 3)})
    >>> eq = tmx.equivariance_map(cube, layer="dense")
    >>> print(np.round(eq.r2.values, 6))
    [1. 1.]
    >>> print(np.round(eq["map"].isel(transformation=1).values, 3) + 0.0)
    [[0. 0. 1.]
     [1. 0. 0.]
     [0. 1. 0.]]
    """
    cube = check_cube(
        cube,
        measure="equivariance_map",
        min_samples=4,
        min_transformations=2,
        need={
            "samples": "the fit and the held-out R² need 2 samples each",
            "transformations": "a transformation to map the reference to",
        },
    )
    kind = choice(kind, "kind", KINDS)
    ridge = _check_number(ridge, "ridge", 0.0)
    show = resolve_progress(progress)
    n, t = cube.sizes["sample"], cube.sizes["transformation"]
    layer, units = select_layer(cube, layer, "layer", source="cube")
    if reference is None:
        ref = 0
        coord = cube.coords.get("transform")
        if coord is not None and coord.dims == ("transformation",):
            found = np.flatnonzero(str_array(coord.values) == "identity")
            ref = int(found[0]) if found.size else 0
    elif _is_int(reference) and -t <= reference < t:
        ref = int(reference) % t
    else:
        raise ValueError(
            f"reference must be a transformation position in [0, {t}) or None; got {reference!r}"
        )
    if transformation is None:
        sel = list(range(t))
    else:
        given: Any = [transformation] if _is_int(transformation) else transformation
        try:
            items: list[Any] = list(given)
        except TypeError:
            items = [None]
        if not items or not all(_is_int(i) and -t <= i < t for i in items):
            raise ValueError(
                f"transformation must be None, a position in [0, {t}) or a list of them; "
                f"got {transformation!r}"
            )
        sel = [int(i) % t for i in items]
    held = _split(n, test_size, seed)
    grid = _grid(cube, units, f"layer {layer!r}") if kind == "conv1x1" else None
    p = len(units) if grid is None else grid[2].shape[1]
    j = len(sel)
    _check_memory(p, p, j, memory, kind)

    src = cube.data
    uidx = _units_index(units)
    tidx = [ref, *sel]
    train, test = _Moments(p, p, j), _Moments(p, p, j)
    blocks = _blocks([src], n, 8 * len(units) * (1 + j))
    with steps(len(blocks), show, unit="block") as bar:
        for block in blocks:
            (part,) = _materialize([src[block][:, tidx][:, :, uidx]])  # (m, 1 + J, U)
            m = part.shape[0]
            rows_held = held[block]
            if grid is not None:
                positions = grid[2].shape[0]
                part = part[:, :, grid[2]]  # (m, 1 + J, P, C)
                x = part[:, 0].reshape(m * positions, p)
                ys = np.swapaxes(part[:, 1:], 0, 1).reshape(j, m * positions, p)
                rows_held = np.repeat(rows_held, positions)
            else:
                x = part[:, 0]
                ys = np.swapaxes(part[:, 1:], 0, 1)
            train.add(x[~rows_held], ys[:, ~rows_held])
            test.add(x[rows_held], ys[:, rows_held])
            bar.advance()
    maps, bias, lam = ridge_solve(train, ridge)
    r2, r2_unit = held_out_r2(test, maps, bias)

    picked = cube.isel(transformation=sel)
    units_cube = cube.isel(unit=units)
    out_dim, out_coords = _feature_coords(units_cube, np.arange(len(units)), kind, grid, "out")
    in_dim, in_coords = _feature_coords(units_cube, np.arange(len(units)), kind, grid, "in")
    coords = {**_dims_coords(picked, "transformation"), **_dims_coords(cube, "sample")}
    coords.setdefault("transformation", np.asarray(sel))  # the positions, when unlabelled
    coords.update(out_coords)
    coords.update(in_coords)
    attrs = base_attrs(
        cube,
        "equivariance_map",
        layer=layer,
        kind=kind,
        reference=ref,
        ridge=ridge,
        ridge_lambda=lam,
        test_size=float(test_size),
        seed=int(seed),
        n_train=int((~held).sum()),
        n_test=int(held.sum()),
    )
    return xr.Dataset(
        {
            "r2": (("transformation",), r2),
            "r2_unit": (("transformation", out_dim), r2_unit),
            "map": (("transformation", out_dim, in_dim), maps),
            "bias": (("transformation", out_dim), bias),
            "held_out": (("sample",), held),
        },
        coords=coords,
        attrs=attrs,
    )


def equivalence(
    cube_a: xr.DataArray,
    cube_b: xr.DataArray | None = None,
    *,
    layer_a: str | None = None,
    layer_b: str | None = None,
    transformation: int = 0,
    kind: str = "linear",
    ridge: float = 1e-6,
    test_size: float = 0.25,
    seed: int = 0,
    memory: int | str = 2**30,
    progress: bool | None = None,
) -> xr.Dataset:
    """Learned equivalence (Lenc & Vedaldi 2015, 2019): the linear map E (and bias b) with
    b(x) ≈ E a(x) + b from the activations a of ``layer_a`` (of ``cube_a``) to those of
    ``layer_b`` (of ``cube_b``: another model on the same samples; by default ``cube_a``),
    fitted by ridge regression on training samples at one transformation, scored by R² on the
    held-out samples.

    R² = 1: ``layer_b`` is a linear function of ``layer_a`` (e.g. a rotation or permutation of
    its units: E is that rotation); R² ≈ 0: unrelated. The map is directional (R² of a → b need
    not equal that of b → a). Formulas, split, streaming, kinds: module docstring
    ``tmx.measures.maps``; with ``kind="conv1x1"`` both layers need the same (y, x) grid.

    Parameters
    ----------
    cube_a, cube_b : xr.DataArray
        Cubes on the same samples (equal N and, where both have one, equal ``sample``
        coordinate); ``cube_b`` defaults to ``cube_a`` (two layers of one model).
    layer_a, layer_b : str
        The input and output layers (may be omitted when the cube has one layer).
    transformation : int, default 0
        The transformation (position, in both cubes) whose samples are the rows.
    kind, ridge, test_size, seed, memory, progress
        As in ``equivariance_map``.

    Returns
    -------
    xr.Dataset
        ``r2`` (scalar), ``r2_unit`` (out), ``map`` (out, in), ``bias`` (out) and
        ``held_out`` (sample); out is ``layer_b``'s units (``unit_out`` or ``channel_out``),
        in ``layer_a``'s (``unit_in`` or ``channel_in``). Computed (numpy-backed) even for
        dask-backed cubes, as ``equivariance_map``'s result.

    Examples
    --------
    >>> import numpy as np, xarray as xr, tmx
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(100, 1, 2))
    >>> c, s = np.cos(0.5), np.sin(0.5)
    >>> rot = np.array([[c, -s], [s, c]])
    >>> cube = xr.DataArray(np.concatenate([a, a @ rot.T], axis=2),
    ...     dims=("sample", "transformation", "unit"),
    ...     coords={"layer": ("unit", ["a", "a", "b", "b"]), "channel": ("unit", [0, 1, 0, 1]),
    ...             "y": ("unit", [-1] * 4), "x": ("unit", [-1] * 4)})
    >>> eqv = tmx.equivalence(cube, layer_a="a", layer_b="b")
    >>> print(round(float(eqv.r2), 6))
    1.0
    >>> bool(np.allclose(eqv["map"].values, rot, atol=1e-4))
    True
    """
    need = "the fit and the held-out R² need 2 samples each"
    cube_a = check_cube(cube_a, "cube_a", measure="equivalence", min_samples=4, need=need)
    same = cube_b is None
    cube_b = (
        cube_a
        if same
        else check_cube(cube_b, "cube_b", measure="equivalence", min_samples=4, need=need)
    )
    kind = choice(kind, "kind", KINDS)
    ridge = _check_number(ridge, "ridge", 0.0)
    show = resolve_progress(progress)
    n = cube_a.sizes["sample"]
    if cube_b.sizes["sample"] != n:
        raise ValueError(
            f"cube_a and cube_b must hold the same samples; got N = {n} and "
            f"{cube_b.sizes['sample']}"
        )
    if (
        "sample" in cube_a.coords
        and "sample" in cube_b.coords
        and not np.array_equal(cube_a["sample"].values, cube_b["sample"].values)
    ):
        raise ValueError("cube_a and cube_b must hold the same samples; their 'sample' differ")
    t = min(cube_a.sizes["transformation"], cube_b.sizes["transformation"])
    if not (_is_int(transformation) and -t <= transformation < t):
        raise ValueError(
            f"transformation must be a position in [0, {t}) of both cubes; got {transformation!r}"
        )
    layer_a, units_a = select_layer(cube_a, layer_a, "layer_a", source="cube_a")
    layer_b, units_b = select_layer(cube_b, layer_b, "layer_b", source="cube_b")
    held = _split(n, test_size, seed)
    grid_a = grid_b = None
    if kind == "conv1x1":
        grid_a = _grid(cube_a, units_a, f"layer_a {layer_a!r}")
        grid_b = _grid(cube_b, units_b, f"layer_b {layer_b!r}")
        if not np.array_equal(grid_a[0], grid_b[0]):
            raise ValueError(
                f"kind='conv1x1' needs layer_a {layer_a!r} and layer_b {layer_b!r} on the same "
                "(y, x) positions; use kind='linear'"
            )
        p, q = grid_a[2].shape[1], grid_b[2].shape[1]
    else:
        p, q = len(units_a), len(units_b)
    _check_memory(p, q, 1, memory, kind)

    ta = int(transformation) % cube_a.sizes["transformation"]
    tb = int(transformation) % cube_b.sizes["transformation"]
    src_a, src_b = cube_a.data, cube_b.data
    ia, ib = _units_index(units_a), _units_index(units_b)
    train, test = _Moments(p, q, 1), _Moments(p, q, 1)
    blocks = _blocks([src_a, src_b], n, 8 * (len(units_a) + len(units_b)))
    with steps(len(blocks), show, unit="block") as bar:
        for block in blocks:
            x, y = _materialize([src_a[block, ta][:, ia], src_b[block, tb][:, ib]])
            rows_held = held[block]
            if kind == "conv1x1":
                assert grid_a is not None and grid_b is not None  # set above for conv1x1
                positions = grid_a[2].shape[0]
                x = x[:, grid_a[2]].reshape(-1, p)
                y = y[:, grid_b[2]].reshape(-1, q)
                rows_held = np.repeat(rows_held, positions)
            train.add(x[~rows_held], y[None, ~rows_held])
            test.add(x[rows_held], y[None, rows_held])
            bar.advance()
    maps, bias, lam = ridge_solve(train, ridge)
    r2, r2_unit = held_out_r2(test, maps, bias)

    in_dim, in_coords = _feature_coords(
        cube_a.isel(unit=units_a), np.arange(len(units_a)), kind, grid_a, "in"
    )
    out_dim, out_coords = _feature_coords(
        cube_b.isel(unit=units_b), np.arange(len(units_b)), kind, grid_b, "out"
    )
    coords = {**_dims_coords(cube_a, "sample"), **out_coords, **in_coords}
    attrs = base_attrs(
        cube_a,
        "equivalence",
        layer_a=layer_a,
        layer_b=layer_b,
        two_cubes=int(not same),
        transformation=int(ta),
        kind=kind,
        ridge=ridge,
        ridge_lambda=lam,
        test_size=float(test_size),
        seed=int(seed),
        n_train=int((~held).sum()),
        n_test=int(held.sum()),
    )
    return xr.Dataset(
        {
            "r2": ((), r2[0]),
            "r2_unit": ((out_dim,), r2_unit[0]),
            "map": ((out_dim, in_dim), maps[0]),
            "bias": ((out_dim,), bias[0]),
            "held_out": (("sample",), held),
        },
        coords=coords,
        attrs=attrs,
    )
