"""Cost of the lazy cube against the bare forward pass, and save throughput.

Run: .venv/bin/python -m benchmarks.cube [--n 1024] [--repeats 3]

A small CNN on 28×28 inputs, T = 16 rotations, N = 1024 samples, every layer recorded.
Baselines, measured in the same run:
- "bare loop": a compiled ``tf.function`` with a fixed batch of 256 images that applies the same
  rotations (tmx's TensorFlow ops) and returns the same layer outputs, called over all N×T
  inputs, each output copied to host memory. This is what the cube cannot beat.
- "bare loop, pre-transformed": the same without the transformations (inputs rotated before).
Rows: the full cube computed chunk by chunk into a preallocated array (``dask.array.store``),
the same with ``.values`` (adds dask's final concatenation), and ``tmx.save`` to Zarr (compute +
write); save throughput is the cube's uncompressed float32 bytes over the save time, also given
for writing an already computed cube.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dask.array as da
import keras
import numpy as np
import tensorflow as tf
import xarray as xr

import tmx
from tmx import transforms as T

from ._timing import median_seconds


def small_cnn() -> keras.Model:
    inp = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.MaxPooling2D(name="pool1")(h)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.MaxPooling2D(name="pool2")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(32, activation="relu", name="dense")(h)
    out = keras.layers.Dense(10, name="logits")(h)
    return keras.Model(inp, out, name="small_cnn")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n, repeats, batch = args.n, args.repeats, 256
    model = small_cnn()
    x = np.random.default_rng(0).normal(size=(n, 28, 28, 1)).astype(np.float32)
    tset = T.rotation(np.arange(16) * 22.5)
    t = len(tset)
    layers = [layer.name for layer in model.layers[1:]]
    exposed = keras.Model(model.inputs, [model.get_layer(name).output for name in layers])
    spb = batch // t

    @tf.function(input_signature=[tf.TensorSpec((spb, 28, 28, 1), tf.float32)])
    def bare(xb):
        imgs = tf.reshape(
            tf.stack([T.apply(tset, xb, j) for j in range(t)], axis=1), (-1, 28, 28, 1)
        )
        return exposed(imgs, training=False)

    @tf.function(input_signature=[tf.TensorSpec((batch, 28, 28, 1), tf.float32)])
    def bare_pre(imgs):
        return exposed(imgs, training=False)

    pre = T.apply_many(tset, x).reshape(n * t, 28, 28, 1)

    def run_bare():
        return [[o.numpy() for o in bare(x[s : s + spb])] for s in range(0, n, spb)]

    def run_bare_pre():
        return [[o.numpy() for o in bare_pre(pre[s : s + batch])] for s in range(0, n * t, batch)]

    run_bare()
    run_bare_pre()  # trace
    cube = tmx.activations(model, x, tset, layers=layers, batch_size=batch)
    nbytes = cube.size * 4
    out = np.empty(cube.shape, np.float32)

    def run_store():
        da.store(cube.data, out, lock=False)

    run_store()  # trace the cube's compiled function once

    rows = [
        (
            "bare tf.function loop (transform + forward)",
            median_seconds(run_bare, repeats, warmup=False),
        ),
        ("bare loop, pre-transformed inputs", median_seconds(run_bare_pre, repeats, warmup=False)),
        ("tmx cube, chunks stored into an array", median_seconds(run_store, repeats, warmup=False)),
        ("tmx cube, .values", median_seconds(lambda: cube.values, repeats, warmup=False)),
    ]

    tmp = tempfile.mkdtemp(prefix="tmx-bench-")
    try:
        path = os.path.join(tmp, "cube.zarr")

        def run_save():
            tmx.save(cube, path, overwrite=True)

        save_s = median_seconds(run_save, repeats, warmup=False)
        rows.append(("tmx.save (compute + write Zarr)", save_s))
        computed = xr.DataArray(
            out, dims=cube.dims, coords=cube.coords, name=cube.name, attrs=cube.attrs
        ).chunk(dict(zip(cube.dims, cube.data.chunksize, strict=True)))
        write_s = median_seconds(
            lambda: tmx.save(computed, path, overwrite=True), repeats, warmup=False
        )
        rows.append(("tmx.save of a computed cube (write only)", write_s))
        reopened = tmx.open(path)
        np.testing.assert_array_equal(reopened.values, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    base = rows[0][1]
    print(
        f"small CNN 28x28, N={n}, T={t} rotations, {cube.sizes['unit']} units, "
        f"cube {nbytes / 2**20:.0f} MiB float32; medians of {repeats}"
    )
    print(f"{'what':48s} {'seconds':>8s} {'ratio':>7s} {'MB/s':>8s}")
    for name, sec in rows:
        print(f"{name:48s} {sec:8.3f} {sec / base:7.2f} {nbytes / 1e6 / sec:8.0f}")
    print(f"compute ratio (store into array / bare loop): {rows[2][1] / base:.2f}  (target <= 1.3)")
    print(
        f"save throughput: {nbytes / 1e6 / save_s:.0f} MB/s end to end, "
        f"{nbytes / 1e6 / write_s:.0f} MB/s write only  (target >= 150)"
    )


if __name__ == "__main__":
    main()
