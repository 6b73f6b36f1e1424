"""Cost of the store's checksums: save, open and a full read with them against without.

Run: flock /tmp/tmx-bench.lock .venv/bin/python -m benchmarks.store [--mib 192]
[--chunk-mib 8] [--repeats 5]

An in-memory cube of ReLU-like float32 activations (half zeros, the rest |normal|), of
``--mib`` MiB in chunks of about ``--chunk-mib`` MiB (samples × all 16 transformations × 4096
units), so that the save is all encoding and writing (no forward pass hides the cost).
Per codec (zstd level 1, the default, and no compression), measured in the same run, like
with like -- the same writer (one file per chunk written by tmx, no Zarr call per chunk) and
the same reader (one dask task per chunk reading its file), only the checks differ:

- "without": a store without checksums (format 1, ``tmx.store._save(..., checksums=False)``):
  no ``crc32c`` codec, no records; ``tmx.open`` reads it without checks.
- "with": ``tmx.save`` (format 2): the ``crc32c`` codec, a 36-byte record per chunk (the
  chunk file's CRC-32C bound to its position, the input digest) under a flat key, every chunk
  written even when all-NaN; ``tmx.open`` lists every chunk and record and reads the records,
  and each read task checks the codec's CRC-32C and the record.

Two reference rows put both against plain Zarr on the same data (what tmx did before it
wrote chunk files itself): ``zarr.Array`` writes of each chunk (with the ``crc32c`` codec)
and ``dask.array.from_zarr`` reads of the "with" store's activation array (no tmx checks).

Times are medians of ``--repeats`` runs (default 7, after one warm-up each), wall and CPU
time (this process, all threads), the variants alternating (ABBA); the ratio with / without
is the median of the per-round ratios. ``tmx.verify`` (one full checked read, a
thread pool) is reported against the full read. The goal of issue 23: ≤ 5 % on save and on
read. Every timing runs on this machine's shared cores: run it alone (``flock
/tmp/tmx-bench.lock``); the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from tmx import store as tstore

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


def _per_chunk(paths: dict[str, str], data: xr.DataArray, repeats: int) -> dict:
    """CPU time of writing and of reading every chunk in one thread (no dask), each
    variant's writer and reader as ``save`` and ``open`` build them: the checks' own cost,
    without the thread scheduling that makes wall times noisy on a shared machine."""
    # the same blocks again: the files (and the records read at open) stay what they were
    blocks = {
        ix: np.asarray(data.data.blocks[ix].compute())
        for ix in (tuple(int(i) for i in x) for x in np.ndindex(*data.data.numblocks))
    }
    tools = {}
    for v in ("without", "with"):
        loc = tstore._as_loc(paths[v])
        loaded = tstore._load(loc)
        manifest = loaded.manifest
        expected = tstore._expected_records(loc, manifest) if v == "with" else None
        codec = tstore._ChunkCodec(loaded.meta, np.nan)
        reader = tstore._ChunkReader(
            loc, manifest["shape"], manifest["chunks"], codec, checked=v == "with"
        )
        writer = tstore._writer(loc, manifest, v == "with")
        indices = [tuple(int(i) for i in ix) for ix in np.ndindex(*data.data.numblocks)]
        tools[v] = (reader, writer, expected, indices)
    times: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r in range(repeats):
        for v in ("without", "with") if r % 2 == 0 else ("with", "without"):
            reader, writer, expected, indices = tools[v]
            cpu = time.process_time()
            for index in indices:
                writer(blocks[index], index)
            times.setdefault(("write 1 thread", v), {"cpu": []})["cpu"].append(
                time.process_time() - cpu
            )
            cpu = time.process_time()
            for index in indices:
                reader(index, None if expected is None else expected[index])
            times.setdefault(("read 1 thread", v), {"cpu": []})["cpu"].append(
                time.process_time() - cpu
            )
    return times


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
        f"medians of {args.repeats} runs"
    )
    tmp = tempfile.mkdtemp(prefix="tmx-bench-store-")
    rows = []
    try:
        for compression in ("zstd", None):
            paths = {
                v: os.path.join(tmp, f"{v}-{compression}.zarr") for v in ("without", "with", "zarr")
            }

            def write(variant: str, compression=compression, paths=paths) -> None:
                if variant == "zarr":  # plain Zarr writes of the same chunks
                    arr = zarr.open_array(os.path.join(paths["with"], "activation"), mode="r")
                    out = zarr.create_array(
                        paths["zarr"],
                        shape=arr.shape,
                        chunks=arr.chunks,
                        dtype=arr.dtype,
                        fill_value=np.nan,
                        serializer=arr.serializer,
                        compressors=arr.compressors,
                        config={"write_empty_chunks": True},
                    )
                    da.store(data.data, out, lock=False)
                    return
                tstore._save(
                    data,
                    paths[variant],
                    resume=False,
                    overwrite=False,
                    progress=False,
                    compression=compression,
                    break_lock=False,
                    checksums=variant == "with",
                )

            def read(variant: str, paths=paths) -> None:
                if variant == "zarr":  # dask.array.from_zarr of the same chunks, no checks
                    arr = zarr.open_array(os.path.join(paths["with"], "activation"), mode="r")
                    da.from_zarr(arr).sum().compute()
                    return
                tstore.open(paths[variant]).data.sum().compute()

            def clear(variant: str, paths=paths) -> None:
                shutil.rmtree(paths[variant], ignore_errors=True)

            steps = {
                "save": write,
                "open": lambda v, paths=paths: tstore.open(paths[v]),
                "full read": read,
            }
            write("with")  # the plain-Zarr rows copy its metadata
            times = _timed(
                {"save": write}, ("without", "with", "zarr"), args.repeats, {"save": clear}
            )
            times.update(_timed({"open": steps["open"]}, ("without", "with"), args.repeats))
            times.update(_timed({"full read": read}, ("without", "with", "zarr"), args.repeats))
            verify = {"wall": [], "cpu": []}
            for _ in range(args.repeats):
                wall, cpu = time.perf_counter(), time.process_time()
                tstore.verify(paths["with"])
                verify["wall"].append(time.perf_counter() - wall)
                verify["cpu"].append(time.process_time() - cpu)
            times[("verify", "with")] = verify
            codec = str(compression)
            per_chunk = _per_chunk(paths, data, 2 * args.repeats + 1)
            for step in ("write 1 thread", "read 1 thread"):
                a, b = (step, "without"), (step, "with")
                ma = statistics.median(per_chunk[a]["cpu"])
                mb = statistics.median(per_chunk[b]["cpu"])
                rows.append(
                    (
                        codec,
                        step,
                        float("nan"),
                        float("nan"),
                        float("nan"),
                        ma,
                        mb,
                        _ratio(per_chunk, a, b, "cpu"),
                    )
                )
            pairs = [(s_, (s_, "without"), (s_, "with")) for s_ in steps]
            pairs += [
                ("verify vs full read", ("full read", "without"), ("verify", "with")),
                ("save: plain zarr vs with", ("save", "with"), ("save", "zarr")),
                ("read: from_zarr vs with", ("full read", "with"), ("full read", "zarr")),
            ]
            for label, a, b in pairs:
                paired = label in steps  # same rounds: paired ratios
                row = [codec, label]
                for kind in ("wall", "cpu"):
                    ma, mb = statistics.median(times[a][kind]), statistics.median(times[b][kind])
                    row += [ma, mb, _ratio(times, a, b, kind) if paired else mb / ma]
                rows.append(tuple(row))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"{'codec':<6} {'step':<26} {'wall A':>7} {'wall B':>7} {'B/A':>6}   "
        f"{'cpu A':>7} {'cpu B':>7} {'B/A':>6}"
    )
    for codec, step, wa, wb, wr, ca, cb, cr in rows:
        print(
            f"{codec:<6} {step:<26} {wa:>7.3f} {wb:>7.3f} {wr:>6.3f}   "
            f"{ca:>7.3f} {cb:>7.3f} {cr:>6.3f}"
        )
    print(
        "seconds, medians; A, B: without, with (the reference rows name theirs). B/A: for "
        "save, open and full read the median of the per-round ratios (each round runs A and "
        "B back to back); cpu: CPU time of this process, all threads (less sensitive than "
        "wall time to other processes on a shared machine); write/read 1 thread: every "
        "chunk written (read) by one thread, no dask, CPU time only (the checks' own cost)"
    )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
