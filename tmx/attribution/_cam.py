"""Class activation maps on a layer with spatial axes: CAM, Grad-CAM, Grad-CAM++, Score-CAM.

Each returns one raw, unnormalised map per sample, L = Σ_k w_k A_k (then a ReLU where the
method has one), at the layer's resolution, as a DataArray ``(sample, y, x, channel)`` with a
channel axis of size 1; :func:`upsample` resizes maps to the input's size.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import keras
import numpy as np
import tensorflow as tf
import xarray as xr

from .. import _progress
from .. import _validate as v
from .._batching import pad_rows
from .._provenance import provenance
from .._version import __version__
from ..inspect import default_endpoints, logits_layer, resolve
from ._core import (
    _as_inputs,
    _batches,
    _check_classes,
    _head_values,
    _parse_qoi,
    _predict,
    _qoi_model,
    _rewired,
    _row_params,
    _single_output,
    _tail_functions,
)

# tf.image.resize methods of upsampled maps
Resize = Literal["bilinear", "nearest", "bicubic", "area"]
RESIZES = get_args(Resize)  # checked at the call


def _all_layers(model: Any) -> list[Any]:
    """The layers a model tracks, nested ones included, depth first."""
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        out.extend(_all_layers(layer))
    return out


def _require_graph(model: Any, method: str) -> None:
    """Raise unless ``model`` is a functional or Sequential Keras model with one output: a CAM
    reads a layer's activations (and gradients) by cutting the model's graph of layers there."""

    subclassed = (
        isinstance(model, keras.Model)
        and not isinstance(model, keras.Sequential)
        and getattr(model, "_nodes_by_depth", None) is None
    )
    if subclassed:
        spatial = [
            f"{layer.name!r} ({type(layer).__name__})"
            for layer in _all_layers(model)
            if "Conv" in type(layer).__name__ or "Pool" in type(layer).__name__
        ]
        holds = f" (it holds {', '.join(spatial[:4])}{', ...' * (len(spatial) > 4)})" * bool(
            spatial
        )
        raise ValueError(
            f"{method} cuts the model's graph of layers at a layer with spatial axes, and "
            f"{model.name!r} is a subclassed keras.Model{holds}: its call() is Python code, "
            "so it has no graph of layers to cut. Build the same layers as a functional model "
            "(keras.Model(inputs, outputs)) or a keras.Sequential, or use an attribution at "
            "the input, which works on any model (tmx.attribution.saliency, "
            "integrated_gradients, smoothgrad)"
        )
    _single_output(model, method)


def _spatial_layer(model: Any, layer: Any, method: str) -> tuple[Any, str]:
    """The layer descriptor and its endpoint name: ``layer`` or the last with (y, x, c) maps."""

    _require_graph(model, method)
    if layer is not None:
        endpoint = resolve(model, [layer])[0]
        if len(endpoint.shape) != 3:
            raise ValueError(
                f"layer {endpoint.name!r} must have spatial axes (y, x, channel); its output "
                f"has shape {endpoint.shape}"
            )
        return layer, endpoint.name
    for desc, endpoint in reversed(
        list(zip(default_endpoints(model), resolve(model, default_endpoints(model)), strict=True))
    ):
        if len(endpoint.shape) == 3:
            return desc, endpoint.name
    raise ValueError(
        f"{method}: model {model.name!r} has no layer with spatial axes (y, x, channel) to "
        "compute a class activation map on"
    )


def _maps(
    values: np.ndarray, weights: np.ndarray, activations: np.ndarray, relu: bool
) -> np.ndarray:
    """L = Σ_k w_k A_k per sample: weights (N, C) or (N, H, W, C), activations (N, H, W, C)."""
    if weights.ndim == 2:
        weights = weights[:, None, None, :]
    out = (weights * activations).sum(axis=-1, keepdims=True)
    return np.maximum(out, 0.0) if relu else out


def _result(maps: np.ndarray, coords: dict, method: str, layer: str, qoi: str, **extra):
    attrs = provenance("method", method, cut=layer, qoi=qoi, **extra)
    return xr.DataArray(
        maps, dims=("sample", "y", "x", "channel"), coords=coords, name="attribution", attrs=attrs
    )


def _gradients(model, values, qoi, layer, batch_size, progress: bool = False):
    """Activations A (N, H, W, C) at the layer and ∂Q/∂A at A (float64); ``progress``: a bar
    over the compiled gradient calls (batches of ``batch_size`` samples)."""
    head, tail = _rewired(model, layer, None)
    acts = _head_values(head, values, batch_size)
    grad, _ = _tail_functions(tail, qoi, values.shape[1:], acts.shape[1:], batch_size)
    out = np.empty(acts.shape, np.float64)
    n = values.shape[0]
    with _progress.steps(-(-n // batch_size), progress, "batch") as bar:
        for a, b in _batches(n, batch_size):
            params = _row_params(qoi, np.arange(a, b), batch_size)
            g = grad(pad_rows(values[a:b], batch_size), pad_rows(acts[a:b], batch_size), params)
            out[a:b] = np.asarray(g, np.float64)[: b - a]
            bar.advance()
    return acts.astype(np.float64), out


def _target(model: Any, values: np.ndarray, target: Any, batch_size: int):
    q_model = _qoi_model(model, None)
    qoi = _parse_qoi(
        "max" if target is None else target,
        values.shape[0],
        lambda: _predict(q_model, values, batch_size),
    )
    _check_classes(qoi, q_model, values, "target")
    return qoi


def grad_cam(
    model: Any,
    x: Any,
    target: Any = None,
    *,
    layer: Any = None,
    relu: bool = True,
    batch_size: int = 64,
    progress: bool | None = None,
) -> xr.DataArray:
    """Grad-CAM (Selvaraju et al. 2017): L = ReLU(Σ_k α_k A_k), α_k = mean_{y,x} ∂Q/∂A_k.

    ``target``: an int class, one per sample, or ``None`` for the predicted class; ``layer``:
    a layer with spatial axes (default: the last one); ``relu=False`` keeps negative evidence.
    ``progress``: a bar over the compiled gradient calls, one per ``batch_size`` samples
    (None: when run interactively).

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx import attribution as A
    >>> model = tmx.models.small_cnn((8, 8, 1), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    >>> maps = A.grad_cam(model, x, 3, layer="conv2")
    >>> maps.dims, maps.shape, maps.attrs["cut"]
    (('sample', 'y', 'x', 'channel'), (2, 4, 4, 1), 'conv2')
    >>> bool((maps >= 0).all())                                    # the ReLU of the map
    True
    """
    relu = v.flag(relu, "relu")
    show = _progress.resolve(progress)
    batch_size = v.positive_int(batch_size, "batch_size")
    values, coords = _as_inputs(x)
    layer, name = _spatial_layer(model, layer, "grad_cam")
    qoi = _target(model, values, target, batch_size)
    acts, grads = _gradients(model, values, qoi, layer, batch_size, show)
    maps = _maps(values, grads.mean(axis=(1, 2)), acts, relu)
    return _result(maps, coords, "grad_cam", name, qoi.description, relu=relu)


def grad_cam_pp(
    model: Any,
    x: Any,
    target: Any = None,
    *,
    layer: Any = None,
    batch_size: int = 64,
    progress: bool | None = None,
) -> xr.DataArray:
    """Grad-CAM++ (Chattopadhyay et al. 2018), the paper's closed form with spatial sums.

    With g = ∂S/∂A (S the class score) the paper's α for Y = exp(S) is
    α_ij^k = g² / (2 g² + Σ_ab A_ab^k g³), and w_k = Σ_ij α_ij^k ReLU(g_ij^k) (the factor
    exp(S) of ∂Y/∂A is the same for every channel of a sample, so it is left out: large
    logits cannot overflow); L = ReLU(Σ_k w_k A_k). Where the denominator is 0, α = 0.
    Differences with peers: the sum Σ_ab A_ab^k runs over the whole map of channel k (some
    implementations use a single position or the mean), and no ``exp`` is taken.
    ``progress``: a bar over the compiled gradient calls, one per ``batch_size`` samples
    (None: when run interactively).

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx import attribution as A
    >>> model = tmx.models.small_cnn((8, 8, 1), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    >>> maps = A.grad_cam_pp(model, x, 3, layer="conv2")
    >>> maps.shape, maps.attrs["method"]
    ((2, 4, 4, 1), 'grad_cam_pp')
    """
    show = _progress.resolve(progress)
    batch_size = v.positive_int(batch_size, "batch_size")
    values, coords = _as_inputs(x)
    layer, name = _spatial_layer(model, layer, "grad_cam_pp")
    qoi = _target(model, values, target, batch_size)
    acts, g = _gradients(model, values, qoi, layer, batch_size, show)
    g2, g3 = g**2, g**3
    den = 2.0 * g2 + acts.sum(axis=(1, 2), keepdims=True) * g3
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(den != 0.0, g2 / den, 0.0)
    weights = (alpha * np.maximum(g, 0.0)).sum(axis=(1, 2))
    maps = _maps(values, weights, acts, relu=True)
    return _result(maps, coords, "grad_cam_pp", name, qoi.description)


def cam(
    model: Any,
    x: Any,
    target: Any = None,
    *,
    layer: Any = None,
    batch_size: int = 64,
    progress: bool | None = None,
) -> xr.DataArray:
    """CAM (Zhou et al. 2016): L = Σ_k w_kc A_k with w the kernel of the logits layer
    (``tmx.inspect.logits_layer``), for a model whose last spatial layer is globally pooled
    into that layer. No ReLU, as in the paper. ``progress``: a bar over the forward calls to
    the layer, one per ``batch_size`` samples (None: when run interactively).

    Examples
    --------
    >>> import keras, numpy as np, tmx
    >>> from tmx import attribution as A
    >>> model = keras.Sequential(
    ...     [keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
    ...      keras.layers.GlobalAveragePooling2D(name="gap"), keras.layers.Dense(3, name="logits")])
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    >>> maps = A.cam(model, x, 1)                                # layer: the last spatial one
    >>> maps.shape, maps.attrs["cut"]
    ((2, 6, 6, 1), 'conv')
    >>> w = model.get_layer("logits").kernel.numpy()[:, 1]         # Σ_k w_k A_k, by hand
    >>> acts = np.asarray(tmx.inspect.expose(model, "conv")(x))
    >>> bool(np.allclose(maps[..., 0], acts @ w, atol=1e-5))
    True
    """

    batch_size = v.positive_int(batch_size, "batch_size")
    show = _progress.resolve(progress)
    values, coords = _as_inputs(x)
    layer, name = _spatial_layer(model, layer, "cam")
    qoi = _target(model, values, target, batch_size)
    if qoi.kind != "class":
        raise ValueError("cam needs a class target (an int, one per sample, or None)")
    kernel = np.asarray(logits_layer(model).kernel, np.float64)
    head, _ = _rewired(model, layer, None)
    calls = -(-values.shape[0] // batch_size)
    with _progress.steps(calls, show, "batch") as bar:
        acts = _head_values(head, values, batch_size, bar).astype(np.float64)
    if kernel.ndim != 2 or kernel.shape[0] != acts.shape[-1]:
        raise ValueError(
            f"cam needs the logits layer's kernel to map the {acts.shape[-1]} channels of "
            f"layer {name!r} to the classes (global pooling then Dense); its kernel has shape "
            f"{kernel.shape}"
        )
    maps = _maps(values, kernel[:, qoi.params].T, acts, relu=False)
    return _result(maps, coords, "cam", name, qoi.description)


def score_cam(
    model: Any,
    x: Any,
    target: Any = None,
    *,
    layer: Any = None,
    baseline: float = 0.0,
    batch_size: int = 64,
    progress: bool | None = None,
) -> xr.DataArray:
    """Score-CAM (Wang et al. 2020): α_k = f(X ∘ H_k) − f(X_b), L = ReLU(Σ_k α_k A_k).

    H_k is channel k's map upsampled (bilinear) to the input and min-max normalised to [0, 1]
    (a constant map gives 0), f the softmax probability of the target class, X_b the input
    filled with ``baseline``. The masked inputs of all channels go through the model in
    batches of ``batch_size`` (not one forward pass per channel). ``progress``: a bar over
    the samples (None: when run interactively).

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx import attribution as A
    >>> model = tmx.models.small_cnn((8, 8, 1), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    >>> maps = A.score_cam(model, x, 3, layer="conv2")
    >>> maps.shape, maps.attrs["method"], bool((maps >= 0).all())
    ((2, 4, 4, 1), 'score_cam', True)
    """

    show = _progress.resolve(progress)
    batch_size = v.positive_int(batch_size, "batch_size")
    baseline = v.finite_real(baseline, "baseline")
    values, coords = _as_inputs(x)
    if values.ndim != 4:
        raise ValueError(f"score_cam needs images (N, H, W, C); got shape {values.shape}")
    layer, name = _spatial_layer(model, layer, "score_cam")
    qoi = _target(model, values, target, batch_size)
    if qoi.kind != "class":
        raise ValueError("score_cam needs a class target (an int, one per sample, or None)")
    head, _ = _rewired(model, layer, None)
    acts = _head_values(head, values, batch_size)
    n, _, _, c = acts.shape
    size = values.shape[1:3]

    def prob(batch: np.ndarray, classes: np.ndarray) -> np.ndarray:
        out = np.empty(batch.shape[0])
        for a, b in _batches(batch.shape[0], batch_size):
            y = model(tf.constant(pad_rows(batch[a:b], batch_size)), training=False)
            y = y[0] if isinstance(y, list | tuple) else y
            p = tf.nn.softmax(tf.cast(y, tf.float64), axis=-1).numpy()[: b - a]
            out[a:b] = p[np.arange(b - a), classes[a:b]]
        return out

    base_p = prob(np.full_like(values, baseline), qoi.params)
    weights = np.empty((n, c))
    with _progress.steps(n, show, "sample") as bar:
        for i in range(n):
            up = tf.image.resize(np.moveaxis(acts[i], -1, 0)[..., None], size).numpy()[..., 0]
            lo = up.min(axis=(1, 2), keepdims=True)
            span = up.max(axis=(1, 2), keepdims=True) - lo
            masks = np.where(span > 0, (up - lo) / np.where(span > 0, span, 1.0), 0.0)
            masked = values[i][None] * masks[..., None].astype(np.float32)
            weights[i] = prob(masked, np.full(c, qoi.params[i])) - base_p[i]
            bar.advance()
    maps = _maps(values, weights, acts.astype(np.float64), relu=True)
    return _result(maps, coords, "score_cam", name, qoi.description, baseline=baseline)


def upsample(attr: xr.DataArray, size: Any, method: Resize = "bilinear") -> xr.DataArray:
    """Resize maps ``(sample, y, x, channel)`` to ``size`` = (H, W) (``tf.image.resize``).

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx import attribution as A
    >>> model = tmx.models.small_cnn((8, 8, 1), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    >>> maps = A.grad_cam(model, x, 3, layer="conv2")
    >>> big = A.upsample(maps, (8, 8))
    >>> big.shape, big.attrs["upsampled"]
    ((2, 8, 8, 1), '8x8 bilinear')
    """

    if not isinstance(attr, xr.DataArray) or attr.dims != ("sample", "y", "x", "channel"):
        raise ValueError("attr must be a DataArray with dims (sample, y, x, channel)")
    size = v.image_size(size, "size")
    v.choice(method, "method", RESIZES)
    data = tf.image.resize(attr.values, size, method=method).numpy().astype(np.float64)
    coords = {k: c.variable for k, c in attr.coords.items() if c.dims == ("sample",)}
    return xr.DataArray(
        data,
        dims=attr.dims,
        coords=coords,
        name=attr.name,
        attrs={
            **attr.attrs,
            "upsampled": f"{size[0]}x{size[1]} {method}",
            "tmx_version": attr.attrs.get("tmx_version", __version__),
        },
    )
