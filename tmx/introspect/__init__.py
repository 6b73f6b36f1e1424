"""Introspectors over responses (a cube or any (sample, unit) DataArray), streamed by chunks.

Available: ``iua`` (inactive units) and ``familiarity`` (Gaussian-mixture log-likelihoods).
"""

from ._common import as_responses
from .familiarity import familiarity
from .iua import iua

__all__ = ["as_responses", "familiarity", "iua"]
