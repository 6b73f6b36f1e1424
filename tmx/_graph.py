"""The Keras 3 graph engine shared by ``tmx.inspect`` and ``tmx.attribution``: a model's graph
(functional, Sequential, or a subclassed model traced on a symbolic input), its call sites,
a flat re-run of the graph on new inputs (to expose inner tensors or cut the graph), and the
affine facts of linear layers (kernels, biases, folded BatchNorm). Memoised per live model.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import tree

from ._memo import memo, per_object
from ._validate import _describe

KERNEL_ATTRS = ("kernel", "depthwise_kernel", "pointwise_kernel")

# A call's key: the ids of the chain of nodes that reached it (``Site.key``).
Key = tuple[int, ...]
# ``run_graph``'s records: a call's key -> (its new input tensors, its new output tensors).
Records = dict[Key, tuple[list[Any], list[Any]]]


@dataclass(frozen=True)
class Site:
    """One call of one operation, reached through a chain of nested-model calls."""

    path: tuple[str, ...]
    ops: tuple[Any, ...]
    nodes: tuple[Any, ...]
    call: int

    @property
    def op(self) -> keras.Operation:
        return self.ops[-1]

    @property
    def node(self) -> Any:
        return self.nodes[-1]

    @property
    def key(self) -> Key:
        return tuple(id(n) for n in self.nodes)


def require_model(model: Any, name: str = "model") -> keras.Model:
    if isinstance(model, keras.Model):
        return model
    if isinstance(model, str | os.PathLike):
        raise ValueError(
            f"{name} must be a keras.Model here; load the file first with "
            "tmx.inspect.load_model(path)"
        )
    raise ValueError(f"{name} must be a keras.Model; got {_describe(model)}")


def inner_graph(op: Any) -> keras.Model | None:
    """The graph (a Functional) of a functional or Sequential model used as a layer, else None."""
    if isinstance(op, keras.Sequential):
        return getattr(op, "_functional", None)
    if isinstance(op, keras.Model) and getattr(op, "_nodes_by_depth", None) is not None:
        return op
    return None


def model_graph(model: keras.Model) -> keras.Model | None:
    """The graph of a functional or built Sequential model; for a subclassed model, the graph
    of its inner layers traced on a symbolic input (``trace_subclassed``), or None when its call
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
    graph = inner_graph(model)
    if graph is None and isinstance(model, keras.Model):
        graph = trace_subclassed(model)[0]
    return graph


_traced_graphs = per_object()


def trace_subclassed(model: keras.Model) -> tuple[keras.Model | None, str]:
    """(graph, reason): a functional model whose layers are the inner layers of the subclassed
    ``model``, built by running ``model.call`` once on a symbolic ``keras.Input`` (each inner
    layer call records a node, as in any functional model; the layers and their weights are
    the model's own), or (None, why not) when the call cannot run on symbolic tensors
    (Python control flow on values, a model not built on one input...). Memoised per model."""

    def trace() -> tuple[keras.Model | None, str]:
        try:
            x = subclassed_input(model)
        except ValueError as exc:
            return None, str(exc)
        try:
            y = model.call(x)
            graph = keras.Model(x, y, name=model.name)
        except Exception as exc:  # any failure of user code on symbolic tensors
            return None, f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        if not graph.layers or all(is_input_layer(layer) for layer in graph.layers):
            return None, "its call uses no layer"
        return graph, ""

    return memo(_traced_graphs, model, "graph", trace)


def lookup_model(model: keras.Model) -> keras.Model:
    """The model whose ``layers`` descriptors refer to: ``model`` itself, or the traced graph
    of a subclassed model (``trace_subclassed``), whose layers start with its ``InputLayer`` as a
    functional model's do."""
    if isinstance(model, keras.Sequential) or inner_graph(model) is not None:
        return model
    graph = trace_subclassed(model)[0] if isinstance(model, keras.Model) else None
    return model if graph is None else graph


def nodes_by_op(graph: keras.Model) -> dict[int, list[Any]]:
    """The graph's nodes of each operation, in the order the calls were made."""
    out: dict[int, list[Any]] = {}
    for nodes in graph._nodes_by_depth.values():
        for node in nodes:
            out.setdefault(id(node.operation), []).append(node)
    for op_id, nodes in out.items():
        inbound: list[Any] = nodes[0].operation._inbound_nodes
        nodes.sort(key=inbound.index)
        out[op_id] = nodes
    return out


def ordered_nodes(graph: keras.Model) -> list[Any]:
    """The graph's nodes in a topological order (inputs first)."""
    out = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        out.extend(graph._nodes_by_depth[depth])
    return out


def call_sites(graph: keras.Model) -> list[Site]:
    """Every call of every operation of ``graph``, nested sub-models flattened, in graph order.

    An operation's own calls come first, followed by the calls inside it if it is a functional
    or Sequential model (depth first, in ``graph.operations`` order).
    """
    by_op = nodes_by_op(graph)
    out: list[Site] = []
    for op in graph.operations:
        nodes = by_op.get(id(op), [])
        for j, node in enumerate(nodes):
            out.append(Site((op.name,), (op,), (node,), j))
        inner = inner_graph(op)
        if inner is None or not nodes:
            continue
        inner_sites = call_sites(inner)
        counts = Counter(s.path for s in inner_sites)
        for j, node in enumerate(nodes):
            for s in inner_sites:
                out.append(
                    Site(
                        (op.name, *s.path),
                        (op, *s.ops),
                        (node, *s.nodes),
                        j * counts[s.path] + s.call,
                    )
                )
    return out


def by_path(sites: Iterable[Site]) -> dict[tuple[str, ...], list[Site]]:
    """The sites grouped by path (first-seen order), each group in call order."""
    out: dict[tuple[str, ...], list[Site]] = {}
    for s in sites:
        out.setdefault(s.path, []).append(s)
    for calls in out.values():
        calls.sort(key=lambda s: s.call)
    return out


def walk_layers(
    model: keras.Model, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], keras.Layer]]:
    """(path, layer) for every layer, depth first in ``layers`` order (sub-models recursed)."""
    for layer in model.layers:
        path = (*prefix, layer.name)
        yield path, layer
        if isinstance(layer, keras.Model):
            yield from walk_layers(layer, path)


def is_input_layer(op: Any) -> bool:
    return isinstance(op, keras.layers.InputLayer)


def has_attrs(layer: Any, attrs: tuple[str, ...]) -> bool:
    for a in attrs:
        try:
            if getattr(layer, a, None) is None:
                return False
        except Exception:  # a property of an unbuilt layer may raise
            return False
    return True


def has_kernel(layer: Any) -> bool:
    return any(has_attrs(layer, (a,)) for a in KERNEL_ATTRS)


def subclassed_input(model: keras.Model) -> keras.KerasTensor:
    shapes = getattr(model, "_build_shapes_dict", None)
    if not shapes or len(shapes) != 1:
        raise ValueError(
            f"model {model.name!r} is a subclassed model that is not built on a single input; "
            "call it once on data first (or pass a functional model)"
        )
    shape = tuple(next(iter(shapes.values())))
    return keras.Input(batch_shape=(None, *shape[1:]), dtype=model.input_dtype)


def output_op_names(graph: keras.Model) -> list[str]:
    """The operations (layers or ``keras.ops`` calls) that give a traced graph's outputs."""
    return [t._keras_history.operation.name for t in tree.flatten(graph.outputs)]


def fresh_input(tensor: keras.KerasTensor) -> keras.KerasTensor:
    op = tensor._keras_history.operation
    name = op.name if op is not None else None
    return keras.Input(
        batch_shape=(None, *tensor.shape[1:]),
        dtype=tensor.dtype,
        sparse=bool(getattr(tensor, "sparse", False)),
        name=name,
    )


def run_graph(
    graph: keras.Model,
    inputs: list[Any],
    prefix: Key,
    training: bool | None,
    records: Records,
    substitute: dict[Key, tuple[Any, ...]] | None = None,
) -> list[Any]:
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
    for node in ordered_nodes(graph):
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
        inner = inner_graph(op)
        if inner is not None:
            sub_training = training if training is not None else kwargs.get("training")
            sub_in = args[0] if args else kwargs.get("inputs")
            flat_in = tree.flatten(sub_in)
            if len(flat_in) != len(inner.inputs):
                raise ValueError(
                    f"cannot flatten sub-model {op.name!r}: it was called with {len(flat_in)} "
                    f"input tensors but has {len(inner.inputs)} inputs"
                )
            outs = run_graph(inner, flat_in, key, sub_training, records, substitute)
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


def depends_on(tensor: Any, source: Any) -> bool:
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


def as_np(value: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float64)


def is_linear(layer: Any) -> bool:
    act = getattr(layer, "activation", None)
    return (
        act is None or act is keras.activations.linear or getattr(act, "__name__", "") == "linear"
    )


def channel_axis(layer: Any, rank: int) -> int:
    return 1 if getattr(layer, "data_format", None) == "channels_first" else rank - 1


def kernel_bias(layer: Any, out_shape: tuple[int | None, ...]) -> np.ndarray:
    bias = getattr(layer, "bias", None) if getattr(layer, "use_bias", True) else None
    if bias is not None:
        return as_np(bias)
    axis = channel_axis(layer, len(out_shape))
    n = out_shape[axis] if out_shape else None
    if n is None:
        raise ValueError(
            f"cannot size the zero bias of layer {layer.name!r}: its channel axis is unknown"
        )
    return np.zeros(int(n))


def bn_affine(bn: Any) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) of an inference-mode BatchNormalization: y = scale * x + offset."""
    mean = as_np(bn.moving_mean)
    var = as_np(bn.moving_variance)
    gamma = as_np(bn.gamma) if bn.scale else np.ones_like(mean)
    beta = as_np(bn.beta) if bn.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + float(bn.epsilon))
    return scale, beta - scale * mean


def ln_offset(ln: Any) -> np.ndarray:
    beta = getattr(ln, "beta", None) if getattr(ln, "center", True) else None
    if beta is not None:
        return as_np(beta)
    gamma = getattr(ln, "gamma", None)
    if gamma is not None:
        return np.zeros(np.shape(gamma))
    return np.zeros(0)


def bias_entries(
    graph: keras.Model,
    prefix: str,
    fold: bool,
    out: dict[str, np.ndarray],
    sites: dict[str, str] | None = None,
) -> None:
    """Fill ``out`` (name → bias) and, when given, ``sites`` (name → the path of the layer
    whose output the bias is added to: the folded BatchNormalization, or the layer itself)."""
    by_op = nodes_by_op(graph)
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
            if prod is None or not has_kernel(prod) or not is_linear(prod):
                continue
            prod_nodes = by_op.get(id(prod), [])
            if len(prod_nodes) != 1 or prod_nodes[0] is not prod._inbound_nodes[node_index]:
                continue
            if consumers[id(ins[0])] != 1 or len(prod_nodes[0].outputs) != 1:
                continue
            rank = len(ins[0].shape)
            axes = op.axis if isinstance(op.axis, list | tuple) else [op.axis]
            if [a % rank for a in axes] != [channel_axis(prod, rank)]:
                continue
            folded[id(prod)] = op
            absorbed.add(id(op))
    for op in graph.operations:
        name = prefix + op.name
        nodes = by_op.get(id(op), [])
        if has_kernel(op):
            shape = tuple(nodes[0].outputs[0].shape) if nodes else ()
            b = kernel_bias(op, shape)
            bn = folded.get(id(op))
            if bn is not None:
                scale, offset = bn_affine(bn)
                b = scale * b + offset  # = gamma (b - mean) / sqrt(var + eps) + beta
            out[name] = b
            if sites is not None:
                sites[name] = prefix + (bn.name if bn is not None else op.name)
        elif isinstance(op, keras.layers.BatchNormalization) and id(op) not in absorbed:
            out[name] = bn_affine(op)[1]
            if sites is not None:
                sites[name] = name
        elif isinstance(op, keras.layers.LayerNormalization):
            out[name] = ln_offset(op)
            if sites is not None:
                sites[name] = name
        inner = inner_graph(op)
        if inner is not None:
            bias_entries(inner, name + "/", fold, out, sites)
