"""Shared helpers of the flow tests (not a test module)."""

from __future__ import annotations

import keras
import numpy as np


def perturb(model, seed: int = 0, scale: float = 0.3):
    """Give every weight of a flow a non-trivial random value: its couplings start as the
    identity (zero-initialised last layers), which would make Jacobian, round-trip and
    latent-space checks vacuous."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if v.name == "initialized":
            continue
        value = keras.ops.convert_to_numpy(v)
        fan_in = value.shape[0] if value.ndim == 2 and v.name == "kernel" else 1
        noise = rng.normal(0.0, scale / np.sqrt(max(fan_in, 1)), value.shape)
        v.assign((value + noise).astype(value.dtype))
    return model
