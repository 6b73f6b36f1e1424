"""FullGrad (Srinivas & Fleuret 2019): the input-gradient term plus every bias-gradient term.

For a network made of affine maps and piecewise-linear activations, the output is exactly

    f(x) = ∇ₓf(x) · x + Σ_l Σ_p ∂f/∂h_l[p] · b_l[p]

with h_l the output of the affine map l (the place its bias ``b_l`` is added) and p every
position of that output (paper, eq. 2; their "full-gradient decomposition"). The biases come
from ``tmx.inspect.biases`` with BatchNormalization folded into the preceding kernel layer, so
a conv→BN pair contributes one bias at the BN's output, and a standalone BN its inference
offset. The gradient at h_l is taken by adding a zero tensor δ_l there (∂f/∂δ_l = ∂f/∂h_l) in
a re-wired copy of the graph (``tmx.inspect`` re-calls every layer; no ``call`` is patched);
for a kernel layer with a fused non-linear activation, δ_l is added before the activation, to
a linear copy of that layer.
"""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import xarray as xr
from keras import tree

from .. import _progress
from .. import _validate as v
from .._batching import pad_rows
from .._graph import (
    bias_entries,
    by_path,
    call_sites,
    fresh_input,
    has_kernel,
    is_linear,
    model_graph,
    run_graph,
)
from .._provenance import provenance
from ..inspect import load_model
from ._cam import _target
from ._core import _as_inputs, _batches, _param_spec, _qoi_tensor, _row_params

log = logging.getLogger("tmx")


def _linear_twin(op: Any, args: tuple) -> Any:
    """A copy of kernel layer ``op`` with a linear activation and the same weights (a
    snapshot: full_grad builds its model afresh on every call)."""
    cfg = op.get_config()
    cfg["activation"] = "linear"
    twin = type(op).from_config(cfg)
    twin.build(tuple(args[0].shape))
    twin.set_weights(op.get_weights())
    return twin


def bias_model(model: Any, *, fold: bool = True) -> tuple[Any, list[dict]]:
    """A functional model ``[x, δ_1, …, δ_K] → y`` with δ_k added where bias k is added.

    Returns the model and one record per bias site: ``name`` (the bias's layer, as in
    ``tmx.inspect.biases``), ``site`` (the layer whose output receives it), ``call``,
    ``bias`` (float64, one per channel) and ``shape`` (the site's output shape without the
    batch axis). With every δ = 0 the model equals ``model``.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx import attribution as A
    >>> model = tmx.models.small_cnn((8, 8, 1), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    >>> from tmx.attribution._fullgrad import bias_model
    >>> wired, sites = bias_model(model)
    >>> [site["name"] for site in sites]
    ['conv1', 'conv2', 'dense', 'logits']
    """

    model = load_model(model)
    graph = model_graph(model)
    if graph is None:
        raise ValueError("full_grad needs a functional or Sequential model (its graph)")
    values: dict[str, np.ndarray] = {}
    site_of: dict[str, str] = {}
    bias_entries(graph, "", fold, values, site_of)
    groups = by_path(call_sites(graph))
    records: dict = {}
    inputs = tree.map_structure(fresh_input, graph._inputs_struct)
    run_graph(graph, tree.flatten(inputs), (), False, records)

    sites: list[dict] = []
    deltas: list[Any] = []
    substitute: dict = {}
    for name, bias in values.items():
        path = tuple(site_of[name].split("/"))
        for call, site in enumerate(groups.get(path, [])):
            if site.key not in records:
                continue
            out = records[site.key][1][0]
            shape = tuple(int(s) for s in out.shape[1:])
            if bias.size == 0 or shape[-1] != bias.size:
                continue  # not a per-channel (channels-last) offset
            delta = keras.Input(
                batch_shape=(None, *shape), dtype="float32", name=f"delta_{len(deltas)}"
            )
            op = site.op
            fused = has_kernel(op) and not is_linear(op)

            def fn(op, args, kwargs, delta=delta, fused=fused):
                if fused:
                    twin = _linear_twin(op, args)
                    return op.activation(keras.ops.add(twin(*args, **kwargs), delta))
                y = op(*args, **kwargs)
                return keras.ops.add(y[0] if isinstance(y, list | tuple) else y, delta)

            substitute[site.key] = ("call", fn)
            deltas.append(delta)
            sites.append(
                {"name": name, "site": "/".join(path), "call": call, "bias": bias, "shape": shape}
            )
    new_inputs = tree.map_structure(fresh_input, graph._inputs_struct)
    outputs = run_graph(graph, tree.flatten(new_inputs), (), False, {}, substitute)
    if len(outputs) != 1:
        raise ValueError("full_grad needs a model with one output")
    wired = keras.Model([*tree.flatten(new_inputs), *deltas], outputs[0], name=f"{model.name}_bias")
    return wired, sites


def _compile(wired: Any, qoi: Any, x_shape: tuple, shapes: list[tuple], batch: int):

    specs = [tf.TensorSpec((batch, *x_shape), tf.float32), _param_spec(tf, qoi, batch)]

    @tf.function(input_signature=specs)
    def gradients(x, params):
        deltas = [tf.zeros((batch, *s), tf.float32) for s in shapes]
        with tf.GradientTape() as tape:
            tape.watch(x)
            for d in deltas:
                tape.watch(d)
            y = tf.cast(wired([x, *deltas], training=False), tf.float32)
            q = _qoi_tensor(tf, qoi, y, params)
            total = tf.reduce_sum(q)
        grads = tape.gradient(total, [x, *deltas])
        return [
            tf.zeros_like(t) if g is None else g for g, t in zip(grads, [x, *deltas], strict=True)
        ], q

    return gradients


def _postprocess(term: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """The paper's ψ then rescaling, per sample over the whole term: |t| − min, / (max + ε)."""
    flat = np.abs(term).reshape(term.shape[0], -1)
    flat = flat - flat.min(axis=1, keepdims=True)
    flat = flat / (flat.max(axis=1, keepdims=True) + eps)
    return flat.reshape(term.shape)


def full_grad(
    model: Any,
    x: Any,
    target: Any = None,
    *,
    normalize: bool = True,
    fold: bool = True,
    return_delta: bool = False,
    batch_size: int = 64,
    progress: bool | None = None,
) -> xr.DataArray | xr.Dataset:
    """FullGrad saliency (Srinivas & Fleuret 2019) at the input's resolution.

    .. math::

        S(x) = ψ(∇ₓQ ⊙ x) + Σ_{l spatial} \\operatorname{up}\\big(ψ(∂Q/∂h_l ⊙ b_l)\\big)

    summed over channels, with ψ = |·| followed (``normalize=True``, the paper's code) by a
    per-sample rescaling of each term to [0, 1] (t − min t) / (max(t − min t) + 1e-6), and
    ``up`` a bilinear resize (``tf.image.resize``, half-pixel centres; the authors' PyTorch
    code uses ``align_corners=True``) to the input's (H, W). Only bias sites with spatial
    axes (y, x, channel) enter the map, as in the paper; every site enters ``delta``.

    Parameters
    ----------
    model : keras.Model
        Functional or Sequential, one output (classes), channels-last.
    x : array-like or xr.DataArray
        Images (N, H, W, C).
    target : int, sequence of int, or None
        The class explained (None: the predicted class).
    normalize : bool, default True
        The paper's per-term rescaling; ``False`` sums the raw |terms|.
    fold : bool, default True
        Fold BatchNormalization into the preceding kernel layer's bias
        (``tmx.inspect.biases``); ``False`` treats every BN offset as its own bias.
    return_delta : bool, default False
        Also return ``delta`` = Σ ∇ₓQ ⊙ x + Σ_l Σ_p ∂Q/∂h_l[p] b_l[p] − Q(x) per sample: the
        completeness error of the decomposition (0 up to rounding for a network of affine
        maps and piecewise-linear activations; not 0 for smooth activations or pooling
        other than max/average).
    batch_size : int, default 64
    progress : bool or None, default None
        A progress bar over the compiled gradient calls, one per ``batch_size`` samples; None:
        when run interactively (a terminal, not under pytest or CI). The numbers are the same
        with or without it.

    Returns
    -------
    xr.DataArray or xr.Dataset
        ``attribution`` (sample, y, x, channel=1), float64; with ``return_delta`` a Dataset
        with ``delta`` (sample) too. attrs: method, qoi, bias_sites (layer names), fold and
        normalize (0/1), tmx_version.

    References
    ----------
    Srinivas, S. & Fleuret, F. (2019). Full-Gradient Representation for Neural Network
    Visualization. NeurIPS. arXiv:1905.00780.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx import attribution as A
    >>> model = tmx.models.small_cnn((8, 8, 1), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    >>> out = A.full_grad(model, x, 3, return_delta=True)
    >>> out["attribution"].shape, out.attrs["bias_sites"]
    ((2, 8, 8, 1), ['conv1', 'conv2', 'dense', 'logits'])
    >>> bool(np.abs(out["delta"]).max() < 1e-3)                    # complete: ReLU and max pooling
    True
    """

    show = _progress.resolve(progress)
    normalize = v.flag(normalize, "normalize")
    fold = v.flag(fold, "fold")
    return_delta = v.flag(return_delta, "return_delta")
    batch_size = v.positive_int(batch_size, "batch_size")
    values, coords = _as_inputs(x)
    if values.ndim != 4:
        raise ValueError(f"x must be images (N, H, W, C) for full_grad; got shape {values.shape}")
    qoi = _target(model, values, target, batch_size)
    if qoi.kind != "class":
        raise ValueError("full_grad needs a class target (an int, one per sample, or None)")
    wired, sites = bias_model(model, fold=fold)
    shapes = [s["shape"] for s in sites]
    gradients = _compile(wired, qoi, values.shape[1:], shapes, batch_size)

    n, height, width, _ = values.shape
    calls = -(-n // batch_size)
    log.info(
        "full_grad: %d image(s) of %d x %d, %d bias site(s), %d gradient call(s) of %d rows",
        n,
        height,
        width,
        len(sites),
        calls,
        batch_size,
    )
    saliency = np.zeros((n, height, width, 1))
    delta = np.zeros(n)
    post = _postprocess if normalize else np.abs
    with _progress.steps(calls, show, "batch") as bar:
        for a, b in _batches(n, batch_size):
            params = _row_params(qoi, np.arange(a, b), batch_size)
            grads, q = gradients(tf.constant(pad_rows(values[a:b], batch_size)), params)
            rows = b - a
            gx = np.asarray(grads[0], np.float64)[:rows]
            term = gx * values[a:b].astype(np.float64)
            saliency[a:b] += post(term).sum(axis=-1, keepdims=True)
            delta[a:b] += term.reshape(rows, -1).sum(axis=1) - np.asarray(q, np.float64)[:rows]
            for site, g in zip(sites, grads[1:], strict=True):
                bterm = np.asarray(g, np.float64)[:rows] * site["bias"]
                delta[a:b] += bterm.reshape(rows, -1).sum(axis=1)
                if len(site["shape"]) == 3:
                    summed = post(bterm).sum(axis=-1, keepdims=True)
                    saliency[a:b] += tf.image.resize(summed, (height, width)).numpy()
            bar.advance()
    attrs = provenance(
        "method",
        "full_grad",
        qoi=qoi.description,
        bias_sites=[s["site"] + (f"#{s['call']}" if s["call"] else "") for s in sites],
        fold=fold,
        normalize=normalize,
    )
    out = xr.DataArray(
        saliency,
        dims=("sample", "y", "x", "channel"),
        coords=coords,
        name="attribution",
        attrs=attrs,
    )
    if not return_delta:
        return out
    d = xr.DataArray(delta, dims=("sample",), coords=coords, name="delta")
    return xr.Dataset({"attribution": out, "delta": d}, attrs=attrs)


__all__ = ["bias_model", "full_grad"]
