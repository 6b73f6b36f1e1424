"""Invariance and same-equivariance measures: pure functions over the activation cube."""

from .bootstrap import bootstrap
from .distance import normalized_distance, sample_distance, transformation_distance
from .equivariance import invert
from .reduce import by_channel, by_layer
from .variance import normalized_variance, sample_variance, transformation_variance

__all__ = [
    "bootstrap",
    "by_channel",
    "by_layer",
    "invert",
    "normalized_distance",
    "normalized_variance",
    "sample_distance",
    "sample_variance",
    "transformation_distance",
    "transformation_variance",
]
