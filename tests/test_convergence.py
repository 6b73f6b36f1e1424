"""convergence: nested subsamples, intervals that narrow as 1/√N, the plot, the examples."""

from __future__ import annotations

import doctest

import matplotlib
import numpy as np
import pytest

import tmx
import tmx.plot
from tmx.measures import bootstrap, by_layer, convergence, normalized_variance

from .measures_util import make_cube

matplotlib.use("Agg")


def _cube(n=400, seed=0):
    rng = np.random.default_rng(seed)
    sample = rng.normal(size=(n, 1, 6))
    noise = rng.normal(size=(n, 5, 6)) * np.linspace(0.2, 1.5, 6)
    active = rng.random((n, 1, 6)) < np.linspace(0.2, 1, 6)
    return make_cube({"a": (active * (sample + noise))[..., :3], "b": (sample + noise)[..., 3:]})


def test_each_size_is_the_measure_on_the_first_samples_of_one_permutation():
    cube = _cube()
    curve = convergence(normalized_variance, cube, sizes=(20, 80, 400), seed=3)
    order = np.random.default_rng(3).permutation(400)
    for s in (20, 80, 400):
        sub = cube.isel(sample=np.sort(order[:s]))
        expected = bootstrap(normalized_variance, sub, reduce="ratio_of_means")
        for key in ("estimate", "low", "high", "uncorrected"):
            np.testing.assert_allclose(curve[key].sel(size=s), expected[key], rtol=1e-12)
    assert curve.estimate.dims == ("size", "layer")
    np.testing.assert_array_equal(curve["size"], [20, 80, 400])
    # nested: the first s samples of the permutation contain those of every smaller size
    assert set(order[:20]) <= set(order[:80])


def test_width_shrinks_like_one_over_root_n():
    cube = _cube(1600, seed=1)
    curve = convergence(normalized_variance, cube, sizes=(100, 400, 1600))
    ratio = (curve.width.sel(size=100) / curve.width.sel(size=1600)).values
    np.testing.assert_allclose(ratio, 4.0, rtol=0.35)  # √(1600/100)


def test_per_unit_lazy_and_other_measures():
    cube = _cube(120)
    lazy = convergence(
        normalized_variance, cube.chunk({"sample": 17}), sizes=(30, 120), reduce=None
    )
    eager = convergence(normalized_variance, cube, sizes=(30, 120), reduce=None)
    assert lazy.estimate.dims == ("size", "unit")
    np.testing.assert_allclose(lazy.estimate, eager.estimate, rtol=1e-9)
    other = convergence(
        lambda c: c.mean("transformation").std("sample"),
        cube,
        sizes=(30, 60),
        n=20,
        reduce="mean",
    )
    assert other.attrs["method"] == "bc" and other.estimate.dims == ("size", "layer")


@pytest.mark.parametrize(
    ("sizes", "match"),
    [
        ((50, 20), "strictly increasing"),
        ((2, 20), "between 3"),
        ((20, 500), "between 3"),
        ("abc", "sequence of integers"),
        ((), "non-empty"),
    ],
)
def test_errors(sizes, match):
    with pytest.raises(ValueError, match=match):
        convergence(normalized_variance, _cube(100), sizes=sizes)


def test_default_sizes_and_plot():
    cube = _cube(200)
    curve = convergence(normalized_variance, cube)
    assert curve["size"].values[-1] == 200 and len(curve["size"]) >= 4
    fig = tmx.plot.convergence(curve)
    assert len(fig.axes[0].lines) == 2 and fig.axes[0].get_xscale() == "log"
    with pytest.raises(ValueError, match="not in the curve"):
        tmx.plot.convergence(curve, layers=["nope"])
    with pytest.raises(ValueError, match=r"Dataset of tmx\.convergence"):
        tmx.plot.convergence(by_layer(normalized_variance(cube)))


@pytest.mark.parametrize(
    "module",
    [
        "tmx.measures.convergence",
        "tmx.measures.bootstrap",
        "tmx.measures.variance",
        "tmx.plot.convergence",
    ],
)
def test_docstring_examples_run(module):
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_a_single_layer_name_is_one_layer_everywhere():
    from tmx.introspect import familiarity

    cube = _cube(60)
    curve = convergence(normalized_variance, cube, sizes=(20, 60))
    fig = tmx.plot.convergence(curve, layers="a")
    assert len(fig.axes[0].lines) == 1
    fam = familiarity(cube.isel(transformation=0), layers="b", n_components=1)
    assert list(fam.layer.values) == ["b"]
