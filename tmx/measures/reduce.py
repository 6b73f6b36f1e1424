"""Reductions of per-unit results: per layer and per channel.

``by_layer(nv)`` is the usual summary of a measure: one number per layer. By default it is the
unweighted mean over the layer's units with finite values; how many units were excluded as
non-finite (an inf from a unit that never varies across samples, a NaN from 0/0) is kept beside
it, so that a summary never silently hides them.
"""

from __future__ import annotations

from typing import Any, cast, overload

import dask.array as da
import numpy as np
import xarray as xr

from .. import _schema
from .. import _validate as v
from .._provenance import attr_value
from .._version import __version__
from . import _jackknife as jk
from ._common import ZERO_DIVS, channel_groups, check_per_unit, choice, divide, group_reduce

REDUCES = ("mean", "median", "max", "min", "ratio_of_means")


def _layers(obj: xr.DataArray | xr.Dataset) -> list[str]:
    if "unit" not in obj.dims or "layer" not in obj.coords:
        raise ValueError(
            "per_unit must be a per-unit result: a 'unit' dim with a 'layer' coordinate "
            "(as every tmx measure returns)"
        )
    return _schema.layers(obj, "per_unit")


def _isfinite(values: xr.DataArray) -> xr.DataArray:
    """``np.isfinite`` of a DataArray: a DataArray (lazy for dask) through its
    ``__array_ufunc__``, which numpy's stubs type as an ndarray."""
    return cast(xr.DataArray, np.isfinite(values))


def _reduce(values: xr.DataArray, how: str, finite_only: bool) -> tuple[xr.DataArray, Any]:
    finite = _isfinite(values)
    kept = values.where(finite) if finite_only else values
    if how == "median":
        kept = kept.chunk({"unit": -1}) if kept.chunks is not None else kept
    skipna = True if finite_only else False
    out = getattr(kept, how)("unit", skipna=skipna)
    excluded = (~finite).sum("unit") if finite_only else xr.zeros_like(out, dtype=np.int64)
    return out, excluded


@overload
def by_layer(
    per_unit: xr.DataArray,
    *,
    reduce: str = "mean",
    finite_only: bool = True,
    zero_div: str | None = None,
) -> xr.DataArray: ...


@overload
def by_layer(
    per_unit: xr.Dataset,
    *,
    reduce: str = "mean",
    finite_only: bool = True,
    zero_div: str | None = None,
) -> xr.DataArray | xr.Dataset: ...


def by_layer(
    per_unit: xr.DataArray | xr.Dataset,
    *,
    reduce: str = "mean",
    finite_only: bool = True,
    zero_div: str | None = None,
) -> xr.DataArray | xr.Dataset:
    """One value per layer from a per-unit result.

    Parameters
    ----------
    per_unit : xr.DataArray or xr.Dataset
        A measure's result: a ``unit`` dim with a ``layer`` coordinate (other dims, such as
        bootstrap replicates, are kept).
    reduce : {"mean", "median", "max", "min", "ratio_of_means"}
        "ratio_of_means" needs a Dataset with ``tv`` and ``sv`` (``normalized_variance(...,
        parts=True)``): mean_u TV / mean_u SV per layer, the seed package's layer value.
    finite_only : bool, default True
        Exclude units with non-finite values (for "ratio_of_means": units where TV or SV is
        non-finite) and report how many in the ``excluded`` coordinate.
    zero_div : {"tmeasures", "nan"}, optional
        For "ratio_of_means": the policy of a zero mean SV (default: the one recorded in the
        Dataset's attrs, else "tmeasures").

    Returns
    -------
    xr.DataArray (or Dataset for a Dataset input with a reduce other than ratio_of_means)
        Over ``layer`` (layers in order of appearance), with coordinates ``excluded`` (units
        left out as non-finite) and ``units`` (units in the layer).

    Examples
    --------
    >>> import numpy as np, tmx
    >>> rng = np.random.default_rng(0)
    >>> conv, dense = rng.normal(size=(6, 3, 2, 2, 2)), rng.normal(size=(6, 3, 3))
    >>> cube = tmx.from_array({"conv": conv, "dense": dense})
    >>> nv = tmx.normalized_variance(cube)
    >>> per_layer = tmx.by_layer(nv)              # the mean of each layer's units
    >>> per_layer.layer.values.tolist(), per_layer.units.values.tolist()
    (['conv', 'dense'], [8, 3])
    >>> bool(np.isclose(per_layer.sel(layer="dense"), nv[8:].mean()))
    True
    >>> parts = tmx.normalized_variance(cube, parts=True)
    >>> ratio = tmx.by_layer(parts, reduce="ratio_of_means")   # Σ TV / Σ SV per layer
    >>> bool(np.isclose(ratio.sel(layer="dense"), parts.tv[8:].sum() / parts.sv[8:].sum()))
    True
    """
    choice(reduce, "reduce", REDUCES)
    finite_only = v.flag(finite_only, "finite_only")
    layers = _layers(per_unit)
    check_per_unit(per_unit, "by_layer")
    layer_of = _schema.layer_array(per_unit, "per_unit")
    if reduce == "ratio_of_means":
        if not isinstance(per_unit, xr.Dataset) or not {"tv", "sv"} <= set(per_unit.data_vars):
            raise ValueError(
                "reduce='ratio_of_means' needs the parts of the measure: pass "
                "normalized_variance(cube, parts=True) (a Dataset with tv and sv)"
            )
        zero_div = zero_div or per_unit.attrs.get("zero_div", "tmeasures")
        choice(zero_div, "zero_div", ZERO_DIVS)
        jackknifed = {"tv_loo", "sv_loo", "tv_raw", "sv_raw"} <= set(per_unit.data_vars)
        raw = ("tv_raw", "sv_raw") if jackknifed else ("tv", "sv")
        rows, excluded, errors, plain = [], [], [], []
        for name in layers:
            sub = per_unit.isel(unit=np.flatnonzero(layer_of == name))
            ok = _isfinite(sub[raw[0]]) & _isfinite(sub[raw[1]])
            if jackknifed:
                ok = ok & _isfinite(sub["tv_loo"]).all("jackknife")
                ok = ok & _isfinite(sub["sv_loo"]).all("jackknife")
            ratio = _ratio_of_means(sub, raw, ok if finite_only else None, zero_div)
            if jackknifed:
                loo = _ratio_of_means(
                    sub, ("tv_loo", "sv_loo"), ok if finite_only else None, zero_div
                )
                sizes = np.asarray(per_unit["jackknife_size"].values, dtype=np.float64)
                value, se = jk.combine(ratio.data, loo.transpose("jackknife", ...).data, sizes)
                plain.append(ratio)
                ratio = ratio.copy(data=value)
                errors.append(ratio.copy(data=se))
            rows.append(ratio)
            excluded.append((~ok).sum("unit") if finite_only else xr.zeros_like(ratio, int))
        out = _stack(rows, excluded, layers, layer_of, "normalized_variance")
        if jackknifed:
            for name, per_layer in (("jackknife_se", errors), ("uncorrected", plain)):
                values = xr.concat(per_layer, dim="layer", coords="minimal", compat="override")
                out = out.assign_coords({name: values.drop_vars(_UNIT_COORDS, errors="ignore")})
        out = _with_inactive(out, per_unit, layers, layer_of)
        out.attrs = _attrs(per_unit, reduce=reduce, finite_only=finite_only, zero_div=zero_div)
        return out
    if isinstance(per_unit, xr.Dataset):
        return xr.Dataset(
            {
                k: by_layer(var, reduce=reduce, finite_only=finite_only)
                for k, var in per_unit.data_vars.items()
                if "unit" in var.dims
            },
            attrs=_attrs(per_unit, reduce=reduce, finite_only=finite_only),
        )
    rows, excluded = [], []
    for name in layers:
        value, n_bad = _reduce(
            per_unit.isel(unit=np.flatnonzero(layer_of == name)), reduce, finite_only
        )
        rows.append(value)
        excluded.append(n_bad)
    out = _stack(rows, excluded, layers, layer_of, per_unit.name)
    out = _with_inactive(out, per_unit, layers, layer_of)
    out.attrs = _attrs(per_unit, reduce=reduce, finite_only=finite_only)
    return out


def _attrs(per_unit: xr.DataArray | xr.Dataset, **options: Any) -> dict[str, Any]:
    """The per-unit result's attrs (its measure and options) with the reduction's options
    added in the one attr encoding (``tmx._provenance``: ``finite_only`` as 0/1); the
    ``tmx_version`` of the per-unit result is kept, the current one added where it has none."""
    attrs = {**per_unit.attrs, **{k: attr_value(val) for k, val in options.items()}}
    attrs.setdefault("tmx_version", __version__)
    return attrs


_UNIT_COORDS = ["layer", "channel", "y", "x", "unit", "units", "inactive"]


def _ratio_of_means(
    sub: xr.Dataset, names: tuple[str, str], ok: xr.DataArray | None, zero_div: str
) -> xr.DataArray:
    """mean_u TV / mean_u SV over the units ``ok`` (all when None), with the zero-div policy."""
    tv, sv = sub[names[0]], sub[names[1]]
    if ok is not None:
        tv, sv = tv.where(ok), sv.where(ok)
    mean_tv, mean_sv = tv.mean("unit"), sv.mean("unit")
    return xr.apply_ufunc(divide, mean_tv, mean_sv, zero_div, dask="allowed")


def _with_inactive(out, per_unit, layers, layer_of):
    """The ``inactive`` count per layer: units whose activation never varies (TV = SV = 0),
    when the per-unit result says which (its ``inactive`` coordinate, or tv and sv). Lazy
    when the result is."""
    if "inactive" in per_unit.coords and per_unit["inactive"].dims == ("unit",):
        flag = per_unit["inactive"]
    elif isinstance(per_unit, xr.Dataset) and {"tv", "sv"} <= set(per_unit.data_vars):
        tv = per_unit["tv_raw" if "tv_raw" in per_unit else "tv"]
        sv = per_unit["sv_raw" if "sv_raw" in per_unit else "sv"]
        if tv.dims != ("unit",):
            return out
        flag = (tv == 0) & (sv == 0)
    else:
        return out
    flag = flag.reset_coords(drop=True).astype(np.int64)
    counts = [flag.isel(unit=np.flatnonzero(layer_of == n)).sum("unit") for n in layers]
    return out.assign_coords(inactive=("layer", xr.concat(counts, dim="layer").data))


def _stack(rows, excluded, layers, layer_of, name) -> xr.DataArray:
    drop = _UNIT_COORDS
    rows = [r.drop_vars([d for d in drop if d in r.coords]) for r in rows]
    out = xr.concat(rows, dim="layer", coords="minimal", compat="override")
    bad = xr.concat(excluded, dim="layer", coords="minimal", compat="override")
    out = out.assign_coords(
        layer=("layer", np.array(layers, dtype=str)),
        units=("layer", np.array([(layer_of == n).sum() for n in layers], dtype=np.int64)),
        excluded=bad.astype(np.int64).variable if bad.ndim == 1 else bad.astype(np.int64),
    )
    return out.rename(name)


def by_channel(
    per_unit: xr.DataArray, *, reduce: str = "mean", finite_only: bool = True
) -> xr.DataArray:
    """One value per (layer, channel): the units of each channel (its (y, x) map) reduced.

    Parameters
    ----------
    per_unit : xr.DataArray
        A measure's per-unit result (other dims, e.g. replicates, are kept).
    reduce : {"mean", "max", "min"}
    finite_only : bool, default True
        Leave out non-finite units (counted in the ``excluded`` coordinate).

    Returns
    -------
    xr.DataArray
        Dims (..., ``layer``, ``channel``); a layer with fewer channels than the widest is
        padded with NaN (and ``units`` = 0 there). Lazy for a dask-backed ``per_unit`` (the
        values and the ``excluded`` coordinate; nothing is computed here), numpy otherwise.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> rng = np.random.default_rng(0)
    >>> conv, dense = rng.normal(size=(6, 3, 2, 2, 2)), rng.normal(size=(6, 3, 3))
    >>> nv = tmx.normalized_variance(tmx.from_array({"conv": conv, "dense": dense}))
    >>> per_channel = tmx.by_channel(nv)          # (layer, channel), NaN-padded
    >>> dict(per_channel.sizes), per_channel.units.values.tolist()
    ({'layer': 2, 'channel': 3}, [[4, 4, 0], [1, 1, 1]])
    >>> conv0 = nv[(nv.layer == "conv") & (nv.channel == 0)]   # its 2 × 2 map
    >>> bool(np.isclose(per_channel.sel(layer="conv", channel=0), conv0.mean()))
    True
    """
    choice(reduce, "reduce", ("mean", "max", "min"))
    finite_only = v.flag(finite_only, "finite_only")
    if not isinstance(per_unit, xr.DataArray):
        raise ValueError("per_unit must be a per-unit DataArray (a measure's result)")
    _layers(per_unit)
    check_per_unit(per_unit, "by_channel")
    codes, groups = channel_groups(per_unit)
    n_groups = len(groups["layer"])
    per_unit = per_unit.transpose(..., "unit")
    data = per_unit.data
    finite = np.isfinite(data) if finite_only else np.ones_like(data, dtype=bool)
    n_finite = group_reduce(finite.astype(np.float64), codes, n_groups, "mean") * groups["units"]
    if reduce == "mean":
        total = group_reduce(np.where(finite, data, 0.0), codes, n_groups, "mean")
        with np.errstate(invalid="ignore", divide="ignore"):
            values = total * groups["units"] / n_finite
    else:
        sign = 1.0 if reduce == "max" else -1.0
        values = sign * group_reduce(np.where(finite, sign * data, -np.inf), codes, n_groups, "max")
        values = np.where(n_finite > 0, values, np.nan)
    layers = list(dict.fromkeys(groups["layer"].tolist()))
    width = int(groups["channel"].max()) + 1
    row = np.array([layers.index(name) for name in groups["layer"]])
    # the (layer, channel) grid position of each group; the padding positions read a fill column
    where = np.full(len(layers) * width, n_groups)
    where[row * width + groups["channel"]] = np.arange(n_groups)
    lead = data.shape[:-1]
    shape = (*lead, len(layers), width)
    excluded = _place((groups["units"] - n_finite).round().astype(np.int64), where, 0, shape)
    units = np.append(groups["units"], 0)[where].astype(np.int64)
    dims = (*per_unit.dims[:-1], "layer", "channel")
    coords = {k: c for k, c in per_unit.coords.items() if "unit" not in c.dims}
    coords.update(
        layer=("layer", np.array(layers, dtype=str)),
        channel=("channel", np.arange(width)),
        units=(("layer", "channel"), units.reshape(len(layers), width)),
        excluded=(dims, excluded),
    )
    grid = _place(values, where, np.nan, shape)
    out = xr.DataArray(grid, dims=dims, coords=coords, name=per_unit.name)
    out.attrs = _attrs(per_unit, reduce=reduce, finite_only=finite_only)
    return out


def _place(values: Any, where: np.ndarray, fill: Any, shape: tuple[int, ...]) -> Any:
    """``values`` (..., G) laid out on the (layer, channel) grid ``shape``: grid position k holds
    ``values[..., where[k]]``, or ``fill`` where ``where[k]`` = G (a padding channel). numpy
    or dask (lazy: the group axis is one chunk, as ``group_reduce`` returns it)."""
    xp = da if isinstance(values, da.Array) else np
    pad = xp.full((*values.shape[:-1], 1), fill, dtype=values.dtype)
    if xp is da:
        pad = pad.rechunk((*values.chunks[:-1], (1,)))
    both = xp.concatenate([values, pad], axis=-1)
    if xp is da:
        both = both.rechunk({both.ndim - 1: -1})
    return both[..., where].reshape(shape)
