"""Duplicate clusters against planted duplicates and direct numpy / scipy / scikit-learn
computations."""

from __future__ import annotations

import sys
import types
import warnings

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import cdist
from sklearn.neighbors import NearestNeighbors

import tmx
from tmx.introspect.duplicates import duplicate_groups, duplicates

OFFSET = 1000  # sample coordinate values differ from positions


def _planted(n: int, dim: int, seed: int, noise: float = 1e-3) -> tuple[np.ndarray, list[set]]:
    """Gaussian data with two exact pairs, a near pair and a near triple (relative noise)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    x[0] = x[10]
    x[4] = x[13]
    x[1] = x[11] * (1 + noise * rng.normal(size=dim))
    x[2] = x[12] * (1 + noise * rng.normal(size=dim))
    x[3] = x[12] * (1 + noise * rng.normal(size=dim))
    return x, [{0, 10}, {1, 11}, {2, 3, 12}, {4, 13}]


def _array(x: np.ndarray, chunks: tuple | None = None, layer: np.ndarray | None = None):
    n, units = x.shape
    data = x if chunks is None else da.from_array(x, chunks=chunks)
    return xr.DataArray(
        data,
        dims=("sample", "unit"),
        coords={
            "sample": OFFSET + np.arange(n),
            "label": ("sample", np.arange(n) % 3),
            "layer": ("unit", np.full(units, "a") if layer is None else layer),
        },
    )


def _found(ds: xr.Dataset, layer: str) -> list[set]:
    """Clusters of a layer as sets of sample positions."""
    return [set((g - OFFSET).tolist()) for g in duplicate_groups(ds, layer)]


def _normalised(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=0)
    return x / np.where(norms == 0, 1.0, norms)


def _components(n: int, rows: np.ndarray, cols: np.ndarray) -> list[set]:
    """Connected components with >= 2 members of the undirected graph with these edges."""
    graph = coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    groups = [set(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels)]
    return sorted((g for g in groups if len(g) > 1), key=min)


@pytest.mark.parametrize(("seed", "dim"), [(0, 16), (1, 64), (2, 256)])
def test_planted_found_exactly_random_gives_none(seed: int, dim: int) -> None:
    n = 300
    planted, groups = _planted(n, dim, seed)
    noise = np.random.default_rng(seed + 10).normal(size=(n, dim))
    x = np.hstack([planted, noise])
    layer = np.array(["a"] * dim + ["b"] * dim)
    out = duplicates(_array(x, layer=layer))
    assert list(out["layer"].values) == ["a", "b"]
    assert sorted(_found(out, "a"), key=min) == groups
    assert _found(out, "b") == []
    np.testing.assert_array_equal(out["n_clusters"].values, [4, 0])
    assert out["threshold"].sel(layer="b").item() == 0.0  # no gap: exact duplicates only
    assert (out["duplicate_cluster"].sel(layer="b").values == -1).all()
    # padding of the layer without clusters
    np.testing.assert_array_equal(out["cluster_size"].sel(layer="b").values, [0] * 4)
    assert np.isnan(out["cluster_mean"].sel(layer="b").values).all()
    assert np.isnan(out["cluster_std"].sel(layer="b").values).all()
    np.testing.assert_array_equal(out["cluster"].values, np.arange(4))
    np.testing.assert_array_equal(out["label"].values, np.arange(n) % 3)
    assert out["duplicate_cluster"].dims == ("sample", "layer")
    assert out["duplicate_cluster"].dtype == np.int64
    assert out["cluster_size"].dtype == np.int64
    assert out.attrs == {
        "threshold_method": "slope",
        "percentile": "None",
        "sensitivity": 5.0,
        "k": 10,
        "index": "exact",
        "normalize": 1,
        "seed": 0,
        "introspector": "duplicates",
        "tmx_version": tmx.__version__,
    }

    lazy = duplicates(_array(x, chunks=((50, 113, 7, 130), (5, dim, dim - 5)), layer=layer))
    xr.testing.assert_identical(out, lazy)
    only_a = duplicates(_array(x, layer=layer), layers=["a"])
    xr.testing.assert_identical(only_a, out.sel(layer=["a"]))


def test_slope_threshold_is_the_gap_midpoint() -> None:
    x, groups = _planted(400, 32, 3)
    out = duplicates(_array(x))
    z = _normalised(x)
    ind = NearestNeighbors(n_neighbors=10).fit(z).kneighbors(return_distance=False)
    dist = np.sort(np.linalg.norm(z[:, None, :] - z[ind], axis=2).ravel())
    below = dist[dist <= out["threshold"].item()]
    lo, hi = below.max(), dist[below.size]
    assert hi >= 5 * lo  # a real gap
    np.testing.assert_allclose(out["threshold"].item(), np.sqrt(lo * hi), rtol=1e-9)
    assert hi > 0.5 * np.median(dist)  # the gap ends at the bulk
    # a stricter sensitivity than the gap leaves only the exact duplicates
    strict = duplicates(_array(x), sensitivity=hi / lo * 1.01)
    assert strict["threshold"].item() == 0.0
    assert sorted(_found(strict, "a"), key=min) == [groups[0], groups[3]]
    assert strict.attrs["sensitivity"] == pytest.approx(hi / lo * 1.01)


def test_near_duplicates_across_seeds_and_sizes() -> None:
    for seed, n, dim in [(4, 200, 16), (5, 1000, 64), (6, 2000, 16)]:
        x, groups = _planted(n, dim, seed, noise=1e-2)
        assert sorted(_found(duplicates(_array(x)), "a"), key=min) == groups
        rand = np.random.default_rng(seed).normal(size=(n, dim))
        assert duplicates(_array(rand))["n_clusters"].item() == 0


def test_outliers_are_not_duplicates() -> None:
    # Outliers make a gap above the bulk of the distances; only gaps below the median count.
    for normalize in (True, False):
        x = np.random.default_rng(17).normal(size=(200, 16))
        x[:3] *= 1000.0
        assert duplicates(_array(x), normalize=normalize)["n_clusters"].item() == 0
        x[3] = x[40]
        out = duplicates(_array(x), normalize=normalize)
        assert _found(out, "a") == [{3, 40}]


def test_cluster_statistics_match_numpy() -> None:
    x, _ = _planted(200, 24, 7, noise=0.05)
    x[5] = x[20] * 1.0001  # a near pair whose members are also exact
    x[6] = x[20]
    x[21] = x[22] = x[23]  # an exact triple
    for normalize in (True, False):
        out = duplicates(_array(x), normalize=normalize)
        z = _normalised(x) if normalize else x
        groups = duplicate_groups(out, "a")
        assert len(groups) == out["n_clusters"].item() == 6
        means = []
        for c, members in enumerate(groups):
            pos = members - OFFSET
            d = np.linalg.norm(z[pos] - z[pos].mean(axis=0), axis=1)
            assert out["cluster_size"].values[0, c] == pos.size
            np.testing.assert_allclose(out["cluster_mean"].values[0, c], d.mean(), atol=1e-12)
            np.testing.assert_allclose(out["cluster_std"].values[0, c], d.std(), atol=1e-12)
            means.append((round(d.mean(), 10), pos.min()))
            np.testing.assert_array_equal(out["duplicate_cluster"].values[pos, 0], c)
        assert means == sorted(means)  # by mean, ties (the exact clusters) by first member
        assert means[0][0] == means[1][0] == means[2][0] == 0.0
        assert (out["duplicate_cluster"].values >= 0).sum() == sum(g.size for g in groups)


def test_dead_column_gives_no_nan_and_same_clusters() -> None:
    x, groups = _planted(250, 20, 8)
    dead = np.hstack([x[:, :7], np.zeros((250, 1)), x[:, 7:]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with_dead = duplicates(_array(dead))
    plain = duplicates(_array(x))
    assert sorted(_found(with_dead, "a"), key=min) == groups
    np.testing.assert_array_equal(
        with_dead["duplicate_cluster"].values, plain["duplicate_cluster"].values
    )
    np.testing.assert_allclose(with_dead["threshold"].values, plain["threshold"].values)
    np.testing.assert_allclose(with_dead["cluster_mean"].values, plain["cluster_mean"].values)
    assert not np.isnan(with_dead["cluster_std"].values).any()


@pytest.mark.parametrize("normalize", [True, False])
def test_distance_threshold_matches_brute_force(normalize: bool) -> None:
    rng = np.random.default_rng(9)
    n = 80
    x = rng.normal(size=(n, 5)) * np.array([1.0, 3.0, 0.5, 10.0, 2.0])
    z = _normalised(x) if normalize else x
    pair = cdist(z, z)
    np.fill_diagonal(pair, np.inf)
    t = float(np.quantile(pair.min(axis=1), 0.6))  # links chains of several samples
    rows, cols = np.nonzero(pair <= t)
    expected = _components(n, rows, cols)
    assert max(len(g) for g in expected) >= 3
    out = duplicates(_array(x), threshold=t, k=n - 1, normalize=normalize)
    assert sorted(_found(out, "a"), key=min) == expected
    assert out["threshold"].item() == t
    assert out.attrs["threshold_method"] == "distance"
    assert out.attrs["normalize"] == int(normalize)
    assert type(out.attrs["normalize"]) is int  # 0/1, not a bool
    # k is clipped to n - 1
    xr.testing.assert_identical(
        duplicates(_array(x), threshold=t, k=10 * n, normalize=normalize).drop_attrs(),
        out.drop_attrs(),
    )


def test_percentile_threshold() -> None:
    x, _ = _planted(150, 12, 10)
    z = _normalised(x)
    dist, ind = NearestNeighbors(n_neighbors=6, algorithm="kd_tree").fit(z).kneighbors()
    for p in (98.5, 90.0, 50.0):
        out = duplicates(_array(x), threshold=("percentile", p), k=6)
        t = np.percentile(dist, 100 - p)
        np.testing.assert_allclose(out["threshold"].item(), t, rtol=1e-12, atol=1e-15)
        linked = dist <= t
        rows = np.repeat(np.arange(150), 6)[linked.ravel()]
        expected = _components(150, rows, ind.ravel()[linked.ravel()])
        assert sorted(_found(out, "a"), key=min) == expected
        assert out.attrs["threshold_method"] == "percentile"
        assert out.attrs["percentile"] == p


def _fake_pynndescent(calls: list) -> types.ModuleType:
    """A stand-in pynndescent: exact neighbours with the sample itself in the last column (or,
    for one row, missing), and one failed (-1) far neighbour."""

    class NNDescent:
        def __init__(self, data, n_neighbors, metric, random_state, n_jobs):
            calls.append((n_neighbors, metric, random_state, n_jobs))
            full = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(data).kneighbors(data)[1]
            ind = np.empty((len(full), n_neighbors), dtype=np.int64)
            for i, row in enumerate(full):
                others = row[row != i]
                # row 7 lacks itself; every other row has itself last
                ind[i] = others[:n_neighbors] if i == 7 else [*others[: n_neighbors - 1], i]
            ind[-1, -2] = -1
            self.neighbor_graph = (ind, np.zeros(ind.shape, dtype=np.float32))

    module = types.ModuleType("pynndescent")
    module.NNDescent = NNDescent  # type: ignore[attr-defined]
    return module


def test_approximate_index_wrapper(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list = []
    monkeypatch.setitem(sys.modules, "pynndescent", _fake_pynndescent(calls))
    x, groups = _planted(200, 16, 11)
    out = duplicates(_array(x), index="approximate", seed=3)
    assert calls == [(11, "euclidean", 3, 1)]
    assert sorted(_found(out, "a"), key=min) == groups
    exact = duplicates(_array(x), seed=3)
    xr.testing.assert_identical(out.drop_attrs(), exact.drop_attrs())
    assert out.attrs["index"] == "approximate"


def test_approximate_rows_without_themselves_and_missing_neighbours(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What an approximate index may return: a row whose list lacks the row itself (its exact
    copy, at distance 0, stands in its place) and -1 where no neighbour was found (pynndescent
    pads with -1). pynndescent 0.7 always lists each row first, so a stand-in index gives
    both: the row's own index is dropped, else its farthest neighbour; -1 links nothing."""
    rng = np.random.default_rng(21)
    x = rng.normal(size=(8, 3))
    x[1] = x[0]  # an exact copy
    x[7] = x[5] + 1e-3  # a near copy that the index misses (7 is also the last row: x[-1])
    graph = np.array(
        [
            [1, 2, 3],  # 0 lacks itself: keep its copy 1, drop its farthest listed (3)
            [1, 3, 4],  # 1 lists itself but not its copy 0: the link 0-1 is row 0's only
            [2, 3, 4],
            [3, 2, 4],
            [4, 2, 3],
            [5, -1, -1],  # 5 found no neighbour: -1 is not the last row (its near copy 7)
            [6, 2, 3],
            [7, 4, -1],
        ]
    )
    calls = []

    class StandIn:
        def __init__(self, data, *, n_neighbors, metric, random_state, n_jobs):
            calls.append((data.shape, n_neighbors, metric, random_state))
            self.neighbor_graph = (graph.copy(), None)

    fake = types.ModuleType("pynndescent")
    fake.NNDescent = StandIn  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynndescent", fake)
    resp = _array(x)
    out = duplicates(resp, k=2, index="approximate", threshold=0.01, normalize=False, seed=4)
    assert calls == [((8, 3), 3, "euclidean", 4)]  # k + 1 neighbours: each row and k others
    assert _found(out, "a") == [{0, 1}]
    assert out["cluster_size"].values.tolist() == [[2]]
    np.testing.assert_array_equal(out["cluster_mean"].values, [[0.0]])  # exact copies
    # the distances a percentile threshold reads: the kept neighbours' (row 0 keeps 1 and 2;
    # the others drop their own column); a missing one (-1) has none
    kept = np.vstack([graph[0, :2], graph[1:, 1:]])
    d = np.linalg.norm(x[kept] - x[:, None, :], axis=-1)[kept >= 0]
    assert d.size == 13
    pct = duplicates(resp, k=2, index="approximate", threshold=("percentile", 75), normalize=False)
    np.testing.assert_allclose(pct["threshold"].values, [np.percentile(d, 25)])
    # the control: the exact index finds the near pair the stand-in missed
    exact = duplicates(resp, k=2, threshold=0.01, normalize=False)
    assert _found(exact, "a") == [{0, 1}, {5, 7}]


def test_approximate_index_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynndescent", None)
    x, _ = _planted(50, 4, 12)
    with pytest.raises(ImportError, match=r'pip install "tmx-measures\[approx\]"'):
        duplicates(_array(x), index="approximate")


def test_approximate_index_pynndescent() -> None:
    """The real index (a test extra); numba compiles it on first use (~45 s per fresh venv)."""
    pytest.importorskip("pynndescent")
    x, groups = _planted(500, 64, 13)
    out = duplicates(_array(x), index="approximate")
    assert sorted(_found(out, "a"), key=min) == groups
    xr.testing.assert_identical(out, duplicates(_array(x), index="approximate"))
    rand = np.random.default_rng(13).normal(size=(500, 64))
    assert duplicates(_array(rand), index="approximate")["n_clusters"].item() == 0


def test_stacked_cube_identity_transformations() -> None:
    rng = np.random.default_rng(14)
    base = rng.normal(size=(30, 8))
    other = rng.normal(size=(30, 8))
    cube = tmx.from_array(
        {"a": np.stack([base, other, base], axis=1)}, sample=OFFSET + np.arange(30)
    )
    out = duplicates(cube, transformation="stack")
    assert out.sizes["sample"] == 90
    assert out["n_clusters"].item() == 30
    src_s = out["source_sample"].values
    src_t = out["source_transformation"].values
    for members in duplicate_groups(out, "a"):
        assert len(set(src_s[members])) == 1
        assert sorted(src_t[members]) == [0, 2]
    assert (out["duplicate_cluster"].values[src_t == 1] == -1).all()
    assert np.all(out["cluster_mean"].values == 0)


def test_small_inputs() -> None:
    same = duplicates(_array(np.ones((2, 3))))
    assert same["n_clusters"].item() == 1
    np.testing.assert_array_equal(same["duplicate_cluster"].values[:, 0], [0, 0])
    differ = duplicates(_array(np.array([[1.0, 0.0], [0.0, 1.0]])))
    assert differ["n_clusters"].item() == 0
    assert differ.sizes["cluster"] == 0
    assert duplicate_groups(differ, "a") == []
    three = duplicates(_array(np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.001]])), k=1)
    assert [g.tolist() for g in duplicate_groups(three, "a")] == [[OFFSET, OFFSET + 1]]


def test_duplicate_groups_without_sample_coordinate() -> None:
    x, groups = _planted(120, 10, 15)
    arr = xr.DataArray(x, dims=("sample", "unit"))
    out = duplicates(arr)
    assert list(out["layer"].values) == ["responses"]
    found = duplicate_groups(out, "responses")
    assert sorted((set(g.tolist()) for g in found), key=min) == groups
    for c, g in enumerate(found):
        np.testing.assert_array_equal(np.flatnonzero(out["duplicate_cluster"].values[:, 0] == c), g)


def test_errors() -> None:
    x, _ = _planted(40, 6, 16)
    arr = _array(x)
    for bad in ("elbow", ("percentile", 0), ("percentile", 100), ("pct", 5), -1.0, np.inf, True):
        with pytest.raises(ValueError, match="threshold"):
            duplicates(arr, threshold=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sensitivity"):
        duplicates(arr, sensitivity=2)
    with pytest.raises(ValueError, match="sensitivity"):
        duplicates(arr, sensitivity="5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must"):
        duplicates(arr, k=0)
    with pytest.raises(ValueError, match="k must"):
        duplicates(arr, k=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="index"):
        duplicates(arr, index="annoy")
    with pytest.raises(ValueError, match="unknown layers"):
        duplicates(arr, layers=["zzz"])
    with pytest.raises(ValueError, match="at least 2 samples"):
        duplicates(arr.isel(sample=[0]))
    bad_x = x.copy()
    bad_x[3, 4] = np.nan
    layer = np.array(["a"] * 3 + ["b"] * 3)
    with pytest.raises(ValueError, match="layer 'b' has non-finite"):
        duplicates(_array(bad_x, layer=layer))
    assert duplicates(_array(bad_x, layer=layer), layers=["a"])["n_clusters"].item() >= 2
    with pytest.raises(ValueError, match="unknown layer 'b'"):
        duplicate_groups(duplicates(arr), "b")
