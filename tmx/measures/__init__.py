"""Invariance and same-equivariance measures: pure functions over the activation cube."""

from .bootstrap import bootstrap
from .equivariance import invert
from .reduce import by_channel, by_layer
from .variance import normalized_variance, sample_variance, transformation_variance

__all__ = [
    "bootstrap",
    "by_channel",
    "by_layer",
    "invert",
    "normalized_variance",
    "sample_variance",
    "transformation_variance",
]
