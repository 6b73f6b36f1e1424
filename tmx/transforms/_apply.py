"""Applying transformation sets to batches, and inverting them on feature maps.

Geometric operations of images need rank-4 NHWC batches; photometric, noise and custom operations,
and rolls and flips along one named axis, apply to batches of any rank (tables (N, features),
sequences (N, L, C), token ids (N, L)). ``check_input`` says, before any graph is built, whether a
set applies to inputs of a given shape and dtype.

Everything is TensorFlow ops, so ``apply`` and ``invert_maps`` run inside a ``tf.function``
(the forward-pass graph of the cube). Consecutive interpolated geometric operations of one
transformation (rotation, translation, scale, shear with the same sampling options) are composed
into one matrix and resampled once; their inverse is the exact inverse of that matrix. Flips,
quarter turns and cyclic shifts are exact index operations.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _validate as v
from .._deprecation import renamed_keyword
from ._set import (
    FILLS,
    FLIP_AXIS,
    INTERPOLATIONS,
    ROLL_AXIS,
    ROTATION,
    SCALE,
    SHEAR_X,
    SHEAR_Y,
    TRANSLATION,
    TRANSLATION_REL,
    Fill,
    Interpolation,
    Op,
    TransformationSet,
    chain_needs_input_size,
    check_index,
)


def _tf():
    import tensorflow as tf  # imported lazily: building sets needs no TensorFlow

    return tf


# -- geometry -----------------------------------------------------------------------------------
def point_matrix(op: Op, height: int, width: int, pixel_scale=(1.0, 1.0)) -> np.ndarray:
    """The 3×3 homogeneous matrix mapping a point (x, y, 1) of the input to the output.

    ``pixel_scale`` = (sx, sy) rescales pixel-unit parameters (translations) for a feature map:
    sx = w / W_input, sy = h / H_input.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> [op] = tmx.transforms.translation(2, 1).elements[0]
    >>> tmx.transforms.point_matrix(op, 5, 5).tolist()
    [[1.0, 0.0, 2.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]
    >>> [op] = tmx.transforms.rotation(90).elements[0]
    >>> np.round(tmx.transforms.point_matrix(op, 5, 5), 6) + 0.0     # about the centre (2, 2)
    array([[ 0.,  1.,  0.],
           [-1.,  0.,  4.],
           [ 0.,  0.,  1.]])
    """
    p = op.params
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    if op.kind == TRANSLATION:
        return np.array(
            [[1, 0, p["dx"] * pixel_scale[0]], [0, 1, p["dy"] * pixel_scale[1]], [0, 0, 1]]
        )
    if op.kind == TRANSLATION_REL:
        return np.array([[1, 0, p["dx_rel"] * width], [0, 1, p["dy_rel"] * height], [0, 0, 1]])
    if op.kind == ROTATION:
        t = np.deg2rad(p["angle"])
        a = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    elif op.kind == SCALE:
        a = np.eye(2) * p["scale"]
    elif op.kind == SHEAR_X:
        a = np.array([[1.0, np.tan(np.deg2rad(p["shear_x"]))], [0.0, 1.0]])
    elif op.kind == SHEAR_Y:
        a = np.array([[1.0, 0.0], [np.tan(np.deg2rad(p["shear_y"])), 1.0]])
    else:  # pragma: no cover - only affine kinds reach here
        raise ValueError(f"{op.kind.name} is not an affine operation")
    c = np.array([cx, cy])
    m = np.eye(3)
    m[:2, :2] = a
    m[:2, 2] = c - a @ c
    return m


def _tf_params(m: np.ndarray) -> np.ndarray:
    """The 8 parameters of ``ImageProjectiveTransformV3`` for an output→input point matrix."""
    m = m / m[2, 2]
    return m.reshape(-1)[:8].astype(np.float32)


def _resample(x, params, interpolation: Interpolation, fill: Fill, fill_value: float):
    """Resample a batch with output→input projective matrices.

    ``params``: (8,) or (1, 8) for one matrix shared by the batch, or (B, 8) per image (numpy or
    tensor). TensorFlow's ``WRAP`` fill does not wrap the bilinear neighbours of a point near the
    seam (a 0.5 px cyclic shift of a one-hot row sums to 1.5), so for ``fill="wrap"`` the batch
    is padded cyclically by half a period on each side and the matrices are offset by the pad:
    exact for every point within half a period of the image (rotations, translations, scalings
    down to 0.5); TensorFlow's wrap handles points further out.
    """
    tf = _tf()
    if not tf.is_tensor(params):
        params = tf.constant(np.atleast_2d(params).astype(np.float32))
    if not x.dtype.is_floating:
        x = tf.cast(x, tf.float32)
    height, width = int(x.shape[1]), int(x.shape[2])
    if fill == "wrap":
        py, px = min(height, height // 2 + 1), min(width, width // 2 + 1)
        x = tf.concat([x[:, -py:], x, x[:, :py]], axis=1)
        x = tf.concat([x[:, :, -px:], x, x[:, :, :px]], axis=2)
        a0, a1, a2, b0, b1, b2, c0, c1 = tf.unstack(params, axis=1)
        params = tf.stack(
            [a0 + px * c0, a1 + px * c1, a2 + px, b0 + py * c0, b1 + py * c1, b2 + py, c0, c1],
            axis=1,
        )
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x,
        transforms=params,
        output_shape=tf.constant([height, width], tf.int32),
        fill_value=tf.constant(fill_value, tf.float32),
        interpolation=interpolation.upper(),
        fill_mode=fill.upper(),
    )


def _groups(chain: Sequence[Op]) -> list[list[Op]]:
    """Split a chain into runs: consecutive affine ops with equal sampling options form one run."""
    runs: list[list[Op]] = []
    for op in chain:
        if (
            op.kind.category == "affine"
            and runs
            and runs[-1][0].kind.category == "affine"
            and runs[-1][0].options == op.options
        ):
            runs[-1].append(op)
        else:
            runs.append([op])
    return runs


def _run_matrix(run: Sequence[Op], height: int, width: int, pixel_scale) -> np.ndarray:
    m = np.eye(3)
    for op in run:  # first op applied first: its matrix is rightmost
        m = point_matrix(op, height, width, pixel_scale) @ m
    return m


# -- batches ------------------------------------------------------------------------------------
def _np_dtype(dtype: Any) -> np.dtype:
    as_numpy = getattr(dtype, "as_numpy_dtype", None)  # a tf.DType
    return np.dtype(as_numpy if as_numpy is not None else dtype)


def _op_axis(op: Op) -> int:
    """The axis of a roll or flip along one axis (0: no flip)."""
    return int(op.option("axis")) if op.kind == ROLL_AXIS else int(op.params["flip_axis"])


@renamed_keyword("tset", "transforms")
def check_input(
    transforms: TransformationSet,
    shape: Sequence[int | None],
    dtype: Any = "float32",
    *,
    indices: Sequence[int] | None = None,
    name: str = "x",
) -> np.dtype:
    """Check that a set applies to batches of a shape and dtype; return the dtype it keeps.

    Geometric transformations of images (rotation, translation, scale, shear, ``flip("x")``,
    ``rot90``, ``roll(s, "x")``) need rank-4 NHWC batches. Photometric (brightness, contrast)
    and noise ones need floating inputs of any rank. Custom transformations, and ``roll`` /
    ``flip`` along a named axis, apply to any rank and dtype. Integer batches of rank 4 are
    treated as images and converted to float32; other integer batches (token ids) keep their
    dtype, so that a model taking integers receives integers.

    Parameters
    ----------
    transforms : TransformationSet
    shape : sequence of int or None
        The batch's shape, sample axis first (its length may be None).
    dtype : dtype-like, default "float32"
        The batch's dtype (numpy or TensorFlow).
    indices : sequence of int, optional
        Check only these transformations (default: all).
    name : str, default "x"
        The input's name in error messages.

    Returns
    -------
    numpy.dtype
        The dtype the transformations work in and return: that of a floating input, float32
        for integer images, the input's own for other integer inputs.

    Raises
    ------
    ValueError
        Naming the transformation and the input's shape, if one does not apply.

    Examples
    --------
    >>> import tmx
    >>> T = tmx.transforms
    >>> transforms = T.union(T.brightness(2.0), T.rotation(30))
    >>> tmx.transforms.check_input(transforms, (8, 28, 28, 1), "uint8")
    dtype('float32')
    >>> tmx.transforms.check_input(transforms[:1], (8, 16))
    dtype('float32')
    >>> tmx.transforms.check_input(transforms, (8, 16))
    Traceback (most recent call last):
    ...
    ValueError: rotation(30) is a geometric transformation of images ...
    """
    if not isinstance(transforms, TransformationSet):
        raise ValueError(f"transforms must be a TransformationSet; got {type(transforms).__name__}")
    shape = tuple(None if s is None else int(s) for s in shape)
    rank = len(shape)
    if rank < 2:
        raise ValueError(
            f"{name} must be a batch with a sample axis first and at least one more axis; got "
            f"shape {shape}. Add a batch axis with {name}[None] or a feature axis with "
            f"{name}[:, None]."
        )
    dt = _np_dtype(dtype)
    if dt.kind not in "fiub":
        raise ValueError(f"{name} must be numeric; got dtype {dt}")
    out = dt if dt.kind == "f" else np.dtype(np.float32) if rank == 4 else dt
    chosen = (
        range(len(transforms)) if indices is None else [check_index(transforms, j) for j in indices]
    )
    seen: set[Op] = set()
    for j in chosen:
        for op in transforms.elements[j]:
            if op in seen:
                continue
            seen.add(op)
            kind = op.kind
            if kind.image_only and rank != 4:
                raise ValueError(
                    f"{op.label} is a geometric transformation of images and needs a rank-4 "
                    f"NHWC batch (batch, height, width, channels); {name} has shape {shape}. "
                    "Inputs of other ranks take photometric, noise and custom transformations, "
                    "and roll(shifts, axis='time') / flip(axis='time') along one axis; add a "
                    f"channel axis to grayscale images (N, H, W) with {name}[..., None]."
                )
            if kind.image_only and kind.category == "affine" and None in shape[1:3]:
                raise ValueError(f"{name} must have a static height and width; got {shape}")
            if kind.float_only and out.kind != "f":
                raise ValueError(
                    f"{op.label} needs floating inputs; {name} has dtype {dt} and shape {shape} "
                    "(integer inputs other than images, such as token ids, keep their dtype). "
                    f"Cast {name} to float32 if the model takes floats, or use a custom "
                    "transformation."
                )
            if kind in (ROLL_AXIS, FLIP_AXIS):
                axis = _op_axis(op)
                if axis != 0 and not 1 <= (axis if axis > 0 else rank + axis) < rank:
                    raise ValueError(
                        f"{op.label}: axis {axis} is not an axis of {name}, which has shape "
                        f"{shape} (axes 1..{rank - 1}; axis 0 holds the samples)"
                    )
    return out


def _as_inputs(transforms: TransformationSet, x: Any, indices: Sequence[int]):
    """(tensor, was_numpy): the batch to transform, in the dtype ``check_input`` returns."""
    tf = _tf()
    was_numpy = not tf.is_tensor(x)
    if was_numpy:
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiub":
            raise ValueError(f"x must be numeric; got dtype {arr.dtype}")
        x = tf.convert_to_tensor(arr)
    if x.shape.rank is None:
        raise ValueError("x must have a known rank")
    dtype = check_input(transforms, tuple(x.shape), x.dtype, indices=indices)
    if dtype != _np_dtype(x.dtype):
        x = tf.cast(x, tf.as_dtype(dtype))
    return x, was_numpy


def _as_maps(x: Any, name: str, *, images: bool = True):
    """(tensor, was_numpy): a floating feature-map batch; rank 4 with static height and width
    when ``images``, otherwise any rank ≥ 2."""
    tf = _tf()
    was_numpy = not tf.is_tensor(x)
    if was_numpy:
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiub":
            raise ValueError(f"{name} must be numeric; got dtype {arr.dtype}")
        if arr.dtype.kind != "f":
            arr = arr.astype(np.float32)
        x = tf.convert_to_tensor(arr)
    elif not x.dtype.is_floating:
        x = tf.cast(x, tf.float32)
    if not images:
        if x.shape.rank is None or x.shape.rank < 2:
            raise ValueError(f"{name} must be a batch of rank 2 or more; got shape {x.shape}")
        return x, was_numpy
    if x.shape.rank != 4:
        raise ValueError(
            f"{name} must be a rank-4 NHWC batch (batch, height, width, channels); got shape "
            f"{tuple(x.shape)}. Add a batch axis with x[None] or a channel axis with x[..., None]."
        )
    if x.shape[1] is None or x.shape[2] is None:
        raise ValueError(f"{name} must have a static height and width; got shape {x.shape}")
    return x, was_numpy


def _sample_index(sample_index: Any, batch):
    """Sample indices as int64 (default: positions in the batch)."""
    tf = _tf()
    if sample_index is None:
        return tf.range(batch, dtype=tf.int64)
    return tf.cast(tf.reshape(sample_index, [-1]), tf.int64)


def _apply_op(op: Op, x, j: int, sample_index):
    tf = _tf()
    p = op.params
    kind = op.kind
    if kind.category == "custom":
        return _call_custom(kind.fn, x, p, f"custom transformation {kind.name!r}")
    if kind == ROLL_AXIS:
        return tf.roll(x, shift=p["shift"], axis=_op_axis(op) % x.shape.rank)
    if kind == FLIP_AXIS:
        axis = _op_axis(op)
        return tf.reverse(x, [axis % x.shape.rank]) if axis else x
    if kind.name == "flip":
        axes = {"none": [], "x": [2], "y": [1], "xy": [1, 2]}[p["flip"]]
        return tf.reverse(x, axes) if axes else x
    if kind.name == "rot90":
        return _rot90(x, p["k"])
    if kind.name == "roll":
        return tf.roll(x, shift=[p["dy"], p["dx"]], axis=[1, 2])
    if kind.name == "brightness":
        return x * tf.cast(p["factor"], x.dtype)
    if kind.name == "contrast":  # over all axes but samples and channels; a table's features
        mean = tf.reduce_mean(x, axis=list(range(1, x.shape.rank - 1)) or [1], keepdims=True)
        return mean + tf.cast(p["factor"], x.dtype) * (x - mean)
    if kind.name == "gaussian_noise":
        return x + tf.cast(p["std"], x.dtype) * _noise(x, op.option("seed"), j, sample_index)
    raise AssertionError(f"unhandled operation {kind.name}")  # pragma: no cover


def _call_custom(fn, x, params: dict[str, Any], what: str):
    """Call a user function on a batch and check its shape: images keep their height and width
    (channels may change), batches of other ranks their whole shape."""
    tf = _tf()
    out = tf.convert_to_tensor(fn(x, **params))
    rank = x.shape.rank
    if rank == 4:
        bad = out.shape.rank != 4 or out.shape[1:3] != x.shape[1:3]
    else:
        bad = out.shape.rank != rank or not out.shape[1:].is_compatible_with(x.shape[1:])
    if bad:
        raise ValueError(
            f"{what} must return a batch of the input's shape {tuple(x.shape)}; "
            f"got {tuple(out.shape)}"
        )
    return tf.cast(out, x.dtype)


def _rot90(x, k: int):
    tf = _tf()
    k = int(k) % 4
    if k % 2 and x.shape[1] != x.shape[2]:
        raise ValueError(
            f"rot90 with an odd k needs square images or feature maps; got "
            f"height {x.shape[1]} and width {x.shape[2]}"
        )
    return tf.image.rot90(x, k) if k else x


def _noise(x, seed: int, j: int, sample_index):
    """Standard normal noise shaped like x, keyed by (seed, j, sample index) per sample."""
    tf = _tf()
    batch = tf.shape(x)[0]
    idx = _sample_index(sample_index, batch)
    seeds = tf.stack(
        [tf.fill([batch], tf.constant(seed, tf.int64)), idx + tf.constant(j << 32, tf.int64)],
        axis=1,
    )
    shape = tf.shape(x)[1:]
    return tf.map_fn(
        lambda s: tf.random.stateless_normal(shape, seed=s, dtype=x.dtype),
        seeds,
        fn_output_signature=tf.TensorSpec(x.shape[1:], x.dtype),
    )


def _apply_chain(chain: Sequence[Op], x, j: int, sample_index):
    """Transformation ``chain`` (the j-th of its set) on a batch of any rank the chain accepts
    (see ``check_input``; the cube's forward pass calls this inside its graph)."""
    for run in _groups(chain):
        head = run[0]
        if head.kind.category == "affine":
            height, width = int(x.shape[1]), int(x.shape[2])
            m = _run_matrix(run, height, width, (1.0, 1.0))
            x = _resample(
                x,
                _tf_params(np.linalg.inv(m)),
                head.option("interpolation"),
                head.option("fill"),
                head.option("fill_value"),
            )
        else:
            for op in run:
                x = _apply_op(op, x, j, sample_index)
    return x


def _to_output(y, was_numpy: bool):
    return y.numpy() if was_numpy else y


@renamed_keyword("tset", "transforms")
def apply(transforms: TransformationSet, x: Any, j: int, *, sample_index: Any = None) -> Any:
    """Apply transformation ``j`` of ``transforms`` to a batch.

    Parameters
    ----------
    transforms : TransformationSet
    x : array-like or tf.Tensor, sample axis first
        NHWC images (batch, height, width, channels) for geometric transformations of images;
        any rank for the others: tables (N, features), sequences (N, L, C), token ids (N, L).
        Integer images are converted to float32; other integer inputs keep their dtype (see
        ``check_input``).
    j : int
        Index of the transformation (negative counts from the end).
    sample_index : array-like of int, optional
        The samples' indices in the data set; only noise uses them (noise of sample i under
        transformation j depends on (seed, j, i) alone). Default: positions 0..batch−1.

    Returns
    -------
    numpy.ndarray if ``x`` was a numpy array, otherwise a ``tf.Tensor``; same shape as ``x``.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> img = np.zeros((1, 5, 5, 1), np.float32); img[0, 0, 4, 0] = 1   # top-right corner
    >>> out = tmx.transforms.apply(tmx.transforms.rotation(90), img, 0)
    >>> np.argwhere(out[0, ..., 0] > 0.5).tolist()                       # now top-left
    [[0, 0]]
    >>> seq = np.arange(8, dtype=np.float32).reshape(1, 4, 2)           # (N, L, C)
    >>> transforms = tmx.transforms.product(
    ...     tmx.transforms.roll(1, axis="time"), tmx.transforms.brightness(2)
    ... )
    >>> tmx.transforms.apply(transforms, seq, 0)[0].tolist()
    [[12.0, 14.0], [0.0, 2.0], [4.0, 6.0], [8.0, 10.0]]
    """
    j = check_index(transforms, j)
    x, was_numpy = _as_inputs(transforms, x, [j])
    return _to_output(_apply_chain(transforms.elements[j], x, j, sample_index), was_numpy)


@renamed_keyword("tset", "transforms")
def apply_many(
    transforms: TransformationSet,
    x: Any,
    indices: Sequence[int] | None = None,
    *,
    sample_index: Any = None,
) -> Any:
    """Apply several transformations to a batch: shape (batch, K, ...) (K transformations).

    ``x`` is as in ``apply``: NHWC images, or a batch of any rank without geometric
    transformations of images.

    ``indices`` defaults to every transformation of the set. Each transformation is one
    independent op (TensorFlow runs them in parallel); ``benchmarks/transforms.py`` compares this
    with a single op over the batch tiled K times (within noise of each other on 2 cores).

    Examples
    --------
    >>> import numpy as np, tmx
    >>> x = np.ones((2, 3), np.float32)                                 # (N, features)
    >>> out = tmx.transforms.apply_many(tmx.transforms.brightness([1.0, 2.0, 3.0]), x)
    >>> out.shape, out[0, :, 0].tolist()
    ((2, 3, 3), [1.0, 2.0, 3.0])
    """
    tf = _tf()
    if indices is None:
        indices = list(range(len(transforms)))
    else:
        indices = [check_index(transforms, j) for j in v.int_vector(indices, "indices")]
    x, was_numpy = _as_inputs(transforms, x, indices)
    out = tf.stack(
        [_apply_chain(transforms.elements[j], x, j, sample_index) for j in indices], axis=1
    )
    return _to_output(out, was_numpy)


# -- inverse ------------------------------------------------------------------------------------
@renamed_keyword("tset", "transforms")
def invert_maps(
    transforms: TransformationSet,
    fmap: Any,
    j: int,
    *,
    input_size: int | tuple[int, int] | None = None,
    interpolation: Interpolation | None = None,
    fill: Fill | None = None,
) -> Any:
    """Map feature maps computed on transformed inputs back by the inverse of transformation j.

    Formerly ``tmx.transforms.invert`` (a deprecated alias now): renamed apart from
    ``tmx.invert``, which maps a whole activation cube back with this function.

    b = g_j⁻¹ · fmap, computed at the feature map's own resolution: rotations, scalings and
    shears act about the map's centre; pixel translations and cyclic shifts are rescaled by the
    map's size relative to the input (dx · w / W, dy · h / H); relative translations need no
    rescaling. A chain of interpolated operations is undone with the exact inverse of its
    composed matrix, in one resampling; flips, quarter turns and whole-pixel cyclic shifts are
    undone exactly (a cyclic shift that is not a whole number of pixels on the map is resampled
    with ``fill="wrap"``). Photometric transformations act as the identity on feature maps.

    Parameters
    ----------
    transforms : TransformationSet
    fmap : array-like or tf.Tensor, shape (batch, h, w, channels)
        Feature maps of any spatial size and channel count.
    j : int
        The transformation that produced the inputs of ``fmap``.
    input_size : int or (H, W), optional
        The size of the model's input images; required when transformation j has pixel-unit
        parameters (translations, rolls) and the map size differs from the input's.
    interpolation, fill : str, optional
        Override the set's sampling options for the inverse.

    Raises
    ------
    ValueError
        If transformation j cannot be inverted (noise; a custom function without ``inverse``).

    Examples
    --------
    >>> import numpy as np, tmx
    >>> transforms = tmx.transforms.rot90([0, 1])
    >>> fmap = np.arange(4, dtype=np.float32).reshape(1, 2, 2, 1)
    >>> turned = tmx.transforms.apply(transforms, fmap, 1)
    >>> bool(np.array_equal(tmx.transforms.invert_maps(transforms, turned, 1), fmap))
    True
    >>> shift = tmx.transforms.translation(4, 0)                         # 4 px on a 8 px input
    >>> fmap = np.zeros((1, 4, 4, 1), np.float32); fmap[0, 1, 3, 0] = 1  # a 4 px map
    >>> back = tmx.transforms.invert_maps(shift, fmap, 0, input_size=8)  # moves 2 px left
    >>> np.argwhere(back[0, ..., 0] > 0.5).tolist()
    [[1, 1]]
    """
    j = check_index(transforms, j)
    chain = transforms.elements[j]
    for op in chain:
        if not op.kind.invertible:
            why = (
                "random noise has no inverse"
                if op.kind.category == "noise"
                else "it was built with custom(..., inverse=None)"
            )
            raise ValueError(
                f"transformation {j} ({transforms.labels[j]}) of the set cannot be inverted on "
                f"feature maps: {why}"
            )
    if interpolation is not None:
        v.choice(interpolation, "interpolation", INTERPOLATIONS)
    if fill is not None:
        v.choice(fill, "fill", FILLS)
    images = any(op.kind.image_only for op in chain)
    x, was_numpy = _as_maps(fmap, "fmap", images=images)
    rank = x.shape.rank
    height = int(x.shape[1]) if rank > 2 and x.shape[1] is not None else 1
    width = int(x.shape[2]) if rank > 3 and x.shape[2] is not None else height
    if input_size is None:
        if chain_needs_input_size(chain):
            raise ValueError(
                f"input_size is required to invert transformation {j} ({transforms.labels[j]}) "
                "on a feature map: its pixel shifts are rescaled by the map's size relative to the "
                "input's; pass input_size=(H, W) of the model input (L of a sequence's)"
            )
        input_size = (height, width)
    in_h, in_w = v.image_size(input_size, "input_size")
    scale_xy = (width / in_w, height / in_h)
    for run in reversed(_groups(chain)):
        head = run[0]
        if head.kind.category == "affine":
            m = _run_matrix(run, height, width, scale_xy)
            # the inverse image's output→input point map is the forward point map itself
            x = _resample(
                x,
                _tf_params(m),
                interpolation or head.option("interpolation"),
                fill or head.option("fill"),
                head.option("fill_value"),
            )
            continue
        for op in reversed(run):
            x = _invert_op(op, x, scale_xy, interpolation, fill)
    return _to_output(x, was_numpy)


def invert(*args: Any, **kwargs: Any) -> Any:
    """Deprecated: ``tmx.transforms.invert_maps`` (same arguments, same result).

    Renamed apart from ``tmx.invert`` (the inverse-transformed activation cube); warns a
    ``DeprecationWarning`` and will be removed.

    Examples
    --------
    >>> import warnings, numpy as np, tmx
    >>> fmap = np.arange(4, dtype=np.float32).reshape(1, 2, 2, 1)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     back = tmx.transforms.invert(tmx.transforms.rot90(1), fmap, 0)
    >>> print(caught[0].message)
    tmx.transforms.invert is deprecated and will be removed; use tmx.transforms.invert_maps instead
    """
    warnings.warn(
        "tmx.transforms.invert is deprecated and will be removed; use "
        "tmx.transforms.invert_maps instead",
        DeprecationWarning,
        stacklevel=2,
    )
    return invert_maps(*args, **kwargs)


def _invert_op(op: Op, x, scale_xy, interpolation, fill):
    tf = _tf()
    kind, p = op.kind, op.params
    if kind.category == "photometric" or (kind.category == "custom" and not kind.geometric):
        return x
    if kind.category == "custom":
        return _call_custom(
            kind.inverse, x, p, f"the inverse of custom transformation {kind.name!r}"
        )
    if kind in (ROLL_AXIS, FLIP_AXIS):
        return _invert_axis_op(op, x, scale_xy)
    if kind.name == "flip":
        return _apply_op(op, x, 0, None)
    if kind.name == "rot90":
        return _rot90(x, -p["k"])
    if kind.name == "roll":
        sx, sy = -p["dx"] * scale_xy[0], -p["dy"] * scale_xy[1]
        if abs(sx - round(sx)) < 1e-9 and abs(sy - round(sy)) < 1e-9:
            return tf.roll(x, shift=[round(sy), round(sx)], axis=[1, 2])
        m = np.array([[1.0, 0.0, sx], [0.0, 1.0, sy], [0.0, 0.0, 1.0]])
        return _resample(x, _tf_params(np.linalg.inv(m)), interpolation or "bilinear", "wrap", 0.0)
    raise AssertionError(f"unhandled operation {kind.name}")  # pragma: no cover


def _invert_axis_op(op: Op, x, scale_xy):
    """Undo a roll or flip along one axis on feature maps: the same axis of the map (axis 1 or,
    for rank-4 maps, 2), a roll rescaled by the map's length over the input's."""
    tf = _tf()
    rank, axis = x.shape.rank, _op_axis(op)
    if axis == 0:
        return x
    a = axis % rank
    if not 1 <= a < rank - 1 or a > 2:
        raise ValueError(
            f"{op.label} cannot be inverted on feature maps of shape {tuple(x.shape)}: axis "
            f"{axis} is not a spatial or time axis of the map (the last axis holds its channels)"
        )
    if op.kind == FLIP_AXIS:
        return tf.reverse(x, [a])
    shift = -op.params["shift"] * (scale_xy[1] if a == 1 else scale_xy[0])
    if abs(shift - round(shift)) > 1e-9:
        raise ValueError(
            f"{op.label} moves the map of shape {tuple(x.shape)} by {-shift:g} steps, not a whole "
            "number: it cannot be undone exactly on this map"
        )
    return tf.roll(x, shift=round(shift), axis=a)
