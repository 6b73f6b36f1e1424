"""Familiarity: log-likelihood of responses under a Gaussian mixture fitted per layer.

A vectorised re-implementation of DNIKit's Familiarity (Apple, *Data and Network Introspection
Kit*, 2021): a Gaussian mixture model (Reynolds 2009) is fitted to one set of responses per
layer, and every sample of a (possibly different) set is scored with its log-likelihood under
that model. Higher = more familiar; samples unlike the fitting data score low.

Memory: fitting needs the data, so each layer's ``fit_on`` responses are loaded in full, one
layer at a time (``n_fit_samples × n_layer_units`` values: float32 responses, such as a tmx
cube's, are fitted in float32 as scikit-learn does, anything else in float64). The score set
is scored chunk by chunk (its sample chunks when dask-backed) and never loaded whole.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from sklearn.mixture import GaussianMixture

from ._common import as_responses, layer_positions, load_block, sample_slices, select_layers

__all__ = ["familiarity"]

_COVARIANCES = ("diag", "full")
_NUMPY_CHUNK = 4096


def _load(responses: xr.DataArray, positions: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
    """Numpy block of the given unit positions (and sample rows): float32 stays float32 (as
    scikit-learn keeps it), any other dtype becomes float64."""
    return load_block(responses.data, positions, rows, keep_float32=True)


def _sample_slices(responses: xr.DataArray) -> list[slice]:
    """Sample slices to score one at a time: dask chunks, or fixed-size numpy blocks."""
    return sample_slices(responses.data, _NUMPY_CHUNK)


def _score(models: list[GaussianMixture], responses: xr.DataArray, pos: np.ndarray) -> np.ndarray:
    """``(sample, model)`` log-likelihoods of a layer's responses, streamed over sample chunks."""
    out = np.empty((responses.sizes["sample"], len(models)), dtype=np.float64)
    for sl in _sample_slices(responses):
        block = _load(responses, pos, sl)
        for m, model in enumerate(models):
            out[sl, m] = model.score_samples(block)
    return out


def _check_units(fit: xr.DataArray, score: xr.DataArray) -> None:
    """Raise unless fit_on and score have the same units (layers and unit coordinates)."""
    if fit.sizes["unit"] != score.sizes["unit"]:
        raise ValueError(
            f"fit_on and score must have the same units; got {fit.sizes['unit']} and "
            f"{score.sizes['unit']} units"
        )
    names = {k for k, c in fit.coords.items() if c.dims == ("unit",)}
    names |= {k for k, c in score.coords.items() if c.dims == ("unit",)}
    for name in sorted(names):
        if name not in fit.coords or name not in score.coords:
            raise ValueError(f"unit coordinate {name!r} is on only one of fit_on and score")
        a = np.asarray(fit[name].values)
        b = np.asarray(score[name].values)
        if a.dtype.kind in "OUS" or b.dtype.kind in "OUS":
            same = np.array_equal(a.astype(str), b.astype(str))
        else:
            same = np.array_equal(a, b)
        if not same:
            raise ValueError(f"fit_on and score differ in unit coordinate {name!r}")


def _fit(x: np.ndarray, components: int, covariance: str, seed: int | None) -> GaussianMixture:
    return GaussianMixture(
        n_components=components, covariance_type=covariance, random_state=seed
    ).fit(x)


def familiarity(
    fit_on: Any,
    score: Any = None,
    *,
    components: int = 5,
    covariance: str = "diag",
    seed: int | None = 0,
    by: str | None = None,
    layers: list[str] | None = None,
    transformation: Any = None,
) -> xr.Dataset:
    """Per-layer Gaussian-mixture familiarity (log-likelihood) of responses.

    For each layer, ``sklearn.mixture.GaussianMixture(n_components=components,
    covariance_type=covariance, random_state=seed)`` is fitted to ``fit_on``'s responses of
    that layer, and every sample of ``score`` is scored with ``score_samples`` (its
    log-likelihood under the mixture; higher = more familiar).

    Parameters
    ----------
    fit_on : xr.DataArray
        Responses ``(sample, unit)`` with a ``layer`` coordinate, or a cube
        ``(sample, transformation, unit)``, to fit the mixtures on. Each layer is loaded in
        full while its mixture is fitted (``n_samples × n_layer_units`` values; float32 stays
        float32, which scikit-learn fits about twice as fast, other dtypes become float64).
    score : xr.DataArray, optional
        Responses to score, with the same units as ``fit_on``. Default: ``fit_on`` itself.
        Scored sample chunk by sample chunk.
    components : int, default 5
        Number of mixture components, ``>= 1``.
    covariance : {"diag", "full"}, default "diag"
        Covariance type of the components.
    seed : int or None, default 0
        ``random_state`` of the mixtures: the same seed gives the same result.
    by : str, optional
        A coordinate along ``sample`` of ``fit_on`` (typically ``"label"``): one mixture is
        fitted per value of it, on ``fit_on``'s samples with that value, and every score
        sample is scored under every one of them.
    layers : list of str, optional
        Layers to analyse (default: all, in order of first appearance).
    transformation : None, int or "stack", optional
        How cubes are turned into responses (see
        ``tmx.introspect._common.as_responses``); applied to both sets.

    Returns
    -------
    xr.Dataset
        Without ``by``: ``familiarity`` (sample, layer), float64.
        With ``by``: ``familiarity`` (sample, layer, <by>_model), float64, the score under each
        value's model; and, when ``score`` carries the ``by`` coordinate too,
        ``familiarity_own`` (sample, layer), the score under the model of the sample's own
        value (NaN where that value has no model).
        Sample coordinates of ``score`` (such as ``label``) are kept. Attributes
        ``components``, ``covariance``, ``seed``, ``by`` (``seed`` / ``by`` stored as ``"None"``
        when unset, for serialisability).

    Raises
    ------
    ValueError
        On ``components < 1``, an unknown ``covariance``, an unknown layer, a missing ``by``
        coordinate, too few samples (fewer than ``components``) in a layer or for a ``by``
        value (naming it), or when ``fit_on`` and ``score`` have different units.

    References
    ----------
    Apple, *Data and Network Introspection Kit (DNIKit)*, "Familiarity", 2021.
    D. Reynolds, "Gaussian Mixture Models", *Encyclopedia of Biometrics*, Springer, 2009.
    """
    if isinstance(components, bool) or not isinstance(components, int | np.integer):
        raise ValueError(f"components must be an int >= 1; got {components!r}")
    components = int(components)
    if components < 1:
        raise ValueError(f"components must be >= 1; got {components}")
    if covariance not in _COVARIANCES:
        raise ValueError(f"covariance must be one of {_COVARIANCES}; got {covariance!r}")

    fit = as_responses(fit_on, transformation=transformation, name="fit_on")
    sco = fit if score is None else as_responses(score, transformation=transformation, name="score")
    if score is not None:
        _check_units(fit, sco)

    chosen = select_layers(fit, layers)

    if by is None:
        groups: list[tuple[Any, np.ndarray | None]] = [(None, None)]
        n_fit = fit.sizes["sample"]
        if n_fit < components:
            raise ValueError(f"fit_on has {n_fit} samples, fewer than components={components}")
    else:
        if by not in fit.coords or fit[by].dims != ("sample",):
            raise ValueError(f"by={by!r} must be a coordinate along sample of fit_on")
        if score is not None and (by not in sco.coords or sco[by].dims != ("sample",)):
            raise ValueError(f"by={by!r} must be a coordinate along sample of score")
        values = np.asarray(fit[by].values)
        uniques = np.unique(values)
        groups = []
        for value in uniques:
            rows = np.flatnonzero(values == value)
            if rows.size < components:
                shown = value.item() if isinstance(value, np.generic) else value
                raise ValueError(
                    f"{by}={shown!r} has {rows.size} samples in fit_on, fewer than "
                    f"components={components}"
                )
            groups.append((value, rows))

    n_score = sco.sizes["sample"]
    result = np.empty((n_score, len(chosen), len(groups)), dtype=np.float64)
    for j, layer in enumerate(chosen):
        pos = layer_positions(fit, layer)
        models = []
        if by is None:
            models.append(_fit(_load(fit, pos), components, covariance, seed))
        else:
            x = _load(fit, pos)
            for _, rows in groups:
                models.append(_fit(x[rows], components, covariance, seed))
            del x
        result[:, j, :] = _score(models, sco, layer_positions(sco, layer))

    sample_coords = {k: c.variable for k, c in sco.coords.items() if c.dims == ("sample",)}
    coords: dict[str, Any] = {**sample_coords, "layer": np.asarray(chosen, dtype=str)}
    attrs = {
        "components": components,
        "covariance": covariance,
        "seed": "None" if seed is None else int(seed),
        "by": "None" if by is None else by,
    }
    if by is None:
        return xr.Dataset(
            {"familiarity": (("sample", "layer"), result[:, :, 0])}, coords=coords, attrs=attrs
        )

    model_dim = f"{by}_model"
    model_values = np.asarray([value for value, _ in groups])
    coords[model_dim] = model_values
    data_vars: dict[str, Any] = {"familiarity": (("sample", "layer", model_dim), result)}
    if by in sco.coords and sco[by].dims == ("sample",):
        own_values = np.asarray(sco[by].values)
        own = np.full((n_score, len(chosen)), np.nan)
        for m, value in enumerate(model_values):
            rows = np.flatnonzero(own_values == value)
            own[rows] = result[rows, :, m]
        data_vars["familiarity_own"] = (("sample", "layer"), own)
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)
