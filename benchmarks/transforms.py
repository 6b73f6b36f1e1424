"""Throughput of applying a transformation set to a batch.

Run: .venv/bin/python -m benchmarks.transforms

On the same N images × T rotations, compares:
- tmx ``apply_many`` inside a ``tf.function`` (how the cube's forward pass uses it),
- tmx ``apply_many`` called eagerly on numpy,
- tmx, one op over the batch tiled T times with per-image matrices (the alternative design),
- the seed's path: Keras' legacy ``apply_affine_transform`` image by image (scipy.ndimage).
Prints medians over repeats and ratios against the first row, all measured in this run.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from tmx import transforms as T
from tmx.transforms._apply import _resample, _tf_params, point_matrix

from ._timing import median_seconds


def main(n: int = 256, t: int = 16, size: int = 28) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, size, size, 1)).astype(np.float32)
    xt = tf.constant(x)
    tset = T.rotation(np.linspace(0, 360, t, endpoint=False))
    graph = tf.function(lambda b: T.apply_many(tset, b))
    params = np.stack(
        [_tf_params(np.linalg.inv(point_matrix(c[0], size, size))) for c in tset.elements]
    )

    @tf.function
    def tiled(b):
        per_image = tf.tile(tf.constant(params), [tf.shape(b)[0], 1])
        out = _resample(tf.repeat(b, t, axis=0), per_image, "bilinear", "constant", 0.0)
        return tf.reshape(out, [-1, t, size, size, 1])

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
    print(f"{'method':50s} {'seconds':>9s} {'images/s':>11s} {'ratio':>7s}")
    base = None
    for name, fn, factor in rows:
        sec = median_seconds(fn, 7) * factor
        base = base or sec
        print(f"{name:50s} {sec:9.4f} {n * t / sec:11.0f} {sec / base:7.2f}")


if __name__ == "__main__":
    main()
