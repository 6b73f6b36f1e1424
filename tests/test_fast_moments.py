"""The fused moments of the variance family (TV's and SV's block moments from one pass over
each block, compiled by numba) seen through ``tmx.normalized_variance``: against the float64
numpy reference to ~1e-12, on uneven, integer and empty blocks, dead and constant units, and
equal to the numpy path that runs without numba."""

from __future__ import annotations

import subprocess
import sys

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import tmx

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
    # one pass in float64 (shifted moments merged across blocks): the two-pass float64
    # reference's numbers to ~1e-12 (a naive one-pass sum would lose ~8 digits on unit 3)
    np.testing.assert_allclose(parts.tv[live], tv[live], rtol=1e-12, atol=0)
    np.testing.assert_allclose(parts.sv[live], sv[live], rtol=1e-12, atol=0)
    np.testing.assert_allclose(parts.nv[live], tv[live] / sv[live], rtol=1e-12)
    # dead and constant units: TV = SV = 0 exactly, NV = 1, flagged inactive
    assert (parts.tv[4:9] == 0).all() and (parts.sv[4:9] == 0).all()
    assert (parts.nv[4:9] == 1).all() and parts.inactive[4:9].all()
    assert not parts.inactive[[0, 1, 2, 3, 9, 10]].any()


def test_integer_and_empty_blocks():
    ints = np.arange(13 * 7 * 20).reshape(13, 7, 20) % 11  # int64, small repeats
    parts = tmx.normalized_variance(make_cube({"dense": ints}), parts=True)
    tv, sv = reference(ints)
    np.testing.assert_allclose(parts.tv, tv, rtol=1e-13)
    np.testing.assert_allclose(parts.sv, sv, rtol=1e-13)
    values = random_values(np.float32, seed=5)
    eager = tmx.normalized_variance(make_cube({"dense": values}), parts=True)
    # zero-length blocks along every axis contribute nothing
    chunks = ((0, 6, 0, 7), (3, 0, 4), (0, 20))
    lazy = make_cube({"dense": da.from_array(values, chunks=chunks)})
    assert lazy.data.chunks == chunks
    xr.testing.assert_allclose(tmx.normalized_variance(lazy, parts=True).compute(), eager)


# without numba (not importable), the same measure from the numpy path
_WITHOUT_NUMBA = """
import sys
sys.modules["numba"] = None  # import numba raises ImportError
import numpy as np, dask.array as da, tmx
values = np.load(sys.argv[1])
chunks = ((5, 1, 7), (2, 4, 1), (3, 9, 8))
cube = tmx.from_array({"dense": da.from_array(values, chunks=chunks)})
parts = tmx.normalized_variance(cube, parts=True).compute()
jk = tmx.normalized_variance(cube, parts=True, bias_correction="jackknife", jackknife_groups=5)
jk = jk.compute()
assert sys.modules["numba"] is None
np.save(sys.argv[2], np.stack([parts.tv.values, parts.sv.values, parts.nv.values]))
np.save(sys.argv[3], np.concatenate([jk.sv_loo.values, jk.tv_loo.values, jk.nv_se.values[None]]))
"""


def test_fast_and_numpy_paths_give_the_same_measure(tmp_path):
    pytest.importorskip("numba")
    values = random_values(np.float32, seed=3)
    values[:, :, 9] = 7.0  # constant but in sample 2: the complement of its group is constant
    values[2, :, 9] = 8.0
    cube = make_cube({"dense": values}).chunk(CHUNKINGS[1])
    fast = tmx.normalized_variance(cube, parts=True).compute()
    jk = tmx.normalized_variance(cube, parts=True, bias_correction="jackknife", jackknife_groups=5)
    jk = jk.compute()
    np.save(tmp_path / "values.npy", values)
    files = [tmp_path / f for f in ("values.npy", "slow.npy", "slow_jk.npy")]
    subprocess.run(
        [sys.executable, "-c", _WITHOUT_NUMBA, *files],
        check=True,
        capture_output=True,
        timeout=300,
    )
    slow = np.load(tmp_path / "slow.npy")
    np.testing.assert_allclose(slow, [fast.tv, fast.sv, fast.nv], rtol=1e-13)
    # the jackknife's leave-group-out values: compiled kernel vs numpy, exact zeros included
    slow_jk = np.load(tmp_path / "slow_jk.npy")
    fast_jk = np.concatenate([jk.sv_loo.values, jk.tv_loo.values, jk.nv_se.values[None]])
    np.testing.assert_allclose(slow_jk, fast_jk, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(slow_jk == 0, fast_jk == 0)
    assert (jk.sv_loo.values[:, 9] == 0).sum() == 1  # the group holding sample 2


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
