"""Save activation cubes to Zarr (format 3) stores and open them again.

``tmx.save(cube, store)`` writes a cube chunk by chunk -- the whole cube is never held in
memory -- and records which chunks are done, so that a save that was interrupted (killed,
out of memory, a failing forward pass) can be finished with ``tmx.save(cube, store,
resume=True)``, which computes only the chunks that are missing. ``tmx.open(store)``
validates a store before reading anything from it and returns a lazy, dask-backed cube
chunked like the store, whose every chunk is checked against its checksum as it is read.
``tmx.verify(store)`` reads a whole store and names every damaged chunk. What each of them
guarantees is summed up in the user guide's "Guarantees" page.

On-disk layout (a Zarr format 3 group, local filesystem only)
--------------------------------------------------------------
Group attributes:

``tmx_format``
    ``"cube"``: marks the group as a tmx cube.
``tmx_format_version``
    ``2`` (with checksums). Stores of format ``1`` (written by tmx before checksums) are
    still read, without the checks that need checksums.
``tmx_complete``
    ``false`` while a save is under way or was interrupted, ``true`` once every chunk is
    written. ``open`` refuses incomplete stores.
``tmx_manifest``
    Everything needed to rebuild the cube exactly except the values: ``name``, ``dims``,
    ``shape``, ``chunks`` (the regular chunk shape), ``dtype``, ``attrs`` and, for each
    coordinate in order, its ``name``, ``dims``, ``dtype`` (the NumPy dtype string it had,
    e.g. ``"<U12"``, ``"|O"``, ``"<i8"``), ``attrs`` and the ``sha256`` of its values.
    Attribute values are stored as JSON; a tuple is stored as ``{"__tmx_tuple__": [...]}``
    so that it comes back as a tuple.
``tmx_fingerprint``
    sha256 of the canonical JSON of ``tmx_manifest``; ``open`` checks it against the
    manifest. ``resume=True`` compares the store's manifest with the cube's, leaving out the
    volatile attrs (``created``): a cube rebuilt after a crash is the same cube. The attrs
    of a cube from ``tmx.activations`` identify the model's weights and architecture and,
    when ``x`` is in memory, the whole ``x``.

Arrays (members of the group):

``activation``
    The values, ``dimension_names`` ``(sample, transformation, unit)``, chunked like the
    cube, fill value NaN, codecs ``bytes`` (little endian), the compressor (zstd, Blosc LZ4
    or none) and ``crc32c`` (a checksum of each stored chunk, checked by Zarr on every
    read). Every chunk is written, even an all-NaN one, so a missing file is always damage.
    Its Zarr attributes hold the cube's attrs (tuples as lists) and a ``coordinates`` list
    for other Zarr/xarray readers.
one array per coordinate, named like the coordinate
    One chunk each. Strings are stored with the standard variable-length UTF-8 data type
    (``string``, codec ``vlen-utf8``) -- never as pickled objects -- and come back with the
    dtype recorded in the manifest.
``_tmx_chunks_done``
    A bool array with one element per chunk of the chunk grid (one element per Zarr chunk,
    so parallel writers never share a file). Element ``(i, j, k)`` is set to ``true`` only
    after data chunk ``(i, j, k)`` and its record have been written.
``_tmx_chunks_digest``
    A uint8 array of shape ``(*grid, 36)``, one Zarr chunk per data chunk, codecs
    ``bytes`` and ``crc32c``. Record ``(i, j, k)``: bytes 0-3 are the CRC-32C (little
    endian) of the data chunk's decoded values, seeded with its position, shape and dtype
    (so a chunk file moved to another position no longer matches); bytes 4-35 are the
    sha256 of the block of ``x`` it was computed from (``tmx.cube.digest_input_block``), or
    zeros when the cube was not built by ``tmx.activations``. ``resume=True`` compares these
    input digests before it reuses a chunk.

A lock file ``<store>.tmx-lock`` next to the store (JSON: host, pid, process start,
start time, a token) is held for the whole of a save, resume or overwrite; it is created
atomically (``O_CREAT | O_EXCL``), so a second writer fails with ``StoreLockedError``.

The store can also be read by ``xarray.open_zarr`` (without the exact dtype and attribute
restoration that ``open`` does).
"""

from __future__ import annotations

import builtins
import concurrent.futures
import datetime as _dt
import functools
import hashlib
import json
import math
import os
import re
import shutil
import socket
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import dask
import dask.array as da
import dask.base
import dask.threaded
import google_crc32c
import numpy as np
import xarray as xr
import zarr
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from . import _progress
from ._version import __version__

__all__ = [
    "ChunkProblem",
    "StoreDamagedError",
    "StoreLockedError",
    "open",
    "save",
    "verify",
]

FORMAT = "cube"
FORMAT_VERSION = 2
#: Format versions ``open`` reads: 1 (no checksums, tmx before checksums) and 2.
READ_VERSIONS = (1, 2)
DIMS = ("sample", "transformation", "unit")
DATA_NAME = "activation"
DONE_NAME = "_tmx_chunks_done"
DIGEST_NAME = "_tmx_chunks_digest"
_DONE_DIMS = ("_tmx_sample_chunk", "_tmx_transformation_chunk", "_tmx_unit_chunk")
_DIGEST_DIMS = (*_DONE_DIMS, "_tmx_digest_byte")
_DIGEST_BYTES = 36  # 4: CRC-32C of the chunk's values; 32: sha256 of its input block
_NO_INPUT = bytes(32)
LOCK_SUFFIX = ".tmx-lock"
_TUPLE_TAG = "__tmx_tuple__"
#: Deepest nesting of lists/dicts in attrs that ``save`` writes; metadata nested deeper than
#: ``_MAX_JSON_DEPTH`` is refused by ``open`` before anything parses it recursively.
MAX_ATTR_DEPTH = 32
_MAX_JSON_DEPTH = MAX_ATTR_DEPTH + 16
# A temporary file Zarr's local store writes before renaming it into place
# (``<name>.<uuid4 hex>.partial``); a save killed mid-write leaves it behind.
_ZARR_TEMP = re.compile(r"\.[0-9a-f]{32}\.partial$")

#: Coordinates every cube must have, with the dimensions they must lie along.
REQUIRED_COORDS: dict[str, tuple[str, ...]] = {
    "sample": ("sample",),
    "transformation": ("transformation",),
    "unit": ("unit",),
    "layer": ("unit",),
    "channel": ("unit",),
    "y": ("unit",),
    "x": ("unit",),
}
#: Coordinates that are optional but, when present, must lie along these dimensions.
KNOWN_COORDS: dict[str, tuple[str, ...]] = {
    **REQUIRED_COORDS,
    "label": ("sample",),
    "transform": ("transformation",),
}

#: Default chunk size for cubes that are not dask-backed.
DEFAULT_CHUNK_BYTES = 32 * 2**20

# Zarr data types and codecs that ``open`` accepts. None of them can run code when read:
# there is no object/pickle data type or codec here.
_SAFE_DATA_TYPES = frozenset(
    {
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
        "string",
        "fixed_length_utf32",
    }
)
_FLOAT_DATA_TYPES = frozenset({"float16", "float32", "float64"})
_FLOAT_DTYPE_STRS = frozenset(np.dtype(t).str for t in _FLOAT_DATA_TYPES)
_SAFE_CODECS = frozenset(
    {
        "bytes",
        "endian",
        "transpose",
        "vlen-utf8",
        "zstd",
        "gzip",
        "blosc",
        "crc32c",
        "sharding_indexed",
        "numcodecs.zstd",
        "numcodecs.gzip",
        "numcodecs.zlib",
        "numcodecs.bz2",
        "numcodecs.lzma",
        "numcodecs.lz4",
        "numcodecs.blosc",
        "numcodecs.shuffle",
        "numcodecs.crc32",
        "numcodecs.crc32c",
        "numcodecs.adler32",
        "numcodecs.fletcher32",
    }
)


# Data codecs offered by save(compression=...): factories, so no codec object is shared.
_COMPRESSORS = {
    "zstd": lambda: [zarr.codecs.ZstdCodec(level=1)],
    "lz4": lambda: [zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")],
    None: lambda: None,
}


# --------------------------------------------------------------------------------------------
# small helpers


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _as_path(store: Any) -> Path:
    if isinstance(store, bool) or not isinstance(store, str | os.PathLike):
        raise ValueError(
            f"store must be a filesystem path (str or os.PathLike); got {_describe(store)}"
        )
    text = os.fspath(store)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text:
        raise ValueError("store must be a non-empty path")
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if scheme and scheme.group(1).lower() != "file":
        raise ValueError(
            f"store {text!r} is a {scheme.group(1)}:// URL; tmx.save and tmx.open work on "
            "local paths (a URL would otherwise be written as a local directory named "
            f"'{scheme.group(1)}:'). Save to a local path and copy the directory, or read a "
            "remote store with xr.open_zarr(url) and pass its cube to the measures"
        )
    if scheme:
        text = text[len("file://") :]
    return Path(text).expanduser()


def _check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False; got {_describe(value)}")
    return bool(value)


def _check_member_name(name: Any, what: str) -> str:
    """A coordinate name that is safe to use as the name of a Zarr array in a directory."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a non-empty str; got {_describe(name)}")
    if (
        "/" in name
        or "\\" in name
        or "\x00" in name
        or name.startswith(".")
        or name.startswith("_tmx")
        or name in (DATA_NAME, "zarr.json")
    ):
        raise ValueError(
            f"{what} {name!r} cannot be stored: coordinate names must not contain '/', '\\' or "
            f"NUL, start with '.' or '_tmx', or be {DATA_NAME!r} or 'zarr.json'"
        )
    return name


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


# --------------------------------------------------------------------------------------------
# attributes


def _encode_attr(value: Any, where: str, depth: int = 0) -> Any:
    """JSON form of one attribute value; tuples are tagged so they come back as tuples."""
    if depth > MAX_ATTR_DEPTH and isinstance(value, list | tuple | dict):
        raise ValueError(
            f"{where} nests lists, tuples or dicts deeper than {MAX_ATTR_DEPTH} levels; tmx "
            "stores attrs up to that depth"
        )
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.generic):
        raise ValueError(
            f"{where} must be JSON-compatible (str, int, float, bool, None, list, tuple or "
            f"dict with str keys); got the NumPy scalar {_describe(value)} -- convert it with "
            ".item()"
        )
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(
                f"{where} must be a finite float (JSON has no NaN/Infinity); got {value}"
            )
        return float(value)
    if isinstance(value, list):
        return [_encode_attr(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {
            _TUPLE_TAG: [_encode_attr(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
        }
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(
                    f"{where} must be a dict with str keys; got the key {_describe(k)}"
                )
            if k == _TUPLE_TAG:
                raise ValueError(f"{where} must not use the reserved key {_TUPLE_TAG!r}")
            out[k] = _encode_attr(v, f"{where}[{k!r}]", depth + 1)
        return out
    hint = " -- convert it with .tolist()" if isinstance(value, np.ndarray) else ""
    raise ValueError(
        f"{where} must be JSON-compatible (str, int, float, bool, None, list, tuple or dict "
        f"with str keys); got {type(value).__name__} {_describe(value)}{hint}"
    )


def _decode_attr(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode_attr(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {_TUPLE_TAG} and isinstance(value[_TUPLE_TAG], list):
            return tuple(_decode_attr(v) for v in value[_TUPLE_TAG])
        return {k: _decode_attr(v) for k, v in value.items()}
    return value


def _plain_attr(value: Any) -> Any:
    """Decoded JSON form (tuples as lists) for the Zarr attributes other readers see."""
    if isinstance(value, list | tuple):
        return [_plain_attr(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain_attr(v) for k, v in value.items()}
    return value


def _encode_attrs(attrs: Mapping[Any, Any], where: str) -> dict[str, Any]:
    out = {}
    for key, value in attrs.items():
        if not isinstance(key, str):
            raise ValueError(f"{where} keys must be str; got {_describe(key)}")
        out[key] = _encode_attr(value, f"{where}[{key!r}]")
    return out


# --------------------------------------------------------------------------------------------
# coordinates


def _coord_values(coord: xr.DataArray, name: str) -> np.ndarray:
    """The values of a coordinate, checked to be storable without pickling."""
    values = np.asarray(coord.values)
    kind = values.dtype.kind
    if kind in "biuf" and values.dtype.name in _SAFE_DATA_TYPES:
        return values if values.dtype.isnative else values.astype(values.dtype.newbyteorder("="))
    if kind == "U":
        return values if values.dtype.isnative else values.astype(values.dtype.newbyteorder("="))
    if kind == "O":
        if all(isinstance(v, str) for v in values.reshape(-1)):
            return values
        bad = next(v for v in values.reshape(-1) if not isinstance(v, str))
        raise ValueError(
            f"cube.coords[{name!r}] has dtype object with a non-str element {_describe(bad)}; "
            "coordinates must be bool, integer, float or str"
        )
    raise ValueError(
        f"cube.coords[{name!r}] has dtype {values.dtype}; coordinates must be bool, integer, "
        "float or str"
    )


def _hash_values(values: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(_canonical_json([values.dtype.kind in "UO", list(values.shape)]).encode())
    if values.dtype.kind in "UO":
        for v in values.reshape(-1):
            b = str(v).encode("utf-8")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
    else:
        h.update(values.dtype.str.encode())
        h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()


def _restore_values(raw: Any, dtype: str, name: str) -> np.ndarray:
    values = np.asarray(raw)
    target = np.dtype(dtype)
    if target.kind in "UO":
        if values.dtype.kind not in "TUO":
            raise ValueError(f"coordinate {name!r} should hold strings; found dtype {values.dtype}")
        return values.astype(target)
    if values.dtype != target:
        raise ValueError(f"coordinate {name!r} should have dtype {target}; found {values.dtype}")
    return values


# --------------------------------------------------------------------------------------------
# the cube and its manifest


def _regular_chunks(chunks: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], bool]:
    """The regular chunk shape for ``chunks``, and whether ``chunks`` already is regular."""
    shape, regular = [], True
    for c in chunks:
        size = max(c) if c else 1
        ok = all(x == c[0] for x in c[:-1]) and c[-1] <= c[0] if c else True
        regular &= ok
        shape.append(max(int(size), 1))
    return tuple(shape), regular


def _prepare(cube: Any) -> xr.DataArray:
    """Validate ``cube`` and return it dask-backed with regular chunks."""
    if not isinstance(cube, xr.DataArray):
        raise ValueError(f"cube must be an xarray.DataArray; got {type(cube).__name__}")
    if cube.dims != DIMS:
        raise ValueError(f"cube must have dims exactly {DIMS}; got {cube.dims}")
    if cube.dtype.kind != "f" or cube.dtype.name not in _FLOAT_DATA_TYPES:
        raise ValueError(f"cube must have dtype float16, float32 or float64; got {cube.dtype}")
    if not cube.dtype.isnative:
        cube = cube.astype(cube.dtype.newbyteorder("="))
    if cube.name is not None and not isinstance(cube.name, str):
        raise ValueError(f"cube.name must be a str or None; got {_describe(cube.name)}")
    for name, dims in REQUIRED_COORDS.items():
        if name not in cube.coords:
            raise ValueError(f"cube must have a coordinate {name!r} along {dims}")
    for name, coord in cube.coords.items():
        _check_member_name(name, "cube coordinate name")
        if name in KNOWN_COORDS and coord.dims != KNOWN_COORDS[name]:
            raise ValueError(
                f"cube.coords[{name!r}] must be along {KNOWN_COORDS[name]}; got {coord.dims}"
            )
    lower: dict[str, str] = {}
    for name in cube.coords:
        if name.lower() in lower:
            raise ValueError(
                f"cube coordinates {lower[name.lower()]!r} and {name!r} differ only in case, "
                "which case-insensitive filesystems cannot store side by side"
            )
        lower[name.lower()] = name
    if not isinstance(cube.data, da.Array):
        chunks = da.core.normalize_chunks(
            "auto", cube.shape, limit=DEFAULT_CHUNK_BYTES, dtype=cube.dtype
        )
        cube = cube.chunk(dict(zip(DIMS, chunks, strict=True)))
    if any(math.isnan(c) for cs in cube.data.chunks for c in cs):
        raise ValueError("cube has unknown (NaN) chunk sizes; call cube.data.compute_chunk_sizes()")
    shape, regular = _regular_chunks(cube.data.chunks)
    if not regular:
        # Zarr needs one chunk shape; the largest chunk along each dim keeps chunks as big as
        # the cube's and the number of chunks no larger.
        cube = cube.chunk(dict(zip(DIMS, shape, strict=True)))
    return cube


def _manifest(cube: xr.DataArray) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The manifest of a prepared cube, and the coordinate values to store."""
    values: dict[str, np.ndarray] = {}
    coords = []
    for name, coord in cube.coords.items():
        v = _coord_values(coord, name)
        values[name] = v
        coords.append(
            {
                "name": name,
                "dims": list(coord.dims),
                "dtype": v.dtype.str,
                "attrs": _encode_attrs(coord.attrs, f"cube.coords[{name!r}].attrs"),
                "sha256": _hash_values(v),
            }
        )
    chunk_shape, _ = _regular_chunks(cube.data.chunks)
    manifest = {
        "name": cube.name,
        "dims": list(cube.dims),
        "shape": [int(n) for n in cube.shape],
        "chunks": list(chunk_shape),
        "dtype": cube.dtype.str,
        "attrs": _encode_attrs(cube.attrs, "cube.attrs"),
        "coords": coords,
    }
    return manifest, values


def _fingerprint(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical_json(manifest).encode()).hexdigest()


# Attrs that differ between two builds of the same cube (a cube rebuilt after a crash has a new
# creation time): ignored when deciding whether a store holds the cube being resumed.
VOLATILE_ATTRS = ("created",)


def _without_volatile(manifest: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(manifest)
    attrs = out.get("attrs")
    if isinstance(attrs, Mapping):
        out["attrs"] = {k: val for k, val in attrs.items() if k not in VOLATILE_ATTRS}
    return out


def _same_cube(store_manifest: Any, cube_manifest: Mapping[str, Any]) -> bool:
    """Whether a store's manifest describes the cube being saved (volatile attrs aside)."""
    if not isinstance(store_manifest, Mapping):
        return False
    return _fingerprint(_without_volatile(store_manifest)) == _fingerprint(
        _without_volatile(cube_manifest)
    )


# attrs of tmx.activations cubes that identify what the values were computed from
_IDENTITY_ATTRS = {
    "model_config_sha256": "the model's architecture differs",
    "model_weights_sha256": "the model's weights differ",
    "input_sha256": "the input x differs",
}


def _manifest_differences(store: Mapping[str, Any], cube: Mapping[str, Any]) -> list[str]:
    store, cube = _without_volatile(store), _without_volatile(cube)
    out = []
    for key in ("name", "dims", "shape", "chunks", "dtype"):
        if store.get(key) != cube.get(key):
            out.append(f"{key} differs (store {store.get(key)!r}, cube {cube.get(key)!r})")
    if _canonical_json(store.get("attrs")) != _canonical_json(cube.get("attrs")):
        keys = sorted(
            k
            for k in set(store.get("attrs") or {}) | set(cube.get("attrs") or {})
            if _canonical_json((store.get("attrs") or {}).get(k))
            != _canonical_json((cube.get("attrs") or {}).get(k))
        )
        for key, what in _IDENTITY_ATTRS.items():
            if key in keys:
                out.append(f"{what} ({key})")
        others = [k for k in keys if k not in _IDENTITY_ATTRS]
        if others:
            out.append(f"attrs differ (keys {others})")
    s_coords = {c.get("name"): c for c in store.get("coords") or [] if isinstance(c, dict)}
    c_coords = {c["name"]: c for c in cube["coords"]}
    if set(s_coords) != set(c_coords):
        out.append(f"coordinates differ (store {sorted(s_coords)}, cube {sorted(c_coords)})")
    for name in sorted(set(s_coords) & set(c_coords)):
        for key in ("dims", "dtype", "attrs"):
            if _canonical_json(s_coords[name].get(key)) != _canonical_json(c_coords[name][key]):
                out.append(f"coordinate {name!r}: {key} differ")
        if s_coords[name].get("sha256") != c_coords[name]["sha256"]:
            out.append(f"coordinate {name!r}: values differ")
    return out or ["the fingerprints differ"]


# --------------------------------------------------------------------------------------------
# reading raw metadata (no Zarr decoding involved)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        with builtins.open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{what}: {path} is missing") from None
    except RecursionError:
        raise ValueError(
            f"{what}: {path} nests JSON too deeply to be read; tmx writes at most "
            f"{_MAX_JSON_DEPTH} levels"
        ) from None
    except (OSError, ValueError) as err:
        raise ValueError(f"{what}: cannot read {path} as JSON ({err})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{what}: {path} does not hold a JSON object")
    if _json_depth(meta) > _MAX_JSON_DEPTH:
        raise ValueError(
            f"{what}: {path} nests lists or objects deeper than {_MAX_JSON_DEPTH} levels, "
            "which tmx never writes"
        )
    return meta


def _json_depth(value: Any) -> int:
    """Nesting depth of lists and dicts in ``value`` (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > _MAX_JSON_DEPTH:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _group_attrs(path: Path, strict: bool = False) -> dict[str, Any] | None:
    """Attributes of the Zarr v3 group at ``path``, or None when it is not one. ``strict``:
    raise the reason when ``zarr.json`` exists but cannot be read."""
    meta_path = path / "zarr.json"
    if not meta_path.is_file():
        return None
    try:
        meta = _read_json(meta_path, f"store {path}")
    except ValueError:
        if strict:
            raise
        return None
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "group":
        return None
    attrs = meta.get("attributes", {})
    return attrs if isinstance(attrs, dict) else None


def _is_tmx_store(path: Path) -> bool:
    attrs = _group_attrs(path)
    return attrs is not None and attrs.get("tmx_format") == FORMAT


def _codec_names(codecs: Any, where: str) -> list[str]:
    if not isinstance(codecs, list):
        raise ValueError(f"{where}: malformed codec list {_describe(codecs)}")
    names = []
    for codec in codecs:
        name = (
            codec
            if isinstance(codec, str)
            else codec.get("name")
            if isinstance(codec, dict)
            else None
        )
        if not isinstance(name, str):
            raise ValueError(f"{where}: malformed codec {_describe(codec)}")
        names.append(name)
        if name == "sharding_indexed":
            config = codec.get("configuration", {}) if isinstance(codec, dict) else {}
            names += _codec_names(config.get("codecs", []), where)
            names += _codec_names(config.get("index_codecs", []), where)
    return names


def _check_array_meta(path: Path, member: str) -> dict[str, Any]:
    """Check the raw ``zarr.json`` of an array before Zarr decodes anything from it."""
    where = f"array {member!r} of store {path}"
    if not (path / member).is_dir():
        raise ValueError(f"store {path} has no array {member!r}")
    meta = _read_json(path / member / "zarr.json", where)
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "array":
        raise ValueError(f"{where} is not a Zarr format 3 array")
    dtype = meta.get("data_type")
    dtype_name = dtype.get("name") if isinstance(dtype, dict) else dtype
    if dtype_name not in _SAFE_DATA_TYPES:
        raise ValueError(
            f"{where} has data type {_describe(dtype)}, which tmx does not read (only bool, "
            "integer, float and UTF-8 string data types; never objects or pickles)"
        )
    for name in _codec_names(meta.get("codecs"), where):
        if name not in _SAFE_CODECS:
            raise ValueError(f"{where} uses the codec {name!r}, which tmx does not read")
    if meta.get("storage_transformers"):
        raise ValueError(f"{where} uses storage transformers, which tmx does not read")
    return meta


_CHUNK_KEY_ENCODING = {"name": "default", "configuration": {"separator": "/"}}
_COMPRESSOR_CODECS = frozenset({"zstd", "blosc"})


def _grid(shape: Sequence[int], chunks: Sequence[int]) -> tuple[int, ...]:
    return tuple(-(-int(n) // int(c)) for n, c in zip(shape, chunks, strict=True))


def _is_bytes_codec(codec: Any, endian_required: bool) -> bool:
    if not isinstance(codec, dict) or codec.get("name") != "bytes":
        return False
    config = codec.get("configuration", {})
    if not isinstance(config, dict) or set(config) - {"endian"}:
        return False
    return config.get("endian") == "little" or (not endian_required and "endian" not in config)


def _is_crc32c_codec(codec: Any) -> bool:
    return (
        isinstance(codec, dict)
        and codec.get("name") == "crc32c"
        and codec.get("configuration", {}) in ({}, None)
    )


def _describe_codecs(codecs: Any) -> str:
    if not isinstance(codecs, list):
        return _describe(codecs)
    parts = []
    for codec in codecs:
        if isinstance(codec, dict) and codec.get("name") == "bytes":
            endian = (codec.get("configuration") or {}).get("endian")
            parts.append(f"bytes ({endian} endian)" if endian else "bytes")
        else:
            parts.append(str(codec.get("name") if isinstance(codec, dict) else codec))
    return "[" + ", ".join(parts) + "]"


def _check_layout_meta(
    where: str, meta: Mapping[str, Any], shape: Sequence[int], chunks: Sequence[int]
) -> None:
    """Shape, regular chunk grid and chunk keys of an array exactly as ``save`` writes them."""
    if meta.get("shape") != list(shape):
        raise ValueError(
            f"{where} has shape {_describe(meta.get('shape'))}; expected {list(shape)}"
        )
    grid = meta.get("chunk_grid")
    if grid != {"name": "regular", "configuration": {"chunk_shape": list(chunks)}}:
        raise ValueError(
            f"{where} has the chunk grid {_describe(grid)}; expected regular chunks of shape "
            f"{list(chunks)}"
        )
    if meta.get("chunk_key_encoding") != _CHUNK_KEY_ENCODING:
        raise ValueError(
            f"{where} has the chunk key encoding {_describe(meta.get('chunk_key_encoding'))}; "
            f"tmx writes {_CHUNK_KEY_ENCODING}"
        )


def _check_data_meta(
    path: Path, meta: Mapping[str, Any], manifest: Mapping[str, Any], version: int
) -> None:
    """The activation array's metadata must be exactly what ``save`` writes: another byte
    order, a transpose, another fill value or data type would decode other values."""
    where = f"store {path}: array {DATA_NAME!r}"
    dtype = np.dtype(manifest["dtype"])
    if meta.get("data_type") != dtype.name:
        raise ValueError(
            f"{where} has data type {_describe(meta.get('data_type'))}; the manifest says "
            f"{dtype.name}"
        )
    if meta.get("fill_value") != "NaN":
        raise ValueError(
            f"{where} has fill_value {_describe(meta.get('fill_value'))}; tmx writes NaN"
        )
    _check_layout_meta(where, meta, manifest["shape"], manifest["chunks"])
    codecs = meta.get("codecs")
    body = (codecs[1:-1] if version >= 2 else codecs[1:]) if isinstance(codecs, list) else []
    ok = (
        isinstance(codecs, list)
        and len(codecs) >= (2 if version >= 2 else 1)
        and _is_bytes_codec(codecs[0], endian_required=dtype.itemsize > 1)
        and (version < 2 or _is_crc32c_codec(codecs[-1]))
        and len(body) <= 1
        and all(isinstance(c, dict) and c.get("name") in _COMPRESSOR_CODECS for c in body)
    )
    if not ok:
        expected = "[bytes (little endian), optionally zstd or blosc" + (
            ", crc32c]" if version >= 2 else "]"
        )
        raise ValueError(
            f"{where} has the codecs {_describe_codecs(codecs)}; tmx writes {expected} and "
            "reads no other pipeline (another byte order or a transpose would decode other "
            "values)"
        )


def _check_digest_meta(path: Path, manifest: Mapping[str, Any]) -> None:
    meta = _check_array_meta(path, DIGEST_NAME)
    where = f"store {path}: array {DIGEST_NAME!r}"
    grid = _grid(manifest["shape"], manifest["chunks"])
    if meta.get("data_type") != "uint8" or meta.get("fill_value") != 0:
        raise ValueError(
            f"{where} has data type {_describe(meta.get('data_type'))} and fill_value "
            f"{_describe(meta.get('fill_value'))}; tmx writes uint8 and 0"
        )
    _check_layout_meta(where, meta, [*grid, _DIGEST_BYTES], [1, 1, 1, _DIGEST_BYTES])
    codecs = meta.get("codecs")
    if not (
        isinstance(codecs, list)
        and len(codecs) == 2
        and _is_bytes_codec(codecs[0], endian_required=False)
        and _is_crc32c_codec(codecs[1])
    ):
        raise ValueError(
            f"{where} has the codecs {_describe_codecs(codecs)}; tmx writes [bytes, crc32c]"
        )


def _validate_manifest(manifest: Any, path: Path) -> dict[str, Any]:
    where = f"store {path}"
    if not isinstance(manifest, dict):
        raise ValueError(f"{where} has no valid tmx_manifest attribute")
    dims = manifest.get("dims")
    if not isinstance(dims, list) or tuple(dims) != DIMS:
        raise ValueError(f"{where}: the cube must have dims exactly {DIMS}; the store has {dims!r}")
    shape, chunks = manifest.get("shape"), manifest.get("chunks")
    for key, value, low in (("shape", shape, 0), ("chunks", chunks, 1)):
        if not (
            isinstance(value, list)
            and len(value) == 3
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= low for n in value)
        ):
            raise ValueError(f"{where}: malformed {key} {_describe(value)} in tmx_manifest")
    dtype = manifest.get("dtype")
    if not isinstance(dtype, str) or dtype not in _FLOAT_DTYPE_STRS:
        raise ValueError(f"{where}: the activation dtype must be a float dtype; got {dtype!r}")
    if manifest.get("name") is not None and not isinstance(manifest.get("name"), str):
        raise ValueError(f"{where}: malformed name in tmx_manifest")
    if not isinstance(manifest.get("attrs"), dict):
        raise ValueError(f"{where}: malformed attrs in tmx_manifest")
    coords = manifest.get("coords")
    if not isinstance(coords, list):
        raise ValueError(f"{where}: malformed coords in tmx_manifest")
    seen = set()
    for c in coords:
        if not isinstance(c, dict):
            raise ValueError(f"{where}: malformed coordinate entry {_describe(c)}")
        name = _check_member_name(c.get("name"), f"{where}: coordinate name")
        cdims = c.get("dims")
        if not isinstance(cdims, list) or not all(d in DIMS for d in cdims):
            raise ValueError(
                f"{where}: coordinate {name!r} has dims {cdims!r}; each must be one of {DIMS}"
            )
        if name in KNOWN_COORDS and tuple(cdims) != KNOWN_COORDS[name]:
            raise ValueError(
                f"{where}: coordinate {name!r} must be along {KNOWN_COORDS[name]}; "
                f"the store has it along {tuple(cdims)}"
            )
        try:
            kind = np.dtype(c.get("dtype")).kind
        except TypeError:
            kind = None
        if kind not in tuple("biufUO"):
            raise ValueError(
                f"{where}: coordinate {name!r} has unsupported dtype {c.get('dtype')!r}"
            )
        if not isinstance(c.get("attrs"), dict) or not isinstance(c.get("sha256"), str):
            raise ValueError(f"{where}: malformed entry for coordinate {name!r}")
        seen.add(name)
    missing = [n for n in REQUIRED_COORDS if n not in seen]
    if missing:
        raise ValueError(
            f"{where} is missing the coordinate(s) {missing}; a tmx cube needs "
            + ", ".join(f"{n!r} along {d}" for n, d in REQUIRED_COORDS.items())
        )
    return manifest


# --------------------------------------------------------------------------------------------
# checksums and damage


class ChunkProblem(NamedTuple):
    """One bad chunk of a store: its index in the chunk grid, the sample, transformation and
    unit positions it holds, and what is wrong with it."""

    index: tuple[int, int, int]
    samples: range
    transformations: range
    units: range
    problem: str

    def __str__(self) -> str:
        return f"{_chunk_label(self.index, self.samples, self.transformations, self.units)}: " + (
            self.problem
        )


def _chunk_label(index: Sequence[int], *ranges: range) -> str:
    parts = [
        f"{dim}s {r.start}..{r.stop - 1}" if len(r) else f"no {dim}s"
        for dim, r in zip(DIMS, ranges, strict=True)
    ]
    return f"chunk {tuple(index)} ({', '.join(parts)})"


def _chunk_ranges(
    index: Sequence[int], shape: Sequence[int], chunks: Sequence[int]
) -> tuple[range, range, range]:
    return tuple(  # type: ignore[return-value]
        range(i * c, min(n, (i + 1) * c)) for i, n, c in zip(index, shape, chunks, strict=True)
    )


def _problem(index: Sequence[int], shape: Sequence[int], chunks: Sequence[int], text: str):
    return ChunkProblem(tuple(int(i) for i in index), *_chunk_ranges(index, shape, chunks), text)


class StoreDamagedError(ValueError):
    """A store whose chunks are missing or do not match their checksums.

    ``problems`` lists each bad chunk (a ``ChunkProblem``: grid index, the sample,
    transformation and unit ranges, and what is wrong)."""

    def __init__(self, path: Path | str, problems: Sequence[ChunkProblem], when: str = "") -> None:
        self.path = str(path)
        self.problems = list(problems)
        self._when = when
        shown = "; ".join(str(p) for p in self.problems[:10])
        more = f"; and {len(self.problems) - 10} more" if len(self.problems) > 10 else ""
        super().__init__(
            f"store {path} is damaged{when}: {len(self.problems)} bad chunk(s): {shown}{more}. "
            "No value of a bad chunk is returned. Restore the store from a copy, or save the "
            "cube again (tmx.save(cube, store, overwrite=True)); tmx.verify(store) lists every "
            "bad chunk"
        )

    def __reduce__(self) -> tuple[Any, ...]:  # raised on dask workers, re-raised here
        return (type(self), (self.path, self.problems, self._when))


def _chunk_digest(index: Sequence[int], block: np.ndarray) -> bytes:
    """CRC-32C of a chunk's values, seeded with its position, shape and dtype (4 bytes)."""
    block = np.ascontiguousarray(block)
    head = f"tmx-chunk|{tuple(int(i) for i in index)}|{block.shape}|{block.dtype.str}|"
    crc = google_crc32c.value(head.encode())
    if block.size:
        crc = google_crc32c.extend(crc, block)
    return int(crc).to_bytes(4, "little")


def _chunk_file(path: Path, member: str, index: Sequence[int]) -> Path:
    return path.joinpath(member, "c", *(str(int(i)) for i in index))


def _read_digest_record(path: Path, index: Sequence[int]) -> bytes | None:
    """The 36-byte record of chunk ``index``, read straight from its file (codecs ``bytes``
    and ``crc32c``, checked by ``open``): None when missing or when its CRC-32C fails."""
    try:
        raw = _chunk_file(path, DIGEST_NAME, (*index, 0)).read_bytes()
    except OSError:
        return None
    if len(raw) != _DIGEST_BYTES + 4:
        return None
    if int(google_crc32c.value(raw[:-4])).to_bytes(4, "little") != raw[-4:]:
        return None
    return raw[:-4]


def _listed_chunks(directory: Path, depth: int) -> set[tuple[int, ...]]:
    """Indices of the chunk files under ``directory`` (Zarr's default ``c/i/j/k`` keys): a
    directory listing, nothing is read. Zarr's temporary ``*.partial`` files are not chunks."""
    found: set[tuple[int, ...]] = set()

    def walk(d: Path, prefix: tuple[int, ...]) -> None:
        try:
            entries = list(os.scandir(d))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if not entry.name.isdigit():
                continue
            index = (*prefix, int(entry.name))
            if len(index) == depth:
                if entry.is_file():
                    found.add(index)
            elif entry.is_dir():
                walk(Path(entry.path), index)

    walk(directory / "c", ())
    return found


def _missing_chunks(path: Path, manifest: Mapping[str, Any]) -> list[ChunkProblem]:
    """Chunks of a complete store whose data or digest file is not there (a listing)."""
    shape, chunks = manifest["shape"], manifest["chunks"]
    grid = _grid(shape, chunks)
    if 0 in grid:
        return []
    data = _listed_chunks(path / DATA_NAME, 3)
    digests = {idx[:3] for idx in _listed_chunks(path / DIGEST_NAME, 4) if idx[3] == 0}
    out = []
    for index in np.ndindex(*grid):
        if index not in data:
            out.append(_problem(index, shape, chunks, "its file is missing"))
        elif index not in digests:
            out.append(_problem(index, shape, chunks, "its checksum record is missing"))
    return out


class _ChunkReader:
    """Reads one chunk of a checksummed store and checks it against its record.

    Zarr's ``crc32c`` codec checks the stored bytes (a flipped bit, a truncated file); the
    record's CRC-32C of the decoded values, seeded with the chunk's position, catches a chunk
    file that was swapped with, or replaced by, another valid one, and a missing file (which
    Zarr would read as NaN)."""

    def __init__(self, path: Path, shape: Sequence[int], chunks: Sequence[int]) -> None:
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        self.chunks = tuple(int(c) for c in chunks)
        self._array: zarr.Array | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "shape": self.shape, "chunks": self.chunks, "_array": None}

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("tmx-chunk-reader", str(self.path), self.shape, self.chunks)

    def _get_array(self) -> zarr.Array:
        if self._array is None:
            self._array = zarr.open_array(str(self.path / DATA_NAME), mode="r", zarr_format=3)
        return self._array

    def read(self, index: Sequence[int]) -> tuple[np.ndarray | None, ChunkProblem | None]:
        """(the chunk, None) or (None, what is wrong with it)."""
        index = tuple(int(i) for i in index)
        region = tuple(
            slice(i * c, min(n, (i + 1) * c))
            for i, c, n in zip(index, self.chunks, self.shape, strict=True)
        )

        def bad(text: str) -> tuple[None, ChunkProblem]:
            return None, _problem(index, self.shape, self.chunks, text)

        chunk_file = _chunk_file(self.path, DATA_NAME, index)
        try:
            block = np.asarray(self._get_array()[region])
        except Exception as err:  # the crc32c codec, a decompressor, a truncated file
            if "checksum" in str(err).lower():
                return bad("its stored bytes do not match their CRC-32C checksum (damaged file)")
            return bad(f"it cannot be decoded ({type(err).__name__}: {err})")
        record = _read_digest_record(self.path, index)
        if record is None:
            if not chunk_file.is_file():
                return bad("its file is missing")
            return bad("its checksum record is missing or damaged")
        if record[:4] != _chunk_digest(index, block):
            if not chunk_file.is_file():
                return bad("its file is missing")
            return bad(
                "its values do not match the checksum recorded when it was written (a chunk "
                "file swapped with or replaced by another, or altered)"
            )
        return block, None

    def __call__(self, index: Sequence[int]) -> np.ndarray:
        block, problem = self.read(index)
        if problem is not None:
            raise StoreDamagedError(self.path, [problem], " (found while reading)")
        return block


def _read_chunk(reader: _ChunkReader, index: tuple[int, int, int]) -> np.ndarray:
    return reader(index)


# --------------------------------------------------------------------------------------------
# one writer: the lock


class StoreLockedError(FileExistsError):
    """Another save (or resume, or overwrite) holds the store's lock.

    ``lock_path`` is the lock file, ``holder`` what it says about its writer (host, pid,
    start time; None when unreadable) and ``stale`` whether that writer is known to be dead
    (a process of this host that no longer runs)."""

    lock_path: str
    holder: dict[str, Any] | None
    stale: bool


def _lock_path(path: Path) -> Path:
    real = path.resolve()
    return real.parent / (real.name + LOCK_SUFFIX)


def _process_start(pid: int) -> int | None:
    """Start time of a process (clock ticks after boot, Linux), to tell a reused pid."""
    try:
        with builtins.open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _holder_alive(holder: Any) -> bool | None:
    """True/False when the lock's holder runs on this host; None when it cannot be told."""
    if not isinstance(holder, dict) or holder.get("host") != socket.gethostname():
        return None
    pid = holder.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    except OSError:
        return None
    started = holder.get("pid_start")
    now = _process_start(pid)
    if isinstance(started, int) and now is not None and started != now:
        return False  # the pid was reused by a newer process
    return True


def _read_lock(lock: Path) -> tuple[dict[str, Any] | None, bytes | None]:
    """(holder, raw bytes); raw is None when the lock file is gone."""
    try:
        raw = lock.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError:
        return None, b""
    try:
        holder = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, raw
    return (holder if isinstance(holder, dict) else None), raw


def _describe_holder(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "a writer that left no readable owner (killed while taking the lock?)"
    return (
        f"pid {holder.get('pid')!r} on host {holder.get('host')!r}, started "
        f"{holder.get('started')!r}"
    )


def _locked_error(
    path: Path, lock: Path, holder: dict[str, Any] | None, alive: bool | None, tried: bool
) -> StoreLockedError:
    who = _describe_holder(holder)
    if alive is False:
        text = (
            f"store {path} is locked by {lock}, left by a save ({who}) whose process is no "
            "longer running: it was killed. If no other save of this store is running, delete "
            f"{lock} or pass break_lock=True, then resume=True finishes the store"
        )
    elif alive is True:
        text = (
            f"store {path} is being written by another save ({who}; lock file {lock}). "
            "Wait for it to finish"
            + (
                ": break_lock=True breaks only the lock of a process that is not running"
                if tried
                else ""
            )
        )
    else:
        text = (
            f"store {path} is locked by {lock} ({who}), which tmx cannot check from this host. "
            "If that save is not running any more, delete the lock file or pass "
            "break_lock=True"
        )
    err = StoreLockedError(text)
    err.lock_path, err.holder, err.stale = str(lock), holder, alive is False
    return err


def _break_lock(lock: Path, raw: bytes) -> bool:
    """Remove the lock file if it still holds ``raw``; False if another writer replaced it."""
    aside = lock.with_name(f"{lock.name}.broken-{uuid.uuid4().hex}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return True
    if aside.read_bytes() == raw:
        aside.unlink()
        return True
    try:  # not the lock we judged: put it back
        os.link(aside, lock)
    except OSError:
        pass
    aside.unlink()
    return False


class _Lock:
    def __init__(self, path: Path, lock: Path, break_lock: bool) -> None:
        self.path, self.lock, self.break_lock = path, lock, break_lock
        self.token = uuid.uuid4().hex

    def __enter__(self) -> _Lock:
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_start": _process_start(os.getpid()),
            "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "token": self.token,
            "tmx_version": __version__,
            "store": str(self.path),
        }
        broken = False
        for _ in range(5):
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder, raw = _read_lock(self.lock)
                if raw is None:
                    continue  # released meanwhile: try again
                alive = _holder_alive(holder)
                if self.break_lock and not broken and alive is not True:
                    broken = _break_lock(self.lock, raw)
                    if broken:
                        continue
                raise _locked_error(self.path, self.lock, holder, alive, self.break_lock) from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(info, f)
                f.flush()
                os.fsync(f.fileno())
            return self
        holder, _ = _read_lock(self.lock)
        raise _locked_error(self.path, self.lock, holder, _holder_alive(holder), self.break_lock)

    def __exit__(self, *exc: Any) -> None:
        holder, _ = _read_lock(self.lock)
        if holder is not None and holder.get("token") == self.token:
            self.lock.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# writing


def _store_state(path: Path) -> str:
    """ "missing", "empty" (nothing, or only what a save killed before its first metadata
    write leaves: Zarr temporary files, an unreadable ``zarr.json``), "tmx", "other" or
    "file"."""
    if not path.exists():
        return "missing"
    if not path.is_dir():
        return "file"
    if _is_tmx_store(path):
        return "tmx"
    return "empty" if _leftovers(path) is not None else "other"


def _leftovers(path: Path) -> list[Path] | None:
    out = []
    for entry in os.scandir(path):
        if entry.is_file(follow_symlinks=False) and _ZARR_TEMP.search(entry.name):
            out.append(Path(entry.path))
        elif entry.name == "zarr.json" and entry.is_file(follow_symlinks=False):
            try:
                _read_json(Path(entry.path), "")
            except ValueError:  # a partial first write
                out.append(Path(entry.path))
            else:
                return None
        else:
            return None
    return out


def _remove_temp_files(path: Path) -> None:
    """Zarr's temporary files left by a killed save (never read, never needed)."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            if _ZARR_TEMP.search(name):
                Path(root, name).unlink(missing_ok=True)


def _clear_store(path: Path) -> None:
    """Delete a tmx store, marking it incomplete first: a delete interrupted half-way leaves
    an incomplete store that ``open`` refuses (and ``overwrite`` or ``resume`` can reuse),
    never a complete-looking one with chunks missing."""
    meta_path = path / "zarr.json"
    meta = _read_json(meta_path, f"store {path}")
    meta.setdefault("attributes", {})["tmx_complete"] = False
    tmp = path / f"zarr.{uuid.uuid4().hex}.partial"
    tmp.write_text(json.dumps(meta), encoding="utf-8")
    os.replace(tmp, meta_path)
    for entry in os.scandir(path):
        if entry.name != "zarr.json":
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
    shutil.rmtree(path)


def _create_store(
    path: Path,
    manifest: dict[str, Any],
    fingerprint: str,
    values: Mapping[str, np.ndarray],
    compression: str | None = "zstd",
    checksums: bool = True,
) -> None:
    group = zarr.create_group(
        store=str(path),
        zarr_format=3,
        overwrite=False,
        attributes={
            "tmx_format": FORMAT,
            "tmx_format_version": FORMAT_VERSION if checksums else 1,
            "tmx_complete": False,
            "tmx_fingerprint": fingerprint,
            "tmx_manifest": manifest,
        },
    )
    _write_coords(group, manifest, values)
    _ensure_data_arrays(group, manifest, path, compression, checksums)


def _write_coords(
    group: zarr.Group, manifest: dict[str, Any], values: Mapping[str, np.ndarray]
) -> None:
    for c in manifest["coords"]:
        v = values[c["name"]]
        is_str = v.dtype.kind in "UO"
        arr = group.create_array(
            c["name"],
            shape=v.shape,
            chunks=tuple(max(n, 1) for n in v.shape),
            dtype=str if is_str else v.dtype,
            dimension_names=c["dims"],
            attributes=_plain_attr(_decode_attr(c["attrs"])),
            overwrite=True,
        )
        if v.size:
            arr[...] = v.astype(str) if is_str else v


def _ensure_data_arrays(
    group: zarr.Group,
    manifest: dict[str, Any],
    path: Path,
    compression: str | None = "zstd",
    checksums: bool = True,
) -> None:
    shape, chunks = tuple(manifest["shape"]), tuple(manifest["chunks"])
    grid = _grid(shape, chunks)
    plain = _plain_attr(_decode_attr(manifest["attrs"]))
    if "coordinates" not in plain:
        plain["coordinates"] = " ".join(
            c["name"] for c in manifest["coords"] if c["name"] not in DIMS
        )
    crc = [zarr.codecs.Crc32cCodec()] if checksums else []
    specs = [
        (
            DATA_NAME,
            shape,
            chunks,
            np.dtype(manifest["dtype"]),
            np.nan,
            DIMS,
            plain,
            (_COMPRESSORS[compression]() or []) + crc,
        ),
        (DONE_NAME, grid, (1, 1, 1), np.dtype(bool), False, _DONE_DIMS, {}, "auto"),
    ]
    if checksums:
        specs.append(
            (
                DIGEST_NAME,
                (*grid, _DIGEST_BYTES),
                (1, 1, 1, _DIGEST_BYTES),
                np.dtype(np.uint8),
                0,
                _DIGEST_DIMS,
                {},
                crc,
            )
        )
    for name, ashape, achunks, dtype, fill, dims, attrs, compressors in specs:
        if name in group:
            arr = group[name]
            if (
                not isinstance(arr, zarr.Array)
                or arr.shape != ashape
                or arr.chunks != achunks
                or arr.dtype != dtype
            ):
                raise ValueError(
                    f"store {path}: array {name!r} does not match the cube (shape, chunks or "
                    "dtype); save to a new store or pass overwrite=True"
                )
            continue
        group.create_array(
            name,
            shape=ashape,
            chunks=achunks,
            dtype=dtype,
            fill_value=fill,
            dimension_names=dims,
            attributes=attrs,
            compressors=compressors or None,
        )


class _BlockWriter:
    """Writes one block of the cube into the store, then its record, then flags it done."""

    def __init__(self, path: Path, chunks: Sequence[int], checksums: bool = True) -> None:
        self.path = str(path)
        self.chunks = tuple(chunks)
        self.checksums = checksums
        self._arrays: tuple[zarr.Array, zarr.Array, zarr.Array | None] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "chunks": self.chunks,
            "checksums": self.checksums,
            "_arrays": None,
        }

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("tmx-block-writer", self.path, self.chunks, self.checksums)

    def _get_arrays(self) -> tuple[zarr.Array, zarr.Array, zarr.Array | None]:
        if self._arrays is None:
            group = zarr.open_group(self.path, mode="r+", zarr_format=3, use_consolidated=False)
            # every chunk is written, an all-NaN one too: a missing file is always damage
            config = {"write_empty_chunks": True}
            data = group[DATA_NAME].with_config(config)
            digests = group[DIGEST_NAME].with_config(config) if self.checksums else None
            self._arrays = (data, group[DONE_NAME], digests)
        return self._arrays

    def __call__(
        self,
        block: np.ndarray,
        index: Sequence[int],
        input_digest: bytes | None = None,
        _gate: Any = None,
    ) -> int:
        index = tuple(index)
        data, done, digests = self._get_arrays()
        region = tuple(
            slice(i * c, i * c + n) for i, c, n in zip(index, self.chunks, block.shape, strict=True)
        )
        expected = tuple(
            min(c, s - i * c) for i, c, s in zip(index, self.chunks, data.shape, strict=True)
        )
        if block.shape != expected:
            raise ValueError(
                f"block {index} of the cube has shape {block.shape}; expected {expected}"
            )
        block = np.ascontiguousarray(block, dtype=data.dtype)  # the values Zarr stores
        data[region] = block
        if digests is not None:
            record = _chunk_digest(index, block) + (input_digest or _NO_INPUT)
            digests[(*index, slice(None))] = np.frombuffer(record, np.uint8)
        done[index] = True
        return 1


def _uses_default_threads() -> bool:
    """Whether dask would run a computation on its default local thread pool."""
    if dask.config.get("pool", None) is not None:
        return False
    if dask.config.get("scheduler", None) is None and "distributed" not in sys.modules:
        return True  # no distributed client can exist; avoids importing distributed
    return dask.base.get_scheduler() in (None, dask.threaded.get)


class _InputMismatch(ValueError):
    """Resume refused: a chunk already written was computed from other inputs."""


def _sample_ranges(blocks: Sequence[int], s_chunk: int, n: int) -> str:
    """``0..9, 30..49``: the samples of sample blocks, adjacent blocks merged."""
    spans: list[list[int]] = []
    for b in sorted(blocks):
        lo, hi = b * s_chunk, min(n, (b + 1) * s_chunk) - 1
        if spans and spans[-1][1] + 1 == lo:
            spans[-1][1] = hi
        else:
            spans.append([lo, hi])
    return ", ".join(f"{lo}..{hi}" for lo, hi in spans)


def _input_mismatch(path: Path, blocks: Sequence[int], manifest: Mapping[str, Any]) -> str:
    samples = _sample_ranges(blocks, manifest["chunks"][0], manifest["shape"][0])
    return (
        f"cannot resume: the store {path} holds a different cube (the input x differs in "
        f"samples {samples}: the chunks stored for them were computed from other inputs). "
        "Save to a new store, or pass overwrite=True to replace it"
    )


def _check_inputs(
    path: str, manifest: Mapping[str, Any], expected: Mapping[int, bytes], *got: bytes
) -> int:
    """Gate of a resume's writes: the digests of the input blocks ``expected`` names (in
    order) must be the recorded ones."""
    bad = [i for (i, want), have in zip(expected.items(), got, strict=True) if want != have]
    if bad:
        raise _InputMismatch(_input_mismatch(Path(path), bad, manifest))
    return 0


def _write_blocks(
    data: da.Array,
    todo: Sequence[tuple[int, int, int]],
    writer: _BlockWriter,
    progress: bool,
    input_keys: Sequence[Any] | None = None,
    gate: tuple[Any, ...] | None = None,
) -> None:
    """Compute and write the blocks ``todo`` of ``data`` in one dask computation.

    With ``input_keys`` (per sample block, the key in ``data``'s graph of its input digest)
    each write also gets its block's input digest, computed in this same computation from
    the input block the forward pass reads. ``gate`` is a task every write waits for."""
    if not todo:
        return
    # One graph: a write task per block to do, depending on that block of ``data``, and a
    # final task counting the writes. dask culls it to what the blocks to do need, so work
    # that several blocks share (one forward pass for every unit chunk) is computed once.
    name = "tmx-save-" + dask.base.tokenize(data.name, writer, list(todo), gate)
    gate_key = (name + "-gate",) if gate is not None else None
    layer: dict[Any, Any] = {
        (name, *idx): (
            writer,
            (data.name, *idx),
            list(idx),
            input_keys[idx[0]] if input_keys is not None else None,
            gate_key,
        )
        for idx in todo
    }
    if gate is not None:
        layer[gate_key] = gate
    layer[(name + "-done",)] = (sum, [(name, *idx) for idx in todo])
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[data])
    tasks = [Delayed((name + "-done",), graph, layer=name)]
    kwargs: dict[str, Any] = {}
    pool = None
    if _uses_default_threads():
        # Our own pool, so that when a block fails we can wait for the blocks still being
        # written before returning: no write happens after save() has raised.
        workers = dask.config.get("num_workers", None) or dask.threaded.CPU_COUNT
        pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="tmx-save")
        kwargs = {"scheduler": pool}  # an Executor: dask's local scheduler on this pool
    try:
        with _progress.dask_bar(progress):
            dask.compute(*tasks, **kwargs)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _input_keys(data: da.Array) -> tuple[Any, ...] | None:
    """Per sample block, the key of its input digest in the graph of a ``tmx.activations``
    cube (None for other cubes)."""
    cube_module = sys.modules.get(f"{__package__}.cube")
    if cube_module is None:  # no tmx.activations cube can exist
        return None
    return cube_module.input_digest_keys(data)


def _compute_input_digests(
    data: da.Array, input_keys: Sequence[Any], blocks: Sequence[int]
) -> list[bytes]:
    """The input digests of sample blocks ``blocks``: reads those blocks of ``x``, no
    forward pass."""
    if not blocks:
        return []
    graph = data.__dask_graph__()
    tasks = [Delayed(input_keys[i], graph, layer=data.name) for i in blocks]
    return list(dask.compute(*tasks))


def _differing_samples(
    path: Path, store_manifest: Any, manifest: Mapping[str, Any], cube: xr.DataArray
) -> str:
    """The samples whose input blocks differ from those recorded with the chunks written,
    for an in-memory ``x`` whose whole digest differs (cheap: ``x`` is in memory); "" when
    that cannot be told."""
    input_keys = _input_keys(cube.data)
    if (
        input_keys is None
        or not isinstance(store_manifest, Mapping)
        or store_manifest.get("shape") != manifest["shape"]
        or store_manifest.get("chunks") != manifest["chunks"]
        or not cube.size
    ):
        return ""
    try:
        group = zarr.open_group(str(path), mode="r", zarr_format=3, use_consolidated=False)
        done = np.asarray(group[DONE_NAME][...], dtype=bool)
        records = np.asarray(group[DIGEST_NAME][...], dtype=np.uint8)
    except Exception:  # an unreadable store: the plain message says enough
        return ""
    blocks = [i for i in range(done.shape[0]) if done[i].any()]
    got = _compute_input_digests(cube.data, input_keys, blocks)
    bad = []
    for i, digest in zip(blocks, got, strict=True):
        j, k = (int(a[0]) for a in np.nonzero(done[i]))
        if records[i, j, k, 4:].tobytes() != digest:
            bad.append(i)
    return _sample_ranges(bad, manifest["chunks"][0], manifest["shape"][0]) if bad else ""


def _resume_inputs(
    path: Path,
    group: zarr.Group,
    manifest: Mapping[str, Any],
    data: da.Array,
    done: np.ndarray,
    input_keys: Sequence[Any] | None,
    whole_x_checked: bool,
) -> tuple[dict[int, bytes], list[int]]:
    """Check the inputs of the chunks already written against the cube's, before any of them
    is reused. Returns the recorded input digest of each sample block with chunks written
    but some still to do, for the writes' gate (empty when nothing is left to compare)."""
    records = np.asarray(group[DIGEST_NAME][...], dtype=np.uint8)
    recorded: dict[int, bytes] = {}
    for i in range(done.shape[0]):
        written = zip(*np.nonzero(done[i]), strict=True)
        digests = {records[(i, *jk)][4:].tobytes() for jk in written}
        if len(digests) > 1:
            raise ValueError(
                f"store {path}: the chunks of samples "
                f"{_sample_ranges([i], manifest['chunks'][0], manifest['shape'][0])} were "
                "computed from different inputs (a store mixed by two writers?). Save to a new "
                "store, or pass overwrite=True to replace it"
            )
        if digests:
            recorded[i] = digests.pop()
    if input_keys is None:
        known = [i for i, d in recorded.items() if d != _NO_INPUT]
        if known:
            raise ValueError(
                f"cannot resume: the store {path} records the inputs of its chunks, but the "
                "cube being saved cannot tell its own (it is not a tmx.activations cube as "
                "built, e.g. it was indexed or rechunked since). Resume with the cube "
                "tmx.activations returns, or pass overwrite=True"
            )
        return {}, []
    missing = [i for i, d in recorded.items() if d == _NO_INPUT]
    if missing:
        raise ValueError(
            f"cannot resume: the store {path} does not record the inputs of samples "
            f"{_sample_ranges(missing, manifest['chunks'][0], manifest['shape'][0])}, so tmx "
            "cannot check that they are those of this cube. Save to a new store, or pass "
            "overwrite=True"
        )
    if whole_x_checked:  # the same whole x (input_sha256) and chunks: the same blocks
        return {}, []
    full = [i for i in recorded if done[i].all()]
    got = _compute_input_digests(data, input_keys, full)
    bad = [i for i, d in zip(full, got, strict=True) if d != recorded[i]]
    if bad:
        raise _InputMismatch(_input_mismatch(path, bad, manifest))
    partial = {i: d for i, d in recorded.items() if not done[i].all()}
    return partial, list(partial)


def save(
    cube: xr.DataArray,
    store: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    compression: str | None = "zstd",
    break_lock: bool = False,
) -> str:
    """Save an activation cube to a Zarr (format 3) store, chunk by chunk, with checksums.

    Parameters
    ----------
    cube : xarray.DataArray
        A cube with dims exactly ``("sample", "transformation", "unit")``, a float dtype, the
        coordinates ``sample``, ``transformation``, ``unit`` and ``layer``, ``channel``, ``y``,
        ``x`` along ``unit`` (and any other bool, integer, float or str coordinates). Its
        ``attrs`` and the ``attrs`` of its coordinates must be JSON-compatible: str, int,
        float (finite), bool, None, and lists, tuples and str-keyed dicts of these, nested at
        most 32 deep; tuples come back as tuples. A dask-backed cube is computed chunk by
        chunk, in one dask computation (so work shared by several chunks, such as the
        forward pass that yields every unit chunk of one batch, runs once), with the
        configured dask scheduler. A NumPy-backed cube is first chunked into chunks of about
        32 MiB. Irregular dask chunks are rechunked so that every chunk along a dim (but the
        last) has the size of the largest one, since Zarr needs one chunk shape.
    store : str or os.PathLike
        Directory of the store (local filesystem).
    resume : bool
        Finish an interrupted save: check that ``store`` holds this cube (same dims, shape,
        chunks, dtype, coordinates and attrs, the creation time aside, so a cube rebuilt in a
        new process after a crash resumes -- for a ``tmx.activations`` cube this compares
        the model's weights and architecture and an in-memory ``x``), then, for a lazy
        ``x``, that every chunk already written was computed from the same input block (a
        sha256 of each input block is recorded with its chunks), and compute only the chunks
        that are not yet written; the store keeps its original attrs. If ``store`` does not
        exist, save from scratch.
    overwrite : bool
        Replace an existing store. Only a tmx cube store (or an empty directory, or one
        holding only what a save killed before its first metadata write leaves) is ever
        deleted.
    progress : bool or None, default None
        Show a dask progress bar (local schedulers only). None: when run interactively (a
        terminal, not under pytest or CI; see ``tmx._progress``).
    compression : {"zstd", "lz4", None}, default "zstd"
        Codec of the data chunks: zstd at level 1, Blosc LZ4 with bit shuffle, or none. On a
        small CNN's activations (2 cores, ``benchmarks/codecs``-style measurement) zstd level
        1 wrote 287 MB/s at a 1.9× size reduction, LZ4 385 MB/s at 1.2×, no compression
        349 MB/s; Zarr's default zstd level halves the speed (153 MB/s) for 3 % more
        reduction. Ignored when resuming (the store keeps its codec). A CRC-32C checksum
        codec always follows it.
    break_lock : bool, default False
        Remove the lock file left next to the store by a save that was killed (its
        process, on this host, no longer runs; or on another host, which tmx cannot check),
        and take the lock. The lock of a process still running on this host is never
        broken.

    Returns
    -------
    str
        The path of the store.

    Raises
    ------
    StoreLockedError
        (a ``FileExistsError``) If another save, resume or overwrite of ``store`` holds its
        lock, or a killed one left it (``stale``): the message names the holder (host, pid,
        start time) and the lock file.
    FileExistsError
        If ``store`` exists and neither ``resume`` nor ``overwrite`` is given.
    ValueError
        If the cube is not a valid cube, or when resuming into a store that holds a
        different cube (the message names what differs: the model's architecture or
        weights, the input samples, shape, chunks, coordinates, attrs).

    Notes
    -----
    Memory: chunks are computed and written by the configured dask scheduler (by default a
    thread pool of ``dask.config.get("num_workers")`` or one thread per core); each thread
    holds about two chunks at a time (the block and its encoded bytes), plus whatever the
    cube's own graph holds, such as a forward pass shared by several unit chunks.

    Interruption safety: the store is first created with its coordinates, metadata, an
    empty data array and ``tmx_complete: false``; each data chunk is written, then its
    record (a CRC-32C of its values bound to its position, and the sha256 of its input
    block), then it is flagged in ``_tmx_chunks_done``; only at the end is
    ``tmx_complete`` set to true. When a chunk fails, ``save`` waits for the chunks already
    being written and re-raises the error; the store is then incomplete and ``open``
    refuses it until ``save(cube, store, resume=True)`` has finished it. A save killed
    outright (``kill -9``) also leaves its lock: ``resume=True, break_lock=True``.

    One writer: the lock file ``<store>.tmx-lock`` is created atomically (``O_CREAT |
    O_EXCL``) before anything is looked at or written and removed at the end, so two saves
    of one path never interleave. See the user guide's "Guarantees" page.

    Examples
    --------
    >>> cube = tmx.activations(model, x, tmx.transforms.rotation(range(0, 360, 30)))
    >>> tmx.save(cube, "runs/cube.zarr")
    >>> tmx.save(cube, "runs/cube.zarr", resume=True)   # after a crash: only what is missing
    """
    return _save(
        cube,
        store,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        compression=compression,
        break_lock=break_lock,
        checksums=True,
    )


def _check_state(path: Path, state: str, resume: bool, overwrite: bool) -> None:
    if state in ("other", "file"):
        raise (FileExistsError if not (resume or overwrite) else ValueError)(
            f"store {path} exists and is not a tmx cube store; refusing to "
            + ("resume into" if resume else "overwrite" if overwrite else "write to")
            + " it"
        )
    if state == "tmx" and not (resume or overwrite):
        raise FileExistsError(
            f"store {path} already exists; pass overwrite=True to replace it, or "
            "resume=True to finish an interrupted save of the same cube"
        )


def _save(
    cube: xr.DataArray,
    store: str | os.PathLike,
    *,
    resume: bool,
    overwrite: bool,
    progress: bool | None,
    compression: str | None,
    break_lock: bool,
    checksums: bool,
) -> str:
    """``save``; ``checksums=False`` writes a format-1 store (no checksums), as tmx did
    before them (for ``benchmarks/store.py``'s baseline)."""
    resume = _check_flag(resume, "resume")
    overwrite = _check_flag(overwrite, "overwrite")
    break_lock = _check_flag(break_lock, "break_lock")
    progress = _progress.resolve(progress)
    if compression not in _COMPRESSORS:
        raise ValueError(
            f"compression must be one of {list(_COMPRESSORS)}; got {_describe(compression)}"
        )
    if resume and overwrite:
        raise ValueError("resume and overwrite cannot both be True")
    path = _as_path(store)
    cube = _prepare(cube)
    manifest, values = _manifest(cube)
    fingerprint = _fingerprint(manifest)
    # a first look without the lock: never lock, create or touch what is not ours to write
    # (an existing tmx store is checked under the lock, so that a store being written by
    # another save gets the lock's error, which names its writer)
    state = _store_state(path)
    if state in ("other", "file"):
        _check_state(path, state, resume, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _Lock(path, _lock_path(path), break_lock):
        return _save_locked(
            cube,
            path,
            manifest,
            values,
            fingerprint,
            resume,
            overwrite,
            progress,
            compression,
            checksums,
        )


def _save_locked(
    cube: xr.DataArray,
    path: Path,
    manifest: dict[str, Any],
    values: Mapping[str, np.ndarray],
    fingerprint: str,
    resume: bool,
    overwrite: bool,
    progress: bool,
    compression: str | None,
    checksums: bool,
) -> str:
    state = _store_state(path)  # again: another writer may have finished meanwhile
    _check_state(path, state, resume, overwrite)
    if state == "empty":
        for leftover in _leftovers(path) or []:
            leftover.unlink(missing_ok=True)
    resuming = False
    if state == "tmx" and overwrite:
        _clear_store(path)
    elif state == "tmx":
        attrs = _group_attrs(path) or {}
        version = attrs.get("tmx_format_version")
        if version not in READ_VERSIONS:
            raise ValueError(
                f"cannot resume: store {path} has tmx_format_version {_describe(version)}; "
                f"this version of tmx writes versions {READ_VERSIONS}"
            )
        checksums = version >= 2  # the store keeps its format
        if not _same_cube(attrs.get("tmx_manifest"), manifest):
            diffs = _manifest_differences(attrs.get("tmx_manifest") or {}, manifest)
            if checksums and any(d.endswith("(input_sha256)") for d in diffs):
                samples = _differing_samples(path, attrs.get("tmx_manifest"), manifest, cube)
                if samples:
                    diffs = [
                        f"the input x differs in samples {samples} (input_sha256)"
                        if d.endswith("(input_sha256)")
                        else d
                        for d in diffs
                    ]
            raise ValueError(
                f"cannot resume: the store {path} holds a different cube ("
                + "; ".join(diffs)
                + "). Save to a new store, or pass overwrite=True to replace it"
            )
        resuming = True

    input_keys = _input_keys(cube.data) if checksums else None
    gate = None
    if resuming:
        group = zarr.open_group(str(path), mode="r+", zarr_format=3, use_consolidated=False)
        if group.attrs.get("tmx_complete") is True:
            return os.fspath(path)
        _remove_temp_files(path)
        _write_coords(group, manifest, values)
        _ensure_data_arrays(group, manifest, path, checksums=checksums)
        done = np.asarray(group[DONE_NAME][...], dtype=bool)
        if checksums and cube.size:
            whole_x = isinstance(manifest["attrs"].get("input_sha256"), str)
            expected, blocks = _resume_inputs(
                path, group, manifest, cube.data, done, input_keys, whole_x
            )
            if blocks:
                assert input_keys is not None
                check = functools.partial(_check_inputs, str(path), manifest, expected)
                gate = (check, *[input_keys[i] for i in blocks])
    else:
        _create_store(path, manifest, fingerprint, values, compression, checksums)
        group = zarr.open_group(str(path), mode="r+", zarr_format=3, use_consolidated=False)
        done = np.zeros(cube.data.numblocks, dtype=bool)

    todo = [tuple(int(i) for i in idx) for idx in zip(*np.nonzero(~done), strict=True)]
    if cube.size == 0:
        todo = []  # nothing to write (and the chunk grid of an empty dim is empty)
    writer = _BlockWriter(path, manifest["chunks"], checksums)
    try:
        _write_blocks(cube.data, todo, writer, progress, input_keys, gate)
    except _InputMismatch:
        raise
    except BaseException as err:
        err.add_note(
            f"tmx.save was interrupted: the store {path} is incomplete. Call "
            "tmx.save(cube, store, resume=True) to finish it; only the missing chunks are "
            "computed."
        )
        raise
    group.attrs["tmx_complete"] = True
    return os.fspath(path)


# --------------------------------------------------------------------------------------------
# reading


class _Loaded(NamedTuple):
    attrs: dict[str, Any]
    manifest: dict[str, Any]
    version: int
    array: zarr.Array
    coords: dict[str, Any]


def _load(path: Path) -> _Loaded:
    """Every check of ``open`` that reads metadata and coordinates, no data chunk."""
    if not path.exists():
        raise FileNotFoundError(f"store {path} does not exist")
    attrs = _group_attrs(path, strict=True)
    if attrs is None:
        raise ValueError(f"store {path} is not a tmx cube (not a Zarr format 3 group)")
    if attrs.get("tmx_format") != FORMAT:
        raise ValueError(
            f"store {path} is not a tmx cube (its attribute tmx_format is "
            f"{_describe(attrs.get('tmx_format'))}, expected {FORMAT!r})"
        )
    version = attrs.get("tmx_format_version")
    if isinstance(version, bool) or version not in READ_VERSIONS:
        raise ValueError(
            f"store {path} has tmx_format_version {_describe(version)}; this version of tmx "
            f"reads versions {', '.join(map(str, READ_VERSIONS))}"
        )
    if attrs.get("tmx_complete") is not True:
        lock = _lock_path(path)
        holder, raw = _read_lock(lock)
        busy = (
            f" ({lock} says a save by {_describe_holder(holder)} holds it: is it still running?)"
            if raw is not None
            else ""
        )
        raise ValueError(
            f"store {path} is incomplete: its save was interrupted{busy}. Call "
            "tmx.save(cube, store, resume=True) with the same cube to finish it"
        )
    manifest = _validate_manifest(attrs.get("tmx_manifest"), path)
    if attrs.get("tmx_fingerprint") != _fingerprint(manifest):
        raise ValueError(f"store {path}: tmx_manifest does not match tmx_fingerprint")

    shape, store_chunks = tuple(manifest["shape"]), tuple(manifest["chunks"])
    meta = _check_array_meta(path, DATA_NAME)
    dtype = meta.get("data_type")
    if dtype not in _FLOAT_DATA_TYPES:
        raise ValueError(f"store {path}: array {DATA_NAME!r} must have a float dtype; got {dtype}")
    if tuple(meta.get("dimension_names") or ()) != DIMS:
        raise ValueError(
            f"store {path}: array {DATA_NAME!r} must have dims exactly {DIMS}; "
            f"got {meta.get('dimension_names')!r}"
        )
    _check_data_meta(path, meta, manifest, version)
    if version >= 2:
        _check_digest_meta(path, manifest)
    for c in manifest["coords"]:
        cmeta = _check_array_meta(path, c["name"])
        if tuple(cmeta.get("dimension_names") or ()) != tuple(c["dims"]):
            raise ValueError(
                f"store {path}: coordinate {c['name']!r} has dims "
                f"{cmeta.get('dimension_names')!r}; expected {tuple(c['dims'])}"
            )

    try:
        group = zarr.open_group(str(path), mode="r", zarr_format=3, use_consolidated=False)
        array = group[DATA_NAME]
    except Exception as err:
        raise ValueError(f"store {path} cannot be read as Zarr: {err}") from err
    if not isinstance(array, zarr.Array) or array.shape != shape or array.chunks != store_chunks:
        raise ValueError(
            f"store {path}: array {DATA_NAME!r} has shape {getattr(array, 'shape', None)} and "
            f"chunks {getattr(array, 'chunks', None)}; the manifest says {shape} and "
            f"{store_chunks}"
        )
    if array.dtype != np.dtype(manifest["dtype"]):
        raise ValueError(
            f"store {path}: array {DATA_NAME!r} has dtype {array.dtype}; the manifest says "
            f"{manifest['dtype']}"
        )

    sizes = dict(zip(DIMS, shape, strict=True))
    coords = {}
    for c in manifest["coords"]:
        name = c["name"]
        try:
            carr = group[name]
            expected = tuple(sizes[d] for d in c["dims"])
            if not isinstance(carr, zarr.Array) or carr.shape != expected:
                raise ValueError(
                    f"store {path}: coordinate {name!r} has shape "
                    f"{getattr(carr, 'shape', None)}; expected {expected}"
                )
            raw = carr[...] if carr.size else np.zeros(carr.shape, dtype=carr.dtype)
        except ValueError:
            raise
        except Exception as err:
            raise ValueError(
                f"store {path}: coordinate {name!r} cannot be read ({type(err).__name__}: {err})"
            ) from err
        values = _restore_values(raw, c["dtype"], name)
        if _hash_values(values) != c["sha256"]:
            raise ValueError(
                f"store {path}: the values of coordinate {name!r} do not match their sha256"
            )
        coords[name] = (tuple(c["dims"]), values, _decode_attr(c["attrs"]))
    return _Loaded(attrs, manifest, version, array, coords)


def open(store: str | os.PathLike, *, chunks: Any = "auto-from-store") -> xr.DataArray:
    """Open a cube saved with ``save``, lazily; every chunk is checked as it is read.

    The store is validated before any value is read: it must exist, be a Zarr format 3
    group marked as a tmx cube (``tmx_format: "cube"``, ``tmx_format_version`` 1 or 2), be
    complete, and hold an ``activation`` array with dims exactly ``(sample,
    transformation, unit)``, the dtype, fill value (NaN), chunk grid, chunk keys and codec
    pipeline that ``save`` writes (little-endian ``bytes``, an optional zstd or Blosc
    compressor, ``crc32c``: a store edited to another byte order, a transpose or another
    fill value is refused), with every coordinate along its expected dims. Only bool,
    integer, float and UTF-8 string arrays with known codecs are read: nothing is ever
    unpickled, so opening an untrusted store is safe. Coordinate values are checked against
    the sha256 recorded at save time, and (format 2) the presence of every data chunk and
    its checksum record by listing the store's directories (no chunk is read).

    Reading a chunk (format 2) checks its CRC-32C (Zarr's ``crc32c`` codec: damaged bytes)
    and the CRC-32C of its values against the record written with it, which is bound to the
    chunk's position (a chunk file swapped with or replaced by another, or deleted after
    ``open``): a bad chunk raises ``StoreDamagedError`` naming it; it never reads as NaN
    or as other values. Stores of format 1 (written by tmx before checksums) are read as
    before, without these checks.

    Parameters
    ----------
    store : str or os.PathLike
        Directory of the store.
    chunks : "auto-from-store", int, tuple, dict or "auto"
        Dask chunks of the returned cube. ``"auto-from-store"`` (default): one dask chunk
        per Zarr chunk. A dict maps dim names to chunk sizes (other dims keep the store's).
        Anything else is normalised like ``dask.array.from_zarr`` does; the store's chunks
        are then read (and checked) one by one and rechunked.

    Returns
    -------
    xarray.DataArray
        The cube, dask-backed, with the coordinates, dtypes, name and attrs it was saved
        with.

    Raises
    ------
    FileNotFoundError
        If ``store`` does not exist.
    StoreDamagedError
        (a ``ValueError``) If a data chunk or its checksum record is missing; when a chunk
        is read, if it is damaged.
    ValueError
        If ``store`` is not a tmx cube, is incomplete, or is malformed (the message names
        what is wrong).

    Examples
    --------
    >>> cube = tmx.open("runs/cube.zarr")
    >>> tmx.normalized_variance(cube).compute()
    """
    path = _as_path(store)
    loaded = _load(path)
    manifest, array = loaded.manifest, loaded.array
    shape, store_chunks = tuple(manifest["shape"]), tuple(manifest["chunks"])
    if loaded.version >= 2:
        missing = _missing_chunks(path, manifest)
        if missing:
            raise StoreDamagedError(path, missing, " (found at open)")

    if isinstance(chunks, str) and chunks == "auto-from-store":
        dask_chunks: Any = store_chunks
    elif isinstance(chunks, Mapping):
        bad = [k for k in chunks if k not in DIMS]
        if bad:
            raise ValueError(f"chunks keys must be among {DIMS}; got {bad}")
        dask_chunks = tuple(chunks.get(d, c) for d, c in zip(DIMS, store_chunks, strict=True))
    else:
        dask_chunks = chunks
    # The modification time makes a store rewritten in place get new dask keys.
    name = "tmx-open-" + dask.base.tokenize(
        str(path.resolve()),
        loaded.attrs["tmx_fingerprint"],
        (path / "zarr.json").stat().st_mtime_ns,
        dask_chunks,
    )
    if loaded.version >= 2 and 0 not in shape:
        data = _checked_array(path, shape, store_chunks, array.dtype, name)
        target = da.core.normalize_chunks(
            dask_chunks, shape, dtype=array.dtype, previous_chunks=store_chunks
        )
        if target != data.chunks:
            data = data.rechunk(target)
    else:  # format 1 (no checksums), or nothing to read
        data = da.from_zarr(array, chunks=dask_chunks, name=name)
    result = xr.DataArray(
        data, dims=DIMS, coords=loaded.coords, attrs=_decode_attr(manifest["attrs"])
    )
    result.name = manifest["name"]  # set afterwards: the constructor takes a None name from data
    return result


def _checked_array(
    path: Path, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: np.dtype, name: str
) -> da.Array:
    """A dask array with one task per Zarr chunk, each reading and checking its chunk."""
    reader = _ChunkReader(path, shape, chunks)
    grid = _grid(shape, chunks)
    layer = {(name, *idx): (_read_chunk, reader, list(idx)) for idx in np.ndindex(*grid)}
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[])
    return da.Array(
        graph,
        name,
        chunks=da.core.normalize_chunks(chunks, shape),
        dtype=dtype,
        meta=np.empty((0,) * len(shape), dtype),
    )


def verify(store: str | os.PathLike) -> int:
    """Read a whole store and check every chunk; raise naming each bad one.

    Runs every check of ``open`` (metadata, codecs, coordinates and their sha256, the
    presence of every chunk), then reads every data chunk and checks its CRC-32C (the
    stored bytes) and the CRC-32C of its values against the record written with it
    (bound to the chunk's position, so swapped or replaced chunk files are found), and that
    every chunk is flagged as written.

    Parameters
    ----------
    store : str or os.PathLike
        Directory of a store written by ``save`` (format 2). Stores of format 1 (tmx before
        checksums) carry nothing to verify against and are refused.

    Returns
    -------
    int
        The number of data chunks checked (all of them) when the store is sound.

    Raises
    ------
    StoreDamagedError
        (a ``ValueError``) When chunks are missing or damaged: its ``problems`` list each
        bad chunk (a ``ChunkProblem``: grid index, the sample, transformation and unit
        ranges it holds, and what is wrong); the message names them too.
    ValueError
        When the store is malformed, incomplete or of format 1.
    FileNotFoundError
        If ``store`` does not exist.

    Examples
    --------
    >>> tmx.verify("runs/cube.zarr")      # the number of chunks checked, or an error
    12
    """
    path = _as_path(store)
    loaded = _load(path)
    if loaded.version < 2:
        raise ValueError(
            f"store {path} was written by tmx before checksums (tmx_format_version 1): there "
            "is nothing to verify its chunks against. tmx.open still reads it; save it again "
            "(tmx.save(tmx.open(old), new)) for a store with checksums"
        )
    manifest = loaded.manifest
    shape, chunks = manifest["shape"], manifest["chunks"]
    grid = _grid(shape, chunks)
    problems = {p.index: p for p in _missing_chunks(path, manifest)}
    if 0 not in grid:
        try:
            _check_array_meta(path, DONE_NAME)
            done = np.asarray(
                zarr.open_array(str(path / DONE_NAME), mode="r", zarr_format=3)[...], dtype=bool
            )
        except Exception as err:
            raise ValueError(f"store {path}: {DONE_NAME!r} cannot be read ({err})") from err
        if done.shape != grid:
            raise ValueError(f"store {path}: {DONE_NAME!r} has shape {done.shape}; expected {grid}")
        for index in zip(*np.nonzero(~done), strict=True):
            index = tuple(int(i) for i in index)
            problems.setdefault(
                index,
                _problem(index, shape, chunks, "not flagged as written, yet the store is complete"),
            )
    reader = _ChunkReader(path, shape, chunks)
    todo = [idx for idx in np.ndindex(*grid) if idx not in problems]
    workers = min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="tmx-verify") as pool:
        # only the problem comes back: a block is dropped as soon as it is checked
        for index, problem in zip(todo, pool.map(lambda i: reader.read(i)[1], todo), strict=True):
            if problem is not None:
                problems[index] = problem
    if problems:
        raise StoreDamagedError(
            path, [problems[i] for i in sorted(problems)], " (found by tmx.verify)"
        )
    return int(np.prod(grid))
