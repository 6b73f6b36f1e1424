"""Throughput of applying a transformation set to a batch.

Run: .venv/bin/python -m benchmarks.transforms

On the same N images × T rotations, compares:
- tmx ``apply_many`` inside a ``tf.function`` (how the cube's forward pass uses it),
- tmx ``apply_many`` called eagerly on numpy,
- one op over the batch tiled T times with per-image matrices (the alternative design): the
  batch repeated T times through one TensorFlow ``ImageProjectiveTransformV3`` (bilinear,
  constant fill 0, as ``rotation``'s defaults) with per-image 8-parameter output→input
  transforms, built here from the public ``tmx.transforms.point_matrix`` of each rotation; the
  op tmx resamples with, so the same kind of work; its output is checked against ``apply_many``
  (the max difference is printed),
- the seed's path: Keras' legacy ``apply_affine_transform`` image by image (scipy.ndimage).
Prints medians over repeats and ratios against the first row, all measured in this run.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from tmx import transforms as T

from ._timing import median_seconds


def projective_params(op: Any, size: int) -> np.ndarray:
    """The 8 parameters of ``ImageProjectiveTransformV3`` for one rotation of a square image.

    ``point_matrix`` maps an input point to the output; the op wants the output→input matrix
    (its inverse), normalised to a last entry of 1, as its first 8 entries.
    """
    m = np.linalg.inv(T.point_matrix(op, size, size))
    return (m / m[2, 2]).reshape(-1)[:8].astype(np.float32)


def main(n: int = 256, t: int = 16, size: int = 28) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, size, size, 1)).astype(np.float32)
    xt = tf.constant(x)
    tset = T.rotation(np.linspace(0, 360, t, endpoint=False))
    graph = tf.function(lambda b: T.apply_many(tset, b))
    params = tf.constant(np.stack([projective_params(chain[0], size) for chain in tset.elements]))

    @tf.function
    def tiled(b):
        per_image = tf.tile(params, [tf.shape(b)[0], 1])
        out = tf.raw_ops.ImageProjectiveTransformV3(
            images=tf.repeat(b, t, axis=0),
            transforms=per_image,
            output_shape=tf.constant([size, size], tf.int32),
            fill_value=tf.constant(0.0, tf.float32),
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        )
        return tf.reshape(out, [-1, t, size, size, 1])

    diff = np.abs(tiled(xt).numpy() - np.asarray(T.apply_many(tset, x))).max()

    rows = [
        ("tmx apply_many in tf.function", lambda: graph(xt).numpy(), 1),
        ("tmx apply_many, eager on numpy", lambda: T.apply_many(tset, x), 1),
        ("one op over the batch tiled T times", lambda: tiled(xt).numpy(), 1),
    ]
    try:
        from keras.src.legacy.preprocessing.image import apply_affine_transform

        sub = x[: max(1, n // 8)]
        angles = tset.parameters["angle"].values

        def seed_path():
            return [
                [
                    apply_affine_transform(i, theta=a, row_axis=0, col_axis=1, channel_axis=2)
                    for a in angles
                ]
                for i in sub
            ]

        rows.append(("seed: keras apply_affine_transform (on N/8, ×8)", seed_path, n / len(sub)))
    except ImportError:
        print("(keras legacy preprocessing not available: seed row skipped)")
    print(f"N={n} images of {size}x{size}, T={t} rotations; medians of 7 runs")
    print(f"one op over the tiled batch vs apply_many: max |difference| {diff:.2e}")
    print(f"{'method':50s} {'seconds':>9s} {'images/s':>11s} {'ratio':>7s}")
    base = None
    for name, fn, factor in rows:
        sec = median_seconds(fn, 7) * factor
        base = base or sec
        print(f"{name:50s} {sec:9.4f} {n * t / sec:11.0f} {sec / base:7.2f}")


if __name__ == "__main__":
    main()
