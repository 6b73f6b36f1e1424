"""Inputs of the introspectors: responses (sample, unit) from a cube or any labeled array."""

from __future__ import annotations

import itertools
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from .. import _validate
from .._validate import str_array


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
    if dims == {"sample", "transformation", "unit"}:
        t = data.sizes["transformation"]
        if transformation is None:
            if t != 1:
                raise ValueError(
                    f"{name} has T = {t} transformations: pass transformation=<index> to use one "
                    'of them, or transformation="stack" to use every (sample, transformation) row'
                )
            data = data.isel(transformation=0, drop=True)
        elif isinstance(transformation, str) and transformation == "stack":
            data = data.transpose("sample", "transformation", "unit")
            n = data.sizes["sample"]
            src_s = np.repeat(np.arange(n), t)
            src_t = np.tile(np.arange(t), n)
            keep = {k: c.variable for k, c in data.coords.items() if c.dims == ("unit",)}
            values = data.data.reshape(n * t, data.sizes["unit"])
            data = xr.DataArray(
                values,
                dims=("sample", "unit"),
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
    elif dims != {"sample", "unit"}:
        raise ValueError(
            f"{name} must have dims (sample, unit) or (sample, transformation, unit); "
            f"got {data.dims}"
        )
    data = data.transpose("sample", "unit")
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


def layers_of(responses: xr.DataArray) -> list[str]:
    """Layer names in order of first appearance."""
    return list(dict.fromkeys(str_array(responses["layer"].values).tolist()))


def layer_positions(responses: xr.DataArray, layer: str) -> np.ndarray:
    """Integer positions of a layer's units."""
    return np.flatnonzero(str_array(responses["layer"].values) == layer)


def sample_slices(data: Any, block: int = 4096) -> list[slice]:
    """Slices over the sample axis to stream: a dask array's own sample chunks, otherwise
    blocks of ``block`` rows."""
    n = int(data.shape[0])
    if isinstance(getattr(data, "chunks", None), tuple) and not isinstance(data, np.ndarray):
        bounds = np.cumsum((0, *data.chunks[0]))
    else:
        bounds = np.append(np.arange(0, n, block), n)
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]


def unit_index(positions: np.ndarray) -> slice | np.ndarray:
    """A slice when the unit positions are contiguous (a view, no copy), else the positions."""
    positions = np.asarray(positions)
    if positions.size and np.array_equal(
        positions, np.arange(positions[0], positions[0] + positions.size)
    ):
        return slice(int(positions[0]), int(positions[0]) + positions.size)
    return positions


def select_layers(responses: xr.DataArray, layers: Any) -> list[str]:
    """The layers to analyse: every layer in order of first appearance, or ``layers``
    (checked against the responses' layers; at least one)."""
    all_layers = layers_of(responses)
    if layers is None:
        return all_layers
    chosen = _validate.names(layers)
    unknown = [layer for layer in chosen if layer not in all_layers]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; the responses have {all_layers}")
    if not chosen:
        raise ValueError("layers must name at least one layer")
    return chosen


def load_block(
    data: Any,
    columns: slice | np.ndarray,
    rows: slice | np.ndarray = slice(None),
    *,
    keep_float32: bool = False,
) -> np.ndarray:
    """A C-contiguous numpy block of ``data[rows, columns]`` (computed when dask-backed), in
    float64, or float32 kept as is with ``keep_float32`` (as scikit-learn keeps it).

    Unit positions that are contiguous are read as a slice (a view, no gather)."""
    if isinstance(columns, np.ndarray):
        columns = unit_index(columns)
    block = data[rows, columns]
    if hasattr(block, "compute") and not isinstance(block, np.ndarray):
        block = block.compute()
    block = np.asarray(block)
    dtype = np.float32 if keep_float32 and block.dtype == np.float32 else np.float64
    return np.ascontiguousarray(block, dtype=dtype)
