"""Batching and memory planning, one rule for the package.

Compiled forward passes take fixed shapes. ``call_rows`` is the one rule for the rows of a
call: ``batch`` rows, or, when fewer rows are left, the power of two ≥ those rows (never more
than ``batch``). A stream of rows is then cut into full batches and one last, short call
padded to a power of two at most (``batches``; ``pad_rows`` pads it): at most
⌈log2(batch)⌉ + 1 compiled shapes, and never more than twice the rows of the last call.

``parse_memory`` reads a memory budget; ``plan_cube`` turns one into the forward batch and the
chunks of an activation cube (see ``tmx.activations``).
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
from dask.utils import format_bytes, parse_bytes

GIB = 2**30
MIB = 2**20
DEFAULT_MEMORY_CAP = 2 * GIB  # the default budget: 2 GiB, or a quarter of the RAM when less
DEFAULT_BLOCK_BYTES = 64 * MIB  # a block no larger than this when the budget allows more
UNIT_CHUNK_BYTES = 8 * MIB  # float32 bytes of one unit chunk of a block, at most (planned)
MAX_BATCH = 256  # images per forward batch at most, by default
# float64 work a measure makes per float32 block (tmx.measures._common.block_moments: the
# float64 deviations, 2×, and the moments along samples and transformations)
MEASURE_FACTOR = 4.0
# partial moments along the sample axis that a measure keeps alive while it merges sample
# blocks: 3 float64 moments per (transformation, unit), i.e. 6 × one sample's float32 values,
# held for about this many sample blocks at once (dask's tree reduction merges 4 at a time)
LIVE_PARTIALS = 4
# bytes a forward pass holds per image, per byte of recorded output: TensorFlow's outputs and
# their copy into the block; the model's transient intermediates are added separately
FORWARD_OUTPUT_FACTOR = 2.0
FORWARD_TRANSIENT_FACTOR = 3.0


def call_rows(rows: int, batch: int) -> int:
    """Rows of one compiled call for ``rows`` rows at hand: ``batch``, or the power of two ≥
    ``rows`` when fewer (at most ``batch``).

    Examples
    --------
    >>> from tmx._batching import call_rows
    >>> call_rows(100, 64), call_rows(5, 64), call_rows(40, 32)
    (64, 8, 32)
    """
    if rows >= batch:
        return batch
    return min(batch, 1 << max(0, rows - 1).bit_length())


def pad_rows(arr: np.ndarray, rows: int) -> np.ndarray:
    """``arr`` with zero rows appended up to ``rows`` (a compiled call's fixed shape; the caller
    drops the padding's results); ``arr`` itself when it already has ``rows`` rows.

    Examples
    --------
    >>> import numpy as np
    >>> from tmx._batching import pad_rows
    >>> pad_rows(np.ones((3, 2)), 4).tolist()
    [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0]]
    """
    if arr.shape[0] == rows:
        return arr
    pad = np.zeros((rows - arr.shape[0], *arr.shape[1:]), arr.dtype)
    return np.concatenate([arr, pad])


def batches(total: int, batch: int) -> list[tuple[int, int, int]]:
    """``(start, stop, rows)`` of each call over ``total`` rows: full calls of ``batch`` rows,
    then the rest in one call of ``call_rows(rest, batch)`` rows (``rows − (stop − start)`` of
    them padding).

    Examples
    --------
    >>> from tmx._batching import batches
    >>> batches(10, 4)                         # the last call: 2 rows, no padding needed
    [(0, 4, 4), (4, 8, 4), (8, 10, 2)]
    >>> batches(11, 8)                         # 3 rows left: one call of 4 rows, 1 of padding
    [(0, 8, 8), (8, 11, 4)]
    """
    out = []
    for start in range(0, total, batch):
        stop = min(total, start + batch)
        out.append((start, stop, call_rows(stop - start, batch)))
    return out


def total_memory() -> int | None:
    """The machine's physical memory in bytes (None when unknown)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):  # pragma: no cover - non-POSIX
        return None


def default_memory() -> int:
    """The default budget: 2 GiB, or a quarter of the machine's memory when that is less.

    Examples
    --------
    >>> from tmx._batching import GIB, default_memory
    >>> 0 < default_memory() <= 2 * GIB
    True
    """
    ram = total_memory()
    return DEFAULT_MEMORY_CAP if not ram else min(DEFAULT_MEMORY_CAP, ram // 4)


def parse_memory(
    memory: Any, name: str = "memory", *, default: int | None = None, minimum: int = 1
) -> int:
    """A memory budget in bytes: None (``default``, else ``default_memory()``), an int of
    bytes, or a string such as ``"2GB"``, ``"512 MiB"``; at least ``minimum`` bytes. The one
    parser of every ``memory=`` argument.

    Examples
    --------
    >>> from tmx._batching import parse_memory
    >>> parse_memory("2GB"), parse_memory("512 MiB"), parse_memory(4096)
    (2000000000, 536870912, 4096)
    >>> parse_memory(None, default=7)         # None: the default (else default_memory())
    7
    >>> parse_memory("lots", "memory_limit")
    Traceback (most recent call last):
    ...
    ValueError: memory_limit must be bytes (an int) or a size such as '2GB'; got 'lots'
    """
    if memory is None:
        return default_memory() if default is None else int(default)
    if isinstance(memory, str):
        try:
            value = parse_bytes(memory)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"{name} must be bytes (an int) or a size such as '2GB'; got {memory!r}"
            ) from exc
    elif isinstance(memory, numbers.Integral) and not isinstance(memory, bool):
        value = int(memory)
    else:
        raise ValueError(
            f"{name} must be bytes (an int), a size such as '2GB', or None; got {memory!r}"
        )
    if value <= 0:
        raise ValueError(f"{name} must be a positive number of bytes; got {memory!r}")
    if value < minimum:
        raise ValueError(
            f"{name} must be a number of bytes >= {format_bytes(minimum)}; got {memory!r}"
        )
    return value


def scheduler_threads() -> int:
    """Tasks the local threaded scheduler runs at once (dask's ``num_workers``, else the CPU
    count).

    Examples
    --------
    >>> import dask
    >>> from tmx._batching import scheduler_threads
    >>> with dask.config.set(num_workers=3):
    ...     scheduler_threads()
    3
    """
    workers = dask.config.get("num_workers", None)
    return max(1, int(workers)) if workers else max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class CubePlan:
    """The forward batch and chunks of a cube, and the memory they were planned for.

    Examples
    --------
    >>> from tmx._batching import CubePlan
    >>> plan = CubePlan(batch_size=64, sample=32, transformation=8, unit=100, memory=2**30,
    ...                 estimate=2**20)
    >>> plan.samples_per_batch(8)              # 64 images: 8 samples × 8 transformations
    8
    """

    batch_size: int  # images per forward batch (before rounding to whole samples)
    sample: int
    transformation: int
    unit: int
    memory: int
    estimate: int  # bytes the plan expects the forward pass and a measure's blocks to hold

    def samples_per_batch(self, t_block: int) -> int:
        return max(1, self.batch_size // t_block)


def forward_bytes(images: int, unit_bytes: int, transient_bytes: int) -> int:
    """Bytes one forward batch of ``images`` holds: the recorded outputs (TensorFlow's and their
    copy) and the model's largest intermediate (a few times, in flight)."""
    per_image = FORWARD_OUTPUT_FACTOR * unit_bytes + FORWARD_TRANSIENT_FACTOR * transient_bytes
    return int(images * per_image)


def plan_cube(
    n: int,
    t: int,
    units: int,
    *,
    transient_bytes: int,
    memory: int,
    batch_size: int | None,
    chunks: dict[str, int],
    threads: int | None = None,
) -> CubePlan:
    """Plan the forward batch and the chunks of an (n, t, units) float32 cube from a budget.

    The estimate of a plan adds, for the local scheduler's ``threads`` tasks at once: the
    forward batches (``forward_bytes``); the float32 blocks alive; the float64 work a measure
    makes on a unit chunk (``MEASURE_FACTOR`` × the chunk; a block above
    ``DEFAULT_BLOCK_BYTES`` is cut into unit chunks of ``UNIT_CHUNK_BYTES``); and, with
    several sample blocks, the partial moments along the sample axis that a measure keeps
    while it merges them (6 × one sample's float32 values, for up to ``LIVE_PARTIALS`` sample
    blocks). The forward batch takes at most a quarter of the budget. Samples per block: the
    most whose estimate fits the budget with blocks of at most ``DEFAULT_BLOCK_BYTES``; else
    the most that fit; else (a model too wide for the budget) the block size with the
    smallest estimate. Given sizes are kept.

    Examples
    --------
    >>> from tmx._batching import plan_cube
    >>> plan = plan_cube(1000, 8, 4096, transient_bytes=32768, memory=2**27, batch_size=None,
    ...                  chunks={}, threads=2)
    >>> plan.batch_size, plan.sample, plan.transformation, plan.unit
    (128, 64, 8, 4096)
    >>> plan.estimate <= plan.memory
    True
    >>> plan_cube(1000, 8, 4096, transient_bytes=32768, memory=2**27, batch_size=None,
    ...           chunks={"sample": 10}, threads=2).sample       # given sizes are kept
    10
    """
    threads = scheduler_threads() if threads is None else threads
    unit_bytes = 4 * units  # one image's recorded values
    if batch_size is None:
        fit = (memory // 4) // max(1, threads * forward_bytes(1, unit_bytes, transient_bytes))
        batch = max(1, min(MAX_BATCH, int(fit)))
        batch = 1 << (batch.bit_length() - 1)  # a power of two
    else:
        batch = batch_size
    t_block = min(t, chunks.get("transformation", t))
    t_blocks = math.ceil(t / t_block)
    spb = max(1, batch // t_block)

    def u_block_for(s_block: int) -> int:
        if "unit" in chunks:
            return min(units, chunks["unit"])
        if s_block * t_block * unit_bytes <= DEFAULT_BLOCK_BYTES:
            return units  # a small block: one unit chunk
        return max(1, min(units, UNIT_CHUNK_BYTES // max(1, 4 * s_block * t_block)))

    def estimate(s_block: int) -> int:
        blocks = math.ceil(n / s_block)
        tasks = min(threads, blocks * t_blocks)
        forward = forward_bytes(min(spb, s_block) * t_block, unit_bytes, transient_bytes)
        total: float = tasks * forward
        total += tasks * s_block * t_block * unit_bytes  # the blocks
        total += threads * MEASURE_FACTOR * 4 * s_block * t_block * u_block_for(s_block)
        if blocks > 1:
            total += min(blocks, LIVE_PARTIALS) * 6 * t * unit_bytes
        return int(total)

    if "sample" in chunks:
        s_block = min(n, chunks["sample"])
    else:
        candidates = sorted({*range(1, min(n, 4096) + 1), n})
        costs = {s: estimate(s) for s in candidates}
        fits = [s for s in candidates if costs[s] <= memory]
        small = [s for s in fits if s * t_block * unit_bytes <= DEFAULT_BLOCK_BYTES]
        if small:
            s_block = max(small)
        elif fits:
            s_block = max(fits)
        else:
            s_block = min(candidates, key=lambda s: (costs[s], -s))
        if spb < s_block < n:  # whole forward batches per block: padding only in the last
            s_block -= s_block % spb
    return CubePlan(batch, s_block, t_block, u_block_for(s_block), memory, estimate(s_block))


__all__ = [
    "CubePlan",
    "batches",
    "call_rows",
    "default_memory",
    "parse_memory",
    "plan_cube",
    "scheduler_threads",
]
