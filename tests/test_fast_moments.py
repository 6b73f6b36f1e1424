"""The fused moments (``moments_both``: TV's and SV's block moments from one pass over each
block, compiled) against the float64 numpy reference, on uneven chunks, dead and constant units."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import tmx
from tmx.measures import _common as C

from .measures_util import make_cube

CHUNKINGS = [
    None,
    {"sample": (5, 1, 7), "transformation": (2, 4, 1), "unit": (3, 9, 8)},
    {"sample": (1, 12), "transformation": (7,), "unit": (19, 1)},
    {"sample": (13,), "transformation": (1,) * 7, "unit": (20,)},
]


def random_values(dtype, seed=0) -> np.ndarray:
    """(13, 7, 20): normal units at several scales, a large-mean small-spread unit, dead
    (all-zero) ReLU units and constant units at non-zero offsets."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(13, 7, 20)) * rng.uniform(0.01, 10, size=20) + rng.normal(size=20)
    a[:, :, 3] = 1e4 + 1e-2 * rng.normal(size=(13, 7))
    a[:, :, 4:7] = 0.0  # dead
    a[:, :, 7] = 1e4 / 3  # constant, not exact in binary
    a[:, :, 8] = 123.456
    a[:, :, 9] = np.maximum(a[:, :, 9], 0)  # ReLU: many zeros
    a[:, :, 10] = rng.normal(size=(13, 1)) + 1e-6 * rng.normal(size=(13, 7))  # near-invariant
    return a.astype(dtype)


def reference(values: np.ndarray, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    a = values.astype(np.float64)
    return a.std(axis=1, ddof=ddof).mean(0), a.std(axis=0, ddof=ddof).mean(0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fast", [True, False])
def test_block_moments_both_equal_block_moments(dtype, fast):
    if fast:
        pytest.importorskip("numba")
    x = random_values(dtype)
    along_t, along_s = C.block_moments_both(x, fast=fast)
    ref_t, ref_s = C.block_moments(x, 1), C.block_moments(x, 0)
    assert along_t.shape == ref_t.shape == (3, 13, 1, 20) and along_t.dtype == np.float64
    assert along_s.shape == ref_s.shape == (3, 1, 7, 20)
    np.testing.assert_allclose(along_t, ref_t, rtol=1e-13, atol=0)
    np.testing.assert_allclose(along_s, ref_s, rtol=1e-13, atol=0)
    for m2 in (along_t[2], along_s[2]):  # dead and constant units: exactly zero spread
        assert (m2[..., 4:9] == 0).all()
    a = x.astype(np.float64)
    np.testing.assert_allclose(along_t[1, :, 0], a.mean(axis=1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(along_s[2, 0], a.var(axis=0) * 13, rtol=1e-10, atol=1e-20)


def test_block_moments_both_of_empty_and_integer_blocks():
    empty = np.zeros((0, 3, 4), np.float32)
    along_t, along_s = C.block_moments_both(empty)
    assert along_t.shape == (3, 0, 1, 4) and (along_s == 0).all()
    ints = np.arange(24).reshape(2, 3, 4)
    along_t, along_s = C.block_moments_both(ints)
    np.testing.assert_allclose(along_t, C.block_moments(ints, 1), rtol=1e-15)
    np.testing.assert_allclose(along_s, C.block_moments(ints, 0), rtol=1e-15)


@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_moments_both_equal_moments_on_uneven_chunks(dtype, chunks):
    values = random_values(dtype, seed=1)
    data = values
    if chunks is not None:
        sizes = dict(zip(("sample", "transformation", "unit"), values.shape, strict=True))
        data = da.from_array(values, chunks=tuple(chunks.get(k, v) for k, v in sizes.items()))
    along_t, along_s = C.moments_both(data)
    np.testing.assert_allclose(np.asarray(along_t), np.asarray(C.moments(data, 1)), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(along_s), np.asarray(C.moments(data, 0)), rtol=1e-12)
    a = values.astype(np.float64)
    np.testing.assert_allclose(np.asarray(along_t)[2], a.var(axis=1) * 7, rtol=1e-9, atol=1e-20)
    np.testing.assert_allclose(np.asarray(along_s)[1], a.mean(axis=0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalized_variance_fast_path_equals_float64_reference(dtype, chunks):
    values = random_values(dtype, seed=2)
    cube = make_cube({"dense": values})
    if chunks is not None:
        cube = cube.chunk(chunks)
    parts = tmx.normalized_variance(cube, parts=True).compute()
    tv, sv = reference(values)
    live = np.ones(20, bool)
    live[4:9] = False  # the reference's float64 spread of a constant need not be 0
    np.testing.assert_allclose(parts.tv, tv, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(parts.sv, sv, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(parts.nv[live], tv[live] / sv[live], rtol=1e-9)
    # dead and constant units: TV = SV = 0 exactly, NV = 1, flagged inactive
    assert (parts.tv[4:9] == 0).all() and (parts.sv[4:9] == 0).all()
    assert (parts.nv[4:9] == 1).all() and parts.inactive[4:9].all()
    assert not parts.inactive[[0, 1, 2, 3, 9, 10]].any()


def test_fast_and_numpy_paths_give_the_same_measure(monkeypatch):
    pytest.importorskip("numba")
    cube = make_cube({"dense": random_values(np.float32, seed=3)}).chunk(CHUNKINGS[1])
    fast = tmx.normalized_variance(cube, parts=True).compute()
    monkeypatch.setitem(C._COMPILED, C._both_kernel, None)
    slow = tmx.normalized_variance(cube, parts=True).compute()
    xr.testing.assert_allclose(fast, slow, rtol=1e-13)


def test_nvse_on_uneven_chunks_equals_the_float64_reference():
    from tmx import transforms as T

    rng = np.random.default_rng(4)
    maps = rng.normal(size=(9, 4, 6, 6, 3)).astype(np.float32)
    maps[..., 1] = 0.0  # a dead channel
    cube = make_cube({"conv": maps})
    tset = T.rotation([0, 90, 180, 270])
    cube.attrs["input_shape"] = [6, 6, 1]
    eager = tmx.invert(cube, tset).values.astype(np.float64)
    tv, sv = reference(eager)
    lazy = cube.chunk({"sample": (2, 7), "transformation": (3, 1), "unit": (50, 58)})
    parts = tmx.normalized_variance(tmx.invert(lazy, tset), parts=True).compute()
    np.testing.assert_allclose(parts.tv, tv, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(parts.sv, sv, rtol=1e-9, atol=1e-12)
    dead = np.asarray(parts.channel == 1)
    assert (parts.tv[dead] == 0).all() and (parts.nv[dead] == 1).all()
