"""Find layers, name endpoints and expose intermediate tensors of Keras 3 models.

This module replaces ``keras_explainable.inspection`` for Keras 3. Everything here is a pure
function of the model it is given (no global state, no monkey-patching of ``layer.call``).

Endpoint descriptors
--------------------
An *endpoint* is one tensor of a model's graph: the output (or an input) of one call of one
layer. It is described by any of

* an ``int``: an index into the top-level ``model.layers`` (negative indices count from the end;
  for a functional model ``model.layers[0]`` is its ``InputLayer``);
* a ``str``: a layer name. A name inside a nested sub-model is written ``"outer/inner"`` (Keras 3
  forbids ``/`` in layer names, so this is unambiguous); a bare inner name is accepted too when
  exactly one layer of the nested sub-models has it;
* a ``keras.Layer`` object of the model;
* a ``tuple`` path into nested models: ``("resnet", "conv2_block1_out")`` is the layer
  ``"conv2_block1_out"`` inside the sub-model layer ``"resnet"`` (items are names, ``int``
  indices into that level's ``layers``, or layer objects);
* a ``dict`` ``{"name" | "layer": <any of the above>, "link": "output" | "input",
  "call": int, "index": int}``: ``link`` defaults to ``"output"``; ``call`` picks one call of
  a layer that is called several times (a shared layer) and is required for such a layer;
  ``index`` picks one tensor when the layer has several inputs (``link="input"``, e.g. ``Add``)
  or several outputs, and defaults to 0, the first;
* an ``Endpoint`` returned by ``resolve``.

Calls are numbered in the order the model was built (the order of the layer's inbound nodes).
For a layer inside a sub-model that is itself called ``m`` times, the call of the inner layer
numbered ``j`` during outer call ``i`` is ``i * n + j``, where ``n`` is how many times the inner
graph calls the layer.
"""

from __future__ import annotations

import difflib
import numbers
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import xarray as xr
from keras import tree

from ._memo import memo, per_object
from ._validate import _describe, choice

__all__ = [
    "Endpoint",
    "biases",
    "default_endpoints",
    "descriptor_list",
    "expose",
    "find_layer",
    "find_layers",
    "last_pooling_layer",
    "layer_names",
    "load_model",
    "logits_layer",
    "resolve",
    "structure",
]

_LINKS = ("output", "input")
_DICT_KEYS = frozenset({"name", "layer", "link", "call", "index"})
_KERNEL_ATTRS = ("kernel", "depthwise_kernel", "pointwise_kernel")
_POOLING_PREFIXES = ("GlobalAveragePooling", "GlobalMaxPooling")


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
    """

    name: str
    layer: Any
    link: str
    call: int
    path: tuple[str, ...]
    shape: tuple[int | None, ...]
    index: int = 0


@dataclass(frozen=True)
class _Site:
    """One call of one operation, reached through a chain of nested-model calls."""

    path: tuple[str, ...]
    ops: tuple[Any, ...]
    nodes: tuple[Any, ...]
    call: int

    @property
    def op(self) -> Any:
        return self.ops[-1]

    @property
    def node(self) -> Any:
        return self.nodes[-1]

    @property
    def key(self) -> tuple[int, ...]:
        return tuple(id(n) for n in self.nodes)


# --------------------------------------------------------------------------------------------
# Loading and graph access
# --------------------------------------------------------------------------------------------


def load_model(path_or_model: Any, *, safe_mode: bool = True) -> keras.Model:
    """Return a Keras model, loading it from a ``.keras`` file if given a path.

    Parameters
    ----------
    path_or_model : keras.Model or str or os.PathLike
        A model (returned unchanged) or the path of a ``.keras`` file.
    safe_mode : bool, default True
        Passed to ``keras.models.load_model``. With ``True`` a file holding Python code (a
        ``Lambda`` layer's lambda) is refused; pass ``False`` only for files you trust.

    Returns
    -------
    keras.Model
        The model. A loaded model is not compiled (``compile=False``): this module only runs
        inference.

    Raises
    ------
    ValueError
        If the path does not end in ``.keras``, the file does not exist, or the argument is
        neither a model nor a path.
    """
    if isinstance(path_or_model, keras.Model):
        return path_or_model
    if not isinstance(safe_mode, bool):
        raise ValueError(f"safe_mode must be True or False; got {_describe(safe_mode)}")
    if not isinstance(path_or_model, str | os.PathLike):
        raise ValueError(
            "model must be a keras.Model or the path of a '.keras' file; "
            f"got {_describe(path_or_model)}"
        )
    path = Path(path_or_model)
    if path.suffix != ".keras":
        raise ValueError(
            f"model path must name a '.keras' file (Keras 3 format); got {str(path)!r} with "
            f"suffix {path.suffix!r}. Re-save legacy models with model.save('name.keras')."
        )
    if not path.is_file():
        raise ValueError(f"model path {str(path)!r} does not exist or is not a file")
    return keras.models.load_model(path, safe_mode=safe_mode, compile=False)


def _require_model(model: Any, name: str = "model") -> keras.Model:
    if isinstance(model, keras.Model):
        return model
    if isinstance(model, str | os.PathLike):
        raise ValueError(
            f"{name} must be a keras.Model here; load the file first with "
            "tmx.inspect.load_model(path)"
        )
    raise ValueError(f"{name} must be a keras.Model; got {_describe(model)}")


def _inner_graph(op: Any) -> Any:
    """The graph (a Functional) of a functional or Sequential model used as a layer, else None."""
    if isinstance(op, keras.Sequential):
        return getattr(op, "_functional", None)
    if isinstance(op, keras.Model) and getattr(op, "_nodes_by_depth", None) is not None:
        return op
    return None


def _model_graph(model: keras.Model) -> Any:
    """The graph of a functional or built Sequential model; for a subclassed model, the graph
    of its inner layers traced on a symbolic input (``_traced``), or None when its call
    cannot be traced."""
    if isinstance(model, keras.Sequential):
        graph = getattr(model, "_functional", None)
        if graph is None:
            raise ValueError(
                f"model: the Sequential model {model.name!r} is not built; build it with "
                "model.build((None, *input_shape)), give it a keras.Input first, or call it "
                "once on data"
            )
        return graph
    graph = _inner_graph(model)
    if graph is None and isinstance(model, keras.Model):
        graph = _traced(model)[0]
    return graph


_traced_graphs = per_object()


def _traced(model: keras.Model) -> tuple[Any, str]:
    """(graph, reason): a functional model whose layers are the inner layers of the subclassed
    ``model``, built by running ``model.call`` once on a symbolic ``keras.Input`` (each inner
    layer call records a node, as in any functional model; the layers and their weights are
    the model's own), or (None, why not) when the call cannot run on symbolic tensors
    (Python control flow on values, a model not built on one input...). Memoised per model."""

    def trace() -> tuple[Any, str]:
        try:
            x = _subclassed_input(model)
        except ValueError as exc:
            return None, str(exc)
        try:
            y = model.call(x)
            graph = keras.Model(x, y, name=model.name)
        except Exception as exc:  # any failure of user code on symbolic tensors
            return None, f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        if not graph.layers or all(_is_input_layer(layer) for layer in graph.layers):
            return None, "its call uses no layer"
        return graph, ""

    return memo(_traced_graphs, model, "graph", trace)


def _lookup_model(model: keras.Model) -> keras.Model:
    """The model whose ``layers`` descriptors refer to: ``model`` itself, or the traced graph
    of a subclassed model (``_traced``), whose layers start with its ``InputLayer`` as a
    functional model's do."""
    if isinstance(model, keras.Sequential) or _inner_graph(model) is not None:
        return model
    graph = _traced(model)[0] if isinstance(model, keras.Model) else None
    return model if graph is None else graph


def _nodes_by_op(graph: Any) -> dict[int, list[Any]]:
    """The graph's nodes of each operation, in the order the calls were made."""
    out: dict[int, list[Any]] = {}
    for nodes in graph._nodes_by_depth.values():
        for node in nodes:
            out.setdefault(id(node.operation), []).append(node)
    for op_id, nodes in out.items():
        op = nodes[0].operation
        nodes.sort(key=lambda n, op=op: op._inbound_nodes.index(n))
        out[op_id] = nodes
    return out


def _ordered_nodes(graph: Any) -> list[Any]:
    """The graph's nodes in a topological order (inputs first)."""
    out = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        out.extend(graph._nodes_by_depth[depth])
    return out


def _sites(graph: Any) -> list[_Site]:
    """Every call of every operation of ``graph``, nested sub-models flattened, in graph order.

    An operation's own calls come first, followed by the calls inside it if it is a functional
    or Sequential model (depth first, in ``graph.operations`` order).
    """
    by_op = _nodes_by_op(graph)
    out: list[_Site] = []
    for op in graph.operations:
        nodes = by_op.get(id(op), [])
        for j, node in enumerate(nodes):
            out.append(_Site((op.name,), (op,), (node,), j))
        inner = _inner_graph(op)
        if inner is None or not nodes:
            continue
        inner_sites = _sites(inner)
        counts = Counter(s.path for s in inner_sites)
        for j, node in enumerate(nodes):
            for s in inner_sites:
                out.append(
                    _Site(
                        (op.name, *s.path),
                        (op, *s.ops),
                        (node, *s.nodes),
                        j * counts[s.path] + s.call,
                    )
                )
    return out


def _by_path(sites: Iterable[_Site]) -> dict[tuple[str, ...], list[_Site]]:
    """The sites grouped by path (first-seen order), each group in call order."""
    out: dict[tuple[str, ...], list[_Site]] = {}
    for s in sites:
        out.setdefault(s.path, []).append(s)
    for calls in out.values():
        calls.sort(key=lambda s: s.call)
    return out


def _walk_layers(model: keras.Model, prefix: tuple[str, ...] = ()) -> Iterator[tuple]:
    """(path, layer) for every layer, depth first in ``layers`` order (sub-models recursed)."""
    for layer in model.layers:
        path = (*prefix, layer.name)
        yield path, layer
        if isinstance(layer, keras.Model):
            yield from _walk_layers(layer, path)


def _names_hint(names: list[str], wanted: Any = None, limit: int = 30) -> str:
    """A readable, truncated list of valid names, with close matches first when possible."""
    if len(names) <= limit:
        shown = ", ".join(names)
    else:
        shown = (
            ", ".join(names[:20])
            + ", ..., "
            + ", ".join(names[-5:])
            + f" ({len(names)} in all; see tmx.inspect.layer_names(model))"
        )
    hint = f"valid layer names: {shown}"
    if isinstance(wanted, str):
        close = difflib.get_close_matches(wanted, names, n=3)
        if close:
            hint = f"did you mean {', '.join(map(repr, close))}? " + hint
    return hint


def _is_input_layer(op: Any) -> bool:
    return isinstance(op, keras.layers.InputLayer)


# --------------------------------------------------------------------------------------------
# Finding layers
# --------------------------------------------------------------------------------------------


def _class_matches(layer: Any, cls: Any) -> bool:
    for c in cls:
        if isinstance(c, str):
            if any(k.__name__ == c for k in type(layer).__mro__):
                return True
        elif isinstance(layer, c):
            return True
    return False


def _has_attrs(layer: Any, attrs: tuple[str, ...]) -> bool:
    for a in attrs:
        try:
            if getattr(layer, a, None) is None:
                return False
        except Exception:  # a property of an unbuilt layer may raise
            return False
    return True


def _check_criteria(cls: Any, has: Any) -> tuple[tuple, tuple[str, ...]]:
    if cls is None:
        classes: tuple = ()
    else:
        classes = tuple(cls) if isinstance(cls, tuple | list) else (cls,)
        for c in classes:
            if not (isinstance(c, str) or isinstance(c, type)):
                raise ValueError(
                    f"cls must be a class, a class name or a tuple of those; got {_describe(cls)}"
                )
    if has is None:
        attrs: tuple[str, ...] = ()
    else:
        attrs = (has,) if isinstance(has, str) else tuple(has)
        if not attrs or not all(isinstance(a, str) for a in attrs):
            raise ValueError(
                f"has must be an attribute name or a tuple of names; got {_describe(has)}"
            )
    return classes, attrs


def find_layers(
    model: keras.Model,
    name: str | tuple[str, ...] | None = None,
    *,
    index: int | None = None,
    cls: type | str | tuple | None = None,
    has: str | tuple[str, ...] | None = None,
    reverse: bool = False,
) -> list[keras.Layer]:
    """Every layer that meets all the given criteria.

    Layers are searched depth first in ``model.layers`` order: each layer, then (if it is a
    model) the layers inside it, recursively.

    Parameters
    ----------
    model : keras.Model
        The model to search.
    name : str or tuple of str, optional
        A layer name. A bare name matches a layer at any depth; ``"outer/inner"`` (or the tuple
        ``("outer", "inner")``) matches only the layer at that path.
    index : int, optional
        An index into the top-level ``model.layers``.
    cls : type or str or tuple, optional
        A class (``isinstance`` match) or class name such as ``"Conv2D"`` (matches the class or
        any of its base classes), or a tuple of those (any may match).
    has : str or tuple of str, optional
        Attribute(s) the layer must have, not ``None`` (``has="kernel"``; note that
        ``has="bias"`` excludes a layer built with ``use_bias=False``).
    reverse : bool, default False
        Return the matches last-to-first.

    Returns
    -------
    list of keras.Layer
        The matches (empty if none).

    Raises
    ------
    ValueError
        If ``name`` names no layer of the model or ``index`` is out of range (the message lists
        the valid names).
    """
    model = _require_model(model)
    classes, attrs = _check_criteria(cls, has)
    walk = list(_walk_layers(model))
    names = ["/".join(p) for p, _ in walk]
    if name is not None:
        if isinstance(name, tuple):
            if not name or not all(isinstance(n, str) for n in name):
                raise ValueError(f"name must be a str or a tuple of str; got {_describe(name)}")
            name = "/".join(name)
        if not isinstance(name, str):
            raise ValueError(f"name must be a str or a tuple of str; got {_describe(name)}")
        if "/" in name:
            walk = [(p, layer) for p, layer in walk if "/".join(p) == name]
        else:
            walk = [(p, layer) for p, layer in walk if p[-1] == name]
        if not walk:
            raise ValueError(f"name: no layer named {name!r} in model; {_names_hint(names, name)}")
    if index is not None:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise ValueError(f"index must be an int; got {_describe(index)}")
        top = model.layers
        if not -len(top) <= index < len(top):
            raise ValueError(
                f"index {index} is out of range: the model has {len(top)} top-level layers "
                f"(valid indices {-len(top)}..{len(top) - 1})"
            )
        target = top[index]
        walk = [(p, layer) for p, layer in walk if len(p) == 1 and layer is target]
    found = [
        layer
        for _, layer in walk
        if (not classes or _class_matches(layer, classes)) and _has_attrs(layer, attrs)
    ]
    return found[::-1] if reverse else found


def find_layer(
    model: keras.Model,
    name: str | tuple[str, ...] | None = None,
    *,
    index: int | None = None,
    cls: type | str | tuple | None = None,
    has: str | tuple[str, ...] | None = None,
    reverse: bool = True,
) -> keras.Layer:
    """The first layer, searching last-to-first by default, that meets all given criteria.

    The criteria are those of ``find_layers`` and combine with AND. The search goes depth
    first through nested sub-models in ``model.layers`` order; with ``reverse=True`` (the
    default) that order is walked backwards, so ``find_layer(model, cls="Conv2D")`` is the last
    convolution, even one inside a nested backbone.

    Returns
    -------
    keras.Layer

    Raises
    ------
    ValueError
        If no layer matches (the message lists the criteria and the valid layer names).
    """
    found = find_layers(model, name, index=index, cls=cls, has=has, reverse=reverse)
    if found:
        return found[0]
    criteria = ", ".join(
        f"{k}={_describe(v)}"
        for k, v in (("name", name), ("index", index), ("cls", cls), ("has", has))
        if v is not None
    )
    walk = list(_walk_layers(model))
    names = ["/".join(p) for p, _ in walk]
    classes = ""
    if cls is not None:
        present = ", ".join(dict.fromkeys(type(layer).__name__ for _, layer in walk))
        classes = f"; layer classes present: {present}"
    raise ValueError(
        f"no layer of model matches {criteria or 'the criteria'}; {_names_hint(names)}{classes}"
    )


def _has_kernel(layer: Any) -> bool:
    return any(_has_attrs(layer, (a,)) for a in _KERNEL_ATTRS)


def logits_layer(model: keras.Model, *, output: int = 0) -> keras.Layer:
    """The last layer with a kernel (Dense, Conv, ...) whose output feeds the model's output.

    The graph is walked back from output ``output`` through kernel-free layers (``Activation``,
    ``Softmax``, ``Dropout``, ``Reshape``, pooling, ``keras.ops`` calls, nested sub-models...)
    to the nearest layer with a kernel. With ``Dense(n) -> Activation("softmax")`` or
    ``Dense(n, activation="softmax")`` this is the Dense layer either way.

    Note that when the activation is fused (``activation="softmax"``) the logits are the
    layer's *pre-activation*, which no endpoint can give (``resolve`` names layer outputs,
    which are post-activation); this is why the layer itself is returned. To read the logits,
    rebuild the head with a linear activation sharing the same weights.

    Parameters
    ----------
    model : keras.Model
        A functional or built Sequential model.
    output : int, default 0
        Which model output to start from.

    Raises
    ------
    ValueError
        For a subclassed model (its graph is not known; use
        ``find_layer(model, has="kernel")``), or if no layer with a kernel feeds the output.
    """
    model = _require_model(model)
    graph = _model_graph(model)
    if graph is None:
        raise ValueError(
            f"model {model.name!r} is a subclassed model whose graph is unknown; pass a "
            "functional model or use find_layer(model, has='kernel')"
        )
    if isinstance(output, bool) or not isinstance(output, numbers.Integral):
        raise ValueError(f"output must be an int; got {_describe(output)}")
    if not -len(graph.outputs) <= output < len(graph.outputs):
        raise ValueError(
            f"output must index the model's {len(graph.outputs)} outputs; got {output}"
        )
    up: dict[int, Any] = {}  # inner-graph input tensor -> the outer tensor that fed it
    queue = [graph.outputs[output]]
    seen: set[int] = set()
    while queue:
        tensor = queue.pop(0)
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        op, node_index, tensor_index = tensor._keras_history
        if op is None:
            continue
        node = op._inbound_nodes[node_index]
        if node.is_input:
            if id(tensor) in up:
                queue.append(up[id(tensor)])
            continue
        if _has_kernel(op):
            return op
        inner = _inner_graph(op)
        if inner is not None:
            for x, y in zip(inner.inputs, node.input_tensors, strict=False):
                up[id(x)] = y
            queue.append(inner.outputs[tensor_index])
            continue
        queue.extend(node.input_tensors)
    raise ValueError(f"no layer with a kernel feeds output {output} of model {model.name!r}")


def last_pooling_layer(model: keras.Model) -> keras.Layer:
    """The last ``GlobalAveragePooling*``, ``GlobalMaxPooling*`` or ``Flatten`` layer.

    Searched like ``find_layer`` (last-to-first, nested sub-models included).

    Raises
    ------
    ValueError
        If the model has no such layer.
    """
    model = _require_model(model)
    for _, layer in reversed(list(_walk_layers(model))):
        for k in type(layer).__mro__:
            if k.__name__.startswith(_POOLING_PREFIXES) or k.__name__ == "Flatten":
                return layer
    raise ValueError(
        f"model {model.name!r} has no GlobalAveragePooling*, GlobalMaxPooling* or Flatten layer"
    )


def layer_names(model: keras.Model) -> list[str]:
    """Every name descriptor of the model, nested layers as ``"outer/inner"``.

    For a functional or Sequential model these are the operations of its graph (layers,
    input layers and ``keras.ops`` calls), depth first in graph order. For a subclassed model
    they are the layers found by walking ``model.layers`` (usable with ``find_layer``, not
    as endpoints).
    """
    model = _lookup_model(_require_model(model))
    graph = _model_graph(model)
    if graph is None:
        return ["/".join(p) for p, _ in _walk_layers(model)]
    return ["/".join(p) for p in _by_path(_sites(graph))]


# --------------------------------------------------------------------------------------------
# Endpoints
# --------------------------------------------------------------------------------------------


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
        if not -len(top) <= desc < len(top):
            raise ValueError(
                f"endpoint index {desc} is out of range: the model has {len(top)} top-level "
                f"layers (valid indices {-len(top)}..{len(top) - 1})"
            )
        return (top[desc].name,)
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
        path: list[str] = []
        for item in desc:
            level_graph = (
                _model_graph(level_model) if isinstance(level_model, keras.Model) else None
            )
            if level_graph is None:
                raise ValueError(
                    f"endpoint path {desc!r}: {'/'.join(path) or model.name!r} is not a "
                    "functional or Sequential model, so it has no layers to step into"
                )
            ops = {op.name: op for op in level_graph.operations}
            if isinstance(item, bool):
                raise ValueError(f"endpoint path {desc!r}: items must not be bools")
            if isinstance(item, numbers.Integral):
                top = level_model.layers
                if not -len(top) <= item < len(top):
                    raise ValueError(
                        f"endpoint path {desc!r}: index {item} is out of range for the "
                        f"{len(top)} layers of {level_model.name!r}"
                    )
                op = top[item]
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
            path.append(op.name)
            level_model = op
        if tuple(path) not in path_set:
            raise ValueError(
                f"endpoint path {desc!r} names no layer of the model's graph; {_names_hint(names)}"
            )
        return tuple(path)
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
    link, call, index = "output", None, 0
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
    spec = tree.flatten(model.compute_output_spec(_subclassed_input(model)))[0]
    return Endpoint(
        name=model.name,
        layer=model,
        link="output",
        call=0,
        path=(model.name,),
        shape=tuple(spec.shape[1:]),
    )


def _subclassed_input(model: keras.Model) -> Any:
    shapes = getattr(model, "_build_shapes_dict", None)
    if not shapes or len(shapes) != 1:
        raise ValueError(
            f"model {model.name!r} is a subclassed model that is not built on a single input; "
            "call it once on data first (or pass a functional model)"
        )
    shape = tuple(next(iter(shapes.values())))
    return keras.Input(batch_shape=(None, *shape[1:]), dtype=model.input_dtype)


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
    """
    return [e for e, _ in _resolve(load_model(model, safe_mode=safe_mode), endpoints)]


def _traced_output_names(graph: Any) -> list[str]:
    """The operations (layers or ``keras.ops`` calls) that give a traced graph's outputs."""
    return [t._keras_history.operation.name for t in tree.flatten(graph.outputs)]


def _resolve(model: keras.Model, endpoints: Any) -> list[tuple[Endpoint, Any]]:
    descs = _as_list(endpoints)
    traced = _lookup_model(model)
    if traced is not model:
        # -1 keeps meaning a subclassed model's output, whatever op computes it
        last = _traced_output_names(traced)[0]
        descs = [
            last if isinstance(d, numbers.Integral) and not isinstance(d, bool) and d == -1 else d
            for d in descs
        ]
        model = traced
    graph = _model_graph(model)
    if graph is None:
        return [(_subclassed_endpoint(model, descs), None)]
    groups = _by_path(_sites(graph))
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
    """
    given = _require_model(model)
    model = _lookup_model(given)
    traced = model is not given
    graph = _model_graph(model)
    if graph is None:
        warnings.warn(
            f"model {model.name!r} is a subclassed model whose call could not be traced on a "
            f"symbolic input ({_traced(model)[1]}), so only its output (endpoint -1) is "
            "recorded. To record its layers, write the model functionally "
            "(keras.Model(inputs, outputs)); to keep its output only and silence this warning, "
            "pass layers=[-1]",
            UserWarning,
            stacklevel=3,
        )
        return [-1]
    by_op = _nodes_by_op(graph)
    out: list = []
    for layer in model.layers:
        if _is_input_layer(layer):
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
        out.extend(n for n in _traced_output_names(graph) if n not in layers)
    return out


# --------------------------------------------------------------------------------------------
# Exposing endpoints: flat rebuild of the graph
# --------------------------------------------------------------------------------------------


def _fresh_input(tensor: Any) -> Any:
    op = tensor._keras_history.operation
    name = op.name if op is not None else None
    return keras.Input(
        batch_shape=(None, *tensor.shape[1:]),
        dtype=tensor.dtype,
        sparse=bool(getattr(tensor, "sparse", False)),
        name=name,
    )


def _run_graph(
    graph: Any,
    inputs: list,
    prefix: tuple[int, ...],
    training: Any,
    records: dict,
    substitute: dict | None = None,
) -> list:
    """Re-call the graph's operations on new symbolic inputs, recursing into sub-models.

    ``records`` maps each call's key (ids of the chain of nodes that reached it) to its new
    (input tensors, output tensors). A sub-model called with ``training=v`` passes ``v`` on to
    the layers inside it, as ``Functional.call`` does. ``substitute`` maps a call's key to
    (link, index, tensor): that call's output ``index`` (link "output", for every consumer) or
    its input ``index`` (link "input", for this call only) is replaced by ``tensor``; the
    records keep the original tensors. ``("call", fn)`` computes that (non-model) call as
    ``fn(op, args, kwargs)`` instead, and records what ``fn`` returns.
    """
    substitute = substitute or {}
    tensor_dict = {id(x): y for x, y in zip(graph.inputs, inputs, strict=True)}
    for node in _ordered_nodes(graph):
        key = (*prefix, id(node))
        if node.is_input:
            outs = [tensor_dict.get(id(x)) for x in node.outputs]
            if all(o is not None for o in outs):
                records[key] = ([], outs)
            continue
        if any(id(x) not in tensor_dict for x in node.input_tensors):
            continue  # not computable from the inputs (as in Function._run_through_graph)
        ins = [tensor_dict[id(x)] for x in node.input_tensors]
        swap = substitute.get(key)
        if swap is not None and swap[0] == "input":
            local = dict(tensor_dict)
            local[id(node.input_tensors[swap[1]])] = swap[2]
            args, kwargs = node.arguments.fill_in(local)
        else:
            args, kwargs = node.arguments.fill_in(tensor_dict)
        op = node.operation
        inner = _inner_graph(op)
        if inner is not None:
            sub_training = training if training is not None else kwargs.get("training")
            sub_in = args[0] if args else kwargs.get("inputs")
            flat_in = tree.flatten(sub_in)
            if len(flat_in) != len(inner.inputs):
                raise ValueError(
                    f"cannot flatten sub-model {op.name!r}: it was called with {len(flat_in)} "
                    f"input tensors but has {len(inner.inputs)} inputs"
                )
            outs = _run_graph(inner, flat_in, key, sub_training, records, substitute)
        else:
            if training is not None and "training" in getattr(op, "_call_context_args", ()):
                kwargs["training"] = training
            if swap is not None and swap[0] == "call":
                outs = tree.flatten(swap[1](op, args, kwargs))
            else:
                outs = tree.flatten(op(*args, **kwargs))
        records[key] = (ins, outs)
        if swap is not None and swap[0] == "output":
            outs = list(outs)
            outs[swap[1]] = swap[2]
        for x, y in zip(node.outputs, outs, strict=False):
            tensor_dict[id(x)] = y
    return [tensor_dict[id(x)] for x in graph.outputs]


def expose(model: Any, endpoints: Any, *, safe_mode: bool = True) -> keras.Model:
    """A functional model with the inputs of ``model`` whose outputs are the given endpoints.

    The model's graph is rebuilt flat: fresh ``keras.Input`` like the model's inputs (batch
    axis left free), then every call of every layer is made again on the new tensors in
    topological order, and a functional or Sequential sub-model is not called whole but its
    inner graph is walked the same way, so that each inner layer's output is a tensor of the
    flat graph (Keras 3 cannot otherwise output a tensor that lives inside a nested
    sub-model). The layer objects are the same, so weights are shared and the outputs equal
    those of the original model. Re-calling layers adds inbound nodes to them, as any reuse of
    a layer does; the original model is unchanged.

    Parameters
    ----------
    model : keras.Model or str or os.PathLike
        A functional or built Sequential model (or a ``.keras`` path), or a subclassed model
        (traced, see ``resolve``; only the endpoint ``-1`` when its call cannot be traced).
    endpoints : list or descriptor
        Endpoint descriptors, see ``resolve``.
    safe_mode : bool, default True
        Used when ``model`` is a path; see ``load_model``.

    Returns
    -------
    keras.Model
        ``outputs`` is a list, one tensor per endpoint, in order (note that Keras's
        ``predict``/``__call__`` return a bare array rather than a one-item list when there
        is a single output).

    Raises
    ------
    ValueError
        As ``resolve``; also for a subclassed model with any endpoint but ``-1``.

    Notes
    -----
    Masks carried between layers are recomputed by Keras on the new tensors; an explicit
    ``mask=`` argument given to a sub-model call is not forwarded to its inner layers.
    """
    model = load_model(model, safe_mode=safe_mode)
    resolved = _resolve(model, endpoints)
    graph = _model_graph(model)
    if graph is None:
        x = _subclassed_input(model)
        return keras.Model(x, [tree.flatten(model(x))[0]], name=f"{model.name}_exposed")
    new_inputs = tree.map_structure(_fresh_input, graph._inputs_struct)
    records: dict = {}
    _run_graph(graph, tree.flatten(new_inputs), (), None, records)
    outputs = []
    for endpoint, key in resolved:
        if key not in records:
            raise ValueError(
                f"endpoint {endpoint.name!r} cannot be computed from the model's inputs"
            )
        ins, outs = records[key]
        outputs.append((ins if endpoint.link == "input" else outs)[endpoint.index])
    return keras.Model(new_inputs, outputs, name=f"{model.name}_exposed")


def _depends_on(tensor: Any, source: Any) -> bool:
    """Whether the symbolic ``tensor`` is computed from the symbolic ``source``."""
    stack, seen = [tensor], set()
    while stack:
        t = stack.pop()
        if t is source:
            return True
        if id(t) in seen:
            continue
        seen.add(id(t))
        history = getattr(t, "_keras_history", None)
        if history is None or history.operation is None:
            continue
        node = history.operation._inbound_nodes[history.node_index]
        stack.extend(node.input_tensors)
    return False


def rewire(
    model: Any, cut: Any, *, qoi_cut: Any = None, safe_mode: bool = True
) -> tuple[keras.Model, keras.Model]:
    """Two functional models around a cut: ``head(x) = h`` and ``tail([x, z]) = y``.

    ``h`` is the tensor at the endpoint ``cut`` (a layer's output, or its input with
    ``{"name": ..., "link": "input"}``, for that call only); ``tail`` is the model rebuilt flat
    (as in ``expose``) with ``h`` replaced by a new input ``z``, and returns the model's output
    (or the endpoint ``qoi_cut``). Branches that do not go through the cut (skip connections)
    still see ``x``, so ``tail([x, head(x)])`` equals the model's output, and
    ∂ tail / ∂z is the gradient of the output with respect to the cut. The graph is re-wired,
    no ``layer.call`` is patched; weights are shared with ``model``.

    Raises
    ------
    ValueError
        As ``resolve``; for a subclassed model; or when the QoI endpoint does not depend on
        the cut.
    """
    model = load_model(model, safe_mode=safe_mode)
    graph = _model_graph(model)
    if graph is None:
        raise ValueError("rewire needs a functional or Sequential model (its graph)")
    [(endpoint, key)] = _resolve(model, [cut])
    records: dict = {}
    inputs = tree.map_structure(_fresh_input, graph._inputs_struct)
    _run_graph(graph, tree.flatten(inputs), (), None, records)
    if key not in records:
        raise ValueError(f"cut {endpoint.name!r} cannot be computed from the model's inputs")
    ins, outs = records[key]
    h = (ins if endpoint.link == "input" else outs)[endpoint.index]
    head = keras.Model(inputs, h, name=f"{model.name}_head")

    tail_inputs = tree.map_structure(_fresh_input, graph._inputs_struct)
    z = keras.Input(batch_shape=(None, *h.shape[1:]), dtype=h.dtype, name="cut")
    records = {}
    outputs = _run_graph(
        graph,
        tree.flatten(tail_inputs),
        (),
        None,
        records,
        {key: (endpoint.link, endpoint.index, z)},
    )
    if qoi_cut is None:
        if len(outputs) != 1:
            raise ValueError("the model has several outputs: pass qoi_cut to pick one")
        y = outputs[0]
    else:
        [(q_end, q_key)] = _resolve(model, [qoi_cut])
        if q_key not in records:
            raise ValueError(f"qoi_cut {q_end.name!r} cannot be computed from the inputs")
        q_ins, q_outs = records[q_key]
        y = (q_ins if q_end.link == "input" else q_outs)[q_end.index]
    if not _depends_on(y, z):
        what = "the model's output" if qoi_cut is None else f"qoi_cut {q_end.name!r}"
        raise ValueError(f"{what} does not depend on the cut {endpoint.name!r}")
    flat_tail = tree.flatten(tail_inputs)
    tail = keras.Model([*flat_tail, z], y, name=f"{model.name}_tail")
    return head, tail


# --------------------------------------------------------------------------------------------
# Biases
# --------------------------------------------------------------------------------------------


def _as_np(value: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float64)


def _is_linear(layer: Any) -> bool:
    act = getattr(layer, "activation", None)
    return (
        act is None or act is keras.activations.linear or getattr(act, "__name__", "") == "linear"
    )


def _channel_axis(layer: Any, rank: int) -> int:
    return 1 if getattr(layer, "data_format", None) == "channels_first" else rank - 1


def _kernel_bias(layer: Any, out_shape: tuple) -> np.ndarray:
    bias = getattr(layer, "bias", None) if getattr(layer, "use_bias", True) else None
    if bias is not None:
        return _as_np(bias)
    axis = _channel_axis(layer, len(out_shape))
    n = out_shape[axis] if out_shape else None
    if n is None:
        raise ValueError(
            f"cannot size the zero bias of layer {layer.name!r}: its channel axis is unknown"
        )
    return np.zeros(int(n))


def _bn_affine(bn: Any) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) of an inference-mode BatchNormalization: y = scale * x + offset."""
    mean = _as_np(bn.moving_mean)
    var = _as_np(bn.moving_variance)
    gamma = _as_np(bn.gamma) if bn.scale else np.ones_like(mean)
    beta = _as_np(bn.beta) if bn.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + float(bn.epsilon))
    return scale, beta - scale * mean


def _ln_offset(ln: Any) -> np.ndarray:
    beta = getattr(ln, "beta", None) if getattr(ln, "center", True) else None
    if beta is not None:
        return _as_np(beta)
    gamma = getattr(ln, "gamma", None)
    if gamma is not None:
        return np.zeros(np.shape(gamma))
    return np.zeros(0)


def _bias_entries(
    graph: Any, prefix: str, fold: bool, out: dict, sites: dict | None = None
) -> None:
    """Fill ``out`` (name → bias) and, when given, ``sites`` (name → the path of the layer
    whose output the bias is added to: the folded BatchNormalization, or the layer itself)."""
    by_op = _nodes_by_op(graph)
    consumers: Counter = Counter()
    for nodes in by_op.values():
        for node in nodes:
            for x in node.input_tensors:
                consumers[id(x)] += 1
    for x in graph.outputs:
        consumers[id(x)] += 1
    folded: dict[int, Any] = {}  # id(kernel layer) -> the BatchNormalization folded into it
    absorbed: set[int] = set()
    if fold:
        for op in graph.operations:
            nodes = by_op.get(id(op), [])
            if not isinstance(op, keras.layers.BatchNormalization) or len(nodes) != 1:
                continue
            ins = nodes[0].input_tensors
            if len(ins) != 1:
                continue
            prod, node_index, _ = ins[0]._keras_history
            if prod is None or not _has_kernel(prod) or not _is_linear(prod):
                continue
            prod_nodes = by_op.get(id(prod), [])
            if len(prod_nodes) != 1 or prod_nodes[0] is not prod._inbound_nodes[node_index]:
                continue
            if consumers[id(ins[0])] != 1 or len(prod_nodes[0].outputs) != 1:
                continue
            rank = len(ins[0].shape)
            axes = op.axis if isinstance(op.axis, list | tuple) else [op.axis]
            if [a % rank for a in axes] != [_channel_axis(prod, rank)]:
                continue
            folded[id(prod)] = op
            absorbed.add(id(op))
    for op in graph.operations:
        name = prefix + op.name
        nodes = by_op.get(id(op), [])
        if _has_kernel(op):
            shape = tuple(nodes[0].outputs[0].shape) if nodes else ()
            b = _kernel_bias(op, shape)
            bn = folded.get(id(op))
            if bn is not None:
                scale, offset = _bn_affine(bn)
                b = scale * b + offset  # = gamma (b - mean) / sqrt(var + eps) + beta
            out[name] = b
            if sites is not None:
                sites[name] = prefix + (bn.name if bn is not None else op.name)
        elif isinstance(op, keras.layers.BatchNormalization) and id(op) not in absorbed:
            out[name] = _bn_affine(op)[1]
            if sites is not None:
                sites[name] = name
        elif isinstance(op, keras.layers.LayerNormalization):
            out[name] = _ln_offset(op)
            if sites is not None:
                sites[name] = name
        inner = _inner_graph(op)
        if inner is not None:
            _bias_entries(inner, name + "/", fold, out, sites)


def biases(model: Any, *, fold: bool = True, safe_mode: bool = True) -> dict[str, np.ndarray]:
    """The bias (affine offset) of every layer that has one.

    * A layer with a kernel (``Dense``, ``Conv*``, ``DepthwiseConv*``, ``SeparableConv*``...)
      gives its bias vector, or zeros (one per output channel) if built with
      ``use_bias=False``.
    * With ``fold=True``, a ``BatchNormalization`` that directly follows a layer with a kernel
      is folded into that layer's bias and gets no entry of its own:

      .. math:: b' = \\gamma \\, (b - \\mu) / \\sqrt{\\sigma^2 + \\epsilon} + \\beta

      with the BN layer's own ``epsilon``, moving mean ``μ`` and variance ``σ²``, and
      ``β = 0`` if ``center=False``, ``γ = 1`` if ``scale=False``. "Directly follows" means:
      the BN's only input is that layer's output, that output feeds nothing else, the layer
      has a linear activation, both are called once, and the BN normalizes the layer's channel
      axis. (The layer's kernel would then be scaled by ``γ / sqrt(σ² + ε)``; only the bias is
      returned here.)
    * Any other ``BatchNormalization`` gets the offset of its inference-time affine map,
      ``β − γ μ / sqrt(σ² + ε)``.
    * A ``LayerNormalization`` gets ``β`` (zeros if ``center=False``): its mean and variance
      are computed per sample, so the only input-independent offset of its map is ``β``.

    Biases matter for attribution: Batch Normalization (Ioffe & Szegedy, 2015, "Batch
    Normalization: Accelerating Deep Network Training by Reducing Internal Covariate Shift",
    ICML) adds an offset to nearly every layer of modern networks, and FullGrad (Srinivas &
    Fleuret, 2019, "Full-Gradient Representation for Neural Network Visualization", NeurIPS)
    shows that a network's output is exactly the input-gradient term plus the bias-gradient
    terms, so saliency that ignores biases is incomplete.

    Parameters
    ----------
    model : keras.Model or str or os.PathLike
        The model (or a ``.keras`` path). For a subclassed model the graph is unknown, so
        nothing is folded and layers are found by walking ``model.layers``.
    fold : bool, default True
        Fold ``BatchNormalization`` layers into the preceding kernel layer's bias.
    safe_mode : bool, default True
        Used when ``model`` is a path; see ``load_model``.

    Returns
    -------
    dict of str to numpy.ndarray
        Keyed by layer name (``"outer/inner"`` in nested sub-models), in graph order; values
        are float64 arrays.
    """
    model = load_model(model, safe_mode=safe_mode)
    if not isinstance(fold, bool):
        raise ValueError(f"fold must be True or False; got {_describe(fold)}")
    graph = _model_graph(model)
    out: dict[str, np.ndarray] = {}
    if graph is not None:
        _bias_entries(graph, "", fold, out)
        return out
    for path, layer in _walk_layers(model):
        name = "/".join(path)
        if _has_kernel(layer):
            try:
                shape = tuple(layer.output.shape)
            except Exception:
                shape = ()
            out[name] = _kernel_bias(layer, shape)
        elif isinstance(layer, keras.layers.BatchNormalization):
            out[name] = _bn_affine(layer)[1]
        elif isinstance(layer, keras.layers.LayerNormalization):
            out[name] = _ln_offset(layer)
    return out


# --------------------------------------------------------------------------------------------
# Structure table
# --------------------------------------------------------------------------------------------


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

    Parameters
    ----------
    model : keras.Model or str or os.PathLike
        The model (or a ``.keras`` path). A subclassed model's rows come from walking
        ``model.layers``, with unknown shapes and calls.
    safe_mode : bool, default True
        Used when ``model`` is a path; see ``load_model``.
    """
    model = load_model(model, safe_mode=safe_mode)
    graph = _model_graph(model)
    rows: list[tuple] = []
    if graph is None:
        for path, layer in _walk_layers(model):
            if _is_input_layer(layer):
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
        for path, calls in _by_path(_sites(graph)).items():
            op = calls[0].op
            if not isinstance(op, keras.Layer) or _is_input_layer(op):
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
        attrs={"model": model.name},
    )
