"""bootstrap: the vectorised path equals explicit resampling; intervals are seeded and sane."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from tmx.measures import (
    bootstrap,
    by_layer,
    normalized_variance,
    sample_variance,
    transformation_variance,
)

from .measures_util import cube_a, random_cube


@pytest.mark.parametrize("over", ["sample", "transformation", ("sample", "transformation")])
@pytest.mark.parametrize(
    ("measure", "options"),
    [
        (normalized_variance, {}),
        (transformation_variance, {"dispersion": "var"}),
        (sample_variance, {"ddof": 0}),
        (normalized_variance, {"pool": "mean", "zero_div": "nan"}),
        (normalized_variance, {"pool": "pre_max"}),
    ],
)
def test_vectorised_replicates_equal_explicit_resampling(over, measure, options):
    cube = random_cube(7, n=8, t=5)
    fast = bootstrap(
        measure, cube, n=15, over=over, seed=3, method="bc", return_replicates=True, **options
    )
    slow = bootstrap(
        lambda c, **kw: measure(c, **kw),
        cube,
        n=15,
        over=over,
        seed=3,
        return_replicates=True,
        **options,
    )
    assert fast.attrs["path"] == "vectorised" and slow.attrs["path"] == "loop"
    np.testing.assert_allclose(fast.replicates, slow.replicates, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fast.estimate, measure(cube, **options), rtol=1e-10)
    np.testing.assert_allclose(fast.low, slow.low, rtol=1e-9, atol=1e-12)


def test_intervals_are_seeded_cover_the_estimate_and_shrink_with_n_samples():
    small = random_cube(1, n=10, t=6)
    large = random_cube(1, n=200, t=6)
    a = bootstrap(normalized_variance, small, n=200, seed=1, method="bc")
    b = bootstrap(normalized_variance, small, n=200, seed=1, method="bc")
    c = bootstrap(normalized_variance, small, n=200, seed=2, method="bc")
    xr.testing.assert_identical(a, b)
    assert not np.allclose(a.low, c.low)
    assert ((a.low <= a.estimate) & (a.estimate <= a.high)).mean() > 0.8
    wide = float((a.high - a.low).mean())
    narrow = float(
        (
            bootstrap(normalized_variance, large, n=200, seed=1, method="bc").high
            - bootstrap(normalized_variance, large, n=200, seed=1, method="bc").low
        ).mean()
    )
    assert narrow < wide / 2


def test_per_layer_intervals_including_ratio_of_means():
    cube = cube_a()
    out = bootstrap(normalized_variance, cube, n=50, seed=0, reduce="mean", method="bc")
    assert out.estimate.dims == ("layer",)
    np.testing.assert_allclose(out.estimate, by_layer(normalized_variance(cube)), rtol=1e-10)
    seed_style = bootstrap(
        normalized_variance,
        cube,
        n=50,
        seed=0,
        reduce="ratio_of_means",
        dispersion="var",
        zero_div="nan",
        method="bc",
    )
    parts = normalized_variance(cube, parts=True, dispersion="var", zero_div="nan")
    np.testing.assert_allclose(
        seed_style.estimate, by_layer(parts, reduce="ratio_of_means"), rtol=1e-10
    )


def test_lazy_and_numpy_cubes_give_the_same_intervals():
    cube = random_cube(4, n=12, t=4)
    for method in ("bc", None):
        eager = bootstrap(normalized_variance, cube, n=30, seed=5, method=method)
        lazy = bootstrap(
            normalized_variance, cube.chunk({"sample": 5}), n=30, seed=5, method=method
        )
        xr.testing.assert_allclose(eager, lazy, rtol=1e-9)


def test_other_measures_use_the_loop():
    cube = random_cube(2, n=6, t=4)
    out = bootstrap(lambda c: c.mean("transformation").std("sample"), cube, n=5, over="sample")
    assert out.attrs["path"] == "loop" and out.estimate.dims == ("unit",)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 1}, "n must be"),
        ({"over": "units"}, "over must be"),
        ({"ci": 1.5}, "ci must lie"),
        ({"seed": "a"}, "seed must be"),
        ({"reduce": "sum"}, "reduce must be one of"),
        ({"parts": True}, "parts=True"),
    ],
)
def test_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bootstrap(normalized_variance, random_cube(), **kwargs)


def test_percentile_and_bias_corrected_bounds_match_independent_formulas():
    from scipy.stats import norm

    cube = random_cube(8, n=15, t=5)
    for method in ("percentile", "bc"):
        out = bootstrap(
            normalized_variance, cube, n=60, seed=4, method=method, return_replicates=True
        )
        reps = out.replicates.values
        est = out.estimate.values
        for u in range(reps.shape[1]):
            r = reps[:, u][np.isfinite(reps[:, u])]
            if method == "percentile":
                levels = [0.025, 0.975]
            else:
                share = ((r < est[u]).sum() + 0.5 * (r == est[u]).sum()) / len(r)
                share = min(max(share, 0.5 / len(r)), 1 - 0.5 / len(r))
                z0 = norm.ppf(share)
                levels = norm.cdf(2 * z0 + norm.ppf([0.025, 0.975]))
            np.testing.assert_allclose(
                [out.low.values[u], out.high.values[u]], np.quantile(r, levels), rtol=1e-12
            )
        assert out.attrs["method"] == method


def test_bias_corrected_intervals_cover_the_estimate_more_often():
    cube = random_cube(9, n=12, t=4)
    bc = bootstrap(normalized_variance, cube, n=200, seed=0, method="bc")
    pct = bootstrap(normalized_variance, cube, n=200, seed=0, method="percentile")

    def covered(res):
        return float(((res.low <= res.estimate) & (res.estimate <= res.high)).mean())

    assert covered(bc) >= covered(pct)
    assert covered(bc) > 0.9


def test_replicates_are_stable_for_large_mean_small_spread():
    from .measures_util import make_cube

    rng = np.random.default_rng(0)
    values = (1e4 + 1e-2 * rng.normal(size=(60, 6, 3))).astype(np.float32)
    cube = make_cube({"dense": values}).chunk({"sample": 7})
    for over in ("sample", ("sample", "transformation")):
        fast = bootstrap(
            normalized_variance, cube, n=8, seed=1, over=over, method="bc", return_replicates=True
        )
        slow = bootstrap(
            lambda c: normalized_variance(c),
            cube.compute(),
            n=8,
            seed=1,
            over=over,
            return_replicates=True,
        )
        np.testing.assert_allclose(fast.replicates, slow.replicates, rtol=1e-6)
        np.testing.assert_allclose(fast.estimate, normalized_variance(cube), rtol=1e-6)


def test_memory_budget_bounds_the_replicates_and_never_changes_the_numbers():
    import tracemalloc

    rng = np.random.default_rng(0)
    from .measures_util import make_cube

    cube = make_cube({"d": rng.normal(size=(40, 8, 500)) + rng.normal(size=(40, 1, 500))})
    kwargs = {"n": 400, "seed": 2, "method": "bc", "over": "sample", "reduce": "mean"}
    tracemalloc.start()
    small = bootstrap(normalized_variance, cube, memory=2**22, **kwargs)
    _, peak_small = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    tracemalloc.start()
    whole = bootstrap(normalized_variance, cube, memory=2**30, **kwargs)
    _, peak_whole = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert small.attrs["passes"] > 10 and whole.attrs["passes"] == 1
    xr.testing.assert_allclose(small, whole, rtol=1e-12)  # replicate b draws the same always
    # one pass holds 401 replicates' (T, U) sums: ~100 MB; the 4 MiB budget stays near it
    assert peak_whole > 50 * 2**20
    assert peak_small < 12 * 2**20


def test_progress_bar_when_asked_and_quiet_under_pytest(capsys):
    cube = random_cube(3, n=12, t=4).chunk({"sample": 4})
    bootstrap(normalized_variance, cube, n=5, method="bc", progress=True)
    shown = capsys.readouterr().out
    assert "3/3" in shown and "block" in shown
    bootstrap(normalized_variance, cube, n=5, method="bc")
    bootstrap(normalized_variance, cube)
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="progress must be"):
        bootstrap(normalized_variance, cube, progress="yes")
    with pytest.raises(ValueError, match="memory must be"):
        bootstrap(normalized_variance, cube, memory=10)
