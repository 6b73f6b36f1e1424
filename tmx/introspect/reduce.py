"""Dimension reduction of responses, per layer: PCA, incremental PCA, t-SNE, UMAP and PaCMAP.

Each layer's units are reduced to ``n_components`` components, one layer at a time, as
DNIKit's ``DimensionReduction`` (Apple, *Data and Network Introspection Kit*, 2021) does for its
strategies. The methods are thin wrappers around their libraries: the numbers are the
libraries' own, for the same data, seed and options.

Memory: ``"incremental_pca"`` streams the responses by sample chunks (its dask chunks, or blocks
of ``batch_size`` rows) and holds one chunk of one layer at a time (``chunk_rows ×
n_layer_units × 8`` bytes, float64). Every other method needs the whole layer: each layer's
responses are loaded in full, one layer at a time (``n_samples × n_layer_units × 8`` bytes,
float64; dask-backed responses whose selected layers take at most 512 MiB in float64 are
computed in one pass, all those layers at once, so a lazy cube's forward pass runs once),
plus the library's own working memory (t-SNE, UMAP and PaCMAP keep neighbour graphs
of ``n_samples × n_neighbours`` entries).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral
from types import ModuleType
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from sklearn import config_context
from sklearn.decomposition import PCA, IncrementalPCA
from sklearn.manifold import TSNE

from .. import _deprecation
from .. import _validate as v
from .._progress import resolve as resolve_progress
from .._progress import steps
from .._provenance import attr_value, provenance
from .._schema import as_responses, loaded_coords, select_layers, units_by_layer
from ._common import load_block, sample_slices

__all__ = ["METHODS", "reduce"]

log = logging.getLogger("tmx")

_ATTRS = ("introspector", "method", "n_components", "seed", "tmx_version")
_MIN_BATCH = 1024
_LOAD_ONCE_BYTES = 512 * 2**20  # float64 bytes of all layers' blocks computed in one dask pass
_TSNE_PERPLEXITY = 30.0
_UMAP_NEIGHBOURS = 15
_PACMAP_NEIGHBOURS = 10


def _columns(positions: np.ndarray) -> slice | np.ndarray:
    """A slice when the positions are contiguous (cheaper to index lazily), else the positions."""
    if positions.size and np.array_equal(
        positions, np.arange(positions[0], positions[0] + positions.size)
    ):
        return slice(int(positions[0]), int(positions[0]) + positions.size)
    return positions


def _check_finite(block: np.ndarray, layer: str) -> None:
    if not np.isfinite(block).all():
        raise ValueError(f"responses of layer {layer!r} contain non-finite values (NaN or inf)")


def _pacmap_neighbours(n: int, options: dict[str, Any]) -> int | None:
    """Largest ``n_neighbors <= 10`` whose near, mid-near and further pairs fit in ``n``
    samples (PaCMAP's own rule: ``n_NB + round(n_NB * MN_ratio) + round(n_NB * FP_ratio) <
    n``); None when even 1 does not fit."""
    mn = float(options.get("MN_ratio", 0.5))
    fp = float(options.get("FP_ratio", 2.0))
    for k in range(_PACMAP_NEIGHBOURS, 0, -1):
        if k + round(k * mn) + round(k * fp) < n:
            return k
    return None


# -- the estimators: one small spec per method (a registry, not an if/elif) --------------------
Options = dict[str, Any]


def _no_defaults(n: int, dims: int, seed: int | None, opts: Options) -> Options:
    return opts


def _tsne_defaults(n: int, dims: int, seed: int | None, opts: Options) -> Options:
    # scikit-learn needs perplexity < n_samples; (n - 1) / 3 makes its 3 * perplexity + 1
    # neighbours exactly all the other samples.
    opts.setdefault("perplexity", min(_TSNE_PERPLEXITY, (n - 1) / 3))
    if dims > 3:
        opts.setdefault("method", "exact")  # Barnes-Hut supports at most 3 components
    return opts


def _umap_defaults(n: int, dims: int, seed: int | None, opts: Options) -> Options:
    opts.setdefault("n_neighbors", min(_UMAP_NEIGHBOURS, n - 1))
    if seed is not None:
        opts.setdefault("n_jobs", 1)  # UMAP forces 1 with a seed, and warns otherwise
    return opts


def _pacmap_defaults(n: int, dims: int, seed: int | None, opts: Options) -> Options:
    if "n_neighbors" not in opts:
        k = _pacmap_neighbours(n, opts)
        if k is None:
            raise ValueError(
                f'method="pacmap" needs more samples: {n} cannot hold its nearest, '
                "mid-near and further pairs (at least 4 with the default ratios)"
            )
        opts["n_neighbors"] = k
    return opts


Projected = tuple[np.ndarray, np.ndarray | None]  # (sample, dims) and the explained ratios


def _pca(x: np.ndarray, dims: int, seed: int | None, opts: Options, module: Any) -> Projected:
    model = PCA(n_components=dims, random_state=seed, **opts)
    # finite already checked (naming the layer): scikit-learn need not check again
    with np.errstate(divide="ignore", invalid="ignore"), config_context(assume_finite=True):
        out = model.fit_transform(x)
    return out, model.explained_variance_ratio_


def _tsne(x: np.ndarray, dims: int, seed: int | None, opts: Options, module: Any) -> Projected:
    return TSNE(n_components=dims, random_state=seed, **opts).fit_transform(x), None


def _umap(x: np.ndarray, dims: int, seed: int | None, opts: Options, module: Any) -> Projected:
    return module.UMAP(n_components=dims, random_state=seed, **opts).fit_transform(x), None


def _pacmap(x: np.ndarray, dims: int, seed: int | None, opts: Options, module: Any) -> Projected:
    return module.PaCMAP(n_components=dims, random_state=seed, **opts).fit_transform(x), None


def _at_least(dims: int) -> int:
    return max(2, dims)


@dataclass(frozen=True)
class _Method:
    """How one method reduces a layer.

    ``project(x, dims, seed, options, module)`` maps a whole layer's float64 responses
    ``(n, units)`` to ``(n, dims)`` and the explained variance ratios (or None); ``streamed``
    methods are fitted chunk by chunk instead (``_incremental``). ``defaults(n, dims, seed,
    options)`` adds the small-sample defaults; ``min_samples(dims)`` is the fewest samples the
    method takes; ``constant_to_zero``: a layer equal on every sample is projected to 0 without
    calling the library; ``package``: (module, pip extra) of an optional dependency."""

    project: Callable[[np.ndarray, int, int | None, Options, Any], Projected] | None = None
    streamed: bool = False
    ratios: bool = False
    defaults: Callable[[int, int, int | None, Options], Options] = _no_defaults
    min_samples: Callable[[int], int] = _at_least
    constant_to_zero: bool = False
    package: tuple[str, str] | None = None


_REGISTRY: dict[str, _Method] = {
    "pca": _Method(project=_pca, ratios=True),
    "incremental_pca": _Method(streamed=True, ratios=True),
    "tsne": _Method(project=_tsne, defaults=_tsne_defaults, constant_to_zero=True),
    "umap": _Method(
        project=_umap,
        defaults=_umap_defaults,
        # n_neighbors >= 2; the spectral init needs dims + 1 < n
        min_samples=lambda dims: max(3, dims + 2),
        constant_to_zero=True,
        package=("umap", "umap-learn"),
    ),
    "pacmap": _Method(
        project=_pacmap,
        defaults=_pacmap_defaults,
        min_samples=lambda dims: max(4, dims),
        constant_to_zero=True,
        package=("pacmap", "pacmap"),
    ),
}
METHODS = tuple(_REGISTRY)


def _optional(method: str) -> ModuleType | None:
    """Import the optional package of ``method`` (None when it needs none), with an install
    hint when it is missing."""
    package = _REGISTRY[method].package
    if package is None:
        return None
    module, name = package
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f'method="{method}" needs the optional package {name}: '
            f'pip install "tmx-measures[{method}]"'
        ) from err


def _blocks(data: Any, n: int, batch_size: int | None, dims: int) -> list[slice]:
    """Sample slices for incremental PCA: the dask chunks (``batch_size`` None on a dask array)
    or blocks of ``batch_size`` rows; slices with fewer than ``dims`` rows are merged into the
    next one (the last into the previous one)."""
    if batch_size is None:
        slices = sample_slices(data, max(5 * dims, _MIN_BATCH))
    else:
        slices = [slice(a, min(a + batch_size, n)) for a in range(0, n, batch_size)]
    merged: list[slice] = []
    start = 0
    for sl in slices:
        if sl.stop - start >= dims:
            merged.append(slice(start, sl.stop))
            start = sl.stop
    if start < n:
        last = merged.pop()
        merged.append(slice(last.start, n))
    return merged


def _responses(responses: Any, transformation: Any, *, load: bool = False) -> xr.DataArray:
    """``as_responses``, without its copy when ``responses`` already are (sample, unit)
    with a ``layer`` coordinate.

    With ``load`` (a method that holds the data in memory anyway), dask-backed responses of
    at most ``_LOAD_ONCE_BYTES`` in float64 are read with their coordinates in one dask
    compute, instead of one for the labels and one per layer."""
    if load and _small_lazy(responses, transformation):
        responses = responses.compute()
    if (
        transformation is None
        and isinstance(responses, xr.DataArray)
        and responses.dims == ("sample", "unit")
        and "layer" in responses.coords
    ):
        return loaded_coords(responses)
    return as_responses(responses, transformation=transformation)


def _small_lazy(responses: Any, transformation: Any) -> bool:
    """Dask-backed ``(sample, unit)`` responses (or a cube read whole, ``transformation``
    "stack") small enough to read in one pass."""
    if not isinstance(responses, xr.DataArray) or not isinstance(responses.data, da.Array):
        return False
    if transformation is not None and transformation != "stack":
        return False  # one transformation of a cube: read only that one, later
    return 8 * int(responses.size) <= _LOAD_ONCE_BYTES


def _load_once(data: Any, columns: dict[str, slice | np.ndarray]) -> dict[str, np.ndarray]:
    """Every layer's block, float64, computed in one dask pass when ``data`` is dask-backed
    and the blocks fit ``_LOAD_ONCE_BYTES`` (a lazy cube's forward pass then runs once, not
    once per layer); {} otherwise (numpy-backed: each layer is a view, read when needed; too
    large: one layer at a time)."""
    if not isinstance(data, da.Array) or len(columns) < 2:
        return {}
    units = sum(
        (c.stop - c.start) if isinstance(c, slice) else int(c.size) for c in columns.values()
    )
    if 8 * int(data.shape[0]) * units > _LOAD_ONCE_BYTES:
        return {}
    names = list(columns)
    blocks = dask.compute(*[data[:, columns[k]] for k in names])
    return {
        k: np.ascontiguousarray(b, dtype=np.float64) for k, b in zip(names, blocks, strict=True)
    }


def _incremental(
    data: Any, columns: slice | np.ndarray, layer: str, blocks: list[slice], model: IncrementalPCA
) -> np.ndarray:
    """Fit ``model`` by ``partial_fit`` over the blocks, then transform them: two streamed
    passes, one block in memory at a time."""
    for sl in blocks:
        block = load_block(data, columns, sl)
        _check_finite(block, layer)
        with np.errstate(divide="ignore", invalid="ignore"):
            model.partial_fit(block)
    out = np.empty((int(data.shape[0]), model.n_components), dtype=np.float64)
    for sl in blocks:
        out[sl] = model.transform(load_block(data, columns, sl))
    return out


def reduce(
    responses: Any,
    method: str = "pca",
    n_components: int = 2,
    *,
    layers: list[str] | None = None,
    transformation: Any = None,
    seed: int | None = 0,
    batch_size: int | None = None,
    progress: bool | None = None,
    dims: Any = _deprecation.UNSET,
    **options: Any,
) -> xr.DataArray:
    """Reduce each layer's responses to ``n_components`` components.

    Per layer, the ``(sample, unit)`` responses ``X`` of that layer's units are mapped to
    ``(sample, dims)``:

    - ``"pca"``: ``sklearn.decomposition.PCA(n_components=dims, random_state=seed,
      **options).fit_transform(X)``, i.e. ``(X - mean(X)) V_k`` with ``V_k`` the top ``k =
      dims`` right singular vectors of the centred ``X`` (Pearson 1901; Hotelling 1933).
    - ``"incremental_pca"``: ``sklearn.decomposition.IncrementalPCA(n_components=dims,
      batch_size=..., **options)`` fitted by ``partial_fit`` over sample chunks, then
      ``transform`` chunk by chunk (Ross et al. 2008). Out of core: one chunk in memory at a
      time. Exact PCA up to the incremental SVD's truncation after every chunk; on data with a
      clear ``dims``-dimensional structure it finds the same subspace.
    - ``"tsne"``: ``sklearn.manifold.TSNE(n_components=dims, random_state=seed,
      **options).fit_transform(X)`` (van der Maaten & Hinton 2008).
    - ``"umap"``: ``umap.UMAP(n_components=dims, random_state=seed, **options)
      .fit_transform(X)`` (McInnes et al. 2018); needs the optional package umap-learn.
    - ``"pacmap"``: ``pacmap.PaCMAP(n_components=dims, random_state=seed, **options)
      .fit_transform(X)`` (Wang et al. 2021); needs the optional package pacmap.

    Small-sample defaults (each overridable through ``options``), for ``n`` samples:

    - t-SNE: ``perplexity = min(30, (n - 1) / 3)`` (scikit-learn needs ``perplexity < n``; its
      default is 30), and ``method="exact"`` when ``dims > 3`` (Barnes-Hut supports 3 at most).
    - UMAP: ``n_neighbors = min(15, n - 1)`` (UMAP truncates to ``n - 1`` itself, with a
      warning), and ``n_jobs=1`` when ``seed`` is set (UMAP forces it, with a warning).
    - PaCMAP: ``n_neighbors`` = the largest value ``<= 10`` (its default) for which the near,
      mid-near and further pairs fit in ``n`` samples (``n_NB + round(n_NB * MN_ratio) +
      round(n_NB * FP_ratio) < n``); 10 whenever ``n >= 36`` with the default ratios. Below
      that PaCMAP would shrink the pair counts itself, with warnings, and fail below 4 samples.

    A layer whose responses are identical for every sample (all units dead) is projected to 0
    by t-SNE, UMAP and PaCMAP without calling them: their results are undefined there
    (scikit-learn's Barnes-Hut t-SNE crashes the interpreter, PaCMAP divides by zero). PCA
    projects it to 0 too, with an ``explained_variance_ratio`` of NaN (0 / 0). Dead units in
    an otherwise varying layer need nothing special.

    Parameters
    ----------
    responses : xr.DataArray
        Responses ``(sample, unit)`` with a ``layer`` coordinate on ``unit``, or a cube
        ``(sample, transformation, unit)``; numpy- or dask-backed (same results).
    method : {"pca", "incremental_pca", "tsne", "umap", "pacmap"}, default "pca"
        The reduction.
    n_components : int, default 2
        Components per layer (written ``dims`` below): ``1 <= dims <=`` the units of every
        selected layer and ``<=`` the number of samples.
    layers : list of str, optional
        Layers to reduce (default: all, in order of first appearance).
    transformation : None, int or "stack", optional
        How a cube is turned into responses (see ``tmx.introspect.as_responses``).
    seed : int or None, default 0
        ``random_state`` of the estimator (PCA uses it only for its randomised solvers;
        IncrementalPCA is deterministic and takes none). The same seed gives the same result.
    batch_size : int, optional
        Only for ``"incremental_pca"``: rows per ``partial_fit``, ``>= dims``. Default: the
        dask chunks along ``sample`` for dask-backed responses, blocks of ``max(5 * dims,
        1024)`` rows for numpy-backed ones. Pass it to get the same partition, hence the same
        numbers, whatever the backend. Chunks with fewer than ``dims`` rows (IncrementalPCA
        needs ``dims`` rows per ``partial_fit``) are merged into the next one, the last into
        the previous one.
    progress : bool or None, default None
        A progress bar over the layers; None: when run interactively (a terminal, not under
        pytest or CI).
    dims : int
        Deprecated name of ``n_components`` (warns).
    **options
        Further keyword arguments of the estimator's constructor (not ``n_components`` nor
        ``random_state``: use ``n_components`` and ``seed``).

    Returns
    -------
    xr.DataArray
        ``projection`` with dims ``(sample, layer, component)``, float64, in memory: **this
        function computes** (a fit needs the data; dask-backed responses are read as described
        above and give the same numbers). Coordinates: the
        sample coordinates of the responses (``sample``, ``label``, ``source_sample``, ...),
        ``layer`` (str) and ``component`` (0 .. dims - 1); for ``"pca"`` and
        ``"incremental_pca"`` also ``explained_variance_ratio`` (layer, component).
        Attributes ``introspector`` ("reduce"), ``method``, ``n_components``, ``seed``,
        ``tmx_version`` and every option passed to the estimator, defaults included, in the
        one attr encoding (numbers and strings as they are, booleans 0/1, None ``"None"``,
        lists as lists, anything else as a string; an option named like one of these keys is
        stored as ``<method>_<name>``, e.g. ``tsne_method``). ``"incremental_pca"`` records
        ``batch_size``: the rows per block, or ``"dask chunks"``.

    Raises
    ------
    ValueError
        On an unknown method, ``n_components`` not an int in range, an unknown layer, too few
        samples for the method, non-finite responses (naming the layer), a bad ``batch_size``
        or ``batch_size`` with another method, a bad ``seed``, or ``random_state`` in
        ``options``.
    ImportError
        When ``method`` is ``"umap"`` or ``"pacmap"`` and its optional package is missing.

    References
    ----------
    Apple, *Data and Network Introspection Kit (DNIKit)*, "Dimension Reduction", 2021.
    K. Pearson, "On lines and planes of closest fit to systems of points in space",
    *Philosophical Magazine* 2(11), 1901.
    D. Ross, J. Lim, R.-S. Lin, M.-H. Yang, "Incremental learning for robust visual tracking",
    *International Journal of Computer Vision* 77, 2008.
    L. van der Maaten, G. Hinton, "Visualizing data using t-SNE", *JMLR* 9, 2008.
    L. McInnes, J. Healy, J. Melville, "UMAP: Uniform manifold approximation and projection for
    dimension reduction", arXiv:1802.03426, 2018.
    Y. Wang, H. Huang, C. Rudin, Y. Shaposhnik, "Understanding how dimension reduction tools
    work: an empirical approach to deciphering t-SNE, UMAP, TriMap, and PaCMAP for data
    visualization", *JMLR* 22, 2021.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from tmx import introspect
    >>> x = np.array([[0.0, 0.0, 1.0], [2.0, 0.0, 1.0], [4.0, 0.0, 1.0], [6.0, 0.0, 1.0]])
    >>> responses = xr.DataArray(x, dims=("sample", "unit"), coords={"layer": ("unit", ["h"] * 3)})
    >>> out = introspect.reduce(responses, "pca", n_components=1)
    >>> np.abs(out.sel(layer="h", component=0).values)
    array([3., 1., 1., 3.])
    >>> out["explained_variance_ratio"].values
    array([[1.]])
    """
    n_components = _deprecation.renamed("reduce", "dims", "n_components", dims, n_components, 2)
    dims, seed, batch_size = _check_arguments(method, n_components, seed, batch_size, options)
    show = resolve_progress(progress)
    spec = _REGISTRY[method]
    data = _responses(responses, transformation, load=not spec.streamed)
    chosen = select_layers(data, layers)
    positions = _check_sizes(data, chosen, method, dims)
    module = _optional(method)
    n = int(data.shape[0])
    opts = spec.defaults(n, dims, seed, dict(options))
    record = dict(opts)
    blocks: list[slice] = []
    if spec.streamed:
        blocks, opts, record = _incremental_plan(data.data, n, batch_size, dims, opts)
    log.info("reduce: %s to %d components, %d layer(s), %d samples", method, dims, len(chosen), n)
    out, ratios = _reduce_layers(
        data, chosen, positions, spec, dims, seed, opts, module, blocks, show
    )
    return _wrap(data, chosen, out, ratios if spec.ratios else None, method, dims, seed, record)


def _check_arguments(
    method: Any, n_components: Any, seed: Any, batch_size: Any, options: Options
) -> tuple[int, int | None, int | None]:
    """``(dims, seed, batch_size)`` checked, or a ``ValueError`` naming the argument."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of the projection methods {METHODS}; got {method!r}")
    if isinstance(n_components, bool) or not isinstance(n_components, Integral):
        raise ValueError(f"n_components must be an int >= 1; got {n_components!r}")
    dims = int(n_components)
    if dims < 1:
        raise ValueError(f"n_components must be >= 1; got {dims}")
    seed = v.seed(seed, allow_none=True)
    if batch_size is not None:
        if not _REGISTRY[method].streamed:
            raise ValueError(
                f'batch_size is only used by method="incremental_pca"; got method={method!r}'
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, Integral):
            raise ValueError(
                f"batch_size must be None or an int >= n_components; got {batch_size!r}"
            )
        batch_size = int(batch_size)
        if batch_size < dims:
            raise ValueError(f"batch_size must be >= n_components={dims}; got {batch_size}")
    if "random_state" in options:
        raise ValueError("options must not set random_state: the random state is seed=")
    return dims, seed, batch_size


def _check_sizes(
    data: xr.DataArray, chosen: list[str], method: str, dims: int
) -> dict[str, np.ndarray]:
    """Each chosen layer's unit positions, checked to hold ``dims`` units and enough samples."""
    n = int(data.shape[0])
    units = units_by_layer(data)
    positions = {layer: units[layer] for layer in chosen}
    for layer in chosen:
        if dims > positions[layer].size:
            raise ValueError(
                f"n_components={dims} exceeds the {positions[layer].size} units of layer {layer!r}"
            )
    need = _REGISTRY[method].min_samples(dims)
    if n < need:
        raise ValueError(
            f'method="{method}" with n_components={dims} needs at least {need} samples; got {n}'
        )
    return positions


def _incremental_plan(
    data: Any, n: int, batch_size: int | None, dims: int, opts: Options
) -> tuple[list[slice], Options, Options]:
    """The blocks of incremental PCA, its estimator options and the options recorded."""
    blocks = _blocks(data, n, batch_size, dims)
    by_chunks = batch_size is None and isinstance(data, da.Array)
    rows = max(5 * dims, _MIN_BATCH) if batch_size is None else batch_size
    record = {"batch_size": "dask chunks" if by_chunks else rows, **opts}
    return blocks, {**opts, "batch_size": rows}, record  # unused by partial_fit; kept on it


def _reduce_layers(
    data: xr.DataArray,
    chosen: list[str],
    positions: dict[str, np.ndarray],
    spec: _Method,
    dims: int,
    seed: int | None,
    opts: Options,
    module: Any,
    blocks: list[slice],
    show: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """The projections ``(sample, layer, dims)`` and explained variance ratios ``(layer,
    dims)`` (NaN-free only for the PCA methods), one layer at a time."""
    n = int(data.shape[0])
    out = np.empty((n, len(chosen), dims), dtype=np.float64)
    ratios = np.empty((len(chosen), dims), dtype=np.float64)
    columns = {layer: _columns(positions[layer]) for layer in chosen}
    loaded = {} if spec.streamed else _load_once(data.data, columns)
    with steps(len(chosen), show, unit="layer") as bar:
        for j, layer in enumerate(chosen):
            log.debug("reduce: layer %r (%d units)", layer, positions[layer].size)
            if spec.streamed:
                model = IncrementalPCA(n_components=dims, **opts)
                out[:, j] = _incremental(data.data, columns[layer], layer, blocks, model)
                ratios[j] = model.explained_variance_ratio_
                bar.advance()
                continue
            x = loaded.pop(layer) if layer in loaded else load_block(data.data, columns[layer])
            _check_finite(x, layer)
            if spec.constant_to_zero and np.all(x == x[:1]):
                out[:, j] = 0.0
            else:
                assert spec.project is not None  # every method that is not streamed has one
                out[:, j], ratio = spec.project(x, dims, seed, opts, module)
                if ratio is not None:
                    ratios[j] = ratio
            del x
            bar.advance()
    return out, ratios


def _wrap(
    data: xr.DataArray,
    chosen: list[str],
    out: np.ndarray,
    ratios: np.ndarray | None,
    method: str,
    dims: int,
    seed: int | None,
    record: Options,
) -> xr.DataArray:
    """The labeled projection: the responses' sample coordinates, layer, component, attrs."""
    # the responses' sample coordinates and their indexes as they are (no index rebuilt)
    keep = [k for k, var in data.coords.variables.items() if var.dims == ("sample",)]
    variables: dict[str, Any] = {k: data.coords.variables[k] for k in keep}
    variables["layer"] = xr.Variable("layer", np.asarray(chosen, dtype=str))
    variables["component"] = xr.Variable("component", np.arange(dims))
    if ratios is not None:
        variables["explained_variance_ratio"] = xr.Variable(("layer", "component"), ratios)
    indexes = {k: data.xindexes[k] for k in keep if k in data.xindexes}
    for k in ("layer", "component"):
        indexes[k] = xr.indexes.PandasIndex(variables[k].to_index(), k)
    coords = xr.Coordinates(variables, indexes=indexes)
    attrs = provenance("introspector", "reduce", method=method, n_components=dims, seed=seed)
    for key, value in record.items():
        attrs[f"{method}_{key}" if key in _ATTRS else key] = attr_value(value)
    return xr.DataArray(
        out,
        dims=("sample", "layer", "component"),
        coords=coords,
        name="projection",
        attrs=attrs,
    )
