"""Results memoised per live object (a Keras model), held weakly: they go with the object."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import Any


def per_object() -> weakref.WeakKeyDictionary[Any, dict[Hashable, Any]]:
    """A store for :func:`memo`: one dict of results per live object.

    Examples
    --------
    >>> from tmx._memo import per_object
    >>> store = per_object()
    >>> len(store)
    0
    """
    return weakref.WeakKeyDictionary()


def memo(
    store: weakref.WeakKeyDictionary[Any, dict[Hashable, Any]],
    owner: Any,
    key: Hashable,
    build: Callable[[], Any],
) -> Any:
    """``build()`` memoised under (``owner``, ``key``); not memoised when ``owner`` cannot be
    weakly referenced.

    Examples
    --------
    >>> import gc
    >>> from tmx._memo import memo, per_object
    >>> class Model: pass
    >>> store, model, calls = per_object(), Model(), []
    >>> build = lambda: calls.append(1) or len(calls)
    >>> memo(store, model, "graph", build), memo(store, model, "graph", build)   # built once
    (1, 1)
    >>> del model; _ = gc.collect()
    >>> len(store)                             # the results went with the object
    0
    """
    try:
        results = store.setdefault(owner, {})
    except TypeError:
        return build()
    if key not in results:
        results[key] = build()
    return results[key]
