"""Tests for tmx.store: save/open of activation cubes as Zarr (format 3) stores."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import signal
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

from tmx import store as tstore
from tmx.store import open as tmx_open
from tmx.store import save

# --------------------------------------------------------------------------------------------
# fake cubes


class Counter:
    """Thread-safe call counter for the fake forward pass."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []
        self._lock = threading.Lock()

    def add(self, key: tuple[int, ...]) -> None:
        with self._lock:
            self.calls.append(key)

    def __len__(self) -> int:
        return len(self.calls)


def _values(s0: int, s1: int, t0: int, t1: int, u0: int, u1: int) -> np.ndarray:
    s = np.arange(s0, s1, dtype=np.float32)[:, None, None]
    t = np.arange(t0, t1, dtype=np.float32)[None, :, None]
    u = np.arange(u0, u1, dtype=np.float32)[None, None, :]
    return np.sin(s * 0.7 + t * 1.3 + u * 0.01).astype(np.float32)


def _coords(n_s: int, n_t: int, n_u: int) -> dict:
    layers = np.array(["conv1"] * (n_u // 2) + ["block/dense"] * (n_u - n_u // 2))
    return {
        "sample": ("sample", np.arange(n_s, dtype=np.int64)),
        "label": ("sample", np.arange(n_s, dtype=np.int64) % 10),
        "transformation": ("transformation", np.arange(n_t, dtype=np.int64)),
        "transform": (
            "transformation",
            np.array([f"rotation({15 * i})+translation({i % 3}, 0)" for i in range(n_t)]),
        ),
        "angle": (
            "transformation",
            np.array([15.0 * i if i % 4 else np.nan for i in range(n_t)]),
            {"units": "degrees", "meaning": "rotation_deg"},
        ),
        "dx": ("transformation", np.arange(n_t, dtype=np.int64) % 3, {"units": "pixels"}),
        "flip": ("transformation", np.array(["x" if i % 2 else "none" for i in range(n_t)])),
        "unit": ("unit", np.arange(n_u, dtype=np.int64)),
        "layer": ("unit", layers),
        "channel": ("unit", np.arange(n_u, dtype=np.int64) % 4),
        "y": ("unit", np.where(np.arange(n_u) < n_u // 2, np.arange(n_u) % 3, -1)),
        "x": ("unit", np.where(np.arange(n_u) < n_u // 2, np.arange(n_u) % 5, -1)),
    }


ATTRS = {
    "tmx_version": "0.1.0",
    "tensorflow_version": "2.16.1",
    "keras_version": "3.3.3",
    "model_name": "tiny_cnn",
    "model_weights_sha256": "ab" * 32,
    "transforms": json.dumps([{"kind": "rotation", "angles": list(range(0, 360, 15))}] * 20),
    "transforms_description": "rotation × translation (ünïcode)",
    "layers": ["conv1", "block/dense"],
    "created": "2026-01-02T03:04:05+00:00",
    "input_shape": [28, 28, 1],
    "batch_shape": (None, 28, 28, 1),
    "extra": {"nested": [1, 2.5, True, None], "t": (1, "a")},
}


def _lazy_cube(
    n_s: int = 12,
    n_t: int = 10,
    n_u: int = 30,
    chunks: tuple[int, int, int] = (4, 5, 30),
    counter: Counter | None = None,
    fail_at: tuple[int, ...] | None = None,
    attrs: dict | None = None,
) -> xr.DataArray:
    """A cube whose blocks are computed by a counted function of the block location."""

    def block(block_info=None):
        (s0, s1), (t0, t1), (u0, u1) = block_info[None]["array-location"]
        loc = tuple(block_info[None]["chunk-location"])
        if fail_at is not None and loc == fail_at:
            raise RuntimeError(f"forward pass failed at block {loc}")
        if counter is not None:
            counter.add(loc)
        return _values(s0, s1, t0, t1, u0, u1)

    chunk_spec = da.core.normalize_chunks(chunks, (n_s, n_t, n_u))
    data = da.map_blocks(block, chunks=chunk_spec, dtype=np.float32, meta=np.array((), np.float32))
    return xr.DataArray(
        data,
        dims=("sample", "transformation", "unit"),
        coords=_coords(n_s, n_t, n_u),
        name="activation",
        attrs=dict(ATTRS if attrs is None else attrs),
    )


def _shared_cube(
    counter: Counter, n_s: int = 8, n_t: int = 6, n_u: int = 30, unit_chunks: int = 3
) -> xr.DataArray:
    """Each (sample, transformation) block is one task (a 'forward pass') yielding all units,
    which is then split into ``unit_chunks`` unit chunks."""

    def row(block_info=None):
        (s0, s1), (t0, t1), (u0, u1) = block_info[None]["array-location"]
        counter.add(tuple(block_info[None]["chunk-location"][:2]))
        return _values(s0, s1, t0, t1, u0, u1)

    data = da.map_blocks(
        row,
        chunks=da.core.normalize_chunks((4, 3, n_u), (n_s, n_t, n_u)),
        dtype=np.float32,
        meta=np.array((), np.float32),
    ).rechunk({2: n_u // unit_chunks})
    return xr.DataArray(
        data,
        dims=("sample", "transformation", "unit"),
        coords=_coords(n_s, n_t, n_u),
        name="activation",
        attrs=dict(ATTRS),
    )


def _expected(cube: xr.DataArray) -> xr.DataArray:
    n_s, n_t, n_u = cube.shape
    return cube.copy(data=_values(0, n_s, 0, n_t, 0, n_u))


def _set_incomplete(path: Path, undone: list[tuple[int, int, int]]) -> None:
    group = zarr.open_group(str(path), mode="r+", zarr_format=3)
    for idx in undone:
        group[tstore.DONE_NAME][idx] = False
    group.attrs["tmx_complete"] = False


def _files(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


# --------------------------------------------------------------------------------------------
# 1. format, chunks, exact round trip, laziness


def test_round_trip_is_identical_lazy_and_chunked_like_the_store(tmp_path):
    counter = Counter()
    cube = _lazy_cube(chunks=(5, 4, 30), counter=counter)  # last chunks smaller: 12=5+5+2
    out = save(cube, tmp_path / "c.zarr")
    assert out == str(tmp_path / "c.zarr")
    assert len(counter) == 3 * 3  # every block computed exactly once

    group_meta = json.loads((tmp_path / "c.zarr" / "zarr.json").read_text())
    assert group_meta["zarr_format"] == 3
    assert group_meta["attributes"]["tmx_format"] == "cube"
    assert group_meta["attributes"]["tmx_format_version"] == 2
    assert group_meta["attributes"]["tmx_complete"] is True
    data_meta = json.loads((tmp_path / "c.zarr" / "activation" / "zarr.json").read_text())
    assert data_meta["zarr_format"] == 3
    assert data_meta["chunk_grid"]["configuration"]["chunk_shape"] == [5, 4, 30]
    assert data_meta["dimension_names"] == ["sample", "transformation", "unit"]
    assert data_meta["data_type"] == "float32"
    layer_meta = json.loads((tmp_path / "c.zarr" / "layer" / "zarr.json").read_text())
    assert layer_meta["data_type"] == "string"  # no object/pickle
    assert [c["name"] for c in layer_meta["codecs"]] == ["vlen-utf8", "zstd"]

    opened = tmx_open(tmp_path / "c.zarr")
    assert isinstance(opened.data, da.Array)
    assert opened.chunks == cube.chunks == ((5, 5, 2), (4, 4, 2), (30,))
    assert len(counter) == 9  # opening computed nothing
    loaded = opened.compute()
    xr.testing.assert_identical(loaded, _expected(cube))
    xr.testing.assert_identical(loaded, cube.compute())
    assert loaded.dtype == np.float32
    assert loaded.name == "activation"
    assert loaded["angle"].attrs == {"units": "degrees", "meaning": "rotation_deg"}
    assert loaded["layer"].dtype == cube["layer"].dtype
    assert loaded["transform"].dtype == cube["transform"].dtype
    assert loaded["y"].dtype == np.int64
    assert np.isnan(loaded["angle"].values[0])


def test_attrs_round_trip_exactly_including_tuples(tmp_path):
    cube = _lazy_cube()
    save(cube, tmp_path / "c.zarr")
    attrs = tmx_open(tmp_path / "c.zarr").attrs
    assert attrs == ATTRS
    assert attrs["batch_shape"] == (None, 28, 28, 1)
    assert isinstance(attrs["batch_shape"], tuple)
    assert isinstance(attrs["input_shape"], list)
    assert attrs["extra"]["t"] == (1, "a")
    assert attrs["transforms"] == ATTRS["transforms"]


def test_object_dtype_string_coords_come_back_as_object(tmp_path):
    cube = _lazy_cube()
    cube = cube.assign_coords(layer=("unit", cube["layer"].values.astype(object)))
    save(cube, tmp_path / "c.zarr")
    loaded = tmx_open(tmp_path / "c.zarr").compute()
    assert loaded["layer"].dtype == object
    xr.testing.assert_identical(loaded, _expected(cube))


def test_open_with_other_chunks(tmp_path):
    cube = _lazy_cube()
    save(cube, tmp_path / "c.zarr")
    opened = tmx_open(tmp_path / "c.zarr", chunks={"sample": 12})
    assert opened.chunks == ((12,), (5, 5), (30,))
    xr.testing.assert_identical(opened.compute(), _expected(cube))


def test_irregular_chunks_are_regularised(tmp_path):
    cube = _lazy_cube().chunk({"sample": (3, 5, 4), "unit": (10, 20)})
    save(cube, tmp_path / "c.zarr")
    opened = tmx_open(tmp_path / "c.zarr")
    assert opened.chunks == ((5, 5, 2), (5, 5), (20, 10))
    xr.testing.assert_identical(opened.compute(), _expected(cube))


def test_xarray_can_read_the_store_too(tmp_path):
    cube = _lazy_cube()
    save(cube, tmp_path / "c.zarr")
    ds = xr.open_zarr(tmp_path / "c.zarr", zarr_format=3, consolidated=False)
    np.testing.assert_array_equal(ds["activation"].values, _expected(cube).values)
    assert set(ds["activation"].coords) >= {"layer", "angle", "transform"}


# --------------------------------------------------------------------------------------------
# 2. bounded memory


def test_save_memory_stays_bounded_by_a_few_chunks(tmp_path):
    # 8 x 8 x 1 = 64 chunks of 8 x 8 x 8192 float32 = 2 MiB each: 128 MiB in total, made
    # lazily from the block index.
    chunk_bytes = 8 * 8 * 8192 * 4
    counter = Counter()

    def block(block_info=None):
        i, j, _ = block_info[None]["chunk-location"]
        counter.add((i, j))
        out = np.empty((8, 8, 8192), dtype=np.float32)
        out[...] = np.arange(8192, dtype=np.float32) * 0.5 + (i * 8 + j)
        return out

    data = da.map_blocks(
        block,
        chunks=((8,) * 8, (8,) * 8, (8192,)),
        dtype=np.float32,
        meta=np.array((), np.float32),
    )
    cube = xr.DataArray(
        data,
        dims=("sample", "transformation", "unit"),
        coords=_coords(64, 64, 8192),
        name="activation",
        attrs=dict(ATTRS),
    )
    assert cube.nbytes == 64 * chunk_bytes
    # Each writer thread holds about two chunks (the block and its encoded bytes).
    with dask.config.set(num_workers=2):
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            save(cube, tmp_path / "big.zarr")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert len(counter) == 64
    print(f"peak traced memory {peak / 2**20:.1f} MiB for a {cube.nbytes / 2**20:.0f} MiB cube")
    assert peak < 8 * chunk_bytes
    opened = tmx_open(tmp_path / "big.zarr")
    got = opened.isel(sample=slice(40, 48), transformation=slice(16, 24)).values
    np.testing.assert_array_equal(got[0, 0, :3], np.array([0.0, 0.5, 1.0], np.float32) + 42)


# --------------------------------------------------------------------------------------------
# 3. interruption safety and resume


def test_interrupted_save_is_refused_then_resumed_with_only_missing_chunks(tmp_path):
    path = tmp_path / "c.zarr"
    failing = Counter()
    with pytest.raises(RuntimeError, match="forward pass failed") as info:
        save(_lazy_cube(counter=failing, fail_at=(1, 1, 0)), path)
    assert any("resume=True" in note for note in info.value.__notes__)

    with pytest.raises(ValueError, match="incomplete") as err:
        tmx_open(path)
    assert "tmx.save(cube, store, resume=True)" in str(err.value)

    done = zarr.open_group(str(path), mode="r")[tstore.DONE_NAME][...]
    assert done.shape == (3, 2, 1)
    assert not done[1, 1, 0]
    n_missing = int((~done).sum())
    assert 1 <= n_missing <= 6
    # every chunk flagged done was computed (some computed ones may not have been written)
    assert {tuple(map(int, i)) for i in np.argwhere(done)} <= set(failing.calls)

    with pytest.raises(FileExistsError, match="resume=True"):
        save(_lazy_cube(), path)

    counter = Counter()
    assert save(_lazy_cube(counter=counter), path, resume=True) == str(path)
    assert len(counter) == n_missing
    assert sorted(counter.calls) == sorted(tuple(map(int, i)) for i in np.argwhere(~done))

    save(_lazy_cube(), tmp_path / "ref.zarr")
    resumed = tmx_open(path).compute()
    xr.testing.assert_identical(resumed, tmx_open(tmp_path / "ref.zarr").compute())
    xr.testing.assert_identical(resumed, _expected(_lazy_cube()))

    # resuming a complete store computes nothing
    again = Counter()
    save(_lazy_cube(counter=again), path, resume=True)
    assert len(again) == 0


_KILLED_SAVE = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import dask.array as da, numpy as np
import test_store as t
from tmx.store import save

def block(block_info=None):
    (s0, s1), (t0, t1), (u0, u1) = block_info[None]["array-location"]
    if tuple(block_info[None]["chunk-location"]) == (2, 0, 0):
        os.kill(os.getpid(), signal.SIGKILL)  # killed in the middle of the forward pass
    return t._values(s0, s1, t0, t1, u0, u1)

cube = t._lazy_cube()
cube = cube.copy(data=da.map_blocks(block, chunks=cube.chunks, dtype=np.float32,
                                    meta=np.array((), np.float32)))
save(cube, {path!r})
"""


def test_a_killed_save_is_refused_then_resumed(tmp_path):
    path = tmp_path / "c.zarr"
    script = tmp_path / "killed_save.py"
    script.write_text(_KILLED_SAVE.format(tests=str(Path(__file__).parent), path=str(path)))
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with pytest.raises(ValueError, match="incomplete"):
        tmx_open(path)
    done = zarr.open_group(str(path), mode="r")[tstore.DONE_NAME][...]
    assert not done[2, 0, 0]
    # the killed save left its lock: reported, never broken silently
    with pytest.raises(tstore.StoreLockedError, match="no longer running") as err:
        save(_lazy_cube(), path, resume=True)
    assert err.value.stale
    counter = Counter()
    save(_lazy_cube(counter=counter), path, resume=True, break_lock=True)
    assert sorted(counter.calls) == sorted(tuple(map(int, i)) for i in np.argwhere(~done))
    xr.testing.assert_identical(tmx_open(path).compute(), _expected(_lazy_cube()))


def test_resume_computes_exactly_the_chunks_not_flagged_done(tmp_path):
    path = tmp_path / "c.zarr"
    save(_lazy_cube(), path)
    undone = [(0, 0, 0), (2, 1, 0), (1, 0, 0)]
    # make those chunks garbage, as if they had been half written
    arr = zarr.open_group(str(path), mode="r+")["activation"]
    arr[0:4, 0:5, :] = -1.0
    _set_incomplete(path, undone)
    counter = Counter()
    save(_lazy_cube(counter=counter), path, resume=True)
    assert sorted(counter.calls) == sorted(undone)
    xr.testing.assert_identical(tmx_open(path).compute(), _expected(_lazy_cube()))


def test_resume_of_a_store_missing_its_data_arrays(tmp_path):
    path = tmp_path / "c.zarr"
    save(_lazy_cube(), path)
    shutil.rmtree(path / "activation")
    shutil.rmtree(path / tstore.DONE_NAME)
    shutil.rmtree(path / "layer")
    _set_group_attr(path, "tmx_complete", False)
    counter = Counter()
    save(_lazy_cube(counter=counter), path, resume=True)
    assert len(counter) == 6
    xr.testing.assert_identical(tmx_open(path).compute(), _expected(_lazy_cube()))


def _set_group_attr(path: Path, key: str, value) -> None:
    meta_path = path / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"][key] = value
    meta_path.write_text(json.dumps(meta))


def test_resume_without_a_store_saves_from_scratch(tmp_path):
    counter = Counter()
    save(_lazy_cube(counter=counter), tmp_path / "new.zarr", resume=True)
    assert len(counter) == 6
    xr.testing.assert_identical(tmx_open(tmp_path / "new.zarr").compute(), _expected(_lazy_cube()))


@pytest.mark.parametrize(
    ("other", "match"),
    [
        (lambda: _lazy_cube(chunks=(6, 5, 30)), "chunks differ"),
        (lambda: _lazy_cube(n_s=16), "shape differs"),
        (lambda: _lazy_cube(attrs={**ATTRS, "model_name": "other"}), r"attrs differ.*model_name"),
        (
            lambda: _lazy_cube().assign_coords(label=("sample", np.arange(12) % 7)),
            "coordinate 'label': values differ",
        ),
        (
            lambda: _lazy_cube().assign_coords(
                angle=_lazy_cube()["angle"].assign_attrs(units="rad")
            ),
            "coordinate 'angle': attrs differ",
        ),
        (lambda: _lazy_cube().astype(np.float64), "dtype differs"),
        (lambda: _lazy_cube().drop_vars("flip"), "coordinates differ"),
    ],
)
def test_resume_refuses_a_different_cube(tmp_path, other, match):
    path = tmp_path / "c.zarr"
    with pytest.raises(RuntimeError):
        save(_lazy_cube(fail_at=(0, 0, 0)), path)
    before = _files(path)
    with pytest.raises(ValueError, match="cannot resume") as err:
        save(other(), path, resume=True)
    assert err.match(match)
    assert _files(path) == before  # the store was not touched


def test_existing_store_needs_overwrite_and_overwrite_replaces_it(tmp_path):
    path = tmp_path / "c.zarr"
    save(_lazy_cube(), path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save(_lazy_cube(n_s=8, chunks=(4, 5, 30)), path)
    xr.testing.assert_identical(tmx_open(path).compute(), _expected(_lazy_cube()))  # untouched
    save(_lazy_cube(n_s=8, chunks=(4, 5, 30)), path, overwrite=True)
    xr.testing.assert_identical(
        tmx_open(path).compute(), _expected(_lazy_cube(n_s=8, chunks=(4, 5, 30)))
    )
    with pytest.raises(ValueError, match="resume and overwrite"):
        save(_lazy_cube(), path, resume=True, overwrite=True)


def test_overwrite_never_deletes_what_is_not_a_tmx_store(tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    for kwargs in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises((ValueError, FileExistsError), match="not a tmx cube"):
            save(_lazy_cube(), other, **kwargs)
    assert (other / "precious.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    save(_lazy_cube(), empty)  # an empty directory is fine
    assert tmx_open(empty).shape == (12, 10, 30)


def test_shared_forward_pass_runs_once_per_sample_transformation_block(tmp_path):
    counter = Counter()
    cube = _shared_cube(counter)
    assert cube.data.numblocks == (2, 2, 3)
    save(cube, tmp_path / "c.zarr")
    assert sorted(counter.calls) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    xr.testing.assert_identical(tmx_open(tmp_path / "c.zarr").compute(), _expected(cube))

    # resume: the missing unit chunks belong to two (sample, transformation) blocks
    _set_incomplete(tmp_path / "c.zarr", [(0, 1, 0), (0, 1, 2), (1, 0, 1)])
    counter2 = Counter()
    save(_shared_cube(counter2), tmp_path / "c.zarr", resume=True)
    assert sorted(counter2.calls) == [(0, 1), (1, 0)]
    xr.testing.assert_identical(tmx_open(tmp_path / "c.zarr").compute(), _expected(cube))


def test_synchronous_scheduler_gives_the_same_store(tmp_path):
    save(_shared_cube(Counter()), tmp_path / "threads.zarr", progress=True)
    with dask.config.set(scheduler="synchronous"):
        counter = Counter()
        save(_shared_cube(counter), tmp_path / "sync.zarr")
    assert len(counter) == 4
    assert _files(tmp_path / "threads.zarr") == _files(tmp_path / "sync.zarr")
    xr.testing.assert_identical(
        tmx_open(tmp_path / "sync.zarr").compute(), tmx_open(tmp_path / "threads.zarr").compute()
    )


# --------------------------------------------------------------------------------------------
# 4. untrusted stores


def test_open_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.zarr"):
        tmx_open(tmp_path / "nowhere.zarr")


def test_open_plain_zarr_group_is_not_a_tmx_cube(tmp_path):
    group = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=3)
    group.create_array("activation", shape=(2, 2, 2), dtype="float32")
    with pytest.raises(ValueError, match="not a tmx cube"):
        tmx_open(tmp_path / "plain.zarr")
    (tmp_path / "file.txt").write_text("hi")
    with pytest.raises(ValueError, match="not a tmx cube"):
        tmx_open(tmp_path / "file.txt")
    zarr.open_group(str(tmp_path / "v2.zarr"), mode="w", zarr_format=2)
    with pytest.raises(ValueError, match="not a tmx cube"):
        tmx_open(tmp_path / "v2.zarr")


def test_open_refuses_wrong_dims(tmp_path):
    path = tmp_path / "c.zarr"
    save(_lazy_cube(), path)
    # dims in the manifest
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["tmx_manifest"]["dims"] = ["sample", "unit", "transformation"]
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"dims exactly \('sample', 'transformation', 'unit'\)"):
        tmx_open(path)
    # dims of the array itself
    save(_lazy_cube(), path, overwrite=True)
    arr_meta_path = path / "activation" / "zarr.json"
    arr_meta = json.loads(arr_meta_path.read_text())
    arr_meta["dimension_names"] = ["a", "b", "c"]
    arr_meta_path.write_text(json.dumps(arr_meta))
    with pytest.raises(ValueError, match=r"'activation' must have dims exactly"):
        tmx_open(path)


def test_open_refuses_missing_or_misplaced_coords(tmp_path):
    path = tmp_path / "c.zarr"
    save(_lazy_cube(), path)
    shutil.rmtree(path / "layer")
    with pytest.raises(ValueError, match="no array 'layer'"):
        tmx_open(path)

    save(_lazy_cube(), path, overwrite=True)
    meta = json.loads((path / "zarr.json").read_text())
    manifest = meta["attributes"]["tmx_manifest"]
    manifest["coords"] = [c for c in manifest["coords"] if c["name"] != "channel"]
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"missing the coordinate\(s\) \['channel'\]"):
        tmx_open(path)

    save(_lazy_cube(), path, overwrite=True)
    meta = json.loads((path / "zarr.json").read_text())
    for c in meta["attributes"]["tmx_manifest"]["coords"]:
        if c["name"] == "layer":
            c["dims"] = ["sample"]
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"'layer' must be along \('unit',\)"):
        tmx_open(path)


def test_open_refuses_unsafe_dtypes_codecs_and_tampering(tmp_path):
    path = tmp_path / "c.zarr"
    save(_lazy_cube(), path)
    meta_path = path / "layer" / "zarr.json"
    original = meta_path.read_text()
    meta = json.loads(original)
    meta["codecs"] = [{"name": "numcodecs.pickle", "configuration": {}}]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"codec 'numcodecs\.pickle'"):
        tmx_open(path)
    meta = json.loads(original)
    meta["data_type"] = "variable_length_bytes"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="never objects or pickles"):
        tmx_open(path)

    # a coordinate whose values were changed behind the manifest's back
    meta_path.write_text(original)
    zarr.open_group(str(path), mode="r+")["channel"][0] = 99
    with pytest.raises(ValueError, match="'channel' do not match their sha256"):
        tmx_open(path)

    # path traversal through a coordinate name in the manifest
    save(_lazy_cube(), path, overwrite=True)
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["tmx_manifest"]["coords"][0]["name"] = "../../etc"
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="cannot be stored"):
        tmx_open(path)


def test_open_refuses_wrong_version_and_bad_fingerprint(tmp_path):
    path = tmp_path / "c.zarr"
    save(_lazy_cube(), path)
    _set_group_attr(path, "tmx_format_version", 3)
    with pytest.raises(ValueError, match="tmx_format_version 3"):
        tmx_open(path)
    _set_group_attr(path, "tmx_format_version", 2)
    _set_group_attr(path, "tmx_fingerprint", "0" * 64)
    with pytest.raises(ValueError, match="does not match tmx_fingerprint"):
        tmx_open(path)


# --------------------------------------------------------------------------------------------
# 5. numpy-backed cubes, extra coords


def test_numpy_backed_cube_with_extra_coords(tmp_path):
    lazy = _lazy_cube()
    cube = _expected(lazy).assign_coords(
        weight=("sample", np.linspace(0, 1, 12)),
        is_flip=("transformation", np.arange(10) % 2 == 0),
        stride=("unit", np.arange(30, dtype=np.uint8)),
        dataset=((), "mnist"),
    )
    assert isinstance(cube.data, np.ndarray)
    save(cube, tmp_path / "np.zarr")
    opened = tmx_open(tmp_path / "np.zarr")
    assert isinstance(opened.data, da.Array)
    assert opened.chunks == ((12,), (10,), (30,))  # a small cube is one chunk
    xr.testing.assert_identical(opened.compute(), cube)


def test_empty_cube(tmp_path):
    cube = _lazy_cube(n_s=0, chunks=(4, 5, 30))
    save(cube, tmp_path / "e.zarr")
    opened = tmx_open(tmp_path / "e.zarr")
    assert opened.shape == (0, 10, 30)
    xr.testing.assert_identical(opened.compute(), cube.compute())


def test_numpy_backed_cube_is_chunked_by_default(tmp_path):
    cube = xr.DataArray(
        np.ones((300, 40, 2000), np.float32),
        dims=("sample", "transformation", "unit"),
        coords=_coords(300, 40, 2000),
    )
    save(cube, tmp_path / "np.zarr")
    opened = tmx_open(tmp_path / "np.zarr")
    assert opened.data.npartitions > 1
    chunk_shape = [max(c) for c in opened.data.chunks]
    assert int(np.prod(chunk_shape)) * 4 <= tstore.DEFAULT_CHUNK_BYTES
    assert opened.name is None
    xr.testing.assert_identical(opened.compute(), cube)


# --------------------------------------------------------------------------------------------
# 6. attrs and argument validation


@pytest.mark.parametrize(
    ("attrs", "match"),
    [
        ({"n": np.int64(3)}, r"cube.attrs\['n'\].*NumPy scalar.*\.item\(\)"),
        ({"a": np.zeros(3)}, r"cube.attrs\['a'\].*ndarray.*\.tolist\(\)"),
        ({"x": float("nan")}, r"cube.attrs\['x'\] must be a finite float"),
        ({"d": {1: "a"}}, r"cube.attrs\['d'\] must be a dict with str keys"),
        ({"s": {1, 2}}, r"cube.attrs\['s'\] must be JSON-compatible"),
        ({"l": [1, object()]}, r"cube.attrs\['l'\]\[1\] must be JSON-compatible"),
    ],
)
def test_save_refuses_attrs_that_are_not_json_compatible(tmp_path, attrs, match):
    with pytest.raises(ValueError, match=match):
        save(_lazy_cube(attrs={**ATTRS, **attrs}), tmp_path / "c.zarr")
    assert not (tmp_path / "c.zarr").exists()


def test_save_refuses_bad_coord_attrs_and_values(tmp_path):
    cube = _lazy_cube()
    bad = cube.assign_coords(angle=cube["angle"].assign_attrs(scale=np.float32(2)))
    with pytest.raises(ValueError, match=r"cube.coords\['angle'\].attrs\['scale'\]"):
        save(bad, tmp_path / "c.zarr")
    bad = cube.assign_coords(label=("sample", np.array([object()] * 12)))
    with pytest.raises(ValueError, match=r"cube.coords\['label'\] has dtype object"):
        save(bad, tmp_path / "c.zarr")


def test_save_validates_the_cube_and_arguments(tmp_path):
    cube = _lazy_cube()
    with pytest.raises(ValueError, match=r"cube must be an xarray\.DataArray"):
        save(cube.data, tmp_path / "c.zarr")
    with pytest.raises(ValueError, match="dims exactly"):
        save(cube.transpose("unit", ...), tmp_path / "c.zarr")
    with pytest.raises(ValueError, match="float16, float32 or float64; got int32"):
        save(cube.astype(np.int32), tmp_path / "c.zarr")
    with pytest.raises(ValueError, match="coordinate 'layer' along"):
        save(cube.drop_vars("layer"), tmp_path / "c.zarr")
    with pytest.raises(ValueError, match=r"cube.coords\['label'\] must be along \('sample',\)"):
        save(cube.assign_coords(label=("unit", np.arange(30))), tmp_path / "c.zarr")
    with pytest.raises(ValueError, match="store must be a filesystem path"):
        save(cube, 3)
    with pytest.raises(ValueError, match="resume must be True or False"):
        save(cube, tmp_path / "c.zarr", resume="yes")
    with pytest.raises(ValueError, match="'_tmx_x' cannot be stored"):
        save(cube.assign_coords(_tmx_x=("unit", np.arange(30))), tmp_path / "c.zarr")
    assert not (tmp_path / "c.zarr").exists()


def test_save_progress_defaults_to_interactive(tmp_path, capsys, monkeypatch):
    """progress=None: quiet under pytest, dask's bar when a person is watching."""
    save(_shared_cube(Counter()), tmp_path / "quiet.zarr")
    assert "[#" not in capsys.readouterr().out

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    # a person watching: stderr a terminal, neither pytest nor CI in the environment
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys, "stderr", Terminal())
    save(_shared_cube(Counter()), tmp_path / "shown.zarr")
    assert "100%" in capsys.readouterr().out
    save(_shared_cube(Counter()), tmp_path / "off.zarr", progress=False)
    assert "100%" not in capsys.readouterr().out
    with pytest.raises(ValueError, match="progress"):
        save(_shared_cube(Counter()), tmp_path / "bad.zarr", progress="yes")


def test_urls_are_never_written_as_local_directories(tmp_path, monkeypatch):
    """Before fsspec support, "memory://..." became a local directory named "memory:"."""
    pytest.importorskip("fsspec")
    monkeypatch.chdir(tmp_path)
    url = f"memory://tmx-test-{tmp_path.name}/cube.zarr"
    save(_lazy_cube(), url)
    np.testing.assert_array_equal(tmx_open(url).values, _expected(_lazy_cube()).values)
    if importlib.util.find_spec("s3fs") is None:
        with pytest.raises(ImportError, match=r"s3:// protocol needs s3fs.*pip install s3fs"):
            save(_lazy_cube(), "s3://bucket/cube.zarr")
        with pytest.raises(ImportError, match="s3fs"):
            tmx_open("s3://bucket/cube.zarr")
    with pytest.raises(ValueError, match="does not know the protocol nosuch://"):
        tmx_open("nosuch://bucket/cube.zarr")
    assert not any(tmp_path.iterdir())  # nothing named "memory:" or "s3:" was created


def test_file_urls_are_local_paths(tmp_path):
    cube = _lazy_cube()
    save(cube, f"file://{tmp_path / 'cube.zarr'}")
    np.testing.assert_array_equal(tmx_open(tmp_path / "cube.zarr").values, cube.values)
