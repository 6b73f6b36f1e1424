"""Inactive Unit Analysis against direct numpy computations."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from tmx import __version__
from tmx.introspect.iua import iua

N = 23


def _responses(seed: int = 0, chunks: tuple[int, ...] | None = None, n: int = N) -> xr.DataArray:
    """A dense layer (6 units) and a conv layer (2 channels × 2 × 3) with known zeros."""
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(n, 6))
    dense[rng.random(dense.shape) < 0.3] = 0.0
    dense[:, 5] = 0.0  # a dead unit
    conv = np.maximum(rng.normal(size=(n, 12)), 0.0)  # ReLU: about half zeros
    conv[0, 3] = 1e-9  # within the default atol
    values = np.concatenate([dense, conv], axis=1)
    ch, yy, xx = np.meshgrid(np.arange(2), np.arange(2), np.arange(3), indexing="ij")
    coords = {
        "sample": np.arange(n),
        "label": ("sample", np.arange(n) % 3),
        "layer": ("unit", np.array(["dense"] * 6 + ["conv"] * 12)),
        "channel": ("unit", np.concatenate([np.arange(6), ch.ravel()])),
        "y": ("unit", np.concatenate([np.full(6, -1), yy.ravel()])),
        "x": ("unit", np.concatenate([np.full(6, -1), xx.ravel()])),
    }
    data = values if chunks is None else da.from_array(values, chunks=(chunks, -1))
    return xr.DataArray(data, dims=("sample", "unit"), coords=coords)


def _expected(values: np.ndarray, layer: np.ndarray, atol: float) -> dict[str, np.ndarray]:
    mask = np.abs(values) <= atol
    per_probe = np.stack([mask[:, layer == name].sum(axis=1) for name in ("dense", "conv")], 1)
    return {
        "per_probe": per_probe,
        "mean": per_probe.mean(axis=0),
        "std": per_probe.std(axis=0, ddof=0),
        "count": mask.sum(axis=0),
        "prop": mask.sum(axis=0) / values.shape[0],
    }


def _check(out: xr.Dataset, values: np.ndarray, layer: np.ndarray, atol: float) -> None:
    exp = _expected(values, layer, atol)
    assert list(out["layer"].values) == ["dense", "conv"]
    np.testing.assert_array_equal(out["inactive_per_probe"].values, exp["per_probe"])
    np.testing.assert_allclose(out["mean_inactive"].values, exp["mean"], rtol=1e-12)
    np.testing.assert_allclose(out["std_inactive"].values, exp["std"], rtol=1e-12)
    np.testing.assert_array_equal(out["inactive_count"].values, exp["count"])
    np.testing.assert_allclose(out["inactive_proportion"].values, exp["prop"], rtol=1e-12)
    np.testing.assert_array_equal(out["n_units"].values, [6, 12])


def test_counts_match_numpy() -> None:
    r = _responses()
    out = iua(r)
    _check(out, r.values, r["layer"].values, 1e-8)
    assert out.attrs == {
        "atol": 1e-8,
        "n_samples": N,
        "introspector": "iua",
        "tmx_version": __version__,
    }
    assert out["inactive_per_probe"].dims == ("sample", "layer")
    assert out["inactive_count"].dims == ("unit",)
    # the dead dense unit is inactive on every probe
    assert out["inactive_count"].values[5] == N
    assert out["inactive_proportion"].values[5] == 1.0
    # unit and sample coordinates kept (full unit resolution, no pooling)
    np.testing.assert_array_equal(out["unit_layer"].values, r["layer"].values)
    for name in ("channel", "y", "x"):
        np.testing.assert_array_equal(out[name].values, r[name].values)
    np.testing.assert_array_equal(out["label"].values, r["label"].values)


@pytest.mark.parametrize("chunks", [(5, 11, 7), (23,), (1, 22)])
def test_dask_parity_uneven_chunks(chunks: tuple[int, ...]) -> None:
    eager = iua(_responses())
    lazy_in = _responses(chunks=chunks)
    assert isinstance(lazy_in.data, da.Array)
    lazy = iua(lazy_in)
    xr.testing.assert_identical(eager, lazy)


def test_more_samples_than_one_numpy_block() -> None:
    """4133 samples: more than the 4096-row blocks numpy responses are counted in."""
    r = _responses(n=4133)
    out = iua(r)
    _check(out, r.values, r["layer"].values, 1e-8)
    xr.testing.assert_identical(out, iua(r.chunk({"sample": -1})))


def test_atol() -> None:
    r = _responses()
    values, layer = r.values, r["layer"].values
    strict = iua(r, atol=0.0)
    _check(strict, values, layer, 0.0)
    # 1e-9 is inactive at the default atol, active at atol=0
    assert iua(r)["inactive_count"].values[6 + 3] == strict["inactive_count"].values[6 + 3] + 1
    loose = iua(r, atol=0.5)
    _check(loose, values, layer, 0.5)
    assert (loose["inactive_count"].values >= iua(r)["inactive_count"].values).all()
    with pytest.raises(ValueError, match="atol"):
        iua(r, atol=-1.0)
    with pytest.raises(ValueError, match="atol"):
        iua(r, atol=float("nan"))


def test_dense_only_single_layer() -> None:
    """A plain (sample, unit) array without layer/y/x coordinates: one dense layer, no crash."""
    values = np.array([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
    out = iua(xr.DataArray(values, dims=("sample", "unit")))
    assert list(out["layer"].values) == ["responses"]
    np.testing.assert_array_equal(out["inactive_per_probe"].values[:, 0], [2, 2])
    np.testing.assert_array_equal(out["inactive_count"].values, [1, 1, 2])
    np.testing.assert_allclose(out["std_inactive"].values, [0.0])


def _cube(r: xr.DataArray, t: int = 3) -> tuple[xr.DataArray, np.ndarray]:
    rng = np.random.default_rng(5)
    base = r.values
    values = np.stack([base * (k + 1) for k in range(t)], axis=1)
    values[rng.random(values.shape) < 0.1] = 0.0
    cube = xr.DataArray(
        da.from_array(values, chunks=(7, t, -1)),
        dims=("sample", "transformation", "unit"),
        coords={k: c for k, c in r.coords.items() if k != "label"},
    )
    return cube, values


def test_cube_transformation_index_and_stack() -> None:
    r = _responses()
    cube, values = _cube(r)
    layer = r["layer"].values
    _check(iua(cube, transformation=0), values[:, 0], layer, 1e-8)
    _check(iua(cube, transformation=2), values[:, 2], layer, 1e-8)
    stacked = iua(cube, transformation="stack")
    _check(stacked, values.reshape(N * 3, -1), layer, 1e-8)
    assert stacked.attrs["n_samples"] == N * 3
    np.testing.assert_array_equal(stacked["source_sample"].values, np.repeat(np.arange(N), 3))
    with pytest.raises(ValueError, match="transformation"):
        iua(cube)
