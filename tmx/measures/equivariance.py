"""Same-equivariance: map each feature map back by the inverse of its transformation.

b[i, j, u] = (g_j⁻¹ · a(g_j x_i))[u]: the (y, x) map of every channel of every layer with
spatial axes is mapped back by the inverse of transformation j, at the map's own resolution
(``tmx.transforms.invert_maps``). Any invariance measure of b is the same-equivariance version
of that measure, e.g. NVSE = ``normalized_variance(invert(cube, transforms))``. A layer exactly
equivariant to an exact group action (a circular convolution under cyclic shifts) has NVSE = 0.
"""

from __future__ import annotations

import functools
from typing import Any, cast

import dask.array as da
import numpy as np
import xarray as xr
from scipy import sparse

from .._provenance import attr_value
from .._schema import check_cube, units_by_layer
from .._version import __version__
from ..transforms import TransformationSet, from_dict, invert_maps


def _layer_grid(cube: xr.DataArray, name: str, idx: np.ndarray) -> tuple[int, int, int] | None:
    """(h, w, c) of a layer whose units form a full (y, x, channel) grid; None if not spatial."""
    ys = np.asarray(cube["y"].values)[idx]
    xs = np.asarray(cube["x"].values)[idx]
    cs = np.asarray(cube["channel"].values)[idx]
    if (ys < 0).any() or (xs < 0).any():
        return None
    h, w, c = int(ys.max()) + 1, int(xs.max()) + 1, int(cs.max()) + 1
    gy, gx, gc = (g.reshape(-1) for g in np.meshgrid(range(h), range(w), range(c), indexing="ij"))
    contiguous = len(idx) == 0 or np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx)))
    if (
        len(idx) != h * w * c
        or not contiguous
        or not (np.array_equal(ys, gy) and np.array_equal(xs, gx) and np.array_equal(cs, gc))
    ):
        raise ValueError(
            f"cube: the units of layer {name!r} are not a whole (y, x, channel) grid in "
            "(y, x, channel) order; invert needs whole feature maps (do not select single "
            "units of a layer before inverting)"
        )
    return h, w, c


_MAX_OPERATOR_PIXELS = 4096  # maps up to 64 × 64 use the sparse operator
_BASIS_BATCH = 512


@functools.lru_cache(maxsize=512)
def _operator(
    transforms: TransformationSet,
    j: int,
    size: tuple[int, int],
    input_size: int | tuple[int, int] | None,
    interpolation: str | None,
    fill: str | None,
) -> tuple[Any, np.ndarray | None] | None:
    """The inverse of transformation j on one (h, w) channel as ``out = M @ map + b``.

    Every built-in inverse (interpolated affine maps, flips, quarter turns, cyclic shifts,
    photometric identities) acts on each channel alike and linearly up to a constant fill:
    column k of M is the inverse applied to the k-th one-hot map minus b, the inverse applied to
    a map of zeros. M is built by the very same operation, so it holds its exact interpolation
    weights, and is kept sparse (at most 4 entries per row for bilinear sampling). None for a
    chain with a custom operation or a map too large for the operator.
    """
    h, w = size
    if h * w > _MAX_OPERATOR_PIXELS or any(
        op.kind.category == "custom" for op in transforms.elements[j]
    ):
        return None
    options: dict[str, Any] = {"interpolation": interpolation, "fill": fill}
    zero = np.zeros((1, h, w, 1), np.float32)
    offset = np.asarray(invert_maps(transforms, zero, j, input_size=input_size, **options))
    offset = offset.reshape(h * w)
    blocks = []
    for lo in range(0, h * w, _BASIS_BATCH):
        k = np.arange(lo, min(h * w, lo + _BASIS_BATCH))
        basis = np.zeros((k.size, h * w), np.float32)
        basis[np.arange(k.size), k] = 1.0
        cols = np.asarray(
            invert_maps(transforms, basis.reshape(-1, h, w, 1), j, input_size=input_size, **options)
        ).reshape(k.size, h * w)
        blocks.append(sparse.csr_matrix(cols - offset))  # rows: one-hot k → column k of M
    matrix = sparse.vstack(blocks).T.tocsr()
    return matrix, (offset if np.any(offset) else None)


def _invert_block(
    block: np.ndarray,
    transforms: TransformationSet,
    shape: tuple[int, int, int],
    input_size: int | tuple[int, int] | None,
    options: dict[str, Any],
    block_info: dict | None = None,
) -> np.ndarray:
    start = block_info[0]["array-location"][1][0] if block_info else 0
    s, t, _ = block.shape
    h, w, c = shape
    out = np.empty(block.shape, np.float32)
    for jj in range(t):
        op = _operator(
            transforms, start + jj, (h, w), input_size, options["interpolation"], options["fill"]
        )
        maps = np.asarray(block[:, jj], dtype=np.float32)
        if op is None:
            back = invert_maps(
                transforms, maps.reshape(s, *shape), start + jj, input_size=input_size, **options
            )
            out[:, jj] = np.asarray(back).reshape(s, -1)
            continue
        matrix, offset = op
        # (s, hw, c) → (hw, s·c): every channel of every sample is one column (one copy)
        columns = maps.reshape(s, h * w, c).transpose(1, 0, 2).reshape(h * w, s * c)
        back = matrix @ columns
        if offset is not None:
            back += offset[:, None]
        # straight into the output block, through a (s, hw, c) view of it (one copy)
        out[:, jj].reshape(s, h * w, c)[...] = back.reshape(h * w, s, c).transpose(1, 0, 2)
    return out


def invert(
    cube: xr.DataArray,
    transforms: TransformationSet | None = None,
    *,
    input_size: int | tuple[int, int] | None = None,
    interpolation: str | None = None,
    fill: str | None = None,
) -> xr.DataArray:
    """The inverse-transformed cube b[i, j, u] = (g_j⁻¹ · a(g_j x_i))[u], lazily.

    A whole cube, every transformation: ``tmx.transforms.invert_maps`` (formerly
    ``tmx.transforms.invert``) maps one batch of feature maps back by one transformation.

    Parameters
    ----------
    cube : xr.DataArray
        An activation cube (numpy- or dask-backed; the result is lazy when the cube is).
    transforms : TransformationSet, optional
        The cube's transformations; default: rebuilt from ``cube.attrs["transforms"]``.
    input_size : int or (H, W), optional
        The model input's size, to rescale pixel shifts; default ``cube.attrs["input_shape"]``.
    interpolation, fill : str, optional
        Override the set's sampling options for the inverse.

    Returns
    -------
    xr.DataArray
        Same dims; only the units of layers with spatial axes (whole (y, x, channel) grids), in
        the cube's order. ``attrs["equivariance_dropped_layers"]`` lists the layers without
        spatial axes that were dropped; ``equivariance_transforms``, ``equivariance_input_size``,
        ``equivariance_interpolation`` and ``equivariance_fill`` record the inverse's options
        (None as ``"None"``) beside the cube's attrs, with ``tmx_version``.

    Raises
    ------
    ValueError
        If the set does not match the cube, is not invertible, or no layer has spatial axes.

    Examples
    --------
    Feature maps that rotate exactly with the input (here: the input itself) come back to
    the untransformed maps under every transformation:

    >>> import numpy as np, tmx
    >>> from tmx.measures.equivariance import invert
    >>> x = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype("float32")
    >>> transforms = tmx.transforms.rot90([0, 1, 2])
    >>> maps = np.stack([tmx.transforms.apply(transforms, x, j) for j in range(3)], axis=1)
    >>> cube = tmx.from_array({"maps": maps}, transformation=transforms,
    ...                       attrs={"input_shape": (4, 4, 3)})
    >>> back = invert(cube)
    >>> dict(back.sizes)
    {'sample': 2, 'transformation': 3, 'unit': 48}
    >>> bool(np.allclose(back.values, x.reshape(2, 1, 48)))
    True
    """
    cube = check_cube(cube, measure="invert", min_samples=1)
    if transforms is None:
        if "transforms" not in cube.attrs:
            raise ValueError(
                "transforms: the cube's attrs do not record its transformation set; pass it"
            )
        transforms = from_dict(cube.attrs["transforms"])
    if not isinstance(transforms, TransformationSet):
        raise ValueError(f"transforms must be a TransformationSet; got {type(transforms).__name__}")
    t = cube.sizes["transformation"]
    if len(transforms) != t:
        raise ValueError(
            f"transforms has T = {len(transforms)} transformations but the cube has {t}"
        )
    if "transform" in cube.coords:
        labels = [str(s) for s in np.asarray(cube["transform"].values)]
        if labels != list(transforms.labels):
            raise ValueError(
                "transforms does not match the cube's 'transform' coordinate (were "
                "transformations selected or reordered?); pass the matching set, e.g. "
                "transforms[indices]"
            )
    if not transforms.invertible:
        bad = [
            lbl
            for lbl, chain in zip(transforms.labels, transforms.elements, strict=True)
            if not all(op.kind.invertible for op in chain)
        ]
        raise ValueError(f"transforms cannot be inverted on feature maps: {bad[:5]}")
    if input_size is None and "input_shape" in cube.attrs:
        # (H, W) of an image model's input; invert checks the size (image_size)
        input_size = cast("tuple[int, int]", tuple(int(s) for s in cube.attrs["input_shape"][:2]))
    options = {"interpolation": interpolation, "fill": fill}
    kept, dropped, parts = [], [], []
    for name, idx in units_by_layer(cube).items():
        shape = _layer_grid(cube, name, idx)
        if shape is None:
            dropped.append(name)
            continue
        kept.append(idx)
        data = cube.data[:, :, idx[0] : idx[-1] + 1]
        if isinstance(data, da.Array):
            data = data.rechunk({2: -1})
            parts.append(
                data.map_blocks(
                    _invert_block, transforms, shape, input_size, options, dtype=np.float32
                )
            )
        else:
            parts.append(_invert_block(np.asarray(data), transforms, shape, input_size, options))
    if not kept:
        raise ValueError(
            f"cube has no layer with spatial axes to invert (layers: {dropped}); "
            "same-equivariance needs feature maps"
        )
    units = np.concatenate(kept)
    concat = da.concatenate if isinstance(parts[0], da.Array) else np.concatenate
    data = concat(parts, axis=2)
    template = cube.isel(unit=units)
    attrs = {
        **cube.attrs,
        "equivariance": "inverted (same-equivariance)",
        "equivariance_transforms": transforms.description,
        "equivariance_dropped_layers": dropped,
        "equivariance_input_size": attr_value(input_size),
        "equivariance_interpolation": attr_value(interpolation),
        "equivariance_fill": attr_value(fill),
        "tmx_version": __version__,
    }
    return xr.DataArray(
        data, dims=template.dims, coords=template.coords, name=cube.name, attrs=attrs
    )
