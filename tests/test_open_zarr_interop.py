"""A cube read back by plain ``xr.open_zarr`` (zarr 3 gives string coordinates NumPy 2's
``StringDType``) works with every measure, summary and introspector."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

import tmx
from tmx import introspect

from .test_store import _lazy_cube


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    path = tmp_path_factory.mktemp("interop") / "cube.zarr"
    cube = _lazy_cube(n_s=12, chunks=(4, 10, 30))
    tmx.save(cube, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opened = xr.open_zarr(path)["activation"]
    return cube.compute(), opened


CALLS = {
    "by_layer": lambda c: tmx.by_layer(tmx.normalized_variance(c)),
    "by_channel": lambda c: tmx.by_channel(tmx.normalized_variance(c)),
    "ratio_of_means": lambda c: tmx.by_layer(
        tmx.normalized_variance(c, parts=True, bias_correction="jackknife"),
        reduce="ratio_of_means",
    ),
    "pool_mean": lambda c: tmx.normalized_variance(c, pool="mean"),
    "distance": lambda c: tmx.normalized_distance(c, per="channel"),
    "goodfellow": lambda c: tmx.goodfellow(c)["score"],
    "anova": lambda c: tmx.anova_invariance(c)["reject"].astype(float),
    "bootstrap": lambda c: tmx.bootstrap(tmx.normalized_variance, c, reduce="ratio_of_means")[
        "estimate"
    ],
    "convergence": lambda c: tmx.convergence(tmx.normalized_variance, c, sizes=(6, 12))["estimate"],
    "pfa": lambda c: introspect.pfa(c, transformation="stack", gram="float64")["eigenvalues"],
    "iua": lambda c: introspect.iua(c, transformation="stack")["mean_inactive"],
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_open_zarr_cube_gives_the_same_numbers(pair, name):
    cube, opened = pair
    assert opened["layer"].dtype.kind != "U"  # the case this test is about: not numpy's <U
    expected = CALLS[name](cube)
    got = CALLS[name](opened)
    np.testing.assert_allclose(
        np.asarray(got.values, dtype=float),
        np.asarray(expected.values, dtype=float),
        rtol=1e-9,
        atol=1e-9,
    )
