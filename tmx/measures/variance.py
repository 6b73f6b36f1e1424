"""The variance family: transformation, sample and normalized variance.

With a[i, j, u] the activation of unit u for sample i under transformation j (N samples,
T transformations) and D a dispersion (standard deviation or variance, with ``ddof``):

    TV[u] = mean_i D_j a[i, j, u]      (how much a unit changes under the transformations)
    SV[u] = mean_j D_i a[i, j, u]      (how much it changes across samples)
    NV[u] = TV[u] / SV[u]              (0: invariant; 1: as variable as across samples)

Both TV and SV come from **one pass** over the cube: two float64 moment reductions over the
same blocks in one dask graph, so a lazy cube's forward passes run once.

References
----------
Quiroga, F., Torrents-Barrena, J., Lanzarini, L., Puig, D. (2019). Measuring (in)variances in
convolutional networks. Conference on Cloud Computing and Big Data, 98–109.
"""

from __future__ import annotations

from typing import Any, Literal, overload

import numpy as np
import xarray as xr

from .. import _schema
from .._schema import check_cube
from .._validate import flag
from . import _jackknife as jk
from ._common import (
    DISPERSIONS,
    ZERO_DIVS,
    base_attrs,
    channel_groups,
    check_ddof,
    choice,
    dispersion_from_m2,
    divide,
    group_reduce,
    moments_both,
    spatial_layers,
    unit_coords_of,
)

POOLS = (None, "mean", "pre_mean", "pre_max")


def _cells(data: Any, ddof: int, dispersion: str) -> tuple[Any, Any]:
    """D over transformations per (sample, unit), (N, U), and D over samples per
    (transformation, unit), (T, U), of an (N, T, U) array (numpy or dask) in float64: both
    moment reductions from one pass over each block (``moments_both``)."""
    along_t, along_s = moments_both(data)
    return (
        dispersion_from_m2(along_t[2], along_t[0], ddof, dispersion),
        dispersion_from_m2(along_s[2], along_s[0], ddof, dispersion),
    )


def _tv_sv(data: Any, ddof: int, dispersion: str) -> tuple[Any, Any]:
    """Per-unit TV and SV: the means of the cell dispersions."""
    per_sample, per_transformation = _cells(data, ddof, dispersion)
    return per_sample.mean(axis=0), per_transformation.mean(axis=0)


def pool_activations(cube: xr.DataArray, how: str) -> xr.DataArray:
    """Pool the activations of each (layer, channel) over (y, x): a cube with one unit per
    channel (y = x = −1 for pooled maps; units of layers without spatial axes unchanged)."""
    codes, groups = channel_groups(cube)
    data = group_reduce(cube.data, codes, len(groups["layer"]), how)
    coords = {k: c for k, c in cube.coords.items() if "unit" not in c.dims}
    coords.update({k: ("unit", v) for k, v in groups.items()})
    coords["unit"] = ("unit", np.arange(len(groups["layer"])))
    return xr.DataArray(data, dims=cube.dims, coords=coords, name=cube.name, attrs=cube.attrs)


def _check_pool(cube: xr.DataArray, pool: Any) -> Any:
    choice(pool, "pool", POOLS)
    if pool is not None and not spatial_layers(cube):
        raise ValueError(
            f"pool={pool!r} pools units over (y, x), but no layer of the cube has spatial axes "
            f"(layers: {_schema.layers(cube)}); "
            "use pool=None"
        )
    return pool


def _strata(cube: xr.DataArray, by: Any, ddof: int) -> list[np.ndarray] | None:
    """Sample indices of each stratum of ``by`` (a coordinate along ``sample``)."""
    if by is None:
        return None
    if not isinstance(by, str) or by not in cube.coords or cube[by].dims != ("sample",):
        along = [k for k, c in cube.coords.items() if c.dims == ("sample",) and k != "sample"]
        raise ValueError(
            f"by must name a coordinate along 'sample' (e.g. 'label'); got {by!r}; "
            f"available: {along}"
        )
    values = np.asarray(cube[by].values)
    strata = []
    for value in dict.fromkeys(values.tolist()):
        idx = np.flatnonzero(values == value)
        if len(idx) <= ddof:
            raise ValueError(
                f"by={by!r}: stratum {value!r} has {len(idx)} sample(s); the sample variance "
                f"with ddof={ddof} needs more than {ddof}"
            )
        strata.append(idx)
    return strata


def variance_parts(
    cube: xr.DataArray,
    *,
    dispersion: str = "std",
    ddof: int = 1,
    zero_div: str = "tmeasures",
    pool: str | None = None,
    by: str | None = None,
    measure: str = "normalized_variance",
    bias_correction: str | None = None,
    jackknife_groups: int | None = None,
) -> xr.Dataset:
    """TV, SV and NV per unit (or per channel when pooled) in one pass: a Dataset (tv, sv, nv).

    The options are those of ``normalized_variance``.
    """
    cube = check_cube(
        cube,
        measure=measure,
        min_samples=2,
        min_transformations=2,
        need="a dispersion needs two",
    )
    choice(dispersion, "dispersion", DISPERSIONS)
    choice(zero_div, "zero_div", ZERO_DIVS)
    pool = _check_pool(cube, pool)
    ddof = check_ddof(ddof, cube.sizes["sample"], cube.sizes["transformation"], DIMS_BOTH)
    strata = _strata(cube, by, ddof)
    choice(bias_correction, "bias_correction", jk.BIAS_CORRECTIONS)
    if bias_correction is not None and by is not None:
        raise ValueError(
            "bias_correction='jackknife' with by=... is not supported: correct each stratum "
            "separately (select its samples) or use by=None"
        )
    if bias_correction is None and jackknife_groups is not None:
        raise ValueError("jackknife_groups needs bias_correction='jackknife'")
    target = pool_activations(cube, pool[4:]) if pool in ("pre_mean", "pre_max") else cube
    codes = groups = None
    if pool == "mean":
        codes, groups = channel_groups(cube)

    def parts_of(data: Any) -> tuple[Any, Any, Any]:
        tv, sv = _tv_sv(data, ddof, dispersion)
        if codes is not None and groups is not None:  # average TV and SV over (y, x), then divide
            tv = group_reduce(tv, codes, len(groups["layer"]), "mean")
            sv = group_reduce(sv, codes, len(groups["layer"]), "mean")
        return tv, sv, divide(tv, sv, zero_div)

    jackknifed = None
    if bias_correction == "jackknife":
        n_groups = jk.check_groups(jackknife_groups, cube.sizes["sample"])
        tv, sv, nv, jackknifed = _jackknife_parts(
            target.data, ddof, dispersion, zero_div, n_groups, codes, groups
        )
    elif strata is None:
        tv, sv, nv = parts_of(target.data)
    else:  # the measure within each stratum, averaged per unit
        parts = [parts_of(target.data[idx]) for idx in strata]
        tv, sv, nv = (sum(p[k] for p in parts) / len(parts) for k in range(3))
    coords: dict[str, Any]
    if groups is not None:
        coords = {k: ("unit", v) for k, v in groups.items()}
        coords["unit"] = ("unit", np.arange(len(groups["layer"])))
    else:
        coords = unit_coords_of(target)
    attrs = base_attrs(
        cube,
        measure,
        dispersion=dispersion,
        ddof=ddof,
        zero_div=zero_div,
        pool=pool,
        by=by,
        bias_correction=bias_correction,
    )
    variables = {
        "tv": xr.Variable("unit", tv, {"long_name": "transformation variance"}),
        "sv": xr.Variable("unit", sv, {"long_name": "sample variance"}),
        "nv": xr.Variable("unit", nv, {"long_name": "normalized variance"}),
    }
    if jackknifed is not None:
        attrs["jackknife_groups"] = len(jackknifed["sizes"])
        for key in ("tv", "sv", "nv"):
            variables[key].attrs["long_name"] += " (jackknife bias-corrected)"
            variables[f"{key}_raw"] = xr.Variable(
                "unit", jackknifed[f"{key}_raw"], {"long_name": f"{key} without correction"}
            )
        variables["nv_se"] = xr.Variable(
            "unit", jackknifed["nv_se"], {"long_name": "jackknife standard error of nv"}
        )
        for key in ("tv", "sv"):
            variables[f"{key}_loo"] = xr.Variable(
                ("jackknife", "unit"),
                jackknifed[f"{key}_loo"],
                {"long_name": f"{key} without each jackknife group"},
            )
        coords = {**coords, "jackknife_size": ("jackknife", jackknifed["sizes"])}
    raw_tv, raw_sv = (
        (tv, sv) if jackknifed is None else (jackknifed["tv_raw"], jackknifed["sv_raw"])
    )
    coords = {**coords, "inactive": ("unit", (raw_tv == 0) & (raw_sv == 0), _INACTIVE)}
    return xr.Dataset(variables, coords=coords, attrs=attrs)


_INACTIVE = {
    "long_name": "never-active unit",
    "description": (
        "True where the unit's activation is the same in every cell (TV = SV = 0: a dead "
        "ReLU, a unit at a fixed bias); its NV is the zero_div policy value, not a measurement"
    ),
}


def _jackknife_parts(
    data: Any,
    ddof: int,
    dispersion: str,
    zero_div: str,
    n_groups: int,
    codes: np.ndarray | None,
    groups: dict[str, np.ndarray] | None,
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Bias-corrected TV, SV, NV and what the layer ratio's jackknife needs, in one pass.

    The estimates are those of ``bias_correction=None`` exactly; the leave-group-out values
    come from group sums over the same blocks (see ``tmx.measures._jackknife``).
    """
    code, sizes = jk.assign(data.shape[0], n_groups)
    cells, per_transformation = _cells(data, ddof, dispersion)  # (N, U) and (T, U)
    tv = cells.mean(axis=0)
    sv = per_transformation.mean(axis=0)
    tv_loo = jk.leave_out_mean(jk.group_sums(cells, code, n_groups), sizes)
    s1, s2, low, high = jk.shifted_power_sums(data, code, n_groups)
    sv_loo = jk.leave_out_mean_dispersion(s1, s2, sizes, ddof, dispersion, low, high)
    if codes is not None and groups is not None:  # both or neither
        k = len(groups["layer"])
        tv, sv, tv_loo, sv_loo = (
            group_reduce(a, codes, k, "mean") for a in (tv, sv, tv_loo, sv_loo)
        )
    nv = divide(tv, sv, zero_div)
    nv_loo = divide(tv_loo, sv_loo, zero_div)
    tv_j, _ = jk.combine(tv, tv_loo, sizes)
    sv_j, _ = jk.combine(sv, sv_loo, sizes)
    nv_j, nv_se = jk.combine(nv, nv_loo, sizes)
    extra = {
        "tv_raw": tv,
        "sv_raw": sv,
        "nv_raw": nv,
        "nv_se": nv_se,
        "tv_loo": tv_loo,
        "sv_loo": sv_loo,
        "sizes": sizes.astype(np.int64),
    }
    return tv_j, sv_j, nv_j, extra


DIMS_BOTH = ("sample", "transformation")


def transformation_variance(
    cube: xr.DataArray,
    *,
    dispersion: str = "std",
    ddof: int = 1,
    pool: str | None = None,
    by: str | None = None,
    bias_correction: str | None = None,
    jackknife_groups: int | None = None,
) -> xr.DataArray:
    """Transformation variance per unit: TV[u] = mean_i D_j a[i, j, u].

    Parameters
    ----------
    cube : xr.DataArray
        Dims (sample, transformation, unit) with the unit coordinates of ``tmx.activations``;
        numpy- or dask-backed (the result is lazy when the cube is).
    dispersion : {"std", "var"}, default "std"
        D is the standard deviation (the convention of the reference PyTorch library
        ``tmeasures``, whose "variances" are standard deviations) or the variance (the seed
        package ``transformational_measures_tf``).
    ddof : int, default 1
        Delta degrees of freedom of D.
    pool : {None, "mean", "pre_mean", "pre_max"}
        None: per unit. "mean": per (layer, channel), the mean over (y, x) of the per-unit
        values (the seed's per-feature measures). "pre_mean"/"pre_max": pool the activations
        over (y, x) first, then compute. Units of layers without spatial axes pass unchanged;
        a cube with no spatial layer at all is a ``ValueError``.
    by : str, optional
        Stratify by a sample coordinate (e.g. "label"): compute within each stratum and average.
    bias_correction : {None, "jackknife"}, default None
        None: the plain estimate (the peers' numbers). "jackknife": the delete-m jackknife
        estimate θ_J = G θ̂ − Σ_g (1 − m_g/N) θ_(g) over G groups of samples (Quenouille 1956;
        Efron & Tibshirani 1993, ch. 10–11; Busing et al. 1999 for unequal group sizes m_g),
        computed in the same single pass from per-group sums. It removes the O(1/N) bias of
        the ratios and square roots: TV is a mean over samples, so its jackknife is TV itself;
        SV with ``dispersion="std"`` and NV move. See ``tmx.measures._jackknife``.
    jackknife_groups : int, optional
        G, the number of jackknife groups: default min(N, 50); N is the leave-one-out jackknife.
        Memory: 4 G T U float64 values for the SV sums and the groups' extremes.

    Returns
    -------
    xr.DataArray
        Over ``unit`` with the cube's unit coordinates (pooled: one unit per channel), float64,
        ``attrs`` recording the options (None as "None"), N, T and ``tmx_version``.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> rng = np.random.default_rng(0)
    >>> conv, dense = rng.normal(size=(6, 3, 2, 2, 2)), rng.normal(size=(6, 3, 3))
    >>> dense[:, :, 0] = dense[:, :1, 0]          # unit 0 of "dense": same under every t
    >>> cube = tmx.from_array({"conv": conv, "dense": dense})
    >>> tv = tmx.transformation_variance(cube)    # TV = mean_i std_j a[i, j, u]
    >>> tv.sizes["unit"], bool(np.allclose(tv, cube.values.std(axis=1, ddof=1).mean(axis=0)))
    (11, True)
    >>> float(tv.sel(unit=tv.layer == "dense")[0])   # an invariant unit
    0.0
    """
    ds = variance_parts(
        cube,
        dispersion=dispersion,
        ddof=ddof,
        pool=pool,
        by=by,
        measure="transformation_variance",
        bias_correction=bias_correction,
        jackknife_groups=jackknife_groups,
    )
    return _single(ds, "tv", "transformation_variance")


def sample_variance(
    cube: xr.DataArray,
    *,
    dispersion: str = "std",
    ddof: int = 1,
    pool: str | None = None,
    by: str | None = None,
    bias_correction: str | None = None,
    jackknife_groups: int | None = None,
) -> xr.DataArray:
    """Sample variance per unit: SV[u] = mean_j D_i a[i, j, u].

    Options as in ``transformation_variance``.

    Examples
    --------
    >>> import numpy as np, xarray as xr, tmx
    >>> a = np.random.default_rng(0).normal(size=(40, 3, 2))
    >>> cube = xr.DataArray(a, dims=("sample", "transformation", "unit"),
    ...     coords={"layer": ("unit", ["d", "d"]), "channel": ("unit", [0, 1]),
    ...             "y": ("unit", [-1, -1]), "x": ("unit", [-1, -1])})
    >>> sv = tmx.sample_variance(cube, dispersion="var")
    >>> bool(np.allclose(sv, a.var(axis=0, ddof=1).mean(axis=0)))
    True
    """
    ds = variance_parts(
        cube,
        dispersion=dispersion,
        ddof=ddof,
        pool=pool,
        by=by,
        measure="sample_variance",
        bias_correction=bias_correction,
        jackknife_groups=jackknife_groups,
    )
    return _single(ds, "sv", "sample_variance")


@overload
def normalized_variance(
    cube: xr.DataArray,
    *,
    dispersion: str = "std",
    ddof: int = 1,
    zero_div: str = "tmeasures",
    pool: str | None = None,
    by: str | None = None,
    parts: Literal[False] = False,
    bias_correction: str | None = None,
    jackknife_groups: int | None = None,
) -> xr.DataArray: ...


@overload
def normalized_variance(
    cube: xr.DataArray,
    *,
    dispersion: str = "std",
    ddof: int = 1,
    zero_div: str = "tmeasures",
    pool: str | None = None,
    by: str | None = None,
    parts: Literal[True],
    bias_correction: str | None = None,
    jackknife_groups: int | None = None,
) -> xr.Dataset: ...


@overload
def normalized_variance(
    cube: xr.DataArray,
    *,
    dispersion: str = "std",
    ddof: int = 1,
    zero_div: str = "tmeasures",
    pool: str | None = None,
    by: str | None = None,
    parts: bool = False,
    bias_correction: str | None = None,
    jackknife_groups: int | None = None,
) -> xr.DataArray | xr.Dataset: ...


def normalized_variance(
    cube: xr.DataArray,
    *,
    dispersion: str = "std",
    ddof: int = 1,
    zero_div: str = "tmeasures",
    pool: str | None = None,
    by: str | None = None,
    parts: bool = False,
    bias_correction: str | None = None,
    jackknife_groups: int | None = None,
) -> xr.DataArray | xr.Dataset:
    """Normalized variance per unit: NV[u] = TV[u] / SV[u] (0 = invariant).

    Parameters
    ----------
    cube, dispersion, ddof, pool, by
        As in ``transformation_variance``.
    zero_div : {"tmeasures", "nan"}, default "tmeasures"
        A zero SV: "tmeasures" gives 0/0 → 1 and x/0 → +inf; "nan" gives 0/0 → NaN and
        x/0 → +inf (the seed TF package).
    parts : bool, default False
        Return a Dataset with ``tv``, ``sv`` and ``nv`` (needed by
        ``by_layer(..., reduce="ratio_of_means")``, the seed's layer value). With
        ``bias_correction="jackknife"`` it also holds the uncorrected ``tv_raw``, ``sv_raw``,
        ``nv_raw``, the jackknife standard error ``nv_se`` and the leave-group-out ``tv_loo``,
        ``sv_loo`` (dims ``jackknife``, ``unit``; group sizes in ``jackknife_size``), from which
        ``by_layer(..., reduce="ratio_of_means")`` returns the **jackknifed layer ratio**
        (the jackknife of Σ TV / Σ SV, not the ratio of the jackknifed parts).
    bias_correction, jackknife_groups
        As in ``transformation_variance``: "jackknife" gives NV_J, the jackknife of each unit's
        ratio (the estimate that does not move with N), with its standard error in ``parts``.

    Notes
    -----
    TV and SV are computed in one pass over the cube. With ``by``, NV is the mean over strata
    of the per-stratum ratios (``tv`` and ``sv`` of ``parts`` are the means of the parts).
    The seed package's semantics: ``dispersion="var", zero_div="nan"`` (and ``pool="mean"``
    for its per-feature measures), then ``by_layer(parts, reduce="ratio_of_means")``.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> rng = np.random.default_rng(0)
    >>> conv, dense = rng.normal(size=(6, 3, 2, 2, 2)), rng.normal(size=(6, 3, 3))
    >>> dense[:, :, 0] = dense[:, :1, 0]          # unit 0 of "dense": same under every t
    >>> cube = tmx.from_array({"conv": conv, "dense": dense})
    >>> nv = tmx.normalized_variance(cube, dispersion="var")
    >>> a = cube.values                           # NV = mean_i var_j / mean_j var_i
    >>> bool(np.allclose(nv, a.var(axis=1, ddof=1).mean(0) / a.var(axis=0, ddof=1).mean(0)))
    True
    >>> nv.sel(unit=nv.layer == "dense").values.round(3).tolist()[0]   # invariant: 0
    0.0
    >>> sorted(tmx.normalized_variance(cube, parts=True).data_vars)
    ['nv', 'sv', 'tv']
    """
    parts = flag(parts, "parts")
    ds = variance_parts(
        cube,
        dispersion=dispersion,
        ddof=ddof,
        zero_div=zero_div,
        pool=pool,
        by=by,
        bias_correction=bias_correction,
        jackknife_groups=jackknife_groups,
    )
    return ds if parts else _single(ds, "nv", "normalized_variance")


def _single(ds: xr.Dataset, var: str, name: str) -> xr.DataArray:
    out = ds[var].rename(name)
    out.attrs = {**ds.attrs, **out.attrs, "measure": name}
    return out
