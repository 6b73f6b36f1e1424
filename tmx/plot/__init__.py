"""Figures of tmx results, built with matplotlib.

Every function returns a ``matplotlib.figure.Figure`` and never calls ``plt.show()``;
those with an ``ax`` argument draw into a given axes (and return its figure) or create a new
figure. Import explicitly: ``import tmx.plot``.

- ``layer_curves``: per-layer results (and bootstrap intervals) over the layers.
- ``unit_heatmap``: the per-unit values of one layer, channels × spatial positions.
- ``accuracy_scatter``: accuracy against a measure, one point per transformation group.
- ``transform_preview``: a grid of inputs under the transformations of a set.
- ``overlay``: a heat map (attribution, feature map) drawn over an image.
"""

from .analysis import accuracy_scatter
from .layers import layer_curves
from .overlay import overlay
from .transforms import transform_preview
from .units import unit_heatmap

__all__ = [
    "accuracy_scatter",
    "layer_curves",
    "overlay",
    "transform_preview",
    "unit_heatmap",
]
