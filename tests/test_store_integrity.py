"""tmx.save / tmx.open / tmx.verify on damaged and hostile stores (issue 23, items 2 and 3).

Every damage here read back silently before checksums (a deleted chunk as NaN, a flipped byte
or swapped chunk files as other values, an edited byte order or fill value as other values,
deep attributes as a RecursionError): each must now raise an error naming what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
import zarr.codecs

import tmx
from tmx import store as tstore
from tmx.store import StoreDamagedError, save
from tmx.store import open as tmx_open

from .store_formats import as_format_1
from .test_store import Counter, _expected, _files, _lazy_cube, _set_group_attr

CHUNK_000 = "chunk (0, 0, 0) (samples 0..3, transformations 0..4, units 0..29)"
CHUNK_100 = "chunk (1, 0, 0) (samples 4..7, transformations 0..4, units 0..29)"


def _saved(tmp_path: Path, **kwargs) -> Path:
    path = tmp_path / "c.zarr"
    save(_lazy_cube(), path, **kwargs)  # 12 x 10 x 30, chunks (4, 5, 30): grid (3, 2, 1)
    return path


def _chunk(path: Path, *index: int) -> Path:
    return path.joinpath("activation", "c", *map(str, index))


def _record(path: Path, *index: int) -> Path:
    return path / tstore.DIGEST_NAME / ("c." + ".".join(map(str, (*index, 0))))


def _edit_meta(path: Path, member: str, edit) -> None:
    meta_path = path / member / "zarr.json" if member else path / "zarr.json"
    meta = json.loads(meta_path.read_text())
    edit(meta)
    meta_path.write_text(json.dumps(meta))


# --------------------------------------------------------------------------------------------
# what save writes


def test_chunks_carry_a_crc32c_and_a_position_bound_record(tmp_path):
    path = _saved(tmp_path)
    meta = json.loads((path / "activation" / "zarr.json").read_text())
    assert [c["name"] for c in meta["codecs"]] == ["bytes", "zstd", "crc32c"]
    records = zarr.open_array(str(path / tstore.DIGEST_NAME), mode="r")[...]
    assert records.shape == (3, 2, 1, 36)
    import google_crc32c

    raw = _chunk(path, 1, 1, 0).read_bytes()
    # the file's last 4 bytes: the crc32c codec's CRC-32C of the stored bytes
    assert int(google_crc32c.value(raw[:-4])).to_bytes(4, "little") == raw[-4:]
    # the record's first 4 bytes: that CRC-32C, bound to the chunk's position
    crc = google_crc32c.extend(google_crc32c.value(b"tmx-chunk|(1, 1, 0)|"), raw[-4:])
    assert records[1, 1, 0, :4].tobytes() == int(crc).to_bytes(4, "little")
    assert not records[..., 4:].any()  # not a tmx.activations cube: no input digests
    # records and done flags live under flat keys, one file per chunk, no directory per chunk
    assert _record(path, 1, 1, 0).is_file() and (path / tstore.DONE_NAME / "c.1.1.0").is_file()
    assert tmx.verify(path) == 6


@pytest.mark.parametrize("compression", [None, "zstd", "lz4"])
def test_chunk_files_are_exactly_what_zarr_writes(tmp_path, compression):
    """tmx writes chunk files itself (no Zarr call per chunk): byte for byte Zarr's encoding,
    edge chunks padded with NaN, and Zarr reads them back."""
    path = _saved(tmp_path, compression=compression)
    values = _expected(_lazy_cube()).values
    meta = json.loads((path / "activation" / "zarr.json").read_text())
    twin = zarr.create_array(
        str(tmp_path / "twin.zarr"),
        shape=(12, 10, 30),
        chunks=(5, 4, 30),  # other edges: (12, 10) in chunks of (5, 4)
        dtype="float32",
        fill_value=np.nan,
        compressors=[c for c in meta["codecs"][1:]],
        serializer=meta["codecs"][0],
    )
    twin[...] = values
    path2 = tmp_path / "edges.zarr"
    save(_lazy_cube(chunks=(5, 4, 30)), path2, compression=compression)
    for index in [(0, 0, 0), (2, 2, 0), (1, 2, 0)]:  # inner, corner and edge chunks
        assert (
            _chunk(path2, *index).read_bytes()
            == (tmp_path / "twin.zarr" / "c" / "/".join(map(str, index))).read_bytes()
        )
    plain = zarr.open_array(str(path2 / "activation"), mode="r")[...]
    np.testing.assert_array_equal(plain, values)
    np.testing.assert_array_equal(tmx_open(path2).values, values)


def test_an_all_nan_chunk_is_written_so_a_missing_file_is_always_damage(tmp_path):
    cube = _lazy_cube()
    cube = cube.where(cube.sample >= 4)  # chunk row 0 is all NaN
    save(cube, tmp_path / "c.zarr")
    assert _chunk(tmp_path / "c.zarr", 0, 0, 0).is_file()
    back = tmx_open(tmp_path / "c.zarr").values
    assert np.isnan(back[:4]).all() and not np.isnan(back[4:]).any()
    assert tmx.verify(tmp_path / "c.zarr") == 6


# --------------------------------------------------------------------------------------------
# damage


def test_a_deleted_chunk_is_refused_at_open_naming_it(tmp_path):
    path = _saved(tmp_path)
    _chunk(path, 1, 0, 0).unlink()
    with pytest.raises(
        StoreDamagedError, match=r"chunk \(1, 0, 0\) \(samples 4\.\.7.*file is missing"
    ):
        tmx_open(path)
    with pytest.raises(StoreDamagedError) as err:
        tmx.verify(path)
    assert [p.index for p in err.value.problems] == [(1, 0, 0)]
    problem = err.value.problems[0]
    assert (problem.samples, problem.transformations, problem.units) == (
        range(4, 8),
        range(0, 5),
        range(0, 30),
    )


def test_a_chunk_deleted_after_open_raises_on_read_instead_of_nan(tmp_path):
    path = _saved(tmp_path)
    cube = tmx_open(path)
    _chunk(path, 2, 1, 0).unlink()
    with pytest.raises(StoreDamagedError, match=r"chunk \(2, 1, 0\).*missing"):
        _ = cube.values
    np.testing.assert_array_equal(cube.isel(sample=slice(0, 8)).values, _expected(cube).values[:8])


def test_a_missing_checksum_record_is_refused(tmp_path):
    path = _saved(tmp_path)
    _record(path, 0, 1, 0).unlink()
    with pytest.raises(StoreDamagedError, match=r"chunk \(0, 1, 0\).*checksum record is missing"):
        tmx_open(path)


@pytest.mark.parametrize("compression", [None, "zstd", "lz4"])
def test_a_flipped_byte_raises_on_read_and_in_verify(tmp_path, compression):
    path = _saved(tmp_path, compression=compression)
    chunk = _chunk(path, 1, 1, 0)
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    chunk.write_bytes(bytes(raw))
    cube = tmx_open(path)  # a listing finds nothing wrong
    with pytest.raises(StoreDamagedError, match=r"chunk \(1, 1, 0\) \(samples 4\.\.7, transf"):
        _ = cube.values
    with pytest.raises(StoreDamagedError, match="CRC-32C") as err:
        tmx.verify(path)
    assert [p.index for p in err.value.problems] == [(1, 1, 0)]
    # the other chunks still read, and are right
    np.testing.assert_array_equal(cube.isel(sample=slice(8, 12)).values, _expected(cube).values[8:])


def test_a_flipped_byte_with_a_matching_crc32c_is_still_caught(tmp_path):
    """Bytes rewritten with a valid CRC-32C (a chunk re-encoded with other values): the record
    of the values catches it."""
    path = _saved(tmp_path, compression=None)
    arr = zarr.open_array(str(path / "activation"), mode="r+")
    arr[0, 0, 0] = 123.0
    with pytest.raises(StoreDamagedError, match=r"chunk \(0, 0, 0\).*do not match the checksum"):
        _ = tmx_open(path).values


@pytest.mark.parametrize("with_records", [False, True])
def test_swapped_chunk_files_are_caught(tmp_path, with_records):
    path = _saved(tmp_path)
    a, b = _chunk(path, 0, 0, 0), _chunk(path, 1, 0, 0)
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes)
    b.write_bytes(a_bytes)
    if with_records:  # their records swapped too: still caught, the record is position-bound
        ra, rb = _record(path, 0, 0, 0), _record(path, 1, 0, 0)
        ra_bytes, rb_bytes = ra.read_bytes(), rb.read_bytes()
        ra.write_bytes(rb_bytes)
        rb.write_bytes(ra_bytes)
    cube = tmx_open(path)
    with pytest.raises(StoreDamagedError, match="swapped"):
        _ = cube.values
    with pytest.raises(StoreDamagedError) as err:
        tmx.verify(path)
    assert [p.index for p in err.value.problems] == [(0, 0, 0), (1, 0, 0)]
    assert CHUNK_000 in str(err.value) and CHUNK_100 in str(err.value)


def test_verify_names_every_bad_chunk(tmp_path):
    path = _saved(tmp_path)
    _chunk(path, 2, 0, 0).unlink()
    raw = bytearray(_chunk(path, 0, 1, 0).read_bytes())
    raw[5] ^= 1
    _chunk(path, 0, 1, 0).write_bytes(bytes(raw))
    zarr.open_array(str(path / tstore.DONE_NAME), mode="r+")[1, 1, 0] = False
    with pytest.raises(StoreDamagedError) as err:
        tmx.verify(path)
    got = {p.index: p.problem for p in err.value.problems}
    assert set(got) == {(2, 0, 0), (0, 1, 0), (1, 1, 0)}
    assert "missing" in got[(2, 0, 0)] and "CRC-32C" in got[(0, 1, 0)]
    assert "not flagged" in got[(1, 1, 0)]
    # raised on a dask.distributed worker, it travels back whole
    assert pickle.loads(pickle.dumps(err.value)).problems == err.value.problems


def test_open_with_other_chunks_still_checks_every_chunk(tmp_path):
    path = _saved(tmp_path)
    cube = tmx_open(path, chunks={"sample": 12})
    assert cube.chunks == ((12,), (5, 5), (30,))
    xr.testing.assert_identical(cube.compute(), _expected(_lazy_cube()))
    _chunk(path, 1, 0, 0).write_bytes(_chunk(path, 0, 0, 0).read_bytes())
    with pytest.raises(StoreDamagedError, match=r"chunk \(1, 0, 0\)"):
        _ = tmx_open(path, chunks="auto").values


# --------------------------------------------------------------------------------------------
# stores written before checksums


def test_a_store_without_checksums_still_opens_and_resumes_in_its_format(tmp_path):
    path = _saved(tmp_path)
    as_format_1(path)
    meta = json.loads((path / "activation" / "zarr.json").read_text())
    assert [c["name"] for c in meta["codecs"]] == ["bytes", "zstd"]
    assert not (path / tstore.DIGEST_NAME).exists()
    assert json.loads((path / "zarr.json").read_text())["attributes"]["tmx_format_version"] == 1
    xr.testing.assert_identical(tmx_open(path).compute(), _expected(_lazy_cube()))
    with pytest.raises(ValueError, match="before checksums"):
        tmx.verify(path)
    # resuming keeps the format and computes only the chunk not flagged done
    zarr.open_array(str(path / tstore.DONE_NAME), mode="r+")[0, 0, 0] = False
    _chunk(path, 0, 0, 0).unlink()
    _set_group_attr(path, "tmx_complete", False)
    counter = Counter()
    save(_lazy_cube(counter=counter), path, resume=True)
    assert len(counter) == 1
    assert not (path / tstore.DIGEST_NAME).exists()
    meta = json.loads((path / "activation" / "zarr.json").read_text())
    assert [c["name"] for c in meta["codecs"]] == ["bytes", "zstd"]
    assert json.loads((path / "zarr.json").read_text())["attributes"]["tmx_format_version"] == 1
    xr.testing.assert_identical(tmx_open(path).compute(), _expected(_lazy_cube()))


# --------------------------------------------------------------------------------------------
# metadata tmx never writes (item 3)


def _big_endian(meta):
    meta["codecs"][0] = {"name": "bytes", "configuration": {"endian": "big"}}


def _transpose(meta):
    meta["codecs"].insert(0, {"name": "transpose", "configuration": {"order": [2, 1, 0]}})


def _no_crc(meta):
    meta["codecs"] = meta["codecs"][:-1]


def _fill(meta):
    meta["fill_value"] = 0.0


def _dtype(meta):
    meta["data_type"] = "float64"


def _keys(meta):
    meta["chunk_key_encoding"] = {"name": "v2", "configuration": {"separator": "."}}


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_big_endian, r"codecs \[bytes \(big endian\), zstd, crc32c\]"),
        (_transpose, r"codecs \[transpose, bytes"),
        (_no_crc, "codecs"),
        (_fill, "fill_value 0.0; tmx writes NaN"),
        (_dtype, "data type 'float64'; the manifest says float32"),
        (_keys, "chunk key encoding"),
    ],
)
def test_edited_array_metadata_is_refused(tmp_path, edit, match):
    path = _saved(tmp_path)
    _edit_meta(path, "activation", edit)
    with pytest.raises(ValueError, match=match):
        tmx_open(path)
    with pytest.raises(ValueError, match=match):
        tmx.verify(path)


def test_edited_record_metadata_is_refused(tmp_path):
    path = _saved(tmp_path)
    _edit_meta(path, tstore.DIGEST_NAME, lambda m: m.update(fill_value=7))
    with pytest.raises(ValueError, match=r"'_tmx_chunks_digest' has data type"):
        tmx_open(path)


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("member", ["", "activation", "layer"])
def test_attributes_nested_50000_deep_give_a_value_error(tmp_path, member):
    path = _saved(tmp_path)
    meta_path = path / member / "zarr.json" if member else path / "zarr.json"
    text = meta_path.read_text()
    meta_path.write_text(text[:-1] + ', "deep": ' + _deep(50_000) + "}")
    with pytest.raises(ValueError, match="nests") as err:
        tmx_open(path)
    assert not isinstance(err.value, RecursionError)
    assert str(meta_path) in str(err.value)
    # moderately deep (parsable, but deeper than tmx writes) is refused too
    meta_path.write_text(text[:-1] + ', "deep": ' + _deep(500) + "}")
    with pytest.raises(ValueError, match="deeper than"):
        tmx_open(path)


def test_save_refuses_attrs_nested_too_deep_without_recursion_error(tmp_path):
    deep: list = []
    for _ in range(50_000):
        deep = [deep]
    with pytest.raises(ValueError, match=r"cube.attrs\['deep'\].*deeper than 32"):
        save(_lazy_cube(attrs={"deep": deep}), tmp_path / "c.zarr")
    assert not (tmp_path / "c.zarr").exists()


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda p: (p / "zarr.json").write_text('{"zarr_format": 3, "node_t'), "cannot read"),
        (lambda p: (p / "activation" / "zarr.json").write_text("[]"), "JSON object"),
        (lambda p: shutil.rmtree(p / tstore.DIGEST_NAME), "no array '_tmx_chunks_digest'"),
        (lambda p: _set_group_attr(p, "tmx_manifest", {"dims": 3}), "dims exactly"),
        (
            lambda p: _edit_meta(p, "activation", lambda m: m.update(shape=[12, 10, 31])),
            "shape",
        ),
    ],
)
def test_malformed_stores_give_a_value_error_naming_the_problem(tmp_path, damage, match):
    path = _saved(tmp_path)
    damage(path)
    with pytest.raises(ValueError, match=match):
        tmx_open(path)


def test_a_sound_store_is_bit_identical_after_verify(tmp_path):
    path = _saved(tmp_path)
    before = _files(path)
    assert tmx.verify(path) == 6
    assert _files(path) == before  # verify only reads


def test_dask_backed_reads_match_a_plain_zarr_read(tmp_path):
    path = _saved(tmp_path)
    cube = tmx_open(path)
    assert isinstance(cube.data, da.Array)
    plain = zarr.open_array(str(path / "activation"), mode="r")[...]
    np.testing.assert_array_equal(cube.values, plain)


# --------------------------------------------------------------------------------------------
# resume identity (item 1) and bad inputs (item 5): real cubes


def _small_cnn(activation: str = "relu"):
    import keras

    inp = keras.Input((12, 12, 1), name="image")
    h = keras.layers.Conv2D(4, 3, padding="same", activation=activation, name="conv1")(inp)
    h = keras.layers.MaxPooling2D(name="pool")(h)
    out = keras.layers.Dense(3, name="dense")(keras.layers.Flatten(name="flat")(h))
    model = keras.Model(inp, out, name="small_cnn")
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(7)
    return rng.normal(size=(15, 12, 12, 1)).astype(np.float32)


def _incomplete(path: Path, undone) -> None:
    group = zarr.open_group(str(path), mode="r+", zarr_format=3)
    for idx in undone:
        group[tstore.DONE_NAME][idx] = False
    group.attrs["tmx_complete"] = False


LAYERS = ["conv1", "dense"]


def test_resume_refuses_the_same_weights_in_another_architecture(images, tmp_path):
    relu, tanh = _small_cnn("relu"), _small_cnn("tanh")
    pairs = zip(relu.get_weights(), tanh.get_weights(), strict=True)
    assert all(np.array_equal(a, b) for a, b in pairs)
    path = tmp_path / "c.zarr"
    save(tmx.activations(relu, images, layers=LAYERS, chunks={"sample": 5}), path)
    _incomplete(path, [(2, 0, 0)])
    before = _files(path)
    other = tmx.activations(tanh, images, layers=LAYERS, chunks={"sample": 5})
    assert (
        other.attrs["model_weights_sha256"]
        == tmx.activations(relu, images, layers=LAYERS).attrs["model_weights_sha256"]
    )
    with pytest.raises(ValueError, match=r"the model's architecture differs") as err:
        save(other, path, resume=True)
    assert "weights" not in str(err.value)
    assert _files(path) == before


def test_resume_refuses_other_images_in_memory_naming_the_samples(images, tmp_path):
    model = _small_cnn()
    path = tmp_path / "c.zarr"
    save(tmx.activations(model, images, layers=LAYERS, chunks={"sample": 5}), path)
    _incomplete(path, [(2, 0, 0)])
    other = images.copy()
    other[6] += 1.0  # same shape, sample 6 differs
    cube = tmx.activations(model, other, layers=LAYERS, chunks={"sample": 5})
    with pytest.raises(ValueError, match=r"the input x differs in samples 5\.\.9 \(input_sha"):
        save(cube, path, resume=True)
    # the same images (a new array, a rebuilt cube) resume
    cube = tmx.activations(model, images.copy(), layers=LAYERS, chunks={"sample": 5})
    save(cube, path, resume=True)
    np.testing.assert_array_equal(tmx_open(path).values, cube.values)


class _Reads:
    """A lazy x that counts the reads of each of its blocks."""

    def __init__(self, values: np.ndarray, chunk: int) -> None:
        self.blocks: list[int] = []

        def record(block, block_info=None):
            self.blocks.append(block_info[0]["chunk-location"][0])
            return block

        self.x = da.from_array(values, chunks=(chunk, 12, 12, 1)).map_blocks(
            record, dtype=values.dtype
        )


def test_lazy_inputs_are_recorded_per_chunk_and_read_once(images, tmp_path):
    model = _small_cnn()
    path = tmp_path / "c.zarr"
    lazy = _Reads(images, 5)
    cube = tmx.activations(model, lazy.x, layers=LAYERS, chunks={"sample": 5, "unit": 200})
    assert "input_sha256" not in cube.attrs  # lazy: identified block by block
    save(cube, path)
    assert sorted(lazy.blocks) == [0, 1, 2]  # the forward pass and the digest share one read
    records = zarr.open_array(str(path / tstore.DIGEST_NAME), mode="r")[...]
    for i in range(3):
        block = np.ascontiguousarray(images[5 * i : 5 * i + 5])
        digest = hashlib.sha256(f"tmx-input|{block.dtype.str}|{block.shape}|{5 * i}|".encode())
        digest.update(block.tobytes())
        assert {records[i, 0, k, 4:].tobytes() for k in range(records.shape[2])} == {
            digest.digest()
        }
    # a resume reads every block of x once: the blocks done for the comparison only
    _incomplete(path, [(1, 0, 0), (1, 0, 1), (2, 0, 1)])
    again = _Reads(images, 5)
    cube = tmx.activations(model, again.x, layers=LAYERS, chunks={"sample": 5, "unit": 200})
    save(cube, path, resume=True)
    assert sorted(again.blocks) == [0, 1, 2]
    np.testing.assert_array_equal(tmx_open(path).values, cube.values)
    assert tmx.verify(path) == records.shape[0] * records.shape[2]


@pytest.mark.parametrize("undone", [[(1, 0, 0), (1, 0, 1)], [(1, 0, 1)]])
def test_resume_refuses_other_lazy_images_before_writing_anything(images, tmp_path, undone):
    """Before the fix the store ended up holding chunks of both inputs. ``[(1, 0, 1)]``: a
    sample block partly written, checked in the same computation as its forward pass."""
    model = _small_cnn()
    path = tmp_path / "c.zarr"
    lazy = da.from_array(images, chunks=(5, 12, 12, 1))
    save(tmx.activations(model, lazy, layers=LAYERS, chunks={"sample": 5, "unit": 200}), path)
    _incomplete(path, undone)
    before = _files(path)
    other = images.copy()
    other[5:10] = other[5:10][::-1]  # samples 5..9 reordered: same values overall
    cube = tmx.activations(
        model,
        da.from_array(other, chunks=(5, 12, 12, 1)),
        layers=LAYERS,
        chunks={"sample": 5, "unit": 200},
    )
    with pytest.raises(ValueError, match=r"input x differs in samples 5\.\.9"):
        save(cube, path, resume=True)
    assert _files(path) == before  # nothing was written
    with pytest.raises(ValueError, match="incomplete"):
        tmx_open(path)


def test_nan_or_inf_in_x_raise_naming_the_samples(images):
    model = _small_cnn()
    x = images.copy()
    x[3, 4, 4, 0] = np.nan
    x[11, 0, 0, 0] = np.inf
    cube = tmx.activations(model, x, layers=["conv1"], chunks={"sample": 5})
    # what the check prevents: the compiled forward pass maps the NaN to ordinary numbers
    unchecked = tmx.activations(model, x, layers=["conv1"], check_finite=False).values
    assert np.isfinite(unchecked[3]).all()
    with pytest.raises(ValueError, match=r"samples at indices 3 hold NaN"):
        _ = cube.isel(sample=slice(0, 5)).values
    with pytest.raises(ValueError, match=r"indices 3, 11 hold NaN or infinite") as err:
        _ = tmx.activations(model, x, layers=["conv1"]).values
    assert "check_finite=False" in str(err.value)
    np.testing.assert_array_equal(cube.isel(sample=slice(5, 10)).values, unchecked[5:10])


def test_no_samples_is_refused_when_the_cube_is_built(images):
    with pytest.raises(ValueError, match=r"x has no samples \(shape \(0, 12, 12, 1\)\)"):
        tmx.activations(_small_cnn(), images[:0], layers=["conv1"])
