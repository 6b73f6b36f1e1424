"""tmx: measure and explain what neural networks compute.

The public API is flat: ``import tmx`` then ``tmx.<function>``. This module only re-exports.
"""

from importlib.metadata import PackageNotFoundError, version

from . import inspect, transforms
from .cube import activations
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
    "inspect",
    "open",
    "save",
    "transforms",
]
