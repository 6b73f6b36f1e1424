"""Argument validation helpers shared by every module.

Each helper raises ``ValueError`` naming the argument and saying what was expected, so that a
user sees at once which argument of which function was wrong.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar, overload

import numpy as np

_T = TypeVar("_T")


def _describe(value: Any) -> str:
    """A value as an error message shows it: its ``repr``, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def real_vector(
    value: Any,
    name: str,
    *,
    positive: bool = False,
    nonnegative: bool = False,
    allow_empty: bool = False,
) -> tuple[float, ...]:
    """A non-empty 1-D sequence (or scalar) of finite real numbers, as a tuple of floats."""
    if isinstance(value, str | bytes):
        raise ValueError(
            f"{name} must be a number or a sequence of numbers; got {_describe(value)}"
        )
    arr = np.asarray(value, dtype=object).reshape(-1) if np.ndim(value) <= 1 else None
    if arr is None:
        raise ValueError(f"{name} must be a scalar or 1-D sequence; got shape {np.shape(value)}")
    out = []
    for v in arr:
        if isinstance(v, bool | np.bool_) or not isinstance(v, numbers.Real):
            raise ValueError(f"{name} must contain only real numbers; got {_describe(v)}")
        f = float(v)
        if not np.isfinite(f):
            raise ValueError(f"{name} must contain only finite numbers; got {f}")
        if positive and f <= 0:
            raise ValueError(f"{name} must contain only positive numbers; got {f}")
        if nonnegative and f < 0:
            raise ValueError(f"{name} must contain only non-negative numbers; got {f}")
        out.append(f)
    if not out and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    return tuple(out)


def int_vector(value: Any, name: str, *, allow_empty: bool = False) -> tuple[int, ...]:
    """A non-empty 1-D sequence (or scalar) of integers (integral floats are refused)."""
    if isinstance(value, str | bytes) or np.ndim(value) > 1:
        raise ValueError(f"{name} must be an integer or a 1-D sequence of integers")
    out = []
    for v in np.asarray(value, dtype=object).reshape(-1):
        if isinstance(v, bool | np.bool_) or not isinstance(v, numbers.Integral):
            raise ValueError(f"{name} must contain only integers; got {_describe(v)}")
        out.append(int(v))
    if not out and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    return tuple(out)


def choice(value: Any, name: str, options: Iterable[_T]) -> _T:
    """One of a fixed set of options (strings, or numbers such as ``(1, -1)``), typed as the
    options are (a tuple of ``Literal`` strings gives that ``Literal``).

    A bool is never a valid choice, even where ``True == 1`` would match an option; a string
    must match exactly (no case folding). Raises ``ValueError`` naming ``name``, the options
    and the value given.

    Examples
    --------
    >>> choice("std", "dispersion", ("std", "var"))
    'std'
    >>> choice(True, "sign", (1, -1))
    Traceback (most recent call last):
    ...
    ValueError: sign must be one of [1, -1]; got True
    >>> int(choice(np.int64(-1), "sign", (1, -1)))
    -1

    Bools (Python or numpy), lists, arrays, another case and None are refused:

    >>> for bad in (False, np.bool_(True)):
    ...     try:
    ...         choice(bad, "sign", (1, -1))
    ...     except ValueError as err:
    ...         print(str(err).split("; got")[0])
    sign must be one of [1, -1]
    sign must be one of [1, -1]
    >>> for bad in (["std"], np.array(["std", "var"]), "STD", None):
    ...     try:
    ...         choice(bad, "d", ("std", "var"))
    ...     except ValueError as err:
    ...         print(err)
    d must be one of ['std', 'var']; got ['std']
    d must be one of ['std', 'var']; got array(['std', 'var'], dtype='<U3')
    d must be one of ['std', 'var']; got 'STD'
    d must be one of ['std', 'var']; got None
    >>> choice("none", "bias_correction", (None, "jackknife"))
    Traceback (most recent call last):
    ...
    ValueError: bias_correction must be one of [None, 'jackknife']; got 'none'
    """
    options = tuple(options)
    try:
        found = not isinstance(value, bool | np.bool_) and value in options
    except (TypeError, ValueError):  # an unhashable or array value: not an option
        found = False
    if not found:
        raise ValueError(f"{name} must be one of {list(options)}; got {_describe(value)}")
    return value


@overload
def seed(value: Any, name: str = ..., *, allow_none: Literal[False] = ...) -> int: ...
@overload
def seed(value: Any, name: str = ..., *, allow_none: bool) -> int | None: ...
def seed(value: Any, name: str = "seed", *, allow_none: bool = False) -> int | None:
    """A random seed: a non-negative integer (Python or numpy; ``numpy.random.default_rng``
    and scikit-learn refuse negative ones), or ``None`` where ``allow_none`` (fresh entropy).
    A bool is not a seed.

    Examples
    --------
    >>> seed(0), seed(None, allow_none=True)
    (0, None)
    >>> seed(-1)
    Traceback (most recent call last):
    ...
    ValueError: seed must be a non-negative integer; got -1
    >>> type(seed(np.int64(5))).__name__, seed(np.int64(5))
    ('int', 5)
    >>> for bad in (True, 1.0, "1", None):
    ...     try:
    ...         seed(bad)
    ...     except ValueError as err:
    ...         print(err)
    seed must be a non-negative integer; got True
    seed must be a non-negative integer; got 1.0
    seed must be a non-negative integer; got '1'
    seed must be a non-negative integer; got None
    >>> seed(-2, "rng", allow_none=True)
    Traceback (most recent call last):
    ...
    ValueError: rng must be a non-negative integer or None; got -2
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral) or value < 0:
        expected = "a non-negative integer or None" if allow_none else "a non-negative integer"
        raise ValueError(f"{name} must be {expected}; got {_describe(value)}")
    return int(value)


def flag(value: Any, name: str) -> bool:
    """A switch: ``True`` or ``False`` (Python or numpy bools). Integers, ``0``/``1``
    included, are refused: a switch given a number is more often a misplaced positional
    argument than a bool spelled as an int.

    Examples
    --------
    >>> flag(True, "parts")
    True
    >>> flag(1, "parts")
    Traceback (most recent call last):
    ...
    ValueError: parts must be True or False; got 1
    >>> flag(np.bool_(True), "parts") is True, flag(np.bool_(False), "parts") is False
    (True, True)
    >>> for bad in (0, "True", None, np.array([True])):
    ...     try:
    ...         flag(bad, "parts")
    ...     except ValueError as err:
    ...         print(err)
    parts must be True or False; got 0
    parts must be True or False; got 'True'
    parts must be True or False; got None
    parts must be True or False; got array([ True])
    """
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False; got {_describe(value)}")
    return bool(value)


def fraction(value: Any, name: str, *, low_open: bool = True, high_open: bool = True) -> float:
    """A real number in the unit interval, as a float: (0, 1) by default, a closed end where
    ``low_open``/``high_open`` is False (``high_open=False`` gives (0, 1]). A bool is refused.

    Examples
    --------
    >>> fraction(0.25, "test_size"), fraction(1, "energy", high_open=False)
    (0.25, 1.0)
    >>> fraction(1.0, "rate")
    Traceback (most recent call last):
    ...
    ValueError: rate must be a number in (0, 1); got 1.0
    >>> fraction(np.float32(0.25), "q"), fraction(0, "q", low_open=False)
    (0.25, 0.0)
    >>> for bad, ends in [(0, {}), (np.nan, {}), (True, {}), ("0.5", {}),
    ...                   (-0.1, {"low_open": False}), (1.5, {"high_open": False})]:
    ...     try:
    ...         fraction(bad, "q", **ends)
    ...     except ValueError as err:
    ...         print(err)
    q must be a number in (0, 1); got 0
    q must be a number in (0, 1); got nan
    q must be a number in (0, 1); got True
    q must be a number in (0, 1); got '0.5'
    q must be a number in [0, 1); got -0.1
    q must be a number in (0, 1]; got 1.5
    """
    low, high = ("(" if low_open else "["), (")" if high_open else "]")
    ok = not isinstance(value, bool | np.bool_) and isinstance(value, numbers.Real)
    if ok:
        f = float(value)
        ok = (0 < f if low_open else 0 <= f) and (f < 1 if high_open else f <= 1)
    if not ok:
        raise ValueError(f"{name} must be a number in {low}0, 1{high}; got {_describe(value)}")
    return float(value)


def positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {_describe(value)}")
    return int(value)


def finite_real(value: Any, name: str) -> float:
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number; got {_describe(value)}")
    if not np.isfinite(float(value)):
        raise ValueError(f"{name} must be finite; got {value}")
    return float(value)


def image_size(value: Any, name: str) -> tuple[int, int]:
    """An image size: an int (square) or a pair (height, width) of positive ints."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, Sequence | np.ndarray) or len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair (height, width); got {_describe(value)}")
    return positive_int(value[0], name), positive_int(value[1], name)


def input_shape(given: Sequence[int], expected: Sequence[Any], name: str = "x") -> None:
    """Check a batch's shape ``given`` (sample axis first) against a model's per-sample input
    shape ``expected`` (None for a free axis).

    The error names ``name``, the expected and the given shape; for a channels-first image
    batch (N, C, H, W) fed to a channels-last model it gives the transpose to apply.
    """
    given = tuple(int(d) for d in given)
    expected = tuple(None if d is None else int(d) for d in expected)
    per_sample = given[1:]
    if len(per_sample) == len(expected) and all(
        e is None or e == g for e, g in zip(expected, per_sample, strict=True)
    ):
        return
    shown = "(N, " + ", ".join("any" if e is None else str(e) for e in expected) + ")"
    message = f"{name} has shape {given}, but the model takes inputs of shape {shown}"
    if len(per_sample) == 3 and len(expected) == 3:
        c, h, w = per_sample
        nhwc = (h, w, c)
        if all(e is None or e == g for e, g in zip(expected, nhwc, strict=True)):
            message += (
                f"; {name} looks channels-first (NCHW): pass np.transpose({name}, (0, 2, 3, 1)) "
                "(channels last, NHWC)"
            )
    elif len(per_sample) == len(expected) - 1:
        message += f"; is the sample axis missing? a single sample is {name}[None]"
    raise ValueError(message)


def names(value: Any, name: str = "layers") -> list[str]:
    """A name or a sequence of names as a list of str: one string is one name, never read
    letter by letter."""
    if isinstance(value, str | bytes):
        return [value.decode() if isinstance(value, bytes) else value]
    try:
        return [str(v) for v in value]
    except TypeError:
        raise ValueError(
            f"{name} must be a name or a list of names; got {_describe(value)}"
        ) from None


def str_array(values: Any) -> np.ndarray:
    """Labels as a numpy array of Python-width strings (``<U``), from any string-like array:
    numpy's ``<U``, object arrays, or NumPy 2's ``StringDType`` (what zarr 3 and
    ``xr.open_zarr`` give back for string coordinates, which ``astype(str)`` refuses)."""
    arr = np.asarray(values)
    if arr.dtype.kind == "U":
        return arr
    if arr.dtype.kind == "T" or arr.dtype == object:
        return np.asarray(arr.astype(object).tolist(), dtype=str).reshape(arr.shape)
    return arr.astype(str)


_SYMBOLS = {"samples": "N", "transformations": "T", "units": "U"}


def check_sizes(
    name: str, measure: str, *, need: str | Mapping[str, str] = "", **sizes: tuple[int, int]
) -> None:
    """The one size check of every measure: ``sizes`` maps "samples", "transformations" or
    "units" to (got, minimum). Raises ``ValueError`` naming the argument, the measure, the
    minimum and the size, e.g. "cube: anova needs at least 2 transformations; got T = 1";
    ``need`` (one reason for the samples and transformations, or one per name) is appended."""
    for what, (got, least) in sizes.items():
        if got < least:
            reason = need.get(what, "") if isinstance(need, Mapping) else need
            why = f" ({reason})" if reason and what != "units" else ""
            noun = what if least != 1 else what[:-1]
            raise ValueError(
                f"{name}: {measure} needs at least {least} {noun}; got "
                f"{_SYMBOLS.get(what, what)} = {got}{why}"
            )
