"""Figures of tmx results, built with matplotlib.

Every function returns a ``matplotlib.figure.Figure`` and never calls ``plt.show()``;
those with an ``ax`` argument draw into a given axes (and return its figure) or create a new
figure. Import explicitly: ``import tmx.plot``.

- ``convergence``: a measure and its interval against the number of samples
  (``tmx.convergence``).
- ``layer_curves``: per-layer results (and bootstrap intervals) over the layers.
- ``unit_heatmap``: the per-unit values of one layer, channels × spatial positions.
- ``accuracy_scatter``: accuracy against a measure, one point per transformation group.
- ``transform_preview``: a grid of inputs under the transformations of a set.
- ``overlay``: a heat map (attribution, feature map) drawn over an image.
- ``attribution`` / ``attribution_mask``: attribution heat maps over images (a samples ×
  methods grid) and images masked by their attribution; ``normalize_attribution``.
- ``similarity_heatmap``: CKA between layers (``tmx.cka``) or over transformations
  (``tmx.cka_invariance``).
"""

from .analysis import accuracy_scatter
from .attribution import attribution, attribution_mask, normalize_attribution
from .convergence import convergence
from .layers import layer_curves
from .overlay import overlay
from .similarity import similarity_heatmap
from .transforms import transform_preview
from .units import unit_heatmap

__all__ = [
    "accuracy_scatter",
    "attribution",
    "attribution_mask",
    "convergence",
    "layer_curves",
    "normalize_attribution",
    "overlay",
    "similarity_heatmap",
    "transform_preview",
    "unit_heatmap",
]
