"""A table of a model's layers."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import xarray as xr

from .._graph import (
    by_path,
    call_sites,
    is_input_layer,
    model_graph,
    walk_layers,
)
from .._provenance import provenance
from .layers import load_model


def _count_params(layer: Any) -> int:
    try:
        return int(layer.count_params())
    except Exception:
        return -1


def _shape_row(shapes: list[list[tuple]]) -> tuple[str, int, int, bool]:
    """(output_shape, units, channels, spatial) from the output shapes of each call."""
    if not shapes or any(len(s) != 1 for s in shapes):
        return ("multiple" if shapes else "unknown"), -1, -1, False
    if len({s[0] for s in shapes}) != 1:
        return "multiple", -1, -1, False
    shape = shapes[0][0]
    units = -1 if any(d is None for d in shape) else int(np.prod(shape, dtype=np.int64))
    channels = shape[-1] if shape and shape[-1] is not None else -1
    return str(shape), units, int(channels), len(shape) >= 3


def structure(model: Any, *, safe_mode: bool = True) -> xr.Dataset:
    """A table of the model's layers, one row per layer, as an ``xarray.Dataset``.

    Rows run over a dimension ``layer`` whose coordinate is the layer names, in graph order,
    depth first: a nested sub-model's row is followed by the rows of its layers, named
    ``"outer/inner"``. ``InputLayer`` and ``keras.ops`` calls get no row.

    Variables
    ---------
    class_name : str
        The layer's class name.
    output_shape : str
        The output shape without the batch axis, e.g. ``"(14, 14, 8)"``; ``"multiple"`` for a
        layer with several outputs (or whose calls give different shapes), ``"unknown"`` when
        it cannot be known (subclassed models).
    units : int
        The number of units, the product of the output shape; -1 if unknown.
    channels : int
        The size of the last axis; -1 if unknown.
    spatial : bool
        Whether the output has rank 3 or more without batch (``(H, W, C)``, volumes...).
        Sequences ``(L, C)`` are not spatial.
    calls : int
        How many times the layer is called in the model (see the module docstring for nested
        layers); -1 when unknown (subclassed models).
    params : int
        ``layer.count_params()`` (-1 for an unbuilt layer).

    The attrs hold ``function`` ("inspect.structure"), ``model`` (its name) and
    ``tmx_version``.

    Parameters
    ----------
    model : keras.Model or str or os.PathLike
        The model (or a ``.keras`` path). A subclassed model's rows come from walking
        ``model.layers``, with unknown shapes and calls.
    safe_mode : bool, default True
        Used when ``model`` is a path; see ``load_model``.

    Examples
    --------
    >>> import keras, tmx
    >>> model = keras.Sequential(
    ...     [keras.Input((4, 4, 1), name="x"), keras.layers.Conv2D(2, 3, name="c"),
    ...      keras.layers.Flatten(name="f"), keras.layers.Dense(3, name="d")], name="tiny")
    >>> table = tmx.inspect.structure(model)
    >>> table["class_name"].values.tolist(), table["output_shape"].values.tolist()
    (['Conv2D', 'Flatten', 'Dense'], ['(2, 2, 2)', '(8,)', '(3,)'])
    >>> table["units"].values.tolist(), table["params"].values.tolist()
    ([8, 8, 3], [20, 0, 27])
    """
    model = load_model(model, safe_mode=safe_mode)
    graph = model_graph(model)
    rows: list[tuple] = []
    if graph is None:
        for path, layer in walk_layers(model):
            if is_input_layer(layer):
                continue
            rows.append(
                (
                    "/".join(path),
                    type(layer).__name__,
                    "unknown",
                    -1,
                    -1,
                    False,
                    -1,
                    _count_params(layer),
                )
            )
    else:
        for path, calls in by_path(call_sites(graph)).items():
            op = calls[0].op
            if not isinstance(op, keras.Layer) or is_input_layer(op):
                continue
            shapes = [[tuple(t.shape[1:]) for t in s.node.outputs] for s in calls]
            shape, units, channels, spatial = _shape_row(shapes)
            rows.append(
                (
                    "/".join(path),
                    type(op).__name__,
                    shape,
                    units,
                    channels,
                    spatial,
                    len(calls),
                    _count_params(op),
                )
            )
    columns = list(zip(*rows, strict=True)) if rows else [()] * 8
    names = [
        "layer",
        "class_name",
        "output_shape",
        "units",
        "channels",
        "spatial",
        "calls",
        "params",
    ]
    data = dict(zip(names, columns, strict=True))
    dtypes = {
        "units": np.int64,
        "channels": np.int64,
        "spatial": bool,
        "calls": np.int64,
        "params": np.int64,
    }
    variables = {k: ("layer", np.asarray(data[k], dtype=dtypes.get(k, object))) for k in names[1:]}
    for k in ("class_name", "output_shape"):
        variables[k] = ("layer", np.asarray(data[k], dtype=str))
    return xr.Dataset(
        variables,
        coords={"layer": np.asarray(data["layer"], dtype=str)},
        attrs=provenance("function", "inspect.structure", model=model.name),
    )
