"""tmx: measure and explain what neural networks compute.

The public API is flat: ``import tmx`` then ``tmx.<function>``. This module only re-exports.
"""

from importlib.metadata import PackageNotFoundError, version

from . import attribution, datasets, flows, inspect, introspect, measures, models, plot, transforms
from .analysis import analyze, evaluate
from .cube import activations
from .measures import (
    adjust_pvalues,
    anova,
    anova_invariance,
    bootstrap,
    by_channel,
    by_layer,
    cka,
    cka_invariance,
    convergence,
    goodfellow,
    invert,
    normalized_distance,
    normalized_variance,
    sample_distance,
    sample_variance,
    transformation_distance,
    transformation_variance,
)
from .store import open, save
from .transforms import TransformationSet

try:
    __version__ = version("tmx-measures")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "TransformationSet",
    "__version__",
    "activations",
    "adjust_pvalues",
    "analyze",
    "anova",
    "anova_invariance",
    "attribution",
    "bootstrap",
    "by_channel",
    "by_layer",
    "cka",
    "cka_invariance",
    "convergence",
    "datasets",
    "evaluate",
    "flows",
    "goodfellow",
    "inspect",
    "introspect",
    "invert",
    "measures",
    "models",
    "normalized_distance",
    "normalized_variance",
    "open",
    "plot",
    "sample_distance",
    "sample_variance",
    "save",
    "transformation_distance",
    "transformation_variance",
    "transforms",
]
