"""Renamed arguments: the old keyword keeps working for a while, with a ``DeprecationWarning``."""

from __future__ import annotations

import warnings
from typing import Any

UNSET: Any = object()
"""The default of a deprecated keyword: tells "not passed" from any value."""


def renamed(func: str, old: str, new: str, old_value: Any, new_value: Any, default: Any) -> Any:
    """The value of ``new``, taking the deprecated keyword ``old`` when it was passed.

    ``old_value`` is what the caller passed as ``old`` (``UNSET`` when not passed) and
    ``new_value`` what it passed as ``new`` (``default`` when not passed). Passing ``old``
    warns (``DeprecationWarning``, naming both); passing both is a ``TypeError``.
    """
    if old_value is UNSET:
        return new_value
    if new_value is not default and new_value != default:
        raise TypeError(f"{func}() got both {old}= (deprecated) and {new}=; pass {new}= only")
    warnings.warn(
        f"{func}(): {old}= is deprecated and will be removed; use {new}= instead",
        DeprecationWarning,
        stacklevel=3,
    )
    return old_value
