"""CKA: against a direct numpy implementation of the papers' formulas, invariances, streaming,
the minibatch estimator, CKA invariance, two cubes, errors, the plot and the examples."""

from __future__ import annotations

import doctest
import importlib

import dask.array as da
import matplotlib
import numpy as np
import pytest
import xarray as xr

import tmx
import tmx.plot
from tmx.measures import cka, cka_invariance

from .measures_util import make_cube

matplotlib.use("Agg")


# -- the papers' formulas, written directly ---------------------------------------------------
def ref_linear_kernel(x):
    return x @ x.T


def ref_rbf_kernel(x, factor=0.8, sigma=None):
    """Kornblith et al.: exp(−d²/(2σ²)), σ = factor × median distance between examples."""
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    if sigma is None:
        sigma = factor * np.median(d[np.triu_indices(len(x), 1)])
    return np.exp(-(d**2) / (2 * sigma**2))


def ref_hsic0(k, m):
    """Gretton et al. (2005): tr(K H L H) / (n − 1)²."""
    n = len(k)
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ m @ h) / (n - 1) ** 2


def ref_hsic1(k, m):
    """Song et al. (2012), as in Nguyen, Raghu & Kornblith (2021), eq. 3."""
    n = len(k)
    kt, lt = k - np.diag(np.diag(k)), m - np.diag(np.diag(m))
    one = np.ones(n)
    return (
        np.trace(kt @ lt)
        + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (one @ kt @ lt @ one)
    ) / (n * (n - 3))


def ref_cka(x, y, kernel="linear", hsic=ref_hsic0, **kw):
    kf = ref_linear_kernel if kernel == "linear" else ref_rbf_kernel
    k, m = kf(x, **kw), kf(y, **kw)
    return hsic(k, m) / np.sqrt(hsic(k, k) * hsic(m, m))


def ref_minibatch_cka(x, y, k, epochs, seed):
    """Nguyen et al.: mean HSIC_1 over the minibatches of seeded permutations (linear)."""
    xy = xx = yy = 0.0
    for e in range(epochs):
        order = np.random.default_rng([seed, e]).permutation(len(x))
        for b in order[: len(x) // k * k].reshape(-1, k):
            kx, ly = x[b] @ x[b].T, y[b] @ y[b].T
            xy += ref_hsic1(kx, ly)
            xx += ref_hsic1(kx, kx)
            yy += ref_hsic1(ly, ly)
    return xy / np.sqrt(xx * yy)


# -- cubes --------------------------------------------------------------------------------------
def _layers(n=60, t=3, seed=0):
    """Three related layers of different widths (one with spatial axes) and one of noise."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, t, 5))
    a = z @ rng.normal(size=(5, 6)) + 0.5 * rng.normal(size=(n, t, 6))
    b = np.tanh(z @ rng.normal(size=(5, 8))) + 0.3 * rng.normal(size=(n, t, 8)) + 4.0
    c = np.einsum("ntk,kabc->ntabc", z[..., :3], rng.normal(size=(3, 2, 2, 2)))  # (n, t, 2, 2, 2)
    noise = rng.normal(size=(n, t, 4))
    return {"a": a, "b": b, "c": c, "noise": noise}


def _flat(arr):
    return arr.reshape(arr.shape[0], arr.shape[1], -1)


@pytest.fixture(scope="module")
def layers():
    return _layers()


@pytest.fixture(scope="module")
def cube(layers):
    return make_cube(layers)


# -- against the formulas -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kernel", "estimator", "method"),
    [
        ("linear", "full", "features"),
        ("linear", "full", "gram"),
        ("linear", "unbiased", "auto"),
        ("rbf", "full", "auto"),
        ("rbf", "unbiased", "gram"),
    ],
)
def test_matches_the_papers_formulas(cube, layers, kernel, estimator, method):
    result = cka(cube, transformation=1, kernel=kernel, estimator=estimator, method=method)
    hsic = ref_hsic0 if estimator == "full" else ref_hsic1
    names = list(layers)
    assert result.dims == ("layer_a", "layer_b")
    assert list(result.layer_a.values) == names == list(result.layer_b.values)
    for i, p in enumerate(names):
        for j, q in enumerate(names):
            x, y = _flat(layers[p])[:, 1], _flat(layers[q])[:, 1]
            expected = ref_cka(x, y, kernel, hsic)
            np.testing.assert_allclose(result.values[i, j], expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.diag(result.values), 1.0, rtol=1e-12)
    assert result.attrs["kernel"] == kernel and result.attrs["estimator"] == estimator
    assert result.attrs["n_samples"] == 60 and result.attrs["n_rows"] == 60
    assert "tmx_version" in result.attrs
    if kernel == "rbf":  # the median heuristic's σ, per layer
        x = _flat(layers["a"])[:, 1]
        d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))[np.triu_indices(60, 1)]
        np.testing.assert_allclose(result.sigma_a.sel(layer_a="a"), 0.8 * np.median(d))


def test_rbf_with_a_given_sigma_and_factor(cube, layers):
    x, y = _flat(layers["a"])[:, 0], _flat(layers["b"])[:, 0]
    got = cka(cube, kernel="rbf", sigma=3.0).sel(layer_a="a", layer_b="b")
    np.testing.assert_allclose(got, ref_cka(x, y, "rbf", sigma=3.0), rtol=1e-9)
    got = cka(cube, kernel="rbf", sigma_factor=0.4).sel(layer_a="a", layer_b="b")
    np.testing.assert_allclose(got, ref_cka(x, y, "rbf", factor=0.4), rtol=1e-9)


def test_stack_uses_every_sample_transformation_row(cube, layers):
    result = cka(cube, transformation="stack")
    x = _flat(layers["a"]).reshape(-1, 6)
    y = _flat(layers["c"]).reshape(-1, 8)
    np.testing.assert_allclose(result.sel(layer_a="a", layer_b="c"), ref_cka(x, y), rtol=1e-9)
    assert result.attrs["n_rows"] == 180 and result.attrs["transformation"] == "stack"


# -- invariances ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_invariant_to_orthogonal_maps_and_isotropic_scaling_not_to_anisotropic(kernel):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 1, 6)) * np.linspace(0.5, 2, 6)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    cube = make_cube(
        {
            "x": x,
            "rotated": 7.5 * x @ q + 3.0,  # orthogonal, isotropic scale, shift
            "permuted": -x[..., ::-1] * 0.01,  # a permutation with a sign flip, tiny scale
            "stretched": x * np.array([20.0, 1, 1, 1, 1, 0.05]),  # non-isotropic scaling
        }
    )
    result = cka(cube, kernel=kernel).sel(layer_a="x")
    np.testing.assert_allclose(result.sel(layer_b=["rotated", "permuted"]), 1.0, rtol=1e-9)
    assert result.sel(layer_b="stretched") < 0.9


# -- streaming -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kernel", "estimator", "transformation"),
    [
        ("linear", "full", 2),
        ("linear", "unbiased", 0),
        ("rbf", "full", "stack"),
        ("linear", "minibatch", "stack"),
    ],
)
def test_chunked_dask_equals_numpy(cube, kernel, estimator, transformation):
    kw = {"kernel": kernel, "estimator": estimator, "transformation": transformation}
    if estimator == "minibatch":
        kw.update(batch_size=16, epochs=2)
    eager = cka(cube, **kw)
    lazy = cka(cube.chunk({"sample": 13}), **kw)
    np.testing.assert_allclose(lazy, eager, rtol=1e-9)


def test_features_route_reads_each_block_once_and_keeps_digits():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(90, 2, 5))
    calls = []

    def load(block, block_info=None):
        calls.append(block_info[None]["chunk-location"])
        return block

    big = base + 1e6  # a large common offset: the co-moment merge keeps the digits
    lazy_data = da.from_array(big, chunks=(20, 2, 5)).map_blocks(load, dtype=big.dtype)
    cube = make_cube({"p": base[..., :2], "q": base[..., 2:]})
    lazy = make_cube({"p": big[..., :2], "q": big[..., 2:]}).copy(data=lazy_data)
    result = cka(lazy, method="features", transformation=1)
    assert len(calls) == 5  # each of the 5 sample blocks once
    np.testing.assert_allclose(result, cka(cube, transformation=1), rtol=1e-9)


def test_memory_bound_refuses_clearly_and_minibatch_goes_on():
    big = make_cube({"a": np.zeros((400, 1, 2)), "b": np.ones((400, 1, 2))})
    with pytest.raises(ValueError, match=r"400 × 400 float64 kernel.*estimator='minibatch'"):
        cka(big, kernel="rbf", memory=2**20)
    # the linear full estimator picks the cross-products route: tiny whatever N
    assert cka(big, memory=2**20).attrs["method"] == "features"
    out = cka(
        big.copy(data=np.random.default_rng(0).normal(size=(400, 1, 4))),
        kernel="rbf",
        estimator="minibatch",
        batch_size=50,
        memory=2**20,
    )
    assert out.attrs["method"] == "minibatch" and out.attrs["n_batches"] == 8


def test_constant_layer_gives_nan(cube):
    dead = make_cube(
        {"a": np.random.default_rng(0).normal(size=(20, 1, 3)), "dead": np.full((20, 1, 2), 0.7)}
    )
    result = cka(dead)
    assert np.isnan(result.sel(layer_a="a", layer_b="dead"))
    assert np.isnan(result.sel(layer_a="dead", layer_b="dead"))


# -- the minibatch estimator ----------------------------------------------------------------------
def test_minibatch_is_the_mean_hsic1_of_seeded_minibatches(cube, layers):
    result = cka(cube, estimator="minibatch", batch_size=12, epochs=3, seed=5, transformation=0)
    x, y = _flat(layers["a"])[:, 0], _flat(layers["c"])[:, 0]
    expected = ref_minibatch_cka(x, y, 12, 3, 5)
    np.testing.assert_allclose(result.sel(layer_a="a", layer_b="c"), expected, rtol=1e-9)
    assert result.attrs["n_batches"] == 15 and result.attrs["seed"] == 5


def test_minibatch_mean_tends_to_the_full_unbiased_value():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(48, 1, 3))
    cube = make_cube(
        {
            "p": z @ rng.normal(size=(3, 4)) + rng.normal(size=(48, 1, 4)),
            "q": np.sin(z @ rng.normal(size=(3, 5))) + 0.5 * rng.normal(size=(48, 1, 5)),
        }
    )
    full = cka(cube, estimator="unbiased").sel(layer_a="p", layer_b="q").item()
    seeds = [
        cka(cube, estimator="minibatch", batch_size=8, epochs=25, seed=s)
        .sel(layer_a="p", layer_b="q")
        .item()
        for s in range(30)
    ]
    se = np.std(seeds, ddof=1) / np.sqrt(len(seeds))
    assert abs(np.mean(seeds) - full) < 3 * se + 0.003, (np.mean(seeds), full, se)
    assert se > 0  # different seeds, different minibatches
    # one minibatch holding every row is the unbiased estimator on all rows, exactly
    whole = cka(cube, estimator="minibatch", batch_size=48).sel(layer_a="p", layer_b="q")
    np.testing.assert_allclose(whole, full, rtol=1e-9)


def test_hsic1_averaged_over_every_subset_is_hsic1_of_all_rows():
    """HSIC_1 is a U-statistic: its mean over all k-subsets is its value on the n rows."""
    from itertools import combinations

    from tmx.measures.similarity import hsic_unbiased

    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(9, 3)), rng.normal(size=(9, 2))
    y[:, 0] += x[:, 0]

    def h1(idx):
        k, m = x[idx] @ x[idx].T, y[idx] @ y[idx].T
        np.fill_diagonal(k, 0)
        np.fill_diagonal(m, 0)
        return hsic_unbiased(k, m)

    subsets = [h1(list(c)) for c in combinations(range(9), 5)]
    np.testing.assert_allclose(np.mean(subsets), h1(list(range(9))), rtol=1e-10)
    np.testing.assert_allclose(h1(list(range(9))), ref_hsic1(x @ x.T, y @ y.T), rtol=1e-10)


# -- CKA invariance -----------------------------------------------------------------------------
def test_cka_invariance_rotation_permutation_and_noise():
    rng = np.random.default_rng(4)
    n = 150
    x = rng.normal(size=(n, 4)) * [1, 2, 3, 4]
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    rotated = np.stack([x, x @ q, 2 * x[:, [3, 1, 0, 2]], x @ q.T @ q], axis=1)
    noise = np.stack([x] + [rng.normal(size=(n, 4)) for _ in range(3)], axis=1)
    varying = x[:, None, :] * np.array([1, 1, 1, 1.0])[None, :, None]
    varying = varying + np.array([0, 0.5, 1.0, 2.0])[None, :, None] * rng.normal(size=(n, 4, 4))
    cube = make_cube({"rot": rotated, "noise": noise, "varying": varying})
    cube = cube.assign_coords(transform=("transformation", ["id", "r1", "r2", "r3"]))
    inv = cka_invariance(cube, estimator="unbiased")
    assert inv.dims == ("transformation", "layer")
    assert list(inv.layer.values) == ["rot", "noise", "varying"]
    assert list(inv.transform.values) == ["id", "r1", "r2", "r3"]
    np.testing.assert_allclose(inv.sel(layer="rot"), 1.0, rtol=1e-9)
    np.testing.assert_allclose(inv.sel(layer="noise")[0], 1.0)
    assert np.all(np.abs(inv.sel(layer="noise")[1:]) < 0.05)
    assert np.all(np.diff(inv.sel(layer="varying").values) < 0)  # more noise, less similar
    # each entry is cka between the layer at the reference and at j
    for j in range(4):
        np.testing.assert_allclose(
            inv.sel(layer="varying")[j], ref_cka(varying[:, 0], varying[:, j], hsic=ref_hsic1)
        )
    other = cka_invariance(cube, reference=2, kernel="rbf")
    np.testing.assert_allclose(other.sel(layer="rot"), 1.0, rtol=1e-9)
    assert other.attrs["reference"] == 2 and other.sigma.dims == ("transformation", "layer")
    lazy = cka_invariance(cube.chunk({"sample": 40}), reference=2, kernel="rbf")
    np.testing.assert_allclose(lazy, other, rtol=1e-9)


# -- two cubes ------------------------------------------------------------------------------------
def test_two_cubes_with_different_layers(cube, layers):
    rng = np.random.default_rng(5)
    other_layers = {
        "h1": _flat(layers["a"]) @ rng.normal(size=(6, 3)),
        "h2": rng.normal(size=(60, 3, 7)),
    }
    other = make_cube(other_layers)
    result = cka(cube, other, transformation=2)
    assert result.shape == (4, 2) and list(result.layer_b.values) == ["h1", "h2"]
    assert result.attrs["two_cubes"] == 1
    for p in layers:
        for q in other_layers:
            x, y = _flat(layers[p])[:, 2], other_layers[q][:, 2]
            np.testing.assert_allclose(result.sel(layer_a=p, layer_b=q), ref_cka(x, y), rtol=1e-9)
    lazy = cka(cube.chunk({"sample": 25}), other.chunk({"sample": 7}), transformation=2)
    np.testing.assert_allclose(lazy, result, rtol=1e-9)
    rbf = cka(cube, other, kernel="rbf", estimator="minibatch", batch_size=10)
    assert rbf.shape == (4, 2) and rbf.sigma_b.dims == ("layer_b",)


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kernel": "poly"}, "kernel must be one of"),
        ({"estimator": "biased"}, "estimator must be one of"),
        ({"method": "fast"}, "method must be one of"),
        ({"transformation": 3}, "transformation=3 is out of range"),
        ({"transformation": "all"}, "transformation must be an int or"),
        ({"sigma": 1.0}, "sigma is the RBF bandwidth"),
        ({"kernel": "rbf", "sigma": -1.0}, "sigma must be a positive number"),
        ({"kernel": "rbf", "sigma_factor": 0}, "sigma_factor must be a positive"),
        ({"batch_size": 3, "estimator": "minibatch"}, "batch_size must be an integer >= 4"),
        ({"batch_size": 61, "estimator": "minibatch"}, "batch_size=61 exceeds the 60 rows"),
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"memory": 10}, "memory must be a number of bytes"),
        ({"kernel": "rbf", "method": "features"}, "method='features' computes linear CKA"),
        ({"estimator": "minibatch", "method": "gram"}, "method='gram' applies to"),
    ],
)
def test_bad_arguments(cube, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cka(cube, **kwargs)


def test_bad_cubes_and_references(cube):
    with pytest.raises(ValueError, match=r"cube_a must be an xr\.DataArray"):
        cka(np.zeros((3, 1, 2)))
    with pytest.raises(ValueError, match="same samples; got N = 60 and N = 59"):
        cka(cube, cube.isel(sample=slice(1, None)))
    shifted = cube.assign_coords(sample=cube.sample.values + 100)
    with pytest.raises(ValueError, match="'sample' coordinates differ"):
        cka(cube, shifted)
    with pytest.raises(ValueError, match="need the same T"):
        cka(cube, cube.isel(transformation=[0, 1]), transformation="stack")
    with pytest.raises(ValueError, match="needs at least 4 rows"):
        cka(cube.isel(sample=slice(0, 3)), estimator="unbiased")
    with pytest.raises(ValueError, match="reference must be an int"):
        cka_invariance(cube, reference="stack")
    with pytest.raises(ValueError, match="reference=5 is out of range"):
        cka_invariance(cube, reference=5)


# -- plot and examples -----------------------------------------------------------------------------
def test_heatmap(cube):
    result = cka(cube)
    fig = tmx.plot.similarity_heatmap(result, title="mine")
    ax = fig.axes[0]
    assert ax.get_title() == "mine"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c", "noise"]
    assert len(ax.texts) == 16
    inv = cka_invariance(cube.assign_coords(transform=("transformation", ["id", "g1", "g2"])))
    fig = tmx.plot.similarity_heatmap(inv)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["id", "g1", "g2"]
    assert "cka invariance" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="result must have dims"):
        tmx.plot.similarity_heatmap(xr.DataArray(np.zeros((2, 2)), dims=("a", "b")))
    with pytest.raises(ValueError, match="result must be the 2-D DataArray"):
        tmx.plot.similarity_heatmap(np.zeros((2, 2)))


def test_exported():
    assert tmx.cka is cka and tmx.cka_invariance is cka_invariance
    assert "cka" in tmx.__all__ and "similarity_heatmap" in tmx.plot.__all__


@pytest.mark.parametrize("module", ["tmx.measures.similarity", "tmx.plot.similarity"])
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
