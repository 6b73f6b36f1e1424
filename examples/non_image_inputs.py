"""Invariance of models whose inputs are not images: a table, sequences, token ids.

Builds three tiny untrained Keras models (no data set, no network) and measures the normalized
variance NV = TV / SV per layer (0 = invariant) under transformations that fit each input:

1. a table (N, 8) through an MLP: brightness (scaling every feature), Gaussian noise, and a
   custom transformation that masks one feature;
2. sequences (N, L, C) through a 1-D convolution: cyclic shifts in time,
   ``roll(shifts, axis="time")``, and a reversal in time, ``flip(axis=["none", "time"])``;
3. token ids (N, L), integers, through an Embedding: a custom token dropout. The ids reach the
   model as integers, never as floats;

and shows that a geometric transformation of images (a rotation) refuses the table, naming
the transformation and the table's shape.

Run: .venv/bin/python examples/non_image_inputs.py   (about 10 s on 2 cores, no network)
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quieter TensorFlow start-up

import keras
import numpy as np
import tensorflow as tf

import tmx
from tmx import transforms as T

tf.get_logger().setLevel("ERROR")  # no retracing notes
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
N, L, VOCAB = 200, 24, 50


def report(title, model, x, tset):
    cube = tmx.activations(model, x, tset)
    nv = tmx.by_layer(tmx.normalized_variance(cube))
    print(f"{title}: x {x.shape} {x.dtype}, T = {len(tset)}: {list(tset.labels)}")
    for layer, value in zip(nv["layer"].values, nv.values, strict=True):
        print(f"  {layer:10s} NV {value:6.3f}")


# 1. a table (N, features): photometric, noise and custom transformations ------------------------
table = rng.normal(size=(N, 8)).astype(np.float32)
mlp = keras.Sequential(
    [
        keras.Input((8,)),
        keras.layers.Dense(16, activation="relu", name="hidden"),
        keras.layers.Dense(3, name="logits"),
    ]
)


def mask_feature(x, feature):
    """Set one feature (column) to 0."""
    keep = 1.0 - tf.one_hot(feature, tf.shape(x)[1], dtype=x.dtype)
    return x * keep


table_set = T.union(
    T.brightness([1.0, 1.5]),
    T.gaussian_noise([0.2], seed=1),
    T.custom(mask_feature, {"feature": [0, 3]}),
)
report("table", mlp, table, table_set)

# 2. sequences (N, L, C): shifts and reversals in time ------------------------------------------
t = np.arange(L) / L
phase = rng.uniform(0, 2 * np.pi, size=(N, 1, 1))
seq = np.sin(2 * np.pi * 3 * t[None, :, None] + phase) * rng.uniform(0.5, 2, size=(N, 1, 2))
seq = seq.astype(np.float32)
conv = keras.Sequential(
    [
        keras.Input((L, 2)),
        keras.layers.Conv1D(8, 5, padding="same", activation="relu", name="conv"),
        keras.layers.GlobalAveragePooling1D(name="pool"),
        keras.layers.Dense(3, name="logits"),
    ]
)
report("sequence", conv, seq, T.roll([0, 2, 5, -4], axis="time"))
report("sequence", conv, seq, T.flip(axis=["none", "time"]))

# 3. token ids (N, L) with a custom token dropout ------------------------------------------------
tokens = rng.integers(1, VOCAB, size=(N, L)).astype(np.int32)
embed = keras.Sequential(
    [
        keras.Input((L,), dtype="int32"),
        keras.layers.Embedding(VOCAB, 8, name="embedding"),
        keras.layers.GlobalAveragePooling1D(name="pool"),
        keras.layers.Dense(3, name="logits"),
    ]
)


def token_dropout(x, rate):
    """Replace tokens by 0 (padding) where a hash of (token, position) falls below ``rate``.

    Randomness comes from the inputs, not from the batch's shape (the cube chooses and pads
    the batches), so a sample's tokens are dropped the same way in every batch.
    """
    assert x.dtype.is_integer  # the ids arrive as integers
    position = tf.range(tf.shape(x)[1], dtype=x.dtype)[None, :]
    u = tf.cast(tf.math.floormod(x * 7919 + position * 104729, 1000), tf.float32) / 1000
    return tf.where(u >= rate, x, tf.zeros_like(x))


report("tokens", embed, tokens, T.custom(token_dropout, {"rate": [0.0, 0.1, 0.3]}))

# geometric transformations of images refuse other inputs ---------------------------------------
try:
    tmx.activations(mlp, table, T.rotation(30))
except ValueError as err:
    print("rotation of a table:", str(err).split(". ")[0])
