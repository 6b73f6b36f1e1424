"""Per-channel distances (all pairs) against ``scipy.spatial.distance.pdist`` per channel.

Run: .venv/bin/python -m benchmarks.distances [--n 200] [--t 16] [--repeats 5] [--threads 0]

One conv layer, 14 × 14 maps × 16 channels (the small CNN's ``conv2``, 3,136 units), N = 200
samples, T = 16 transformations, float32 ReLU activations (some channels mostly dead: many
all-zero maps), as an in-memory cube. Baseline, the reference library's way: for every
transformation and channel, ``pdist`` over the N maps of that channel (float64, each map divided
by its L2 norm first for ``normalize=True``) and its mean; the mean over transformations is
SD. ND adds TD the same way (for every sample and channel, ``pdist`` over the T maps). Both
metrics, ``normalize`` off and on.

Each repeat times the baseline and tmx back to back; the table gives the medians of
``--repeats`` runs and baseline / tmx (target ≥ 2). Every tmx result is checked against the
baseline's numbers (rtol 1e-9) before timing. ``--threads k`` limits BLAS to k threads (0: its
default; ``pdist`` is single-threaded either way).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import xarray as xr
from scipy.spatial.distance import pdist
from threadpoolctl import threadpool_limits

from tmx.measures.distance import normalized_distance, sample_distance

H, W, C = 14, 14, 16
TARGET = 2.0


def conv_layer(n: int, t: int, seed: int = 0) -> np.ndarray:
    """(N, T, H, W, C) float32 ReLU maps: a sample and a transformation effect plus noise, with
    per-channel biases from strongly active to mostly dead."""
    rng = np.random.default_rng(seed)
    bias = np.linspace(-3.5, 1.0, C)
    pre = (
        rng.normal(size=(n, 1, H, W, C))
        + 0.5 * rng.normal(size=(1, t, H, W, C))
        + 0.3 * rng.normal(size=(n, t, H, W, C))
        + bias
    )
    return np.maximum(pre, 0.0).astype(np.float32)


def as_cube(a: np.ndarray) -> xr.DataArray:
    n, t = a.shape[:2]
    ys, xs, cs = (g.ravel() for g in np.meshgrid(range(H), range(W), range(C), indexing="ij"))
    return xr.DataArray(
        a.reshape(n, t, -1),
        dims=("sample", "transformation", "unit"),
        coords={
            "layer": ("unit", np.full(len(cs), "conv2")),
            "channel": ("unit", cs),
            "y": ("unit", ys),
            "x": ("unit", xs),
        },
    )


def pdist_mean(maps: np.ndarray, metric: str, normalize: bool) -> float:
    """Mean ``pdist`` distance of the maps (n, h, w). Cosine: pdist gives NaN for a zero map;
    tmx's convention (0 between two zero maps, 1 between a zero and a non-zero map) is added
    for those pairs, and pdist runs on the non-zero maps only."""
    v = maps.reshape(len(maps), -1).astype(np.float64)
    n = len(v)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if normalize:
        v = v / np.where(norms == 0, 1.0, norms)
    if metric == "cosine":
        nonzero = norms[:, 0] > 0
        m = int(nonzero.sum())
        total = pdist(v[nonzero], metric).sum() + (n - m) * m
        return float(total / (n * (n - 1) / 2))
    return float(pdist(v, metric).mean())


def reference_sd(a: np.ndarray, metric: str, normalize: bool) -> np.ndarray:
    t = a.shape[1]
    return np.array(
        [
            np.mean([pdist_mean(a[:, j, ..., c], metric, normalize) for j in range(t)])
            for c in range(C)
        ]
    )


def reference_td(a: np.ndarray, metric: str, normalize: bool) -> np.ndarray:
    n = a.shape[0]
    return np.array(
        [
            np.mean([pdist_mean(a[i, :, ..., c], metric, normalize) for i in range(n)])
            for c in range(C)
        ]
    )


def reference_nd(a: np.ndarray, metric: str, normalize: bool) -> np.ndarray:
    return reference_td(a, metric, normalize) / reference_sd(a, metric, normalize)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--t", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    a = conv_layer(args.n, args.t)
    cube = as_cube(a)
    dead = float((~a.reshape(args.n, args.t, -1, C).any(axis=2)).mean())
    limits = threadpool_limits(args.threads) if args.threads else None
    rows = []
    for metric in ("euclidean", "cosine"):
        for normalize in (False, True):
            opts = {"per": "channel", "metric": metric, "normalize": normalize}
            cases = [
                ("SD", lambda o=opts: sample_distance(cube, **o).values, reference_sd),
                ("ND", lambda o=opts: normalized_distance(cube, **o).values, reference_nd),
            ]
            for what, ours, ref in cases:
                _, mine = timed(ours)  # warm-up, and the check
                _, theirs = timed(lambda r=ref, m=metric, z=normalize: r(a, m, z))
                np.testing.assert_allclose(mine, theirs, rtol=1e-9, atol=0)
                t_ref, t_tmx = [], []
                for _ in range(args.repeats):
                    t_ref.append(timed(lambda r=ref, m=metric, z=normalize: r(a, m, z))[0])
                    t_tmx.append(timed(ours)[0])
                rows.append(
                    (what, metric, normalize, statistics.median(t_ref), statistics.median(t_tmx))
                )
    if limits is not None:
        limits.restore_original_limits()
    threads = args.threads or "default"
    print(
        f"conv layer {H}x{W}x{C} ({H * W * C} units), N={args.n}, T={args.t}, float32, "
        f"{dead:.0%} of the maps all zero; in-memory cube; medians of {args.repeats}; "
        f"BLAS threads: {threads}; {os.cpu_count()} CPU cores"
    )
    head = f"{'what':4s} {'metric':9s} {'normalize':9s} {'pdist s':>8s} {'tmx s':>7s}"
    print(f"{head} {'pdist/tmx':>9s}")
    for what, metric, normalize, t_ref, t_tmx in rows:
        print(
            f"{what:4s} {metric:9s} {normalize!s:9s} {t_ref:8.3f} {t_tmx:7.3f} {t_ref / t_tmx:9.2f}"
        )
    misses = [f"{r[0]} {r[1]} normalize={r[2]}" for r in rows if r[3] / r[4] < TARGET]
    print(f"target >= {TARGET:g}x missed: " + (", ".join(misses) if misses else "none"))
    print(f"total wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
