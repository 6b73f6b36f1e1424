"""The attribution methods' random draws, written again from their documented contract
(``docs/attribution.md``): the draws of the sample at position p come from
``numpy.random.default_rng([seed, p])`` alone, so the tests check tmx's numbers against draws
they make themselves (not against tmx's own helper)."""

from __future__ import annotations

from typing import Literal

import keras
import numpy as np


def draws(
    kind: Literal["normal", "uniform"],
    shape: tuple[int, ...],
    positions: np.ndarray,
    samples: int,
    scale: float,
    seed: int,
) -> np.ndarray:
    """``(len(positions), samples, *shape)`` float32: N(0, scale²) drawn in float32 then
    scaled (``"normal"``), or uniform on [−scale, scale] drawn in float64 then rounded to
    float32 (``"uniform"``), from ``default_rng([seed, p])`` per position p."""
    out = []
    for p in np.asarray(positions, dtype=np.int64):
        rng = np.random.default_rng([int(seed), int(p)])
        if kind == "normal":
            eps = rng.standard_normal((samples, *shape), dtype=np.float32) * np.float32(scale)
        else:
            eps = rng.uniform(-scale, scale, size=(samples, *shape)).astype(np.float32)
        out.append(eps)
    return np.stack(out).astype(np.float32)


def gaussian_noise(
    shape: tuple[int, ...], positions: np.ndarray, samples: int, noise: float, seed: int
) -> np.ndarray:
    """The gaussian distribution of interest's draws: ``draws("normal", ...)``."""
    return draws("normal", shape, positions, samples, noise, seed)


def two_conv_cnn() -> keras.Model:
    """(8, 8, 1) → two ReLU convolutions, global average pooling and three logits, with fixed
    weights (the tiny model of the progress tests)."""
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(3, name="logits")(h)
    model = keras.Model(inp, out, name="cnn")
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()])
    return model
