"""Results memoised per live object (a Keras model), held weakly: they go with the object."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any

# one build at a time: two threads asking for the same result (dask tasks of one job) get the
# same object, built once (a compiled function traced once); reentrant, as a build may ask for
# another memoised result
_LOCK = threading.RLock()
_MISSING = object()


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
    weakly referenced.  Thread-safe: concurrent callers of one key get one result, built once.

    Examples
    --------
    >>> import gc
    >>> from tmx._memo import memo, per_object
    >>> class Model: pass
    >>> store, model, calls = per_object(), Model(), []
    >>> build = lambda: calls.append(1) or len(calls)
    >>> memo(store, model, "graph", build), memo(store, model, "graph", build)   # built once
    (1, 1)
    >>> import threading, time
    >>> slow = lambda: calls.append(1) or time.sleep(0.05) or len(calls)
    >>> threads = [threading.Thread(target=memo, args=(store, model, "slow", slow))
    ...            for _ in range(4)]
    >>> for t in threads: t.start()
    >>> for t in threads: t.join()
    >>> len(calls)                             # four threads at once: built once more, not 4
    2
    >>> del model; _ = gc.collect()
    >>> len(store)                             # the results went with the object
    0
    """
    with _LOCK:
        try:
            results = store.setdefault(owner, {})
        except TypeError:  # not weakly referenceable
            results = None
    if results is None:
        return build()
    found = results.get(key, _MISSING)  # a hit needs no lock
    if found is not _MISSING:
        return found
    with _LOCK:
        if key not in results:
            results[key] = build()
        return results[key]
