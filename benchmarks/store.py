"""Cost of the store's checksums, through public calls only: ``tmx.save`` against plain Zarr
writes of the same chunks, and ``tmx.open`` reading a store with checksums against the same
store without them.

Run: flock /tmp/tmx-bench.lock .venv/bin/python -m benchmarks.store [--mib 192]
[--chunk-mib 8] [--repeats 7]

An in-memory cube of ReLU-like float32 activations (half zeros, the rest |normal|), of
``--mib`` MiB in chunks of about ``--chunk-mib`` MiB (samples × all 16 transformations × 4096
units), so that the save is all encoding and writing (no forward pass hides the cost). Per
codec (zstd level 1, the default, and no compression), measured in the same run:

- "save: tmx.save / zarr+crc32c": ``tmx.save`` (format 2: the data chunks with the ``crc32c``
  codec, a 36-byte record and a done flag per chunk, the coordinates, the manifest, the
  lock) against ``dask.array.store`` of the same dask array into a plain Zarr array
  (``zarr.create_array``, the same shape, chunks, fill value, serializer and compressors,
  ``crc32c`` included, every chunk written): what tmx adds to a plain Zarr write that
  checksums its chunks too.
- "save: tmx.save / zarr": the same against a plain Zarr array without the ``crc32c`` codec:
  the whole cost of the checksums and of tmx's bookkeeping against the plainest write.
- "read: with / without": ``tmx.open(store).data.sum()`` on the ``tmx.save`` store (format 2:
  each read task checks the chunk's CRC-32C and its record) against the same on a copy of
  that store rewritten as format 1 (tmx before checksums: no ``crc32c`` codec, no records),
  which ``tmx.open`` reads with the same reader, without the checks -- like for like, the
  cost of the checks on a read. The copy is made with plain Zarr from the documented layout
  (``tests/store_formats.py``), outside the timing.
- "read: from_zarr / with": ``dask.array.from_zarr`` of the format-2 store's ``activation``
  array (Zarr decodes each chunk and checks its ``crc32c``; no record checked) against
  tmx's checked read.
- "... 1 thread": the same save and read calls under ``dask.config.set(scheduler=
  "synchronous")``: every chunk encoded and written (read and decoded) in this one thread.
  Read their CPU time: the cost itself, without the thread scheduling that makes wall
  times noisy on a shared machine.
- "open: with / without": ``tmx.open`` alone (format 2 lists every chunk and record and
  reads the records; format 1 lists nothing), the two stores of the read rows.
- "verify / read without": ``tmx.verify`` of the format-2 store (one full checked read, a
  thread pool) against the unchecked full read of the format-1 copy.

Times are medians of ``--repeats`` rounds (default 7, after one warm-up each), wall and CPU
time (this process, all threads); in each round the variants run back to back, in
alternating order (ABBA), and a ratio is the median of the per-round ratios. The goal of
issue 23: ≤ 5 % on save and on read. Every timing runs on this machine's shared cores: run
it alone (``flock /tmp/tmx-bench.lock``); the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dask
import dask.array as da
import numpy as np
import xarray as xr
import zarr
import zarr.codecs

import tmx
from tests.store_formats import as_format_1
from tmx.store import DATA_NAME

T, U = 16, 4096


def cube(mib: int, chunk_mib: int) -> xr.DataArray:
    n = max(1, mib * 2**20 // (T * U * 4))
    rng = np.random.default_rng(0)
    values = np.maximum(rng.normal(size=(n, T, U)).astype(np.float32), 0)
    per_chunk = max(1, chunk_mib * 2**20 // (T * U * 4))
    unit = np.arange(U)
    return xr.DataArray(
        values,
        dims=("sample", "transformation", "unit"),
        coords={
            "sample": np.arange(n),
            "transformation": np.arange(T),
            "unit": unit,
            "layer": ("unit", np.array(["conv"] * U)),
            "channel": ("unit", unit % 64),
            "y": ("unit", unit // 64 % 8),
            "x": ("unit", unit // 512),
        },
        name="activation",
    ).chunk({"sample": per_chunk})


def _timed(steps: dict, variants: tuple[str, ...], repeats: int, reset=None) -> dict:
    """Per (step, variant): the wall and the CPU times (this process, all threads) of
    ``repeats`` runs after a warm-up; the variants run back to back in each round, in
    alternating order (ABBA), so that drift in the machine's load or in the page cache's
    write-back hits every variant alike."""
    times: dict[tuple[str, str], dict[str, list[float]]] = {}
    for step, fn in steps.items():
        for v in variants:
            if reset is not None and step in reset:
                reset[step](v)
            fn(v)  # warm-up
        for r in range(repeats):
            for v in variants if r % 2 == 0 else variants[::-1]:
                if reset is not None and step in reset:  # outside the timing
                    reset[step](v)
                wall, cpu = time.perf_counter(), time.process_time()
                fn(v)
                entry = times.setdefault((step, v), {"wall": [], "cpu": []})
                entry["wall"].append(time.perf_counter() - wall)
                entry["cpu"].append(time.process_time() - cpu)
    return times


def _ratio(times: dict, a: tuple[str, str], b: tuple[str, str], kind: str) -> float:
    """Median over rounds of b / a, each round's two runs paired."""
    return statistics.median(
        y / x for x, y in zip(times[a][kind], times[b][kind], strict=True) if x > 0
    )


def _one_thread(fn: Callable[[str], object]) -> Callable[[str], None]:
    """``fn`` run by dask's synchronous scheduler: every task in this thread."""

    def run(variant: str) -> None:
        with dask.config.set(scheduler="synchronous"):
            fn(variant)

    return run


def _codec_rows(data: xr.DataArray, tmp: str, compression: str | None, repeats: int) -> list:
    """The rows of one codec: (codec, label, wall A, wall B, B/A, cpu A, cpu B, B/A)."""
    paths = {
        v: os.path.join(tmp, f"{v}-{compression}.zarr")
        for v in ("tmx", "zarr+crc32c", "zarr", "with", "without")
    }
    tmx.save(data, paths["with"], progress=False, compression=compression)
    shutil.copytree(paths["with"], paths["without"])
    as_format_1(paths["without"])
    ref = zarr.open_array(os.path.join(paths["with"], DATA_NAME), mode="r")
    plain = [c for c in ref.compressors if not isinstance(c, zarr.codecs.Crc32cCodec)]

    def write(variant: str) -> None:
        if variant == "tmx":
            tmx.save(data, paths["tmx"], progress=False, compression=compression)
            return
        out = zarr.create_array(
            paths[variant],
            shape=ref.shape,
            chunks=ref.chunks,
            dtype=ref.dtype,
            fill_value=np.nan,
            serializer=ref.serializer,
            compressors=ref.compressors if variant == "zarr+crc32c" else (plain or None),
            config={"write_empty_chunks": True},
        )
        da.store(data.data, out, lock=False)

    def clear(variant: str) -> None:
        shutil.rmtree(paths[variant], ignore_errors=True)

    def read(variant: str) -> None:
        if variant == "from_zarr":
            da.from_zarr(ref).sum().compute()
            return
        tmx.open(paths[variant]).data.sum().compute()

    saves, reads = ("tmx", "zarr+crc32c", "zarr"), ("with", "without", "from_zarr")
    resets = {"save": clear, "save 1 thread": clear}
    times = _timed({"save": write, "save 1 thread": _one_thread(write)}, saves, repeats, resets)
    times.update(_timed({"read": read, "read 1 thread": _one_thread(read)}, reads, repeats))
    times.update(_timed({"open": lambda v: tmx.open(paths[v])}, ("with", "without"), repeats))
    times.update(_timed({"verify": lambda v: tmx.verify(paths[v])}, ("with",), repeats))
    rows = []
    pairs = [
        ("save", "tmx", "zarr+crc32c"),
        ("save", "tmx", "zarr"),
        ("save 1 thread", "tmx", "zarr+crc32c"),
        ("save 1 thread", "tmx", "zarr"),
        ("read", "with", "without"),
        ("read", "from_zarr", "with"),
        ("read 1 thread", "with", "without"),
        ("read 1 thread", "from_zarr", "with"),
        ("open", "with", "without"),
    ]
    for step, b, a in pairs:
        row: list = [str(compression), f"{step}: {b} / {a}"]
        for kind in ("wall", "cpu"):
            ka, kb = (step, a), (step, b)
            ma, mb = statistics.median(times[ka][kind]), statistics.median(times[kb][kind])
            row += [ma, mb, _ratio(times, ka, kb, kind)]
        rows.append(tuple(row))
    row = [str(compression), "verify / read without"]
    for kind in ("wall", "cpu"):  # different rounds: the ratio of the medians
        ma = statistics.median(times[("read", "without")][kind])
        mb = statistics.median(times[("verify", "with")][kind])
        row += [ma, mb, mb / ma]
    rows.append(tuple(row))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=192)
    parser.add_argument("--chunk-mib", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    data = cube(args.mib, args.chunk_mib)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"cube {data.shape} float32, {data.nbytes / 2**20:.0f} MiB in "
        f"{data.data.npartitions} chunks of {data.data.chunksize[0] * T * U * 4 / 2**20:.1f} MiB; "
        f"medians of {args.repeats} rounds"
    )
    tmp = tempfile.mkdtemp(prefix="tmx-bench-store-")
    rows = []
    try:
        for compression in ("zstd", None):
            rows += _codec_rows(data, tmp, compression, args.repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"{'codec':<6} {'step: B / A':<40} {'wall A':>7} {'wall B':>7} {'B/A':>6}   "
        f"{'cpu A':>7} {'cpu B':>7} {'B/A':>6}"
    )
    for codec, step, wa, wb, wr, ca, cb, cr in rows:
        print(
            f"{codec:<6} {step:<40} {wa:>7.3f} {wb:>7.3f} {wr:>6.3f}   "
            f"{ca:>7.3f} {cb:>7.3f} {cr:>6.3f}"
        )
    print(
        "seconds, medians; B/A: the median of the per-round ratios (each round runs the "
        "variants back to back), except verify (the ratio of the medians); cpu: CPU time of "
        "this process, all threads (less sensitive than wall time to other processes on a "
        "shared machine); 1 thread: dask's synchronous scheduler, read the CPU time"
    )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
