"""Intervals of a layer value against one pass of the measure (issue 17's bootstrap row).

Run: .venv/bin/python -m benchmarks.bootstrap [--n 1000] [--t 8] [--units 5600] [--repeats 3]
     [--replicates 1000] [--skip-bc]

A cube of ``n × t × units`` float32 values (default 1000 × 8 × 5600: 171 MiB, two layers,
sparse ReLU-like units), in memory and chunked by 100 samples. Rows, medians of ``--repeats``
runs in the same process, ratio to one NV pass (``tmx.normalized_variance(cube).compute()``):

- ``bootstrap(normalized_variance, cube, n=1000, reduce="mean")`` with its defaults: the
  studentised jackknife interval (one pass: the estimate and the per-group sums). Target
  ≤ 3 × one NV pass.
- the same with ``reduce="ratio_of_means"`` (the layer value tmx reports by default).
- ``method="bc", over="sample"`` with ``n`` replicates: multiplicity-weighted sums, in as many
  passes as the replicates' sums need within the default ``memory`` (1 GiB); the former
  default, for reference (``--skip-bc`` leaves it out: it takes minutes).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import xarray as xr

import tmx

from ._timing import median_seconds


def make_cube(n: int, t: int, units: int, seed: int = 0) -> xr.DataArray:
    """Sparse, heavy-tailed ReLU-like activations over two layers, chunked by 100 samples."""
    rng = np.random.default_rng(seed)
    fire = rng.random((n, 1, units), dtype=np.float32) < np.linspace(0.05, 1, units)
    values = rng.standard_normal((n, 1, units), dtype=np.float32) + 0.5 * rng.standard_normal(
        (n, t, units), dtype=np.float32
    )
    data = np.maximum(values, 0) * fire
    half = units // 2
    coords = {
        "layer": ("unit", np.array(["conv"] * half + ["dense"] * (units - half))),
        "channel": ("unit", np.arange(units) % 16),
        "y": ("unit", np.where(np.arange(units) < half, np.arange(units) % 7, -1)),
        "x": ("unit", np.where(np.arange(units) < half, np.arange(units) % 5, -1)),
    }
    cube = xr.DataArray(data, dims=("sample", "transformation", "unit"), coords=coords)
    return cube.chunk({"sample": 100})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--t", type=int, default=8)
    parser.add_argument("--units", type=int, default=5600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--skip-bc", action="store_true")
    args = parser.parse_args(argv)

    cube = make_cube(args.n, args.t, args.units)
    print(f"cube {dict(cube.sizes)}: {cube.nbytes / 2**20:.0f} MiB float32, chunks of 100 samples")
    nv = tmx.normalized_variance
    one = median_seconds(lambda: nv(cube).compute(), args.repeats)
    rows = [("one NV pass (baseline)", one)]
    rows.append(
        (
            'bootstrap(nv, reduce="mean"), default (jackknife)',
            median_seconds(lambda: tmx.bootstrap(nv, cube, reduce="mean"), args.repeats),
        )
    )
    rows.append(
        (
            'bootstrap(nv, reduce="ratio_of_means"), default',
            median_seconds(lambda: tmx.bootstrap(nv, cube, reduce="ratio_of_means"), args.repeats),
        )
    )
    if not args.skip_bc:
        out = {}

        def bc():
            out["r"] = tmx.bootstrap(
                nv, cube, n=args.replicates, method="bc", over="sample", reduce="mean"
            )

        seconds = median_seconds(bc, 1, warmup=False)
        rows.append(
            (f'method="bc", n={args.replicates} ({out["r"].attrs["passes"]} passes)', seconds)
        )
    print(f"{'what':58s} {'seconds':>9s} {'× one NV pass':>14s}")
    for name, seconds in rows:
        print(f"{name:58s} {seconds:9.2f} {seconds / one:14.2f}")


if __name__ == "__main__":
    main()
