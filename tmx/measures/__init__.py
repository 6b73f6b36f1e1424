"""Invariance and same-equivariance measures: pure functions over the activation cube."""

from .anova import adjust_pvalues, anova, anova_invariance
from .bootstrap import bootstrap
from .convergence import convergence
from .distance import normalized_distance, sample_distance, transformation_distance
from .equivariance import invert
from .goodfellow import goodfellow
from .maps import equivalence, equivariance_map
from .reduce import by_channel, by_layer
from .similarity import cka, cka_invariance
from .variance import normalized_variance, sample_variance, transformation_variance

__all__ = [
    "adjust_pvalues",
    "anova",
    "anova_invariance",
    "bootstrap",
    "by_channel",
    "by_layer",
    "cka",
    "cka_invariance",
    "convergence",
    "equivalence",
    "equivariance_map",
    "goodfellow",
    "invert",
    "normalized_distance",
    "normalized_variance",
    "sample_distance",
    "sample_variance",
    "transformation_distance",
    "transformation_variance",
]
