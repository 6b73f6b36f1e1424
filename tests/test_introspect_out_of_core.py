"""PFA and IUA on a saved Zarr cube: streamed chunk by chunk, with memory bounded by a chunk."""

from __future__ import annotations

import tracemalloc

import dask
import numpy as np
import pytest
import xarray as xr

import tmx
from tmx.introspect.iua import iua
from tmx.introspect.pfa import pfa, pfa_recipe

from .measures_util import make_cube

N, T, CHUNK = 6000, 2, 150


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> tuple[xr.DataArray, xr.DataArray]:
    """A cube saved with sample chunks of 150 rows, opened back lazily; and its values."""
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(6, 16))
    conv = np.maximum(rng.normal(size=(N, T, 4, 4, 6)) @ basis, 0).astype(np.float32)
    dense = np.maximum(rng.normal(size=(N, T, 48)), 0).astype(np.float32)
    dense[..., :5] = 0  # dead units
    cube = make_cube({"conv": conv, "dense": dense})
    path = tmp_path_factory.mktemp("ooc") / "cube.zarr"
    tmx.save(cube.chunk({"sample": CHUNK}), path)
    lazy = tmx.open(path)
    assert lazy.chunks[0][0] == CHUNK, "the store keeps the sample chunks"
    return lazy, cube


def _peak(fn):
    """Result of fn() and the peak traced allocation (bytes) while it ran, single-threaded."""
    with dask.config.set(scheduler="synchronous"):
        tracemalloc.start()
        try:
            out = fn()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return out, peak


def test_pfa_streams_a_zarr_cube(stored) -> None:
    lazy, cube = stored
    full = N * T * cube.sizes["unit"] * 8  # the stacked responses in float64
    out, peak = _peak(lambda: pfa(lazy, transformation="stack"))
    assert peak < full / 8, f"peak {peak / 2**20:.1f} MiB for {full / 2**20:.1f} MiB of data"
    eager = pfa(cube, transformation="stack", gram="float64")
    # float32 data: float32 cross-products per chunk, merged in float64
    xr.testing.assert_allclose(
        out.drop_vars("eigenvectors"), eager.drop_vars("eigenvectors"), rtol=1e-5, atol=1e-6
    )
    strict = pfa(lazy, transformation="stack", gram="float64")
    xr.testing.assert_allclose(strict, eager, rtol=1e-10, atol=1e-10)
    # the streamed covariance is np.cov of the max-pooled channels
    rows = cube.values.reshape(N * T, -1)
    conv = rows[:, cube["layer"].values == "conv"].reshape(N * T, 16, 16).max(axis=1)
    np.testing.assert_allclose(
        out["covariance"].sel(layer="conv").values[:16, :16],
        np.cov(conv.astype(np.float64), rowvar=False),
        rtol=1e-5,
        atol=1e-6,
    )
    recipe = pfa_recipe(out)
    assert int(recipe["recommended"].sel(layer="dense")) <= 48 - 5, "dead units never kept"


def test_iua_streams_a_zarr_cube(stored) -> None:
    lazy, cube = stored
    full = N * T * cube.sizes["unit"] * 8
    out, peak = _peak(lambda: iua(lazy, transformation="stack"))
    assert peak < full / 8, f"peak {peak / 2**20:.1f} MiB for {full / 2**20:.1f} MiB of data"
    rows = cube.values.reshape(N * T, -1)
    np.testing.assert_array_equal(out["inactive_count"].values, (np.abs(rows) <= 1e-8).sum(axis=0))
    xr.testing.assert_identical(out, iua(cube, transformation="stack"))
