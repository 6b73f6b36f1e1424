"""Introspectors over responses (a cube or any (sample, unit) DataArray), streamed by chunks.

Available: ``pfa`` / ``pfa_recipe`` (principal filter analysis), ``iua`` (inactive units) and
``familiarity`` (Gaussian-mixture log-likelihoods).
"""

from ._common import as_responses
from .familiarity import familiarity
from .iua import iua
from .pfa import pfa, pfa_recipe

__all__ = ["as_responses", "familiarity", "iua", "pfa", "pfa_recipe"]
