"""Loading models and finding their layers (by name, class, attribute, role)."""

from __future__ import annotations

import difflib
import numbers
import os
from pathlib import Path
from typing import Any

import keras

from .._graph import (
    by_path,
    call_sites,
    has_attrs,
    has_kernel,
    inner_graph,
    lookup_model,
    model_graph,
    require_model,
    walk_layers,
)
from .._validate import _describe, flag

_POOLING_PREFIXES = ("GlobalAveragePooling", "GlobalMaxPooling")


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

    Examples
    --------
    >>> import keras, tmx
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    >>> tmx.inspect.load_model(model) is model      # a model is returned unchanged
    True
    >>> tmx.inspect.load_model("weights.h5")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: model path must name a '.keras' file (Keras 3 format); got 'weights.h5' ...
    """
    if isinstance(path_or_model, keras.Model):
        return path_or_model
    safe_mode = flag(safe_mode, "safe_mode")
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


def _class_matches(layer: Any, cls: Any) -> bool:
    for c in cls:
        if isinstance(c, str):
            if any(k.__name__ == c for k in type(layer).__mro__):
                return True
        elif isinstance(layer, c):
            return True
    return False


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

    Examples
    --------
    >>> import keras, tmx
    >>> model = keras.Sequential(
    ...     [keras.Input((4, 4, 1), name="x"), keras.layers.Conv2D(2, 3, name="c"),
    ...      keras.layers.Flatten(name="f"), keras.layers.Dense(3, name="d")], name="tiny")
    >>> [layer.name for layer in tmx.inspect.find_layers(model, has="kernel")]
    ['c', 'd']
    >>> [layer.name for layer in tmx.inspect.find_layers(model, cls="Conv2D")]
    ['c']
    """
    model = require_model(model)
    classes, attrs = _check_criteria(cls, has)
    walk = list(walk_layers(model))
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
        if (not classes or _class_matches(layer, classes)) and has_attrs(layer, attrs)
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

    Examples
    --------
    >>> import keras, tmx
    >>> model = keras.Sequential(
    ...     [keras.Input((4, 4, 1), name="x"), keras.layers.Conv2D(2, 3, name="c"),
    ...      keras.layers.Flatten(name="f"), keras.layers.Dense(3, name="d")], name="tiny")
    >>> tmx.inspect.find_layer(model, has="kernel").name      # the last one
    'd'
    >>> tmx.inspect.find_layer(model, "f").__class__.__name__
    'Flatten'
    """
    found = find_layers(model, name, index=index, cls=cls, has=has, reverse=reverse)
    if found:
        return found[0]
    criteria = ", ".join(
        f"{k}={_describe(v)}"
        for k, v in (("name", name), ("index", index), ("cls", cls), ("has", has))
        if v is not None
    )
    walk = list(walk_layers(model))
    names = ["/".join(p) for p, _ in walk]
    classes = ""
    if cls is not None:
        present = ", ".join(dict.fromkeys(type(layer).__name__ for _, layer in walk))
        classes = f"; layer classes present: {present}"
    raise ValueError(
        f"no layer of model matches {criteria or 'the criteria'}; {_names_hint(names)}{classes}"
    )


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

    Examples
    --------
    >>> import keras, tmx
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="logits"),
    ...                           keras.layers.Activation("softmax", name="probs")])
    >>> tmx.inspect.logits_layer(model).name
    'logits'
    """
    model = require_model(model)
    graph = model_graph(model)
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
        if has_kernel(op):
            return op
        inner = inner_graph(op)
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

    Examples
    --------
    >>> import keras, tmx
    >>> model = keras.Sequential(
    ...     [keras.Input((4, 4, 1), name="x"), keras.layers.Conv2D(2, 3, name="c"),
    ...      keras.layers.Flatten(name="f"), keras.layers.Dense(3, name="d")], name="tiny")
    >>> tmx.inspect.last_pooling_layer(model).name
    'f'
    """
    model = require_model(model)
    for _, layer in reversed(list(walk_layers(model))):
        for k in type(layer).__mro__:
            if k.__name__.startswith(_POOLING_PREFIXES) or k.__name__ == "Flatten":
                return layer
    raise ValueError(
        f"model {model.name!r} has no GlobalAveragePooling*, GlobalMaxPooling* or Flatten layer"
    )


def layer_names(model: keras.Model) -> list[str]:
    """Every name descriptor of the model, nested layers as ``"outer/inner"``.

    For a functional or Sequential model these are the operations of its graph (layers,
    input layers and ``keras.ops`` calls), depth first in graph order. A subclassed model is
    traced (see ``tmx.inspect.resolve``) and gives the operations of its traced graph; one
    whose call cannot be traced gives the layers found by walking ``model.layers`` (usable
    with ``find_layer``, not as endpoints).

    Examples
    --------
    >>> import keras, tmx
    >>> model = keras.Sequential(
    ...     [keras.Input((4, 4, 1), name="x"), keras.layers.Conv2D(2, 3, name="c"),
    ...      keras.layers.Flatten(name="f"), keras.layers.Dense(3, name="d")], name="tiny")
    >>> tmx.inspect.layer_names(model)
    ['x', 'c', 'f', 'd']
    """
    model = lookup_model(require_model(model))
    graph = model_graph(model)
    if graph is None:
        return ["/".join(p) for p, _ in walk_layers(model)]
    return ["/".join(p) for p in by_path(call_sites(graph))]
