"""The real cube through tmx.save / tmx.open: identity, interruption and resume."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr

import tmx
from tmx import transforms as T
from tmx.cube import ForwardRunner, forward_runner

from .test_cube import LAYERS, small_cnn

TSET = T.product(T.rotation([0.0, 45.0]), T.translation([0, 2], 0))


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(4).normal(size=(25, 12, 12, 1)).astype(np.float32)


def test_save_open_round_trip_of_a_real_cube(data, tmp_path):
    labels = np.arange(25) % 4
    cube = tmx.activations(
        small_cnn(), data, TSET, layers=LAYERS, labels=labels, chunks={"sample": 10, "unit": 300}
    )
    path = tmx.save(cube, tmp_path / "cube.zarr")
    back = tmx.open(path)
    assert back.chunks == cube.chunks
    xr.testing.assert_identical(back.compute(), cube.compute())
    assert T.from_dict(back.attrs["transforms"]) == TSET


def test_interrupted_save_resumes_computing_only_missing_blocks(data, tmp_path, monkeypatch):
    cube = tmx.activations(
        small_cnn(), data, TSET, layers=LAYERS, chunks={"sample": 5, "unit": 200}, batch_size=8
    )
    n_unit_chunks = len(cube.data.chunks[2])
    assert n_unit_chunks > 1
    original = ForwardRunner.__call__
    started: list[int] = []

    def failing(self, x_block, sample_index, indices):
        started.append(int(sample_index[0]))
        if sample_index[0] == 10:  # the third sample block dies mid-save
            raise RuntimeError("forward pass killed")
        return original(self, x_block, sample_index, indices)

    monkeypatch.setattr(ForwardRunner, "__call__", failing)
    path = tmp_path / "cube.zarr"
    with pytest.raises(RuntimeError, match="killed"):
        tmx.save(cube, path)
    with pytest.raises(ValueError, match="incomplete"):
        tmx.open(path)
    done = zarr.open_array(path / "_tmx_chunks_done", mode="r")[:]
    written = {int(i) * 5 for i in np.flatnonzero(done.all(axis=(1, 2)))}
    assert 10 not in written and len(written) < 5

    resumed: list[int] = []

    def counting(self, x_block, sample_index, indices):
        resumed.append(int(sample_index[0]))
        return original(self, x_block, sample_index, indices)

    monkeypatch.setattr(ForwardRunner, "__call__", counting)
    tmx.save(cube, path, resume=True)
    # each missing block ran exactly once (not once per unit chunk), written ones not at all
    assert sorted(resumed) == sorted(set(range(0, 25, 5)) - written)
    monkeypatch.setattr(ForwardRunner, "__call__", original)
    uninterrupted = tmx.save(cube, tmp_path / "clean.zarr")
    xr.testing.assert_identical(tmx.open(path).compute(), tmx.open(uninterrupted).compute())
    np.testing.assert_allclose(tmx.open(path).values, cube.values, rtol=1e-6, atol=1e-6)


def test_resume_refuses_a_different_cube(data, tmp_path):
    cube = tmx.activations(small_cnn(), data[:6], TSET, layers=["dense"])
    path = tmx.save(cube, tmp_path / "cube.zarr")
    other = tmx.activations(
        small_cnn(), data[:6], T.rotation([0.0, 10.0, 20.0, 30.0]), layers=["dense"]
    )
    with pytest.raises(ValueError, match="differ"):
        tmx.save(other, path, resume=True)
    with pytest.raises(FileExistsError):
        tmx.save(cube, path)
    assert forward_runner(other).batches == 0  # refused before any forward pass


@pytest.mark.parametrize("compression", ["zstd", "lz4", None])
def test_compression_options_round_trip(data, tmp_path, compression):
    cube = tmx.activations(small_cnn(), data[:6], TSET, layers=["conv1", "dense"])
    path = tmx.save(cube, tmp_path / "c.zarr", compression=compression)
    codecs = [c["name"] for c in zarr.open_array(f"{path}/activation").metadata.to_dict()["codecs"]]
    assert ({"zstd": "zstd", "lz4": "blosc"}.get(compression) in codecs) == (
        compression is not None
    )
    xr.testing.assert_identical(tmx.open(path).compute(), cube.compute())


def test_bad_compression_is_refused(data, tmp_path):
    cube = tmx.activations(small_cnn(), data[:2], layers=["dense"])
    with pytest.raises(ValueError, match="compression must be one of"):
        tmx.save(cube, tmp_path / "c.zarr", compression="gzip9")


def test_resume_with_a_cube_rebuilt_after_a_crash(data, tmp_path, monkeypatch):
    """A new process rebuilds the cube (new 'created' time): resume must accept it."""
    model = small_cnn()
    first = tmx.activations(model, data, TSET, layers=["dense"], chunks={"sample": 5})
    original = ForwardRunner.__call__

    def failing(self, x_block, sample_index, indices):
        if sample_index[0] == 15:
            raise RuntimeError("killed")
        return original(self, x_block, sample_index, indices)

    monkeypatch.setattr(ForwardRunner, "__call__", failing)
    path = tmp_path / "cube.zarr"
    with pytest.raises(RuntimeError):
        tmx.save(first, path)
    monkeypatch.setattr(ForwardRunner, "__call__", original)
    rebuilt = tmx.activations(model, data, TSET, layers=["dense"], chunks={"sample": 5})
    rebuilt.attrs["created"] = "2099-01-01T00:00:00+00:00"
    tmx.save(rebuilt, path, resume=True)
    back = tmx.open(path)
    assert back.attrs["created"] == first.attrs["created"]  # the store keeps its own
    np.testing.assert_allclose(back.values, first.values, rtol=1e-6, atol=1e-6)
    rebuilt.attrs["model_name"] = "another"
    with pytest.raises(ValueError, match="model_name"):
        tmx.save(rebuilt, tmp_path / "cube.zarr", resume=True)
