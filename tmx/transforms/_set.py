"""Transformation sets as plain, immutable data.

A ``TransformationSet`` is a tuple of T *elements*; each element is a chain of primitive
operations (``Op``) applied left to right. Sets compare and hash by value, carry labeled
parameters (``TransformationSet.parameters``, an ``xr.Dataset`` over ``transformation``) and a
readable description. Nothing here imports TensorFlow: applying and inverting live in ``_apply``.

Conventions (used by every geometric operation)
-----------------------------------------------
Images are NHWC. Pixel (row r, column c) has its centre at the point (x, y) = (c, r): x grows to the
right, y grows *downwards* (the row index). The centre of an H×W image or feature map is
((W − 1)/2, (H − 1)/2).

- ``rotation(θ)`` turns the content **counter-clockwise as displayed** (y down) by θ degrees
  about the centre, so ``rotation(90)`` equals ``np.rot90`` on a square image.
- ``translation(dx, dy)`` moves content by dx pixels to the right and dy pixels down.
- ``scale(s)`` zooms about the centre (s > 1 enlarges the content).
- ``shear(φ, axis="x")`` maps (x, y) to (x + tan φ · (y − c_y), y); ``axis="y"`` maps (x, y) to
  (x, y + tan φ · (x − c_x)).
- ``flip("x")`` mirrors left-right, ``flip("y")`` up-down; ``rot90(k)`` turns by k quarter turns
  counter-clockwise (exact); ``roll(s, axis)`` shifts cyclically (exact), with the sign of
  ``translation``.

Inputs other than images
------------------------
Geometric operations of images (rotation, translation, scale, shear, ``flip("x")``, ``rot90``,
``roll(s, "x")``) need rank-4 NHWC batches. Photometric ones (brightness, contrast), noise and
custom functions apply to batches of any rank: tables (N, features), sequences (N, L, C), token
ids (N, L). ``roll(s, axis="time")`` and ``flip(axis="time")`` shift or mirror along one named
axis of the batch: "time" (alias "length") is axis 1, "channel" the last axis, or an int axis.
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, get_args

import numpy as np
import xarray as xr

from .. import _validate as v

# Option sets: annotations, and their values as tuples for the checks at the call.
Interpolation = Literal["bilinear", "nearest"]
Fill = Literal["constant", "reflect", "nearest", "wrap"]
FlipAxes = Literal["none", "x", "y", "xy"]
INTERPOLATIONS = get_args(Interpolation)
FILLS = get_args(Fill)
FLIP_AXES = get_args(FlipAxes)
# A named axis of a batch for roll/flip along one axis, or an int axis (not 0).
BatchAxis = Literal["time", "length", "channel"] | int
# Named axes of a batch for roll/flip along one axis (sequences (N, L, C), tables, token ids).
SEQUENCE_AXES = {"time": 1, "length": 1, "channel": -1}
# Coordinate names a parameter may not take: they are dims or coords of the cube.
RESERVED_NAMES = frozenset(
    {"transformation", "transform", "sample", "unit", "layer", "channel", "y", "x", "label"}
)
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Kind:
    """What a primitive operation is: its parameters, their meaning, units and neutral values.

    ``category`` is one of ``"affine"`` (interpolated geometric), ``"exact"`` (flip, rot90, roll),
    ``"photometric"`` (identity on feature maps), ``"noise"`` (not invertible), ``"custom"``.
    ``image_only`` marks operations that need rank-4 NHWC images (every geometric operation of
    images); the others apply to batches of any rank. ``float_only`` marks operations that need
    floating inputs (brightness, contrast, noise): they refuse integer inputs such as token ids.
    """

    name: str
    category: str
    params: tuple[str, ...]
    meanings: tuple[str, ...]
    units: tuple[str, ...]
    neutrals: tuple[Any, ...]
    fn: Callable[..., Any] | None = None
    inverse: Callable[..., Any] | None = None
    geometric: bool = True
    image_only: bool = False
    float_only: bool = False

    @property
    def invertible(self) -> bool:
        if self.category == "noise":
            return False
        if self.category == "custom":
            return self.inverse is not None or not self.geometric
        return True


def _kind(name, category, params, meanings, units, neutrals, geometric=True, image_only=True):
    return Kind(
        name,
        category,
        params,
        meanings,
        units,
        neutrals,
        geometric=geometric,
        image_only=image_only,
        float_only=category in ("photometric", "noise"),
    )


ROTATION = _kind("rotation", "affine", ("angle",), ("rotation_deg",), ("degrees",), (0.0,))
TRANSLATION = _kind(
    "translation",
    "affine",
    ("dx", "dy"),
    ("shift_x_px", "shift_y_px"),
    ("pixels", "pixels"),
    (0.0, 0.0),
)
TRANSLATION_REL = _kind(
    "translation",
    "affine",
    ("dx_rel", "dy_rel"),
    ("shift_x_rel", "shift_y_rel"),
    ("fraction of width", "fraction of height"),
    (0.0, 0.0),
)
SCALE = _kind("scale", "affine", ("scale",), ("zoom",), ("factor",), (1.0,))
SHEAR_X = _kind("shear", "affine", ("shear_x",), ("shear_x_deg",), ("degrees",), (0.0,))
SHEAR_Y = _kind("shear", "affine", ("shear_y",), ("shear_y_deg",), ("degrees",), (0.0,))
FLIP = _kind("flip", "exact", ("flip",), ("flip_axes",), ("axes",), ("none",))
ROT90 = _kind("rot90", "exact", ("k",), ("quarter_turns",), ("quarter turns",), (0,))
ROLL = _kind(
    "roll", "exact", ("dx", "dy"), ("shift_x_px", "shift_y_px"), ("pixels", "pixels"), (0, 0)
)
# along one axis of a batch of any rank (the axis is the option "axis", an int, never 0)
ROLL_AXIS = _kind("roll", "exact", ("shift",), ("shift_steps",), ("steps",), (0,), image_only=False)
# the flipped axis of a batch of any rank; 0 (the sample axis) means no flip
FLIP_AXIS = _kind(
    "flip", "exact", ("flip_axis",), ("flipped_axis",), ("axis",), (0,), image_only=False
)
BRIGHTNESS = _kind(
    "brightness",
    "photometric",
    ("factor",),
    ("brightness_factor",),
    ("factor",),
    (1.0,),
    False,
    False,
)
CONTRAST = _kind(
    "contrast", "photometric", ("factor",), ("contrast_factor",), ("factor",), (1.0,), False, False
)
NOISE = _kind(
    "gaussian_noise",
    "noise",
    ("std",),
    ("noise_std",),
    ("standard deviation",),
    (0.0,),
    False,
    False,
)
BUILTIN_KINDS = (
    ROTATION,
    TRANSLATION,
    TRANSLATION_REL,
    SCALE,
    SHEAR_X,
    SHEAR_Y,
    FLIP,
    ROT90,
    ROLL,
    ROLL_AXIS,
    FLIP_AXIS,
    BRIGHTNESS,
    CONTRAST,
    NOISE,
)


@dataclass(frozen=True)
class Op:
    """One primitive operation with its parameter values.

    ``names`` are the coordinate names of ``values`` in a set (they differ from ``kind.params``
    only after a rename, e.g. when a product holds two sets with a parameter of the same name).
    """

    kind: Kind
    values: tuple[Any, ...]
    names: tuple[str, ...]
    options: tuple[tuple[str, Any], ...] = ()

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)

    @property
    def params(self) -> dict[str, Any]:
        """Canonical parameter name → value (what the operation computes with)."""
        return dict(zip(self.kind.params, self.values, strict=True))

    @property
    def label(self) -> str:
        return _label(self)

    def renamed(self, mapping: Mapping[str, str]) -> Op:
        names = tuple(mapping.get(n, n) for n in self.names)
        return Op(self.kind, self.values, names, self.options)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _label(op: Op) -> str:
    p = op.params
    name = op.kind.name
    if op.kind == ROLL_AXIS:
        return f"roll({p['shift']}, axis={op.option('axis')})"
    if op.kind == FLIP_AXIS:
        return "flip(none)" if p["flip_axis"] == 0 else f"flip(axis={p['flip_axis']})"
    if op.kind == TRANSLATION_REL:
        return f"translation({_fmt(p['dx_rel'])}w, {_fmt(p['dy_rel'])}h)"
    if name in ("translation", "roll"):
        return f"{name}({_fmt(p['dx'])}, {_fmt(p['dy'])})"
    if name == "shear":
        (key,) = op.kind.params
        return f"{key}({_fmt(p[key])})"
    if name == "gaussian_noise":
        return f"noise({_fmt(p['std'])})"
    if op.kind.category == "custom":
        inner = ", ".join(f"{k}={_fmt(val)}" for k, val in p.items())
        return f"{name}({inner})"
    return f"{name}({', '.join(_fmt(val) for val in op.values)})"


def _short_list(values: Sequence[Any], limit: int = 6) -> str:
    items = [_fmt(x) for x in values]
    if len(items) > limit:
        items = [*items[: limit - 2], "...", items[-1]]
    return "[" + ", ".join(items) + "]"


@dataclass(frozen=True, repr=False)
class TransformationSet:
    """An immutable set of T transformations with labeled parameters.

    Build one with the constructors of ``tmx.transforms`` (``rotation``, ``translation``, …,
    ``product``, ``union``, ``custom``) rather than directly. Sets compare and hash by value
    (two sets with the same transformations in the same order are equal, however they were
    built); ``description`` records how the set was built and is what a cube stores in its attrs.

    Attributes
    ----------
    elements : tuple of tuple of Op
        The T transformations, each a chain of primitive operations applied left to right
        (an empty chain is the identity).
    description : str
        A readable recipe of the set (not part of equality).

    Examples
    --------
    >>> import tmx
    >>> T = tmx.transforms
    >>> transforms = T.product(T.rotation([0, 90]), T.scale(2))
    >>> transforms  # doctest: +ELLIPSIS
    TransformationSet(T=2, angle, scale: product(rotation(angles=[0, 90], ...), scale(...)))
    >>> len(transforms), transforms.labels, transforms.names
    (2, ('rotation(0)+scale(2)', 'rotation(90)+scale(2)'), ('angle', 'scale'))
    >>> transforms[1].labels, transforms.invertible, transforms.needs_images
    (('rotation(90)+scale(2)',), True, True)
    >>> transforms.parameters["angle"].attrs["units"]
    'degrees'
    >>> tmx.transforms.from_dict(transforms.to_json()) == transforms
    True
    """

    elements: tuple[tuple[Op, ...], ...]
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if len(self.elements) == 0:
            raise ValueError("a transformation set must hold at least one transformation")

    # -- size and indexing --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.elements)

    @property
    def size(self) -> int:
        """T, the number of transformations."""
        return len(self.elements)

    def __getitem__(self, index: int | slice | Sequence[int]) -> TransformationSet:
        """A sub-set: ``transforms[j]`` (one transformation), ``transforms[a:b]`` or
        ``transforms[[i, j]]``."""
        if isinstance(index, slice):
            idx: Sequence[int] = range(*index.indices(len(self)))
        elif isinstance(index, int | np.integer):
            j = int(index)
            if not -len(self) <= j < len(self):
                raise IndexError(f"transformation index {j} out of range for T={len(self)}")
            idx = [j % len(self)]
        else:
            idx = [check_index(self, j) for j in v.int_vector(index, "index")]
        elems = tuple(self.elements[j] for j in idx)
        if not elems:
            raise ValueError("index selects no transformation; a set cannot be empty")
        return TransformationSet(elems, f"{self.description}[{_short_list(list(idx))}]")

    # -- labels -------------------------------------------------------------------------------
    @cached_property
    def labels(self) -> tuple[str, ...]:
        """A short string per transformation (the cube's ``transform`` coordinate)."""
        return tuple("+".join(op.label for op in chain) or "identity" for chain in self.elements)

    @cached_property
    def _name_info(self) -> dict[str, tuple[str, str | None, str, Any]]:
        """Coordinate name → (meaning, kind name or None if several, units, neutral value)."""
        info: dict[str, tuple[str, str | None, str, Any]] = {}
        for chain in self.elements:
            for op in chain:
                for i, name in enumerate(op.names):
                    meaning = op.kind.meanings[i]
                    entry = (meaning, op.kind.name, op.kind.units[i], op.kind.neutrals[i])
                    if name not in info:
                        info[name] = entry
                    elif info[name][0] != meaning:  # pragma: no cover - prevented by renames
                        raise ValueError(f"parameter name {name!r} has two meanings in one set")
                    elif info[name][1] != op.kind.name:
                        m, _, u, n = info[name]
                        info[name] = (m, None, u, n)
        return info

    @property
    def names(self) -> tuple[str, ...]:
        """Parameter coordinate names, in order of first appearance."""
        return tuple(self._name_info)

    @cached_property
    def parameters(self) -> xr.Dataset:
        """The labeled parameters: a coordinate-only ``xr.Dataset`` over ``transformation``.

        Coordinates: ``transformation`` (0..T−1), ``transform`` (the labels) and one coordinate
        per parameter (``angle`` in degrees, ``dx``/``dy`` in pixels, ``scale``, ``factor``, …;
        each with a ``units`` attr). A transformation that lacks a parameter of the set (in a
        union) takes the parameter's neutral value (angle 0, scale 1, …; NaN for custom ones).
        """
        coords: dict[str, Any] = {
            "transformation": ("transformation", np.arange(len(self))),
            "transform": ("transformation", np.array(self.labels, dtype=str)),
        }
        for name, (meaning, _kind_name, units, neutral) in self._name_info.items():
            column = []
            for chain in self.elements:
                value = neutral
                for op in chain:
                    if name in op.names:
                        value = op.values[op.names.index(name)]
                column.append(value)
            coords[name] = xr.Variable(
                "transformation", np.asarray(column), {"units": units, "meaning": meaning}
            )
        ds = xr.Dataset(coords=coords)
        ds.attrs["description"] = self.description
        return ds

    def coords(self) -> dict[str, tuple[str, np.ndarray]]:
        """The parameter coordinates as a dict ready for ``xr.DataArray(coords=...)``."""
        ds = self.parameters
        return {str(name): ("transformation", ds[name].values) for name in ds.coords}

    # -- properties used by apply/invert ------------------------------------------------------
    @cached_property
    def invertible(self) -> bool:
        """Whether every transformation can be inverted on feature maps."""
        return all(op.kind.invertible for chain in self.elements for op in chain)

    @cached_property
    def geometric(self) -> bool:
        """Whether any transformation moves pixels (photometric and noise ones do not)."""
        return any(op.kind.geometric for chain in self.elements for op in chain)

    @cached_property
    def needs_images(self) -> bool:
        """Whether some transformation needs rank-4 NHWC images (a geometric one of images).

        Sets without such transformations (photometric, noise, custom, ``roll``/``flip`` along a
        named axis) apply to batches of any rank: tables, sequences, token ids.
        """
        return any(op.kind.image_only for chain in self.elements for op in chain)

    @cached_property
    def needs_input_size(self) -> bool:
        """Whether inverting on a feature map needs the input's size (pixel-unit parameters)."""
        return any(chain_needs_input_size(chain) for chain in self.elements)

    # -- renaming and serialisation -----------------------------------------------------------
    def rename(self, mapping: Mapping[str, str]) -> TransformationSet:
        """A copy whose parameter coordinates are renamed (``{"angle": "theta"}``)."""
        unknown = set(mapping) - set(self.names)
        if unknown:
            raise ValueError(
                f"mapping names unknown parameters {sorted(unknown)}; valid: {list(self.names)}"
            )
        new_names = [mapping.get(n, n) for n in self.names]
        _check_names(new_names, "mapping")
        elems = tuple(tuple(op.renamed(mapping) for op in chain) for chain in self.elements)
        return TransformationSet(elems, self.description)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description from which ``from_dict`` rebuilds an equal set.

        Custom transformations are recorded by name only and cannot be rebuilt.
        """
        return {
            "format": "tmx.transforms",
            "version": FORMAT_VERSION,
            "description": self.description,
            "elements": [
                [
                    {
                        "kind": op.kind.name,
                        "params": list(op.kind.params),
                        "values": [_json_scalar(x) for x in op.values],
                        "names": list(op.names),
                        "options": {k: _json_scalar(x) for k, x in op.options},
                    }
                    for op in chain
                ]
                for chain in self.elements
            ],
        }

    def to_json(self) -> str:
        """``to_dict()`` as a compact JSON string (stored in cube attrs)."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def __repr__(self) -> str:
        names = ", ".join(self.names) or "no parameters"
        return f"TransformationSet(T={len(self)}, {names}: {self.description})"

    def _repr_html_(self) -> str:  # notebooks: show the parameter table
        return self.parameters._repr_html_()


def chain_needs_input_size(chain: Sequence[Op]) -> bool:
    """Whether a chain has pixel shifts (translations, rolls) that a feature map must rescale."""
    return any(op.kind in (TRANSLATION, ROLL, ROLL_AXIS) and any(op.values) for op in chain)


def _json_scalar(x: Any) -> Any:
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return repr(x)
    if isinstance(x, bool | int | float | str) or x is None:
        return x
    raise ValueError(f"cannot serialise parameter value {x!r} to JSON")


def from_dict(spec: Mapping[str, Any] | str) -> TransformationSet:
    """Rebuild a set from ``TransformationSet.to_dict`` (or its JSON string).

    The input is treated as untrusted: kinds must be built-in, values are validated, nothing is
    evaluated. Custom transformations cannot be rebuilt (their code is not stored).

    Examples
    --------
    >>> import tmx
    >>> transforms = tmx.transforms.union(tmx.transforms.identity(), tmx.transforms.flip("x"))
    >>> spec = transforms.to_dict()
    >>> spec["format"], len(spec["elements"])
    ('tmx.transforms', 2)
    >>> back = tmx.transforms.from_dict(transforms.to_json())
    >>> tmx.transforms.from_dict(spec) == transforms, back == transforms
    (True, True)
    """
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as err:
            raise ValueError(f"spec is not valid JSON: {err}") from None
    if not isinstance(spec, Mapping) or spec.get("format") != "tmx.transforms":
        raise ValueError("spec must be a dict produced by TransformationSet.to_dict()")
    if spec.get("version") != FORMAT_VERSION:
        raise ValueError(f"spec has unsupported version {spec.get('version')!r}")
    by_key = {(k.name, k.params): k for k in BUILTIN_KINDS}
    elements = []
    for chain in spec.get("elements", []):
        ops = []
        for o in chain:
            key = (o.get("kind"), tuple(o.get("params", ())))
            if key not in by_key:
                raise ValueError(
                    f"spec holds transformation kind {key[0]!r} that cannot be rebuilt "
                    "(custom transformations are not stored with their code)"
                )
            kind = by_key[key]
            values = tuple(o["values"])
            if len(values) != len(kind.params) or len(o["names"]) != len(kind.params):
                raise ValueError(f"spec: wrong number of values for {kind.name}")
            for x in values:
                if not isinstance(x, int | float | str) or isinstance(x, bool):
                    raise ValueError(f"spec: invalid parameter value {x!r}")
            options = tuple(sorted(dict(o.get("options", {})).items()))
            if kind in (ROLL_AXIS, FLIP_AXIS):
                axis = dict(options).get("axis", 1) if kind == ROLL_AXIS else values[0]
                if isinstance(axis, bool) or not isinstance(axis, int):
                    raise ValueError(f"spec: the axis of {kind.name} must be an int; got {axis!r}")
                if kind == ROLL_AXIS and (axis == 0 or not isinstance(values[0], int)):
                    raise ValueError(f"spec: invalid roll along axis {axis} by {values[0]!r}")
            ops.append(Op(kind, values, tuple(o["names"]), options))
        elements.append(tuple(ops))
    if not elements:
        raise ValueError("spec holds no transformation")
    return TransformationSet(tuple(elements), str(spec.get("description", "")))


# -- constructors -------------------------------------------------------------------------------
def _sampling_options(interpolation: Interpolation, fill: Fill, fill_value: float) -> tuple:
    return (
        ("fill", v.choice(fill, "fill", FILLS)),
        ("fill_value", v.finite_real(fill_value, "fill_value")),
        ("interpolation", v.choice(interpolation, "interpolation", INTERPOLATIONS)),
    )


def _single(kind: Kind, rows: Sequence[tuple], options: tuple, description: str):
    elems = tuple((Op(kind, tuple(row), kind.params, options),) for row in rows)
    return TransformationSet(elems, description)


def _opts_text(options: tuple) -> str:
    return "".join(f", {k}={val!r}" for k, val in options)


def _sampled(
    kind: Kind,
    argname: str,
    values: tuple[float, ...],
    interpolation: Interpolation,
    fill: Fill,
    fill_value: float,
    extra: str = "",
) -> TransformationSet:
    """A one-parameter interpolated set (rotation, scale, shear) with its description."""
    opts = _sampling_options(interpolation, fill, fill_value)
    desc = f"{kind.name}({argname}={_short_list(values)}{extra}{_opts_text(opts)})"
    return _single(kind, [(a,) for a in values], opts, desc)


def identity(n: int = 1) -> TransformationSet:
    """The identity transformation, repeated ``n`` times (T = n).

    Repeating it is useful as a control group: every measure of invariance is exactly zero.

    Examples
    --------
    >>> import tmx
    >>> transforms = tmx.transforms.identity(3)
    >>> len(transforms), transforms.labels
    (3, ('identity', 'identity', 'identity'))
    """
    n = v.positive_int(n, "n")
    return TransformationSet(((),) * n, "identity()" if n == 1 else f"identity(n={n})")


def rotation(
    angles: Sequence[float] | np.ndarray | float,
    *,
    interpolation: Interpolation = "bilinear",
    fill: Fill = "constant",
    fill_value: float = 0.0,
) -> TransformationSet:
    """Rotations about the image centre by ``angles`` degrees, counter-clockwise as displayed.

    Parameters
    ----------
    angles : float or sequence of float
        Angles in **degrees** (not radians); ``rotation(90)`` equals ``np.rot90``.
    interpolation : {"bilinear", "nearest"}, default "bilinear"
    fill : {"constant", "reflect", "nearest", "wrap"}, default "constant"
        How points that come from outside the image are filled.
    fill_value : float, default 0.0
        The value for ``fill="constant"``.

    Notes
    -----
    A point p moves to c + R(θ)(p − c) with c the centre ((W−1)/2, (H−1)/2) and, with y pointing
    down, R(θ) = [[cos θ, sin θ], [−sin θ, cos θ]].

    Examples
    --------
    >>> import numpy as np, tmx
    >>> transforms = tmx.transforms.rotation([0, 90, 180])
    >>> transforms.labels, transforms.parameters["angle"].attrs["units"]
    (('rotation(0)', 'rotation(90)', 'rotation(180)'), 'degrees')
    >>> img = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1)
    >>> turned = tmx.transforms.apply(transforms, img, 1)[0, ..., 0]
    >>> bool(np.allclose(turned, np.rot90(img[0, ..., 0]), atol=1e-5))
    True
    """
    values = v.real_vector(angles, "angles")
    return _sampled(ROTATION, "angles", values, interpolation, fill, fill_value)


def translation(
    dx: Sequence[float] | np.ndarray | float = 0.0,
    dy: Sequence[float] | np.ndarray | float = 0.0,
    *,
    relative: bool = False,
    interpolation: Interpolation = "bilinear",
    fill: Fill = "constant",
    fill_value: float = 0.0,
) -> TransformationSet:
    """Translations by (dx[j], dy[j]): content moves dx to the right and dy down.

    Parameters
    ----------
    dx, dy : float or sequence of float
        Shifts in pixels, or in fractions of the width/height with ``relative=True`` (coordinates
        ``dx_rel``, ``dy_rel``). A scalar is broadcast against the other sequence.
    relative : bool, default False
    interpolation, fill, fill_value
        As in ``rotation``.

    Notes
    -----
    On a feature map of width w, a pixel translation of an input of width W is inverted as a
    translation by dx · w / W (and dy · h / H): ``invert`` needs the input's size for it.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> transforms = tmx.transforms.translation([0, 1], 2)
    >>> transforms.labels
    ('translation(0, 2)', 'translation(1, 2)')
    >>> img = np.zeros((1, 4, 4, 1), np.float32); img[0, 0, 0, 0] = 1
    >>> moved = tmx.transforms.apply(transforms, img, 1)[0, ..., 0]
    >>> np.argwhere(moved > 0.5).tolist()                              # (row, col)
    [[2, 1]]
    >>> tmx.transforms.translation(0.25, relative=True).labels
    ('translation(0.25w, 0h)',)
    """
    xs = v.real_vector(dx, "dx")
    ys = v.real_vector(dy, "dy")
    if len(xs) != len(ys):
        if len(xs) == 1:
            xs = xs * len(ys)
        elif len(ys) == 1:
            ys = ys * len(xs)
        else:
            raise ValueError(
                f"dx and dy must have the same length or one of them be a scalar; "
                f"got {len(xs)} and {len(ys)}"
            )
    relative = v.flag(relative, "relative")
    kind = TRANSLATION_REL if relative else TRANSLATION
    opts = _sampling_options(interpolation, fill, fill_value)
    desc = f"translation(dx={_short_list(xs)}, dy={_short_list(ys)}"
    desc += f", relative=True{_opts_text(opts)})" if relative else f"{_opts_text(opts)})"
    return _single(kind, list(zip(xs, ys, strict=True)), opts, desc)


def scale(
    factors: Sequence[float] | np.ndarray | float,
    *,
    interpolation: Interpolation = "bilinear",
    fill: Fill = "constant",
    fill_value: float = 0.0,
) -> TransformationSet:
    """Isotropic scalings about the image centre (factor > 1 enlarges the content).

    Examples
    --------
    >>> import numpy as np, tmx
    >>> transforms = tmx.transforms.scale([1.0, 2.0])
    >>> transforms.labels, transforms.names
    (('scale(1)', 'scale(2)'), ('scale',))
    >>> img = np.zeros((1, 5, 5, 1), np.float32); img[0, 1:4, 1:4, 0] = 1    # a 3×3 square
    >>> int((tmx.transforms.apply(transforms, img, 1) > 0.5).sum())   # zoomed to 5×5
    25
    """
    values = v.real_vector(factors, "factors", positive=True)
    return _sampled(SCALE, "factors", values, interpolation, fill, fill_value)


def shear(
    angles: Sequence[float] | np.ndarray | float,
    *,
    axis: Literal["x", "y"] = "x",
    interpolation: Interpolation = "bilinear",
    fill: Fill = "constant",
    fill_value: float = 0.0,
) -> TransformationSet:
    """Shears by ``angles`` degrees along ``axis`` ("x" or "y") about the image centre.

    ``axis="x"`` maps (x, y) to (x + tan φ · (y − c_y), y); the coordinate is ``shear_x``
    (``shear_y`` for ``axis="y"``). Angles must lie in (−90, 90).

    Examples
    --------
    >>> import tmx
    >>> tmx.transforms.shear([-10, 10]).labels
    ('shear_x(-10)', 'shear_x(10)')
    >>> tmx.transforms.shear(10, axis="y").names
    ('shear_y',)
    """
    values = v.real_vector(angles, "angles")
    if any(abs(a) >= 90 for a in values):
        raise ValueError("angles of a shear must lie strictly between -90 and 90 degrees")
    axis = v.choice(axis, "axis", ("x", "y"))
    kind = SHEAR_X if axis == "x" else SHEAR_Y
    return _sampled(kind, "angles", values, interpolation, fill, fill_value, f", axis={axis!r}")


def _batch_axis(value: Any, argname: str, *, allow_none: bool = False) -> int:
    """A named or int axis of a batch for ``roll``/``flip`` along one axis, as an int.

    "time"/"length" is 1, "channel" is −1 (the last axis), an int is an axis of the batch
    (negative counts from the end; 0, the sample axis, is refused); "none" is 0 (no flip).
    """
    if isinstance(value, str):
        if allow_none and value == "none":
            return 0
        if value in SEQUENCE_AXES:
            return SEQUENCE_AXES[value]
    elif isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
        if int(value) != 0:
            return int(value)
    names = [*SEQUENCE_AXES, *(["none"] if allow_none else [])]
    raise ValueError(
        f"{argname} must be one of {names} or a non-zero int axis of the batch (axis 0 holds "
        f"the samples); got {v._describe(value)}"
    )


def flip(
    axes: FlipAxes | Sequence[FlipAxes] | None = None,
    *,
    axis: BatchAxis | Literal["none"] | Sequence[BatchAxis | Literal["none"]] | None = None,
) -> TransformationSet:
    """Mirror flips (exact); each entry is one transformation.

    Parameters
    ----------
    axes : str or sequence of str, default "x"
        Images (NHWC): "x" (left-right), "y" (up-down), "xy" (both, = rot90 by 2) or "none".
        Coordinate ``flip``.
    axis : str, int or sequence of them, optional
        Inputs of any rank (sequences (N, L, C), tables, token ids): the axis to reverse,
        "time" (alias "length", axis 1), "channel" (the last axis), an int axis of the batch
        (not 0), or "none". Coordinate ``flip_axis``: the axis as an int, 0 for "none". Pass
        either ``axes`` or ``axis``.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> seq = np.arange(6, dtype=np.float32).reshape(1, 3, 2)       # (N, L, C)
    >>> transforms = tmx.transforms.flip(axis=["none", "time"])
    >>> tmx.transforms.apply(transforms, seq, 1)[0, :, 0].tolist()
    [4.0, 2.0, 0.0]
    >>> transforms.labels
    ('flip(none)', 'flip(axis=1)')
    """
    if axis is not None:
        if axes is not None:
            raise ValueError("pass either axes (images: 'x', 'y', 'xy') or axis, not both")
        items = [axis] if isinstance(axis, str | int | np.integer) else list(axis)
        if not items:
            raise ValueError("axis must not be empty")
        values = tuple(_batch_axis(a, "axis", allow_none=True) for a in items)
        return _single(FLIP_AXIS, [(a,) for a in values], (), f"flip(axis={list(items)!r})")
    names: list[Any]
    if axes is None:
        names = ["x"]
    else:
        names = [axes] if isinstance(axes, str) else list(axes)
    if not names:
        raise ValueError("axes must not be empty")
    for a in names:
        if isinstance(a, str) and a in SEQUENCE_AXES:
            raise ValueError(
                f"axes: {a!r} is an axis of sequences; use flip(axis={a!r}) (axes takes the "
                f"image axes {list(FLIP_AXES)})"
            )
    chosen = tuple(v.choice(a, "axes", FLIP_AXES) for a in names)
    return _single(FLIP, [(a,) for a in chosen], (), f"flip(axes={list(chosen)})")


def rot90(k: Sequence[int] | np.ndarray | int = (0, 1, 2, 3)) -> TransformationSet:
    """Exact rotations by k quarter turns counter-clockwise (as ``np.rot90``; needs square
    inputs for odd k).

    Examples
    --------
    >>> import numpy as np, tmx
    >>> img = np.arange(4, dtype=np.float32).reshape(1, 2, 2, 1)
    >>> tmx.transforms.apply(tmx.transforms.rot90(), img, 1)[0, ..., 0].tolist()
    [[1.0, 3.0], [0.0, 2.0]]
    >>> np.rot90(img[0, ..., 0]).tolist()
    [[1.0, 3.0], [0.0, 2.0]]
    """
    values = v.int_vector(k, "k")
    return _single(ROT90, [(x,) for x in values], (), f"rot90(k={_short_list(values)})")


def roll(
    shifts: Sequence[Any] | int, axis: Literal["x", "y", "xy"] | BatchAxis = "x"
) -> TransformationSet:
    """Cyclic shifts by whole pixels or steps (exact, nothing leaves the input).

    Parameters
    ----------
    shifts : int or sequence
        Integers with ``axis="x"`` or ``"y"``; pairs (dx, dy) with ``axis="xy"``. Positive shifts
        move content right/down, like ``translation`` (coordinates ``dx``, ``dy`` in pixels).
        Integers with any other ``axis``: positive shifts move content towards higher indices,
        as ``np.roll`` (coordinate ``shift``, in steps).
    axis : {"x", "y", "xy"}, or "time", "length", "channel" or an int
        "x", "y", "xy": NHWC images. Otherwise one axis of a batch of any rank, such as
        sequences (N, L, C) or token ids (N, L): "time" (alias "length") is axis 1, "channel"
        the last axis, an int an axis of the batch (negative counts from the end, not 0).

    Examples
    --------
    >>> import numpy as np, tmx
    >>> seq = np.arange(4, dtype=np.float32).reshape(1, 4, 1)       # (N, L, C)
    >>> transforms = tmx.transforms.roll([0, 1], axis="time")
    >>> tmx.transforms.apply(transforms, seq, 1)[0, :, 0].tolist()
    [3.0, 0.0, 1.0, 2.0]
    >>> transforms.labels
    ('roll(0, axis=1)', 'roll(1, axis=1)')
    """
    if not (isinstance(axis, str) and axis in ("x", "y", "xy")):
        try:
            a = _batch_axis(axis, "axis")
        except ValueError:
            raise ValueError(
                f"axis must be one of {['x', 'y', 'xy', *SEQUENCE_AXES]} or a non-zero int axis "
                f"of the batch ('x', 'y', 'xy': images); got {v._describe(axis)}"
            ) from None
        values = v.int_vector(shifts, "shifts")
        return _single(
            ROLL_AXIS,
            [(s,) for s in values],
            (("axis", a),),
            f"roll(shifts={_short_list(values)}, axis={axis!r})",
        )
    if axis == "xy":
        arr = np.asarray(shifts, dtype=object)
        if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
            raise ValueError("shifts must be a non-empty sequence of (dx, dy) pairs for axis='xy'")
        xs = v.int_vector(list(arr[:, 0]), "shifts")
        ys = v.int_vector(list(arr[:, 1]), "shifts")
        rows = list(zip(xs, ys, strict=True))
    else:
        values = v.int_vector(shifts, "shifts")
        rows = [(s, 0) if axis == "x" else (0, s) for s in values]
    text = (
        _short_list([f"({a}, {b})" for a, b in rows])
        if axis == "xy"
        else _short_list([r[0] if axis == "x" else r[1] for r in rows])
    )
    return _single(ROLL, rows, (), f"roll(shifts={text}, axis={axis!r})")


def brightness(factors: Sequence[float] | np.ndarray | float) -> TransformationSet:
    """Multiplicative brightness: x ↦ factor · x (no clipping). Identity on feature maps.

    Applies to floating batches of any rank: images, tables (N, features), sequences (N, L, C).

    Examples
    --------
    >>> import numpy as np, tmx
    >>> table = np.array([[1.0, -2.0, 3.0]], np.float32)                # (N, features)
    >>> tmx.transforms.apply(tmx.transforms.brightness([1.0, 0.5]), table, 1).tolist()
    [[0.5, -1.0, 1.5]]
    """
    values = v.real_vector(factors, "factors")
    return _single(BRIGHTNESS, [(f,) for f in values], (), f"brightness({_short_list(values)})")


def contrast(factors: Sequence[float] | np.ndarray | float) -> TransformationSet:
    """Contrast about each sample's per-channel mean m: x ↦ m + factor · (x − m) (no clipping,
    as ``tf.image.adjust_contrast``). Identity on feature maps.

    The mean is taken over every axis but the sample axis and the last (channel) axis: over
    height and width of NHWC images, over time of sequences (N, L, C); for a table
    (N, features), which has no such axis, over the sample's features.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> table = np.array([[1.0, 2.0, 6.0]], np.float32)                 # mean 3
    >>> tmx.transforms.apply(tmx.transforms.contrast(2.0), table, 0).tolist()
    [[-1.0, 1.0, 9.0]]
    """
    values = v.real_vector(factors, "factors")
    return _single(CONTRAST, [(f,) for f in values], (), f"contrast({_short_list(values)})")


def gaussian_noise(std: Sequence[float] | np.ndarray | float, seed: int = 0) -> TransformationSet:
    """Additive Gaussian noise x ↦ x + std · ε, ε ~ N(0, 1), seeded and reproducible.

    The noise of sample i under transformation j depends only on (seed, j, i), where i is the
    sample's index (``sample_index`` of ``apply``, by default its position in the batch),
    never on the batch size. Noise cannot be inverted on feature maps. Applies to floating
    batches of any rank (integer inputs such as token ids are refused).

    Examples
    --------
    >>> import numpy as np, tmx
    >>> seq = np.zeros((2, 5, 3), np.float32)                           # (N, L, C)
    >>> noisy = tmx.transforms.apply(tmx.transforms.gaussian_noise([0.0, 0.1]), seq, 1)
    >>> noisy.shape, bool(np.all(noisy != 0))
    ((2, 5, 3), True)
    """
    values = v.real_vector(std, "std", nonnegative=True)
    seed = v.seed(seed)
    return _single(
        NOISE,
        [(s,) for s in values],
        (("seed", int(seed)),),
        f"gaussian_noise(std={_short_list(values)}, seed={int(seed)})",
    )


def custom(
    fn: Callable[..., Any],
    params: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
    inverse: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    geometric: bool = True,
) -> TransformationSet:
    """A transformation set from your own TensorFlow function.

    Parameters
    ----------
    fn : callable
        ``fn(x, **params_j)`` maps a batch (a ``tf.Tensor``) to a batch of the same shape, with
        TensorFlow ops so that it runs inside the forward-pass graph. The batch has any rank:
        NHWC images (of the same height and width back; the channels may change), tables
        (N, features), sequences (N, L, C) or token ids (N, L) (the same shape back). Integer
        batches other than images keep their dtype, and the result is cast to it.
    params : dict of sequences, or sequence of dicts
        The parameters of each transformation: ``{"gamma": [0.5, 1, 2]}`` or
        ``[{"gamma": 0.5}, {"gamma": 1}, ...]``. Names become coordinates.
    inverse : callable, optional
        ``inverse(fmap, **params_j)`` maps a feature-map batch (B, h, w, C) of *any* spatial size
        and channel count back; without it the set is not invertible (unless
        ``geometric=False``, in which case it acts as the identity on feature maps).
    name : str, optional
        Used in labels; defaults to ``fn.__name__``.
    geometric : bool, default True
        False for photometric functions (identity on feature maps).

    Examples
    --------
    Token dropout on token ids (N, L): a token is replaced by 0 where a hash of (token,
    position) falls below ``p``. Derive any randomness from the inputs, as here, not from
    the batch's shape: the cube groups and pads samples into batches of its own choosing.

    >>> import numpy as np, tensorflow as tf, tmx
    >>> def dropout(x, p):
    ...     position = tf.range(tf.shape(x)[1], dtype=x.dtype)[None, :]
    ...     u = tf.cast(tf.math.floormod(x * 7919 + position * 104729, 1000), tf.float32)
    ...     return tf.where(u / 1000 >= p, x, tf.zeros_like(x))
    >>> transforms = tmx.transforms.custom(dropout, {"p": [0.0, 1.0]})
    >>> tokens = np.array([[5, 7, 9]])
    >>> [tmx.transforms.apply(transforms, tokens, j).tolist() for j in range(2)]
    [[[5, 7, 9]], [[0, 0, 0]]]
    """
    if not callable(fn):
        raise ValueError(f"fn must be callable; got {fn!r}")
    if inverse is not None and not callable(inverse):
        raise ValueError(f"inverse must be callable or None; got {inverse!r}")
    if isinstance(params, Mapping):
        if not params:
            raise ValueError("params must name at least one parameter")
        columns = {k: list(np.asarray(val, dtype=object).reshape(-1)) for k, val in params.items()}
        lengths = {len(c) for c in columns.values()}
        if len(lengths) != 1:
            raise ValueError(f"params: every parameter needs the same length; got {lengths}")
        rows = [
            dict(zip(columns, vals, strict=True)) for vals in zip(*columns.values(), strict=True)
        ]
    elif isinstance(params, Sequence) and all(isinstance(r, Mapping) for r in params):
        rows = [dict(r) for r in params]
        if rows and any(set(r) != set(rows[0]) for r in rows):
            raise ValueError("params: every transformation must have the same parameter names")
    else:
        raise ValueError("params must be a dict of sequences or a sequence of dicts")
    if not rows:
        raise ValueError("params must describe at least one transformation")
    keys = tuple(rows[0])
    _check_names(keys, "params")
    _check_signature(fn, "fn", keys)
    if inverse is not None:
        _check_signature(inverse, "inverse", keys)
    for row in rows:
        for key, val in row.items():
            if isinstance(val, np.generic):
                row[key] = val.item()
            if not isinstance(row[key], int | float | str) or isinstance(row[key], bool):
                raise ValueError(
                    f"params[{key!r}] values must be numbers or strings; got {row[key]!r}"
                )
    label = name or getattr(fn, "__name__", "custom")
    if not isinstance(label, str) or not label.isidentifier():
        label = "custom"
    neutrals = tuple("" if isinstance(rows[0][k], str) else float("nan") for k in keys)
    kind = Kind(
        name=label,
        category="custom",
        params=keys,
        meanings=tuple(f"custom:{label}.{k}" for k in keys),
        units=("",) * len(keys),
        neutrals=neutrals,
        fn=fn,
        inverse=inverse,
        geometric=bool(geometric),
    )
    return _single(
        kind,
        [tuple(r[k] for k in keys) for r in rows],
        (),
        f"custom({label}, T={len(rows)}, params={list(keys)})",
    )


def _check_signature(fn: Callable[..., Any], argname: str, keys: Sequence[str]) -> None:
    """``fn(batch, **params)`` must be a valid call (checked now, not deep inside a graph)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: trust them
        return
    try:
        signature.bind(None, **dict.fromkeys(keys))
    except TypeError as err:
        params = ", ".join(f"{k}=..." for k in keys)
        raise ValueError(
            f"{argname} must accept ({'x' if argname == 'fn' else 'fmap'}, {params}): {err}"
        ) from None


def _check_names(names: Sequence[str], argname: str) -> None:
    for n in names:
        if not isinstance(n, str) or not n.isidentifier():
            raise ValueError(f"{argname}: parameter names must be identifiers; got {n!r}")
        if n in RESERVED_NAMES:
            raise ValueError(
                f"{argname}: parameter name {n!r} is reserved (it is a dim or coordinate of "
                f"the cube); reserved: {sorted(RESERVED_NAMES)}"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"{argname}: parameter names must be unique; got {list(names)}")


def _check_sets(sets: Sequence[Any], fname: str) -> list[TransformationSet]:
    if len(sets) == 1 and isinstance(sets[0], list | tuple):
        sets = tuple(sets[0])
    if not sets:
        raise ValueError(f"{fname}() needs at least one transformation set")
    for i, s in enumerate(sets):
        if not isinstance(s, TransformationSet):
            raise ValueError(
                f"{fname}(): argument {i} must be a TransformationSet; got {type(s).__name__}"
            )
    return list(sets)


def _resolve_names(
    sets: list[TransformationSet], share_same_meaning: bool
) -> list[TransformationSet]:
    """Rename clashing parameter names: ``{kind}_{name}`` when that is unambiguous, otherwise
    ``{name}_{i}`` with i the 1-based position of the set."""
    occurrences: dict[str, list[tuple[int, str, str | None]]] = {}
    for i, s in enumerate(sets):
        for name, (meaning, kind_name, _u, _n) in s._name_info.items():
            occurrences.setdefault(name, []).append((i, meaning, kind_name))
    taken = set(occurrences)
    renames: list[dict[str, str]] = [{} for _ in sets]
    for name, occ in occurrences.items():
        if len(occ) < 2:
            continue
        if share_same_meaning and len({m for _, m, _ in occ}) == 1:
            continue
        candidates = [f"{k}_{name}" if k else "" for _, _, k in occ]
        if "" in candidates or len(set(candidates)) < len(occ) or set(candidates) & taken:
            candidates = [f"{name}_{i + 1}" for i, _, _ in occ]
        for (i, _, _), new in zip(occ, candidates, strict=True):
            renames[i][name] = new
        taken |= set(candidates)
    return [s.rename(r) if r else s for s, r in zip(sets, renames, strict=True)]


def product(*sets: TransformationSet) -> TransformationSet:
    """Every combination of one transformation from each set, applied left to right.

    ``product(a, b)`` has T = len(a) · len(b) transformations, ordered like
    ``itertools.product`` (a outer, b inner); element (i, k) applies a[i] then b[k]. Parameter
    coordinates of all sets are kept; a name present in several sets is renamed
    (``brightness_factor``/``contrast_factor``, or ``angle_1``/``angle_2``).

    Examples
    --------
    >>> import tmx
    >>> t = tmx.transforms
    >>> transforms = t.product(t.brightness([1, 2]), t.contrast([1, 3]))
    >>> len(transforms), transforms.names
    (4, ('brightness_factor', 'contrast_factor'))
    >>> transforms.labels[1]
    'brightness(1)+contrast(3)'
    """
    resolved = _resolve_names(_check_sets(sets, "product"), share_same_meaning=False)
    elements = tuple(
        tuple(op for chain in combo for op in chain)
        for combo in itertools.product(*[s.elements for s in resolved])
    )
    return TransformationSet(elements, f"product({', '.join(s.description for s in resolved)})")


def union(*sets: TransformationSet) -> TransformationSet:
    """The transformations of every set, one after the other (T = Σ len(set)).

    Parameters with the same name and meaning share a coordinate; a transformation lacking one
    takes its neutral value (a translation has angle 0 in a union with rotations).

    Examples
    --------
    >>> import tmx
    >>> T = tmx.transforms
    >>> transforms = T.union(T.rotation(90), T.translation(3, 0))
    >>> transforms.labels
    ('rotation(90)', 'translation(3, 0)')
    >>> transforms.parameters["angle"].values.tolist(), transforms.parameters["dx"].values.tolist()
    ([90.0, 0.0], [0.0, 3.0])
    """
    resolved = _resolve_names(_check_sets(sets, "union"), share_same_meaning=True)
    elements = tuple(chain for s in resolved for chain in s.elements)
    return TransformationSet(elements, f"union({', '.join(s.description for s in resolved)})")


def check_index(transforms: TransformationSet, j: Any) -> int:
    """Validate a transformation index ``j`` (negative indices count from the end)."""
    if not isinstance(transforms, TransformationSet):
        raise ValueError(f"transforms must be a TransformationSet; got {type(transforms).__name__}")
    if isinstance(j, bool) or not isinstance(j, int | np.integer):
        raise ValueError(f"j must be an integer transformation index; got {j!r}")
    if not -len(transforms) <= j < len(transforms):
        raise ValueError(f"j={j} is out of range for a set of T={len(transforms)} transformations")
    return int(j) % len(transforms)
