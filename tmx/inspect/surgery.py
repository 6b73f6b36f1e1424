"""Model surgery: expose inner tensors as outputs, cut a model in two at an endpoint."""

from __future__ import annotations

from typing import Any

import keras
from keras import tree

from .._graph import (
    depends_on,
    fresh_input,
    model_graph,
    run_graph,
    subclassed_input,
)
from .endpoints import _resolve
from .layers import load_model


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

    Examples
    --------
    >>> import keras, numpy as np, tmx
    >>> model = keras.Sequential(
    ...     [keras.Input((4, 4, 1), name="x"), keras.layers.Conv2D(2, 3, name="c"),
    ...      keras.layers.Flatten(name="f"), keras.layers.Dense(3, name="d")], name="tiny")
    >>> exposed = tmx.inspect.expose(model, ["c", "d"])
    >>> [tuple(t.shape) for t in exposed(np.ones((2, 4, 4, 1), "float32"))]
    [(2, 2, 2, 2), (2, 3)]
    """
    model = load_model(model, safe_mode=safe_mode)
    resolved = _resolve(model, endpoints)
    graph = model_graph(model)
    if graph is None:
        x = subclassed_input(model)
        return keras.Model(x, [tree.flatten(model(x))[0]], name=f"{model.name}_exposed")
    new_inputs = tree.map_structure(fresh_input, graph._inputs_struct)
    records: dict = {}
    run_graph(graph, tree.flatten(new_inputs), (), None, records)
    outputs = []
    for endpoint, key in resolved:
        if key not in records:
            raise ValueError(
                f"endpoint {endpoint.name!r} cannot be computed from the model's inputs"
            )
        ins, outs = records[key]
        outputs.append((ins if endpoint.link == "input" else outs)[endpoint.index])
    return keras.Model(new_inputs, outputs, name=f"{model.name}_exposed")


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

    Examples
    --------
    >>> import keras, numpy as np, tmx
    >>> model = keras.Sequential(
    ...     [keras.Input((4, 4, 1), name="x"), keras.layers.Conv2D(2, 3, name="c"),
    ...      keras.layers.Flatten(name="f"), keras.layers.Dense(3, name="d")], name="tiny")
    >>> head, tail = tmx.inspect.rewire(model, "f")
    >>> x = np.random.default_rng(0).normal(size=(2, 4, 4, 1)).astype("float32")
    >>> x = keras.ops.convert_to_tensor(x)
    >>> tuple(head(x).shape), bool(np.allclose(tail([x, head(x)]), model(x), atol=1e-6))
    ((2, 8), True)
    """
    model = load_model(model, safe_mode=safe_mode)
    graph = model_graph(model)
    if graph is None:
        raise ValueError("rewire needs a functional or Sequential model (its graph)")
    [(endpoint, key)] = _resolve(model, [cut])
    records: dict = {}
    inputs = tree.map_structure(fresh_input, graph._inputs_struct)
    run_graph(graph, tree.flatten(inputs), (), None, records)
    if key not in records:
        raise ValueError(f"cut {endpoint.name!r} cannot be computed from the model's inputs")
    ins, outs = records[key]
    h = (ins if endpoint.link == "input" else outs)[endpoint.index]
    head = keras.Model(inputs, h, name=f"{model.name}_head")

    tail_inputs = tree.map_structure(fresh_input, graph._inputs_struct)
    z = keras.Input(batch_shape=(None, *h.shape[1:]), dtype=h.dtype, name="cut")
    records = {}
    outputs = run_graph(
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
    if not depends_on(y, z):
        what = "the model's output" if qoi_cut is None else f"qoi_cut {q_end.name!r}"
        raise ValueError(f"{what} does not depend on the cut {endpoint.name!r}")
    flat_tail = tree.flatten(tail_inputs)
    tail = keras.Model([*flat_tail, z], y, name=f"{model.name}_tail")
    return head, tail
