"""Invertible interpretation flows over the cube (``tmx.flows``).

A layer's representation z (D units) is mapped by an invertible flow T to z̃ = T(z), whose
dimensions are split into contiguous factor blocks (residual first). T is trained with the
factor loss on pairs the transformation cube provides (same sample, two transformations;
same transformation, two samples; equal labels...), so that each factor's block captures
what its pairs share (Esser, Rombach & Ommer 2020, "A Disentangling Invertible
Interpretation Network", arXiv:2004.13166; the gyoza package). Semantics in
``docs/flows.md``.

Keras layers (the only classes, because they carry weights) live in ``tmx.flows.layers``;
everything else is a pure function over labeled arrays.
"""

from . import layers
from ._build import flow
from ._diagnostics import check, disentanglement
from ._fit import fit
from ._latent import interpolate, inverse, swap, transform
from ._loss import factor_dimensions, factor_loss
from ._masks import inverse_permutation, mask, permutation
from ._pairs import pairs
from .layers import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    Flow,
    Householder,
    Permute,
    Standardize,
)

__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "Flow",
    "Householder",
    "Permute",
    "Standardize",
    "check",
    "disentanglement",
    "factor_dimensions",
    "factor_loss",
    "fit",
    "flow",
    "interpolate",
    "inverse",
    "inverse_permutation",
    "layers",
    "mask",
    "pairs",
    "permutation",
    "swap",
    "transform",
]
