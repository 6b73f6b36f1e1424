"""Renamed arguments: the old keyword keeps working for a while, with a ``DeprecationWarning``."""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

UNSET: Any = object()
"""The default of a deprecated keyword: tells "not passed" from any value."""


def renamed(func: str, old: str, new: str, old_value: Any, new_value: Any, default: Any) -> Any:
    """The value of ``new``, taking the deprecated keyword ``old`` when it was passed.

    ``old_value`` is what the caller passed as ``old`` (``UNSET`` when not passed) and
    ``new_value`` what it passed as ``new`` (``default`` when not passed). Passing ``old``
    warns (``DeprecationWarning``, naming both); passing both is a ``TypeError``.

    Examples
    --------
    >>> import warnings
    >>> from tmx._deprecation import UNSET, renamed
    >>> def reduce(x, n_components=2, dims=UNSET):
    ...     return renamed("reduce", "dims", "n_components", dims, n_components, 2)
    >>> reduce(None, n_components=3)
    3
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     value = reduce(None, dims=5)
    >>> value, caught[0].category.__name__
    (5, 'DeprecationWarning')
    >>> print(caught[0].message)
    reduce(): dims= is deprecated and will be removed; use n_components= instead
    >>> reduce(None, n_components=3, dims=5)
    Traceback (most recent call last):
    ...
    TypeError: reduce() got both dims= (deprecated) and n_components=; pass n_components= only
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


def renamed_keyword(old: str, new: str) -> Callable[[F], F]:
    """Accept the deprecated keyword ``old`` for the parameter ``new`` of the decorated function.

    For a parameter that has no default (a first argument): positional calls are unchanged;
    ``old=`` warns (``DeprecationWarning`` naming ``new``) and passing both is a ``TypeError``,
    both through ``renamed``.

    Examples
    --------
    >>> import warnings
    >>> from tmx._deprecation import renamed_keyword
    >>> @renamed_keyword("tset", "transforms")
    ... def size(transforms):
    ...     return len(transforms)
    >>> size([1, 2])
    2
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     value = size(tset=[1, 2, 3])
    >>> value, caught[0].category.__name__
    (3, 'DeprecationWarning')
    """

    def decorate(func: F) -> F:
        position = list(inspect.signature(func).parameters).index(new)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if old in kwargs:
                given = args[position] if len(args) > position else kwargs.pop(new, UNSET)
                value = renamed(func.__name__, old, new, kwargs.pop(old), given, UNSET)
                if len(args) <= position:
                    kwargs[new] = value
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
