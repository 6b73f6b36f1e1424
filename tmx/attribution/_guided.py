"""Guided backpropagation and guided Grad-CAM, by a gradient override in a rewired copy.

The user's model is never changed: its graph is re-called (``tmx.inspect``'s flat rebuild,
the same layer objects and weights) with an identity gate after every ReLU whose gradient is
max(g, 0). Behind a ReLU y = max(p, 0) the gate turns the backward pass g ↦ g·1[p > 0] into
g ↦ max(g, 0)·1[p > 0], the guided ReLU of Springenberg et al. (2015); the forward pass is
unchanged, and a ReLU fused into a Dense/Conv layer (``activation="relu"``) is gated the same
way, since its output is the ReLU's.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf
import xarray as xr
from keras import tree

from .. import _progress
from .. import _validate as v
from .._graph import call_sites, fresh_input, model_graph, run_graph
from .._memo import memo, per_object
from .._provenance import provenance
from ._cam import RESIZES, Resize, _require_graph, _target, grad_cam
from ._core import _as_inputs, _require_eager, attribute

_GUIDED = per_object()


def _is_relu(op: Any) -> bool:
    """Whether ``op``'s output is a plain ReLU's (a ReLU layer, Activation("relu"), or a
    layer with a fused ``activation`` that is keras.activations.relu)."""

    if isinstance(op, keras.layers.ReLU):
        slope = float(np.asarray(getattr(op, "negative_slope", 0.0)))
        threshold = float(np.asarray(getattr(op, "threshold", 0.0)))
        return slope == 0.0 and threshold == 0.0
    if isinstance(op, keras.Model):
        return False
    return getattr(op, "activation", None) is keras.activations.relu


def _gate_layer():
    """The Keras layer class of the gate (built lazily: Keras is imported on use)."""

    class GuidedGate(keras.layers.Layer):
        """Identity forward; backward g ↦ max(g, 0)."""

        def call(self, inputs):
            @tf.custom_gradient
            def gate(t):
                def grad(dy):
                    return tf.nn.relu(dy)

                return tf.identity(t), grad

            return gate(inputs)

        def compute_output_shape(self, input_shape):
            return input_shape

    return GuidedGate


def guided_model(model: Any) -> tuple[Any, list[str]]:
    """A functional copy of ``model`` whose ReLUs back-propagate guided gradients, and the
    names of the gated layers. Same layers and weights as ``model`` (nothing is copied or
    changed); the same outputs. Cached per live model.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx import attribution as A
    >>> model = tmx.models.small_cnn((8, 8, 1), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    >>> wired, relus = A.guided_model(model)
    >>> relus
    ['conv1', 'conv2', 'dense']
    >>> bool(np.allclose(wired(x), model(x), atol=1e-6))          # the same outputs
    True
    """

    def build() -> tuple[Any, list[str]]:
        graph = model_graph(model)
        if graph is None:
            raise ValueError(
                f"model: guided backprop rewires the graph of layers of a functional or "
                f"Sequential model; the call of subclassed model {model.name!r} cannot be traced"
            )
        gate_cls = _gate_layer()
        substitute: dict = {}
        names: list[str] = []
        for site in call_sites(graph):
            if site.key in substitute or not _is_relu(site.op):
                continue

            gate = gate_cls(name=f"guided_{len(names)}")

            def fn(op, args, kwargs, gate=gate):
                y = op(*args, **kwargs)
                return gate(y[0] if isinstance(y, list | tuple) else y)

            substitute[site.key] = ("call", fn)
            names.append("/".join(site.path))
        inputs = tree.map_structure(fresh_input, graph._inputs_struct)
        outputs = run_graph(graph, tree.flatten(inputs), (), False, {}, substitute)
        wired = keras.Model(inputs, outputs[0], name=f"{model.name}_guided")
        return wired, names

    return memo(_GUIDED, model, "guided", build)


def guided_backprop(
    model: Any, x: Any, target: Any = None, *, batch_size: int = 64, progress: bool | None = None
) -> xr.DataArray:
    """Guided backpropagation (Springenberg et al. 2015): ∂Q/∂x with every ReLU's backward
    pass replaced by the guided rule.

    .. math::

        R^{(l)} = 1[p^{(l)} > 0] ⊙ \\max(R^{(l+1)}, 0)

    at every ReLU y = max(p, 0) (R the signal propagated backwards from Q), other layers
    back-propagated as usual. Computed on a rewired copy of the model
    (:func:`guided_model`), never by changing the model. For a network without ReLUs it is
    the plain gradient. Captum's ``GuidedBackprop`` overrides ``nn.ReLU`` modules the same
    way; here ReLU layers, ``Activation("relu")`` and layers with ``activation="relu"``
    are gated (a ReLU written as ``keras.ops.relu`` inside a custom layer is not seen).

    Parameters
    ----------
    model : keras.Model
        Functional or Sequential, one output.
    x : array-like or xr.DataArray
        Samples, sample axis first.
    target : int, ints or None
        The class explained (None: the predicted class).
    batch_size : int, default 64
    progress : bool or None, default None
        A bar over the compiled gradient calls on the rewired model, one per ``batch_size``
        samples. None: when run interactively (a terminal, not under pytest or CI).

    Returns
    -------
    xr.DataArray
        float64, x's dims ((sample, y, x, channel) for images); attrs: method, qoi, relus
        (the gated layers), tmx_version.

    References
    ----------
    Springenberg, J. T., Dosovitskiy, A., Brox, T., Riedmiller, M. (2015). Striving for
    simplicity: the all convolutional net. ICLR workshop, arXiv:1412.6806.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx import attribution as A
    >>> model = tmx.models.small_cnn((8, 8, 1), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    >>> A.guided_backprop(model, x, 3).attrs["relus"]
    ['conv1', 'conv2', 'dense']
    """
    _require_eager()
    _require_graph(model, "guided_backprop")
    batch_size = v.positive_int(batch_size, "batch_size")
    values, coords = _as_inputs(x)
    q = _target(model, values, target, batch_size)
    wired, names = guided_model(model)
    classes = q.params if q.kind == "class" else target
    out = attribute(
        wired,
        values,
        qoi=classes,
        multiply_activation=False,
        batch_size=batch_size,
        progress=progress,
    )
    attrs = provenance("method", "guided_backprop", qoi=q.description, relus=names)
    return xr.DataArray(out.values, dims=out.dims, coords=coords, name="attribution", attrs=attrs)


def guided_grad_cam(
    model: Any,
    x: Any,
    target: Any = None,
    *,
    layer: Any = None,
    interpolation: Resize = "bilinear",
    batch_size: int = 64,
    progress: bool | None = None,
) -> xr.DataArray:
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backpropagation ⊙ the Grad-CAM map
    upsampled to the input.

    .. math::

        Φ(x) = \\operatorname{GB}(x) ⊙ \\operatorname{up}\\big(
        \\operatorname{ReLU}(Σ_k α_k A_k)\\big),\\quad α_k = \\operatorname{mean}_{y,x}
        ∂Q/∂A_k

    with A the ``layer``'s maps (:func:`grad_cam`), ``up`` a resize to the input's (H, W)
    (``tf.image.resize``; the paper upsamples bilinearly, Captum's ``GuidedGradCam``
    defaults to ``"nearest"``), broadcast over the input's channels.

    Parameters
    ----------
    model : keras.Model
        Functional or Sequential, one output.
    x : array-like or xr.DataArray
        Images (N, H, W, C).
    target : int, ints or None
        The class explained (None: the predicted class).
    layer : endpoint descriptor, optional
        A layer with spatial axes (default: the last one), as in :func:`grad_cam`.
    interpolation : {"bilinear", "nearest", "bicubic", "area"}
    batch_size : int, default 64
    progress : bool or None, default None
        Two bars, one after the other, each over compiled gradient calls of ``batch_size``
        samples: :func:`grad_cam`'s (the gradients at ``layer``), then
        :func:`guided_backprop`'s (the guided gradients at the input). None: when run
        interactively (a terminal, not under pytest or CI).

    Returns
    -------
    xr.DataArray
        float64, (sample, y, x, channel) at the input's resolution; attrs: method, cut, qoi,
        interpolation, relus, tmx_version.

    References
    ----------
    Selvaraju, R. R., Cogswell, M., Das, A., Vedantam, R., Parikh, D., Batra, D. (2017).
    Grad-CAM: visual explanations from deep networks via gradient-based localization. ICCV.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx import attribution as A
    >>> model = tmx.models.small_cnn((8, 8, 1), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    >>> A.guided_grad_cam(model, x, 3, layer="conv2").shape
    (2, 8, 8, 1)
    """

    _require_eager()
    batch_size = v.positive_int(batch_size, "batch_size")
    v.choice(interpolation, "interpolation", RESIZES)
    show = _progress.resolve(progress)
    values, coords = _as_inputs(x)
    if values.ndim != 4:
        raise ValueError(f"guided_grad_cam needs images (N, H, W, C); got shape {values.shape}")
    q = _target(model, values, target, batch_size)
    classes = q.params if q.kind == "class" else target
    cam = grad_cam(
        model, values, classes, layer=layer, relu=True, batch_size=batch_size, progress=show
    )
    guided = guided_backprop(model, values, classes, batch_size=batch_size, progress=show)
    up = tf.image.resize(cam.values, values.shape[1:3], method=interpolation).numpy()
    data = guided.values * up.astype(np.float64)
    attrs = provenance(
        "method",
        "guided_grad_cam",
        cut=cam.attrs["cut"],
        qoi=q.description,
        interpolation=interpolation,
        relus=guided.attrs["relus"],
    )
    return xr.DataArray(
        data, dims=("sample", "y", "x", "channel"), coords=coords, name="attribution", attrs=attrs
    )


__all__ = ["guided_backprop", "guided_grad_cam", "guided_model"]
