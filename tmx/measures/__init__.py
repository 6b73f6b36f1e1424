"""Invariance and same-equivariance measures: pure functions over the activation cube."""

from .equivariance import invert
from .reduce import by_channel, by_layer
from .variance import normalized_variance, sample_variance, transformation_variance

__all__ = [
    "by_channel",
    "by_layer",
    "invert",
    "normalized_variance",
    "sample_variance",
    "transformation_variance",
]
