"""Training pairs for an interpretation flow, drawn from a cube.

Semantics: ``docs/flows.md`` ("Pairs from a cube"); the method is the one of Esser, Rombach &
Ommer (2020), "A Disentangling Invertible Interpretation Network for Explaining Latent
Representations", CVPR, arXiv:2004.13166.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .. import _progress
from .. import _validate as v
from .._provenance import cube_provenance, provenance
from .._schema import check_structure, select_layer

__all__ = ["pairs"]

_REFERENCE = "Esser, Rombach & Ommer (2020), arXiv:2004.13166"

RhoFunction = Callable[[str, Mapping[str, np.ndarray], Mapping[str, np.ndarray]], Any]


# -- validation ----------------------------------------------------------------------------------
def _along(cube: xr.DataArray, dim: str) -> list[str]:
    """Names of the non-index coordinates that lie along ``dim`` only."""
    return [str(k) for k, c in cube.coords.items() if c.dims == (dim,) and k != dim]


def _check_by(by: Any, cube: xr.DataArray) -> tuple[str, ...]:
    valid = ["sample", "transformation", *_along(cube, "sample"), *_along(cube, "transformation")]
    valid = [f for f in valid if f != "residual"]
    items = (by,) if isinstance(by, str) else by
    if not isinstance(items, Sequence) or isinstance(items, bytes) or len(items) == 0:
        raise ValueError(f"by must be a factor name or a non-empty sequence of them; got {by!r}")
    out = []
    for item in items:
        if not isinstance(item, str) or item not in valid:
            raise ValueError(
                f"by: unknown factor {item!r}; valid factors for this cube are {valid} "
                "('sample', 'transformation', or a coordinate along sample or transformation)"
            )
        if item in out:
            raise ValueError(f"by names the factor {item!r} twice")
        out.append(item)
    return tuple(out)


def _check_rho_number(rho: Any) -> float:
    value = v.finite_real(rho, "rho")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"rho must lie in [0, 1); got {rho!r}")
    return value


def _select_layer(cube: xr.DataArray, layer: Any) -> xr.DataArray:
    if layer is None:
        return cube
    _, where = select_layer(cube, layer, "layer")
    if where[-1] - where[0] + 1 == where.size:  # contiguous (always, for tmx cubes): a slice
        return cube.isel(unit=slice(int(where[0]), int(where[-1]) + 1))
    return cube.isel(unit=where)


# -- drawing -------------------------------------------------------------------------------------
def _codes(values: np.ndarray) -> np.ndarray:
    """Integer group codes of coordinate values; −1 for missing (NaN/None) values."""
    codes, _ = pd.factorize(pd.Series(np.asarray(values).reshape(-1)), use_na_sentinel=True)
    return np.asarray(codes, dtype=np.int64)


def _groups(codes: np.ndarray, min_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Members sorted by group, and each element's group start and size (0 if excluded)."""
    valid = codes >= 0
    sizes_by_code = np.bincount(codes[valid], minlength=max(int(codes.max(initial=-1)) + 1, 1))
    size = np.where(valid, sizes_by_code[np.where(valid, codes, 0)], 0)
    size = np.where(size >= min_size, size, 0)
    keep = np.flatnonzero(size > 0)
    members = keep[np.argsort(codes[keep], kind="stable")]
    starts_by_code = np.zeros_like(sizes_by_code)
    member_codes = codes[members]
    if members.size:
        first = np.r_[True, member_codes[1:] != member_codes[:-1]]
        starts_by_code[member_codes[first]] = np.flatnonzero(first)
    start = np.where(size > 0, starts_by_code[np.where(valid, codes, 0)], 0)
    return members, start, size


def _other(rng: np.random.Generator, first: np.ndarray, n: int) -> np.ndarray:
    """One index in range(n) different from each of ``first``, uniformly."""
    return (first + rng.integers(1, n, size=first.size)) % n


def _draw(
    factor: str,
    k: int,
    cube: xr.DataArray,
    codes: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n_s, n_t = cube.sizes["sample"], cube.sizes["transformation"]
    if factor == "sample":
        if n_t < 2 or n_s < 1:
            raise ValueError(
                "by: the factor 'sample' needs two different transformations of one sample; "
                f"the cube has {n_s} sample(s) and {n_t} transformation(s)"
            )
        s = rng.integers(n_s, size=k)
        t_a = rng.integers(n_t, size=k)
        return s, t_a, s, _other(rng, t_a, n_t)
    if n_s < 2 or n_t < 1:
        raise ValueError(
            f"by: the factor {factor!r} needs two different samples; the cube has {n_s} "
            f"sample(s) and {n_t} transformation(s)"
        )
    if factor == "transformation":
        t = rng.integers(n_t, size=k)
        s_a = rng.integers(n_s, size=k)
        return s_a, t, _other(rng, s_a, n_s), t
    if cube[factor].dims == ("sample",):
        # two different samples with equal values, one transformation
        members, start, size = _groups(codes[factor], 2)
        if members.size == 0:
            raise ValueError(
                f"by: the factor {factor!r} cannot be drawn: no two samples have equal values"
            )
        s_a = members[rng.integers(members.size, size=k)]
        rank = np.zeros(codes[factor].size, dtype=np.int64)
        rank[members] = np.arange(members.size)
        offset = rank[s_a] - start[s_a]  # position of s_a within its group
        step = (offset + rng.integers(1, size[s_a])) % size[s_a]
        s_b = members[start[s_a] + step]
        t = rng.integers(n_t, size=k)
        return s_a, t, s_b, t
    # a transformation coordinate: two different samples, transformations with equal values
    members, start, size = _groups(codes[factor], 1)
    if members.size == 0:
        raise ValueError(f"by: the factor {factor!r} cannot be drawn: all its values are missing")
    t_a = members[rng.integers(members.size, size=k)]
    t_b = members[start[t_a] + rng.integers(0, size[t_a])]
    s_a = rng.integers(n_s, size=k)
    return s_a, t_a, _other(rng, s_a, n_s), t_b


def _shares(
    factor: str,
    cube: xr.DataArray,
    codes: dict[str, np.ndarray],
    idx: dict[str, np.ndarray],
) -> np.ndarray:
    """Whether each pair shares ``factor``."""
    if factor == "sample":
        return idx["s_a"] == idx["s_b"]
    if factor == "transformation":
        return idx["t_a"] == idx["t_b"]
    key = "s" if cube[factor].dims == ("sample",) else "t"
    c = codes[factor]
    ca, cb = c[idx[f"{key}_a"]], c[idx[f"{key}_b"]]
    return (ca >= 0) & (ca == cb)


def _coord_values(cube: xr.DataArray, dim: str) -> np.ndarray:
    if dim in cube.coords:
        return np.asarray(cube[dim].values)
    return np.arange(cube.sizes[dim])


def _rho_from_function(
    fn: RhoFunction,
    factor: str,
    where: np.ndarray,
    side: dict[str, dict[str, np.ndarray]],
) -> np.ndarray:
    a = {name: values[where] for name, values in side["a"].items()}
    b = {name: values[where] for name, values in side["b"].items()}
    result = fn(factor, a, b)
    try:
        out = np.broadcast_to(np.asarray(result, dtype=np.float64), where.shape).copy()
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"rho({factor!r}, a, b) must return a number or one number per pair "
            f"({where.size}); {err}"
        ) from err
    bad = ~(np.isfinite(out) & (out >= 0) & (out < 1))
    if np.any(bad):
        raise ValueError(
            f"rho must lie in [0, 1); rho({factor!r}, a, b) returned {out[bad][:5].tolist()}"
        )
    return out


# -- the public function -------------------------------------------------------------------------
def pairs(
    cube: xr.DataArray,
    by: str | Sequence[str] = ("sample", "transformation"),
    *,
    layer: str | None = None,
    n: int = 10_000,
    rho: float | RhoFunction = 0.975,
    mark: str = "drawn",
    seed: int = 0,
    progress: bool | None = None,
) -> xr.Dataset:
    """Pairs of responses that share known factors, drawn from a cube, to train a flow on.

    For each factor in ``by``, ``n // len(by)`` pairs are drawn (the first ``n % len(by)``
    factors get one more), each pair a first member ``a`` and a second ``b``, rows
    (sample, transformation) of the cube:

    ``"sample"``
        the same sample, two different transformations (uniformly);
    ``"transformation"``
        two different samples, the same transformation;
    a coordinate along ``sample`` (``"label"``, ...)
        two different samples with equal values of it, the same transformation; sample ``a``
        is uniform among the samples whose value some other sample shares, ``b`` uniform among
        the others with that value;
    a coordinate along ``transformation`` (``"angle"``, ``"dx"``, ``"transform"``, ...)
        two different samples, and two transformations with equal values of it:
        transformation ``a`` uniform, ``b`` uniform among the transformations with the same
        value (it may be ``a`` itself). The pair shares that parameter and, by construction,
        nothing else, the way the IIN pairs a factor (with a pure rotation set, "angle" pairs
        are "transformation" pairs).

    Missing (NaN) coordinate values never count as equal. Pairs are then put in a seeded
    random order, so that factors are interleaved and any slice is a fair sample.

    ``rho`` is the correlation of the pair's factor blocks in the flow's latent space
    (Esser, Rombach & Ommer 2020, arXiv:2004.13166). ``mark="drawn"`` sets it only on the
    factor each pair was drawn for (the IIN); ``mark="shared"`` on every factor in ``by`` that
    the pair actually shares (a "sample" pair shares the label; a "label" pair shares the
    transformation; two samples may share a label by chance). The residual's ρ is always 0.

    Parameters
    ----------
    cube : xarray.DataArray
        A cube with dims (sample, transformation, unit): numpy-, dask- or Zarr-backed.
    by : str or sequence of str
        The factors, in the order of their latent blocks (after the residual).
    layer : str, optional
        Only the units whose ``layer`` coordinate is this; ``None``: every unit.
    n : int
        Number of pairs in all, at least ``len(by)``.
    rho : float or callable
        A number in [0, 1), or a function ``rho(factor, a, b)`` called once per factor in
        ``by`` with the pairs that get a ρ for that factor: ``a`` and ``b`` map ``"sample"``,
        ``"transformation"`` and every other coordinate along sample or transformation
        (``"label"``, ``"angle"``, ...) to arrays of the members' coordinate values, one per
        pair; it returns a number or an array of one ρ per pair, in [0, 1). For continuous
        factors, e.g. ``lambda f, a, b: 0.975 * np.cos(np.radians(a["angle"] - b["angle"]))
        ** 2``. Anything outside [0, 1) is a ``ValueError`` naming ``rho``.
    mark : {"drawn", "shared"}
        Which factors of a pair get ρ (see above).
    seed : int
        Seed of the ``numpy.random.Generator`` that draws the pairs: the same seed gives the
        same pairs.
    progress : bool or None, default None
        A bar over the factors in ``by``: one step per factor once its pairs are marked with
        their ρ (a ``rho`` function's calls included). Reading the members' values is not in
        it: from a dask-backed cube they are gathered lazily, and read when computed (e.g. by
        ``flows.fit``, whose own bar counts epochs). None: when run interactively (a
        terminal, not under pytest or CI).

    Returns
    -------
    xarray.Dataset
        ``a`` and ``b`` over (pair, unit), the cube's values (dtype kept): lazy gathers from
        the cube when it is dask-backed (Zarr cubes included) -- point-wise
        (``vindex``-style) reads that touch each cube chunk once per computation and keep only
        the rows needed, so the cube is never loaded whole. ``rho`` over (pair, factor),
        float64, with ``factor = ["residual", *by]``. Pair coordinates: ``sample_a``,
        ``transformation_a``, ``sample_b``, ``transformation_b`` (the cube's coordinate
        values, so ``cube.sel(sample=..., transformation=...)`` finds the row), ``drawn`` (the
        factor the pair was drawn for), and ``<name>_a``/``<name>_b`` for every other
        coordinate along sample or transformation (``label_a``, ``angle_b``, ...). The unit
        coordinates (``layer``, ``channel``, ``y``, ``x``) are carried over. ``attrs``:
        ``function`` = "flows.pairs", by, n, rho (the number, or ``"callable"``), mark, seed,
        layer, pairs per factor, reference, the cube's provenance (``cube_model_name``...) and
        ``tmx_version``.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from tmx import flows
    >>> cube = xr.DataArray(
    ...     np.random.default_rng(0).normal(size=(8, 3, 2)),
    ...     dims=("sample", "transformation", "unit"),
    ...     coords={"layer": ("unit", ["h", "h"])},
    ... )
    >>> pr = flows.pairs(cube, ("sample", "transformation"), n=10, seed=0)
    >>> dict(pr.sizes)
    {'pair': 10, 'unit': 2, 'factor': 3}
    >>> pr["rho"].values[:2]  # ρ on the factor each pair was drawn for
    array([[0.   , 0.975, 0.   ],
           [0.   , 0.   , 0.975]])
    >>> pr["drawn"].values[:2].tolist()
    ['sample', 'transformation']
    """
    cube = check_structure(cube, "cube", coords=())  # pairs need no unit coordinates
    by = _check_by(by, cube)
    n = v.positive_int(n, "n")
    if n < len(by):
        raise ValueError(f"n must be at least len(by) = {len(by)} (one pair per factor); got {n}")
    if callable(rho):
        rho_value: float | None = None
    else:
        rho_value = _check_rho_number(rho)
    mark = v.choice(mark, "mark", ("drawn", "shared"))
    seed = v.seed(seed)
    show = _progress.resolve(progress)
    cube = _select_layer(cube, layer)

    sample_coords = _along(cube, "sample")
    transformation_coords = _along(cube, "transformation")
    codes = {name: _codes(cube[name].values) for name in (*sample_coords, *transformation_coords)}

    rng = np.random.default_rng(seed)
    base, extra = divmod(n, len(by))
    counts = [base + (i < extra) for i in range(len(by))]
    drawn_parts, idx_parts = [], []
    for factor, k in zip(by, counts, strict=True):
        idx_parts.append(_draw(factor, k, cube, codes, rng))
        drawn_parts.append(np.full(k, factor, dtype=object))
    order = rng.permutation(n)
    idx = {
        key: np.concatenate([p[i] for p in idx_parts])[order].astype(np.int64)
        for i, key in enumerate(("s_a", "t_a", "s_b", "t_b"))
    }
    drawn = np.concatenate(drawn_parts)[order].astype(str)

    # ρ per pair and factor
    side: dict[str, dict[str, np.ndarray]] = {}
    for end in ("a", "b"):
        s, t = idx[f"s_{end}"], idx[f"t_{end}"]
        values = {
            "sample": _coord_values(cube, "sample")[s],
            "transformation": _coord_values(cube, "transformation")[t],
        }
        values.update({c: np.asarray(cube[c].values)[s] for c in sample_coords})
        values.update({c: np.asarray(cube[c].values)[t] for c in transformation_coords})
        side[end] = values
    rho_table = np.zeros((n, len(by) + 1), dtype=np.float64)
    with _progress.steps(len(by), show, "factor") as bar:
        for j, factor in enumerate(by, start=1):
            marked = drawn == factor
            if mark == "shared":
                marked = marked | _shares(factor, cube, codes, idx)
            where = np.flatnonzero(marked)
            if where.size and rho_value is not None:
                rho_table[where, j] = rho_value
            elif where.size and callable(rho):  # always, when rho_value is None
                rho_table[where, j] = _rho_from_function(rho, factor, where, side)
            bar.advance()

    # lazy point-wise gathers of the two members
    def gather(end: str) -> xr.Variable:
        picked = cube.variable.isel(
            sample=xr.Variable("pair", idx[f"s_{end}"]),
            transformation=xr.Variable("pair", idx[f"t_{end}"]),
        )
        return picked.transpose("pair", "unit")

    unit_coords = {
        k: ("unit", np.asarray(c.values)) for k, c in cube.coords.items() if c.dims == ("unit",)
    }

    pair_coords: dict[str, Any] = {"pair": np.arange(n)}
    for end in ("a", "b"):
        for name, column in side[end].items():
            pair_coords[f"{name}_{end}"] = ("pair", column)
    pair_coords["drawn"] = ("pair", drawn)

    attrs = provenance(
        "function",
        "flows.pairs",
        by=list(by),
        n=n,
        rho=rho_value if rho_value is not None else "callable",
        mark=mark,
        seed=seed,
        layer="all" if layer is None else layer,
        pairs_per_factor=counts,
        reference=_REFERENCE,
    )
    attrs.update(cube_provenance(cube.attrs))
    out = xr.Dataset(
        {
            "a": gather("a"),
            "b": gather("b"),
            "rho": (("pair", "factor"), rho_table),
        },
        coords={**unit_coords, **pair_coords, "factor": np.asarray(["residual", *by])},
        attrs=attrs,
    )
    return out
