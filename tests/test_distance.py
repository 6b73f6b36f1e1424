"""Distance family (TD, SD, ND): brute force, degenerate units, laziness, chunking, errors."""

from __future__ import annotations

import threading

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scipy.spatial.distance import pdist

import tmx
from tmx.measures import distance as dist_mod
from tmx.measures.distance import normalized_distance, sample_distance, transformation_distance

N, T = 7, 5
COMBOS = [
    ("unit", "euclidean", False),
    ("channel", "euclidean", False),
    ("channel", "euclidean", True),
    ("channel", "cosine", False),
    ("channel", "cosine", True),
]


def build(dense: np.ndarray, conv: np.ndarray) -> xr.DataArray:
    """A cube from dense (N, T, C) and conv (N, T, H, W, C) activations, (y, x, c) unit order."""
    n, t = dense.shape[:2]
    layers = {name: a for name, a in (("dense", dense), ("conv", conv)) if a.size}
    return tmx.from_array(
        layers,
        sample={"label": np.arange(n) % 2},
        transformation={"angle": np.linspace(0, 90, t)},
    )


def random_cube(seed: int = 0, ties: bool = False) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(N, T, 3))
    conv = rng.normal(size=(N, T, 2, 3, 2)) + 0.7  # offset: cosine distances are not all ~1
    if ties:  # repeated values (none zero): the sorted formula must handle ties
        dense, conv = (np.round(a * 2) / 2 + 0.25 for a in (dense, conv))
    return build(dense.astype(np.float32), conv.astype(np.float32))


def groups_of(cube: xr.DataArray, per: str) -> list[np.ndarray]:
    if per == "unit":
        return [np.array([u]) for u in range(cube.sizes["unit"])]
    keys = list(zip(cube.layer.values.tolist(), cube.channel.values.tolist(), strict=True))
    return [np.flatnonzero([k == key for k in keys]) for key in dict.fromkeys(keys)]


def mean_pairs(vectors: np.ndarray, metric: str, normalize: bool) -> float:
    if normalize and vectors.shape[1] > 1:  # 1-vectors stay unnormalized (as tmeasures)
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return float(pdist(vectors, metric).mean())


def brute(cube: xr.DataArray, per: str, metric: str, normalize: bool) -> tuple[np.ndarray, ...]:
    """Explicit loops over samples / transformations and groups; pdist enumerates the pairs."""
    a = np.asarray(cube.transpose("sample", "transformation", "unit").values, dtype=np.float64)
    n, t, _ = a.shape
    td, sd = [], []
    for idx in groups_of(cube, per):
        td.append(np.mean([mean_pairs(a[i][:, idx], metric, normalize) for i in range(n)]))
        sd.append(np.mean([mean_pairs(a[:, j][:, idx], metric, normalize) for j in range(t)]))
    td, sd = np.array(td), np.array(sd)
    return td, sd, td / sd


def close(actual, expected, rtol: float = 1e-10, atol: float = 0.0) -> None:
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


# -- against brute force ------------------------------------------------------------------------
@pytest.mark.parametrize(("per", "metric", "normalize"), COMBOS)
@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("ties", [False, True])
def test_brute_force(per, metric, normalize, lazy, ties):
    cube = random_cube(ties=ties)
    td, sd, nd = brute(cube, per, metric, normalize)
    if lazy:
        cube = cube.chunk({"sample": 3, "transformation": 2, "unit": 4})
    opts = {"per": per, "metric": metric, "normalize": normalize}
    ds = normalized_distance(cube, parts=True, **opts)
    assert set(ds.data_vars) == {"td", "sd", "nd"}
    close(ds.td, td)
    close(ds.sd, sd)
    close(ds.nd, nd)
    close(transformation_distance(cube, **opts), td)
    close(sample_distance(cube, **opts), sd)
    close(normalized_distance(cube, **opts), nd)


def test_transposed_cube_and_float64():
    cube = random_cube(3)
    td, sd, nd = brute(cube, "channel", "euclidean", False)
    moved = cube.astype(np.float64).transpose("unit", "sample", "transformation")
    close(normalized_distance(moved, per="channel"), nd)
    close(transformation_distance(moved, per="channel"), td)
    close(sample_distance(moved, per="channel"), sd)


# -- degenerate units ---------------------------------------------------------------------------
def degenerate_cube() -> xr.DataArray:
    rng = np.random.default_rng(1)
    s = rng.normal(size=(N, 1))
    tr = rng.normal(size=(1, T))
    dense = np.stack(
        [
            np.broadcast_to(s, (N, T)),  # 0: depends only on the sample (invariant)
            np.broadcast_to(tr, (N, T)),  # 1: depends only on the transformation
            np.full((N, T), 1.5),  # 2: constant
            rng.normal(size=(N, T)),  # 3: noise
        ],
        axis=-1,
    )
    maps_s = rng.normal(size=(N, 1, 2, 3)) + 1.0
    maps_t = rng.normal(size=(1, T, 2, 3)) + 1.0
    conv = np.stack(
        [np.broadcast_to(maps_s, (N, T, 2, 3)), np.broadcast_to(maps_t, (N, T, 2, 3))], axis=-1
    )
    return build(dense.astype(np.float32), conv.astype(np.float32))


@pytest.mark.parametrize("lazy", [False, True])
def test_invariant_variant_constant_units(lazy):
    cube = degenerate_cube()
    if lazy:
        cube = cube.chunk({"sample": 2, "unit": 5})
    ds = normalized_distance(cube, parts=True).compute()
    td, sd, nd = ds.td.values, ds.sd.values, ds.nd.values
    assert td[0] == 0 and sd[0] > 0 and nd[0] == 0  # invariant: exactly 0
    assert td[1] > 0 and sd[1] == 0 and nd[1] == np.inf  # transformation only: SD = 0
    assert td[2] == 0 and sd[2] == 0 and nd[2] == 1  # constant: 0/0 → 1 (tmeasures)
    assert 0 < nd[3] < np.inf
    assert np.isnan(normalized_distance(cube, zero_div="nan").values[2])
    assert normalized_distance(cube, zero_div="nan").values[1] == np.inf
    conv = np.asarray(cube.layer.values) == "conv"
    ch = np.asarray(cube.channel.values)
    assert np.all(td[conv & (ch == 0)] == 0)
    assert np.all(sd[conv & (ch == 1)] == 0)


@pytest.mark.parametrize(
    ("metric", "normalize"), [("euclidean", False), ("euclidean", True), ("cosine", False)]
)
def test_invariant_channels(metric, normalize):
    cube = degenerate_cube()
    ds = normalized_distance(cube, per="channel", metric=metric, normalize=normalize, parts=True)
    assert list(ds.layer.values) == ["dense"] * 4 + ["conv"] * 2
    # equal vectors are at distance exactly 0, for cosine too (not 1 − â·â ≈ 1e-16)
    assert ds.td.values[4] == 0  # conv channel 0: one map per sample
    assert ds.sd.values[5] == 0  # conv channel 1: one map per transformation
    assert ds.td.values[5] > 0 and ds.sd.values[4] > 0
    assert ds.nd.values[5] == np.inf and ds.nd.values[4] == 0


def test_cosine_and_normalize_with_zero_vectors():
    # one layer with a 1 × 2 map and one channel; N = 2, T = 3
    maps = np.array(
        [
            [[0, 0], [0, 0], [1, 2]],  # pairs: (0, 0) → 0, (0, v) → 1, (0, v) → 1
            [[1, 0], [0, 1], [2, 0]],  # cos: 1, 0, 1
        ],
        dtype=np.float32,
    )
    cube = build(np.zeros((2, 3, 0), np.float32), maps.reshape(2, 3, 1, 2, 1))
    td = transformation_distance(cube, per="channel", metric="cosine")
    close(td, [2 / 3])
    # normalized euclidean: sample 0 distances 0, 1, 1; sample 1 (e1, e2, e1): √2, 0, √2
    td = transformation_distance(cube, per="channel", normalize=True)
    close(td, [(2 / 3 + 2 * np.sqrt(2) / 3) / 2])
    # sample pairs under each transformation: (0, e1) → 1, (0, e2) → 1, ((1, 2), (2, 0)) → 1 − 1/√5
    sd = sample_distance(cube, per="channel", metric="cosine")
    close(sd, [(1 + 1 + (1 - 2 / (np.sqrt(5) * 2))) / 3])


@pytest.mark.parametrize("lazy", [False, True])
def test_normalize_leaves_one_vectors_unnormalized(lazy):
    """Units of a layer without spatial axes are 1-vectors: normalize=True leaves them as they
    are (tmeasures' behaviour), so their distance is |a − b|, not |sign(a) − sign(b)|."""
    rng = np.random.default_rng(3)
    dense = rng.normal(size=(N, T, 3)) * 0.2 + np.array([0.05, 3.0, -1.0])  # unit 0 flips sign
    conv = rng.normal(size=(N, T, 2, 3, 2)) + 0.7
    cube = build(dense, conv)
    if lazy:
        cube = cube.chunk({"sample": 3, "transformation": 2})
    ds = normalized_distance(cube, per="channel", normalize=True, parts=True).compute()
    a = dense.astype(np.float64)
    pairs_t = np.abs(a[:, :, None, :] - a[:, None, :, :]).sum(axis=(1, 2)) / (T * (T - 1))
    pairs_s = np.abs(a[:, None, :, :] - a[None, :, :, :]).sum(axis=(0, 1)) / (N * (N - 1))
    close(ds.td.values[:3], pairs_t.mean(axis=0))
    close(ds.sd.values[:3], pairs_s.mean(axis=0))
    close(ds.nd.values[:3], pairs_t.mean(axis=0) / pairs_s.mean(axis=0))
    plain = normalized_distance(cube, per="channel", parts=True).compute()
    close(ds.td.values[:3], plain.td.values[:3])
    close(transformation_distance(cube).values[:3], pairs_t.mean(axis=0))
    # the maps of the conv layer are still normalized: brute force with unit vectors
    td, sd, _ = brute(cube, "channel", "euclidean", True)
    close(ds.td.values[3:], td[3:])
    close(ds.sd.values[3:], sd[3:])
    assert not np.allclose(ds.td.values[3:], plain.td.values[3:])


def test_cosine_of_nearly_parallel_maps_is_accurate():
    """δ = ‖â − b̂‖² / 2 keeps the digits that 1 − â·b̂ loses for nearly parallel maps."""
    base = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    eps = 1e-7
    maps = np.stack([base, base + eps * np.array([1.0, -1, 0, 0, 0, 0])])  # (T = 2, 6)
    conv = np.broadcast_to(maps.reshape(1, 2, 2, 3, 1), (2, 2, 2, 3, 1))
    cube = build(np.zeros((2, 2, 0)), conv)
    a, b = maps / np.linalg.norm(maps, axis=1, keepdims=True)
    exact = float(np.sum((a - b) ** 2) / 2)  # 1 − cos, ≈ 1e-15, without cancellation
    td = transformation_distance(cube, per="channel", metric="cosine")
    close(td, [exact], rtol=1e-6)
    assert sample_distance(cube, per="channel", metric="cosine").values[0] == 0


def test_normalize_removes_scale():
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(N, 1, 2, 3, 2)) * rng.uniform(0.5, 3.0, size=(1, T, 1, 1, 1))
    cube = build(rng.normal(size=(N, T, 1)).astype(np.float32), maps)
    conv = slice(1, None)
    raw = transformation_distance(cube, per="channel")
    assert np.all(raw.values[conv] > 0.1)
    close(transformation_distance(cube, per="channel", normalize=True).values[conv], 0, atol=1e-7)
    close(transformation_distance(cube, per="channel", metric="cosine").values[conv], 0, atol=1e-12)


@pytest.mark.parametrize("per", ["unit", "channel"])
def test_large_offset_keeps_digits(per):
    """Translation invariance in float64: sorted gaps / shifted Gram do not cancel."""
    cube = random_cube(4).astype(np.float64)
    base = normalized_distance(cube, per=per, parts=True)
    shifted = normalized_distance(cube + 1e6, per=per, parts=True)
    for k in ("td", "sd", "nd"):
        close(shifted[k], base[k], rtol=1e-8)


# -- laziness, chunking, order ------------------------------------------------------------------
CHUNKINGS = [
    {"sample": 1, "transformation": 1, "unit": 1},
    {"sample": 3, "transformation": 2, "unit": 4},
    {"sample": -1, "transformation": -1, "unit": -1},
    {"sample": (2, 5), "transformation": (4, 1), "unit": (3, 5, 7)},
]


@pytest.mark.parametrize(("per", "metric", "normalize"), COMBOS[:2] + COMBOS[-1:])
def test_chunking_independence_and_parity(per, metric, normalize):
    cube = random_cube(5)
    opts = {"per": per, "metric": metric, "normalize": normalize}
    expected = normalized_distance(cube, parts=True, **opts)
    for chunks in CHUNKINGS:
        lazy = normalized_distance(cube.chunk(chunks), parts=True, **opts)
        for k in ("td", "sd", "nd"):
            assert isinstance(lazy[k].data, da.Array)
            close(lazy[k], expected[k])
        assert lazy.attrs == expected.attrs
        for name in ("layer", "channel", "y", "x"):
            np.testing.assert_array_equal(lazy[name].values, expected[name].values)


@pytest.mark.parametrize("per", ["unit", "channel"])
def test_small_chunk_budget_splits_blocks(per):
    """A budget of a few units per block splits the unit axis, but never inside a channel:
    the conv layer's two channels are interleaved ((y, x, channel) order), so its 12 units
    stay one block, and every group's distance is the in-memory one."""
    cube = random_cube(6)
    expected = normalized_distance(cube, per=per, parts=True)
    with dask.config.set({"array.chunk-size": "300B"}):
        lazy = normalized_distance(cube.chunk({"sample": 4}), per=per, parts=True)
        assert lazy.td.data.numblocks[0] > 1
        for k in ("td", "sd", "nd"):
            close(lazy[k], expected[k])


def test_order_independence():
    cube = random_cube(7)
    rng = np.random.default_rng(0)
    perm = cube.isel(sample=rng.permutation(N), transformation=rng.permutation(T))
    for per, metric, normalize in COMBOS:
        opts = {"per": per, "metric": metric, "normalize": normalize}
        a = normalized_distance(cube, parts=True, **opts)
        b = normalized_distance(perm, parts=True, **opts)
        for k in ("td", "sd", "nd"):
            close(b[k], a[k])


@pytest.mark.parametrize("per", ["unit", "channel"])
def test_one_graph_computes_each_block_once(per):
    cube = random_cube(8)
    calls: list[tuple[int, ...]] = []
    lock = threading.Lock()

    def record(block: np.ndarray) -> np.ndarray:
        if block.size:
            with lock:
                calls.append(block.shape)
        return block

    base = da.from_array(cube.values, chunks=(3, 2, 5))
    counted = base.map_blocks(record, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32))
    lazy = cube.copy(data=counted)
    nd = normalized_distance(lazy, per=per)
    assert isinstance(nd.data, da.Array) and not calls
    nd.compute()
    assert len(calls) == base.npartitions
    calls.clear()
    ds = normalized_distance(lazy, per=per, parts=True)
    td, sd = dask.compute(ds.td.data, ds.sd.data)
    assert len(calls) == base.npartitions
    close(td, transformation_distance(cube, per=per))
    close(sd, sample_distance(cube, per=per))


# -- results and errors -------------------------------------------------------------------------
def test_result_coords_names_and_attrs():
    cube = random_cube()
    per_unit = transformation_distance(cube)
    assert per_unit.name == "transformation_distance" and per_unit.dims == ("unit",)
    for name in ("layer", "channel", "y", "x"):
        np.testing.assert_array_equal(per_unit[name].values, cube[name].values)
    per_ch = normalized_distance(cube, per="channel", metric="cosine", zero_div="nan")
    assert per_ch.name == "normalized_distance"
    assert per_ch.layer.values.tolist() == ["dense"] * 3 + ["conv"] * 2
    assert per_ch.channel.values.tolist() == [0, 1, 2, 0, 1]
    assert per_ch.y.values.tolist() == [-1] * 5 and per_ch.x.values.tolist() == [-1] * 5
    assert per_ch.units.values.tolist() == [1, 1, 1, 6, 6]
    attrs = per_ch.attrs
    assert attrs["measure"] == "normalized_distance" and attrs["pairs"] == "all"
    assert (attrs["per"], attrs["metric"], attrs["normalize"]) == ("channel", "cosine", False)
    assert attrs["zero_div"] == "nan" and (attrs["n_samples"], attrs["n_transformations"]) == (N, T)
    assert sample_distance(cube).attrs["measure"] == "sample_distance"
    assert per_unit.dtype == np.float64


def test_errors():
    cube = random_cube()
    with pytest.raises(ValueError, match="per='channel'"):
        transformation_distance(cube, metric="cosine")
    with pytest.raises(ValueError, match="per='channel'"):
        sample_distance(cube, normalize=True)
    with pytest.raises(ValueError, match="per must be one of"):
        normalized_distance(cube, per="layer")
    with pytest.raises(ValueError, match="metric must be one of"):
        normalized_distance(cube, per="channel", metric="manhattan")
    with pytest.raises(ValueError, match="zero_div"):
        normalized_distance(cube, zero_div="zero")
    with pytest.raises(ValueError, match="normalize"):
        transformation_distance(cube, per="channel", normalize="yes")
    with pytest.raises(ValueError, match="parts"):
        normalized_distance(cube, parts=1)
    with pytest.raises(ValueError, match="T = 1"):
        transformation_distance(cube.isel(transformation=[0]))
    with pytest.raises(ValueError, match="N = 1"):
        sample_distance(cube.isel(sample=[0]), per="channel")
    with pytest.raises(ValueError, match="N = 1"):
        normalized_distance(cube.isel(sample=[0]))
    with pytest.raises(ValueError, match=r"xr\.DataArray"):
        transformation_distance(cube.values)
    # one transformation is enough for SD; every measure needs two samples (issue 23)
    assert sample_distance(cube.isel(transformation=[0])).sizes["unit"] == 15
    with pytest.raises(ValueError, match="transformation_distance needs at least 2 samples"):
        transformation_distance(cube.isel(sample=[0]))


# -- the fast per-channel path against a float64 reference --------------------------------------
def messy_cube(seed: int) -> xr.DataArray:
    """Layers in three unit orders with dead units, dead maps, constant units and channels,
    invariant channels, duplicated maps and a large offset; N = 9, T = 6, float32."""
    rng = np.random.default_rng(seed)
    n, t = 9, 6
    dense = np.stack(
        [
            np.zeros((n, t)),  # dead
            np.full((n, t), 2.5),  # constant
            rng.normal(size=(n, t)),
            rng.normal(size=(n, t)) * 0.2 + 0.05,  # flips sign
        ],
        axis=-1,
    )
    h, w = 3, 4
    a = np.empty((n, t, h, w, 6))
    a[..., 0] = 0.0  # dead channel
    a[..., 1] = rng.uniform(-1, 1, size=(h, w)) + 7.77  # constant map
    a[..., 2] = np.maximum(rng.normal(size=(n, t, h, w)) - 1.2, 0)  # many all-zero maps
    a[..., 3] = rng.normal(size=(n, 1, h, w)) + 1.0  # depends on the sample only
    a[..., 4] = rng.normal(size=(n, t, h, w)) + 1e3  # large offset
    dup = rng.normal(size=(3, h, w))  # three distinct maps, each repeated, and zero maps
    a[..., 5] = dup[rng.integers(0, 3, size=(n, t))] * rng.integers(0, 2, size=(n, t, 1, 1))
    b = np.maximum(rng.normal(size=(n, t, 3, 2, 2)) + 0.3, 0)  # (channel, y, x) order
    c = rng.normal(size=(n, t, 2, 3, 2))  # units shuffled below
    perm = rng.permutation(12)
    arr = np.concatenate(
        [dense, a.reshape(n, t, -1), b.reshape(n, t, -1), c.reshape(n, t, -1)[..., perm]], axis=2
    )
    ay, ax, ac = (g.ravel() for g in np.meshgrid(range(h), range(w), range(6), indexing="ij"))
    bc, by, bx = (g.ravel() for g in np.meshgrid(range(3), range(2), range(2), indexing="ij"))
    cy, cx, cc = (g.ravel()[perm] for g in np.meshgrid(range(2), range(3), range(2), indexing="ij"))
    layer = ["dense"] * 4 + ["a"] * ac.size + ["b"] * bc.size + ["c"] * cc.size
    return xr.DataArray(
        arr.astype(np.float32),
        dims=("sample", "transformation", "unit"),
        coords={
            "layer": ("unit", layer),
            "channel": ("unit", np.r_[np.arange(4), ac, bc, cc]),
            "y": ("unit", np.r_[np.full(4, -1), ay, by, cy]),
            "x": ("unit", np.r_[np.full(4, -1), ax, bx, cx]),
        },
    )


def reference_mean(v: np.ndarray, metric: str, normalize: bool) -> float:
    """Mean δ over all pairs of the rows of v, from explicit differences in float64."""
    v = np.asarray(v, dtype=np.float64)
    n, d = v.shape
    if normalize and d > 1:
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        v = v / np.where(norms == 0, 1.0, norms)
    if metric == "euclidean":
        return float(pdist(v).mean())
    norms = np.linalg.norm(v, axis=1)
    zero = norms == 0
    u = v / np.where(zero, 1.0, norms)[:, None]
    dist = ((u[:, None, :] - u[None, :, :]) ** 2).sum(axis=-1) / 2
    dist[zero[:, None] != zero[None, :]] = 1.0
    dist[zero[:, None] & zero[None, :]] = 0.0
    return float(dist[np.triu_indices(n, 1)].mean())


def reference_parts(cube: xr.DataArray, metric: str, normalize: bool) -> tuple[np.ndarray, ...]:
    a = cube.values
    td, sd = [], []
    for idx in groups_of(cube, "channel"):
        td.append(np.mean([reference_mean(a[i][:, idx], metric, normalize) for i in range(9)]))
        sd.append(np.mean([reference_mean(a[:, j][:, idx], metric, normalize) for j in range(6)]))
    return np.array(td), np.array(sd)


@pytest.mark.parametrize(("metric", "normalize"), [c[1:] for c in COMBOS[1:]])
@pytest.mark.parametrize("seed", [0, 1])
def test_fast_path_equals_float64_reference(metric, normalize, seed):
    cube = messy_cube(seed)
    td, sd = reference_parts(cube, metric, normalize)
    opts = {"per": "channel", "metric": metric, "normalize": normalize}
    chunkings = [None, {"sample": (4, 1, 4), "transformation": (1, 3, 2), "unit": (5, 30, 17, 48)}]
    for chunks in chunkings:
        ds = normalized_distance(cube if chunks is None else cube.chunk(chunks), parts=True, **opts)
        ds = ds.compute()
        close(ds.td, td)
        close(ds.sd, sd)
        keys = list(zip(ds.layer.values.tolist(), ds.channel.values.tolist(), strict=True))
        at = {k: i for i, k in enumerate(keys)}
        # dead and constant units and channels: exactly 0 both ways
        for key in [("dense", 0), ("dense", 1), ("a", 0), ("a", 1)]:
            assert ds.td.values[at[key]] == 0 and ds.sd.values[at[key]] == 0
        assert ds.td.values[at[("a", 3)]] == 0  # the same map under every transformation
        assert ds.sd.values[at[("a", 3)]] > 0


def test_batches_do_not_change_results(monkeypatch):
    cube = messy_cube(2)
    expected = {
        c: normalized_distance(cube, per="channel", metric=c[0], normalize=c[1], parts=True)
        for c in [("euclidean", False), ("euclidean", True), ("cosine", False)]
    }
    monkeypatch.setattr(dist_mod, "GRAM_BYTES", 2048)  # one set per batch or close to it
    for (metric, normalize), want in expected.items():
        got = normalized_distance(
            cube, per="channel", metric=metric, normalize=normalize, parts=True
        )
        for k in ("td", "sd", "nd"):
            close(got[k], want[k], rtol=1e-13)


def one_set(vectors: np.ndarray, metric: str = "euclidean") -> float:
    """TD of one channel whose (1, d) map is ``vectors[j]`` under transformation j (two equal
    samples): the mean distance over the pairs of the set."""
    maps = np.stack([vectors, vectors])[:, :, None, :, None]  # (2, T, 1, d, 1)
    td = transformation_distance(tmx.from_array({"conv": maps}), per="channel", metric=metric)
    return float(td.item())


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4])
def test_equal_maps_are_exactly_zero_apart_whatever_the_shift(scale):
    """Equal non-zero maps that are not the shift vector: the Gram value of the pair is
    recomputed directly, so their distance is exactly 0 (not √ε·‖a‖)."""
    rng = np.random.default_rng(0)
    r = rng.uniform(1, 1000, size=37) * scale
    other = rng.uniform(1, 1000, size=37) * scale
    # a zero vector (the shift then is 0) and three copies of r: 3 pairs at ‖r‖, 3 at 0
    got = one_set(np.stack([np.zeros(37), r, r, r]))
    assert got == pytest.approx(np.sqrt(np.sum(r**2)) / 2, rel=1e-14)
    # shift by the first vector (no zero vector): copies of r against `other`
    got = one_set(np.stack([other, r, r, r, r]))
    assert got == pytest.approx(4 * np.linalg.norm(r - other) / 10, rel=1e-13)
    # cosine: equal directions at exactly 0, whatever their length
    assert one_set(np.stack([r, 2 * r, r, 0.5 * r]), metric="cosine") == 0


@pytest.mark.parametrize(("metric", "normalize"), [("euclidean", False), ("cosine", True)])
def test_any_unit_order_within_a_layer_gives_the_same_channels(metric, normalize):
    """A channel's map read in place ((y, x, channel) order, or (channel, y, x)) or gathered
    (no regular order): the same per-channel distances."""
    cube = random_cube(3)
    opts = {"per": "channel", "metric": metric, "normalize": normalize, "parts": True}
    expected = normalized_distance(cube, **opts)
    channel_major = np.argsort(cube.channel.values[3:], kind="stable")
    shuffled = np.random.default_rng(0).permutation(12)
    for conv in (channel_major, shuffled):
        got = normalized_distance(cube.isel(unit=np.concatenate([np.arange(3), 3 + conv])), **opts)
        # channels in the order they first appear: matched by (layer, channel)
        keys = list(zip(got.layer.values.tolist(), got.channel.values.tolist(), strict=True))
        want = zip(expected.layer.values.tolist(), expected.channel.values.tolist(), strict=True)
        got = got.isel(unit=[keys.index(k) for k in want])
        for k in ("td", "sd", "nd"):
            close(got[k], expected[k], rtol=1e-12)
