"""Save activation cubes to Zarr (format 3) stores and open them again.

``tmx.save(cube, store)`` writes a cube chunk by chunk -- the whole cube is never held in
memory -- and records which chunks are done, so that a save that was interrupted (killed,
out of memory, a failing forward pass) can be finished with ``tmx.save(cube, store,
resume=True)``, which computes only the chunks that are missing. ``tmx.open(store)``
validates a store before reading anything from it and returns a lazy, dask-backed cube
chunked like the store.

On-disk layout (a Zarr format 3 group, local filesystem only)
--------------------------------------------------------------
Group attributes:

``tmx_format``
    ``"cube"``: marks the group as a tmx cube.
``tmx_format_version``
    ``1``.
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
    volatile attrs (``created``): a cube rebuilt after a crash is the same cube.

Arrays (members of the group):

``activation``
    The values, ``dimension_names`` ``(sample, transformation, unit)``, chunked like the
    cube, fill value NaN, zstd-compressed. Its Zarr attributes hold the cube's attrs (tuples
    as lists) and a ``coordinates`` list for other Zarr/xarray readers.
one array per coordinate, named like the coordinate
    One chunk each. Strings are stored with the standard variable-length UTF-8 data type
    (``string``, codec ``vlen-utf8``) -- never as pickled objects -- and come back with the
    dtype recorded in the manifest.
``_tmx_chunks_done``
    A bool array with one element per chunk of the chunk grid (one element per Zarr chunk,
    so parallel writers never share a file). Element ``(i, j, k)`` is set to ``true`` only
    after data chunk ``(i, j, k)`` has been written.

The store can also be read by ``xarray.open_zarr`` (without the exact dtype and attribute
restoration that ``open`` does).
"""

from __future__ import annotations

import builtins
import concurrent.futures
import hashlib
import json
import math
import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import dask.base
import dask.threaded
import numpy as np
import xarray as xr
import zarr
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from . import _progress

__all__ = ["open", "save"]

FORMAT = "cube"
FORMAT_VERSION = 1
DIMS = ("sample", "transformation", "unit")
DATA_NAME = "activation"
DONE_NAME = "_tmx_chunks_done"
_DONE_DIMS = ("_tmx_sample_chunk", "_tmx_transformation_chunk", "_tmx_unit_chunk")
_TUPLE_TAG = "__tmx_tuple__"

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


def _encode_attr(value: Any, where: str) -> Any:
    """JSON form of one attribute value; tuples are tagged so they come back as tuples."""
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
        return [_encode_attr(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {_TUPLE_TAG: [_encode_attr(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(
                    f"{where} must be a dict with str keys; got the key {_describe(k)}"
                )
            if k == _TUPLE_TAG:
                raise ValueError(f"{where} must not use the reserved key {_TUPLE_TAG!r}")
            out[k] = _encode_attr(v, f"{where}[{k!r}]")
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
        out.append(f"attrs differ (keys {keys})")
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
    except (OSError, ValueError) as err:
        raise ValueError(f"{what}: cannot read {path} as JSON ({err})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{what}: {path} does not hold a JSON object")
    return meta


def _group_attrs(path: Path) -> dict[str, Any] | None:
    """Attributes of the Zarr v3 group at ``path``, or None when it is not one."""
    meta_path = path / "zarr.json"
    if not meta_path.is_file():
        return None
    try:
        meta = _read_json(meta_path, f"store {path}")
    except ValueError:
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
# writing


def _create_store(
    path: Path,
    manifest: dict[str, Any],
    fingerprint: str,
    values: Mapping[str, np.ndarray],
    compression: str | None = "zstd",
) -> None:
    group = zarr.create_group(
        store=str(path),
        zarr_format=3,
        overwrite=False,
        attributes={
            "tmx_format": FORMAT,
            "tmx_format_version": FORMAT_VERSION,
            "tmx_complete": False,
            "tmx_fingerprint": fingerprint,
            "tmx_manifest": manifest,
        },
    )
    _write_coords(group, manifest, values)
    _ensure_data_arrays(group, manifest, path, compression)


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
    group: zarr.Group, manifest: dict[str, Any], path: Path, compression: str | None = "zstd"
) -> None:
    shape, chunks = tuple(manifest["shape"]), tuple(manifest["chunks"])
    grid = tuple(-(-n // c) for n, c in zip(shape, chunks, strict=True))
    plain = _plain_attr(_decode_attr(manifest["attrs"]))
    if "coordinates" not in plain:
        plain["coordinates"] = " ".join(
            c["name"] for c in manifest["coords"] if c["name"] not in DIMS
        )
    specs = (
        (DATA_NAME, shape, chunks, np.dtype(manifest["dtype"]), np.nan, DIMS, plain),
        (DONE_NAME, grid, (1, 1, 1), np.dtype(bool), False, _DONE_DIMS, {}),
    )
    for name, ashape, achunks, dtype, fill, dims, attrs in specs:
        compressors = _COMPRESSORS[compression]() if name == DATA_NAME else "auto"
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
            compressors=compressors,
        )


class _BlockWriter:
    """Writes one block of the cube into the store, then flags it done."""

    def __init__(self, path: Path, chunks: Sequence[int]) -> None:
        self.path = str(path)
        self.chunks = tuple(chunks)
        self._arrays: tuple[zarr.Array, zarr.Array] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "chunks": self.chunks, "_arrays": None}

    def __dask_tokenize__(self) -> tuple[str, str, tuple[int, ...]]:
        return ("tmx-block-writer", self.path, self.chunks)

    def _get_arrays(self) -> tuple[zarr.Array, zarr.Array]:
        if self._arrays is None:
            group = zarr.open_group(self.path, mode="r+", zarr_format=3)
            self._arrays = (group[DATA_NAME], group[DONE_NAME])
        return self._arrays

    def __call__(self, block: np.ndarray, index: Sequence[int]) -> int:
        index = tuple(index)
        data, done = self._get_arrays()
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
        data[region] = block
        done[index] = True
        return 1


def _uses_default_threads() -> bool:
    """Whether dask would run a computation on its default local thread pool."""
    if dask.config.get("pool", None) is not None:
        return False
    if dask.config.get("scheduler", None) is None and "distributed" not in sys.modules:
        return True  # no distributed client can exist; avoids importing distributed
    return dask.base.get_scheduler() in (None, dask.threaded.get)


def _write_blocks(
    data: da.Array, todo: Sequence[tuple[int, int, int]], writer: _BlockWriter, progress: bool
) -> None:
    """Compute and write the blocks ``todo`` of ``data`` in one dask computation."""
    if not todo:
        return
    # One graph: a write task per block to do, depending on that block of ``data``, and a
    # final task counting the writes. dask culls it to what the blocks to do need, so work
    # that several blocks share (one forward pass for every unit chunk) is computed once.
    name = "tmx-save-" + dask.base.tokenize(data.name, writer, list(todo))
    layer: dict[Any, Any] = {(name, *idx): (writer, (data.name, *idx), list(idx)) for idx in todo}
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


def save(
    cube: xr.DataArray,
    store: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    compression: str | None = "zstd",
) -> str:
    """Save an activation cube to a Zarr (format 3) store, chunk by chunk.

    Parameters
    ----------
    cube : xarray.DataArray
        A cube with dims exactly ``("sample", "transformation", "unit")``, a float dtype, the
        coordinates ``sample``, ``transformation``, ``unit`` and ``layer``, ``channel``, ``y``,
        ``x`` along ``unit`` (and any other bool, integer, float or str coordinates). Its
        ``attrs`` and the ``attrs`` of its coordinates must be JSON-compatible: str, int,
        float (finite), bool, None, and lists, tuples and str-keyed dicts of these; tuples
        come back as tuples. A dask-backed cube is computed chunk by chunk, in one dask
        computation (so work shared by several chunks, such as the forward pass that yields
        every unit chunk of one batch, runs once), with the configured dask scheduler. A
        NumPy-backed cube is first chunked into chunks of about 32 MiB. Irregular dask
        chunks are rechunked so that every chunk along a dim (but the last) has the size of
        the largest one, since Zarr needs one chunk shape.
    store : str or os.PathLike
        Directory of the store (local filesystem).
    resume : bool
        Finish an interrupted save: validate that ``store`` holds this cube (same dims,
        shape, chunks, dtype, coordinates and attrs, the creation time aside, so a cube
        rebuilt in a new process after a crash resumes) and compute only the chunks that are
        not yet written; the store keeps its original attrs. If ``store``
        does not exist, save from scratch.
    overwrite : bool
        Replace an existing store. Only a tmx cube store (or an empty directory) is ever
        deleted.
    progress : bool or None, default None
        Show a dask progress bar (local schedulers only). None: when run interactively (a
        terminal, not under pytest or CI; see ``tmx._progress``).
    compression : {"zstd", "lz4", None}, default "zstd"
        Codec of the data chunks: zstd at level 1, Blosc LZ4 with bit shuffle, or none. On a
        small CNN's activations (2 cores, ``benchmarks/codecs``-style measurement) zstd level
        1 wrote 287 MB/s at a 1.9× size reduction, LZ4 385 MB/s at 1.2×, no compression
        349 MB/s; Zarr's default zstd level halves the speed (153 MB/s) for 3 % more
        reduction. Ignored when resuming (the store keeps its codec).

    Returns
    -------
    str
        The path of the store.

    Raises
    ------
    FileExistsError
        If ``store`` exists and neither ``resume`` nor ``overwrite`` is given.
    ValueError
        If the cube is not a valid cube, or when resuming into a store that holds a
        different cube.

    Notes
    -----
    Memory: chunks are computed and written by the configured dask scheduler (by default a
    thread pool of ``dask.config.get("num_workers")`` or one thread per core); each thread
    holds about two chunks at a time (the block and its encoded bytes), plus whatever the
    cube's own graph holds, such as a forward pass shared by several unit chunks.

    Interruption safety: the store is first created with its coordinates, metadata, an
    empty data array and ``tmx_complete: false``; each data chunk is written, then flagged
    in ``_tmx_chunks_done``; only at the end is ``tmx_complete`` set to true. When a chunk
    fails, ``save`` waits for the chunks already being written and re-raises the error; the
    store is then incomplete and ``open`` refuses it until
    ``save(cube, store, resume=True)`` has finished it.
    """
    resume = _check_flag(resume, "resume")
    overwrite = _check_flag(overwrite, "overwrite")
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

    exists = path.exists() and not (path.is_dir() and not any(path.iterdir()))
    resuming = False
    if exists:
        if not _is_tmx_store(path):
            raise (FileExistsError if not (resume or overwrite) else ValueError)(
                f"store {path} exists and is not a tmx cube store; refusing to "
                + ("resume into" if resume else "overwrite" if overwrite else "write to")
                + " it"
            )
        if overwrite:
            shutil.rmtree(path)
        elif resume:
            attrs = _group_attrs(path) or {}
            if not _same_cube(attrs.get("tmx_manifest"), manifest):
                diffs = _manifest_differences(attrs.get("tmx_manifest") or {}, manifest)
                raise ValueError(
                    f"cannot resume: the store {path} holds a different cube ("
                    + "; ".join(diffs)
                    + "). Save to a new store, or pass overwrite=True to replace it"
                )
            resuming = True
        else:
            raise FileExistsError(
                f"store {path} already exists; pass overwrite=True to replace it, or "
                "resume=True to finish an interrupted save of the same cube"
            )

    if resuming:
        group = zarr.open_group(str(path), mode="r+", zarr_format=3)
        if group.attrs.get("tmx_complete") is True:
            return os.fspath(path)
        _write_coords(group, manifest, values)
        _ensure_data_arrays(group, manifest, path)
        done = np.asarray(group[DONE_NAME][...], dtype=bool)
    else:
        _create_store(path, manifest, fingerprint, values, compression)
        group = zarr.open_group(str(path), mode="r+", zarr_format=3)
        done = np.zeros(cube.data.numblocks, dtype=bool)

    todo = [tuple(int(i) for i in idx) for idx in zip(*np.nonzero(~done), strict=True)]
    if cube.size == 0:
        todo = []  # nothing to write (and the chunk grid of an empty dim is empty)
    writer = _BlockWriter(path, manifest["chunks"])
    try:
        _write_blocks(cube.data, todo, writer, progress)
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


def open(store: str | os.PathLike, *, chunks: Any = "auto-from-store") -> xr.DataArray:
    """Open a cube saved with ``save``, lazily.

    The store is validated before any value is read: it must exist, be a Zarr format 3
    group marked as a tmx cube (``tmx_format: "cube"``, ``tmx_format_version: 1``), be
    complete, and hold an ``activation`` array with dims exactly ``(sample, transformation,
    unit)`` and a float dtype, with every coordinate along its expected dims. Only bool,
    integer, float and UTF-8 string arrays with known codecs are read: nothing is ever
    unpickled, so opening an untrusted store is safe. Coordinate values are checked against
    the sha256 recorded at save time.

    Parameters
    ----------
    store : str or os.PathLike
        Directory of the store.
    chunks : "auto-from-store", int, tuple, dict or "auto"
        Dask chunks of the returned cube. ``"auto-from-store"`` (default): one dask chunk
        per Zarr chunk. A dict maps dim names to chunk sizes (other dims keep the store's).
        Anything else is passed to ``dask.array.from_zarr``.

    Returns
    -------
    xarray.DataArray
        The cube, dask-backed, with the coordinates, dtypes, name and attrs it was saved
        with.

    Raises
    ------
    FileNotFoundError
        If ``store`` does not exist.
    ValueError
        If ``store`` is not a tmx cube, is incomplete, or is malformed.
    """
    path = _as_path(store)
    if not path.exists():
        raise FileNotFoundError(f"store {path} does not exist")
    attrs = _group_attrs(path)
    if attrs is None:
        raise ValueError(f"store {path} is not a tmx cube (not a Zarr format 3 group)")
    if attrs.get("tmx_format") != FORMAT:
        raise ValueError(
            f"store {path} is not a tmx cube (its attribute tmx_format is "
            f"{_describe(attrs.get('tmx_format'))}, expected {FORMAT!r})"
        )
    if attrs.get("tmx_format_version") != FORMAT_VERSION:
        raise ValueError(
            f"store {path} has tmx_format_version {_describe(attrs.get('tmx_format_version'))}; "
            f"this version of tmx reads version {FORMAT_VERSION}"
        )
    if attrs.get("tmx_complete") is not True:
        raise ValueError(
            f"store {path} is incomplete: its save was interrupted. Call "
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
    for c in manifest["coords"]:
        cmeta = _check_array_meta(path, c["name"])
        if tuple(cmeta.get("dimension_names") or ()) != tuple(c["dims"]):
            raise ValueError(
                f"store {path}: coordinate {c['name']!r} has dims "
                f"{cmeta.get('dimension_names')!r}; expected {tuple(c['dims'])}"
            )

    try:
        group = zarr.open_group(str(path), mode="r", zarr_format=3)
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
        carr = group[name]
        expected = tuple(sizes[d] for d in c["dims"])
        if not isinstance(carr, zarr.Array) or carr.shape != expected:
            raise ValueError(
                f"store {path}: coordinate {name!r} has shape {getattr(carr, 'shape', None)}; "
                f"expected {expected}"
            )
        raw = carr[...] if carr.size else np.zeros(carr.shape, dtype=carr.dtype)
        values = _restore_values(raw, c["dtype"], name)
        if _hash_values(values) != c["sha256"]:
            raise ValueError(
                f"store {path}: the values of coordinate {name!r} do not match their sha256"
            )
        coords[name] = (tuple(c["dims"]), values, _decode_attr(c["attrs"]))

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
        attrs["tmx_fingerprint"],
        (path / "zarr.json").stat().st_mtime_ns,
        dask_chunks,
    )
    data = da.from_zarr(array, chunks=dask_chunks, name=name)
    result = xr.DataArray(data, dims=DIMS, coords=coords, attrs=_decode_attr(manifest["attrs"]))
    result.name = manifest["name"]  # set afterwards: the constructor takes a None name from data
    return result
