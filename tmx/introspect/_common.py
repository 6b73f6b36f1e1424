"""Streaming helpers of the introspectors: sample blocks and float64 unit blocks.

Responses themselves (``as_responses``) and layer listing/selection are the cube contract's:
``tmx._schema``.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from .._schema import unit_index


def sample_slices(data: Any, block: int = 4096) -> list[slice]:
    """Slices over the sample axis to stream: a dask array's own sample chunks, otherwise
    blocks of ``block`` rows."""
    n = int(data.shape[0])
    if isinstance(getattr(data, "chunks", None), tuple) and not isinstance(data, np.ndarray):
        bounds = np.cumsum((0, *data.chunks[0]))
    else:
        bounds = np.append(np.arange(0, n, block), n)
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]


def load_block(
    data: Any,
    columns: slice | np.ndarray,
    rows: slice | np.ndarray = slice(None),
    *,
    keep_float32: bool = False,
) -> np.ndarray:
    """A C-contiguous numpy block of ``data[rows, columns]`` (computed when dask-backed), in
    float64, or float32 kept as is with ``keep_float32`` (as scikit-learn keeps it).

    Unit positions that are contiguous are read as a slice (a view, no gather)."""
    if isinstance(columns, np.ndarray):
        columns = unit_index(columns)
    block = data[rows, columns]
    if hasattr(block, "compute") and not isinstance(block, np.ndarray):
        block = block.compute()
    block = np.asarray(block)
    dtype = np.float32 if keep_float32 and block.dtype == np.float32 else np.float64
    return np.ascontiguousarray(block, dtype=dtype)
