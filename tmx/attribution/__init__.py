"""Attributions: which input values drive a quantity of interest (internal influence).

This first part covers attributions at the model input for QoIs at the model output:
``attribute`` (point, linear and gaussian distributions of interest, any quadrature rule),
``saliency``, ``input_x_gradient``, ``integrated_gradients``, ``smoothgrad`` (and its
``smoothgrad_sq`` / ``vargrad`` kinds), ``quadrature`` and ``channel``. Layer cuts, the CAM
family, metrics and attributions over transformations come next.
"""

from ._core import attribute, channel
from ._doi import RULES, quadrature
from ._shortcuts import input_x_gradient, integrated_gradients, saliency, smoothgrad

__all__ = [
    "RULES",
    "attribute",
    "channel",
    "input_x_gradient",
    "integrated_gradients",
    "quadrature",
    "saliency",
    "smoothgrad",
]
