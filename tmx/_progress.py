"""Progress reporting, one definition for the package.

Long calls take ``progress: bool | None = None``. None means "when run interactively": a
terminal on stderr, not under pytest and not in CI (the ``CI`` environment variable); True and
False force it. ``steps`` reports a loop with a known number of steps (Keras's ``Progbar``);
``dask_bar`` reports a dask computation (dask's local ``ProgressBar``; a ``dask.distributed``
client has its own dashboard).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
from collections.abc import Iterator
from typing import Any

import keras
from dask.diagnostics import ProgressBar


def interactive() -> bool:
    """True when a person is likely watching: stderr is a terminal, not pytest, not CI.

    Examples
    --------
    >>> from tmx._progress import interactive
    >>> interactive()                          # under pytest, or with output captured
    False
    """
    if os.environ.get("CI") or os.environ.get("PYTEST_CURRENT_TEST"):
        return False
    stream = getattr(sys, "stderr", None)
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def resolve(progress: Any, name: str = "progress") -> bool:
    """``progress`` as a bool: None → ``interactive()``; a bool passes; anything else is an
    error naming the argument.

    Examples
    --------
    >>> from tmx._progress import resolve
    >>> resolve(True), resolve(False), resolve(None)      # None: interactive() (False here)
    (True, False, False)
    >>> resolve("yes")
    Traceback (most recent call last):
    ...
    ValueError: progress must be True, False or None (when interactive); got 'yes'
    """
    if progress is None:
        return interactive()
    if not isinstance(progress, bool):
        raise ValueError(f"{name} must be True, False or None (when interactive); got {progress!r}")
    return progress


class Steps:
    """A counter with a Keras ``Progbar`` behind it (or nothing when disabled). ``values`` names
    the numbers passed to ``advance``: each is shown as its latest value (Keras's stateful
    metrics), not as Progbar's running mean over the steps.

    Examples
    --------
    >>> from tmx._progress import Steps
    >>> counter = Steps(3, enabled=False, unit="block")
    >>> counter.advance(); counter.advance(2)
    >>> counter.done
    3
    """

    def __init__(self, total: int, enabled: bool, unit: str, values: tuple[str, ...] = ()) -> None:
        self.done = 0
        self._bar = None
        if enabled and total > 0:
            self._bar = keras.utils.Progbar(total, unit_name=unit, stateful_metrics=list(values))

    def advance(self, n: int = 1, **values: float) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self.done, [(k, v) for k, v in values.items()], finalize=None)


def quiet(func: Any) -> dict[str, Any]:
    """``{"progress": False}`` for a function that takes ``progress``, else ``{}``: the
    keywords that keep a function called inside another long call from showing its own bar.

    Examples
    --------
    >>> from tmx._progress import quiet
    >>> quiet(lambda x, progress=None: x), quiet(lambda x: x)
    ({'progress': False}, {})
    """
    try:
        accepts = inspect.signature(func).parameters
    except (TypeError, ValueError):  # pragma: no cover - callables without a signature
        return {}
    return {"progress": False} if "progress" in accepts else {}


@contextlib.contextmanager
def steps(total: int, enabled: bool, unit: str = "step") -> Iterator[Steps]:
    """``with steps(n, enabled) as bar: ... bar.advance()`` — a progress bar over n steps.

    Examples
    --------
    >>> from tmx._progress import steps
    >>> with steps(4, enabled=False, unit="sample") as bar:
    ...     for _ in range(4):
    ...         bar.advance()
    >>> bar.done
    4
    """
    counter = Steps(int(total), enabled, unit)
    yield counter


def dask_bar(enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """dask's local ``ProgressBar`` when enabled, else a no-op context.

    Examples
    --------
    >>> import dask.array as da
    >>> from tmx._progress import dask_bar
    >>> with dask_bar(False):                  # True: dask's ProgressBar on stdout
    ...     int(da.ones(10, chunks=5).sum().compute())
    10
    """
    if not enabled:
        return contextlib.nullcontext()
    return ProgressBar()
