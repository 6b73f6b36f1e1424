"""Cost of the store's checksums: save, open and a full read with them against without.

Run: .venv/bin/python -m benchmarks.store [--mib 192] [--chunk-mib 8] [--repeats 5]

An in-memory cube of ReLU-like float32 activations (half zeros, the rest |normal|), of
``--mib`` MiB in chunks of about ``--chunk-mib`` MiB (samples × all 16 transformations × 4096
units), so that the save is all encoding and writing (no forward pass hides the cost).
Per codec (zstd level 1, the default, and no compression), measured in the same run:

- "without": the store format 1 that tmx wrote before checksums (``tmx.store._save(...,
  checksums=False)``): no ``crc32c`` codec, no per-chunk records; ``tmx.open`` reads it with
  ``dask.array.from_zarr``, without checks.
- "with": ``tmx.save`` (format 2): the ``crc32c`` codec, a 36-byte record per chunk (a CRC-32C
  of the chunk's values bound to its position, the input digest), every chunk written even
  when all-NaN; ``tmx.open`` lists every chunk file, and each read task checks the codec's
  CRC-32C and the chunk's record.

Times are medians of ``--repeats`` runs (default 5, after one warm-up each), the two
variants alternating (ABBA); the ratio is with / without.
``tmx.verify`` (one full checked read, thread pool) is reported against the full read. The
goal of issue 23: ≤ 5 % on save and on read. Every timing runs on this machine's shared
cores: run it alone (``flock /tmp/tmx-bench.lock``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import xarray as xr

from tmx import store as tstore

from ._timing import median_seconds

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=192)
    parser.add_argument("--chunk-mib", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    data = cube(args.mib, args.chunk_mib)
    print(
        f"cube {data.shape} float32, {data.nbytes / 2**20:.0f} MiB in "
        f"{data.data.npartitions} chunks of {data.data.chunksize[0] * T * U * 4 / 2**20:.1f} MiB; "
        f"medians of {args.repeats} runs"
    )
    tmp = tempfile.mkdtemp(prefix="tmx-bench-store-")
    rows = []
    try:
        for compression in ("zstd", None):
            paths = {v: os.path.join(tmp, f"{v}-{compression}.zarr") for v in ("without", "with")}

            def write(variant: str, compression=compression, paths=paths) -> None:
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

            steps = {
                "save": write,
                "open": lambda v, paths=paths: tstore.open(paths[v]),
                "full read": lambda v, paths=paths: tstore.open(paths[v]).data.sum().compute(),
            }
            times: dict[tuple[str, str], list[float]] = {}
            for step, fn in steps.items():
                for v in ("without", "with"):
                    if step == "save":
                        shutil.rmtree(paths[v], ignore_errors=True)
                    fn(v)  # warm-up
                # alternating (ABBA) so that drift in the machine's load or in the page cache's
                # write-back hits both variants alike
                for r in range(args.repeats):
                    order = ("without", "with") if r % 2 == 0 else ("with", "without")
                    for v in order:
                        if step == "save":  # the old store is removed outside the timing
                            shutil.rmtree(paths[v], ignore_errors=True)
                        start = time.perf_counter()
                        fn(v)
                        times.setdefault((step, v), []).append(time.perf_counter() - start)
            verify = median_seconds(lambda paths=paths: tstore.verify(paths["with"]), args.repeats)
            for step in steps:
                rows.append(
                    (
                        str(compression),
                        step,
                        statistics.median(times[(step, "without")]),
                        statistics.median(times[(step, "with")]),
                    )
                )
            rows.append(
                (
                    str(compression),
                    "verify vs full read",
                    statistics.median(times[("full read", "without")]),
                    verify,
                )
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'codec':<6} {'step':<20} {'without (s)':>12} {'with (s)':>10} {'ratio':>7}")
    for codec, step, without, with_ in rows:
        print(f"{codec:<6} {step:<20} {without:>12.3f} {with_:>10.3f} {with_ / without:>7.3f}")


if __name__ == "__main__":
    main()
