"""Familiarity: log-likelihood of responses under a Gaussian mixture fitted per layer.

A vectorised re-implementation of DNIKit's Familiarity (Apple, *Data and Network Introspection
Kit*, 2021): a Gaussian mixture model (Reynolds 2009) is fitted to one set of responses per
layer, and every sample of a (possibly different) set is scored with its log-likelihood under
that model. Higher = more familiar; samples unlike the fitting data score low.

The defaults are DNIKit's: ``max_iter=200``, ``tol=1e-3``, the responses fitted as they are
(float32 responses, such as a tmx cube's, in float32, as scikit-learn does with the array DNIKit
hands it) and every score computed in float64 (DNIKit scores with scipy in float64), so that the
scores equal DNIKit's to about 1e-6 rather than the 3e-3 of float32 scoring.

Memory: fitting needs the data, so each layer's ``fit_on`` responses are loaded in full, one
layer at a time (``n_fit_samples × n_layer_units`` values, float32 kept as float32, anything else
float64). The score set is scored chunk by chunk (its sample chunks when dask-backed) and never
loaded whole.
"""

from __future__ import annotations

import copy
import logging
import uuid
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from scipy.linalg import solve_triangular
from sklearn.mixture import GaussianMixture

from .. import _deprecation
from .. import _validate as v
from .._progress import resolve as resolve_progress
from .._progress import steps
from .._provenance import provenance
from .._schema import as_responses, layer_positions, select_layers, unit_index
from .._validate import str_array
from ._common import load_block, sample_slices

__all__ = ["familiarity"]

log = logging.getLogger("tmx")

_COVARIANCES = ("diag", "full")
_SCORE_DTYPES = ("float64", "input")
_NUMPY_CHUNK = 4096


def _load(responses: xr.DataArray, positions: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
    """Numpy block of the given unit positions (and sample rows): float32 stays float32 (as
    scikit-learn keeps it), any other dtype becomes float64."""
    return load_block(responses.data, positions, rows, keep_float32=True)


def _sample_slices(responses: xr.DataArray) -> list[slice]:
    """Sample slices to score one at a time: dask chunks, or fixed-size numpy blocks."""
    return sample_slices(responses.data, _NUMPY_CHUNK)


def _float64_model(model: GaussianMixture) -> GaussianMixture:
    """A copy of a fitted mixture whose parameters are float64.

    The weights, means and covariances are cast to float64 and the Cholesky factors of the
    precisions are recomputed from them in float64 (scikit-learn's own formulas: diag
    ``1 / sqrt(σ²)``; full ``L⁻ᵀ`` with ``Σ = L Lᵀ``), so that ``score_samples`` on float64
    data is the log-likelihood of the fitted mixture in float64, as DNIKit's scipy scoring of
    the same parameters. A float64 model is returned as is."""
    if model.means_.dtype == np.float64 and model.precisions_cholesky_.dtype == np.float64:
        return model
    out = copy.copy(model)
    out.weights_ = np.asarray(model.weights_, dtype=np.float64)
    out.means_ = np.asarray(model.means_, dtype=np.float64)
    cov = np.asarray(model.covariances_, dtype=np.float64)
    out.covariances_ = cov
    if model.covariance_type == "full":
        eye = np.eye(cov.shape[-1])
        chol = np.stack([solve_triangular(np.linalg.cholesky(c), eye, lower=True).T for c in cov])
        out.precisions_cholesky_ = chol
        out.precisions_ = chol @ np.swapaxes(chol, -1, -2)
    else:
        out.precisions_cholesky_ = 1.0 / np.sqrt(cov)
        out.precisions_ = 1.0 / cov
    return out


def _score(
    models: list[GaussianMixture],
    responses: xr.DataArray,
    pos: np.ndarray,
    score_dtype: str = "float64",
) -> np.ndarray:
    """``(sample, model)`` log-likelihoods of a layer's responses, streamed over sample chunks,
    computed in float64 (``score_dtype="float64"``) or in the responses' dtype (``"input"``)."""
    if score_dtype == "float64":
        models = [_float64_model(model) for model in models]
    out = np.empty((responses.sizes["sample"], len(models)), dtype=np.float64)
    for sl in _sample_slices(responses):
        block = _load(responses, pos, sl)
        if score_dtype == "float64":
            block = block.astype(np.float64, copy=False)
        for m, model in enumerate(models):
            out[sl, m] = model.score_samples(block)
    return out


class _ScoreBlock:
    """``block ↦ (rows, model)`` log-likelihoods of a sample chunk, as ``_score`` computes
    them, for dask's ``map_blocks``."""

    def __init__(self, models: list[GaussianMixture], score_dtype: str) -> None:
        self.models = models
        self.score_dtype = score_dtype

    def __call__(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block)
        dtype = np.float32 if block.dtype == np.float32 else np.float64
        block = np.ascontiguousarray(block, dtype=dtype)
        if self.score_dtype == "float64":
            block = block.astype(np.float64, copy=False)
        out = np.empty((block.shape[0], len(self.models)), dtype=np.float64)
        for m, model in enumerate(self.models):
            out[:, m] = model.score_samples(block)
        return out


def _score_lazy(
    models: list[GaussianMixture], responses: xr.DataArray, pos: np.ndarray, score_dtype: str
) -> da.Array:
    """``_score`` as a dask graph over the responses' sample chunks (the same chunks, the same
    calls, so the same numbers), computed when the caller computes it."""
    if score_dtype == "float64":
        models = [_float64_model(model) for model in models]
    block = responses.data[:, unit_index(pos)]
    block = block.rechunk({1: -1})
    return block.map_blocks(
        _ScoreBlock(models, score_dtype),
        chunks=(block.chunks[0], (len(models),)),
        dtype=np.float64,
        meta=np.empty((0, 0), dtype=np.float64),
        name=f"tmx-familiarity-{uuid.uuid4().hex}",  # unique: the fitted models are not hashed
    )


def _own(block: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``(rows, layer)`` scores under each row's own model (``index`` −1: none, NaN)."""
    index = np.asarray(index).reshape(-1)
    own = np.full(block.shape[:2], np.nan)
    for m in range(block.shape[2]):
        rows = np.flatnonzero(index == m)
        own[rows] = block[rows, :, m]
    return own


def _check_units(fit: xr.DataArray, score: xr.DataArray) -> None:
    """Raise unless fit_on and score have the same units (layers and unit coordinates)."""
    if fit.sizes["unit"] != score.sizes["unit"]:
        raise ValueError(
            f"fit_on and score must have the same units; got {fit.sizes['unit']} and "
            f"{score.sizes['unit']} units"
        )
    names = {k for k, c in fit.coords.items() if c.dims == ("unit",)}
    names |= {k for k, c in score.coords.items() if c.dims == ("unit",)}
    for name in sorted(names, key=str):
        if name not in fit.coords or name not in score.coords:
            raise ValueError(f"unit coordinate {name!r} is on only one of fit_on and score")
        a = np.asarray(fit[name].values)
        b = np.asarray(score[name].values)
        if a.dtype.kind in "OUS" or b.dtype.kind in "OUS":
            same = np.array_equal(str_array(a), str_array(b))
        else:
            same = np.array_equal(a, b)
        if not same:
            raise ValueError(f"fit_on and score differ in unit coordinate {name!r}")


def _fit(
    x: np.ndarray,
    components: int,
    covariance: str,
    seed: int | None,
    max_iter: int = 200,
    tol: float = 1e-3,
) -> GaussianMixture:
    return GaussianMixture(
        n_components=components,
        covariance_type=covariance,
        random_state=seed,
        max_iter=max_iter,
        tol=tol,
    ).fit(x)


def familiarity(
    fit_on: Any,
    score: Any = None,
    *,
    n_components: int = 5,
    covariance: str = "diag",
    seed: int | None = 0,
    max_iter: int = 200,
    tol: float = 1e-3,
    score_dtype: str = "float64",
    by: str | None = None,
    layers: list[str] | None = None,
    transformation: Any = None,
    progress: bool | None = None,
    components: Any = _deprecation.UNSET,
) -> xr.Dataset:
    """Per-layer Gaussian-mixture familiarity (log-likelihood) of responses.

    For each layer, ``sklearn.mixture.GaussianMixture(n_components=n_components,
    covariance_type=covariance, random_state=seed, max_iter=max_iter, tol=tol)`` is fitted to
    ``fit_on``'s responses of that layer, and every sample x of ``score`` gets its
    log-likelihood under the mixture (higher = more familiar):

        log p(x) = log Σ_k π_k N(x; μ_k, Σ_k),

    computed in float64 by default (``score_samples`` of the float64 responses under the
    float64 parameters). With the defaults this is DNIKit's ``Familiarity`` with its ``GMM``
    strategy (``gaussian_count=5``, ``convergence_threshold=1e-3``, ``max_iterations=200``,
    ``DIAG``), whose scores it reproduces to about 1e-6.

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
    n_components : int, default 5
        Number of mixture components, ``>= 1``.
    covariance : {"diag", "full"}, default "diag"
        Covariance type of the components.
    seed : int or None, default 0
        ``random_state`` of the mixtures: the same seed gives the same result.
    max_iter : int, default 200
        Maximum number of EM iterations of each fit (DNIKit's ``max_iterations``;
        scikit-learn's own default is 100).
    tol : float, default 1e-3
        Convergence threshold of EM on the mean log-likelihood gain (DNIKit's
        ``convergence_threshold``).
    score_dtype : {"float64", "input"}, default "float64"
        Precision of the scores. ``"float64"``: the responses and the fitted parameters (a
        float32 fit's too) are cast to float64 before scoring, as DNIKit's scipy scoring does.
        ``"input"``: scored in the responses' dtype, as ``score_samples`` of float32 data
        does (faster; scores off by up to about 1e-6 relative, 3e-3 absolute on the
        benchmark's 512 units, ``python -m benchmarks.introspect``).
    by : str, optional
        A coordinate along ``sample`` of ``fit_on`` (typically ``"label"``): one mixture is
        fitted per value of it, on ``fit_on``'s samples with that value, and every score
        sample is scored under every one of them.
    layers : list of str, optional
        Layers to analyse (default: all, in order of first appearance).
    transformation : None, int or "stack", optional
        How cubes are turned into responses (see ``tmx.introspect.as_responses``); applied to
        both sets.
    progress : bool or None, default None
        A progress bar over the layers (one fit each); None: when run interactively (a
        terminal, not under pytest or CI).
    components : int
        Deprecated name of ``n_components`` (warns).

    Returns
    -------
    xr.Dataset
        Without ``by``: ``familiarity`` (sample, layer), float64.
        With ``by``: ``familiarity`` (sample, layer, <by>_model), float64, the score under each
        value's model; and, when ``score`` carries the ``by`` coordinate too,
        ``familiarity_own`` (sample, layer), the score under the model of the sample's own
        value (NaN where that value has no model).
        Sample coordinates of ``score`` (such as ``label``) are kept. Attributes
        ``introspector`` ("familiarity"), ``n_components``, ``covariance``, ``seed``,
        ``max_iter``, ``tol``, ``score_dtype``, ``by`` (``seed`` / ``by`` stored as ``"None"``
        when unset, for serialisability) and ``tmx_version``.

    Raises
    ------
    ValueError
        On ``n_components < 1``, an unknown ``covariance``, ``max_iter < 1``, ``tol < 0``, an
        unknown ``score_dtype``, an unknown layer, a missing ``by``
        coordinate, too few samples (fewer than ``n_components``) in a layer or for a ``by``
        value (naming it), or when ``fit_on`` and ``score`` have different units.

    Notes
    -----
    **Computes the fit, not the scores.** The mixtures are fitted here (each layer of
    ``fit_on`` is read); the scores are **lazy** when ``score`` (by default ``fit_on``) is
    dask-backed: a dask graph over its sample chunks, with the same numbers as numpy-backed
    responses chunked the same way, computed when the caller computes it.

    References
    ----------
    Apple, *Data and Network Introspection Kit (DNIKit)*, "Familiarity", 2021.
    D. Reynolds, "Gaussian Mixture Models", *Encyclopedia of Biometrics*, Springer, 2009.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from tmx import introspect
    >>> x = np.array([[0.0], [0.1], [-0.1], [0.2], [-0.2], [5.0]])
    >>> responses = xr.DataArray(x, dims=("sample", "unit"), coords={"layer": ("unit", ["h"])})
    >>> fam = introspect.familiarity(responses, n_components=1)
    >>> scores = fam["familiarity"].sel(layer="h").values
    >>> int(scores.argmin())  # the outlier is the least familiar
    5
    >>> bool(np.allclose(scores, fam["familiarity"].values[:, 0]))
    True
    """
    n_components = _deprecation.renamed(
        "familiarity", "components", "n_components", components, n_components, 5
    )
    n_components, max_iter = _check_arguments(n_components, covariance, max_iter, tol, score_dtype)
    seed = v.seed(seed, allow_none=True)
    show = resolve_progress(progress)
    fit = as_responses(fit_on, transformation=transformation, name="fit_on")
    sco = fit if score is None else as_responses(score, transformation=transformation, name="score")
    if score is not None:
        _check_units(fit, sco)
    chosen = select_layers(fit, layers)
    groups = _groups(fit, sco, score is not None, by, n_components)
    lazy = isinstance(sco.data, da.Array)
    log.info(
        "familiarity: %d layer(s), %d mixture(s) of %d components each, scoring %d samples%s",
        len(chosen),
        len(groups),
        n_components,
        sco.sizes["sample"],
        " (lazily)" if lazy else "",
    )
    parts = []
    with steps(len(chosen), show, unit="layer") as bar:
        for layer in chosen:
            log.debug("familiarity: fitting layer %r", layer)
            pos = layer_positions(fit, layer)
            x = _load(fit, pos)
            models = [
                _fit(x if rows is None else x[rows], n_components, covariance, seed, max_iter, tol)
                for _, rows in groups
            ]
            del x
            scorer = _score_lazy if lazy else _score
            parts.append(scorer(models, sco, layer_positions(sco, layer), score_dtype))
            bar.advance()
    result = da.stack(parts, axis=1) if lazy else np.stack(parts, axis=1)
    attrs = provenance(
        "introspector",
        "familiarity",
        n_components=n_components,
        covariance=covariance,
        seed=seed,
        max_iter=max_iter,
        tol=float(tol),
        score_dtype=score_dtype,
        by=by,
    )
    return _wrap(sco, chosen, groups, by, result, attrs)


def _check_arguments(
    n_components: Any, covariance: Any, max_iter: Any, tol: Any, score_dtype: Any
) -> tuple[int, int]:
    if isinstance(n_components, bool) or not isinstance(n_components, int | np.integer):
        raise ValueError(f"n_components must be an int >= 1; got {n_components!r}")
    n_components = int(n_components)
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1; got {n_components}")
    v.choice(covariance, "covariance", _COVARIANCES)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1; got {max_iter!r}")
    if not (isinstance(tol, int | float | np.floating) and tol >= 0):
        raise ValueError(f"tol must be a number >= 0; got {tol!r}")
    v.choice(score_dtype, "score_dtype", _SCORE_DTYPES)
    return n_components, int(max_iter)


def _groups(
    fit: xr.DataArray, sco: xr.DataArray, given: bool, by: str | None, n_components: int
) -> list[tuple[Any, np.ndarray | None]]:
    """The mixtures to fit: ``(value of by, fit_on's rows)`` per value, or one on every row."""
    if by is None:
        n_fit = fit.sizes["sample"]
        if n_fit < n_components:
            raise ValueError(f"fit_on has {n_fit} samples, fewer than n_components={n_components}")
        return [(None, None)]
    if by not in fit.coords or fit[by].dims != ("sample",):
        raise ValueError(f"by={by!r} must be a coordinate along sample of fit_on")
    if given and (by not in sco.coords or sco[by].dims != ("sample",)):
        raise ValueError(f"by={by!r} must be a coordinate along sample of score")
    values = np.asarray(fit[by].values)
    groups: list[tuple[Any, np.ndarray | None]] = []
    for value in np.unique(values):
        rows = np.flatnonzero(values == value)
        if rows.size < n_components:
            shown = value.item() if isinstance(value, np.generic) else value
            raise ValueError(
                f"{by}={shown!r} has {rows.size} samples in fit_on, fewer than "
                f"n_components={n_components}"
            )
        groups.append((value, rows))
    return groups


def _wrap(
    sco: xr.DataArray,
    chosen: list[str],
    groups: list[tuple[Any, np.ndarray | None]],
    by: str | None,
    result: Any,
    attrs: dict[str, Any],
) -> xr.Dataset:
    """The labeled result: ``familiarity`` (and ``familiarity_own`` with ``by``)."""
    sample_coords = {str(k): c.variable for k, c in sco.coords.items() if c.dims == ("sample",)}
    coords: dict[str, Any] = {**sample_coords, "layer": np.asarray(chosen, dtype=str)}
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
        index = np.full(own_values.shape[0], -1, dtype=np.int64)
        for m, value in enumerate(model_values):
            index[own_values == value] = m
        if isinstance(result, da.Array):
            lazy_index = da.from_array(index, chunks=(result.chunks[0],))[:, None, None]
            own = da.map_blocks(_own, result, lazy_index, drop_axis=2, dtype=np.float64)
        else:
            own = _own(result, index)
        data_vars["familiarity_own"] = (("sample", "layer"), own)
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)
