"""Bad cube sizes get one named ValueError from every measure (issue 23, item 5).

Every measure needs two samples, two transformations where it compares transformations, and one
unit. Before, ``goodfellow`` returned all-NaN for N = 1 or T = 1, ``bootstrap`` raised
ZeroDivisionError without units, ``by_layer`` an xarray concat error, ``by_channel`` an
IndexError and ``cka`` an IndexError; ``transformation_distance`` of one sample returned numbers.
Now each raises ``ValueError`` "<argument>: <measure> needs at least <k> <what>; got <N|T|U> = m".
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import xarray as xr

import tmx

from .measures_util import flat_cube


def _nv(cube):
    return tmx.normalized_variance(cube)


# name in the message, the call, whether it needs T >= 2, its minimum N
MEASURES = [
    ("transformation_variance", tmx.transformation_variance, True, 2),
    ("sample_variance", tmx.sample_variance, True, 2),
    ("normalized_variance", tmx.normalized_variance, True, 2),
    ("transformation_distance", tmx.transformation_distance, True, 2),
    ("sample_distance", tmx.sample_distance, False, 2),
    ("normalized_distance", tmx.normalized_distance, True, 2),
    ("goodfellow", tmx.goodfellow, True, 2),
    ("anova", tmx.anova, True, 2),
    ("anova_invariance", tmx.anova_invariance, True, 2),
    ("bootstrap", lambda c: tmx.bootstrap(tmx.normalized_variance, c, n=5, method="bc"), True, 2),
    ("bootstrap", lambda c: tmx.bootstrap(tmx.normalized_variance, c, n=5), True, 2),
    (
        "bootstrap",
        lambda c: tmx.bootstrap(tmx.sample_distance, c, n=5, over="sample"),
        False,
        2,
    ),
    ("convergence", lambda c: tmx.convergence(tmx.normalized_variance, c, n=5), False, 2),
    ("cka", tmx.cka, False, 2),
    ("cka_invariance", tmx.cka_invariance, True, 2),
    ("equivariance_map", tmx.equivariance_map, True, 4),
    ("equivalence", tmx.equivalence, False, 4),
]
IDS = [f"{name}-{i}" for i, (name, *_) in enumerate(MEASURES)]


def _cube(n: int, t: int, u: int, lazy: bool) -> xr.DataArray:
    values = np.random.default_rng(0).normal(size=(n, t, u))
    return flat_cube(values, chunks={"sample": 2} if lazy else None)


def _message(name: str, least: int, what: str, symbol: str, got: int) -> str:
    return re.escape(f"cube: {name} needs at least {least} {what}; got {symbol} = {got}")


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize(("name", "measure", "needs_t", "min_n"), MEASURES, ids=IDS)
def test_one_sample_is_a_named_error(name, measure, needs_t, min_n, lazy):
    cube = _cube(1, 3, 4, lazy)
    match = _message(name, min_n, "samples", "N", 1)
    with pytest.raises(ValueError, match=match.replace("cube:", "cube(_a)?:")):
        measure(cube)


@pytest.mark.parametrize(("name", "measure", "needs_t", "min_n"), MEASURES, ids=IDS)
def test_one_transformation_is_a_named_error_where_transformations_are_compared(
    name, measure, needs_t, min_n
):
    cube = _cube(8, 1, 4, lazy=False)
    if not needs_t:
        pytest.skip("the measure does not compare transformations")
    with pytest.raises(ValueError, match=_message(name, 2, "transformations", "T", 1)):
        measure(cube)


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize(("name", "measure", "needs_t", "min_n"), MEASURES, ids=IDS)
def test_no_units_is_a_named_error(name, measure, needs_t, min_n, lazy):
    cube = _cube(8, 3, 0, lazy)
    match = _message(name, 1, "unit", "U", 0).replace("cube:", "cube(_a)?:")
    with pytest.raises(ValueError, match=match):
        measure(cube)


def test_goodfellow_of_one_sample_or_one_transformation_is_no_longer_all_nan():
    with pytest.raises(ValueError, match="goodfellow needs at least 2 samples; got N = 1"):
        tmx.goodfellow(_cube(1, 4, 3, lazy=False))
    with pytest.raises(ValueError, match="goodfellow needs at least 2 transformations; got T = 1"):
        tmx.goodfellow(_cube(30, 1, 3, lazy=False))
    # two of each are enough, and give numbers
    out = tmx.goodfellow(_cube(30, 2, 3, lazy=False), rate=0.2)
    assert np.isfinite(out.score).all()


def test_invert_needs_a_unit_but_allows_one_sample():
    with pytest.raises(ValueError, match=_message("invert", 1, "unit", "U", 0)):
        tmx.invert(_cube(2, 2, 0, lazy=False))
    with pytest.raises(ValueError, match=_message("invert", 1, "sample", "N", 0)):
        tmx.invert(_cube(0, 2, 3, lazy=False))


@pytest.mark.parametrize("reduce", [tmx.by_layer, tmx.by_channel])
def test_layer_and_channel_reductions_of_no_units_are_named_errors(reduce):
    empty = xr.DataArray(
        np.zeros((0,)),
        dims=("unit",),
        coords={
            "layer": ("unit", np.array([], dtype=str)),
            "channel": ("unit", np.zeros(0, np.int64)),
            "y": ("unit", np.zeros(0, np.int64)),
            "x": ("unit", np.zeros(0, np.int64)),
        },
    )
    name = reduce.__name__
    match = re.escape(f"per_unit: {name} needs at least 1 unit; got U = 0")
    with pytest.raises(ValueError, match=match):
        reduce(empty)


def test_analyze_refuses_one_sample_before_running_a_model():
    with pytest.raises(
        ValueError, match=re.escape("x: analyze needs at least 2 samples; got N = 1")
    ):
        tmx.analyze(None, np.zeros((1, 8, 8, 1), np.float32), [0])
