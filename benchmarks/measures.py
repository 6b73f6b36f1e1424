"""End-to-end measures from a lazy cube against the bare forward pass, and one pass against two.

Run: .venv/bin/python -m benchmarks.measures [--n 2000] [--t 16] [--repeats 3] [--distributed]

A small CNN on 28×28 inputs (``benchmarks.cube.small_cnn``: 7 layers, 12,586 units), N = 2000
samples, T = 16 rotations; every layer recorded. Rows, medians of ``--repeats`` runs measured in
the same process, in interleaved rounds (one run of every row per round):

- **bare loop** (baseline 1, the physical limit): a compiled ``tf.function`` with a fixed batch
  that applies the same rotations (tmx's TensorFlow ops) and returns every layer's output,
  called over all N×T inputs, each output copied to host memory. No measure.
- **NV end to end**: ``tmx.normalized_variance(tmx.activations(model, x, rotations))``,
  computed (per unit; TV and SV from one pass over the cube). Target ≤ 1.3 × bare loop.
- **NVSE end to end**: ``tmx.normalized_variance(tmx.invert(cube))``, the same with every
  feature map mapped back by the inverse rotation (spatial layers only). Target ≤ 1.6 × bare
  loop.
- **two passes** (baseline 3, what the reference PyTorch library does): TV and SV as two
  computations of the same lazy cube, so the model runs twice (``tmx.transformation_variance``
  then ``tmx.sample_variance``, then their ratio). The forward batches each run needs are
  counted with ``tmx.cube.forward_runner(cube).batches``.

``--numpy-moments`` computes the block moments with numpy, the path tmx takes when numba is not
installed: the benchmark re-runs itself (the same module with the same arguments) in
a child interpreter in which ``import numba`` fails (``sys.modules["numba"] = None`` before tmx
is imported, as tests/test_fast_moments.py does), so tmx's kernels fall back to their numpy
code (the table's header says which path ran; the child checks at its end that numba is still
blocked); its output is printed as it comes. ``--distributed`` adds NV end to end on a
``dask.distributed.LocalCluster`` of 2 worker processes (1 thread each) and checks it equals the
local result.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
import xarray as xr

import tmx
from tmx import transforms as T
from tmx.cube import forward_runner

from ._timing import median_seconds
from .cube import small_cnn


def bare_loop(model, tset, x: np.ndarray, layers: list[str], batch: int):
    """A compiled transform + forward loop returning every layer's outputs on the host."""
    import keras

    t = len(tset)
    exposed = keras.Model(model.inputs, [model.get_layer(name).output for name in layers])
    spb = batch // t

    @tf.function(input_signature=[tf.TensorSpec((spb, *x.shape[1:]), tf.float32)])
    def step(xb):
        imgs = tf.reshape(
            tf.stack([T.apply(tset, xb, j) for j in range(t)], axis=1), (-1, 28, 28, 1)
        )
        return exposed(imgs, training=False)

    def run():
        pad = (-len(x)) % spb
        xp = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
        return [[o.numpy() for o in step(xp[s : s + spb])] for s in range(0, len(xp), spb)]

    return run


# the child of --numpy-moments: numba made unimportable before tmx is imported, then this module
# run as a script with the same arguments
_WITHOUT_NUMBA = """
import runpy, sys
sys.modules["numba"] = None  # import numba raises ImportError: tmx takes its numpy path
sys.argv = ["benchmarks.measures", *sys.argv[1:]]
runpy.run_module("benchmarks.measures", run_name="__main__", alter_sys=True)
"""


def numba_blocked() -> bool:
    """Whether this interpreter is the child of ``--numpy-moments`` (numba unimportable)."""
    return "numba" in sys.modules and sys.modules["numba"] is None


def moments_path() -> str:
    """Which path computes the block moments here: numba's kernel, or numpy."""
    if numba_blocked():
        return "numpy (numba not importable)"
    return "numba" if importlib.util.find_spec("numba") else "numpy (numba not installed)"


def run_without_numba(argv: list[str]) -> int:
    """Run this benchmark with ``argv`` in a child interpreter without numba; its exit status.

    Its output goes to this process's standard output and error as it comes.
    """
    root = Path(__file__).resolve().parent.parent
    sys.stdout.flush()
    return subprocess.run([sys.executable, "-c", _WITHOUT_NUMBA, *argv], cwd=root).returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--t", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--distributed", action="store_true")
    parser.add_argument(
        "--numpy-moments",
        action="store_true",
        help=(
            "the block moments in numpy, for a before/after: the benchmark re-run in a child "
            "interpreter where numba cannot be imported (tmx's path without numba)"
        ),
    )
    args = parser.parse_args()
    if args.numpy_moments and not numba_blocked():
        sys.exit(run_without_numba(sys.argv[1:]))
    start = time.perf_counter()
    n, t, batch = args.n, args.t, args.batch
    model = small_cnn()
    x = np.random.default_rng(0).normal(size=(n, 28, 28, 1)).astype(np.float32)
    tset = T.rotation(np.arange(t) * 360.0 / t)
    layers = [layer.name for layer in model.layers[1:]]

    bare = bare_loop(model, tset, x, layers, batch)
    bare()  # trace

    def cube():
        return tmx.activations(model, x, tset, layers=layers, batch_size=batch)

    def nv():
        return tmx.normalized_variance(cube()).compute()

    def nvse():
        return tmx.normalized_variance(tmx.invert(cube())).compute()

    def two_pass():
        c = cube()
        tv = tmx.transformation_variance(c).compute()
        sv = tmx.sample_variance(c).compute()
        return tv, sv

    one = nv()  # warm the compiled function
    nvse()
    tv, sv = two_pass()
    # the one-pass NV equals the ratio of the two passes (tmeasures zero_div semantics)
    ratio = xr.where((tv == 0) & (sv == 0), 1.0, tv / sv)
    np.testing.assert_allclose(one.values, ratio.values, rtol=1e-6, atol=1e-12)

    counted = cube()
    runner = forward_runner(counted)
    before = runner.batches
    tmx.normalized_variance(counted).compute()
    one_batches = runner.batches - before
    before = runner.batches
    tmx.transformation_variance(counted).compute()
    tmx.sample_variance(counted).compute()
    two_batches = runner.batches - before

    # the rows are timed in interleaved rounds (bare, NV, NVSE, two passes, then again), so
    # that a change in the machine's load during the run falls on every row alike; medians
    timed = [("bare", bare), ("nv", nv), ("nvse", nvse), ("two", two_pass)]
    times: dict[str, list[float]] = {key: [] for key, _ in timed}
    for _ in range(args.repeats):
        for key, fn in timed:
            times[key].append(median_seconds(fn, 1, warmup=False))
    med = {key: statistics.median(v) for key, v in times.items()}
    rows = [
        ("bare tf.function loop (transform + forward)", med["bare"], None),
        ("NV end to end (one pass)", med["nv"], 1.3),
        ("NVSE end to end (with inverse maps)", med["nvse"], 1.6),
        ("TV and SV in two passes (model run twice)", med["two"], None),
    ]
    if args.distributed:
        from dask.distributed import Client, LocalCluster

        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster:
            with Client(cluster):
                dist = nv()
                np.testing.assert_allclose(dist.values, one.values, rtol=1e-6, atol=0)
                rows.append(
                    (
                        "NV end to end, LocalCluster 2 processes",
                        median_seconds(nv, args.repeats, warmup=False),
                        None,
                    )
                )

    base = rows[0][1]
    units = one.sizes["unit"]
    print(
        f"small CNN 28x28, N={n}, T={t} rotations, {units} units in {len(layers)} layers "
        f"(cube {n * t * units * 4 / 2**30:.2f} GiB float32, never materialised); batch {batch}; "
        f"medians of {args.repeats}; {os.cpu_count()} CPU cores; block moments in " + moments_path()
    )
    print(f"{'what':46s} {'seconds':>8s} {'× bare':>7s} {'target':>7s}")
    for name, sec, target in rows:
        goal = "-" if target is None else f"<={target:g}"
        print(f"{name:46s} {sec:8.2f} {sec / base:7.2f} {goal:>7s}")
    print(
        f"one pass vs two passes: {rows[3][1] / rows[1][1]:.2f}× faster; forward batches "
        f"{one_batches} vs {two_batches}"
    )
    if args.distributed:
        print("distributed == local: max |difference| 0 within rtol 1e-6 (asserted)")
    misses = [name for name, sec, target in rows if target is not None and sec / base > target]
    print("targets missed: " + (", ".join(misses) if misses else "none"))
    if args.numpy_moments:
        assert numba_blocked(), "numba was importable: the moments may not be the numpy path"
    print(f"total wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
