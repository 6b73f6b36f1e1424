"""Endpoint descriptors resolved to tensors of a model's graph."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import keras
import numpy as np
from keras import tree

from .._graph import (
    by_path,
    call_sites,
    is_input_layer,
    lookup_model,
    model_graph,
    nodes_by_op,
    output_op_names,
    require_model,
    subclassed_input,
    trace_subclassed,
)
from .._validate import _describe, choice
from .layers import _names_hint, load_model

_LINKS: tuple[Literal["output", "input"], ...] = ("output", "input")


_DICT_KEYS = frozenset({"name", "layer", "link", "call", "index"})


@dataclass(frozen=True)
class Endpoint:
    """One resolved tensor of a model's graph.

    Attributes
    ----------
    name : str
        A unique, readable label, used as the ``layer`` coordinate of an activation cube: the
        layer name (``"outer/inner"`` for a layer of a nested sub-model), then ``"#k"`` for call
        ``k > 0`` of a shared layer, then ``":input"`` for an input link. A tensor ``index > 0``
        adds ``"[index]"`` (``"add:input[1]"``, ``"split:output[1]"``).
    layer : keras.Layer or keras.Operation
        The layer object (an ``Operation`` for a ``keras.ops`` call in a functional graph).
    link : {"output", "input"}
        Whether the endpoint is the layer's output or its input.
    call : int
        Which call of the layer (0 unless the layer is shared).
    path : tuple of str
        Layer names from the top-level model down to the layer.
    shape : tuple of int
        The tensor's shape without the batch axis (``None`` for a dimension the graph leaves
        unknown).
    index : int
        Which of the layer's input (or output) tensors, 0 for the first.

    Examples
    --------
    >>> import keras, tmx
    >>> model = keras.Sequential(
    ...     [keras.Input((4, 4, 1), name="x"), keras.layers.Conv2D(2, 3, name="c"),
    ...      keras.layers.Flatten(name="f"), keras.layers.Dense(3, name="d")], name="tiny")
    >>> [endpoint] = tmx.inspect.resolve(model, "c")
    >>> endpoint.name, endpoint.link, endpoint.call, endpoint.path, endpoint.shape
    ('c', 'output', 0, ('c',), (2, 2, 2))
    """

    name: str
    layer: Any
    link: Literal["output", "input"]
    call: int
    path: tuple[str, ...]
    shape: tuple[int | None, ...]
    index: int = 0


def _nonneg_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative int; got {_describe(value)}")
    return int(value)


def _path_of(model: keras.Model, groups: dict, desc: Any) -> tuple[str, ...]:
    """The path of the layer a (non-dict) descriptor names."""
    paths = list(groups)
    path_set = set(paths)
    names = ["/".join(p) for p in paths]
    if isinstance(desc, bool):
        raise ValueError(f"endpoint must not be a bool; got {desc!r}")
    if isinstance(desc, numbers.Integral):
        top = model.layers
        position = int(desc)
        if not -len(top) <= position < len(top):
            raise ValueError(
                f"endpoint index {desc} is out of range: the model has {len(top)} top-level "
                f"layers (valid indices {-len(top)}..{len(top) - 1})"
            )
        return (top[position].name,)
    if isinstance(desc, str):
        if "/" in desc:
            path = tuple(desc.split("/"))
            if path in path_set:
                return path
        elif (desc,) in path_set:
            return (desc,)
        else:
            matches = [p for p in paths if p[-1] == desc]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise ValueError(
                    f"endpoint {desc!r} is ambiguous: layers of that name are at "
                    f"{', '.join('/'.join(p) for p in matches)}; pass one of these paths"
                )
        raise ValueError(f"endpoint: no layer named {desc!r} in model; {_names_hint(names, desc)}")
    if isinstance(desc, keras.Operation):
        matches = [p for p, calls in groups.items() if calls[0].op is desc]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ValueError(
                f"endpoint: layer {desc.name!r} appears at several places "
                f"({', '.join('/'.join(p) for p in matches)}); pass one of these paths"
            )
        raise ValueError(
            f"endpoint: layer {desc.name!r} is not part of the graph of model {model.name!r}; "
            f"{_names_hint(names, desc.name)}"
        )
    if isinstance(desc, tuple):
        if not desc:
            raise ValueError("endpoint path must not be an empty tuple")
        level_model: Any = model
        steps: list[str] = []
        for item in desc:
            level_graph = model_graph(level_model) if isinstance(level_model, keras.Model) else None
            if level_graph is None:
                raise ValueError(
                    f"endpoint path {desc!r}: {'/'.join(steps) or model.name!r} is not a "
                    "functional or Sequential model, so it has no layers to step into"
                )
            ops = {op.name: op for op in level_graph.operations}
            if isinstance(item, bool):
                raise ValueError(f"endpoint path {desc!r}: items must not be bools")
            if isinstance(item, numbers.Integral):
                top = level_model.layers
                position = int(item)
                if not -len(top) <= position < len(top):
                    raise ValueError(
                        f"endpoint path {desc!r}: index {item} is out of range for the "
                        f"{len(top)} layers of {level_model.name!r}"
                    )
                op = top[position]
            elif isinstance(item, str):
                op = ops.get(item)
                if op is None:
                    level_names = list(ops)
                    raise ValueError(
                        f"endpoint path {desc!r}: no layer named {item!r} in "
                        f"{level_model.name!r}; {_names_hint(level_names, item)}"
                    )
            elif isinstance(item, keras.Operation):
                op = item
                if ops.get(op.name) is not op:
                    raise ValueError(
                        f"endpoint path {desc!r}: layer {op.name!r} is not part of "
                        f"{level_model.name!r}"
                    )
            else:
                raise ValueError(
                    f"endpoint path {desc!r}: items must be names, ints or layers; "
                    f"got {_describe(item)}"
                )
            steps.append(op.name)
            level_model = op
        if tuple(steps) not in path_set:
            raise ValueError(
                f"endpoint path {desc!r} names no layer of the model's graph; {_names_hint(names)}"
            )
        return tuple(steps)
    raise ValueError(
        "endpoint must be an int, a layer name, a keras.Layer, a tuple path, a dict or an "
        f"Endpoint; got {_describe(desc)}"
    )


def _endpoint_name(path: tuple[str, ...], call: int, link: str, index: int) -> str:
    name = "/".join(path)
    if call:
        name += f"#{call}"
    if link == "input":
        name += ":input"
    elif index:
        name += ":output"
    if index:
        name += f"[{index}]"
    return name


def _resolve_one(model: keras.Model, groups: dict, desc: Any) -> tuple[Endpoint, tuple[int, ...]]:
    if isinstance(desc, Endpoint):
        desc = {"name": desc.path, "link": desc.link, "call": desc.call, "index": desc.index}
    link: Literal["output", "input"] = "output"
    call: int | None = None
    index = 0
    if isinstance(desc, dict):
        unknown = set(desc) - _DICT_KEYS
        if unknown:
            raise ValueError(
                f"endpoint dict has unknown keys {sorted(unknown)}; expected some of "
                f"{sorted(_DICT_KEYS)}"
            )
        if ("name" in desc) == ("layer" in desc):
            raise ValueError(
                f"endpoint dict must have exactly one of 'name' or 'layer'; got {_describe(desc)}"
            )
        inner = desc["name"] if "name" in desc else desc["layer"]
        if isinstance(inner, dict | Endpoint):
            raise ValueError(f"endpoint dict's name must not be a dict; got {_describe(inner)}")
        link = choice(desc.get("link", "output"), "endpoint link", _LINKS)
        if desc.get("call") is not None:
            call = _nonneg_int(desc["call"], "endpoint call")
        index = _nonneg_int(desc.get("index", 0), "endpoint index")
        desc = inner
    path = _path_of(model, groups, desc)
    calls = groups[path]
    label = "/".join(path)
    if call is None:
        if len(calls) > 1:
            raise ValueError(
                f"endpoint: layer {label!r} is called {len(calls)} times in the model; pass "
                f"{{'name': {label!r}, 'call': k}} with k in 0..{len(calls) - 1}"
            )
        call = 0
    if call >= len(calls):
        raise ValueError(
            f"endpoint call {call} is out of range: layer {label!r} is called {len(calls)} "
            f"time(s) (valid calls 0..{len(calls) - 1})"
        )
    site = calls[call]
    if link == "input":
        tensors = list(site.node.input_tensors)
        if not tensors:
            raise ValueError(
                f"endpoint: layer {label!r} is an input of the graph and has no input link"
            )
    else:
        tensors = list(site.node.outputs)
    if index >= len(tensors):
        raise ValueError(
            f"endpoint index {index} is out of range: layer {label!r} has {len(tensors)} "
            f"{link} tensor(s)"
        )
    shape = tuple(tensors[index].shape[1:])
    endpoint = Endpoint(
        name=_endpoint_name(path, call, link, index),
        layer=site.op,
        link=link,
        call=call,
        path=path,
        shape=shape,
        index=index,
    )
    return endpoint, site.key


def descriptor_list(endpoints: Any) -> list:
    """Endpoint descriptors as a list: one descriptor (a name such as ``"conv1"``, an int, a
    Layer, a tuple path, a dict, an ``Endpoint``) becomes a one-item list; a list, or another
    sequence or iterable of descriptors (not a str or tuple, which are one descriptor), becomes
    a list. The one place where ``layers=``/``endpoints=`` arguments are normalised, so that a
    single name is never read letter by letter.

    Examples
    --------
    >>> from tmx.inspect import descriptor_list
    >>> descriptor_list("conv1"), descriptor_list(("outer", "inner")), descriptor_list(["a", -1])
    (['conv1'], [('outer', 'inner')], ['a', -1])
    """
    if isinstance(endpoints, list):
        return list(endpoints)
    if isinstance(endpoints, str | bytes | tuple | dict | numbers.Integral | Endpoint):
        return [endpoints.decode() if isinstance(endpoints, bytes) else endpoints]
    if isinstance(endpoints, keras.Layer) or not isinstance(endpoints, Iterable):
        return [endpoints]
    if isinstance(endpoints, np.ndarray) and endpoints.ndim == 0:
        return [endpoints.item()]
    return list(endpoints.tolist() if isinstance(endpoints, np.ndarray) else endpoints)


def _as_list(endpoints: Any) -> list:
    out = descriptor_list(endpoints)
    if not out:
        raise ValueError("endpoints must not be empty")
    return out


def _subclassed_endpoint(model: keras.Model, descs: list) -> Endpoint:
    d = descs[0]
    if isinstance(d, Endpoint) and d.layer is model:
        d = -1
    is_last = isinstance(d, numbers.Integral) and not isinstance(d, bool) and d == -1
    ok = len(descs) == 1 and (is_last or d is model)
    if not ok:
        raise ValueError(
            f"model {model.name!r} is a subclassed model, whose graph is unknown: only its "
            "output (endpoint -1) can be exposed; subclassed models: pass a functional model "
            "or expose the layers yourself"
        )
    spec = tree.flatten(model.compute_output_spec(subclassed_input(model)))[0]
    return Endpoint(
        name=model.name,
        layer=model,
        link="output",
        call=0,
        path=(model.name,),
        shape=tuple(spec.shape[1:]),
    )


def resolve(model: Any, endpoints: Any, *, safe_mode: bool = True) -> list[Endpoint]:
    """Resolve endpoint descriptors to ``Endpoint`` records.

    Parameters
    ----------
    model : keras.Model or str or os.PathLike
        A functional or built Sequential model, or the path of a ``.keras`` file (loaded with
        ``load_model``). A subclassed model is traced: its ``call`` runs once on a symbolic
        input, and the inner layers it calls are endpoints as a functional model's layers are
        (integer indices count in that traced graph, its ``InputLayer`` first); when the call
        cannot be traced (Python control flow on values), only ``-1``, its output.
    endpoints : list or descriptor
        A list of endpoint descriptors (see the module docstring), or one descriptor. A tuple
        is always one path descriptor, never a list of endpoints.
    safe_mode : bool, default True
        Used when ``model`` is a path; see ``load_model``.

    Returns
    -------
    list of Endpoint
        One per descriptor, in order; their names are unique.

    Raises
    ------
    ValueError
        For an unknown name, index or layer (the message lists valid names), a shared layer
        without ``"call"``, an out-of-range call or index, a malformed descriptor, two
        descriptors naming the same tensor, or an unbuilt Sequential model.

    Examples
    --------
    >>> import keras, tmx
    >>> model = keras.Sequential(
    ...     [keras.Input((4, 4, 1), name="x"), keras.layers.Conv2D(2, 3, name="c"),
    ...      keras.layers.Flatten(name="f"), keras.layers.Dense(3, name="d")], name="tiny")
    >>> endpoints = tmx.inspect.resolve(model, ["c", {"name": "d", "link": "input"}])
    >>> [(e.name, e.shape) for e in endpoints]
    [('c', (2, 2, 2)), ('d:input', (8,))]
    """
    return [e for e, _ in _resolve(load_model(model, safe_mode=safe_mode), endpoints)]


def _resolve(model: keras.Model, endpoints: Any) -> list[tuple[Endpoint, Any]]:
    descs = _as_list(endpoints)
    traced = lookup_model(model)
    if traced is not model:
        # -1 keeps meaning a subclassed model's output, whatever op computes it
        last = output_op_names(traced)[0]
        descs = [
            last if isinstance(d, numbers.Integral) and not isinstance(d, bool) and d == -1 else d
            for d in descs
        ]
        model = traced
    graph = model_graph(model)
    if graph is None:
        return [(_subclassed_endpoint(model, descs), None)]
    groups = by_path(call_sites(graph))
    out = [_resolve_one(model, groups, d) for d in descs]
    seen: dict[str, int] = {}
    for i, (e, _) in enumerate(out):
        if e.name in seen:
            raise ValueError(
                f"endpoints {seen[e.name]} and {i} both name {e.name!r}; each endpoint must be "
                "given once"
            )
        seen[e.name] = i
    return out


def default_endpoints(model: keras.Model) -> list:
    """Descriptors for every top-level layer output except the inputs.

    Top-level layers are taken in graph order, ``InputLayer`` excluded; a nested sub-model
    counts as one layer (its output). A layer called several times gives one dict descriptor
    per call, and a layer with several outputs one per output; other layers give their name.
    ``keras.ops`` calls of a functional graph are not layers and are left out (name them
    explicitly if needed). A subclassed model is traced (see ``resolve``) and gives its inner
    layers' outputs the same way, followed by its output when a ``keras.ops`` call computes
    it; one whose call cannot be traced gives ``[-1]``, its output,
    with a ``UserWarning`` that says how to record more. This is what the
    activation cube uses when ``layers=None``.

    Examples
    --------
    >>> import keras, tmx
    >>> model = keras.Sequential(
    ...     [keras.Input((4, 4, 1), name="x"), keras.layers.Conv2D(2, 3, name="c"),
    ...      keras.layers.Flatten(name="f"), keras.layers.Dense(3, name="d")], name="tiny")
    >>> tmx.inspect.default_endpoints(model)
    ['c', 'f', 'd']
    """
    given = require_model(model)
    model = lookup_model(given)
    traced = model is not given
    graph = model_graph(model)
    if graph is None:
        warnings.warn(
            f"model {model.name!r} is a subclassed model whose call could not be traced on a "
            f"symbolic input ({trace_subclassed(model)[1]}), so only its output (endpoint -1) is "
            "recorded. To record its layers, write the model functionally "
            "(keras.Model(inputs, outputs)); to keep its output only and silence this warning, "
            "pass layers=[-1]",
            UserWarning,
            stacklevel=3,
        )
        return [-1]
    by_op = nodes_by_op(graph)
    out: list = []
    for layer in model.layers:
        if is_input_layer(layer):
            continue
        nodes = by_op.get(id(layer), [])
        for k, node in enumerate(nodes):
            n_out = len(node.outputs)
            for i in range(n_out):
                if len(nodes) == 1 and n_out == 1:
                    out.append(layer.name)
                else:
                    desc: dict[str, Any] = {"name": layer.name, "call": k}
                    if n_out > 1:
                        desc["index"] = i
                    out.append(desc)
    if traced:
        # a subclassed model's output may come from a keras.ops call, not a layer: keep it
        layers = {layer.name for layer in model.layers}
        out.extend(n for n in output_op_names(graph) if n not in layers)
    return out
