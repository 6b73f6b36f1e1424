"""The biases of a model's units, BatchNorm folded into the layer before it."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from .._graph import (
    bias_entries,
    bn_affine,
    has_kernel,
    kernel_bias,
    ln_offset,
    model_graph,
    walk_layers,
)
from .._validate import flag
from .layers import load_model


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

    Examples
    --------
    >>> import keras, numpy as np, tmx
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d"),
    ...                           keras.layers.BatchNormalization(name="bn")])
    >>> _ = model.get_layer("d").bias.assign([1.0, 2.0])
    >>> _ = model.get_layer("bn").moving_variance.assign([4.0, 4.0])
    >>> {name: np.round(b, 2).tolist() for name, b in tmx.inspect.biases(model).items()}
    {'d': [0.5, 1.0]}
    >>> sorted(tmx.inspect.biases(model, fold=False))
    ['bn', 'd']
    """
    model = load_model(model, safe_mode=safe_mode)
    fold = flag(fold, "fold")
    graph = model_graph(model)
    out: dict[str, np.ndarray] = {}
    if graph is not None:
        bias_entries(graph, "", fold, out)
        return out
    for path, layer in walk_layers(model):
        name = "/".join(path)
        if has_kernel(layer):
            try:
                shape = tuple(layer.output.shape)
            except Exception:
                shape = ()
            out[name] = kernel_bias(layer, shape)
        elif isinstance(layer, keras.layers.BatchNormalization):
            out[name] = bn_affine(layer)[1]
        elif isinstance(layer, keras.layers.LayerNormalization):
            out[name] = ln_offset(layer)
    return out
