"""The names the documentation's code assumes a reader already has, at small sizes.

A page of the user guide often starts from "a model", "some images" or "a cube" that the reader
made earlier. ``tests/test_docs_run.py`` runs every page's code with these stand-ins bound
before the page's first block; a page that defines a name itself (``model = ...``) uses its own.
Only the names a page reads before assigning them are built, and each is built once per test
session (none is modified by a page: the model is never trained or compiled here).

=========  ===================================================================================
name       value
=========  ===================================================================================
``data``   ``tmx.datasets.digits(16, normalize=False)``: the scikit-learn digits, 16 × 16
``model``  ``tmx.models.small_cnn((16, 16, 1), seed=0)``, untrained (conv1, pool1, conv2,
           pool2, flatten, dense, logits)
``x``      the first 16 test digits, float32 NHWC ``(16, 16, 16, 1)`` in [0, 1]
``y``      their labels, int64 ``(16,)``
``tset``   ``tmx.transforms.rotation([0, 90, 180, 270])`` (``transforms`` is the same set)
``cube``   ``tmx.activations(model, x, tset, labels=y)``, computed once and kept in memory as
           a dask-backed ``DataArray`` (lazy in, lazy out, without repeating the forward pass)
=========  ===================================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

N_SAMPLES = 16
SIZE = 16
ANGLES = (0, 90, 180, 270)

_cache: dict[str, Any] = {}


def _data() -> Any:
    import tmx

    return tmx.datasets.digits(SIZE, normalize=False)


def _model() -> Any:
    import tmx

    return tmx.models.small_cnn((SIZE, SIZE, 1), seed=0)


def _x() -> Any:
    return get("data").x_test[:N_SAMPLES]


def _y() -> Any:
    return get("data").y_test[:N_SAMPLES]


def _tset() -> Any:
    from tmx import transforms as T

    return T.rotation(list(ANGLES))


def _cube() -> Any:
    import tmx

    cube = tmx.activations(get("model"), get("x"), get("tset"), labels=get("y"), progress=False)
    return cube.persist()


BUILDERS: dict[str, Callable[[], Any]] = {
    "data": _data,
    "model": _model,
    "x": _x,
    "y": _y,
    "tset": _tset,
    "transforms": _tset,
    "cube": _cube,
}


def get(name: str) -> Any:
    """The stand-in called ``name``, built on first use and kept for the session."""
    if name not in _cache:
        _cache[name] = BUILDERS[name]()
    return _cache[name]


def namespace(names: Iterable[str]) -> dict[str, Any]:
    """A fresh global namespace for one page: ``__name__ == "__main__"`` (as in a script) and
    the stand-ins among ``names`` (the names the page reads before assigning them)."""
    ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
    for name in names:
        if name in BUILDERS:
            ns[name] = get(name)
    return ns
