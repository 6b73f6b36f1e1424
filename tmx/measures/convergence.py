"""How many samples do I need? A measure and its interval at nested subsamples of growing size.

``convergence(measure, cube, sizes=(25, 50, 100, 200))`` draws one seeded order of the samples
and evaluates ``tmx.bootstrap(measure, cube[first s samples], ...)`` for every size s: each
subsample contains the smaller ones, so the curve shows how the estimate settles and how the
interval narrows as samples are added (roughly as 1/√N). For the variance family the default
interval is the studentised jackknife around the bias-corrected estimate, whose centre does not
drift with N; the plain unit mean of NV drifts (sparse units' ratios move with N).

A rule for choosing N: take the smallest size whose interval half-width is below the smallest
difference you want to resolve (between layers, models or transformations), and check that the
estimates at the larger sizes stay inside the smaller sizes' intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import xarray as xr

from .. import _deprecation
from .. import _validate as v
from .._progress import resolve as resolve_progress
from .._progress import steps
from .._schema import check_cube
from ._common import base_attrs
from .bootstrap import bootstrap
from .variance import normalized_variance


def _check_sizes(sizes: Any, n: int) -> list[int]:
    if sizes is None:
        grid = np.unique(np.geomspace(min(n, 10), n, num=6).round().astype(int))
        return [int(s) for s in grid if s >= 3] or [n]
    try:
        values = [int(s) for s in sizes]
    except (TypeError, ValueError):
        raise ValueError(f"sizes must be a sequence of integers; got {sizes!r}") from None
    if not values or any(s != t for s, t in zip(values, sizes, strict=True)):
        raise ValueError(f"sizes must be a non-empty sequence of integers; got {sizes!r}")
    if sorted(set(values)) != values:
        raise ValueError(f"sizes must be strictly increasing; got {values}")
    if values[0] < 3 or values[-1] > n:
        raise ValueError(f"sizes must lie between 3 and the cube's N = {n} samples; got {values}")
    return values


def convergence(
    measure: Callable[..., xr.DataArray],
    cube: xr.DataArray,
    *,
    sizes: Sequence[int] | None = None,
    n: int = 1000,
    reduce: str | None = "auto",
    seed: int = 0,
    ci: float = 0.95,
    method: str | None = None,
    progress: bool | None = None,
    by_layer: Any = _deprecation.UNSET,
    **options: Any,
) -> xr.Dataset:
    """A measure's estimate and interval at nested subsamples of increasing size.

    Parameters
    ----------
    measure : callable
        A measure of ``tmx`` (e.g. ``tmx.normalized_variance``) or any function accepted by
        ``tmx.bootstrap``.
    cube : xr.DataArray
        The activation cube (numpy, dask or an opened Zarr store: each size streams its
        subsample's blocks).
    sizes : sequence of int, optional
        Strictly increasing subsample sizes in [3, N]; default six sizes spaced geometrically
        from min(N, 10) to N.
    n : int, default 1000
        Bootstrap replicates (unused by the jackknife interval).
    reduce : str or None, default "auto"
        The layer summary (as in ``tmx.bootstrap``); None: per unit. "auto":
        "ratio_of_means" for ``normalized_variance`` (the layer value that does not move with
        N), "mean" for other measures. ``by_layer=``, its former name, still works and
        warns.
    seed : int, default 0
        Seed of the sample order (and of the bootstrap): the subsample of size s is the first s
        samples of one permutation, so every subsample contains the smaller ones.
    progress : bool, optional
        A progress bar with one step per size (each a ``tmx.bootstrap`` of its subsample).
        Default: shown when run interactively, not under pytest or CI.
    by_layer : str, optional
        Deprecated name of ``reduce`` (``DeprecationWarning``).
    ci, method, **options
        As in ``tmx.bootstrap`` (the default interval of the variance family is the
        jackknife's, centred on the bias-corrected estimate).

    Returns
    -------
    xr.Dataset
        ``estimate``, ``low``, ``high`` (and ``uncorrected``, ``se`` for the jackknife) over
        ``size`` and ``layer`` (or ``unit``); ``width`` = high − low; attrs record the options.
        Computed (numpy-backed) even for a lazy cube, as ``tmx.bootstrap``'s result is (its
        Notes say why); ``progress=`` shows that work.

    Examples
    --------
    >>> import numpy as np, xarray as xr, tmx
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(200, 4, 3)) + 2 * rng.normal(size=(200, 1, 3))
    >>> cube = xr.DataArray(a, dims=("sample", "transformation", "unit"),
    ...     coords={"layer": ("unit", ["d"] * 3), "channel": ("unit", [0, 1, 2]),
    ...             "y": ("unit", [-1] * 3), "x": ("unit", [-1] * 3)})
    >>> curve = tmx.convergence(tmx.normalized_variance, cube, sizes=(25, 50, 100, 200))
    >>> curve.estimate.dims
    ('size', 'layer')
    >>> bool(curve.width.isel(size=-1) < curve.width.isel(size=0))
    True
    """
    reduce = _deprecation.renamed("convergence", "by_layer", "reduce", by_layer, reduce, "auto")
    cube = check_cube(cube, measure="convergence")
    seed = v.seed(seed)
    show = resolve_progress(progress)
    total = cube.sizes["sample"]
    grid = _check_sizes(sizes, total)
    if reduce == "auto":
        reduce = "ratio_of_means" if measure is normalized_variance else "mean"
    order = np.random.default_rng(int(seed)).permutation(total)
    rows = []
    with steps(len(grid), show, unit="size") as bar:
        for size in grid:
            sub = cube.isel(sample=np.sort(order[:size]))
            out = bootstrap(
                measure,
                sub,
                n=n,
                seed=seed,
                ci=ci,
                reduce=reduce,
                method=method,
                progress=False,
                **options,
            )
            per_size = [k for k in ("excluded", "inactive") if k in out.coords]
            rows.append(out.reset_coords(per_size))
            bar.advance()
    result = xr.concat(rows, dim="size", coords="minimal", compat="override", join="override")
    result = result.assign_coords(size=("size", np.asarray(grid, dtype=np.int64)))
    result["width"] = result["high"] - result["low"]
    result["width"].attrs = {"long_name": "interval width"}
    name = getattr(measure, "__name__", "measure")
    result.attrs = {
        **rows[-1].attrs,
        **base_attrs(
            cube,
            f"convergence({name})",
            n=int(n),
            seed=int(seed),
            ci=float(ci),
            reduce=reduce,
            sizes=grid,
        ),
    }
    return result
