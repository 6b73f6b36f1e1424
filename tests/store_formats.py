"""Stores in the formats tmx wrote before, built with plain Zarr (the tests of the backward
compatible reader and ``benchmarks/store.py``'s baseline without checksums)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import zarr
import zarr.codecs

from tmx.store import DATA_NAME, DIGEST_NAME, DONE_NAME


def as_format_1(path: str | Path) -> None:
    """Rewrite the tmx store at ``path`` (format 2) as a store of format 1, the format tmx
    wrote before checksums, with plain Zarr only.

    Written from the documented layout (the module docstring of ``tmx.store`` and the user
    guide's "Guarantees" page), independently of tmx's writer: the ``activation`` array
    re-created with the same shape, chunks, data type, fill value NaN, dimension names,
    attributes and compressor, but codecs ``bytes`` + the compressor (no ``crc32c``), every
    chunk written again; no ``_tmx_chunks_digest`` array; ``_tmx_chunks_done`` a plain Zarr
    bool array (one element per chunk of the grid, chunks ``(1, 1, 1)``, Zarr's default
    compressors, ``/`` chunk key separator, fill ``false``) with every flag set; group
    attribute ``tmx_format_version: 1``.
    """
    group = zarr.open_group(str(path), mode="r+", zarr_format=3)
    data = group[DATA_NAME]
    assert isinstance(data, zarr.Array)
    values = data[...]
    meta = json.loads((Path(path) / DATA_NAME / "zarr.json").read_text())
    grid = tuple(-(-n // c) for n, c in zip(data.shape, data.chunks, strict=True))
    spec = {"shape": data.shape, "chunks": data.chunks, "dtype": data.dtype}
    compressors = [c for c in data.compressors if not isinstance(c, zarr.codecs.Crc32cCodec)]
    del group[DATA_NAME], group[DIGEST_NAME], group[DONE_NAME]
    slash = {"name": "default", "separator": "/"}
    group.create_array(
        DATA_NAME,
        **spec,
        fill_value=np.nan,
        dimension_names=meta["dimension_names"],
        attributes=meta["attributes"],
        serializer=zarr.codecs.BytesCodec(endian="little"),
        compressors=compressors or None,
        chunk_key_encoding=slash,
        config={"write_empty_chunks": True},
    )[...] = values
    group.create_array(
        DONE_NAME,
        shape=grid,
        chunks=(1, 1, 1),
        dtype=bool,
        fill_value=False,
        dimension_names=("_tmx_sample_chunk", "_tmx_transformation_chunk", "_tmx_unit_chunk"),
        chunk_key_encoding=slash,
    )[...] = True
    group.attrs["tmx_format_version"] = 1
