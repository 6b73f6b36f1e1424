"""tmx: measure and explain what neural networks compute.

The public API is flat: ``import tmx`` then ``tmx.<function>``. This module only re-exports.
"""

from . import attribution, datasets, flows, inspect, introspect, measures, models, plot, transforms
from ._schema import from_array
from ._version import __version__
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
    equivalence,
    equivariance_map,
    goodfellow,
    invert,
    normalized_distance,
    normalized_variance,
    sample_distance,
    sample_variance,
    transformation_distance,
    transformation_variance,
)
from .store import open, save, verify
from .transforms import TransformationSet

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
    "equivalence",
    "equivariance_map",
    "evaluate",
    "flows",
    "from_array",
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
    "verify",
]
