"""`introspect.reduce` reads small dask-backed responses once: labels and data in one compute."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from dask.callbacks import Callback

from tmx import introspect


class _Count(Callback):
    def __init__(self) -> None:
        super().__init__()
        self.computes = 0

    def _start(self, dsk) -> None:  # one call per dask compute
        self.computes += 1


def _responses(lazy: bool) -> xr.DataArray:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 7)) @ rng.normal(size=(7, 7)) + 10.0
    layer = np.array(["a"] * 3 + ["b"] * 4)
    data = xr.DataArray(
        x,
        dims=("sample", "unit"),
        coords={"layer": ("unit", layer), "channel": ("unit", [0, 1, 2, 0, 1, 2, 3])},
    )
    return data.chunk({"sample": 16}) if lazy else data


@pytest.mark.parametrize("method", ["pca"])
def test_one_compute_and_numpy_numbers(method: str) -> None:
    lazy = _responses(True)
    assert isinstance(lazy.data, da.Array)
    with _Count() as count:
        got = introspect.reduce(lazy, method, n_components=2)
    assert count.computes == 1
    want = introspect.reduce(_responses(False), method, n_components=2)
    np.testing.assert_allclose(got.values, want.values, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        got["explained_variance_ratio"].values, want["explained_variance_ratio"].values, rtol=1e-12
    )
    # and against the SVD of the centred block, layer "b", up to sign
    xb = _responses(False).values[:, 3:]
    xb = xb - xb.mean(axis=0)
    u, s, _ = np.linalg.svd(xb, full_matrices=False)
    ref = u[:, :2] * s[:2]
    proj = got.sel(layer="b").values
    for k in range(2):
        sign = np.sign(proj[:, k] @ ref[:, k])
        np.testing.assert_allclose(proj[:, k], sign * ref[:, k], rtol=1e-9, atol=1e-9)


def test_incremental_keeps_streaming_by_chunks() -> None:
    lazy = _responses(True)
    with _Count() as count:
        out = introspect.reduce(lazy, "incremental_pca", n_components=2)
    assert count.computes > 1  # chunk by chunk, never read whole
    assert out.attrs["batch_size"] == "dask chunks"
