"""Explanations measured over transformations: the attribution cube."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import xarray as xr

from .. import _progress
from .._provenance import provenance
from ..transforms import TransformationSet, apply
from ._core import _as_inputs, _predict, attribute


def over_transforms(
    method: Callable[..., xr.DataArray],
    model: Any,
    x: Any,
    transforms: TransformationSet,
    *,
    target: Any = None,
    batch_size: int = 64,
    progress: bool | None = None,
    **kwargs: Any,
) -> xr.DataArray:
    """The attribution cube ``(sample, transformation, unit)`` of ``method`` over a set.

    For every transformation g_j the inputs are transformed (``tmx.transforms.apply``, noise
    seeded per sample) and explained: cube[i, j] = method(model, g_j x_i, target_i). The
    target defaults to the class predicted on the *untransformed* x, so that every
    transformation explains the same class. Units are the attribution's values in
    (y, x, channel) order with the unit coordinates of an activation cube (``layer`` =
    ``"attribution"``), and the cube's attrs (the method's own, then ``transforms``,
    ``transforms_description``, ``input_shape``, ``layers`` and ``tmx_version``) record the
    set and the input shape, so
    ``tmx.invert`` maps each explanation back and any measure applies: e.g.
    ``tmx.transformation_variance(tmx.invert(cube))`` is the explanation's same-equivariance
    (0 when explanations follow their input's transformation exactly).

    Parameters
    ----------
    method : callable
        An attribution method of ``tmx.attribution`` (``saliency``, ``integrated_gradients``,
        ``grad_cam``, ... or ``attribute``, whose ``qoi`` receives the target).
    model, x
        As for the method; x holds images (N, H, W, C) for geometric transformations.
    transforms : TransformationSet
        The transformations.
    target : int, ints or None
        Classes to explain (default: predicted on the untransformed inputs).
    batch_size : int
        Passed to the method.
    progress : bool or None, default None
        A bar over the transformations (one step per transformation explained, the method
        run on all N transformed samples); the method itself runs without a bar of its own.
        None: when run interactively (a terminal, not under pytest or CI).
    **kwargs
        Other arguments of the method.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx import attribution as A
    >>> model = tmx.models.small_cnn((8, 8, 1), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    >>> cube = A.over_transforms(A.saliency, model, x, tmx.transforms.rot90([0, 1]))
    >>> dict(cube.sizes), cube.transform.values.tolist()
    ({'sample': 2, 'transformation': 2, 'unit': 64}, ['rot90(0)', 'rot90(1)'])
    >>> tmx.invert(cube).dims                                      # mapped back, as a cube
    ('sample', 'transformation', 'unit')
    """
    if not isinstance(transforms, TransformationSet):
        raise ValueError(f"transforms must be a TransformationSet; got {type(transforms).__name__}")
    if not callable(method):
        raise ValueError(f"method must be an attribution function; got {method!r}")
    show = _progress.resolve(progress)
    quiet = _progress.quiet(method)
    values, coords = _as_inputs(x)
    n = values.shape[0]
    if target is None:
        y = _predict(model, values, batch_size)
        target = np.argmax(y.reshape(n, -1), axis=1)
    index = np.arange(n)
    slices = []
    first = None
    with _progress.steps(len(transforms), show, "transformation") as bar:
        for j in range(len(transforms)):
            xj = np.asarray(apply(transforms, values, j, sample_index=index), np.float32)
            if method is attribute:
                out = attribute(model, xj, qoi=target, batch_size=batch_size, **kwargs, **quiet)
            else:
                out = method(model, xj, target, batch_size=batch_size, **kwargs, **quiet)
            if isinstance(out, xr.Dataset):
                out = out["attribution"]
            first = out if first is None else first
            slices.append(np.asarray(out.values, np.float64).reshape(n, -1))
            bar.advance()
    assert first is not None  # a TransformationSet is never empty
    data = np.stack(slices, axis=1)
    units = data.shape[2]
    if first.dims == ("sample", "y", "x", "channel"):
        h, w, c = first.shape[1:]
        yy, xx, cc = (
            g.reshape(-1) for g in np.meshgrid(range(h), range(w), range(c), indexing="ij")
        )
    else:
        yy = xx = np.full(units, -1)
        cc = np.arange(units)
    cube_coords: dict[str, Any] = {
        **coords,
        "transformation": np.arange(len(transforms)),
        "unit": np.arange(units),
        "layer": ("unit", np.full(units, "attribution")),
        "channel": ("unit", cc.astype(np.int64)),
        "y": ("unit", yy.astype(np.int64)),
        "x": ("unit", xx.astype(np.int64)),
    }
    params = transforms.parameters
    for name in params.coords:
        if name != "transformation":
            cube_coords[str(name)] = xr.Variable(
                "transformation", params[name].values, params[name].attrs
            )
    attrs = {
        **first.attrs,
        **provenance(
            "method",
            str(first.attrs.get("method", getattr(method, "__name__", "method"))),
            transforms=transforms.to_json(),
            transforms_description=transforms.description,
            input_shape=[int(s) for s in values.shape[1:]],
            layers=["attribution"],
        ),
    }
    return xr.DataArray(
        data,
        dims=("sample", "transformation", "unit"),
        coords=cube_coords,
        name="attribution",
        attrs=attrs,
    )
