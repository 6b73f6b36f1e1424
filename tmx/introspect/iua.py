"""Inactive Unit Analysis (IUA): how many units are (near) zero on each probe, per layer.

A re-implementation of DNIKit's Inactive Unit Analysis (Apple, *Data and Network Introspection
Kit*, 2021) on tmx responses, with two fixes: dense layers (units without ``y``/``x``) are
handled like any other layer (DNIKit crashed on them), and per-unit statistics are kept at full
unit resolution (no spatial pooling), with the unit coordinates (``layer``, ``channel``, ``y``,
``x``, ...) carried over.

The responses are streamed: per sample chunk, the inactive mask is reduced to per-unit counts and
per-(probe, layer) counts, and the chunk results are summed / concatenated. Only a
``(sample, layer)`` integer array and a ``(unit,)`` integer array are ever held in memory.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from .. import _schema
from .._provenance import provenance
from .._schema import as_responses
from ._common import sample_slices

__all__ = ["iua"]

_NUMPY_CHUNK = 4096


def _layer_onehot(responses: xr.DataArray, layers: list[str]) -> np.ndarray:
    """``(unit, layer)`` float32 matrix with a 1 where the unit belongs to the layer."""
    onehot = np.zeros((responses.sizes["unit"], len(layers)), dtype=np.float32)
    units = _schema.units_by_layer(responses)
    for j, layer in enumerate(layers):
        onehot[units[layer], j] = 1
    return onehot


def _chunk_counts(block: np.ndarray, atol: float, onehot: np.ndarray) -> tuple[Any, Any]:
    """Per-unit inactive counts ``(unit,)`` and per-probe per-layer counts ``(rows, layer)``.

    The per-layer counts are a float32 matrix product with the one-hot (BLAS; exact for
    layers of fewer than 2**24 units), rounded back to integers."""
    mask = np.abs(block) <= atol
    per_probe = mask.astype(np.float32) @ onehot
    return np.count_nonzero(mask, axis=0), np.rint(per_probe).astype(np.int64)


def _summary(per_probe: np.ndarray, counts: np.ndarray) -> tuple[Any, Any, Any]:
    """Mean and population standard deviation of the per-probe counts, and the proportions
    (NaN without probes)."""
    n_samples = per_probe.shape[0]
    if n_samples == 0:
        nan = np.full(per_probe.shape[1], np.nan)
        return nan, nan.copy(), np.full(counts.shape, np.nan)
    mean = per_probe.mean(axis=0, dtype=np.float64)
    std = per_probe.std(axis=0, ddof=0, dtype=np.float64)
    return mean, std, np.asarray(counts / float(n_samples), dtype=np.float64)


def _counts(data: np.ndarray, atol: float, onehot: np.ndarray) -> tuple[Any, ...]:
    """The counts of numpy-backed responses, sample block by sample block."""
    n_samples = data.shape[0]
    counts = np.zeros(data.shape[1], dtype=np.int64)
    per_probe = np.zeros((n_samples, onehot.shape[1]), dtype=np.int64)
    for sl in sample_slices(data, _NUMPY_CHUNK):
        c, p = _chunk_counts(data[sl], atol, onehot)
        counts += c
        per_probe[sl] = p
    return (counts, per_probe, *_summary(per_probe, counts))


def _mean_of(per_probe: np.ndarray) -> np.ndarray:
    return _summary(per_probe, np.zeros(0))[0]


def _std_of(per_probe: np.ndarray) -> np.ndarray:
    return _summary(per_probe, np.zeros(0))[1]


def _lazy_counts(data: da.Array, atol: float, onehot: np.ndarray, n_samples: int) -> tuple:
    """The same counts as a dask graph: reductions over the sample chunks; the mean and
    standard deviation over probes are numpy's on the (sample, layer) counts in one block, so
    the numbers equal the numpy path's exactly."""
    mask = da.abs(data) <= atol
    counts = mask.sum(axis=0, dtype=np.int64)
    onehot32 = da.from_array(onehot, chunks=onehot.shape)
    per_probe = da.rint(mask.astype(np.float32) @ onehot32).astype(np.int64)
    if n_samples == 0:
        nan = np.full(onehot.shape[1], np.nan)
        return counts, per_probe, nan, nan.copy(), np.full(data.shape[1], np.nan)
    whole = per_probe.rechunk({0: -1, 1: -1})
    mean = whole.map_blocks(_mean_of, drop_axis=0, dtype=np.float64)
    std = whole.map_blocks(_std_of, drop_axis=0, dtype=np.float64)
    return counts, per_probe, mean, std, counts / float(n_samples)


def iua(
    responses: Any,
    *,
    atol: float = 1e-8,
    transformation: Any = None,
) -> xr.Dataset:
    """Inactive Unit Analysis of responses, per layer and per unit.

    A unit is *inactive* on a probe (a sample) when its absolute response is at most ``atol``:
    ``|a| <= atol``. NaN responses are never inactive (``|nan| <= atol`` is false).

    Parameters
    ----------
    responses : xr.DataArray
        Responses with dims ``(sample, unit)`` and a ``layer`` coordinate on ``unit``, or a cube
        ``(sample, transformation, unit)`` (see ``transformation``). Numpy- or dask-backed; a
        dask array is reduced chunk by chunk and never loaded whole.
    atol : float, default 1e-8
        Absolute tolerance under which a response counts as zero. Must be ``>= 0``.
    transformation : None, int or "stack", optional
        How a cube is turned into responses (see ``tmx.introspect.as_responses``):
        ``None`` needs a single transformation, an int selects one, ``"stack"`` uses every
        ``(sample, transformation)`` row as a probe.

    Returns
    -------
    xr.Dataset
        ``inactive_per_probe`` (sample, layer), int64
            Number of the layer's units that are inactive on each probe.
        ``mean_inactive`` (layer), float64
            Mean of ``inactive_per_probe`` over probes.
        ``std_inactive`` (layer), float64
            Population standard deviation (``ddof=0``) of ``inactive_per_probe`` over probes.
        ``inactive_count`` (unit), int64
            Number of probes on which each unit is inactive; unit coordinates are kept.
        ``inactive_proportion`` (unit), float64
            ``inactive_count / n_samples`` (NaN when there are no probes).
        ``n_units`` (layer), int64
            Number of units in each layer.

        The ``layer`` dimension coordinate holds the layer names in order of first
        appearance. The unit coordinates are kept on ``unit``, with the per-unit layer name
        renamed ``unit_layer`` (a coordinate cannot share its name with the ``layer``
        dimension). Sample coordinates of the responses (such as ``label``) are carried on
        ``sample``. Attributes ``introspector`` ("iua"), ``atol``,
        ``n_samples`` and ``tmx_version``.

        **Lazy** when the responses are dask-backed: every variable but ``n_units`` is a dask
        graph (reductions over the sample chunks), with the same numbers as numpy-backed
        responses, computed when the caller computes it (``.compute()``, ``.load()``).

    Raises
    ------
    ValueError
        If ``atol`` is negative or not finite, or the responses are malformed.

    References
    ----------
    Apple, *Data and Network Introspection Kit (DNIKit)*, "Inactive Unit Analysis", 2021.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from tmx import introspect
    >>> x = np.array([[0.0, 1.0, 0.0], [0.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
    >>> responses = xr.DataArray(x, dims=("sample", "unit"), coords={"layer": ("unit", ["h"] * 3)})
    >>> out = introspect.iua(responses)
    >>> out["inactive_count"].values
    array([3, 1, 1])
    >>> out["inactive_per_probe"].sel(layer="h").values
    array([2, 1, 2])
    >>> lazy = introspect.iua(responses.chunk({"sample": 2}))  # dask in, dask out
    >>> lazy["inactive_count"].chunks is not None, lazy["inactive_count"].values
    (True, array([3, 1, 1]))
    """
    atol = float(atol)
    if not np.isfinite(atol) or atol < 0:
        raise ValueError(f"atol must be a finite number >= 0; got {atol!r}")
    r = as_responses(responses, transformation=transformation)
    layers = _schema.layers(r)
    onehot = _layer_onehot(r, layers)
    n_samples = r.sizes["sample"]
    data = r.data

    if isinstance(data, da.Array):
        counts, per_probe, mean, std, proportion = _lazy_counts(data, atol, onehot, n_samples)
    else:
        counts, per_probe, mean, std, proportion = _counts(np.asarray(data), atol, onehot)

    sample_coords = {k: c.variable for k, c in r.coords.items() if c.dims == ("sample",)}
    unit_coords = {
        ("unit_layer" if k == "layer" else k): c.variable
        for k, c in r.coords.items()
        if c.dims == ("unit",)
    }
    return xr.Dataset(
        {
            "inactive_per_probe": (("sample", "layer"), per_probe),
            "mean_inactive": ("layer", mean),
            "std_inactive": ("layer", std),
            "inactive_count": ("unit", counts),
            "inactive_proportion": ("unit", proportion),
            "n_units": ("layer", onehot.sum(axis=0).astype(np.int64)),
        },
        coords={**sample_coords, **unit_coords, "layer": np.asarray(layers, dtype=str)},
        attrs=provenance("introspector", "iua", atol=atol, n_samples=int(n_samples)),
    )
