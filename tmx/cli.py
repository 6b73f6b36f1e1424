"""The ``tmx`` command line: invariance of a user's own model, from files to one page.

``tmx run MODEL.keras DATA.npy --transforms "rotation(0:360:45)" --layers conv1,dense
--labels LABELS.npy --out DIR`` builds the activation cube of the model over the data under
the transformations, saves it to ``DIR/cube.zarr`` (``tmx.save``) and writes per-layer and
per-unit tables (CSV; Parquet too when pyarrow is installed), the accuracy per transformation
(with ``--labels``), the figures (``tmx.plot``), the data set report (``tmx.introspect``) and
``DIR/report.html``, one self-contained page with all of it. ``tmx report STORE`` rebuilds the
tables, figures and page from a store. ``tmx demo`` runs the demo (``make demo``). What a run
does is logged on the ``tmx`` logger (``logging.getLogger("tmx")``), shown on stderr by the
command; the final summary is printed on stdout.

Transformation specs (``--transforms``) are parsed onto the constructors of
``tmx.transforms``; nothing is evaluated::

    SPEC   := SET (";" SET)*            union: the sets' transformations one after the other
    SET    := CALL ("*" CALL)*          product: every combination, applied left to right
    CALL   := NAME "(" [ARG ("," ARG)*] ")"
    ARG    := VALUES | KEY "=" VALUES
    VALUES := NUMBER | WORD | RANGE | "[" VALUES ("," VALUES)* "]"
    RANGE  := START ":" STOP [":" STEP]  START, START + STEP, … below STOP (STOP excluded, as
                                         numpy.arange; STEP defaults to 1, may be negative)

Positional values of a call are concatenated (``rotation(0, 90:360:90)``: 0, 90, 180, 270).
``--transforms`` given several times is the union of its specs, like ``;``. The names:

    rotation(ANGLES, fill=, fill_value=, interpolation=)      degrees, counter-clockwise
    translation(SHIFTS) | translation(dx=[..], dy=[..])       pixels; SHIFTS: every (dx, dy)
        (relative=true: fractions of the size; fill=, fill_value=, interpolation=)
    scale(FACTORS, …), shear(ANGLES, axis=x|y, …)              as rotation's options
    flip(x, y, xy, none), rot90(K), roll(SHIFTS, axis=x|y)      exact
    brightness(FACTORS), contrast(FACTORS)                     photometric
    gaussian_noise(STDS, seed=0) (alias noise), identity(N)

Errors (``SpecError``, a ``ValueError``) name the bad token and show it with a caret.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import html
import logging
import math
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr
import zarr

from . import _page, _progress, _schema
from . import introspect as ti
from . import plot as tplot
from . import transforms as T
from .analysis import evaluate
from .cube import activations
from .inspect import load_model
from .measures import anova_invariance, bootstrap, normalized_variance
from .store import open as open_cube
from .store import save as save_cube

__all__ = ["SpecError", "main", "parse", "parse_all", "report", "run"]

log = logging.getLogger("tmx")

_GRAMMAR_HELP = (
    "NAME(VALUES, KEY=VALUE) with VALUES numbers, words, ranges start:stop[:step] (stop "
    "excluded) or [lists]; '*' combines (product), ';' or a repeated --transforms joins "
    "(union). Names: rotation, translation, scale, shear, flip, rot90, roll, brightness, "
    "contrast, gaussian_noise, identity. E.g. 'rotation(0:360:45)', "
    "'translation(-4:5:2, fill=nearest)', 'rotation(0,180) * brightness(0.5,1,1.5)'."
)


# -- the transformation-spec grammar ------------------------------------------------------------
_TOKEN = re.compile(
    r"(?P<ws>\s+)"
    r"|(?P<number>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<punct>[(),=\[\]:;*])"
)


class SpecError(ValueError):
    """A transformation spec that cannot be parsed or built; the message shows where."""

    def __init__(self, spec: str, start: int, end: int, message: str) -> None:
        self.spec, self.start, self.end = spec, start, max(end, start + 1)
        caret = " " * start + "^" * (self.end - start)
        super().__init__(f"--transforms {spec!r}: {message}\n  {spec}\n  {caret}")


@dataclass
class _Tok:
    kind: str  # number, name, punct, end
    text: str
    start: int

    @property
    def end(self) -> int:
        return self.start + max(len(self.text), 1)


@dataclass
class _Arg:
    values: list[Any]
    start: int
    end: int
    listed: bool  # written as a range or a [list]


@dataclass
class _Call:
    spec: str
    name: str
    start: int
    end: int
    positional: list[_Arg] = field(default_factory=list)
    keywords: dict[str, tuple[_Arg, int]] = field(default_factory=dict)  # key -> (arg, key pos)

    def error(self, message: str, arg: _Arg | None = None) -> SpecError:
        start, end = (arg.start, arg.end) if arg is not None else (self.start, self.end)
        return SpecError(self.spec, start, end, message)

    def check_keywords(self, allowed: tuple[str, ...]) -> None:
        for key, (_, pos) in self.keywords.items():
            if key not in allowed:
                hint = f"; {self.name}() takes {', '.join(allowed)}" if allowed else ""
                raise SpecError(
                    self.spec, pos, pos + len(key), f"unknown option {key!r} of {self.name}{hint}"
                )

    def values(self, what: str, *, numbers: bool = True, default: Any = None) -> list[Any]:
        """The positional values, concatenated (``default`` when there are none)."""
        out: list[Any] = []
        for arg in self.positional:
            for value in arg.values:
                if numbers and not _is_number(value):
                    raise self.error(f"{self.name}: {what} must be numbers; got {value!r}", arg)
                out.append(value)
        if not out:
            if default is not None:
                return list(default)
            raise self.error(f"{self.name}() needs {what}, e.g. {_EXAMPLES[self.name]}")
        return out

    def keyword(self, key: str, kind: str, default: Any = None) -> Any:
        """A scalar option: kind "number", "int", "word" or "bool"."""
        if key not in self.keywords:
            return default
        arg, _ = self.keywords[key]
        if len(arg.values) != 1 or arg.listed:
            raise self.error(f"option {key} takes one value; got {arg.values!r}", arg)
        value = arg.values[0]
        ok = {
            "number": _is_number(value),
            "int": _is_number(value) and float(value).is_integer(),
            "word": isinstance(value, str),
            "bool": isinstance(value, bool),
        }[kind]
        if not ok:
            raise self.error(f"option {key} must be a {kind}; got {value!r}", arg)
        return int(value) if kind == "int" else value

    def keyword_list(self, key: str) -> list[float] | None:
        if key not in self.keywords:
            return None
        arg, _ = self.keywords[key]
        if not all(_is_number(x) for x in arg.values):
            raise self.error(f"option {key} must be numbers; got {arg.values!r}", arg)
        return list(arg.values)

    def sampling(self) -> dict[str, Any]:
        """fill, fill_value, interpolation of the interpolated geometric transformations."""
        out = {}
        for key, kind in (("fill", "word"), ("fill_value", "number"), ("interpolation", "word")):
            value = self.keyword(key, kind)
            if value is not None:
                out[key] = value
        return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Parser:
    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.toks = self._tokenize(spec)
        self.i = 0

    def _tokenize(self, spec: str) -> list[_Tok]:
        toks, pos = [], 0
        while pos < len(spec):
            m = _TOKEN.match(spec, pos)
            if m is None:
                raise SpecError(spec, pos, pos + 1, f"unexpected character {spec[pos]!r}")
            if m.lastgroup != "ws":
                toks.append(_Tok(m.lastgroup or "", m.group(), pos))
            pos = m.end()
        toks.append(_Tok("end", "", len(spec)))
        return toks

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def expect(self, text: str, what: str) -> _Tok:
        tok = self.peek()
        if tok.text != text or tok.kind == "end":
            found = "the end" if tok.kind == "end" else repr(tok.text)
            raise SpecError(self.spec, tok.start, tok.end, f"expected {what}; found {found}")
        self.i += 1
        return tok

    def parse(self) -> list[list[_Call]]:
        if self.peek().kind == "end":
            raise SpecError(self.spec, 0, 1, "empty spec; e.g. rotation(0:360:45)")
        sets = [self.product()]
        while self.peek().text == ";":
            self.i += 1
            sets.append(self.product())
        tok = self.peek()
        if tok.kind != "end":
            raise SpecError(
                self.spec, tok.start, tok.end, f"expected ';', '*' or the end; found {tok.text!r}"
            )
        return sets

    def product(self) -> list[_Call]:
        calls = [self.call()]
        while self.peek().text == "*":
            self.i += 1
            calls.append(self.call())
        return calls

    def call(self) -> _Call:
        tok = self.peek()
        if tok.kind != "name":
            found = "the end" if tok.kind == "end" else repr(tok.text)
            raise SpecError(
                self.spec, tok.start, tok.end, f"expected a transformation name; found {found}"
            )
        self.i += 1
        if tok.text not in NAMES:
            close = difflib.get_close_matches(tok.text, list(NAMES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SpecError(
                self.spec,
                tok.start,
                tok.end,
                f"unknown transformation {tok.text!r}{hint}; known: {', '.join(NAMES)}",
            )
        self.expect("(", f"'(' after {tok.text}")
        call = _Call(self.spec, tok.text, tok.start, tok.end)
        if self.peek().text != ")":
            while True:
                self.argument(call)
                if self.peek().text != ",":
                    break
                self.i += 1
        closing = self.expect(")", "',' or ')'")
        call.end = closing.end
        return call

    def argument(self, call: _Call) -> None:
        tok = self.peek()
        nxt = self.toks[min(self.i + 1, len(self.toks) - 1)]
        if tok.kind == "name" and nxt.text == "=":
            self.i += 2
            if tok.text in call.keywords:
                raise SpecError(self.spec, tok.start, tok.end, f"option {tok.text!r} given twice")
            call.keywords[tok.text] = (self.values(), tok.start)
        else:
            if call.keywords:
                raise SpecError(
                    self.spec, tok.start, tok.end, "a positional value follows an option"
                )
            call.positional.append(self.values())

    def values(self) -> _Arg:
        tok = self.peek()
        if tok.text == "[":
            self.i += 1
            items: list[Any] = []
            while True:
                items += self.values().values
                if self.peek().text != ",":
                    break
                self.i += 1
            close = self.expect("]", "',' or ']'")
            return _Arg(items, tok.start, close.end, True)
        if tok.kind == "name":
            self.i += 1
            word: Any = {"true": True, "false": False}.get(tok.text.lower(), tok.text)
            return _Arg([word], tok.start, tok.end, False)
        if tok.kind == "number":
            self.i += 1
            parts = [tok]
            while self.peek().text == ":" and len(parts) < 3:
                self.i += 1
                num = self.peek()
                if num.kind != "number":
                    raise SpecError(
                        self.spec, num.start, num.end, "a range needs numbers: start:stop[:step]"
                    )
                self.i += 1
                parts.append(num)
            if len(parts) == 1:
                return _Arg([_number(tok.text)], tok.start, tok.end, False)
            return _Arg(self._range(parts), tok.start, parts[-1].end, True)
        found = "the end" if tok.kind == "end" else repr(tok.text)
        raise SpecError(
            self.spec,
            tok.start,
            tok.end,
            f"expected a number, a range start:stop[:step], a word or a [list]; found {found}",
        )

    def _range(self, parts: list[_Tok]) -> list[Any]:
        start, stop = _number(parts[0].text), _number(parts[1].text)
        step = _number(parts[2].text) if len(parts) == 3 else 1
        first, last = parts[0].start, parts[-1].end
        if step == 0:
            raise SpecError(self.spec, parts[2].start, parts[2].end, "the step of a range is 0")
        count = math.ceil((stop - start) / step - 1e-9)
        if count <= 0:
            raise SpecError(self.spec, first, last, "the range is empty (stop is excluded)")
        if count > 100_000:
            raise SpecError(self.spec, first, last, f"the range has {count} values (max 100000)")
        ints = all(isinstance(x, int) for x in (start, stop, step))
        return [start + k * step if ints else round(start + k * step, 12) for k in range(count)]


def _number(text: str) -> int | float:
    value = float(text)
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    return value


# -- the constructors ---------------------------------------------------------------------------
_SAMPLING = ("fill", "fill_value", "interpolation")


def _rotation(c: _Call) -> T.TransformationSet:
    c.check_keywords(_SAMPLING)
    return T.rotation(c.values("angles (degrees)"), **c.sampling())


def _scale(c: _Call) -> T.TransformationSet:
    c.check_keywords(_SAMPLING)
    return T.scale(c.values("factors"), **c.sampling())


def _shear(c: _Call) -> T.TransformationSet:
    c.check_keywords(("axis", *_SAMPLING))
    return T.shear(
        c.values("angles (degrees)"), axis=c.keyword("axis", "word", "x"), **c.sampling()
    )


def _translation(c: _Call) -> T.TransformationSet:
    c.check_keywords(("dx", "dy", "relative", *_SAMPLING))
    dx, dy = c.keyword_list("dx"), c.keyword_list("dy")
    relative = c.keyword("relative", "bool", False)
    if c.positional:
        if dx is not None or dy is not None:
            raise c.error(
                "translation: give shifts (a grid of every (dx, dy)) or dx=/dy=, not both"
            )
        shifts = c.values("shifts")
        dx = [a for a in shifts for _ in shifts]
        dy = [b for _ in shifts for b in shifts]
    elif dx is None and dy is None:
        raise c.error(f"translation() needs shifts or dx=/dy=, e.g. {_EXAMPLES['translation']}")
    return T.translation(
        dx if dx is not None else 0.0,
        dy if dy is not None else 0.0,
        relative=relative,
        **c.sampling(),
    )


def _flip(c: _Call) -> T.TransformationSet:
    c.check_keywords(())
    return T.flip(c.values("axes (x, y, xy, none)", numbers=False, default=["none", "x"]))


def _rot90(c: _Call) -> T.TransformationSet:
    c.check_keywords(())
    return T.rot90(c.values("quarter turns", default=[0, 1, 2, 3]))


def _roll(c: _Call) -> T.TransformationSet:
    c.check_keywords(("axis",))
    return T.roll(c.values("shifts (pixels)"), axis=c.keyword("axis", "word", "x"))


def _brightness(c: _Call) -> T.TransformationSet:
    c.check_keywords(())
    return T.brightness(c.values("factors"))


def _contrast(c: _Call) -> T.TransformationSet:
    c.check_keywords(())
    return T.contrast(c.values("factors"))


def _noise(c: _Call) -> T.TransformationSet:
    c.check_keywords(("seed",))
    return T.gaussian_noise(c.values("standard deviations"), seed=c.keyword("seed", "int", 0))


def _identity(c: _Call) -> T.TransformationSet:
    c.check_keywords(())
    n = c.values("a count", default=[1])
    if len(n) != 1:
        raise c.error("identity takes at most one count", c.positional[-1])
    return T.identity(n[0])


NAMES: dict[str, Callable[[_Call], T.TransformationSet]] = {
    "rotation": _rotation,
    "translation": _translation,
    "scale": _scale,
    "shear": _shear,
    "flip": _flip,
    "rot90": _rot90,
    "roll": _roll,
    "brightness": _brightness,
    "contrast": _contrast,
    "gaussian_noise": _noise,
    "noise": _noise,
    "identity": _identity,
}

_EXAMPLES = {
    "rotation": "rotation(0:360:45)",
    "translation": "translation(-4:5:2) or translation(dx=[-2,0,2])",
    "scale": "scale(0.8, 1, 1.25)",
    "shear": "shear(-20:21:10, axis=x)",
    "flip": "flip(none, x, y)",
    "rot90": "rot90(0:4)",
    "roll": "roll(0:28:4, axis=x)",
    "brightness": "brightness(0.5, 1, 1.5)",
    "contrast": "contrast(0.5, 1, 2)",
    "gaussian_noise": "gaussian_noise(0, 0.1, 0.2, seed=0)",
    "noise": "noise(0, 0.1, 0.2)",
    "identity": "identity()",
}


def _build(call: _Call) -> T.TransformationSet:
    try:
        return NAMES[call.name](call)
    except SpecError:
        raise
    except ValueError as err:
        raise call.error(f"{call.name}: {err}") from None


def parse(spec: str) -> T.TransformationSet:
    """The transformation set of one spec string (see the module's grammar).

    Examples
    --------
    >>> from tmx.cli import parse
    >>> parse("rotation(0:360:90)").labels
    ('rotation(0)', 'rotation(90)', 'rotation(180)', 'rotation(270)')
    >>> len(parse("rotation(0, 180) * brightness(0.5, 1, 2); flip(x)"))
    7
    """
    if not isinstance(spec, str):
        raise ValueError(f"a transformation spec must be a string; got {type(spec).__name__}")
    sets = _Parser(spec).parse()
    built = []
    for calls in sets:
        parts = [_build(c) for c in calls]
        built.append(parts[0] if len(parts) == 1 else T.product(*parts))
    return built[0] if len(built) == 1 else T.union(*built)


def parse_all(specs: list[str]) -> T.TransformationSet:
    """The union of several specs (``--transforms`` given several times).

    Examples
    --------
    >>> from tmx.cli import parse_all
    >>> parse_all(["rotation(0, 90)", "flip(x)"]).labels
    ('rotation(0)', 'rotation(90)', 'flip(x)')
    >>> parse_all([])
    Traceback (most recent call last):
    ...
    ValueError: --transforms is required, e.g. --transforms 'rotation(0:360:45)'
    """
    if not specs:
        raise ValueError("--transforms is required, e.g. --transforms 'rotation(0:360:45)'")
    sets = [parse(s) for s in specs]
    return sets[0] if len(sets) == 1 else T.union(*sets)


# -- the pipeline -------------------------------------------------------------------------------
ALPHA = 0.01  # the ANOVA's level, Bonferroni-corrected over the cube's units
STORE = "cube.zarr"
PAGE = "report.html"


def _load_array(path: str | os.PathLike[str], what: str) -> Any:
    """A ``.npy`` file (memory-mapped, never unpickled) or a Zarr array (lazy)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} {str(path)!r}: no such file or directory")
    if p.suffix == ".npy":
        try:
            return np.load(p, mmap_mode="r", allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"{what} {str(path)!r} is not a plain .npy array: {err}") from None
    if p.is_dir():
        try:
            node = zarr.open(str(p), mode="r")
        except Exception as err:  # zarr raises several types for a folder it cannot read
            raise ValueError(f"{what} {str(path)!r} is not a Zarr array: {err}") from None
        if isinstance(node, zarr.Group):
            arrays = sorted(node.array_keys())
            if len(arrays) != 1:
                example = f", e.g. {p / arrays[0]}" if arrays else ""
                raise ValueError(
                    f"{what} {str(path)!r} is a Zarr group with arrays {arrays}; pass the "
                    f"folder of one array{example}"
                )
            node = node[arrays[0]]
        return node
    raise ValueError(f"{what} {str(path)!r}: expected a .npy file or a Zarr array folder")


def _first(x: Any, n: int | None) -> Any:
    """The first ``n`` samples (all when None), lazily for Zarr arrays."""
    if n is None or n >= x.shape[0]:
        return x
    if type(x).__module__.startswith("zarr"):
        return da.from_zarr(x)[:n]
    return x[:n]


def _labels(path: Any, n: int) -> np.ndarray:
    y = np.asarray(_load_array(path, "labels")) if isinstance(path, str | os.PathLike) else path
    y = np.asarray(y)
    if y.ndim == 2:  # one-hot rows
        y = y.argmax(axis=1)
    if y.ndim != 1 or y.shape[0] < n or y.dtype.kind not in "iu":
        raise ValueError(
            f"labels must hold one integer class per sample (at least {n}) or one-hot rows; got "
            f"shape {y.shape} and dtype {y.dtype}"
        )
    return y[:n].astype(np.int64)


def _untransformed(tset: T.TransformationSet) -> int:
    """The first transformation whose every parameter is neutral (rotation 0, …), else 0."""
    for j, chain in enumerate(tset.elements):
        if all(tuple(op.values) == tuple(op.kind.neutrals) for op in chain):
            return j
    return 0


def _plain(value: Any) -> Any:
    """JSON-safe floats (None for non-finite) for the store's attrs."""
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in list(value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run(
    model: Any,
    data: Any,
    transforms: T.TransformationSet | str | Sequence[str],
    *,
    out: str | os.PathLike[str] = "tmx-output",
    layers: Sequence[Any] | None = None,
    labels: Any = None,
    samples: int | None = None,
    batch_size: int | None = None,
    memory: int | str | None = None,
    safe_mode: bool = True,
    report_layers: Sequence[str] | None = None,
    top: int = 8,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool | None = None,
    page: bool = True,
    command: str | None = None,
) -> dict[str, Path]:
    """``tmx run``: the cube of a model over a data set and transformations, and its page.

    Builds the activation cube, saves it to ``out/cube.zarr`` (with the run's provenance in
    its ``tmx_run`` attribute: the files, the specs and the accuracy per transformation when
    labels are given), then writes what ``report`` writes.

    Parameters
    ----------
    model : str, path or keras.Model
        A ``.keras`` file (loaded with ``safe_mode``) or a model.
    data : str, path or array
        A ``.npy`` file (memory-mapped) or a Zarr array folder, sample axis first; or an array.
    transforms : TransformationSet, str or list of str
        A set, or specs in the grammar of this module (several: their union).
    out : path, default "tmx-output"
        The output folder (created).
    layers : list, optional
        Layer names or indices to record (default: every layer).
    labels : str, path or array, optional
        Integer classes (or one-hot rows), one per sample: the accuracy per transformation.
    samples : int, optional
        Use the first ``samples`` samples only.
    batch_size, memory
        As in ``tmx.activations``.
    safe_mode : bool, default True
        Load the model with Keras's safe mode (refuses files holding Python code).
    report_layers : list of str, optional
        Layers of the data set report (default: the last three recorded layers; ``[]``: none).
    top : int, default 8
        Units and samples shown per table of the page.
    seed : int, default 0
        Seed of the data set report.
    overwrite : bool, default False
        Replace an existing ``out/cube.zarr``.
    progress : bool, optional
        Progress bars (default: when run interactively).
    page : bool, default True
        Also write the tables, figures and page (``report``).
    command : str, optional
        The command line, recorded in the provenance.

    Returns
    -------
    dict of str to Path
        What was written, by name.

    Examples
    --------
    A tiny classifier and six images, in a temporary folder (``page=False``: the cube store
    only; the command line ``tmx run model.keras x.npy --transforms "rotation(0:360:90)"
    --labels y.npy --out out`` also writes the page, as :func:`report` does):

    >>> import tempfile, keras, numpy as np, tmx
    >>> from tmx import cli
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential(
    ...     [keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="conv"),
    ...      keras.layers.GlobalAveragePooling2D(name="pool"), keras.layers.Dense(3, name="dense")]
    ... )
    >>> x = np.random.default_rng(0).random((6, 8, 8, 1)).astype("float32")
    >>> y = np.array([0, 1, 2, 0, 1, 2])
    >>> with tempfile.TemporaryDirectory() as out:
    ...     paths = cli.run(model, x, "rotation(0:360:90)", labels=y, out=out, page=False)
    ...     cube = tmx.open(paths["cube.zarr"])
    ...     sorted(paths), dict(cube.sizes), len(cube.attrs["tmx_run"]["accuracy"]["accuracy"])
    (['cube.zarr'], {'sample': 6, 'transformation': 4, 'unit': 77}, 4)
    """

    specs = None
    if isinstance(transforms, T.TransformationSet):
        tset = transforms
    else:
        specs = [transforms] if isinstance(transforms, str) else list(transforms)
        tset = parse_all(specs)
    if samples is not None and (isinstance(samples, bool) or int(samples) < 1):
        raise ValueError(f"samples must be a positive integer; got {samples!r}")
    out = Path(out)
    store = out / STORE
    if store.exists() and not overwrite:
        raise FileExistsError(f"{store} exists; pass --overwrite or choose another --out")
    out.mkdir(parents=True, exist_ok=True)

    log.info("loading the model %s (safe_mode=%s)", model, safe_mode)
    net = load_model(model, safe_mode=safe_mode)
    x = _load_array(data, "data") if isinstance(data, str | os.PathLike) else data
    x = _first(x, samples)
    n = int(x.shape[0])
    y = None if labels is None else _labels(labels, n)
    log.info(
        "data: %d samples of shape %s; %d transformations: %s",
        n,
        tuple(x.shape[1:]),
        len(tset),
        tset.description,
    )
    accuracy = None
    if y is not None:
        log.info("accuracy under each transformation (a forward pass of the model's output)")
        scores = evaluate(
            net,
            x,
            y,
            tset,
            batch_size=batch_size or 256,
            progress=progress,
            safe_mode=safe_mode,
        )
        accuracy = {
            "accuracy": _plain(scores["accuracy"].values),
            "loss": _plain(scores["loss"].values),
            "output": str(scores.attrs.get("output", "")),
            "from_logits": bool(scores.attrs.get("from_logits", False)),
        }
    cube = activations(
        net,
        x,
        tset,
        layers=list(layers) if layers is not None else None,
        batch_size=batch_size,
        memory=memory,
        labels=y,
        safe_mode=safe_mode,
    )

    def where(p: Any) -> str | None:
        return str(Path(p).resolve()) if isinstance(p, str | os.PathLike) else None

    cube.attrs["tmx_run"] = {
        "command": command or "",
        "model": where(model) or str(net.name),
        "data": where(data),
        "labels": where(labels),
        "samples": n,
        "transforms_spec": specs,
        "safe_mode": bool(safe_mode),
        "accuracy": accuracy,
    }
    log.info("computing the cube %s and saving it to %s", dict(cube.sizes), store)
    save_cube(cube, store, overwrite=overwrite, progress=progress)
    paths = {STORE: store}
    if page:
        paths.update(
            report(
                store,
                out=out,
                report_layers=report_layers,
                top=top,
                seed=seed,
                images=x,
                progress=progress,
            )
        )
    return paths


class _Rows:
    """Images read one at a time (a memory-mapped or Zarr data set is never loaded whole)."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def __getitem__(self, i: Any) -> np.ndarray:
        row = self.source[int(i)]
        return np.asarray(row.compute() if hasattr(row, "compute") else row)


def _images_for(cube: xr.DataArray, images: Any, info: dict[str, Any]) -> Any:
    """Images for the page's thumbnails and preview, or None (not images, or not found)."""
    if images is None and info.get("data"):
        try:
            images = _load_array(info["data"], "data")
        except (OSError, ValueError) as err:
            log.warning("no sample images on the page: %s", err)
            return None
    if images is None:
        return None
    shape = tuple(int(d) for d in images.shape[1:])
    n = cube.sizes["sample"]
    expected = tuple(cube.attrs.get("input_shape", shape))
    is_image = len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3, 4))
    if images.shape[0] < n or shape != expected or not is_image:
        log.info("the data are not images of the cube's samples; no thumbnails on the page")
        return None
    return images


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _accuracy_figure(table: pd.DataFrame, path: Path) -> Path:
    n = len(table)
    fig, ax = plt.subplots(figsize=(min(max(4.0, 0.35 * n + 2), 14.0), 3.6))
    ax.plot(np.arange(n), table["accuracy"], "o-")
    ax.set_xticks(np.arange(n))
    ax.set_xticklabels(table["transform"], rotation=90 if n > 6 else 0, fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy per transformation")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _write_table(frame: pd.DataFrame, out: Path, name: str) -> dict[str, Path]:
    paths = {f"{name}.csv": out / f"{name}.csv"}
    frame.to_csv(paths[f"{name}.csv"], index=False)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return paths
    paths[f"{name}.parquet"] = out / f"{name}.parquet"
    frame.to_parquet(paths[f"{name}.parquet"], index=False)
    return paths


def _layer_table(ratio: xr.Dataset, mean: xr.Dataset, units: xr.Dataset) -> pd.DataFrame:
    unit_layer = np.asarray(units["layer"].values).astype(str)
    rows = []
    for name in [str(v) for v in ratio["layer"].values]:
        mask = unit_layer == name
        nv = np.asarray(units["nv"].values)[mask]
        tested = np.isfinite(np.asarray(units["anova_p_adjusted"].values)[mask])
        significant = np.asarray(units["anova_significant"].values)[mask]
        r, m = ratio.sel(layer=name), mean.sel(layer=name)
        rows.append(
            {
                "layer": name,
                "units": int(mask.sum()),
                "units without NV": int((~np.isfinite(nv)).sum()),
                "NV": float(r["estimate"]),
                "NV low": float(r["low"]),
                "NV high": float(r["high"]),
                "NV uncorrected": float(r["uncorrected"]),
                "NV unit mean": float(m["estimate"]),
                "NV unit mean low": float(m["low"]),
                "NV unit mean high": float(m["high"]),
                "NV unit mean uncorrected": float(m["uncorrected"]),
                "ANOVA significant fraction": float(significant[tested].mean())
                if tested.any()
                else math.nan,
            }
        )
    return pd.DataFrame(rows)


def report(
    store: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    report_layers: Sequence[str] | None = None,
    top: int = 8,
    seed: int = 0,
    images: Any = None,
    progress: bool | None = None,
    sections: Sequence[tuple[str, str]] = (),
    title: str | None = None,
) -> dict[str, Path]:
    """``tmx report``: the tables, figures and page of a cube store.

    Reads the store (``tmx.open``) and its provenance (the ``tmx_run`` attribute that
    ``tmx run`` writes: the accuracy, the data file for the thumbnails), and writes into
    ``out`` (default: the store's folder):

    - ``layers.csv``: per layer, NV = Σ TV / Σ SV jackknife bias-corrected with its 95 %
      jackknife interval and the uncorrected ratio beside it, the same for the plain mean of
      the unit NVs, and the fraction of units with a significant transformation effect (ANOVA,
      Bonferroni at α = 0.01);
    - ``units.csv``: per unit, layer, channel, y, x, TV, SV, NV, the ANOVA's F, adjusted p
      and verdict;
    - ``accuracy.csv`` (when the run had labels): accuracy and loss per transformation;
    - Parquet copies of the tables when pyarrow is installed;
    - ``nv_per_layer.png``, ``nv_units.png``, ``transforms.png``, ``accuracy.png``;
    - ``report.zarr``: the data set report (``tmx.introspect.report``) of the untransformed
      samples;
    - ``report.html``: one self-contained page with all of the above.

    Parameters
    ----------
    store : path
        A cube store (``tmx.save``).
    out : path, optional
        Output folder (default: the store's parent folder).
    report_layers : list of str, optional
        Layers of the data set report (default: the cube's last three; ``[]``: none).
    top : int, default 8
        Units and samples shown per table.
    seed : int, default 0
        Seed of the data set report.
    images : array, optional
        The inputs (for thumbnails and the preview); default: the run's data file, if found.
    progress : bool, optional
        Progress bars (default: when run interactively).
    sections : list of (str, str), optional
        Extra (title, HTML) sections of the page.
    title : str, optional
        The page's title.

    Returns
    -------
    dict of str to Path
        What was written, by name.

    Examples
    --------
    The page of a cube store (here one written by ``tmx.save``, without the labels and
    provenance that ``tmx run`` records), in a temporary folder:

    >>> import tempfile, numpy as np, tmx
    >>> from tmx import cli
    >>> rng = np.random.default_rng(0)
    >>> cube = tmx.from_array({"dense": rng.random((6, 4, 3), np.float32)},
    ...                       transformation=tmx.transforms.rotation([0, 90, 180, 270]))
    >>> with tempfile.TemporaryDirectory() as out:
    ...     paths = cli.report(tmx.save(cube, f"{out}/cube.zarr"), report_layers=[])
    ...     sorted(paths)[:4], "Invariance" in paths["report.html"].read_text()
    (['layers.csv', 'layers.parquet', 'nv_per_layer.png', 'nv_units.png'], True)
    """

    matplotlib.use("Agg")

    show = _progress.resolve(progress)
    cube = open_cube(store)
    info = dict(cube.attrs.get("tmx_run") or {})
    out = Path(out) if out is not None else Path(store).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    names = [str(v) for v in cube.attrs.get("layers") or _schema.layers(cube)]
    paths: dict[str, Path] = {}

    log.info("per-unit NV and ANOVA (one pass over the store)")
    parts = normalized_variance(cube, parts=True, zero_div="nan")
    anova = anova_invariance(cube, alpha=ALPHA)
    with _progress.dask_bar(show):
        parts, anova = dask.compute(parts, anova)
    unit_coords = {k: c for k, c in cube.coords.items() if c.dims == ("unit",)}
    units = xr.Dataset(
        {
            "tv": parts["tv"].variable,
            "sv": parts["sv"].variable,
            "nv": parts["nv"].variable,
            "anova_f": anova["f"].variable,
            "anova_p_adjusted": anova["p_adjusted"].variable,
            "anova_significant": anova["reject"].variable,
        },
        coords=unit_coords,
    )
    log.info("NV per layer with jackknife intervals")
    ratio = bootstrap(normalized_variance, cube, reduce="ratio_of_means", progress=show).compute()
    mean = bootstrap(
        normalized_variance, cube, reduce="mean", zero_div="nan", progress=show
    ).compute()
    layers = _layer_table(ratio, mean, units)
    paths.update(_write_table(layers, out, "layers"))
    unit_frame = units.reset_coords().to_dataframe().reset_index()
    paths.update(_write_table(unit_frame, out, "units"))

    accuracy = None
    tset = None
    try:
        tset = T.from_dict(cube.attrs["transforms"])
    except (KeyError, ValueError):
        pass
    acc = info.get("accuracy")
    if acc:
        accuracy = pd.DataFrame({"transformation": cube["transformation"].values})
        accuracy["transform"] = [str(v) for v in cube["transform"].values]
        for name, coord in cube.coords.items():
            if coord.dims == ("transformation",) and name not in ("transformation", "transform"):
                accuracy[name] = coord.values
        accuracy["accuracy"] = np.asarray(acc["accuracy"], dtype=float)
        accuracy["loss"] = np.asarray([math.nan if v is None else v for v in acc["loss"]])
        paths.update(_write_table(accuracy, out, "accuracy"))

    log.info("figures")
    figures: dict[str, tuple[Path | None, str]] = {}
    fig = tplot.layer_curves(
        {"NV (Σ TV / Σ SV, jackknife)": ratio, "NV, mean of the units": mean},
        title="Invariance per layer (0 = invariant)",
        ylabel="normalized variance",
    )
    paths["nv_per_layer.png"] = _save(fig, out / "nv_per_layer.png")
    figures["nv_per_layer"] = (paths["nv_per_layer.png"], "NV per layer with 95 % intervals")
    spatial = [n for n in names if (cube["y"].where(cube["layer"] == n) >= 0).any()]
    heat = spatial[-1] if spatial else names[-1]
    fig = tplot.unit_heatmap(units["nv"], heat, title=f"NV per unit, {heat}")
    paths["nv_units.png"] = _save(fig, out / "nv_units.png")
    figures["nv_units"] = (paths["nv_units.png"], f"NV of every unit of {heat}")
    pics = _images_for(cube, images, info)
    if pics is not None and tset is not None and len(pics.shape) == 4:
        try:
            first = np.asarray(_first(pics, 4))
            fig = tplot.transform_preview(tset, first, n_samples=4)
            paths["transforms.png"] = _save(fig, out / "transforms.png")
            figures["transforms"] = (paths["transforms.png"], "The transformations")
        except ValueError as err:
            log.warning("no transformation preview: %s", err)
    if accuracy is not None:
        paths["accuracy.png"] = _accuracy_figure(accuracy, out / "accuracy.png")
        figures["accuracy"] = (paths["accuracy.png"], "Accuracy per transformation")

    chosen = names[-3:] if report_layers is None else list(report_layers)
    unknown = [v for v in chosen if v not in names]
    if unknown:
        raise ValueError(f"report_layers: unknown layers {unknown}; the cube has {names}")
    rep = None
    if chosen:
        j0 = _untransformed(tset) if tset is not None else 0
        log.info("data set report of layers %s under %s", chosen, cube["transform"].values[j0])
        rep = ti.report(cube, transformation=j0, layers=chosen, seed=seed, progress=show)
        rep.attrs["transform"] = str(cube["transform"].values[j0])
        target = out / "report.zarr"
        if target.exists():
            shutil.rmtree(target)
        ti.save_report(rep, target)
        paths["report.zarr"] = target

    model = str(cube.attrs.get("model_name", "model"))
    n, t = cube.sizes["sample"], cube.sizes["transformation"]
    meta = (
        f"model <b>{html.escape(model)}</b> · {n} samples · {t} transformations "
        f"({html.escape(str(cube.attrs.get('transforms_description', '')))}) · "
        f"layers {html.escape(', '.join(names))} · store <code>{html.escape(str(store))}</code>"
    )
    provenance = {k: v for k, v in cube.attrs.items() if k != "transforms"}
    page = _page.render(
        title=title or f"tmx: {model}",
        meta=meta,
        layers=layers,
        units=units,
        unit_layers=names,
        accuracy=accuracy,
        figures=figures,
        report=rep,
        images=None if pics is None else _Rows(pics),
        report_layers=chosen,
        provenance=provenance,
        sections=sections,
        alpha=ALPHA,
        top=top,
    )
    paths[PAGE] = out / PAGE
    paths[PAGE].write_text(page, encoding="utf-8")
    log.info("wrote %s", paths[PAGE])
    return paths


# -- the command line ---------------------------------------------------------------------------
def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``tmx`` parser and its sub-command parsers."""
    parser = argparse.ArgumentParser(
        prog="tmx",
        description="Measure how invariant a Keras model's layers and units are to "
        "transformations of its inputs.",
        epilog="Transformation specs: " + _GRAMMAR_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--report-layers",
            help="layers of the data set report, comma-separated "
            "(default: the last three recorded); 'none' to skip it",
        )
        p.add_argument("--top", type=int, default=8, help="units and samples per table (8)")
        p.add_argument("--seed", type=int, default=0, help="seed of the data set report (0)")
        bar = p.add_mutually_exclusive_group()
        bar.add_argument(
            "--progress",
            dest="progress",
            action="store_true",
            default=None,
            help="progress bars (default: when run in a terminal)",
        )
        bar.add_argument("--no-progress", dest="progress", action="store_false")
        p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")

    r = sub.add_parser(
        "run",
        help="compute the cube of a model and write tables, figures and the page",
        description="Compute the activation cube of MODEL over DATA under the transformations, "
        "save it to OUT/cube.zarr and write OUT/layers.csv, OUT/units.csv, OUT/accuracy.csv "
        "(with --labels), the figures and OUT/report.html.",
        epilog="Transformation specs: " + _GRAMMAR_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("model", help="a .keras model file")
    r.add_argument(
        "data",
        help="the samples: a .npy file or a Zarr array folder (sample axis "
        "first; NHWC images for geometric transformations)",
    )
    r.add_argument(
        "-t",
        "--transforms",
        action="append",
        required=True,
        metavar="SPEC",
        help="transformations, e.g. 'rotation(0:360:45)'; repeat for their union",
    )
    r.add_argument(
        "--layers", help="layers to record, comma-separated names or indices (default: every layer)"
    )
    r.add_argument(
        "--labels",
        help="integer labels (.npy or Zarr), one per sample: accuracy per transformation",
    )
    r.add_argument("--out", default="tmx-output", help="output folder (tmx-output)")
    r.add_argument("--samples", type=int, help="use the first N samples only")
    r.add_argument(
        "--batch-size", type=int, help="images per forward batch (default: planned from --memory)"
    )
    r.add_argument(
        "--memory",
        help="memory budget of the cube, e.g. 2GB (default: 2 GiB or a "
        "quarter of the machine's memory)",
    )
    r.add_argument(
        "--no-safe-mode",
        dest="safe_mode",
        action="store_false",
        help="load a model holding Python code (Lambda layers): only for files you trust",
    )
    r.add_argument("--overwrite", action="store_true", help="replace OUT/cube.zarr")
    common(r)

    p = sub.add_parser(
        "report",
        help="rebuild the tables, figures and page from a cube store",
        description="Rebuild the tables, figures and report.html from a cube store written by "
        "'tmx run' (or tmx.save).",
    )
    p.add_argument("store", help="the cube store (a folder written by tmx run / tmx.save)")
    p.add_argument("--out", help="output folder (default: the store's folder)")
    p.add_argument("--data", help="the samples, for thumbnails (default: the run's data file)")
    common(p)

    d = sub.add_parser("demo", help="the demo on the embedded digits and CNN (make demo)")
    d.add_argument("--out", default="demo-output", help="output folder (demo-output)")
    d.add_argument("--tiny", action="store_true", help="a seconds-long configuration")
    return parser, {"run": r, "report": p, "demo": d}


def _names(text: str | None) -> list[Any] | None:
    if text is None:
        return None
    items = [s.strip() for s in text.split(",") if s.strip()]
    return [int(s) if re.fullmatch(r"-?\d+", s) else s for s in items]


def _report_layers(text: str | None) -> list[str] | None:
    if text is None:
        return None
    if text.strip().lower() == "none":
        return []
    return [str(s) for s in _names(text) or []]


@contextlib.contextmanager
def logging_to_stderr(quiet: bool = False) -> Iterator[None]:
    """Show the ``tmx`` logger's messages on stderr while the block runs."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("tmx: %(message)s"))
    previous = log.level
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(previous)


def _summary(paths: dict[str, Path]) -> None:
    """The final summary on stdout: NV per layer and what was written."""
    table = paths.get("layers.csv")
    if table is not None:
        frame = pd.read_csv(table)
        width = max(8, *(len(str(v)) for v in frame["layer"]))
        print("NV per layer (Σ TV / Σ SV, jackknife bias-corrected) [95 % interval]:")
        for row in frame.itertuples(index=False):
            print(f"  {row.layer!s:{width}s} {row.NV:8.4g} [{row[4]:.4g}, {row[5]:.4g}]")
    print("written:")
    for path in paths.values():
        print(f"  {path}")


def main(argv: Sequence[str] | None = None) -> int:
    """The ``tmx`` command. Returns the exit status (0; 1 on a failed run; 2 on bad usage).

    Examples
    --------
    A failed run returns 1 (the error goes to stderr); bad usage exits with status 2, as
    ``argparse`` does:

    >>> from tmx.cli import main
    >>> main(["report", "/nonexistent/cube.zarr", "--quiet"])
    1
    >>> try:
    ...     main(["run"])                         # model, data and --transforms missing
    ... except SystemExit as stop:
    ...     print(stop.code)
    2
    """
    parser, commands = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from . import demo  # a cycle: the demo runs tmx.cli.run

        demo.main(["--out", args.out, *(["--tiny"] if args.tiny else [])])
        return 0
    if args.command == "run":
        try:
            parse_all(args.transforms)
        except ValueError as err:
            commands["run"].error(str(err))
    argv_text = "tmx " + shlex.join(list(sys.argv[1:] if argv is None else argv))
    with logging_to_stderr(args.quiet):
        try:
            if args.command == "run":
                paths = run(
                    args.model,
                    args.data,
                    args.transforms,
                    out=args.out,
                    layers=_names(args.layers),
                    labels=args.labels,
                    samples=args.samples,
                    batch_size=args.batch_size,
                    memory=args.memory,
                    safe_mode=args.safe_mode,
                    report_layers=_report_layers(args.report_layers),
                    top=args.top,
                    seed=args.seed,
                    overwrite=args.overwrite,
                    progress=args.progress,
                    command=argv_text,
                )
            else:
                images = None if args.data is None else _load_array(args.data, "--data")
                paths = report(
                    args.store,
                    out=args.out,
                    report_layers=_report_layers(args.report_layers),
                    top=args.top,
                    seed=args.seed,
                    images=images,
                    progress=args.progress,
                )
        except (ValueError, OSError, ImportError) as err:
            print(f"tmx {args.command}: error: {err}", file=sys.stderr)
            return 1
    _summary(paths)
    return 0
