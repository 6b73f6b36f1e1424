"""Results memoised per live object (a Keras model), held weakly: they go with the object."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import Any


def per_object() -> weakref.WeakKeyDictionary[Any, dict[Hashable, Any]]:
    """A store for :func:`memo`: one dict of results per live object."""
    return weakref.WeakKeyDictionary()


def memo(
    store: weakref.WeakKeyDictionary[Any, dict[Hashable, Any]],
    owner: Any,
    key: Hashable,
    build: Callable[[], Any],
) -> Any:
    """``build()`` memoised under (``owner``, ``key``); not memoised when ``owner`` cannot be
    weakly referenced."""
    try:
        results = store.setdefault(owner, {})
    except TypeError:
        return build()
    if key not in results:
        results[key] = build()
    return results[key]
