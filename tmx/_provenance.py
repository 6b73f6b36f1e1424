"""Provenance attrs of results: one encoding, one builder.

Every public function that returns a labeled result records in its ``attrs`` what made it:
its name (under the key results already use: ``measure``, ``method``, ``metric``,
``introspector``...), every option that changes the numbers, and ``tmx_version``. The values
are encoded one way, so that Zarr, netCDF and JSON read them back unchanged
(``docs/guide/conventions.md``, "Results"):

- numbers and strings as they are (numpy scalars become Python ``int``/``float``/``str``);
- booleans as ``0``/``1`` (netCDF has no boolean attribute type);
- ``None`` as the string ``"None"``;
- lists and tuples as lists of encoded values (nested ones as nested lists);
- anything else as its ``str``.

This module is a foundation: it imports nothing from tmx but the version.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._version import __version__

__all__ = ["CUBE_KEYS", "attr_value", "cube_provenance", "provenance"]

# the cube attrs a result copies, prefixed with "cube_", to say which model and which
# transformations it was computed from
CUBE_KEYS = ("model_name", "model_weights_sha256", "transforms_description")


def attr_value(value: Any) -> Any:
    """``value`` in the one attr encoding of tmx results.

    Parameters
    ----------
    value : any
        An option's value.

    Returns
    -------
    str, int, float or list
        Booleans (Python or numpy) as ``0``/``1``; ``None`` as ``"None"``; numbers and strings
        as they are (numpy scalars and 0-d arrays as Python scalars); lists, tuples and numpy
        arrays as lists of encoded values; anything else as ``str(value)``.

    Examples
    --------
    >>> import numpy as np
    >>> attr_value(True), attr_value(np.bool_(False)), attr_value(None)
    (1, 0, 'None')
    >>> attr_value(np.float32(0.5)), attr_value(np.int64(3)), attr_value("std")
    (0.5, 3, 'std')
    >>> attr_value((1, [None, True], np.arange(2)))
    [1, ['None', 1], [0, 1]]
    >>> attr_value(slice(2)), attr_value({"a": 1}), attr_value(b"raw"), attr_value("none")
    ('slice(None, 2, None)', "{'a': 1}", 'raw', 'none')

    Python types only, never numpy scalars or bools (netCDF and Zarr store them as they are):

    >>> scalars = (np.bool_(True), np.int32(-4), np.uint8(7), np.float32(0.5), np.array(2.5))
    >>> [(attr_value(v), type(attr_value(v)).__name__) for v in scalars]
    [(1, 'int'), (-4, 'int'), (7, 'int'), (0.5, 'float'), (2.5, 'float')]
    >>> others = (np.float64("nan"), np.str_("std"), [np.int64(2), (None,)])
    >>> [(attr_value(v), type(attr_value(v)).__name__) for v in others]
    [(nan, 'float'), ('std', 'str'), ([2, ['None']], 'list')]
    >>> [type(v).__name__ for v in attr_value([np.int64(2), np.float32(1.5), np.bool_(False)])]
    ['int', 'float', 'int']
    """
    if value is None:
        return "None"
    if isinstance(value, bool | np.bool_):
        return int(bool(value))
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.ndarray):
        return attr_value(value.item()) if value.ndim == 0 else attr_value(value.tolist())
    if isinstance(value, list | tuple):
        return [attr_value(v) for v in value]
    return str(value)


def provenance(kind_key: str, name: str, /, **options: Any) -> dict[str, Any]:
    """The attrs of a result: the function that made it, its options, the tmx version.

    Parameters
    ----------
    kind_key : str
        The key naming the function, as results already spell it: ``"measure"``,
        ``"method"``, ``"metric"``, ``"introspector"``...
    name : str
        The function's name (``"normalized_variance"``, ``"guided_backprop"``...).
    **options
        The options that change the numbers (and the facts of the run, such as
        ``n_samples``), each encoded by :func:`attr_value`.

    Returns
    -------
    dict
        ``{kind_key: name, **encoded options, "tmx_version": version}``.

    Examples
    --------
    >>> attrs = provenance("measure", "goodfellow", top=None, rate=0.01, normalize=True)
    >>> {k: v for k, v in attrs.items() if k != "tmx_version"}
    {'measure': 'goodfellow', 'top': 'None', 'rate': 0.01, 'normalize': 1}
    >>> list(attrs)[0], list(attrs)[-1], isinstance(attrs["tmx_version"], str)
    ('measure', 'tmx_version', True)
    >>> provenance("method", "saliency", ref=(0, np.int64(2)), parts=False)["ref"]
    [0, 2]
    """
    attrs: dict[str, Any] = {kind_key: str(name)}
    attrs.update({key: attr_value(value) for key, value in options.items()})
    attrs["tmx_version"] = __version__
    return attrs


def cube_provenance(cube_attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The cube's provenance a result carries: ``model_name``, ``model_weights_sha256`` and
    ``transforms_description`` of the cube's attrs (those present), as ``cube_<key>``.

    Examples
    --------
    >>> cube_provenance({"model_name": "cnn", "layers": ["a"], "transforms_description": "r"})
    {'cube_model_name': 'cnn', 'cube_transforms_description': 'r'}
    >>> cube_provenance({"model_weights_sha256": "ab", "fitted": True, "x": 1})
    {'cube_model_weights_sha256': 'ab'}
    """
    return {f"cube_{k}": attr_value(cube_attrs[k]) for k in CUBE_KEYS if k in cube_attrs}
