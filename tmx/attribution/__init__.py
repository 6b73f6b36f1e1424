"""Attributions: which input values drive a quantity of interest (internal influence).

So far: ``attribute`` at the model input or any layer cut (the graph re-wired by
``tmx.inspect.rewire``), QoIs at the output or a layer, point / linear (any quadrature rule) /
gaussian / custom distributions of interest at the cut or along the input path;
``saliency``, ``input_x_gradient``, ``integrated_gradients``, ``smoothgrad`` (and its
``smoothgrad_sq`` / ``vargrad`` kinds), ``quadrature`` and ``channel``; the CAM family
(``cam``, ``grad_cam``, ``grad_cam_pp``, ``score_cam``) and ``upsample``. ``over_transforms``,
the attribution cube that ``tmx.invert`` and every measure apply to. Metrics: ``infidelity``,
``sensitivity_max``, ``deletion``, ``insertion``. ``full_grad`` (input- and bias-gradient
terms, BatchNorm folded). ``noise_tunnel`` around any method, ``layer_conductance``,
``gradient_shap`` (expected gradients), ``guided_backprop`` and ``guided_grad_cam`` (ReLU
gradients overridden in a rewired copy of the model).
"""

from ._cam import cam, grad_cam, grad_cam_pp, score_cam, upsample
from ._core import attribute, channel
from ._doi import RULES, quadrature
from ._fullgrad import full_grad
from ._guided import guided_backprop, guided_grad_cam, guided_model
from ._methods import gradient_shap, layer_conductance, noise_tunnel, shap_draws
from ._metrics import deletion, infidelity, insertion, sensitivity_max
from ._shortcuts import input_x_gradient, integrated_gradients, saliency, smoothgrad
from ._transforms import over_transforms

__all__ = [
    "RULES",
    "attribute",
    "cam",
    "channel",
    "deletion",
    "full_grad",
    "grad_cam",
    "grad_cam_pp",
    "gradient_shap",
    "guided_backprop",
    "guided_grad_cam",
    "guided_model",
    "infidelity",
    "input_x_gradient",
    "insertion",
    "integrated_gradients",
    "layer_conductance",
    "noise_tunnel",
    "over_transforms",
    "quadrature",
    "saliency",
    "score_cam",
    "sensitivity_max",
    "shap_draws",
    "smoothgrad",
    "upsample",
]
