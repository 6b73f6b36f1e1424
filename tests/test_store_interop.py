"""tmx.save / tmx.open / tmx.verify beyond local tmx stores (issue 19, item 1): fsspec URLs and
zarr store objects, cubes written by plain xarray, and stores grown along ``sample``."""

from __future__ import annotations

import importlib.util
import json
import os
import threading
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest
import xarray as xr
import zarr
import zarr.storage

import tmx
from tmx import store as tstore
from tmx.store import StoreDamagedError, StoreLockedError, save
from tmx.store import open as tmx_open

from .test_store import _expected, _files, _lazy_cube

# the folder an append keeps its checked copies of the boundary chunks in, until it ends
# (docs/guide/guarantees.md: the store's documented layout)
STASH = "_tmx_append"

# xarray writes numpy "<U" coordinates with Zarr 3's fixed_length_utf32 type, which warns
pytestmark = pytest.mark.filterwarnings("ignore:The data type .* does not have a Zarr V3")


def _url() -> str:
    return f"memory://tmx-test-{uuid.uuid4().hex}/cube.zarr"


def _memory_path(url: str) -> str:
    return url[len("memory://") :]


# --------------------------------------------------------------------------------------------
# fsspec URLs and zarr store objects


def test_a_memory_url_saves_opens_and_verifies_with_every_check():
    url = _url()
    cube = _lazy_cube()
    assert save(cube, url) == url
    fs = fsspec.filesystem("memory")
    root = _memory_path(url)
    assert fs.exists(f"{root}/zarr.json") and not fs.exists(root + tstore.LOCK_SUFFIX)
    xr.testing.assert_identical(tmx_open(url).compute(), _expected(cube))
    assert tmx.verify(url) == 6
    # a flipped byte in an object of the store: named on read and by verify
    key = f"{root}/activation/c/1/1/0"
    raw = bytearray(fs.cat_file(key))
    raw[len(raw) // 2] ^= 1
    fs.pipe_file(key, bytes(raw))
    with pytest.raises(StoreDamagedError, match=r"chunk \(1, 1, 0\).*CRC-32C"):
        _ = tmx_open(url).values
    with pytest.raises(StoreDamagedError) as err:
        tmx.verify(url)
    assert [p.index for p in err.value.problems] == [(1, 1, 0)]
    # a deleted object: found at open, from a listing
    fs.rm_file(f"{root}/activation/c/2/0/0")
    with pytest.raises(StoreDamagedError, match=r"chunk \(2, 0, 0\).*file is missing"):
        tmx_open(url)


def test_swapped_objects_of_a_store_object_are_caught():
    store = zarr.storage.MemoryStore()
    save(_lazy_cube(), store)
    assert tmx.verify(store) == 6
    a, b = store._store_dict["activation/c/0/0/0"], store._store_dict["activation/c/1/0/0"]
    store._store_dict["activation/c/0/0/0"], store._store_dict["activation/c/1/0/0"] = b, a
    with pytest.raises(StoreDamagedError, match="swapped"):
        _ = tmx_open(store).values
    with pytest.raises(StoreDamagedError) as err:
        tmx.verify(store)
    assert [p.index for p in err.value.problems] == [(0, 0, 0), (1, 0, 0)]


def test_fsspec_and_local_store_objects_are_accepted(tmp_path):
    url = _url()
    fs_store = zarr.storage.FsspecStore.from_url(url)
    save(_lazy_cube(), fs_store, compression=None)
    np.testing.assert_array_equal(tmx_open(url).values, _expected(_lazy_cube()).values)
    local = zarr.storage.LocalStore(str(tmp_path / "c.zarr"))
    assert save(_lazy_cube(), local) == str(tmp_path / "c.zarr")
    assert (tmp_path / ("c.zarr" + tstore.LOCK_SUFFIX)).exists() is False
    assert tmx.verify(tmp_path / "c.zarr") == 6


def test_a_missing_protocol_package_is_named():
    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed")
    with pytest.raises(ImportError, match=r"gs:// protocol needs gcsfs.*pip install gcsfs"):
        save(_lazy_cube(), "gs://bucket/cube.zarr")
    with pytest.raises(ImportError, match="gcsfs"):
        tmx.verify("gs://bucket/cube.zarr")


def test_the_lock_object_of_a_url_names_its_holder_and_excludes_a_second_writer():
    url = _url()
    lock_path = _memory_path(url) + tstore.LOCK_SUFFIX
    fs = fsspec.filesystem("memory")
    holder = {"host": "elsewhere", "pid": 4242, "started": "2026-01-01T00:00:00+00:00"}
    fs.pipe_file(lock_path, json.dumps(holder).encode())
    with pytest.raises(StoreLockedError, match="pid 4242 on host 'elsewhere'") as err:
        save(_lazy_cube(), url)
    assert err.value.holder["pid"] == 4242 and err.value.lock_path.endswith(".tmx-lock")
    assert not fs.exists(_memory_path(url) + "/zarr.json")  # nothing written
    save(_lazy_cube(), url, break_lock=True)  # another host's lock: the caller's call
    assert not fs.exists(lock_path)


def test_threads_writing_one_store_object_get_one_winner():
    store = zarr.storage.MemoryStore()
    gate = threading.Barrier(4)
    outcome: list[str] = []

    def writer(i: int) -> None:
        gate.wait()
        try:
            save(_lazy_cube(attrs={"writer": i}), store)
            outcome.append(f"won {i}")
        except (StoreLockedError, FileExistsError) as err:
            outcome.append(type(err).__name__)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcome if o.startswith("won")]
    assert len(winners) == 1 and len(outcome) == 4
    won = int(winners[0].split()[1])
    assert tmx_open(store).attrs["writer"] == won  # the values and manifest of one cube
    assert tmx.verify(store) == 6


# --------------------------------------------------------------------------------------------
# cubes written by plain xarray


def _plain_cube() -> xr.DataArray:
    cube = _expected(_lazy_cube())
    cube.attrs = {"model_name": "tiny", "note": "written by xarray"}
    return cube


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_a_cube_written_by_to_zarr_opens_unverified(tmp_path, zarr_format):
    cube = _plain_cube()
    path = tmp_path / "plain.zarr"
    cube.chunk({"sample": 4}).to_zarr(path, zarr_format=zarr_format, consolidated=False)
    back = tmx_open(path)
    assert back.attrs["tmx_integrity"] == "unverified"
    assert back.attrs["model_name"] == "tiny"
    assert back.dims == tstore.DIMS and back.chunks[0] == (4, 4, 4)  # lazy, the store's chunks
    np.testing.assert_array_equal(back.values, cube.values)
    for name in ("layer", "channel", "y", "x", "sample", "transform", "angle"):
        np.testing.assert_array_equal(back[name].values, cube[name].values)
    assert back["layer"].dtype.kind == "U"  # not zarr 3's StringDType
    # a measure gives the numbers it gives on the original
    np.testing.assert_allclose(
        tmx.normalized_variance(back).values, tmx.normalized_variance(cube).values, rtol=1e-12
    )
    with pytest.raises(ValueError, match="carries no tmx checksums"):
        tmx.verify(path)


def test_a_dataset_written_by_to_zarr_opens_and_can_be_saved_with_checksums(tmp_path):
    cube = _plain_cube()
    ds = xr.Dataset({"activation": cube, "other": ("sample", np.arange(12.0))})
    ds.to_zarr(tmp_path / "ds.zarr", consolidated=False)
    back = tmx_open(tmp_path / "ds.zarr")
    np.testing.assert_array_equal(back.values, cube.values)
    save(back, tmp_path / "tmx.zarr")
    assert tmx.verify(tmp_path / "tmx.zarr") == 1
    again = tmx_open(tmp_path / "tmx.zarr")
    assert again.attrs["tmx_integrity"] == "unverified"  # it says where the values came from
    np.testing.assert_array_equal(again.values, cube.values)


def test_plain_stores_that_break_the_cube_contract_are_refused(tmp_path):
    cube = _plain_cube()
    cube.drop_vars("layer").to_zarr(tmp_path / "nolayer.zarr", consolidated=False)
    with pytest.raises(ValueError, match=r"missing the coordinate\(s\) \['layer'\]"):
        tmx_open(tmp_path / "nolayer.zarr")
    cube.transpose("sample", "unit", "transformation").to_zarr(
        tmp_path / "dims.zarr", consolidated=False
    )
    with pytest.raises(ValueError, match=r"not a tmx cube: it holds no float array with dims"):
        tmx_open(tmp_path / "dims.zarr")
    cube.astype(np.int32).to_zarr(tmp_path / "int.zarr", consolidated=False)
    with pytest.raises(ValueError, match="not a tmx cube"):
        tmx_open(tmp_path / "int.zarr")


def test_a_plain_v2_store_with_a_pickle_codec_is_refused_before_any_read(tmp_path):
    path = tmp_path / "v2.zarr"
    _plain_cube().to_zarr(path, zarr_format=2, consolidated=False)
    meta_path = path / "layer" / ".zarray"
    meta = json.loads(meta_path.read_text())
    meta["filters"] = [{"id": "pickle", "protocol": 5}]
    meta_path.write_text(json.dumps(meta))
    chunk = path / "layer" / "0"
    chunk.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")  # would run code if unpickled
    with pytest.raises(ValueError, match="codec 'pickle', which tmx does not read"):
        tmx_open(path)


# --------------------------------------------------------------------------------------------
# growing a store along sample

FULL = dict(n_s=22, chunks=(4, 5, 30))


def _part(start: int, stop: int, sample_chunk: int) -> xr.DataArray:
    return _lazy_cube(**FULL).isel(sample=slice(start, stop)).chunk({"sample": sample_chunk})


@pytest.mark.parametrize("n_first", [8, 10])  # the store's last sample chunk full, partial
def test_append_grows_the_store_as_one_save_would(tmp_path, n_first):
    path = tmp_path / "c.zarr"
    save(_part(0, n_first, 4), path)
    save(_part(n_first, 22, 3), path, append=True)
    back = tmx_open(path)
    assert back.chunks[0] == (4, 4, 4, 4, 4, 2)
    xr.testing.assert_identical(back.compute(), _expected(_lazy_cube(**FULL)))
    assert tmx.verify(path) == 12  # the checksums cover the appended chunks
    assert not (path / STASH).exists()
    # the chunks, records and done flags are those of a store saved in one go
    save(_lazy_cube(**FULL), tmp_path / "once.zarr")
    assert _chunk_files(path) == _chunk_files(tmp_path / "once.zarr")


def test_append_to_a_store_object_and_a_missing_store(tmp_path):
    store = zarr.storage.MemoryStore()
    save(_part(0, 10, 4), store, append=True)  # nothing there yet: a plain save
    save(_part(10, 22, 4), store, append=True)
    np.testing.assert_array_equal(tmx_open(store).values, _expected(_lazy_cube(**FULL)).values)
    assert tmx.verify(store) == 12
    # an in-memory cube takes the store's chunks
    more = _expected(_lazy_cube(n_s=26, chunks=(4, 5, 30))).isel(sample=slice(22, 26))
    assert not isinstance(more.data, type(_part(0, 4, 4).data))
    save(more, store, append=True)
    np.testing.assert_array_equal(
        tmx_open(store).values, _expected(_lazy_cube(n_s=26, chunks=(4, 5, 30))).values
    )
    assert tmx.verify(store) == 14


def _chunk_files(path: Path) -> dict[str, bytes]:
    return {
        k: v
        for k, v in _files(path).items()
        if k.startswith(("activation/c", "_tmx_chunks")) and not k.endswith("zarr.json")
    }


def _with_attrs(cube: xr.DataArray, **attrs) -> xr.DataArray:
    return cube.assign_attrs(**attrs)


@pytest.mark.parametrize(
    ("other", "match"),
    [
        (
            lambda c: _with_attrs(c, model_weights_sha256="cd" * 32),
            r"the model's weights differ \(model_weights_sha256\)",
        ),
        (
            lambda c: _with_attrs(c, model_config_sha256="ef" * 32),
            r"the model's architecture differs \(model_config_sha256\)",
        ),
        (lambda c: _with_attrs(c, transforms="[]"), r"attrs differ \(keys \['transforms'\]\)"),
        (
            lambda c: c.assign_coords(layer=("unit", np.array(["other"] * 30))),
            "coordinate 'layer': values differ",
        ),
        (lambda c: c.chunk({"unit": 15}), r"chunks along unit differ \(store 30, cube 15\)"),
        (lambda c: c.isel(unit=slice(0, 20)), "number of units differs"),
        (lambda c: c.astype(np.float64), "dtype differs"),
        (lambda c: c.assign_coords(sample=c.sample - 4), r"repeats 4 sample\(s\)"),
    ],
)
def test_append_refuses_other_provenance_naming_what_differs(tmp_path, other, match):
    path = tmp_path / "c.zarr"
    save(_part(0, 10, 4), path)
    before = _files(path)
    with pytest.raises(ValueError, match=match):
        save(other(_part(10, 22, 4)), path, append=True)
    assert _files(path) == before  # refused before anything is written


def test_an_interrupted_append_is_refused_then_finished_by_the_same_call(tmp_path):
    path = tmp_path / "c.zarr"
    save(_part(0, 10, 4), path)
    failing = _lazy_cube(**FULL, fail_at=(4, 1, 0)).isel(sample=slice(10, 22))
    with pytest.raises(RuntimeError, match="forward pass failed"):
        save(failing, path, append=True)
    with pytest.raises(ValueError, match=r"an append to it was interrupted.*append=True"):
        tmx_open(path)
    with pytest.raises(ValueError, match=r"an append to the store .* was interrupted"):
        save(_part(10, 22, 4), path, resume=True)
    with pytest.raises(ValueError, match="an append of another cube was interrupted"):
        save(_with_attrs(_part(10, 22, 4), transforms="[]"), path, append=True)
    assert (path / STASH).is_dir()  # the checked copy of the boundary chunks
    save(_lazy_cube(**FULL).isel(sample=slice(10, 22)), path, append=True)
    xr.testing.assert_identical(tmx_open(path).compute(), _expected(_lazy_cube(**FULL)))
    assert tmx.verify(path) == 12


def test_an_append_killed_before_it_marks_the_store_leaves_it_reading_as_before(
    tmp_path, monkeypatch
):
    path = tmp_path / "c.zarr"
    save(_part(0, 10, 4), path)
    expected = tmx_open(path).compute()

    # the kill: when the append puts the group's zarr.json in place (the write that marks the
    # store incomplete), the file rename of a local store's writer is interrupted; every other
    # file is put in place as usual
    mark, real_replace, kills = os.path.realpath(path / "zarr.json"), os.replace, []

    def replace(src, dst, *args, **kwargs):
        if os.path.realpath(dst) == mark:
            kills.append(os.fspath(src))
            raise KeyboardInterrupt
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        save(_part(10, 22, 4), path, append=True, break_lock=True)
    monkeypatch.undo()
    assert len(kills) == 1  # the kill did happen, at the mark
    assert json.loads((path / "zarr.json").read_text())["attributes"]["tmx_complete"] is True
    xr.testing.assert_identical(tmx_open(path).compute(), expected)
    assert tmx.verify(path) == 6
    save(_part(10, 22, 4), path, append=True)
    xr.testing.assert_identical(tmx_open(path).compute(), _expected(_lazy_cube(**FULL)))


def test_a_damaged_boundary_chunk_is_never_carried_into_an_append(tmp_path):
    path = tmp_path / "c.zarr"
    save(_part(0, 10, 4), path)
    chunk = path / "activation" / "c" / "2" / "1" / "0"
    chunk.write_bytes((path / "activation" / "c" / "1" / "1" / "0").read_bytes())
    before = _files(path)
    with pytest.raises(StoreDamagedError, match=r"chunk \(2, 1, 0\)"):
        save(_part(10, 22, 4), path, append=True)
    assert _files(path) == before


def test_records_of_a_development_version_are_refused(tmp_path):
    path = tmp_path / "c.zarr"
    save(_lazy_cube(), path)
    meta_path = Path(path) / tstore.DIGEST_NAME / "zarr.json"
    meta = json.loads(meta_path.read_text())
    del meta["attributes"]["tmx_record_version"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="tmx_record_version None"):
        tmx_open(path)
