"""Save activation cubes to Zarr (format 3) stores and open them again.

``tmx.save(cube, store)`` writes a cube chunk by chunk -- the whole cube is never held in
memory -- and records which chunks are done, so that a save that was interrupted (killed,
out of memory, a failing forward pass) can be finished with ``tmx.save(cube, store,
resume=True)``, which computes only the chunks that are missing. ``tmx.open(store)``
validates a store before reading anything from it and returns a lazy, dask-backed cube
chunked like the store, whose every chunk is checked against its checksum as it is read.
``tmx.verify(store)`` reads a whole store and names every damaged chunk.
``tmx.save(cube, store, append=True)`` grows a store along ``sample``. A store is a local
directory, an fsspec URL (``s3://``, ``gs://``, ``memory://``...) or a zarr store object;
``tmx.open`` also opens a cube written by plain xarray (``to_zarr``), validated and marked
unverified. What each of them guarantees is summed up in the user guide's "Guarantees" page.

Layout (a Zarr format 3 group)
------------------------------
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
``tmx_append``
    Only while an append is under way or was interrupted (``tmx_complete`` is then
    false): the manifests before and after, the appended cube's fingerprint, the records
    of the boundary chunks (the last sample block, when it was partial; their copies are
    kept under ``_tmx_append/`` until the append ends) and its stage.
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
    so parallel writers never share a file; format 2: uncompressed, flat keys
    ``c.i.j.k``). Element ``(i, j, k)`` is set to ``true`` only after data chunk ``(i, j,
    k)`` and its record have been written.
``_tmx_chunks_digest``
    A uint8 array of shape ``(*grid, 36)``, one Zarr chunk per data chunk under a flat key
    (``c.i.j.k.0``: no directory per chunk), codecs ``bytes`` and ``crc32c``, attribute
    ``tmx_record_version: 1``. Record ``(i, j, k)``: bytes 0-3 are the CRC-32C (little
    endian) of the data chunk file's own CRC-32C (the ``crc32c`` codec's last 4 bytes),
    seeded with the chunk's position -- so a chunk file moved to another position, or
    replaced by another valid one, no longer matches, and checking it costs no second pass
    over the values; bytes 4-35 are the sha256 of the block of ``x`` it was computed from
    (``tmx.cube.digest_input_block``), or zeros when the cube was not built by
    ``tmx.activations``. ``resume=True`` compares these input digests before it reuses a
    chunk.

Chunk files, records and done flags are written by tmx itself -- exactly the bytes Zarr
writes, each file whole (a temporary file renamed into place) or each object put whole --
and read by tmx itself, one file per dask task, without Zarr's per-call machinery: this is
what keeps the checks' cost within a few per cent of a save or a compressed read
(``benchmarks/store.py``; an uncompressed read from the page cache pays more, see the user
guide's "Guarantees" page).

The lock: for a local store a file ``<store>.tmx-lock`` next to it (JSON: host, pid,
process start, start time, a token), held for the whole of a save, resume, overwrite or
append, created atomically with its content (a hard link), so a second writer fails with
``StoreLockedError``. On an fsspec filesystem an object ``<store>.tmx-lock`` written with a
create-only write and read back (best effort); for other zarr store objects a lock held in
this process.

The store can also be read by ``xarray.open_zarr`` (without the exact dtype and attribute
restoration that ``open`` does, and without the checks of the records).
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import datetime as _dt
import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
import socket
import sys
import threading
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, NoReturn, cast

import dask
import dask.array as da
import dask.base
import dask.threaded
import google_crc32c
import numcodecs
import numpy as np
import xarray as xr
import zarr
import zarr.abc.store
import zarr.codecs
import zarr.storage
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from zarr.core.buffer import default_buffer_prototype
from zarr.core.buffer.cpu import Buffer as _CpuBuffer
from zarr.core.sync import sync as _zarr_sync

from . import _progress
from ._validate import _describe
from ._validate import flag as _flag
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

log = logging.getLogger("tmx")
DONE_NAME = "_tmx_chunks_done"
DIGEST_NAME = "_tmx_chunks_digest"
_DONE_DIMS = ("_tmx_sample_chunk", "_tmx_transformation_chunk", "_tmx_unit_chunk")
_DIGEST_DIMS = (*_DONE_DIMS, "_tmx_digest_byte")
_DIGEST_BYTES = 36  # 4: CRC-32C of the chunk's values; 32: sha256 of its input block
_NO_INPUT = bytes(32)
#: Version of the checksum records of format 2 (``_tmx_chunks_digest``'s ``tmx_record_version``).
RECORD_VERSION = 1
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
_COMPRESSORS: dict[str | None, Callable[[], list[Any] | None]] = {
    "zstd": lambda: [zarr.codecs.ZstdCodec(level=1)],
    "lz4": lambda: [zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")],
    None: lambda: None,
}


# --------------------------------------------------------------------------------------------
# small helpers


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
# where a store lives: a local directory, or a Zarr store (fsspec URLs, store objects)

# fsspec protocol -> the package that implements it, for the error when it is missing
_PROTOCOL_PACKAGES = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
    "adl": "adlfs",
    "http": "aiohttp",
    "https": "aiohttp",
    "hf": "huggingface_hub",
    "sftp": "paramiko",
    "ssh": "paramiko",
    "hdfs": "pyarrow",
    "webhdfs": "requests",
}


async def _gather_gets(store: Any, keys: Sequence[str]) -> list[Any]:
    proto = default_buffer_prototype()
    return await asyncio.gather(*(store.get(k, prototype=proto) for k in keys))


async def _collect(agen: Any) -> list[str]:
    return [k async for k in agen]


def _write_parts(fd: int, parts: Sequence[Any]) -> None:
    """Every byte of ``parts``, one after the other, to the open file ``fd`` (``os.write``
    may write less than it is given)."""
    for part in parts:
        view = memoryview(part).cast("B")
        while len(view):
            view = view[os.write(fd, view) :]


class _Loc:
    """A store's location and the few raw operations tmx needs besides Zarr's: read, write
    (whole objects, atomically), list and delete keys (``"activation/c/0/1/2"``)."""

    label: str
    path: Path | None = None  # local stores only

    def zarr_store(self) -> Any:
        raise NotImplementedError

    def read(self, key: str) -> bytearray | bytes | None:
        raise NotImplementedError

    def read_many(self, keys: Sequence[str]) -> list[bytearray | bytes | None]:
        return [self.read(k) for k in keys]

    def read_crc(self, key: str) -> tuple[bytearray | bytes, bytes] | None:
        """The object ``key`` and the CRC-32C of all of it but its last 4 bytes (the
        ``crc32c`` codec's checksum), or None when it is missing."""
        raw = self.read(key)
        if raw is None:
            return None
        return raw, _crc(memoryview(raw)[:-4]) if len(raw) >= 4 else b""

    def write(self, key: str, parts: Sequence[Any], atomic: bool = True) -> None:
        """Write ``parts`` as the object ``key``. ``atomic=False``: a local file may be seen
        (or left by a kill) partly written -- for chunk files, records and done flags, which
        are committed by what is written after them (see ``_BlockWriter``)."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def list(self, prefix: str) -> builtins.list[str]:
        """Keys under ``prefix`` (a ``"dir/"`` or a key's start), relative to the store."""
        raise NotImplementedError

    def list_dir(self, prefix: str) -> builtins.list[str]:
        """Names of the keys and "directories" right under ``prefix`` (``""`` or
        ``"dir/"``)."""
        raise NotImplementedError

    def where(self, key: str) -> str:
        """``key`` as a user reads it in a message."""
        return f"{self.label.rstrip('/')}/{key}"

    def __str__(self) -> str:
        return self.label


class _LocalLoc(_Loc):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.root = os.fspath(path)
        self.label = self.root
        self._dirs: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "root": self.root, "label": self.label, "_dirs": set()}

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("tmx-local-store", self.root)

    def zarr_store(self) -> str:
        return self.root

    def where(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def _read_file(
        self, key: str, piece: int | None = None, visit: Callable[..., None] | None = None
    ) -> tuple[bytearray, int] | None:
        """(the file's bytes, its size when opened), read ``piece`` bytes at a time (all at
        once when None), ``visit(buf, start, n)`` called after each piece; None when missing.
        A bytearray: NumPy arrays decoded from it without a copy stay writable."""
        try:
            fd = os.open(os.path.join(self.root, key), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        try:
            size = os.fstat(fd).st_size
            buf = bytearray(size)
            view, got = memoryview(buf), 0
            while got < size:
                n = os.readv(fd, [view[got:] if piece is None else view[got : got + piece]])
                if n == 0:
                    break
                if visit is not None:
                    visit(buf, got, n)
                got += n
            return (buf if got == size else buf[:got]), size
        except IsADirectoryError:
            return None
        finally:
            os.close(fd)

    def read(self, key: str) -> bytearray | None:
        got = self._read_file(key)
        return None if got is None else got[0]

    def read_crc(self, key: str) -> tuple[bytearray, bytes] | None:
        # read and checksum piece by piece: each piece is checksummed while it is still in
        # the CPU's cache, which makes the check nearly free next to the read itself
        crc = 0
        body = -1

        def visit(buf: bytearray, start: int, n: int) -> None:
            nonlocal crc, body
            if body < 0:
                body = len(buf) - 4
            if start < body:
                crc = google_crc32c.extend(
                    crc, np.frombuffer(buf, np.uint8)[start : min(start + n, body)]
                )

        got = self._read_file(key, _READ_PIECE, visit)
        if got is None:
            return None
        buf, size = got
        if len(buf) != size:
            return buf, _crc(memoryview(buf)[:-4]) if len(buf) >= 4 else b""
        return buf, int(crc).to_bytes(4, "little") if size >= 4 else b""

    def write(self, key: str, parts: Sequence[Any], atomic: bool = True) -> None:
        """Write ``parts`` one after the other into a temporary file, then rename it to
        ``key``: a reader (or a kill) never sees a partial file under ``key``. Without
        ``atomic``, straight into ``key`` (a rename costs milliseconds on some filesystems)."""
        target = os.path.join(self.root, key)
        parent = os.path.dirname(target)
        if parent not in self._dirs:
            os.makedirs(parent, exist_ok=True)
            self._dirs.add(parent)
        if not atomic:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _write_parts(fd, parts)
            finally:
                os.close(fd)
            return
        tmp = f"{target}.{uuid.uuid4().hex}.partial"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_parts(fd, parts)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, target)

    def delete(self, key: str) -> None:
        try:
            os.unlink(os.path.join(self.root, key))
        except FileNotFoundError:
            pass

    def list_dir(self, prefix: str) -> list[str]:
        try:
            return [e.name for e in os.scandir(os.path.join(self.root, prefix))]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def list(self, prefix: str) -> list[str]:
        directory, _, start = prefix.rpartition("/")
        base = os.path.join(self.root, directory) if directory else self.root
        out = []
        try:
            entries = list(os.scandir(base))
        except (FileNotFoundError, NotADirectoryError):
            return []
        for entry in entries:
            if not entry.name.startswith(start):
                continue
            rel = f"{directory}/{entry.name}" if directory else entry.name
            if entry.is_dir(follow_symlinks=False):
                for root, _dirs, files in os.walk(entry.path):
                    sub = os.path.relpath(root, self.root).replace(os.sep, "/")
                    out += [f"{sub}/{f}" for f in files]
            else:
                out.append(rel)
        return out


class _ZarrLoc(_Loc):
    """A store reached through a Zarr store object (fsspec URLs become ``FsspecStore``)."""

    def __init__(self, store: Any, label: str) -> None:
        self.store = store
        self.label = label

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("tmx-zarr-store", self.label, id(self.store))

    def zarr_store(self) -> Any:
        return self.store

    def read(self, key: str) -> bytes | None:
        buf = _zarr_sync(self.store.get(key, prototype=default_buffer_prototype()))
        return None if buf is None else buf.to_bytes()

    def read_many(self, keys: Sequence[str]) -> builtins.list[bytearray | bytes | None]:
        if not keys:
            return []
        bufs = _zarr_sync(_gather_gets(self.store, list(keys)))
        return [None if b is None else b.to_bytes() for b in bufs]

    def write(self, key: str, parts: Sequence[Any], atomic: bool = True) -> None:
        # an object is put whole or not at all
        data = b"".join(memoryview(p).cast("B") for p in parts)
        _zarr_sync(self.store.set(key, _CpuBuffer.from_bytes(data)))

    def delete(self, key: str) -> None:
        _zarr_sync(self.store.delete(key))

    def list(self, prefix: str) -> list[str]:
        # some stores (fsspec's) take a prefix as a directory: list the directory, then filter
        directory = prefix.rpartition("/")[0]
        keys = _zarr_sync(_collect(self.store.list_prefix(f"{directory}/" if directory else "")))
        return [k for k in keys if k.startswith(prefix)]

    def list_dir(self, prefix: str) -> builtins.list[str]:
        return _zarr_sync(_collect(self.store.list_dir(prefix)))


def _describe_store_arg(store: Any) -> str:
    return (
        "store must be a filesystem path (str or os.PathLike), an fsspec URL such as "
        f"'s3://bucket/cube.zarr' or 'memory://cube.zarr', or a zarr store object; got "
        f"{_describe(store)}"
    )


def _from_url(text: str, protocol: str) -> _ZarrLoc:
    try:
        store = zarr.storage.FsspecStore.from_url(text)
    except ImportError as err:
        package = _PROTOCOL_PACKAGES.get(protocol.lower(), "the fsspec implementation of it")
        raise ImportError(
            f"store {text!r}: the {protocol}:// protocol needs {package}, which is not "
            f"installed (pip install {package}); fsspec says: {err}"
        ) from err
    except ValueError as err:
        raise ValueError(
            f"store {text!r}: fsspec does not know the protocol {protocol}:// ({err}); use a "
            "local path or a URL of an installed fsspec filesystem"
        ) from err
    return _ZarrLoc(store, text)


def _as_loc(store: Any) -> _Loc:
    """The location of ``store``: a local path (``file://`` URLs too, and ``zarr``'s
    ``LocalStore``), an fsspec URL or any other zarr store object."""
    if isinstance(store, zarr.abc.store.Store):
        if isinstance(store, zarr.storage.LocalStore):
            return _LocalLoc(Path(store.root))
        return _ZarrLoc(store, _store_label(store))
    if isinstance(store, bool) or not isinstance(store, str | os.PathLike):
        raise ValueError(_describe_store_arg(store))
    text = os.fspath(store)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text:
        raise ValueError("store must be a non-empty path")
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if scheme and scheme.group(1).lower() != "file":
        return _from_url(text, scheme.group(1))
    if scheme:
        text = text[len("file://") :]
    return _LocalLoc(Path(text).expanduser())


def _store_label(store: Any) -> str:
    if isinstance(store, zarr.storage.FsspecStore):
        protocol = store.fs.protocol
        protocol = protocol[0] if isinstance(protocol, tuple | list) else protocol
        return f"{protocol}://{store.path.lstrip('/')}"
    return f"<{type(store).__name__} at {id(store):#x}>"


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
        assert isinstance(name, str)  # _prepare checked every coordinate name
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
    s_coords: dict[Any, Any] = {
        c.get("name"): c for c in store.get("coords") or [] if isinstance(c, dict)
    }
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


def _read_json(loc: _Loc, key: str, what: str) -> dict[str, Any]:
    path = loc.where(key)
    try:
        raw = loc.read(key)
        if raw is None:
            raise FileNotFoundError(path)
        meta = json.loads(bytes(raw).decode("utf-8"))
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


def _group_attrs(loc: _Loc, strict: bool = False) -> dict[str, Any] | None:
    """Attributes of the Zarr v3 group at ``loc``, or None when it is not one. ``strict``:
    raise the reason when ``zarr.json`` exists but cannot be read."""
    try:
        meta = _read_json(loc, "zarr.json", f"store {loc}")
    except ValueError as err:
        if "is missing" in str(err):
            return None
        if strict:
            raise
        return None
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "group":
        return None
    attrs = meta.get("attributes", {})
    return attrs if isinstance(attrs, dict) else None


def _is_tmx_store(loc: _Loc) -> bool:
    attrs = _group_attrs(loc)
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


def _check_array_meta(loc: _Loc, member: str) -> dict[str, Any]:
    """Check the raw ``zarr.json`` of an array before Zarr decodes anything from it."""
    where = f"array {member!r} of store {loc}"
    if loc.read(f"{member}/zarr.json") is None and not loc.list(f"{member}/"):
        raise ValueError(f"store {loc} has no array {member!r}")
    meta = _read_json(loc, f"{member}/zarr.json", where)
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
# the per-chunk arrays of format 2 (records, done flags): flat keys, no directory per chunk
_FLAT_KEY_ENCODING = {"name": "default", "configuration": {"separator": "."}}
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
    where: str,
    meta: Mapping[str, Any],
    shape: Sequence[int],
    chunks: Sequence[int],
    key_encoding: Mapping[str, Any] | None = None,
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
    key_encoding = _CHUNK_KEY_ENCODING if key_encoding is None else key_encoding
    if meta.get("chunk_key_encoding") != key_encoding:
        raise ValueError(
            f"{where} has the chunk key encoding {_describe(meta.get('chunk_key_encoding'))}; "
            f"tmx writes {key_encoding}"
        )


def _check_data_meta(
    path: _Loc, meta: Mapping[str, Any], manifest: Mapping[str, Any], version: int
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


def _check_digest_meta(path: _Loc, manifest: Mapping[str, Any]) -> None:
    meta = _check_array_meta(path, DIGEST_NAME)
    where = f"store {path}: array {DIGEST_NAME!r}"
    grid = _grid(manifest["shape"], manifest["chunks"])
    if meta.get("data_type") != "uint8" or meta.get("fill_value") != 0:
        raise ValueError(
            f"{where} has data type {_describe(meta.get('data_type'))} and fill_value "
            f"{_describe(meta.get('fill_value'))}; tmx writes uint8 and 0"
        )
    version = (meta.get("attributes") or {}).get("tmx_record_version")
    if version != RECORD_VERSION:
        raise ValueError(
            f"{where} has tmx_record_version {_describe(version)}; this version of tmx reads "
            f"checksum records of version {RECORD_VERSION} (a store written by a development "
            "version of tmx: save the cube again)"
        )
    _check_layout_meta(
        where, meta, [*grid, _DIGEST_BYTES], [1, 1, 1, _DIGEST_BYTES], _FLAT_KEY_ENCODING
    )
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


def _validate_manifest(manifest: Any, path: _Loc) -> dict[str, Any]:
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

    # shadows tuple.index (a public field name that tests and users read)
    index: tuple[int, int, int]  # type: ignore[assignment]
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
    grid = cast("tuple[int, int, int]", tuple(int(i) for i in index))
    return ChunkProblem(grid, *_chunk_ranges(index, shape, chunks), text)


class StoreDamagedError(ValueError):
    """A store whose chunks are missing or do not match their checksums.

    ``problems`` lists each bad chunk (a ``ChunkProblem``: grid index, the sample,
    transformation and unit ranges, and what is wrong)."""

    def __init__(
        self, path: Path | str | _Loc, problems: Sequence[ChunkProblem], when: str = ""
    ) -> None:
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


def _chunk_key(member: str, index: Sequence[int], separator: str = "/") -> str:
    """Zarr's default chunk key of ``index`` in array ``member`` (``c/1/0/2`` or ``c.1.0.2``)."""
    return f"{member}/c{separator}" + separator.join(str(int(i)) for i in index)


def _record_key(index: Sequence[int]) -> str:
    return _chunk_key(DIGEST_NAME, (*index, 0), ".")


def _crc(buf: Any) -> bytes:
    """CRC-32C of a buffer (no copy), little endian, as Zarr's ``crc32c`` codec stores it."""
    # google_crc32c takes NumPy arrays of any buffer without a copy (not memoryviews)
    view = np.frombuffer(buf, dtype=np.uint8) if not isinstance(buf, np.ndarray) else buf
    return int(google_crc32c.value(view)).to_bytes(4, "little")


def _binding(index: Sequence[int], stored_crc: bytes | bytearray) -> bytes:
    """A chunk's record: the CRC-32C of its file's own CRC-32C (the ``crc32c`` codec's last 4
    bytes), seeded with the chunk's position, so that the file is bound to its place."""
    head = f"tmx-chunk|{tuple(int(i) for i in index)}|".encode()
    crc = google_crc32c.extend(google_crc32c.value(head), bytes(stored_crc))
    return int(crc).to_bytes(4, "little")


class _Undecodable(ValueError):
    """A chunk file that does not decode (its CRC-32C fails, a truncated file...)."""


_BLOSC_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}
_READ_PIECE = 256 * 1024  # bytes read (and checksummed) at a time: fits a CPU's L2 cache


class _ChunkCodec:
    """Encodes and decodes whole chunk files exactly as Zarr does, for the pipelines tmx
    writes (and ``open`` accepts): ``bytes`` (little endian), then an optional zstd or Blosc
    compressor (numcodecs, as Zarr uses it), then an optional ``crc32c``. Chunks are read and
    written directly, one file each, without Zarr's per-call machinery; edge chunks are
    stored whole, padded with the fill value, as Zarr stores them."""

    def __init__(self, meta: Mapping[str, Any], fill: Any) -> None:
        dtype = np.dtype(meta["data_type"])
        self.dtype = dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype
        self.chunks = tuple(int(c) for c in meta["chunk_grid"]["configuration"]["chunk_shape"])
        self.fill = fill
        self.codecs = list(meta["codecs"])
        body = self.codecs[1:]
        self.crc = bool(body) and body[-1].get("name") == "crc32c"
        if self.crc:
            body = body[:-1]
        self.compressor: Any = None
        if body:
            name, config = body[0]["name"], dict(body[0].get("configuration") or {})
            if name == "zstd":
                self.compressor = numcodecs.Zstd(
                    level=config.get("level", 0), checksum=config.get("checksum", False)
                )
            else:  # blosc
                self.compressor = numcodecs.Blosc(
                    cname=config.get("cname", "zstd"),
                    clevel=config.get("clevel", 5),
                    shuffle=_BLOSC_SHUFFLE[config.get("shuffle", "noshuffle")],
                    blocksize=config.get("blocksize", 0),
                    typesize=config.get("typesize", self.dtype.itemsize),
                )

    def __getstate__(self) -> dict[str, Any]:
        return {"codecs": self.codecs, "dtype": self.dtype, "chunks": self.chunks, "f": self.fill}

    def __setstate__(self, state: dict[str, Any]) -> None:
        meta = {
            "data_type": state["dtype"].name,
            "chunk_grid": {"configuration": {"chunk_shape": list(state["chunks"])}},
            "codecs": state["codecs"],
        }
        self.__init__(meta, state["f"])  # type: ignore[misc]

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("tmx-chunk-codec", _canonical_json(self.codecs), self.dtype.str, self.chunks)

    def encode(self, block: np.ndarray) -> tuple[list[Any], bytes]:
        """The parts of the chunk file of ``block`` (written one after the other), and its
        CRC-32C (the file's last 4 bytes; ``b""`` without the ``crc32c`` codec)."""
        if block.shape != self.chunks:
            full = np.full(self.chunks, self.fill, dtype=self.dtype)
            full[tuple(slice(0, n) for n in block.shape)] = block
        else:
            full = np.ascontiguousarray(block, dtype=self.dtype)
        raw: Any = full.data.cast("B") if full.size else b""
        if self.compressor is not None:
            raw = self.compressor.encode(raw)
        if not self.crc:
            return [raw], b""
        crc = _crc(raw)
        return [raw, crc], crc

    def decode(self, raw: bytes | bytearray, crc: bytes | None = None) -> np.ndarray:
        """The whole chunk of a chunk file; ``_Undecodable`` naming why not. ``crc``: the
        CRC-32C of all of ``raw`` but its last 4 bytes, when already computed."""
        body = memoryview(raw)
        if self.crc:
            if len(body) < 4:
                raise _Undecodable("the file is truncated")
            body, stored = body[:-4], bytes(body[-4:])
            if (crc if crc is not None else _crc(body)) != stored:
                raise _Undecodable(
                    "its stored bytes do not match their CRC-32C checksum (damaged file)"
                )
        nbytes = math.prod(self.chunks) * self.dtype.itemsize
        if self.compressor is None:
            if len(body) != nbytes:
                raise _Undecodable(f"it holds {len(body)} bytes; expected {nbytes}")
            return np.frombuffer(body, dtype=self.dtype).reshape(self.chunks)
        out = np.empty(self.chunks, dtype=self.dtype)
        try:
            self.compressor.decode(body, out=out)
        except Exception as err:
            raise _Undecodable(f"it cannot be decompressed ({type(err).__name__}: {err})") from err
        return out


def _parse_record(raw: bytes | bytearray | None) -> bytes | None:
    """The 36 bytes of a record file (codecs ``bytes`` and ``crc32c``, checked by ``open``):
    None when missing or when its own CRC-32C fails."""
    if raw is None or len(raw) != _DIGEST_BYTES + 4:
        return None
    body = bytes(raw[:-4])
    if _crc(body) != bytes(raw[-4:]):
        return None
    return body


def _encode_record(record: bytes) -> list[bytes]:
    return [record, _crc(record)]


def _read_records(
    loc: _Loc, indices: Sequence[tuple[int, ...]]
) -> dict[tuple[int, ...], bytes | None]:
    """The records of chunks ``indices`` (None: missing or damaged), read concurrently where
    the store allows it."""
    raws = loc.read_many([_record_key(i) for i in indices])
    return {i: _parse_record(r) for i, r in zip(indices, raws, strict=True)}


def _listed_chunks(loc: _Loc, member: str, depth: int, separator: str) -> set[tuple[int, ...]]:
    """Indices of the chunk files of array ``member``: a listing, nothing is read. Zarr's (and
    tmx's) temporary ``*.partial`` files are not chunks."""
    prefix = f"{member}/c{separator}"
    found: set[tuple[int, ...]] = set()
    for key in loc.list(prefix):
        if not key.startswith(prefix):
            continue
        parts = key[len(prefix) :].split(separator)
        if len(parts) == depth and all(p.isdigit() for p in parts):
            found.add(tuple(int(p) for p in parts))
    return found


def _missing_chunks(loc: _Loc, manifest: Mapping[str, Any]) -> list[ChunkProblem]:
    """Chunks of a complete store whose data or record file is not there (a listing)."""
    shape, chunks = manifest["shape"], manifest["chunks"]
    grid = _grid(shape, chunks)
    if 0 in grid:
        return []
    data = _listed_chunks(loc, DATA_NAME, 3, "/")
    records = {i[:3] for i in _listed_chunks(loc, DIGEST_NAME, 4, ".") if i[3] == 0}
    out = []
    for index in np.ndindex(*grid):
        if index not in data:
            out.append(_problem(index, shape, chunks, "its file is missing"))
        elif index not in records:
            out.append(_problem(index, shape, chunks, "its checksum record is missing"))
    return out


class _ChunkReader:
    """Reads one chunk of the ``activation`` array straight from its file, and (format 2)
    checks it: the ``crc32c`` codec's CRC-32C of the stored bytes (a flipped bit, a
    truncated file), and that CRC-32C against the chunk's record, which is bound to the
    chunk's position (a chunk file swapped with, or replaced by, another valid one). A
    missing file is damage in format 2; in format 1 it reads as the fill value, NaN, as Zarr
    reads it."""

    def __init__(
        self,
        loc: _Loc,
        shape: Sequence[int],
        chunks: Sequence[int],
        codec: _ChunkCodec,
        checked: bool,
    ) -> None:
        self.loc = loc
        self.shape = tuple(int(n) for n in shape)
        self.chunks = tuple(int(c) for c in chunks)
        self.codec = codec
        self.checked = checked

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("tmx-chunk-reader", self.loc, self.shape, self.chunks, self.codec, self.checked)

    def read(
        self, index: Sequence[int], expected: bytes | None, key: str | None = None
    ) -> tuple[np.ndarray | None, ChunkProblem | None]:
        """(the chunk, None) or (None, what is wrong with it). ``expected``: its record's
        first 4 bytes (None: the record is missing or damaged); ``key``: read the chunk from
        there instead (a copy kept by an append)."""
        index = tuple(int(i) for i in index)
        region = tuple(
            slice(0, min(c, n - i * c))
            for i, c, n in zip(index, self.chunks, self.shape, strict=True)
        )

        def bad(text: str) -> tuple[None, ChunkProblem]:
            return None, _problem(index, self.shape, self.chunks, text)

        key = key or _chunk_key(DATA_NAME, index)
        crc = None
        if self.codec.crc:
            got = self.loc.read_crc(key)
            raw, crc = (None, None) if got is None else got
        else:
            raw = self.loc.read(key)
        if raw is None:
            if self.checked:
                return bad("its file is missing")
            return np.full(self.chunks, self.codec.fill, self.codec.dtype)[region], None
        try:
            full = self.codec.decode(raw, crc)
        except _Undecodable as err:
            return bad(str(err))
        if self.checked:
            if expected is None:
                return bad("its checksum record is missing or damaged")
            if _binding(index, raw[-4:]) != expected:
                return bad(
                    "its values do not match the checksum recorded when it was written (a "
                    "chunk file swapped with or replaced by another, or altered)"
                )
        block = full[region]
        if block.dtype != block.dtype.newbyteorder("="):
            block = block.astype(block.dtype.newbyteorder("="))
        return block, None

    def __call__(self, index: Sequence[int], expected: bytes | None = None) -> np.ndarray:
        block, problem = self.read(index, expected)
        if problem is not None:
            raise StoreDamagedError(self.loc, [problem], " (found while reading)")
        assert block is not None  # read() returns a block or a problem
        return block


def _read_chunk(
    reader: _ChunkReader, index: tuple[int, int, int], expected: bytes | None = None
) -> np.ndarray:
    return reader(index, expected)


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


def _describe_holder(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "a writer that left no readable owner (killed while taking the lock?)"
    return (
        f"pid {holder.get('pid')!r} on host {holder.get('host')!r}, started "
        f"{holder.get('started')!r}"
    )


def _locked_error(
    path: Any, lock: Any, holder: dict[str, Any] | None, alive: bool | None, tried: bool
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


class _LockFile:
    """The lock of a local store: a file next to it, created atomically with its content (a
    hard link of a private file; ``O_CREAT | O_EXCL`` where hard links are not supported)."""

    exact = True

    def __init__(self, path: Path) -> None:
        self.file = _lock_path(path)
        self.label = str(self.file)

    def create(self, data: bytes) -> bool:
        # The lock appears with its content: written to a private file first, then
        # hard-linked to the lock's name (atomic, and refused when the name exists), so a
        # second writer never reads an empty lock that names no holder.
        tmp = self.file.with_name(f"{self.file.name}.{uuid.uuid4().hex}.tmp")
        with builtins.open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, self.file)
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: create exclusively, then write
            return self._create_then_write(data)
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def _create_then_write(self, data: bytes) -> bool:
        try:
            fd = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return True

    def read(self) -> bytes | None:
        try:
            return self.file.read_bytes()
        except FileNotFoundError:
            return None
        except OSError:
            return b""

    def remove_if(self, raw: bytes) -> bool:
        return _break_lock(self.file, raw)

    def remove(self) -> None:
        self.file.unlink(missing_ok=True)


# serialises the check-and-create of lock objects (and the registry) within this process
_PROCESS_LOCK = threading.Lock()
_PROCESS_LOCKS: dict[int, tuple[Any, bytes]] = {}


class _LockObject:
    """The lock of a store on an fsspec filesystem: an object next to it
    (``<store>.tmx-lock``), written with fsspec's create-only write (``pipe_file(...,
    mode="create")``: atomic where the filesystem implements it, a check then a write
    otherwise), then read back. Best effort: see the Guarantees page."""

    exact = False

    def __init__(self, fs: Any, path: str, label: str) -> None:
        self.fs, self.path, self.label = fs, path, label

    def create(self, data: bytes) -> bool:
        with _PROCESS_LOCK:
            try:
                _zarr_sync(self.fs._pipe_file(self.path, data, mode="create"))
            except FileExistsError:
                return False
            except (TypeError, ValueError, NotImplementedError):
                # a filesystem without create-only writes: check, then write
                if self.read() is not None:
                    return False
                _zarr_sync(self.fs._pipe_file(self.path, data))
        return self.read() == data  # another writer's object replaced ours: it holds the lock

    def read(self) -> bytes | None:
        try:
            return bytes(_zarr_sync(self.fs._cat_file(self.path)))
        except FileNotFoundError:
            return None

    def remove_if(self, raw: bytes) -> bool:
        if self.read() not in (raw, None):
            return False
        self.remove()
        return True

    def remove(self) -> None:
        try:
            _zarr_sync(self.fs._rm_file(self.path))
        except FileNotFoundError:
            pass


class _LockInProcess:
    """The lock of a store given as a zarr store object with no filesystem to put a lock
    object on (``MemoryStore``...): held in this process only."""

    exact = False

    def __init__(self, store: Any, label: str) -> None:
        self.store, self.label = store, f"the lock of {label} held in this process"

    def create(self, data: bytes) -> bool:
        with _PROCESS_LOCK:
            if id(self.store) in _PROCESS_LOCKS:
                return False
            _PROCESS_LOCKS[id(self.store)] = (self.store, data)
            return True

    def read(self) -> bytes | None:
        entry = _PROCESS_LOCKS.get(id(self.store))
        return None if entry is None else entry[1]

    def remove_if(self, raw: bytes) -> bool:
        with _PROCESS_LOCK:
            entry = _PROCESS_LOCKS.get(id(self.store))
            if entry is not None and entry[1] != raw:
                return False
            _PROCESS_LOCKS.pop(id(self.store), None)
            return True

    def remove(self) -> None:
        with _PROCESS_LOCK:
            _PROCESS_LOCKS.pop(id(self.store), None)


def _lock_for(loc: _Loc) -> _LockFile | _LockObject | _LockInProcess:
    if isinstance(loc, _LocalLoc):
        assert loc.path is not None
        return _LockFile(loc.path)
    store = loc.zarr_store()
    if isinstance(store, zarr.storage.FsspecStore):
        return _LockObject(
            store.fs, store.path.rstrip("/") + LOCK_SUFFIX, loc.label.rstrip("/") + LOCK_SUFFIX
        )
    return _LockInProcess(store, loc.label)


def _parse_lock(raw: bytes | None) -> tuple[dict[str, Any] | None, bytes | None]:
    if raw is None:
        return None, None
    try:
        holder = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, raw
    return (holder if isinstance(holder, dict) else None), raw


class _Lock:
    def __init__(self, path: _Loc, lock: Any, break_lock: bool) -> None:
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
        data = json.dumps(info).encode("utf-8")
        broken = False
        for _ in range(5):
            if self.lock.create(data):
                return self
            holder, raw = _parse_lock(self.lock.read())
            if raw is None:
                continue  # released meanwhile: try again
            alive = _holder_alive(holder)
            if self.break_lock and not broken and alive is not True:
                broken = self.lock.remove_if(raw)
                if broken:
                    continue
            raise _locked_error(self.path, self.lock.label, holder, alive, self.break_lock)
        holder, _ = _parse_lock(self.lock.read())
        raise _locked_error(
            self.path, self.lock.label, holder, _holder_alive(holder), self.break_lock
        )

    def __exit__(self, *exc: Any) -> None:
        holder, _ = _parse_lock(self.lock.read())
        if holder is not None and holder.get("token") == self.token:
            self.lock.remove()


# --------------------------------------------------------------------------------------------
# writing


def _store_state(loc: _Loc) -> str:
    """ "missing", "empty" (nothing, or only what a save killed before its first metadata
    write leaves: Zarr temporary files, an unreadable ``zarr.json``), "tmx", "other" or
    "file"."""
    if isinstance(loc, _LocalLoc):
        assert loc.path is not None
        if not loc.path.exists():
            return "missing"
        if not loc.path.is_dir():
            return "file"
    elif not loc.list(""):
        return "missing"
    if _is_tmx_store(loc):
        return "tmx"
    return "empty" if _leftovers(loc) is not None else "other"


def _leftovers(loc: _Loc) -> list[str] | None:
    """The keys a save killed before its first metadata write leaves (temporary files, an
    unreadable ``zarr.json``), or None when the store holds anything else."""
    out = []
    if isinstance(loc, _LocalLoc):
        assert loc.path is not None
        entries = [(e.name, e.is_file(follow_symlinks=False)) for e in os.scandir(loc.path)]
    else:
        keys = loc.list("")
        entries = [(k, True) for k in keys if "/" not in k] + [(k, False) for k in keys if "/" in k]
    for name, is_file in entries:
        if is_file and _ZARR_TEMP.search(name):
            out.append(name)
        elif name == "zarr.json" and is_file:
            try:
                _read_json(loc, name, "")
            except ValueError:  # a partial first write
                out.append(name)
            else:
                return None
        else:
            return None
    return out


def _remove_temp_files(loc: _Loc) -> None:
    """Temporary files left by a killed save (never read, never needed)."""
    if isinstance(loc, _LocalLoc):
        for root, _dirs, files in os.walk(loc.root):
            for name in files:
                if _ZARR_TEMP.search(name):
                    Path(root, name).unlink(missing_ok=True)


def _clear_store(loc: _Loc) -> None:
    """Delete a tmx store, marking it incomplete first: a delete interrupted half-way leaves
    an incomplete store that ``open`` refuses (and ``overwrite`` or ``resume`` can reuse),
    never a complete-looking one with chunks missing."""
    meta = _read_json(loc, "zarr.json", f"store {loc}")
    meta.setdefault("attributes", {})["tmx_complete"] = False
    loc.write("zarr.json", [json.dumps(meta).encode("utf-8")])
    if isinstance(loc, _LocalLoc):
        for entry in os.scandir(loc.root):
            if entry.name != "zarr.json":
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
        shutil.rmtree(loc.root)
        return
    for key in loc.list(""):
        if key != "zarr.json":
            loc.delete(key)
    loc.delete("zarr.json")


def _create_store(
    loc: _Loc,
    manifest: dict[str, Any],
    fingerprint: str,
    values: Mapping[str, np.ndarray],
    compression: str | None = "zstd",
    checksums: bool = True,
) -> None:
    group = zarr.create_group(
        store=loc.zarr_store(),
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
    _ensure_data_arrays(group, manifest, loc, compression, checksums)


def _open_group(loc: _Loc, mode: Literal["r", "r+"] = "r+") -> zarr.Group:
    return zarr.open_group(loc.zarr_store(), mode=mode, zarr_format=3, use_consolidated=False)


def _member_array(group: zarr.Group, name: str, loc: _Loc) -> zarr.Array:
    """The array ``name`` of ``group`` (the group of the store ``loc``)."""
    member = group[name]
    if not isinstance(member, zarr.Array):
        raise TypeError(f"store {loc}: {name!r} is a Zarr group, not an array")
    return member


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


def _flat_array_meta(
    shape: Sequence[int],
    chunks: Sequence[int],
    dtype: np.dtype,
    dims: Sequence[str],
    attrs: Mapping[str, Any],
) -> bytes:
    """``zarr.json`` of a records or done-flags array of format 2 (as Zarr 3 writes it)."""
    meta = {
        "shape": [int(n) for n in shape],
        "data_type": dtype.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": _FLAT_KEY_ENCODING,
        "fill_value": 0 if dtype.kind == "u" else False,
        "codecs": [{"name": "bytes"}, {"name": "crc32c"}]
        if dtype.kind == "u"
        else [{"name": "bytes"}],
        "attributes": dict(attrs),
        "dimension_names": list(dims),
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }
    return json.dumps(meta, indent=2).encode("utf-8")


def _ensure_data_arrays(
    group: zarr.Group,
    manifest: dict[str, Any],
    path: _Loc,
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
    # name, shape, chunks, dtype, fill value, dimension names, attributes, codecs
    specs: list[
        tuple[str, tuple[int, ...], tuple[int, ...], np.dtype, Any, tuple[str, ...], dict, Any]
    ] = [
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
        # format 2: one uncompressed byte per chunk under a flat key (no directory per chunk)
        (
            DONE_NAME,
            grid,
            (1, 1, 1),
            np.dtype(bool),
            False,
            _DONE_DIMS,
            {},
            [] if checksums else "auto",
        ),
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
                {"tmx_record_version": RECORD_VERSION},
                crc,
            )
        )
    for name, ashape, achunks, dtype, fill, dims, attrs, compressors in specs:
        flat = checksums and name in (DONE_NAME, DIGEST_NAME)
        if flat and path.read(f"{name}/zarr.json") is None:
            # the per-chunk arrays of format 2: their metadata written directly, as Zarr
            # writes it (one file; Zarr's create_array costs milliseconds per array)
            path.write(f"{name}/zarr.json", [_flat_array_meta(ashape, achunks, dtype, dims, attrs)])
            continue
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
            chunk_key_encoding={"name": "default", "separator": "." if flat else "/"},
        )


class _BlockWriter:
    """Writes one block of the cube into the store, straight to its chunk file, then (format
    2) its record, then its done flag; each file is written whole or not at all."""

    def __init__(
        self,
        loc: _Loc,
        chunks: Sequence[int],
        shape: Sequence[int],
        data_codec: _ChunkCodec,
        done_codec: _ChunkCodec,
        done_separator: str,
        checksums: bool = True,
        offset: int = 0,
    ) -> None:
        self.loc = loc
        self.chunks = tuple(int(c) for c in chunks)
        self.shape = tuple(int(n) for n in shape)
        self.data_codec = data_codec
        self.done_codec = done_codec
        self.done_separator = done_separator
        self.checksums = checksums
        self.offset = int(offset)  # sample blocks of the store before the cube's first one

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return (
            "tmx-block-writer",
            self.loc,
            self.chunks,
            self.shape,
            self.data_codec,
            self.checksums,
            self.offset,
        )

    def __call__(
        self,
        block: np.ndarray,
        index: Sequence[int],
        input_digest: bytes | None = None,
        _gate: Any = None,
    ) -> int:
        index = (int(index[0]) + self.offset, *(int(i) for i in index[1:]))
        expected = tuple(
            min(c, s - i * c) for i, c, s in zip(index, self.chunks, self.shape, strict=True)
        )
        if block.shape != expected:
            raise ValueError(
                f"block {index} of the cube has shape {block.shape}; expected {expected}"
            )
        # Written in place, in this order: the chunk, its record, its done flag. A kill
        # mid-way leaves the chunk not flagged done (a partial record fails its own CRC-32C
        # and counts as missing), so a resume writes it again; no reader ever sees it,
        # since open refuses an incomplete store.
        parts, crc = self.data_codec.encode(np.asarray(block))
        self.loc.write(_chunk_key(DATA_NAME, index), parts, atomic=False)
        if self.checksums:
            record = _binding(index, crc) + (input_digest or _NO_INPUT)
            self.loc.write(_record_key(index), _encode_record(record), atomic=False)
        done, _ = self.done_codec.encode(np.ones((1, 1, 1), dtype=bool))
        self.loc.write(_chunk_key(DONE_NAME, index, self.done_separator), done, atomic=False)
        return 1


def _writer(
    loc: _Loc,
    manifest: Mapping[str, Any],
    checksums: bool,
    offset: int = 0,
) -> _BlockWriter:
    """The block writer of a store, its codecs read from the arrays' (checked) metadata."""
    data_meta = _read_json(loc, f"{DATA_NAME}/zarr.json", f"store {loc}")
    done_meta = _read_json(loc, f"{DONE_NAME}/zarr.json", f"store {loc}")
    names = [c.get("name") for c in done_meta.get("codecs", [])]
    body = [n for n in names[1:] if n != "crc32c"]
    if not names or names[0] != "bytes" or len(body) > 1 or (body and body[0] not in ("zstd",)):
        raise ValueError(
            f"store {loc}: array {DONE_NAME!r} has the codecs {names}; tmx writes bytes and an "
            "optional zstd"
        )
    separator = (
        (done_meta.get("chunk_key_encoding") or {}).get("configuration", {}).get("separator", "/")
    )
    return _BlockWriter(
        loc,
        manifest["chunks"],
        manifest["shape"],
        _ChunkCodec(data_meta, np.nan),
        _ChunkCodec(done_meta, False),
        separator,
        checksums,
        offset,
    )


def _read_done(loc: _Loc) -> np.ndarray:
    """The done flags of a store. Format 2 (flat keys, one uncompressed byte each): a flag is
    set when its file holds exactly ``\x01`` (a flag a kill left empty is not set; a flag
    set back to false through Zarr holds ``\x00`` or has no file). Format 1: through
    Zarr."""
    meta = _read_json(loc, f"{DONE_NAME}/zarr.json", f"store {loc}")
    if meta.get("chunk_key_encoding") != _FLAT_KEY_ENCODING:
        group = _open_group(loc, "r")
        return np.asarray(_member_array(group, DONE_NAME, loc)[...], dtype=bool)
    grid = tuple(int(n) for n in meta["shape"])
    done = np.zeros(grid, dtype=bool)
    found = sorted(
        i
        for i in _listed_chunks(loc, DONE_NAME, 3, ".")
        if all(a < g for a, g in zip(i, grid, strict=True))
    )
    raws = loc.read_many([_chunk_key(DONE_NAME, i, ".") for i in found])
    for index, raw in zip(found, raws, strict=True):
        done[index] = raw is not None and bytes(raw) == b"\x01"
    return done


def _done_and_records(loc: _Loc) -> tuple[np.ndarray, np.ndarray]:
    """The done flags of a store of format 2 and the records of its done chunks
    (``(*grid, 36)``, zeros elsewhere). A chunk whose record is missing or damaged counts as
    not done: it is written again."""
    done = _read_done(loc)
    records = np.zeros((*done.shape, _DIGEST_BYTES), dtype=np.uint8)
    indices = [tuple(int(i) for i in idx) for idx in zip(*np.nonzero(done), strict=True)]
    for index, record in _read_records(loc, indices).items():
        if record is None:
            done[index] = False
        else:
            records[index] = np.frombuffer(record, np.uint8)
    return done, records


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


def _input_mismatch(path: Any, blocks: Sequence[int], manifest: Mapping[str, Any]) -> str:
    samples = _sample_ranges(blocks, manifest["chunks"][0], manifest["shape"][0])
    return (
        f"cannot resume: the store {path} holds a different cube (the input x differs in "
        f"samples {samples}: the chunks stored for them were computed from other inputs). "
        "Save to a new store, or pass overwrite=True to replace it"
    )


def _check_inputs(
    path: str | _Loc, manifest: Mapping[str, Any], expected: Mapping[int, bytes], *got: bytes
) -> int:
    """Gate of a resume's writes: the digests of the input blocks ``expected`` names (in
    order) must be the recorded ones."""
    bad = [i for (i, want), have in zip(expected.items(), got, strict=True) if want != have]
    if bad:
        raise _InputMismatch(_input_mismatch(path, bad, manifest))
    return 0


def _write_blocks(
    data: da.Array,
    todo: Sequence[tuple[int, ...]],
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
    graph = HighLevelGraph.from_collections(
        name,
        layer,
        dependencies=[data],  # type: ignore[list-item]  # dask's typing
    )
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
    path: _Loc, store_manifest: Any, manifest: Mapping[str, Any], cube: xr.DataArray
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
        done, records = _done_and_records(path)
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
    path: _Loc,
    records: np.ndarray,
    manifest: Mapping[str, Any],
    data: da.Array,
    done: np.ndarray,
    input_keys: Sequence[Any] | None,
    whole_x_checked: bool,
) -> tuple[dict[int, bytes], list[int]]:
    """Check the inputs of the chunks already written against the cube's, before any of them
    is reused. Returns the recorded input digest of each sample block with chunks written
    but some still to do, for the writes' gate (empty when nothing is left to compare)."""
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
    store: Any,
    *,
    resume: bool = False,
    overwrite: bool = False,
    append: bool = False,
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
        A local directory (or ``file://`` URL); an fsspec URL (``"s3://bucket/cube.zarr"``,
        ``"gs://..."``, ``"memory://cube.zarr"``: the protocol's package, such as s3fs or
        gcsfs, must be installed -- an ``ImportError`` names it otherwise); or a zarr store
        object (``zarr.storage.FsspecStore``, ``MemoryStore``, ``LocalStore``...). The lock
        on a store that is not local is weaker (see the Guarantees page).
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
    append : bool
        Grow ``store`` along ``sample``: add the cube's samples after the store's. The cube
        must be more samples of the same cube -- the same model (weights and architecture
        fingerprints), transformations, layers, attrs (``created`` and ``input_sha256``
        aside), unit and transformation coordinates, dtype and chunks along
        ``transformation`` and ``unit`` -- with sample coordinates the store does not hold
        yet; otherwise a ``ValueError`` names what differs. It is rechunked along
        ``sample`` to the store's chunks; when the store's last sample chunk is partial,
        its chunks are written again with the first new samples (from a checked copy kept
        in the store until the append ends). Crash-safe like a save: an interrupted append
        leaves an incomplete store that ``open`` refuses and the same call finishes. The
        checksums cover the appended chunks. A store that does not exist yet is created.
        The store's ``input_sha256`` attr (the digest of the first ``x`` only) is dropped.
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
        The path of the store (its URL for a store that is not local).

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
    record (its CRC-32C bound to its position, and the sha256 of its input
    block), then it is flagged in ``_tmx_chunks_done`` -- each a file written whole (a
    temporary file renamed into place) or an object put whole; only at the end is
    ``tmx_complete`` set to true. When a chunk fails, ``save`` waits for the chunks already
    being written and re-raises the error; the store is then incomplete and ``open``
    refuses it until ``save(cube, store, resume=True)`` has finished it. A save killed
    outright (``kill -9``) also leaves its lock: ``resume=True, break_lock=True``.

    One writer: the lock file ``<store>.tmx-lock`` is created atomically (a hard link, or
    ``O_CREAT | O_EXCL``) before anything is looked at or written and removed at the end,
    so two saves of one path never interleave. See the user guide's "Guarantees" page.

    Examples
    --------
    A cube of activations a model gives (``tmx.activations(model, x, transforms)``) or one
    built from arrays; a local path, an fsspec URL (``"s3://bucket/runs/cube.zarr"`` with s3fs
    installed) or a zarr store object:

    >>> import numpy as np, tmx
    >>> rng = np.random.default_rng(0)
    >>> cube = tmx.from_array({"dense": rng.random((4, 3, 2), np.float32)})
    >>> tmx.save(cube, "memory://doc/save.zarr")
    'memory://doc/save.zarr'
    >>> tmx.save(cube, "memory://doc/save.zarr", resume=True)  # after a crash: what is missing
    'memory://doc/save.zarr'
    >>> more = tmx.from_array({"dense": rng.random((4, 3, 2), np.float32)}, sample=range(4, 8))
    >>> tmx.save(more, "memory://doc/save.zarr", append=True)  # grows the store along sample
    'memory://doc/save.zarr'
    >>> dict(tmx.open("memory://doc/save.zarr").sizes)
    {'sample': 8, 'transformation': 3, 'unit': 2}
    """
    return _save(
        cube,
        store,
        resume=resume,
        overwrite=overwrite,
        append=append,
        progress=progress,
        compression=compression,
        break_lock=break_lock,
    )


def _check_state(path: Any, state: str, resume: bool, overwrite: bool, append: bool) -> None:
    if state in ("other", "file"):
        raise (FileExistsError if not (resume or overwrite or append) else ValueError)(
            f"store {path} exists and is not a tmx cube store; refusing to "
            + (
                "resume into"
                if resume
                else "overwrite"
                if overwrite
                else "append to"
                if append
                else "write to"
            )
            + " it"
        )
    if state == "tmx" and not (resume or overwrite or append):
        raise FileExistsError(
            f"store {path} already exists; pass overwrite=True to replace it, "
            "resume=True to finish an interrupted save of the same cube, or append=True to "
            "add the cube's samples to it"
        )


def _save(
    cube: xr.DataArray,
    store: Any,
    *,
    resume: bool,
    overwrite: bool,
    progress: bool | None,
    compression: str | None,
    break_lock: bool,
    append: bool = False,
) -> str:
    """The work of ``save`` (arguments checked here): a new store is written in format 2;
    a resumed store keeps its format (``_save_locked``)."""
    resume = _flag(resume, "resume")
    overwrite = _flag(overwrite, "overwrite")
    append = _flag(append, "append")
    break_lock = _flag(break_lock, "break_lock")
    progress = _progress.resolve(progress)
    if compression not in _COMPRESSORS:
        raise ValueError(
            f"compression must be one of {list(_COMPRESSORS)}; got {_describe(compression)}"
        )
    chosen = [n for n, v in (("resume", resume), ("overwrite", overwrite), ("append", append)) if v]
    if len(chosen) > 1:
        raise ValueError(
            f"{', '.join(chosen[:-1])} and {chosen[-1]} cannot be True together: pass one"
        )
    loc = _as_loc(store)
    if isinstance(loc, _ZarrLoc) and getattr(loc.zarr_store(), "read_only", False):
        raise ValueError(f"store {loc} is read-only; tmx.save needs a writable store")
    if append and isinstance(cube, xr.DataArray) and not isinstance(cube.data, da.Array):
        # an in-memory cube takes the store's chunks (a lazy one must have them)
        store_manifest = (_group_attrs(loc) or {}).get("tmx_manifest")
        chunks = store_manifest.get("chunks") if isinstance(store_manifest, dict) else None
        if isinstance(chunks, list) and len(chunks) == 3 and cube.dims == DIMS:
            cube = cube.chunk(dict(zip(DIMS, chunks, strict=True)))
    cube = _prepare(cube)
    manifest, values = _manifest(cube)
    fingerprint = _fingerprint(manifest)
    # a first look without the lock: never lock, create or touch what is not ours to write
    # (an existing tmx store is checked under the lock, so that a store being written by
    # another save gets the lock's error, which names its writer)
    state = _store_state(loc)
    if state in ("other", "file"):
        _check_state(loc, state, resume, overwrite, append)
    if isinstance(loc, _LocalLoc):
        assert loc.path is not None
        loc.path.parent.mkdir(parents=True, exist_ok=True)
    with _Lock(loc, _lock_for(loc), break_lock):
        state = _store_state(loc)  # again: another writer may have finished meanwhile
        if append and state == "tmx":
            _append_locked(cube, loc, manifest, values, progress)
        else:
            _save_locked(
                cube,
                loc,
                manifest,
                values,
                fingerprint,
                resume or append,
                overwrite,
                progress,
                compression,
                state,
            )
    return loc.root if isinstance(loc, _LocalLoc) else loc.label


def _save_locked(
    cube: xr.DataArray,
    path: _Loc,
    manifest: dict[str, Any],
    values: Mapping[str, np.ndarray],
    fingerprint: str,
    resume: bool,
    overwrite: bool,
    progress: bool,
    compression: str | None,
    state: str,
) -> None:
    _check_state(path, state, resume, overwrite, False)
    checksums = True  # format 2; a resumed store keeps its own format (1 has no checksums)
    if state == "empty":
        for leftover in _leftovers(path) or []:
            path.delete(leftover)
    resuming = False
    if state == "tmx" and overwrite:
        log.info("save: overwriting the store %s", path)
        _clear_store(path)
    elif state == "tmx":
        attrs = _group_attrs(path) or {}
        version = attrs.get("tmx_format_version")
        if version not in READ_VERSIONS:
            raise ValueError(
                f"cannot resume: store {path} has tmx_format_version {_describe(version)}; "
                f"this version of tmx writes versions {READ_VERSIONS}"
            )
        if attrs.get("tmx_append") is not None:
            raise ValueError(
                f"cannot resume: an append to the store {path} was interrupted; finish it with "
                "tmx.save(cube, store, append=True) and the cube being appended"
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
        group = _open_group(path)
        if group.attrs.get("tmx_complete") is True:
            log.info("save: the store %s is already complete; nothing to resume", path)
            return
        _remove_temp_files(path)
        _write_coords(group, manifest, values)
        _ensure_data_arrays(group, manifest, path, checksums=checksums)
        if checksums:
            done, records = _done_and_records(path)
        else:
            done = _read_done(path)
        if checksums and cube.size:
            whole_x = isinstance(manifest["attrs"].get("input_sha256"), str)
            expected, blocks = _resume_inputs(
                path, records, manifest, cube.data, done, input_keys, whole_x
            )
            if blocks:
                assert input_keys is not None
                check = functools.partial(_check_inputs, path, manifest, expected)
                gate = (check, *[input_keys[i] for i in blocks])
    else:
        _create_store(path, manifest, fingerprint, values, compression, checksums)
        done = np.zeros(cube.data.numblocks, dtype=bool)

    todo = [tuple(int(i) for i in idx) for idx in zip(*np.nonzero(~done), strict=True)]
    if cube.size == 0:
        todo = []  # nothing to write (and the chunk grid of an empty dim is empty)
    else:
        writer = _writer(path, manifest, checksums)
    if resuming:
        log.info(
            "save: resuming the store %s: %d of %d chunk(s) left to write",
            path,
            len(todo),
            done.size,
        )
    else:
        log.info(
            "save: new store %s (format %d): %d chunk(s) to write",
            path,
            FORMAT_VERSION if checksums else 1,
            len(todo),
        )
    try:
        if todo:
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
    _update_group_attrs(path, {"tmx_complete": True})
    log.info("save: wrote %d chunk(s); the store %s is complete", len(todo), path)


def _update_group_attrs(
    loc: _Loc, changes: Mapping[str, Any], drop: Sequence[str] = ()
) -> dict[str, Any]:
    """Change the group's attributes in one write of its ``zarr.json`` (atomic: a kill
    leaves the old or the new one)."""
    meta = _read_json(loc, "zarr.json", f"store {loc}")
    attrs = meta.setdefault("attributes", {})
    attrs.update(changes)
    for key in drop:
        attrs.pop(key, None)
    loc.write("zarr.json", [json.dumps(meta, allow_nan=False).encode("utf-8")])
    return attrs


# --------------------------------------------------------------------------------------------
# growing a store along sample

_STASH = "_tmx_append"  # copies of the boundary chunks while an append rewrites them


def _append_differences(store: Mapping[str, Any], cube: Mapping[str, Any]) -> list[str]:
    """What keeps ``cube`` from being appended to a store holding ``store`` (its manifest)."""
    out = []
    for key in ("name", "dims", "dtype"):
        if store.get(key) != cube.get(key):
            out.append(f"{key} differs (store {store.get(key)!r}, cube {cube.get(key)!r})")
    for axis, dim in ((1, "transformation"), (2, "unit")):
        if store["shape"][axis] != cube["shape"][axis]:
            out.append(
                f"the number of {dim}s differs (store {store['shape'][axis]}, cube "
                f"{cube['shape'][axis]})"
            )
        elif store["chunks"][axis] != cube["chunks"][axis]:
            out.append(
                f"the chunks along {dim} differ (store {store['chunks'][axis]}, cube "
                f"{cube['chunks'][axis]}): rechunk the cube, e.g. "
                f"cube.chunk({{{dim!r}: {store['chunks'][axis]}}})"
            )
    ignored = (*VOLATILE_ATTRS, "input_sha256")
    s_attrs = {k: v for k, v in (store.get("attrs") or {}).items() if k not in ignored}
    c_attrs = {k: v for k, v in (cube.get("attrs") or {}).items() if k not in ignored}
    keys = sorted(
        k
        for k in set(s_attrs) | set(c_attrs)
        if _canonical_json(s_attrs.get(k)) != _canonical_json(c_attrs.get(k))
    )
    for key, what in _IDENTITY_ATTRS.items():
        if key in keys:
            out.append(f"{what} ({key})")
    others = [k for k in keys if k not in _IDENTITY_ATTRS]
    if others:
        out.append(f"attrs differ (keys {others})")
    s_coords = {c["name"]: c for c in store["coords"]}
    c_coords = {c["name"]: c for c in cube["coords"]}
    if set(s_coords) != set(c_coords):
        out.append(f"coordinates differ (store {sorted(s_coords)}, cube {sorted(c_coords)})")
    for name in sorted(set(s_coords) & set(c_coords)):
        s, c = s_coords[name], c_coords[name]
        along_sample = "sample" in s["dims"]
        if s["dims"] != c["dims"]:
            out.append(f"coordinate {name!r}: dims differ")
            continue
        s_kind, c_kind = np.dtype(s["dtype"]).kind, np.dtype(c["dtype"]).kind
        if (s_kind in "UO") != (c_kind in "UO") or (
            s_kind not in "UO" and s["dtype"] != c["dtype"]
        ):
            out.append(f"coordinate {name!r}: dtype differs ({s['dtype']} vs {c['dtype']})")
        if _canonical_json(s["attrs"]) != _canonical_json(c["attrs"]):
            out.append(f"coordinate {name!r}: attrs differ")
        if not along_sample and s["sha256"] != c["sha256"]:
            out.append(f"coordinate {name!r}: values differ")
    return out


def _appended_manifest(
    old: Mapping[str, Any],
    cube_manifest: Mapping[str, Any],
    old_values: Mapping[str, np.ndarray],
    new_values: Mapping[str, np.ndarray],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The manifest of the grown store, and the values of its coordinates along sample."""
    cube_coords = {c["name"]: c for c in cube_manifest["coords"]}
    coords, grown = [], {}
    for c in old["coords"]:
        entry = dict(c)
        if "sample" in c["dims"]:
            name = c["name"]
            old_dtype, new_dtype = np.dtype(c["dtype"]), np.dtype(cube_coords[name]["dtype"])
            dtype = (
                np.dtype(f"<U{max(old_dtype.itemsize, new_dtype.itemsize) // 4}")
                if old_dtype.kind == "U" and new_dtype.kind == "U"
                else old_dtype
            )
            values = np.concatenate(
                [old_values[name].astype(dtype), new_values[name].astype(dtype)]
            )
            grown[name] = values
            entry.update(dtype=values.dtype.str, sha256=_hash_values(values))
        coords.append(entry)
    manifest = dict(old)
    manifest["shape"] = [old["shape"][0] + cube_manifest["shape"][0], *old["shape"][1:]]
    # the whole-x digest described the first x only; the chunks' records name each input block
    manifest["attrs"] = {k: v for k, v in old["attrs"].items() if k != "input_sha256"}
    manifest["coords"] = coords
    return manifest, grown


def _append_locked(
    cube: xr.DataArray,
    loc: _Loc,
    cube_manifest: dict[str, Any],
    cube_values: Mapping[str, np.ndarray],
    progress: bool,
) -> None:
    attrs = _group_attrs(loc) or {}
    if attrs.get("tmx_format_version") != FORMAT_VERSION:
        raise ValueError(
            f"cannot append to the store {loc}: it has tmx_format_version "
            f"{_describe(attrs.get('tmx_format_version'))}; append needs a store with "
            f"checksums (version {FORMAT_VERSION}): save it again with "
            "tmx.save(tmx.open(old), new)"
        )
    pending = attrs.get("tmx_append")
    cube_fp = _fingerprint(_without_volatile(cube_manifest))
    if pending is None:
        if attrs.get("tmx_complete") is not True:
            raise ValueError(
                f"cannot append to the store {loc}: it is incomplete (its save was "
                "interrupted); finish it first with tmx.save(cube, store, resume=True)"
            )
        loaded = _load(loc)
        old = loaded.manifest
        diffs = _append_differences(old, cube_manifest)
        if diffs:
            raise ValueError(
                f"cannot append to the store {loc}: the cube is not more samples of the same "
                "cube (" + "; ".join(diffs) + "). Save it to a new store"
            )
        old_samples = loaded.coords["sample"][1]
        new_samples = cube_values["sample"]
        overlap = np.intersect1d(np.asarray(old_samples), np.asarray(new_samples))
        if overlap.size:
            raise ValueError(
                f"cannot append to the store {loc}: the cube's sample coordinate repeats "
                f"{overlap.size} sample(s) of the store (e.g. {overlap[:5].tolist()}); give "
                "the new samples their own labels, e.g. "
                f"cube.assign_coords(sample=cube.sample + {old['shape'][0]})"
            )
        if cube.size == 0:
            log.info("append: the cube has no values; the store %s is unchanged", loc)
            return
        old_values = {n: v[1] for n, v in loaded.coords.items()}
        manifest, grown = _appended_manifest(old, cube_manifest, old_values, cube_values)
        pending = _start_append(loc, old, manifest, cube_fp)
    else:
        log.info("append: finishing an interrupted append to the store %s", loc)
        pending = _check_pending(loc, pending, cube_fp)
        old, manifest = pending["manifest_before"], pending["manifest"]
        old_values = _pending_old_coords(loc, old)
        grown = _appended_manifest(old, cube_manifest, old_values, cube_values)[1]

    n_old, c = old["shape"][0], old["chunks"][0]
    b0, r = divmod(n_old, c)
    group = _open_group(loc)
    if pending.get("stage") != "writing":
        grid = _grid(manifest["shape"], manifest["chunks"])
        _member_array(group, DATA_NAME, loc).resize(tuple(manifest["shape"]))
        _member_array(group, DONE_NAME, loc).resize(grid)
        _member_array(group, DIGEST_NAME, loc).resize((*grid, _DIGEST_BYTES))
        for name, values in grown.items():
            arr = _member_array(group, name, loc)
            arr.resize(values.shape)
            tail = values[n_old:]
            arr[n_old:] = tail.astype(str) if tail.dtype.kind in "UO" else tail
        if r:  # the boundary chunks are written again, old samples and new together
            for j, k in np.ndindex(*grid[1:]):
                index = (b0, int(j), int(k))
                loc.delete(_chunk_key(DONE_NAME, index, "."))
                loc.delete(_record_key(index))
        pending = dict(pending, stage="writing")
        _update_group_attrs(
            loc,
            {
                "tmx_manifest": manifest,
                "tmx_fingerprint": _fingerprint(manifest),
                "tmx_append": pending,
            },
        )

    # the cube's blocks laid on the store's chunk grid, from sample block b0 on
    data = cube.data
    if r:
        data = da.concatenate([_stash_array(loc, old, b0, r, pending), data], axis=0)
    sample_chunks = data.chunks[0]
    if any(n != c for n in sample_chunks[:-1]) or sample_chunks[-1] > c:
        data = data.rechunk({0: c})
    input_keys = _input_keys(data)
    done = _done_and_records(loc)[0][b0:]
    todo = [tuple(int(i) for i in idx) for idx in zip(*np.nonzero(~done), strict=True)]
    writer = _writer(loc, manifest, True, offset=b0)
    log.info(
        "append: %d sample(s) to the store %s (%d -> %d): %d chunk(s) to write",
        manifest["shape"][0] - n_old,
        loc,
        n_old,
        manifest["shape"][0],
        len(todo),
    )
    try:
        if todo:
            _write_blocks(data, todo, writer, progress, input_keys)
    except BaseException as err:
        err.add_note(
            f"tmx.save(..., append=True) was interrupted: the store {loc} is incomplete. Call "
            "tmx.save(cube, store, append=True) again with the same cube to finish it."
        )
        raise
    _update_group_attrs(loc, {"tmx_complete": True}, drop=["tmx_append"])
    if isinstance(loc, _LocalLoc):
        shutil.rmtree(os.path.join(loc.root, _STASH), ignore_errors=True)
    else:
        for key in loc.list(f"{_STASH}/"):
            loc.delete(key)
    log.info("append: wrote %d chunk(s); the store %s is complete", len(todo), loc)


def _start_append(
    loc: _Loc, old: Mapping[str, Any], manifest: Mapping[str, Any], cube_fp: str
) -> dict[str, Any]:
    """Stash the boundary chunks (the last sample block, when it is partial) and their
    records, then mark the store incomplete with what the append is: the only write to the
    store's metadata before it grows. A kill before it leaves the store as it was."""
    n_old, c = old["shape"][0], old["chunks"][0]
    b0, r = divmod(n_old, c)
    boundary: dict[str, str] = {}
    if r:
        grid = _grid(old["shape"], old["chunks"])
        indices = [(b0, int(j), int(k)) for j, k in np.ndindex(*grid[1:])]
        records = _read_records(loc, indices)
        reader = _ChunkReader(
            loc,
            old["shape"],
            old["chunks"],
            _ChunkCodec(_read_json(loc, f"{DATA_NAME}/zarr.json", f"store {loc}"), np.nan),
            True,
        )
        raws, problems = {}, []
        for index in indices:  # every one checked before anything is written
            record = records[index]
            problem = reader.read(index, None if record is None else record[:4])[1]
            if problem is not None:
                problems.append(problem)
            raws[index] = loc.read(_chunk_key(DATA_NAME, index))
        if problems:
            raise StoreDamagedError(loc, problems, " (found before appending)")
        for index in indices:
            loc.write(f"{_STASH}/c.{index[1]}.{index[2]}", [raws[index]])
            record = records[index]
            assert record is not None  # a missing record is one of the problems above
            boundary[f"{index[1]}.{index[2]}"] = record.hex()
    pending = {
        "version": 1,
        "manifest_before": dict(old),
        "manifest": dict(manifest),
        "cube": cube_fp,
        "boundary": boundary,
        "stage": "started",
    }
    _update_group_attrs(loc, {"tmx_complete": False, "tmx_append": pending})
    return pending


def _check_pending(loc: _Loc, pending: Any, cube_fp: str) -> dict[str, Any]:
    if not (
        isinstance(pending, dict)
        and pending.get("version") == 1
        and isinstance(pending.get("boundary"), dict)
        and isinstance(pending.get("cube"), str)
    ):
        raise ValueError(f"store {loc}: malformed tmx_append attribute")
    _validate_manifest(pending.get("manifest_before"), loc)
    _validate_manifest(pending.get("manifest"), loc)
    if pending["cube"] != cube_fp:
        raise ValueError(
            f"cannot append to the store {loc}: an append of another cube was interrupted "
            "there; finish it with tmx.save(that cube, store, append=True)"
        )
    return pending


def _pending_old_coords(loc: _Loc, old: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The store's coordinates along sample before an interrupted append (their first
    samples: an append writes only after them), checked against their sha256."""
    group = _open_group(loc, "r")
    n_old = old["shape"][0]
    out = {}
    for c in old["coords"]:
        if "sample" in c["dims"]:
            values = _restore_values(
                _member_array(group, c["name"], loc)[:n_old], c["dtype"], c["name"]
            )
            if _hash_values(values) != c["sha256"]:
                raise ValueError(
                    f"store {loc}: the values of coordinate {c['name']!r} do not match their sha256"
                )
            out[c["name"]] = values
    return out


def _stash_block(
    reader: _ChunkReader, index: tuple[int, int, int], key: str, expected: bytes, r: int
) -> np.ndarray:
    block, problem = reader.read(index, expected, key=key)
    if problem is not None:
        raise StoreDamagedError(reader.loc, [problem], " (in the copy kept by an append)")
    assert block is not None  # read() returns a block or a problem
    return block[:r]


def _stash_array(
    loc: _Loc, old: Mapping[str, Any], b0: int, r: int, pending: Mapping[str, Any]
) -> da.Array:
    """The old samples of the boundary chunks, from their stashed copies (checked)."""
    shape, chunks = old["shape"], old["chunks"]
    meta = _read_json(loc, f"{DATA_NAME}/zarr.json", f"store {loc}")
    reader = _ChunkReader(loc, shape, chunks, _ChunkCodec(meta, np.nan), True)
    grid = _grid(shape, chunks)
    name = "tmx-append-stash-" + dask.base.tokenize(loc, pending.get("cube"), b0, r)
    layer: dict[Any, Any] = {}
    for j, k in np.ndindex(*grid[1:]):
        expected = bytes.fromhex(pending["boundary"][f"{j}.{k}"])[:4]
        layer[(name, 0, j, k)] = (
            _stash_block,
            reader,
            (b0, int(j), int(k)),
            f"{_STASH}/c.{j}.{k}",
            expected,
            r,
        )
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[])
    dtype = np.dtype(old["dtype"])
    return da.Array(
        graph,
        name,
        chunks=((r,), *da.core.normalize_chunks(chunks[1:], shape[1:])),
        dtype=dtype,
        meta=np.empty((0, 0, 0), dtype),
    )


# --------------------------------------------------------------------------------------------
# reading


class _Loaded(NamedTuple):
    attrs: dict[str, Any]
    manifest: dict[str, Any]
    version: int
    meta: dict[str, Any]  # the activation array's zarr.json
    coords: dict[str, Any]


def _exists(loc: _Loc) -> bool:
    if isinstance(loc, _LocalLoc):
        assert loc.path is not None
        return loc.path.exists()
    return bool(loc.list_dir(""))


def _load(loc: _Loc, attrs: dict[str, Any] | None = None) -> _Loaded:
    """Every check of ``open`` that reads metadata and coordinates, no data chunk: the group's
    attrs, the arrays' layout, then the coordinates' values."""
    if attrs is None:
        if not _exists(loc):
            raise FileNotFoundError(f"store {loc} does not exist")
        attrs = _group_attrs(loc, strict=True)
    version, manifest = _check_attrs(loc, attrs)
    assert attrs is not None  # _check_attrs refuses a store without group attrs
    meta = _check_layout(loc, manifest, version)
    coords = _read_coords(loc, manifest)
    return _Loaded(attrs, manifest, version, meta, coords)


def _check_attrs(loc: _Loc, attrs: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
    """Phase 1, the group's attrs: a tmx cube of a version this tmx reads, complete, with a
    valid manifest matching its fingerprint; (the format version, the manifest)."""
    if attrs is None:
        raise ValueError(f"store {loc} is not a tmx cube (not a Zarr format 3 group)")
    if attrs.get("tmx_format") != FORMAT:
        raise ValueError(
            f"store {loc} is not a tmx cube (its attribute tmx_format is "
            f"{_describe(attrs.get('tmx_format'))}, expected {FORMAT!r})"
        )
    version = attrs.get("tmx_format_version")
    if isinstance(version, bool) or version not in READ_VERSIONS:
        raise ValueError(
            f"store {loc} has tmx_format_version {_describe(version)}; this version of tmx "
            f"reads versions {', '.join(map(str, READ_VERSIONS))}"
        )
    if attrs.get("tmx_complete") is not True:
        _refuse_incomplete(loc, attrs)
    manifest = _validate_manifest(attrs.get("tmx_manifest"), loc)
    if attrs.get("tmx_fingerprint") != _fingerprint(manifest):
        raise ValueError(f"store {loc}: tmx_manifest does not match tmx_fingerprint")
    return version, manifest


def _refuse_incomplete(loc: _Loc, attrs: Mapping[str, Any]) -> NoReturn:
    """Raise for a store whose save or append was interrupted, naming the lock's holder."""
    lock = _lock_for(loc)
    holder, raw = _parse_lock(lock.read())
    busy = (
        f" ({lock.label} says a save by {_describe_holder(holder)} holds it: is it still running?)"
        if raw is not None
        else ""
    )
    if attrs.get("tmx_append") is not None:
        raise ValueError(
            f"store {loc} is incomplete: an append to it was interrupted{busy}. Call "
            "tmx.save(cube, store, append=True) with the cube being appended to finish it"
        )
    raise ValueError(
        f"store {loc} is incomplete: its save was interrupted{busy}. Call "
        "tmx.save(cube, store, resume=True) with the same cube to finish it"
    )


def _check_layout(loc: _Loc, manifest: Mapping[str, Any], version: int) -> dict[str, Any]:
    """Phase 2, the arrays' metadata (no values): the activation array's float dtype, dims,
    chunk grid and codecs as ``save`` writes them, the digests' (format 2), every coordinate
    along its dims; the activation array's metadata."""
    meta = _check_array_meta(loc, DATA_NAME)
    dtype = meta.get("data_type")
    if dtype not in _FLOAT_DATA_TYPES:
        raise ValueError(f"store {loc}: array {DATA_NAME!r} must have a float dtype; got {dtype}")
    if tuple(meta.get("dimension_names") or ()) != DIMS:
        raise ValueError(
            f"store {loc}: array {DATA_NAME!r} must have dims exactly {DIMS}; "
            f"got {meta.get('dimension_names')!r}"
        )
    _check_data_meta(loc, meta, manifest, version)
    if version >= 2:
        _check_digest_meta(loc, manifest)
    for c in manifest["coords"]:
        cmeta = _check_array_meta(loc, c["name"])
        if tuple(cmeta.get("dimension_names") or ()) != tuple(c["dims"]):
            raise ValueError(
                f"store {loc}: coordinate {c['name']!r} has dims "
                f"{cmeta.get('dimension_names')!r}; expected {tuple(c['dims'])}"
            )
    return meta


def _read_coords(loc: _Loc, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Phase 3, the coordinates' values: each of the manifest's shape, matching the sha256
    recorded at save time; {name: (dims, values, attrs)}."""
    try:
        group = _open_group(loc, "r")
    except Exception as err:
        raise ValueError(f"store {loc} cannot be read as Zarr: {err}") from err
    sizes = dict(zip(DIMS, manifest["shape"], strict=True))
    coords = {}
    for c in manifest["coords"]:
        name = c["name"]
        try:
            carr = group[name]
            expected = tuple(sizes[d] for d in c["dims"])
            if not isinstance(carr, zarr.Array) or carr.shape != expected:
                raise ValueError(
                    f"store {loc}: coordinate {name!r} has shape "
                    f"{getattr(carr, 'shape', None)}; expected {expected}"
                )
            stored = carr[...] if carr.size else np.zeros(carr.shape, dtype=carr.dtype)
        except ValueError:
            raise
        except Exception as err:
            raise ValueError(
                f"store {loc}: coordinate {name!r} cannot be read ({type(err).__name__}: {err})"
            ) from err
        values = _restore_values(stored, c["dtype"], name)
        if _hash_values(values) != c["sha256"]:
            raise ValueError(
                f"store {loc}: the values of coordinate {name!r} do not match their sha256"
            )
        coords[name] = (tuple(c["dims"]), values, _decode_attr(c["attrs"]))
    return coords


def _check_integrity(loc: _Loc, loaded: _Loaded) -> dict[tuple[int, ...], bytes] | None:
    """Phase 4 (format 2), the data chunks: each chunk's file and checksum record present,
    the records intact; each chunk's record's CRC-32C, checked when the chunk is read (None
    for format 1: no checksums)."""
    return _expected_records(loc, loaded.manifest) if loaded.version >= 2 else None


def _expected_records(loc: _Loc, manifest: Mapping[str, Any]) -> dict[tuple[int, ...], bytes]:
    """Each chunk's record (format 2), read at ``open``: raises naming every chunk whose data
    file or record is missing (a listing) or whose record is damaged."""
    shape, chunks = manifest["shape"], manifest["chunks"]
    problems = _missing_chunks(loc, manifest)
    if problems:
        raise StoreDamagedError(loc, problems, " (found at open)")
    indices = [tuple(int(i) for i in idx) for idx in np.ndindex(*_grid(shape, chunks))]
    records = _read_records(loc, indices)
    bad = [
        _problem(i, shape, chunks, "its checksum record is missing or damaged")
        for i, r in records.items()
        if r is None
    ]
    if bad:
        raise StoreDamagedError(loc, bad, " (found at open)")
    return {i: r[:4] for i, r in records.items() if r is not None}


def open(store: Any, *, chunks: Any = "auto-from-store") -> xr.DataArray:
    """Open a cube saved with ``save`` (or by plain xarray), lazily; every chunk of a tmx
    store is checked as it is read.

    A tmx store is validated before any value is read: it must exist, be a Zarr format 3
    group marked as a tmx cube (``tmx_format: "cube"``, ``tmx_format_version`` 1 or 2), be
    complete, and hold an ``activation`` array with dims exactly ``(sample,
    transformation, unit)``, the dtype, fill value (NaN), chunk grid, chunk keys and codec
    pipeline that ``save`` writes (little-endian ``bytes``, an optional zstd or Blosc
    compressor, ``crc32c``: a store edited to another byte order, a transpose or another
    fill value is refused), with every coordinate along its expected dims. Only bool,
    integer, float and UTF-8 string arrays with known codecs are read: nothing is ever
    unpickled, so opening an untrusted store is safe. Coordinate values are checked against
    the sha256 recorded at save time; (format 2) the presence of every data chunk and its
    checksum record is checked by listing the store, and the records (36 bytes per chunk)
    are read.

    Reading a chunk (format 2) checks its CRC-32C (Zarr's ``crc32c`` codec: damaged bytes)
    and that CRC-32C against the record written with it, which is bound to the chunk's
    position (a chunk file swapped with or replaced by another, or deleted after
    ``open``): a bad chunk raises ``StoreDamagedError`` naming it; it never reads as NaN
    or as other values. Stores of format 1 (written by tmx before checksums) are read as
    before, without these checks.

    A Zarr group that is not a tmx store -- written by ``DataArray.to_zarr`` or
    ``Dataset.to_zarr`` -- is opened when it holds a cube: one float array with dims
    exactly ``(sample, transformation, unit)`` (the one named ``activation`` if several)
    and the coordinates ``sample``, ``transformation``, ``unit`` and ``layer``,
    ``channel``, ``y``, ``x`` along ``unit``. Its metadata is validated first (Zarr format
    3 or 2, only bool, integer, float and string data types and known codecs: nothing is
    unpickled); it carries no tmx checksums, so it is read without checks and its attrs
    say so: ``tmx_integrity: "unverified"``.

    Parameters
    ----------
    store : str, os.PathLike or zarr store
        A local directory (or ``file://`` URL), an fsspec URL (``"s3://bucket/cube.zarr"``,
        ``"memory://cube.zarr"``; the protocol's package, such as s3fs, must be installed)
        or a zarr store object (``zarr.storage.FsspecStore``, ``MemoryStore``...).
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
    ImportError
        If ``store`` is a URL whose protocol needs a package that is not installed.
    StoreDamagedError
        (a ``ValueError``) If a data chunk or its checksum record is missing, or a record is
        damaged; when a chunk is read, if it is damaged.
    ValueError
        If ``store`` is not a cube, is incomplete, or is malformed (the message names what
        is wrong).

    Examples
    --------
    >>> import numpy as np, tmx
    >>> values = np.random.default_rng(0).random((4, 3, 2), np.float32)
    >>> tmx.save(tmx.from_array({"dense": values}), "memory://doc/open.zarr")
    'memory://doc/open.zarr'
    >>> cube = tmx.open("memory://doc/open.zarr")          # lazy, validated, checked on read
    >>> bool((cube.values == values).all())
    True
    >>> tmx.normalized_variance(cube).dims
    ('unit',)
    """
    loc = _as_loc(store)
    if not _exists(loc):
        raise FileNotFoundError(f"store {loc} does not exist")
    attrs = _group_attrs(loc, strict=True)
    if attrs is None or "tmx_format" not in attrs:  # a cube written by xarray's to_zarr
        return _open_plain(loc, chunks)
    loaded = _load(loc, attrs)  # phases 1-3: attrs, layout, coordinates
    expected = _check_integrity(loc, loaded)  # phase 4: the chunks and their records
    return _wrap(loc, loaded, expected, chunks)


def _dask_chunks(chunks: Any, store_chunks: tuple[int, ...]) -> Any:
    """``open``'s ``chunks`` as dask chunks: the store's, a dict over dims (the others keep
    the store's), or anything ``dask.array`` normalises."""
    if isinstance(chunks, str) and chunks == "auto-from-store":
        return store_chunks
    if isinstance(chunks, Mapping):
        bad = [k for k in chunks if k not in DIMS]
        if bad:
            raise ValueError(f"chunks keys must be among {DIMS}; got {bad}")
        return tuple(chunks.get(d, c) for d, c in zip(DIMS, store_chunks, strict=True))
    return chunks


def _wrap(
    loc: _Loc,
    loaded: _Loaded,
    expected: Mapping[tuple[int, ...], bytes] | None,
    chunks: Any,
) -> xr.DataArray:
    """The lazy cube of a checked store: one task per Zarr chunk reading (and checking) it,
    rechunked to ``chunks``, with the coordinates, name and attrs it was saved with."""
    manifest = loaded.manifest
    shape, store_chunks = tuple(manifest["shape"]), tuple(manifest["chunks"])
    dtype = np.dtype(manifest["dtype"])
    dask_chunks = _dask_chunks(chunks, store_chunks)
    # The group's metadata (its fingerprint, and its modification time or its records) make
    # a store rewritten in place get new dask keys.
    records_digest = (
        hashlib.sha256(b"".join(expected[i] for i in sorted(expected))).hexdigest()
        if expected is not None
        else None
    )
    name = "tmx-open-" + dask.base.tokenize(
        loc, loaded.attrs["tmx_fingerprint"], _modified(loc), records_digest
    )
    codec = _ChunkCodec(loaded.meta, np.nan)
    reader = _ChunkReader(loc, shape, store_chunks, codec, checked=expected is not None)
    data = _chunked_array(reader, expected, dtype, name)
    target = da.core.normalize_chunks(dask_chunks, shape, dtype=dtype, previous_chunks=store_chunks)
    if target != data.chunks:
        data = data.rechunk(target)
    result = xr.DataArray(
        data, dims=DIMS, coords=loaded.coords, attrs=_decode_attr(manifest["attrs"])
    )
    result.name = manifest["name"]  # set afterwards: the constructor takes a None name from data
    log.info(
        "open: the store %s passed its checks (format %d, shape %s, %d chunk(s)%s)",
        loc,
        loaded.version,
        shape,
        math.prod(_grid(shape, store_chunks)),
        ", records present" if expected is not None else "; no checksums",
    )
    return result


def _modified(loc: _Loc) -> int | None:
    if isinstance(loc, _LocalLoc):
        return os.stat(os.path.join(loc.root, "zarr.json")).st_mtime_ns
    return None


def _chunked_array(
    reader: _ChunkReader,
    expected: Mapping[tuple[int, ...], bytes] | None,
    dtype: np.dtype,
    name: str,
) -> da.Array:
    """A dask array with one task per Zarr chunk, each reading (and checking) its chunk."""
    shape, chunks = reader.shape, reader.chunks
    grid = _grid(shape, chunks)
    if 0 in shape:
        return da.zeros(shape, dtype=dtype, chunks=tuple(max(c, 1) for c in chunks))
    layer: dict[Any, Any] = {
        (name, *idx): (
            _read_chunk,
            reader,
            idx,
            None if expected is None else expected[idx],
        )
        for idx in (tuple(int(i) for i in ix) for ix in np.ndindex(*grid))
    }
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[])
    return da.Array(
        graph,
        name,
        chunks=da.core.normalize_chunks(chunks, shape),
        dtype=dtype,
        meta=np.empty((0,) * len(shape), dtype),
    )


# codecs (numcodecs ids) of Zarr format 2 arrays that ``open`` reads: none can run code
_V2_SAFE_IDS = frozenset(
    {
        "zstd",
        "blosc",
        "gzip",
        "zlib",
        "bz2",
        "lzma",
        "lz4",
        "vlen-utf8",
        "shuffle",
        "crc32",
        "crc32c",
        "adler32",
        "fletcher32",
    }
)


def _check_v2_array_meta(loc: _Loc, member: str) -> tuple[dict[str, Any], str]:
    """Check the raw ``.zarray`` of a Zarr format 2 array; (its metadata, its dtype kind)."""
    where = f"array {member!r} of store {loc}"
    meta = _read_json(loc, f"{member}/.zarray", where)
    dtype = meta.get("dtype")
    try:
        kind = np.dtype(dtype).kind if isinstance(dtype, str) else None
    except TypeError:
        kind = None
    filters = meta.get("filters") or []
    compressor = meta.get("compressor")
    codecs = [*filters, *([compressor] if compressor else [])]
    if not isinstance(filters, list) or not all(isinstance(c, dict) for c in codecs):
        raise ValueError(f"{where}: malformed codecs {_describe(codecs)}")
    ids = [c.get("id") for c in codecs]
    bad = [i for i in ids if i not in _V2_SAFE_IDS]
    if bad:
        raise ValueError(f"{where} uses the codec {bad[0]!r}, which tmx does not read")
    if kind == "O" and "vlen-utf8" not in ids:
        raise ValueError(
            f"{where} holds Python objects without the vlen-utf8 codec, which tmx does not "
            "read (never pickles)"
        )
    if kind not in tuple("biufUO"):
        raise ValueError(
            f"{where} has data type {_describe(dtype)}, which tmx does not read (only bool, "
            "integer, float and string data types; never objects or pickles)"
        )
    return meta, kind


def _plain_arrays(loc: _Loc) -> tuple[int, dict[str, tuple[tuple[str, ...], str]]]:
    """The Zarr format of a plain group and its arrays: name -> (dims, dtype kind), each
    array's metadata checked before xarray reads anything."""
    if _group_attrs(loc) is not None:
        fmt = 3
    elif loc.read(".zgroup") is not None:
        fmt = 2
    else:
        raise ValueError(f"store {loc} is not a tmx cube (not a Zarr group)")
    arrays: dict[str, tuple[tuple[str, ...], str]] = {}
    for name in sorted(loc.list_dir("")):
        if fmt == 3:
            if loc.read(f"{name}/zarr.json") is None:
                continue
            node = _read_json(loc, f"{name}/zarr.json", f"array {name!r} of store {loc}")
            if node.get("node_type") != "array":
                continue
            meta = _check_array_meta(loc, name)
            dtype = meta.get("data_type")
            dtype = dtype.get("name") if isinstance(dtype, dict) else dtype
            kind = "f" if dtype in _FLOAT_DATA_TYPES else "?"
            dims = tuple(meta.get("dimension_names") or ())
        else:
            if loc.read(f"{name}/.zarray") is None:
                continue
            _meta, kind = _check_v2_array_meta(loc, name)
            zattrs = (
                _read_json(loc, f"{name}/.zattrs", f"array {name!r} of store {loc}")
                if loc.read(f"{name}/.zattrs") is not None
                else {}
            )
            dims = tuple(zattrs.get("_ARRAY_DIMENSIONS") or ())
        arrays[name] = (dims, kind)
    return fmt, arrays


def _plain_coord(values: Any, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind == "T" or (
        values.dtype.kind == "O" and all(isinstance(v, str) for v in values.reshape(-1))
    ):
        values = values.astype(str)
    return _coord_values(xr.DataArray(values), name)


def _open_plain(loc: _Loc, chunks: Any) -> xr.DataArray:
    """A cube written by plain xarray (``to_zarr``): validated, never unpickled, and marked
    ``tmx_integrity: "unverified"`` (no tmx checksums)."""
    fmt, arrays = _plain_arrays(loc)
    cubes = [n for n, (dims, kind) in arrays.items() if dims == DIMS and kind == "f"]
    if DATA_NAME in cubes:
        cubes = [DATA_NAME]
    if len(cubes) != 1:
        listed = ", ".join(f"{n} {d}" for n, (d, _k) in arrays.items()) or "none"
        raise ValueError(
            f"store {loc} is not a tmx cube: "
            + (
                f"it holds {len(cubes)} float arrays with dims {DIMS} ({cubes}) and none is "
                f"named {DATA_NAME!r}"
                if cubes
                else f"it holds no float array with dims exactly {DIMS} (arrays: {listed})"
            )
        )
    var = cubes[0]
    missing = [n for n in REQUIRED_COORDS if n not in arrays]
    if missing:
        raise ValueError(
            f"store {loc} is not a tmx cube: it is missing the coordinate(s) {missing}; a "
            "cube needs " + ", ".join(f"{n!r} along {d}" for n, d in REQUIRED_COORDS.items())
        )
    for name, dims in KNOWN_COORDS.items():
        if name in arrays and arrays[name][0] != dims:
            raise ValueError(
                f"store {loc}: coordinate {name!r} must be along {dims}; the store has it "
                f"along {arrays[name][0]}"
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = xr.open_zarr(
                loc.zarr_store(),
                consolidated=False,
                zarr_format=fmt,
                chunks={},
                decode_times=False,
                decode_timedelta=False,
            )
        except Exception as err:
            raise ValueError(f"store {loc} cannot be read as Zarr: {err}") from err
    promote = [n for n in ds.data_vars if n != var and set(ds[n].dims) <= set(DIMS)]
    ds = ds.set_coords(promote)
    arr = ds[var]
    if arr.dtype.kind != "f" or arr.dtype.name not in _FLOAT_DATA_TYPES:
        raise ValueError(
            f"store {loc}: array {var!r} decodes to dtype {arr.dtype}; a cube has dtype "
            "float16, float32 or float64"
        )
    coords = {}
    for name, coord in arr.coords.items():
        if name in KNOWN_COORDS and coord.dims != KNOWN_COORDS[name]:
            raise ValueError(
                f"store {loc}: coordinate {name!r} must be along {KNOWN_COORDS[name]}; got "
                f"{coord.dims}"
            )
        coords[name] = (coord.dims, _plain_coord(coord.values, name), dict(coord.attrs))
    data = arr.data
    if not (isinstance(chunks, str) and chunks == "auto-from-store"):
        if isinstance(chunks, Mapping):
            bad = [k for k in chunks if k not in DIMS]
            if bad:
                raise ValueError(f"chunks keys must be among {DIMS}; got {bad}")
            data = data.rechunk({DIMS.index(k): v for k, v in chunks.items()})
        else:
            data = data.rechunk(chunks)
    attrs = dict(arr.attrs)
    attrs["tmx_integrity"] = "unverified"
    result = xr.DataArray(data, dims=DIMS, coords=coords, attrs=attrs)
    result.name = arr.name
    log.info(
        "open: %s is a plain Zarr cube (array %r, Zarr format %d); its metadata passed the "
        "checks, its values are unverified (no tmx checksums)",
        loc,
        var,
        fmt,
    )
    return result


def verify(store: Any) -> int:
    """Read a whole store and check every chunk; raise naming each bad one.

    Runs every check of ``open`` (metadata, codecs, coordinates and their sha256, the
    presence of every chunk and its record), then reads every data chunk and checks its
    CRC-32C (the stored bytes) against the ``crc32c`` codec and against the record written
    with it (bound to the chunk's position, so swapped or replaced chunk files are found),
    and that every chunk is flagged as written.

    Parameters
    ----------
    store : str, os.PathLike or zarr store
        A store written by ``save`` (format 2): a local directory, an fsspec URL or a zarr
        store object, as for ``open``. Stores of format 1 (tmx before checksums) and plain
        Zarr stores carry nothing to verify against and are refused.

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
        When the store is malformed, incomplete, of format 1 or not a tmx store.
    FileNotFoundError
        If ``store`` does not exist.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> cube = tmx.from_array({"dense": np.ones((4, 3, 2), np.float32)})
    >>> tmx.save(cube, "memory://doc/verify.zarr")
    'memory://doc/verify.zarr'
    >>> tmx.verify("memory://doc/verify.zarr")   # the number of chunks checked, or an error
    1
    """
    loc = _as_loc(store)
    path = loc
    if not _exists(loc):
        raise FileNotFoundError(f"store {loc} does not exist")
    attrs = _group_attrs(loc, strict=True)
    if attrs is None or "tmx_format" not in attrs:
        raise ValueError(
            f"store {loc} is not a tmx store: it carries no tmx checksums to verify (tmx.open "
            "reads a plain Zarr cube unverified; tmx.save(tmx.open(store), new) writes one "
            "with checksums)"
        )
    loaded = _load(loc, attrs)
    if loaded.version < 2:
        raise ValueError(
            f"store {path} was written by tmx before checksums (tmx_format_version 1): there "
            "is nothing to verify its chunks against. tmx.open still reads it; save it again "
            "(tmx.save(tmx.open(old), new)) for a store with checksums"
        )
    manifest = loaded.manifest
    shape, chunks = manifest["shape"], manifest["chunks"]
    grid = _grid(shape, chunks)
    problems: dict[tuple[int, ...], ChunkProblem] = {
        p.index: p for p in _missing_chunks(loc, manifest)
    }
    if 0 in grid:
        log.info("verify: the store %s is empty; no chunks to check", path)
        return 0
    try:
        _check_array_meta(loc, DONE_NAME)
        done = _read_done(loc)
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
    indices = [tuple(int(i) for i in idx) for idx in np.ndindex(*grid)]
    records = _read_records(loc, indices)
    for index in indices:
        if records[index] is None:
            problems.setdefault(
                index, _problem(index, shape, chunks, "its checksum record is missing or damaged")
            )
    reader = _ChunkReader(loc, shape, chunks, _ChunkCodec(loaded.meta, np.nan), True)
    todo = [idx for idx in indices if idx not in problems]

    def check(index: tuple[int, ...]) -> ChunkProblem | None:
        record = records[index]
        return reader.read(index, None if record is None else record[:4])[1]

    workers = min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="tmx-verify") as pool:
        # only the problem comes back: a block is dropped as soon as it is checked
        for index, problem in zip(todo, pool.map(check, todo), strict=True):
            if problem is not None:
                problems[index] = problem
    if problems:
        raise StoreDamagedError(
            path, [problems[i] for i in sorted(problems)], " (found by tmx.verify)"
        )
    log.info("verify: the store %s is sound: %d chunk(s) checked", path, int(np.prod(grid)))
    return int(np.prod(grid))
