"""Transformation sets: data with labeled parameters, applied as TensorFlow ops on batches.

Build sets with the constructors below, combine them with ``product`` and ``union``,
apply them with ``apply`` / ``apply_many``, and map feature maps back with ``invert_maps``
(``invert``: its deprecated former name). Geometric transformations of images need NHWC batches;
photometric, noise and custom ones, and ``roll``/``flip`` along a named axis, apply to batches of
any rank (tables, sequences, token ids); ``check_input`` tells which apply to an input. See
``tmx.transforms._set`` for the geometric conventions (pixel centres at integer coordinates, y
pointing down, counter-clockwise rotations in degrees).
"""

from ._apply import apply, apply_many, check_input, invert, invert_maps, point_matrix
from ._seed import GROUP_NAMES, seed_groups
from ._set import (
    FILLS,
    INTERPOLATIONS,
    TransformationSet,
    brightness,
    contrast,
    custom,
    flip,
    from_dict,
    gaussian_noise,
    identity,
    product,
    roll,
    rot90,
    rotation,
    scale,
    shear,
    translation,
    union,
)

__all__ = [
    "FILLS",
    "GROUP_NAMES",
    "INTERPOLATIONS",
    "TransformationSet",
    "apply",
    "apply_many",
    "brightness",
    "check_input",
    "contrast",
    "custom",
    "flip",
    "from_dict",
    "gaussian_noise",
    "identity",
    "invert",
    "invert_maps",
    "point_matrix",
    "product",
    "roll",
    "rot90",
    "rotation",
    "scale",
    "seed_groups",
    "shear",
    "translation",
    "union",
]
