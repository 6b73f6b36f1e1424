"""Duplicates: clusters of (near-)identical samples in each layer's response space.

A vectorised re-implementation of DNIKit's Duplicates introspector (Apple, *Data and Network
Introspection Kit*, 2021): per layer, every sample's k nearest neighbours are found, the
neighbour pairs closer than a distance threshold are linked, and the connected components of
that graph with two or more members are reported as duplicate clusters.

Memory: nearest-neighbour search needs the data, so each layer's responses are loaded in full,
one layer at a time, as one float64 copy (``n_samples × n_layer_units × 8`` bytes, normalised
in place), together with the ``n_samples × k`` neighbour indices and distances.
"""

from __future__ import annotations

import logging
from numbers import Real
from typing import Any

import numpy as np
import xarray as xr
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.neighbors import NearestNeighbors

from .. import _validate as v
from .._progress import resolve as resolve_progress
from .._progress import steps
from .._provenance import provenance
from .._schema import as_responses, layer_positions, select_layers
from .._validate import str_array
from ._common import load_block

__all__ = ["duplicate_groups", "duplicates"]

log = logging.getLogger("tmx")

_INDEXES = ("exact", "approximate")
_APPROX_HINT = (
    'index="approximate" needs the optional package pynndescent: pip install "tmx-measures[approx]"'
)
# Rows per block when distances to the neighbours are recomputed (bounds the temporary array).
_DISTANCE_BLOCK_VALUES = 1 << 22


def _parse_threshold(threshold: Any) -> tuple[str, float]:
    """``(method, value)``: ("slope", nan), ("percentile", p) or ("distance", d)."""
    if isinstance(threshold, str):
        if threshold == "slope":
            return "slope", float("nan")
        raise ValueError(
            f'threshold must be "slope", ("percentile", p) with 0 < p < 100, or a distance '
            f">= 0; got {threshold!r}"
        )
    if isinstance(threshold, tuple | list):
        if len(threshold) != 2 or not (
            isinstance(threshold[0], str) and threshold[0] == "percentile"
        ):
            raise ValueError(
                f'threshold as a pair must be ("percentile", p) with 0 < p < 100; got {threshold!r}'
            )
        p = threshold[1]
        if isinstance(p, bool) or not isinstance(p, Real) or not 0 < float(p) < 100:
            raise ValueError(f'threshold=("percentile", p) needs 0 < p < 100; got p={p!r}')
        return "percentile", float(p)
    if isinstance(threshold, bool) or not isinstance(threshold, Real):
        raise ValueError(
            f'threshold must be "slope", ("percentile", p) or a distance >= 0; got {threshold!r}'
        )
    value = float(threshold)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"threshold as a distance must be finite and >= 0; got {threshold!r}")
    return "distance", value


def _normalise_columns(x: np.ndarray) -> None:
    """Divide each column by its L2 norm over the samples, in place; all-zero columns stay zero.

    The norm is taken of the column scaled by its largest magnitude, so that it cannot
    overflow or underflow."""
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    x /= scale
    norms = np.sqrt(np.einsum("ij,ij->j", x, x))
    norms[norms == 0] = 1.0
    x /= norms


def _neighbours_exact(x: np.ndarray, k: int) -> np.ndarray:
    """``(n, k)`` indices of each sample's k nearest other samples (itself excluded by index)."""
    return NearestNeighbors(n_neighbors=k).fit(x).kneighbors(return_distance=False)


def _neighbours_approximate(x: np.ndarray, k: int, seed: int | None) -> np.ndarray:
    """``(n, k)`` approximate neighbour indices from NN-descent; -1 where none was found."""
    try:
        from pynndescent import NNDescent
    except ImportError as err:
        raise ImportError(_APPROX_HINT) from err
    graph = NNDescent(x, n_neighbors=k + 1, metric="euclidean", random_state=seed, n_jobs=1)
    ind = np.asarray(graph.neighbor_graph[0], dtype=np.int64)
    return _drop_self(ind)


def _drop_self(ind: np.ndarray) -> np.ndarray:
    """Remove each row's own index from ``(n, k + 1)`` neighbour indices (the last column of
    rows where it is absent), giving ``(n, k)``. Exact duplicates keep each other."""
    n, width = ind.shape
    is_self = ind == np.arange(n)[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    # Keep one removal per row even if an index were repeated.
    first = np.argmax(is_self, axis=1)
    drop = np.zeros_like(is_self)
    drop[np.arange(n), first] = True
    return ind[~drop].reshape(n, width - 1)


def _neighbour_distances(x: np.ndarray, ind: np.ndarray) -> np.ndarray:
    """Euclidean distances ``||x_i - x_ind[i, j]||`` computed directly (exact zeros for exact
    duplicates), in row blocks; ``inf`` where the index is -1."""
    n, k = ind.shape
    out = np.full((n, k), np.inf)
    valid = ind >= 0
    safe = np.where(valid, ind, 0)
    rows = max(1, _DISTANCE_BLOCK_VALUES // max(1, k * x.shape[1]))
    for start in range(0, n, rows):
        sl = slice(start, min(n, start + rows))
        diff = x[safe[sl]] - x[sl][:, None, :]
        out[sl] = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
    out[~valid] = np.inf
    return out


def _slope_threshold(distances: np.ndarray, sensitivity: float) -> float:
    """Distance threshold at the highest jump by a factor ``>= sensitivity`` among the sorted
    positive distances in the lower half; 0.0 (exact duplicates only) when there is none."""
    d = np.sort(distances)
    if d.size == 0:
        return 0.0
    median = float(np.median(d))
    low = d[(d > 0) & (d <= median)]
    if low.size < 2:
        return 0.0
    jumps = np.flatnonzero(low[1:] >= sensitivity * low[:-1])
    if jumps.size == 0:
        return 0.0
    i = int(jumps[-1])
    return float(np.sqrt(low[i] * low[i + 1]))


def _clusters(
    x: np.ndarray, ind: np.ndarray, dist: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cluster id per sample (-1 outside clusters) and per-cluster size, mean and std of the
    members' distances to the cluster centroid; clusters ordered by mean, then first member."""
    n = x.shape[0]
    linked = (dist <= threshold) & (ind >= 0)
    rows = np.broadcast_to(np.arange(n)[:, None], ind.shape)[linked]
    cols = ind[linked]
    graph = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=False)
    size_of = np.bincount(labels)
    members = np.flatnonzero(size_of[labels] >= 2)
    cluster = np.full(n, -1, dtype=np.int64)
    if members.size == 0:
        empty = np.empty(0)
        return cluster, np.empty(0, dtype=np.int64), empty, empty

    _, first_pos, member_comp = np.unique(labels[members], return_index=True, return_inverse=True)
    member_comp = member_comp.ravel()
    first_member = members[first_pos]
    m = first_member.size
    counts = np.bincount(member_comp, minlength=m)
    # Centroid as first member + mean offset: exact duplicates give exactly zero distances.
    offsets = x[members] - x[first_member][member_comp]
    weights = coo_matrix(
        (np.ones(members.size), (member_comp, np.arange(members.size))), shape=(m, members.size)
    ).tocsr()
    mean_offset = np.asarray(weights @ offsets) / counts[:, None]
    resid = offsets - mean_offset[member_comp]
    to_centroid = np.sqrt(np.einsum("ij,ij->i", resid, resid))
    mean = np.bincount(member_comp, to_centroid, minlength=m) / counts
    var = np.bincount(member_comp, (to_centroid - mean[member_comp]) ** 2, minlength=m) / counts
    std = np.sqrt(var)

    order = np.lexsort((first_member, mean))
    rank = np.empty(m, dtype=np.int64)
    rank[order] = np.arange(m)
    cluster[members] = rank[member_comp]
    return cluster, counts[order].astype(np.int64), mean[order], std[order]


def _layer(resp: xr.DataArray, layer: str, normalize: bool) -> np.ndarray:
    """One layer's responses as a float64 copy, checked finite and normalised (step 1)."""
    x = load_block(resp.data, layer_positions(resp, layer))
    if not x.flags.owndata:  # a view of the caller's array: normalised in place below
        x = x.copy()
    if not np.isfinite(x).all():
        raise ValueError(f"layer {layer!r} has non-finite responses (NaN or inf)")
    if normalize:
        _normalise_columns(x)
    return x


def _threshold(dist: np.ndarray, method: str, value: float, sensitivity: float) -> float:
    """The distance threshold of step 3 from the finite neighbour distances."""
    finite = dist[np.isfinite(dist)]
    if method == "slope":
        return _slope_threshold(finite, sensitivity)
    if method == "percentile":
        return float(np.percentile(finite, 100.0 - value)) if finite.size else 0.0
    return value


def duplicates(
    responses: Any,
    *,
    threshold: str | tuple[str, float] | float = "slope",
    sensitivity: float = 5,
    k: int = 10,
    index: str = "exact",
    normalize: bool = True,
    layers: list[str] | None = None,
    transformation: Any = None,
    seed: int | None = 0,
    progress: bool | None = None,
) -> xr.Dataset:
    """Per-layer clusters of duplicate and near-duplicate samples.

    For each layer, with ``X`` its ``(n, units)`` responses:

    1. When ``normalize``, every column is divided by its L2 norm over the samples,
       ``X[:, u] / ||X[:, u]||₂``, so that no unit dominates the distances; an all-zero (dead)
       column stays zero.
    2. Each sample's ``k`` nearest other samples (Euclidean) are found — the sample itself is
       excluded by index, so an exact copy stays a neighbour at distance 0 — and their
       distances ``d_ij = ||x_i − x_j||₂`` are recomputed directly from the data.
    3. A distance threshold ``t`` is chosen from the ``n·k`` neighbour distances (see
       ``threshold``); neighbour pairs with ``d_ij ≤ t`` are linked, and the connected
       components with two or more samples are the duplicate clusters.
    4. For each cluster ``C`` with centroid ``c = mean_{i∈C} x_i``: its size, and the mean and
       (population) standard deviation of ``||x_i − c||₂`` over its members, in the space of
       step 2 (normalised when ``normalize``). Clusters are numbered ``0, 1, …`` per layer
       by increasing mean distance to the centroid, ties by smallest member position.

    Default threshold (``"slope"``): DNIKit's Slope strategy looks for the elbow of the sorted
    neighbour distances with a sliding window and always returns some distance, so on data
    without duplicates it still reports the closest pairs. Here the elbow is required to be a
    real gap. Duplicates form a separate population of distances far below the bulk of the
    neighbour distances, while in data without duplicates the sorted distances rise
    continuously: consecutive sorted distances below the median differ by a few percent at
    16 or more dimensions and by less than a factor 3 even in 4 dimensions (Gaussian, ReLU,
    heavy-tailed and low-rank data, 200–2000 samples). So among the sorted positive
    distances ``d_(1) ≤ d_(2) ≤ …`` that are ``≤`` the median neighbour distance, the jumps
    ``d_(i+1) ≥ sensitivity · d_(i)`` are found, and the threshold is placed in the middle
    (geometrically) of the highest such jump, ``t = sqrt(d_(i) · d_(i+1))``. Without such a
    jump ``t = 0``: only exact duplicates are linked. The rule thus finds a group of distances
    at least ``sensitivity`` times smaller than everything above it up to the median; near
    duplicates closer to the bulk than that (or a layer in which most neighbour distances are
    duplicate distances, so that the median itself is one) need a ``("percentile", p)`` or
    absolute threshold.

    Parameters
    ----------
    responses : xr.DataArray
        Responses ``(sample, unit)`` with a ``layer`` coordinate, or a cube
        ``(sample, transformation, unit)``; numpy- or dask-backed (same results). Each
        layer is loaded in full, as float64, while it is analysed.
    threshold : "slope", ("percentile", p) or float, default "slope"
        ``"slope"``: the gap rule above. ``("percentile", p)`` with ``0 < p < 100``: the
        distance below which ``100 − p`` percent of the ``n·k`` neighbour distances lie,
        ``np.percentile(d, 100 − p)`` (linear interpolation; zeros are kept), so that
        ``p = 98.5`` links about the closest 1.5 % of neighbour pairs. A float ``>= 0``: that
        distance, in the space of step 2.
    sensitivity : float, default 5
        For ``"slope"``: the factor ``>= 3`` by which the duplicate distances must lie below
        the next larger distance. Larger: fewer samples are considered duplicates; below 3,
        gaps that occur by chance in low-dimensional data would count.
    k : int, default 10
        Neighbours per sample, ``>= 1``; clipped to ``n − 1``. Links are made along these
        neighbour pairs only, so a group of more than ``k + 1`` copies is one cluster when
        chains of neighbours connect it (as they do in practice: 30 exact copies and 40 near
        copies among 300 samples are each found whole with ``k = 10``).
    index : {"exact", "approximate"}, default "exact"
        ``"exact"``: ``sklearn.neighbors.NearestNeighbors``. ``"approximate"``:
        ``pynndescent.NNDescent`` (NN-descent, Dong et al. 2011; optional dependency,
        single-threaded, seeded with ``seed``), for large sample counts.
    normalize : bool, default True
        Divide each column by its L2 norm (step 1).
    layers : list of str, optional
        Layers to analyse (default: all, in order of first appearance).
    transformation : None, int or "stack", optional
        How cubes are turned into responses (see ``tmx.introspect.as_responses``).
        With ``"stack"`` each (sample, transformation) row is a sample, so responses that a
        transformation leaves unchanged show up as duplicates of each other.
    seed : int or None, default 0
        ``random_state`` of the approximate index (unused by the exact one).
    progress : bool or None, default None
        A progress bar over the layers; None: when run interactively (a terminal, not under
        pytest or CI).

    Returns
    -------
    xr.Dataset
        ``duplicate_cluster`` (sample, layer) int64: the sample's cluster in that layer, −1
        when it is in none. ``cluster_size`` (layer, cluster) int64, ``cluster_mean`` and
        ``cluster_std`` (layer, cluster) float64: members, and mean / std of the members'
        distances to the centroid; padded with 0 / NaN beyond a layer's ``n_clusters``.
        ``n_clusters`` (layer) int64 and ``threshold`` (layer) float64, the distance threshold
        used. Coordinates: the sample coordinates of ``responses`` (``sample``, ``label``, …),
        ``layer`` and ``cluster`` (``0 … max n_clusters − 1``). Attributes ``introspector``
        ("duplicates"), ``threshold_method`` ("slope", "percentile" or "distance"),
        ``percentile`` (``"None"`` unless percentile), ``sensitivity``, ``k`` (as requested),
        ``index``, ``normalize`` (0/1), ``seed`` (``"None"`` when unset), ``tmx_version``.
        ``duplicate_groups`` lists the members per cluster.
        **Computes**: nearest neighbours and connected components need the data, so the
        result is in memory whatever the responses' backend (dask-backed ones give the same
        numbers).

    Raises
    ------
    ValueError
        On an invalid ``threshold``, ``sensitivity < 3``, ``k < 1``, an unknown ``index``, an
        unknown layer, fewer than 2 samples, or non-finite responses in a layer (naming it).
    ImportError
        For ``index="approximate"`` without pynndescent installed.

    Notes
    -----
    Differences from DNIKit: a dead column stays zero instead of becoming NaN; the sample is
    excluded from its neighbours by index, and zero distances are kept (DNIKit trims them, and
    with them the distances of exact duplicates, from the distances the threshold is chosen
    from); the default threshold needs a gap (above) and is defined for any number of
    distances (DNIKit's Slope can index past the end of its array); DNIKit's Percentile takes
    the element at position ``len − int(p / 100 · len)`` of the sorted, zero-trimmed
    distances, here it is the interpolated ``(100 − p)``-th percentile; the nearest neighbours are
    exact by default (DNIKit uses Annoy) and the clusters are connected components of the
    neighbour graph; DNIKit's per-cluster PCA ordering and projections are left out.

    References
    ----------
    Apple, *Data and Network Introspection Kit (DNIKit)*, "Duplicates", 2021.
    W. Dong, M. Charikar, K. Li, "Efficient k-nearest neighbor graph construction for generic
    similarity measures", *WWW*, 2011.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from tmx import introspect
    >>> x = np.array([[0.0, 1.0], [5.0, 2.0], [0.0, 1.0], [3.0, 7.0], [9.0, 4.0]])
    >>> responses = xr.DataArray(x, dims=("sample", "unit"), coords={"layer": ("unit", ["h"] * 2)})
    >>> out = introspect.duplicates(responses, k=2)
    >>> out["duplicate_cluster"].sel(layer="h").values
    array([ 0, -1,  0, -1, -1])
    >>> introspect.duplicate_groups(out, "h")
    [array([0, 2])]
    """
    method, value = _parse_threshold(threshold)
    if isinstance(sensitivity, bool) or not isinstance(sensitivity, Real):
        raise ValueError(f"sensitivity must be a number >= 3; got {sensitivity!r}")
    if not (np.isfinite(float(sensitivity)) and float(sensitivity) >= 3):
        raise ValueError(f"sensitivity must be a finite number >= 3; got {sensitivity!r}")
    sensitivity = float(sensitivity)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an int >= 1; got {k!r}")
    k = int(k)
    v.choice(index, "index", _INDEXES)
    seed = v.seed(seed, allow_none=True)
    normalize = v.flag(normalize, "normalize")
    show = resolve_progress(progress)

    resp = as_responses(responses, transformation=transformation)
    chosen = select_layers(resp, layers)
    n = resp.sizes["sample"]
    if n < 2:
        raise ValueError(f"responses need at least 2 samples to have duplicates; got {n}")
    k_eff = min(k, n - 1)

    cluster_of = np.full((n, len(chosen)), -1, dtype=np.int64)
    thresholds = np.empty(len(chosen))
    stats: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    log.info("duplicates: %d layer(s), %d samples, k = %d (%s)", len(chosen), n, k_eff, index)
    with steps(len(chosen), show, unit="layer") as bar:
        for j, layer in enumerate(chosen):
            x = _layer(resp, layer, normalize)
            ind = (
                _neighbours_exact(x, k_eff)
                if index == "exact"
                else _neighbours_approximate(x, k_eff, seed)
            )
            dist = _neighbour_distances(x, ind)
            t = _threshold(dist, method, value, sensitivity)
            thresholds[j] = t
            cluster_of[:, j], size, mean, std = _clusters(x, ind, dist, t)
            stats.append((size, mean, std))
            log.debug("duplicates: layer %r: threshold %.4g, %d cluster(s)", layer, t, size.size)
            del x, ind, dist
            bar.advance()

    width = max((s[0].size for s in stats), default=0)
    size_all = np.zeros((len(chosen), width), dtype=np.int64)
    mean_all = np.full((len(chosen), width), np.nan)
    std_all = np.full((len(chosen), width), np.nan)
    for j, (size, mean, std) in enumerate(stats):
        size_all[j, : size.size] = size
        mean_all[j, : mean.size] = mean
        std_all[j, : std.size] = std

    sample_coords = {c: v.variable for c, v in resp.coords.items() if v.dims == ("sample",)}
    return xr.Dataset(
        {
            "duplicate_cluster": (("sample", "layer"), cluster_of),
            "cluster_size": (("layer", "cluster"), size_all),
            "cluster_mean": (("layer", "cluster"), mean_all),
            "cluster_std": (("layer", "cluster"), std_all),
            "n_clusters": ("layer", np.array([s[0].size for s in stats], dtype=np.int64)),
            "threshold": ("layer", thresholds),
        },
        coords={
            **sample_coords,
            "layer": np.asarray(chosen, dtype=str),
            "cluster": np.arange(width, dtype=np.int64),
        },
        attrs=provenance(
            "introspector",
            "duplicates",
            threshold_method=method,
            percentile=value if method == "percentile" else None,
            sensitivity=sensitivity,
            k=k,
            index=index,
            normalize=normalize,
            seed=seed,
        ),
    )


def duplicate_groups(result: xr.Dataset, layer: str) -> list[np.ndarray]:
    """Members of each duplicate cluster of one layer, in cluster order.

    Parameters
    ----------
    result : xr.Dataset
        The output of :func:`duplicates`.
    layer : str
        One of its layers.

    Returns
    -------
    list of np.ndarray
        For cluster ``0, 1, …``, the ``sample`` coordinate values of its members, in sample
        order (positions ``0 … n − 1`` when there is no ``sample`` coordinate) — DNIKit's
        list-of-indices view of the clusters.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from tmx import introspect
    >>> x = np.array([[1.0, 0.0], [4.0, 4.0], [1.0, 0.0], [9.0, 1.0], [4.0, 4.0], [0.0, 7.0]])
    >>> responses = xr.DataArray(
    ...     x, dims=("sample", "unit"), coords={"sample": [10, 11, 12, 13, 14, 15]}
    ... )
    >>> introspect.duplicate_groups(introspect.duplicates(responses, k=2), "responses")
    [array([10, 12]), array([11, 14])]
    """
    names = str_array(result["layer"].values).tolist()
    if str(layer) not in names:
        raise ValueError(f"unknown layer {layer!r}; the result has {names}")
    j = names.index(str(layer))
    labels = np.asarray(result["duplicate_cluster"].values)[:, j]
    n_clusters = int(result["n_clusters"].values[j])
    if "sample" in result.coords:
        samples = np.asarray(result["sample"].values)
    else:
        samples = np.arange(labels.size)
    members = np.flatnonzero(labels >= 0)
    members = members[np.argsort(labels[members], kind="stable")]
    counts = np.bincount(labels[members], minlength=n_clusters)
    return np.split(samples[members], np.cumsum(counts)[:-1]) if n_clusters else []
