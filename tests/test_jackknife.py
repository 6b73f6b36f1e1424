"""Jackknife bias correction of the variance family and the intervals that cover.

Every expected value is computed here by brute force (recomputing the statistic without each
group of samples) or from a simulation with a known population value, never copied from tmx.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from tmx.measures import bootstrap, by_layer, normalized_variance, sample_variance
from tmx.measures import transformation_variance as transformation_variance_

from .measures_util import make_cube, random_cube


def _tv_sv(a: np.ndarray, dispersion: str = "std") -> tuple[np.ndarray, np.ndarray]:
    f = np.std if dispersion == "std" else np.var
    return f(a, axis=1, ddof=1).mean(axis=0), f(a, axis=0, ddof=1).mean(axis=0)


def assign(n: int, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """The jackknife group of every one of n samples and the group sizes, read from tmx's
    own leave-out values on a probe cube (the groups depend on N and G only): unit j varies
    over transformations at sample j alone, so its leave-out TV is 0 exactly in j's group."""
    probe = np.zeros((n, 2, n))
    probe[np.arange(n), 1, np.arange(n)] = 1.0
    ds = normalized_variance(
        make_cube({"p": probe}), parts=True, bias_correction="jackknife", jackknife_groups=groups
    )
    loo = ds["tv_loo"].transpose("jackknife", "unit").values
    assert ((loo == 0).sum(axis=0) == 1).all()  # every sample in exactly one group
    code = np.argmax(loo == 0, axis=0)
    sizes = np.bincount(code, minlength=groups).astype(np.float64)
    np.testing.assert_array_equal(sizes, ds["jackknife_size"].values)
    return code, sizes


def _brute_jackknife(stat, a: np.ndarray, groups: int):
    """θ_J and SE by recomputing ``stat`` without each group (Busing et al.'s delete-m)."""
    n = a.shape[0]
    code, sizes = assign(n, groups)
    full = stat(a)
    loo = np.array([stat(a[code != g]) for g in range(groups)])
    h = (n / sizes).reshape(-1, *([1] * np.ndim(full)))
    corrected = groups * full - ((1 - sizes / n).reshape(h.shape) * loo).sum(axis=0)
    pseudo = h * full - (h - 1) * loo
    se = np.sqrt(((pseudo - corrected) ** 2 / (h - 1)).sum(axis=0) / groups)
    return corrected, se


def _sparse(rng, n, t=5, u=6):
    """Heavy-tailed activations that fire on a fraction of the samples."""
    active = rng.random((n, 1, u)) < np.linspace(0.15, 1, u)
    return active * (rng.standard_t(4, size=(n, 1, u)) + 0.5 * rng.standard_t(4, size=(n, t, u)))


@pytest.mark.parametrize("groups", [None, 7])
@pytest.mark.parametrize("dispersion", ["std", "var"])
def test_unit_values_equal_brute_force_leave_out(groups, dispersion):
    rng = np.random.default_rng(0)
    a = _sparse(rng, 30)
    cube = make_cube({"d": a})
    g = 30 if groups is None else groups
    ds = normalized_variance(
        cube, parts=True, dispersion=dispersion, bias_correction="jackknife", jackknife_groups=g
    )
    for k, var in enumerate(("tv", "sv")):
        expected, _ = _brute_jackknife(lambda x, k=k: _tv_sv(x, dispersion)[k], a, g)
        np.testing.assert_allclose(ds[var], expected, rtol=1e-10)
    nv_j, nv_se = _brute_jackknife(lambda x: np.divide(*_tv_sv(x, dispersion)), a, g)
    np.testing.assert_allclose(ds["nv"], nv_j, rtol=1e-10)
    np.testing.assert_allclose(ds["nv_se"], nv_se, rtol=1e-8)
    raw = normalized_variance(cube, dispersion=dispersion)
    np.testing.assert_array_equal(ds["nv_raw"], raw)  # the estimate itself is unchanged
    assert not np.allclose(ds["nv"], raw)  # and the correction does move it
    # the jackknife of a mean is the mean (TV); of the unbiased variance, itself (SV, G = N)
    np.testing.assert_allclose(ds["tv"], ds["tv_raw"], rtol=1e-12)
    if dispersion == "var" and groups is None:
        np.testing.assert_allclose(ds["sv"], ds["sv_raw"], rtol=1e-10)


def test_single_output_functions_and_attrs():
    cube = make_cube({"d": _sparse(np.random.default_rng(1), 25)})
    ds = normalized_variance(cube, parts=True, bias_correction="jackknife")
    tv = transformation_variance_(cube, bias_correction="jackknife")
    sv = sample_variance(cube, bias_correction="jackknife", jackknife_groups=25)
    np.testing.assert_allclose(tv, ds.tv)
    np.testing.assert_allclose(sv, ds.sv)
    nv = normalized_variance(cube, bias_correction="jackknife")
    np.testing.assert_allclose(nv, ds.nv)
    assert nv.attrs["bias_correction"] == "jackknife" and ds.attrs["jackknife_groups"] == 25
    assert normalized_variance(cube).attrs["bias_correction"] == "None"


def test_chunk_independent_and_lazy():
    cube = random_cube(3, n=23, t=4)
    eager = normalized_variance(cube, parts=True, bias_correction="jackknife")
    # up to 8 blocks form one chain of sums; 23 and 12 blocks make 3 and 2 chains to merge
    for chunks in (
        {"sample": 5},
        {"sample": (1, 9, 13)},
        {"sample": 4, "unit": 7},
        {"sample": 1},
        {"sample": 2, "unit": 7},
    ):
        lazy = normalized_variance(cube.chunk(chunks), parts=True, bias_correction="jackknife")
        assert lazy["nv"].chunks is not None  # nothing computed yet
        xr.testing.assert_allclose(lazy.compute(), eager, rtol=1e-9, atol=1e-12)


def test_layer_ratio_is_the_jackknife_of_the_ratio_not_the_ratio_of_jackknifed_parts():
    rng = np.random.default_rng(2)
    a, b = _sparse(rng, 40, u=5), _sparse(rng, 40, u=3)
    cube = make_cube({"first": a, "second": b})
    parts = normalized_variance(cube, parts=True, bias_correction="jackknife", jackknife_groups=40)
    out = by_layer(parts, reduce="ratio_of_means")
    for name, data in (("first", a), ("second", b)):

        def ratio(x):
            tv, sv = _tv_sv(x)
            return tv.mean() / sv.mean()

        expected, se = _brute_jackknife(ratio, data, 40)
        got = out.sel(layer=name)
        np.testing.assert_allclose(got, expected, rtol=1e-10)
        np.testing.assert_allclose(got["jackknife_se"], se, rtol=1e-8)
        np.testing.assert_allclose(got["uncorrected"], ratio(data), rtol=1e-12)
        of_parts = float(parts.tv.sel(unit=parts.layer == name).mean()) / float(
            parts.sv.sel(unit=parts.layer == name).mean()
        )
        assert abs(float(got) - of_parts) > 1e-6


def test_constant_units_stay_exact_under_the_jackknife():
    rng = np.random.default_rng(4)
    for dtype in (np.float32, np.float64):
        for offset in (0.0, 0.1, 1234.56789, 1e4):
            a = rng.normal(size=(17, 4, 4))
            a[..., 1] = offset
            a[..., 3] = offset  # constant but in sample 7: one complement is constant
            a[7, :, 3] = offset + 1.0
            # one chain of block sums, then 17 blocks: three chains whose minima/maxima merge
            for chunks in ({"sample": (5, 1, 11)}, {"sample": 1}):
                cube = make_cube({"d": a.astype(dtype)}).chunk(chunks)
                ds = normalized_variance(cube, parts=True, bias_correction="jackknife").compute()
                assert ds.tv.values[1] == 0 and ds.sv.values[1] == 0 and ds.nv.values[1] == 1
                assert (ds.sv_loo.values[:, 1] == 0).all() and ds.nv_se.values[1] == 0
                assert ds.inactive.values.tolist() == [False, True, False, False]
                assert (ds.sv_loo.values[:, 3] == 0).sum() == 1  # leaving sample 7 out
                assert (ds.sv_loo.values[:, 3] > 0).sum() == 16
                nan = normalized_variance(cube, zero_div="nan", bias_correction="jackknife")
                assert np.isnan(nan.values[1])


def test_inactive_units_are_counted_per_layer():
    rng = np.random.default_rng(5)
    a = np.maximum(rng.normal(size=(12, 3, 5)), 0)
    a[..., [0, 3]] = 0.0  # two dead ReLUs
    b = rng.normal(size=(12, 3, 2))
    cube = make_cube({"relu": a, "dense": b})
    nv = normalized_variance(cube)
    assert nv["inactive"].values.tolist() == [True, False, False, True, False, False, False]
    for layer_value in (
        by_layer(nv),
        by_layer(normalized_variance(cube, parts=True), reduce="ratio_of_means"),
    ):
        assert layer_value["inactive"].values.tolist() == [2, 0]
    lazy = by_layer(normalized_variance(cube.chunk({"sample": 5})))
    assert lazy["inactive"].values.tolist() == [2, 0]


def test_errors():
    cube = random_cube(0, n=6)
    with pytest.raises(ValueError, match="bias_correction must be one of"):
        normalized_variance(cube, bias_correction="bootstrap")
    with pytest.raises(ValueError, match="jackknife_groups must be"):
        normalized_variance(cube, bias_correction="jackknife", jackknife_groups=1)
    with pytest.raises(ValueError, match="exceeds the number of samples"):
        normalized_variance(cube, bias_correction="jackknife", jackknife_groups=7)
    with pytest.raises(ValueError, match="needs bias_correction='jackknife'"):
        normalized_variance(cube, jackknife_groups=3)
    labelled = cube.assign_coords(label=("sample", [0, 0, 0, 1, 1, 1]))
    with pytest.raises(ValueError, match=r"by=\.\.\. is not supported"):
        normalized_variance(labelled, by="label", bias_correction="jackknife")
    with pytest.raises(ValueError, match="method='jackknife' needs"):
        bootstrap(lambda c: c.std("sample"), cube, method="jackknife")
    with pytest.raises(ValueError, match="return_replicates needs"):
        bootstrap(normalized_variance, cube, return_replicates=True)


def test_default_interval_is_the_studentised_jackknife():
    cube = make_cube({"d": _sparse(np.random.default_rng(6), 35)})
    out = bootstrap(normalized_variance, cube, reduce="ratio_of_means", ci=0.9)
    parts = normalized_variance(cube, parts=True, bias_correction="jackknife")
    layer = by_layer(parts, reduce="ratio_of_means")
    half = stats.t.ppf(0.95, 34) * layer["jackknife_se"].values
    assert out.attrs["method"] == "jackknife" and out.attrs["jackknife_groups"] == 35
    np.testing.assert_allclose(out.estimate, layer, rtol=1e-12)
    np.testing.assert_allclose(out.low, layer.values - half, rtol=1e-12)
    np.testing.assert_allclose(out.high, layer.values + half, rtol=1e-12)
    np.testing.assert_allclose(out.uncorrected, layer["uncorrected"], rtol=1e-12)
    # per unit and the unit mean as well; other measures and reduces keep the bootstrap
    assert bootstrap(normalized_variance, cube).attrs["method"] == "jackknife"
    assert bootstrap(normalized_variance, cube, reduce="mean").attrs["method"] == "jackknife"
    median = bootstrap(normalized_variance, cube, reduce="median", n=20)
    assert median.attrs["method"] == "bc"


# -- coverage: the simulation tests of the issue ---------------------------------------------
def _population_case(rng, n, t=5):
    """Sparse, heavy-tailed units a = m (α ξ + β η) with Student-t(5) ξ, η of unit variance and
    m ~ Bernoulli(p): with dispersion="var" the population layer ratio of means is
    Σ p β² / Σ p (α² + β²) in closed form."""
    prng = np.random.default_rng(123)  # the population: fixed across data sets
    u = 24
    alpha, beta = prng.gamma(2, 1, u), prng.gamma(2, 0.5, u)
    p = prng.choice([0.05, 0.15, 0.5, 1.0], u)
    scale = np.sqrt(5 / 3)
    xi = rng.standard_t(5, size=(n, 1, u)) / scale
    eta = rng.standard_t(5, size=(n, t, u)) / scale
    a = (rng.random((n, 1, u)) < p) * (alpha * xi + beta * eta)
    return a, (p * beta**2).sum() / (p * (alpha**2 + beta**2)).sum()


def _cnn_like(rng, n):
    """A ReLU conv layer on smoothed-noise 8×8 images under the 4 rotations by 90°: many
    units per layer, a third of them sparse; no closed form, so the large-N value is measured."""
    from scipy.ndimage import convolve, uniform_filter

    images = uniform_filter(rng.normal(size=(n, 8, 8)), size=(1, 3, 3))
    kernels = np.random.default_rng(321).normal(size=(4, 3, 3))
    bias = np.array([-0.4, -0.1, 0.0, -0.6])
    rotated = np.stack([np.rot90(images, k, axes=(1, 2)) for k in range(4)], axis=1)
    maps = [
        np.maximum(convolve(rotated, k[None, None], mode="wrap") + b, 0)
        for k, b in zip(kernels, bias, strict=True)
    ]
    return np.stack(maps, axis=-1)  # (N, T, 8, 8, 4)


def _coverage(draw, truth, reps, n, dispersion):
    hits, widths, estimates = 0, [], []
    rng = np.random.default_rng(11)
    for _ in range(reps):
        cube = make_cube({"l": draw(rng, n)})
        out = bootstrap(normalized_variance, cube, reduce="ratio_of_means", dispersion=dispersion)
        low, high, est = (float(out[k].values[0]) for k in ("low", "high", "estimate"))
        hits += low <= truth <= high
        widths.append(high - low)
        estimates.append(est)
    spread = np.subtract(*np.quantile(estimates, [0.975, 0.025]))
    return hits / reps, float(np.mean(widths)) / spread


def test_intervals_cover_a_known_population_value():
    truth = _population_case(np.random.default_rng(0), 1)[1]
    coverage, width = _coverage(lambda r, n: _population_case(r, n)[0], truth, 120, 80, "var")
    assert coverage >= 0.9
    assert 0.5 <= width <= 2.0


def test_intervals_cover_the_large_n_value_of_a_cnn_like_layer():
    big = make_cube({"l": _cnn_like(np.random.default_rng(99), 20000)})
    truth = float(by_layer(normalized_variance(big, parts=True), reduce="ratio_of_means")[0])
    coverage, width = _coverage(_cnn_like, truth, 150, 60, "std")
    assert coverage >= 0.9
    assert 0.5 <= width <= 2.0


def test_jackknife_on_a_zarr_store_and_a_distributed_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    import tmx

    from .test_store import _lazy_cube

    cube = _lazy_cube(n_s=23, n_t=6, n_u=30, chunks=(5, 6, 30))
    expected = normalized_variance(cube.compute(), parts=True, bias_correction="jackknife")
    tmx.save(cube, tmp_path / "cube.zarr")
    opened = tmx.open(tmp_path / "cube.zarr")
    parts = normalized_variance(opened, parts=True, bias_correction="jackknife")
    assert parts["nv"].chunks is not None  # lazy over the store
    xr.testing.assert_allclose(parts.compute(), expected, rtol=1e-9, atol=1e-12)
    layer = by_layer(parts, reduce="ratio_of_means")
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
    ):
        remote = layer.compute()
    local = by_layer(expected, reduce="ratio_of_means")
    np.testing.assert_allclose(remote, local, rtol=1e-9)
    np.testing.assert_allclose(remote["jackknife_se"], local["jackknife_se"], rtol=1e-8)
