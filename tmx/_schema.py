"""The cube contract, written once: dims, unit coordinates, validation, layers, responses.

A **cube** is an ``xr.DataArray`` with dims ``("sample", "transformation", "unit")`` (any
order; functions transpose to this one) and four plain coordinates along ``unit``: ``layer``
(str), ``channel``, ``y``, ``x`` (int64, −1 where a layer has no such axis; a dense layer's
features are channels). The units of one layer are contiguous, in the C order of the layer's
output without its batch axis: (C,), (L, C) with y = −1 and x = the position, or (H, W, C).
Layers appear in the order they were recorded, and "the layers of a cube" are listed in order
of first appearance.

**Responses** are the introspectors' view of a cube: dims ``("sample", "unit")`` with a
``layer`` coordinate (``as_responses``).

Everything in tmx that checks, builds or walks a cube does it through this module:
``tmx.activations`` and ``tmx.from_array`` build the unit coordinates with ``unit_coords``;
measures validate with ``check_cube``; flows, introspectors and figures list and select
layers with ``layers``, ``select_layers`` and ``select_layer``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from . import _validate
from ._provenance import attr_value
from ._validate import check_sizes, str_array
from ._version import __version__

__all__ = [
    "DIMS",
    "REQUIRED_COORDS",
    "RESPONSE_DIMS",
    "UNIT_COORDS",
    "as_responses",
    "check_cube",
    "check_structure",
    "from_array",
    "layer_array",
    "layer_positions",
    "layers",
    "loaded_coords",
    "select_layer",
    "select_layers",
    "unit_coords",
    "unit_index",
    "units_by_layer",
]

#: The dims of a cube, in the order functions transpose it to.
DIMS = ("sample", "transformation", "unit")
#: The dims of responses (``as_responses``).
RESPONSE_DIMS = ("sample", "unit")
#: The unit coordinates every unit of a cube has (plain, non-index, along ``unit``).
UNIT_COORDS = ("layer", "channel", "y", "x")
#: Coordinates every cube built by tmx has, with the dims they lie along.
REQUIRED_COORDS: dict[str, tuple[str, ...]] = {
    "sample": ("sample",),
    "transformation": ("transformation",),
    "unit": ("unit",),
    **{name: ("unit",) for name in UNIT_COORDS},
}

_SHAPES = "(N, T), (N, T, C), (N, T, L, C) or (N, T, H, W, C)"


# -- unit coordinates ---------------------------------------------------------------------------
def unit_coords(names: Sequence[str], shapes: Sequence[tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The ``layer``, ``channel``, ``y``, ``x`` coordinates of the units of several layers.

    Units of one layer are contiguous, in the layer's (y, x, channel) order (C order of an NHWC
    output). A rank-1 output (C,) has y = x = −1; a rank-2 output (L, C) (a sequence) has
    y = −1 and x = position; a rank-3 output (H, W, C) has all four.

    Examples
    --------
    >>> from tmx.cube import unit_coords
    >>> coords = unit_coords(["conv", "dense"], [(1, 2, 2), (3,)])
    >>> {k: c.tolist() for k, c in coords.items()}  # doctest: +NORMALIZE_WHITESPACE
    {'layer': ['conv', 'conv', 'conv', 'conv', 'dense', 'dense', 'dense'],
     'channel': [0, 1, 0, 1, 0, 1, 2], 'y': [0, 0, 0, 0, -1, -1, -1], 'x': [0, 0, 1, 1, -1, -1, -1]}
    """
    layer, channel, ys, xs = [], [], [], []
    for name, shape in zip(names, shapes, strict=True):
        shape = tuple(int(s) for s in shape)
        if len(shape) == 1:
            (c,) = shape
            yy, xx, cc = np.full(c, -1), np.full(c, -1), np.arange(c)
        elif len(shape) == 2:
            n, c = shape
            xx, cc = np.repeat(np.arange(n), c), np.tile(np.arange(c), n)
            yy = np.full(n * c, -1)
        elif len(shape) == 3:
            h, w, c = shape
            yy, xx, cc = (
                a.reshape(-1)
                for a in np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
            )
        else:
            raise ValueError(
                f"layers: output of {name!r} has shape {shape} (without batch); only (C,), "
                "(L, C) and (H, W, C) outputs can be recorded"
            )
        layer.append(np.full(len(cc), name, dtype=object))
        channel.append(cc)
        ys.append(yy)
        xs.append(xx)
    return {
        "layer": np.concatenate(layer).astype(str),
        "channel": np.concatenate(channel).astype(np.int64),
        "y": np.concatenate(ys).astype(np.int64),
        "x": np.concatenate(xs).astype(np.int64),
    }


# -- validation ---------------------------------------------------------------------------------
def check_structure(
    cube: Any, name: str = "cube", *, coords: Sequence[str] = UNIT_COORDS
) -> xr.DataArray:
    """A cube's structure: an ``xr.DataArray`` with dims (sample, transformation, unit) in any
    order, the coordinates ``coords`` along ``unit`` (default the four unit coordinates; ``()``
    for functions that need none), a real dtype. Returns it transposed to ``DIMS``.

    Each failure is a ``ValueError`` naming ``name`` and saying what was expected.
    """
    if not isinstance(cube, xr.DataArray):
        raise ValueError(
            f"{name} must be an xr.DataArray with dims {DIMS} (see tmx.activations); got "
            f"{type(cube).__name__}"
        )
    if set(cube.dims) != set(DIMS):
        raise ValueError(f"{name} must have dims exactly {DIMS}; got {cube.dims}")
    missing = [c for c in coords if c not in cube.coords]
    if missing:
        raise ValueError(
            f"{name} lacks the unit coordinates {missing}: every unit needs layer, channel, y, x "
            "(−1 where a layer has no such axis), as tmx.activations provides"
        )
    for c in coords:
        if cube[c].dims != ("unit",):
            raise ValueError(f"{name}: coordinate {c!r} must lie along 'unit'; got {cube[c].dims}")
    if cube.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be numeric; got dtype {cube.dtype}")
    return cube.transpose(*DIMS)


def check_cube(
    cube: Any,
    name: str = "cube",
    *,
    measure: str,
    min_samples: int = 2,
    min_transformations: int = 1,
    need: str | Mapping[str, str] = "",
) -> xr.DataArray:
    """Validate a cube: an ``xr.DataArray`` with dims (sample, transformation, unit) (any order)
    and the unit coordinates ``layer``, ``channel``, ``y``, ``x``. Returns it transposed.

    ``measure`` names the public function in the errors. Every measure needs at least
    ``min_samples`` samples (default 2: one sample has no spread and nothing to compare),
    ``min_transformations`` transformations (2 where the measure compares transformations;
    ``need`` says why: one reason, or one per "samples" / "transformations") and one unit;
    each shortfall is a ``ValueError`` such as "cube: normalized_variance needs at least 2
    samples; got N = 1".
    """
    cube = check_structure(cube, name)
    check_sizes(
        name,
        measure,
        samples=(cube.sizes["sample"], min_samples),
        transformations=(cube.sizes["transformation"], min_transformations),
        units=(cube.sizes["unit"], 1),
        need=need,
    )
    return cube


# -- layers -------------------------------------------------------------------------------------
def layer_array(obj: xr.DataArray | xr.Dataset, name: str = "cube") -> np.ndarray:
    """The ``layer`` coordinate as a numpy array of ``<U`` strings, read once (a dask-backed
    coordinate, as ``xr.open_zarr`` gives, is computed; NumPy 2's ``StringDType`` and object
    arrays are converted). A ``ValueError`` names ``name`` when there is no ``layer``
    coordinate along ``unit``."""
    coord = obj.coords.get("layer") if hasattr(obj, "coords") else None
    if coord is None or coord.dims != ("unit",):
        raise ValueError(f"{name} has no 'layer' coordinate along 'unit'")
    return str_array(coord.values)


def _first_appearance(names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique names in order of first appearance, and each name's code in that order."""
    unique, first, inverse = np.unique(names, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return unique[order], rank[np.asarray(inverse).reshape(-1)]


def layers(obj: xr.DataArray | xr.Dataset, name: str = "cube") -> list[str]:
    """The layer names of a cube, responses or per-unit result, in order of first appearance.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from tmx import _schema
    >>> r = xr.DataArray(np.zeros((2, 3)), dims=("sample", "unit"),
    ...                  coords={"layer": ("unit", ["b", "a", "b"])})
    >>> _schema.layers(r)
    ['b', 'a']
    """
    names = layer_array(obj, name)
    if names.size == 0:
        return []
    return [str(s) for s in _first_appearance(names)[0]]


def units_by_layer(obj: xr.DataArray | xr.Dataset, name: str = "cube") -> dict[str, np.ndarray]:
    """Each layer's unit positions (int64, increasing), layers in order of first appearance."""
    names = layer_array(obj, name)
    if names.size == 0:
        return {}
    unique, codes = _first_appearance(names)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(unique.size + 1))
    return {
        str(layer): order[bounds[i] : bounds[i + 1]].astype(np.int64)
        for i, layer in enumerate(unique)
    }


def layer_positions(obj: xr.DataArray | xr.Dataset, layer: str) -> np.ndarray:
    """The integer positions of one layer's units."""
    return np.flatnonzero(layer_array(obj) == layer)


def unit_index(positions: np.ndarray) -> slice | np.ndarray:
    """A slice when the unit positions are contiguous (a view, no copy), else the positions."""
    positions = np.asarray(positions)
    if positions.size and np.array_equal(
        positions, np.arange(positions[0], positions[0] + positions.size)
    ):
        return slice(int(positions[0]), int(positions[0]) + positions.size)
    return positions


def select_layers(
    obj: xr.DataArray | xr.Dataset, chosen: Any, *, source: str = "the responses"
) -> list[str]:
    """The layers to analyse: every layer in order of first appearance (``chosen`` None), or
    ``chosen`` (a name or a list of names, each a layer of ``obj``; at least one).

    A ``ValueError`` lists the unknown names and the layers ``source`` has."""
    all_layers = layers(obj)
    if chosen is None:
        return all_layers
    picked = _validate.names(chosen)
    unknown = [layer for layer in picked if layer not in all_layers]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; {source} have {all_layers}")
    if not picked:
        raise ValueError("layers must name at least one layer")
    return picked


def select_layer(
    obj: xr.DataArray | xr.Dataset, layer: Any, name: str = "layer", *, source: str = "cube"
) -> tuple[str, np.ndarray]:
    """One layer and its unit positions. ``layer`` None picks the only layer of ``obj``.

    A ``ValueError`` names ``name`` and lists the layers of ``source``: "layer: unknown layer
    'fc'; layers: ['conv', 'dense']"."""
    names = layer_array(obj, source)
    valid = layers(obj, source)
    if layer is None:
        if len(valid) != 1:
            raise ValueError(f"{name} must name one of the layers of {source}: {valid}")
        layer = valid[0]
    if not isinstance(layer, str) or layer not in valid:
        raise ValueError(f"{name}: unknown layer {layer!r}; layers: {valid}")
    return layer, np.flatnonzero(names == layer)


# -- responses ----------------------------------------------------------------------------------
def as_responses(data: Any, *, transformation: Any = None, name: str = "responses") -> xr.DataArray:
    """Responses with dims ``(sample, unit)`` and a ``layer`` coordinate on ``unit``.

    ``data`` is a DataArray with dims (sample, unit), or a cube (sample, transformation, unit):
    ``transformation=None`` needs T = 1 (it is dropped); an int selects that transformation;
    ``"stack"`` stacks sample × transformation into one ``sample`` dim (coordinates
    ``source_sample`` and ``source_transformation`` say where each row came from). Lazy data
    stays lazy. A DataArray without a ``layer`` coordinate is treated as one layer "responses".

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from tmx import introspect
    >>> values = np.arange(12.0).reshape(2, 3, 2)
    >>> cube = xr.DataArray(values, dims=("sample", "transformation", "unit"))
    >>> r = introspect.as_responses(cube, transformation="stack")
    >>> r.dims, r.shape
    (('sample', 'unit'), (6, 2))
    >>> r["source_sample"].values, r["source_transformation"].values
    (array([0, 0, 0, 1, 1, 1]), array([0, 1, 2, 0, 1, 2]))
    """
    if not isinstance(data, xr.DataArray):
        raise ValueError(
            f"{name} must be an xr.DataArray with dims (sample, unit) or a cube (sample, "
            f"transformation, unit); got {type(data).__name__}"
        )
    dims = set(data.dims)
    if dims == set(DIMS):
        t = data.sizes["transformation"]
        if transformation is None:
            if t != 1:
                raise ValueError(
                    f"{name} has T = {t} transformations: pass transformation=<index> to use one "
                    'of them, or transformation="stack" to use every (sample, transformation) row'
                )
            data = data.isel(transformation=0, drop=True)
        elif isinstance(transformation, str) and transformation == "stack":
            data = data.transpose(*DIMS)
            n = data.sizes["sample"]
            src_s = np.repeat(np.arange(n), t)
            src_t = np.tile(np.arange(t), n)
            keep = {k: c.variable for k, c in data.coords.items() if c.dims == ("unit",)}
            values = data.data.reshape(n * t, data.sizes["unit"])
            data = xr.DataArray(
                values,
                dims=RESPONSE_DIMS,
                coords={
                    **keep,
                    "sample": np.arange(n * t),
                    "source_sample": ("sample", src_s),
                    "source_transformation": ("sample", src_t),
                },
                name=data.name,
                attrs=data.attrs,
            )
        elif isinstance(transformation, int | np.integer) and not isinstance(transformation, bool):
            if not -t <= transformation < t:
                raise ValueError(f"transformation={transformation} is out of range for T = {t}")
            data = data.isel(transformation=int(transformation), drop=True)
        else:
            raise ValueError(
                f'transformation must be None, an int or "stack"; got {transformation!r}'
            )
    elif dims != set(RESPONSE_DIMS):
        raise ValueError(
            f"{name} must have dims (sample, unit) or (sample, transformation, unit); "
            f"got {data.dims}"
        )
    data = data.transpose(*RESPONSE_DIMS)
    if "layer" not in data.coords:
        data = data.assign_coords(layer=("unit", np.full(data.sizes["unit"], "responses")))
    return loaded_coords(data)


def loaded_coords(data: xr.DataArray) -> xr.DataArray:
    """``data`` with its dask-backed coordinates (``DataArray.chunk`` and ``xr.open_zarr``
    make every coordinate lazy) read into memory in one compute, the values left as they are:
    the labels are small and read many times, each read a dask compute otherwise."""
    lazy = [k for k, c in data.coords.items() if isinstance(c.variable._data, da.Array)]
    if not lazy:
        return data
    values = dask.compute(*[data.coords[k].data for k in lazy])
    return data.assign_coords(
        {
            k: (data.coords[k].dims, v, data.coords[k].attrs)
            for k, v in zip(lazy, values, strict=True)
        }
    )


# -- a cube from arrays -------------------------------------------------------------------------
def _layer_array(key: Any, value: Any) -> np.ndarray | da.Array:
    if not isinstance(key, str) or not key:
        raise ValueError(f"arrays: every key must be a layer name (a non-empty str); got {key!r}")
    if isinstance(value, xr.DataArray):
        value = value.data
    arr = value if isinstance(value, da.Array) else np.asarray(value)
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"arrays[{key!r}] must be numeric; got dtype {arr.dtype}")
    if not 2 <= arr.ndim <= 5:
        raise ValueError(
            f"arrays[{key!r}] has shape {tuple(arr.shape)}; expected {_SHAPES} (samples, "
            "transformations, then the layer's output without its batch axis)"
        )
    if any(int(s) == 0 for s in arr.shape[2:]):
        raise ValueError(
            f"arrays[{key!r}] has shape {tuple(arr.shape)}: a layer needs at least one unit"
        )
    return arr


def _dim_coords(
    value: Any, dim: str, size: int, coords: dict[str, Any], attrs: dict[str, Any]
) -> None:
    """Coordinates along ``dim`` from ``from_array``'s ``sample``/``transformation``."""
    if value is None:
        return
    params = getattr(value, "parameters", None)
    if dim == "transformation" and isinstance(params, xr.Dataset) and hasattr(value, "to_json"):
        # a TransformationSet: its parameter coordinates and provenance, as tmx.activations
        if len(value) != size:
            raise ValueError(
                f"transformation holds {len(value)} transformations; the arrays have T = {size}"
            )
        for cname in params.coords:
            if cname != "transformation":
                coords[str(cname)] = xr.Variable(dim, params[cname].values, params[cname].attrs)
        attrs["transforms"] = value.to_json()
        attrs["transforms_description"] = value.description
        return
    if not isinstance(value, Mapping):
        value = {dim: value}
    for cname, values in value.items():
        if (
            not isinstance(cname, str)
            or cname in ("unit", *UNIT_COORDS)
            or (cname in DIMS and cname != dim)
        ):
            raise ValueError(f"{dim}: {cname!r} cannot name a coordinate along {dim!r}")
        if cname != dim and cname in coords:
            raise ValueError(f"{dim}: {cname!r} already names a coordinate along another dim")
        arr = np.asarray(values)
        if arr.shape != (size,):
            raise ValueError(
                f"{dim}[{cname!r}] must hold one value per {dim} ({size}); got shape {arr.shape}"
                if cname != dim
                else f"{dim} must hold one value per {dim} ({size}); got shape {arr.shape}"
            )
        coords[cname] = (dim, arr)


def from_array(
    arrays: Mapping[str, Any],
    *,
    sample: Any = None,
    transformation: Any = None,
    attrs: Mapping[str, Any] | None = None,
) -> xr.DataArray:
    """A cube from activations you already have: one (N, T, *unit_shape) array per layer.

    The units of each layer are flattened in the cube's order, the C order of the layer's
    output (y, x, channel), exactly as ``tmx.activations`` records them, with the same unit
    coordinates (``layer``, ``channel``, ``y``, ``x``; −1 where a layer has no such axis):

    - ``(N, T)``: one unit (channel 0);
    - ``(N, T, C)``: a dense layer, C channels;
    - ``(N, T, L, C)``: a sequence, y = −1 and x = the position;
    - ``(N, T, H, W, C)``: feature maps (channels last).

    Parameters
    ----------
    arrays : mapping of str to array
        Layer name → its activations, numpy or dask; layers in the cube's order (the mapping's).
        Every layer has the same N samples and T transformations.
    sample : array or mapping, optional
        The ``sample`` coordinate (N values; default ``0..N−1``), or a mapping of coordinate
        names to N values each (``{"label": y}``; a ``"sample"`` key sets the index).
    transformation : array, mapping or TransformationSet, optional
        The ``transformation`` coordinate or coordinates along it, as ``sample``; or the
        ``TransformationSet`` the activations were taken under: its parameter coordinates
        (``transform``, ``angle``…) and its ``transforms`` attrs, as ``tmx.activations`` records.
    attrs : mapping, optional
        Extra attrs (provenance such as ``model_name``), over ``tmx_version`` and ``layers``,
        stored in the one attr encoding of results (booleans 0/1, None ``"None"``).

    Returns
    -------
    xr.DataArray
        ``activation``, dims ``(sample, transformation, unit)``, in the inputs' common dtype;
        dask-backed when any input is a dask array (nothing is computed), numpy-backed
        otherwise.

    Raises
    ------
    ValueError
        For an empty or non-mapping ``arrays``, a layer whose shape is none of the above or
        whose N or T differ from the first layer's (the message names the layer and the
        expected shape), a non-numeric array, or coordinates of the wrong length.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> rng = np.random.default_rng(0)
    >>> conv = rng.normal(size=(5, 3, 2, 2, 4))       # N=5, T=3, 2 × 2 positions × 4 channels
    >>> dense = rng.normal(size=(5, 3, 10))
    >>> cube = tmx.from_array({"conv1": conv, "dense": dense}, sample={"label": [0, 1, 0, 1, 1]})
    >>> dict(cube.sizes)
    {'sample': 5, 'transformation': 3, 'unit': 26}
    >>> cube.layer.values[[0, 15, 16]].tolist(), cube.channel.values[:5].tolist()
    (['conv1', 'conv1', 'dense'], [0, 1, 2, 3, 0])
    >>> bool(np.array_equal(cube.sel(unit=cube.layer == "conv1")[:, :, 4:8], conv[:, :, 0, 1]))
    True
    >>> nv = tmx.normalized_variance(cube)                # any measure takes it
    >>> nv.sizes["unit"], str(nv["layer"].values[-1])
    (26, 'dense')
    """
    if not isinstance(arrays, Mapping):
        raise ValueError(
            "arrays must be a mapping of layer names to (N, T, *unit_shape) arrays, e.g. "
            f'{{"conv1": a1, "dense": a2}}; got {type(arrays).__name__}'
        )
    if not arrays:
        raise ValueError("arrays must hold at least one layer")
    layer_arrays = {key: _layer_array(key, value) for key, value in arrays.items()}
    first, ref = next(iter(layer_arrays.items()))
    n, t = (int(s) for s in ref.shape[:2])  # N = 0 or T = 0 is a cube; measures name it
    for key, arr in layer_arrays.items():
        if tuple(int(s) for s in arr.shape[:2]) != (n, t):
            raise ValueError(
                f"arrays[{key!r}] has shape {tuple(arr.shape)}; expected (N={n}, T={t}, ...) as "
                f"arrays[{first!r}]: every layer has the same samples and transformations"
            )
    names = list(layer_arrays)
    shapes = [tuple(int(s) for s in a.shape[2:]) or (1,) for a in layer_arrays.values()]
    units = unit_coords(names, shapes)
    flat = [
        a.reshape(n, t, math.prod(shape))
        for a, shape in zip(layer_arrays.values(), shapes, strict=True)
    ]
    dtype = np.result_type(*(a.dtype for a in flat))
    lazy = [a for a in flat if isinstance(a, da.Array)]
    if lazy:
        # every layer in the first dask layer's sample and transformation blocks
        blocks = (lazy[0].chunks[0], lazy[0].chunks[1], -1)
        parts = [
            (
                a.rechunk({0: blocks[0], 1: blocks[1]})
                if isinstance(a, da.Array)
                else da.from_array(a, chunks=blocks)
            ).astype(dtype)
            for a in flat
        ]
        data: Any = parts[0] if len(parts) == 1 else da.concatenate(parts, axis=2)
    else:
        data = np.concatenate([np.asarray(a, dtype=dtype) for a in flat], axis=2)
    size = int(data.shape[2])
    coords: dict[str, Any] = {
        "sample": ("sample", np.arange(n)),
        "transformation": ("transformation", np.arange(t)),
        "unit": ("unit", np.arange(size)),
    }
    cube_attrs: dict[str, Any] = {"tmx_version": __version__, "layers": names}
    _dim_coords(sample, "sample", n, coords, cube_attrs)
    _dim_coords(transformation, "transformation", t, coords, cube_attrs)
    for cname in UNIT_COORDS:
        coords[cname] = ("unit", units[cname])
    if attrs is not None:
        if not isinstance(attrs, Mapping):
            raise ValueError(f"attrs must be a mapping; got {type(attrs).__name__}")
        cube_attrs.update({str(k): attr_value(val) for k, val in attrs.items()})
    return xr.DataArray(data, dims=DIMS, coords=coords, name="activation", attrs=cube_attrs)
