"""Regenerate ``tests/data/gyoza_flow_reference.npz``: gyoza 0.3.0's flow model forward numbers.

Not a module of the tmx benchmarks package: run it with the gyoza venv's python (gyoza needs
Python ≥ 3.12, so it lives in its own git-ignored venv), from the repository root:

    /root/.pyenv/versions/3.12.1/bin/python -m venv benchmarks/.venv-gyoza
    benchmarks/.venv-gyoza/bin/pip install gyoza==0.3.0 tensorflow-cpu
    benchmarks/.venv-gyoza/bin/python benchmarks/_gyoza_reference.py

It builds gyoza's disentangling flow model for flat vectors (the layer sequence of gyoza's
"Getting Started" tutorial: an activation normalisation, then per stage a reflection, two
additive couplings with a checkerboard mask and ``Dense(4N, relu) → Dense(N)`` networks, each
followed by a checkerboard permutation, and a closing activation normalisation), replaces its
identity/zero parameters by seeded random ones (so that no part of the comparison is vacuous,
with unit-norm reflection normals, where gyoza is correct), and records, per configuration
``d{N}``: the input batch ``x``, gyoza's outputs ``y`` and log-determinants ``logdet``, gyoza's
inverse ``x_inverse`` of ``y``, each layer's class name and weights (``layerII_class``,
``layerII_wJ`` in gyoza's ``get_weights`` order), and gyoza's mask and permutation vectors.
``tests/test_flows_layers.py`` loads these weights into ``tmx.flows.flow(N, preset="gyoza")``.
"""

from __future__ import annotations

import os
import random
import sys
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np
import tensorflow as tf
from gyoza.modelling import flow_layers as gfl
from gyoza.modelling import masks as gm

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "gyoza_flow_reference.npz"
CONFIGS = ((6, 2), (5, 2))  # (units N, stages)
BATCH = 8


def build(n: int, stages: int) -> gfl.FlowModel:
    """gyoza's tutorial flow model on flat vectors of ``n`` units."""
    layers = [gfl.ActivationNormalization(axes=[1], shape=[n])]
    for _ in range(stages):
        layers.append(gfl.Reflection(axes=[1], shape=[n], reflection_count=1))
        for _ in range(2):
            network = tf.keras.Sequential(
                [
                    tf.keras.layers.Dense(units=4 * n, activation="relu"),
                    tf.keras.layers.Dense(units=n, activation=None),
                ]
            )
            layers.append(
                gfl.AdditiveCoupling(
                    axes=[1],
                    shape=[n],
                    compute_coupling_parameters=network,
                    mask=gm.CheckerBoardMask(axes=[1], shape=[n]),
                )
            )
            layers.append(gfl.CheckerBoardPermutation(axes=[1], shape=[n]))
        layers.append(gfl.ActivationNormalization(axes=[1], shape=[n]))
    model = gfl.FlowModel(flow_layers=layers)
    model.build(input_shape=[BATCH, n])
    return model


def perturb(model: gfl.FlowModel, rng: np.random.Generator) -> None:
    """Seeded non-trivial parameters: random locations, positive scales, biases, unit normals."""
    for layer in model._flow_layers_:
        if isinstance(layer, gfl.ActivationNormalization):
            loc, scale = layer.get_weights()
            layer.set_weights(
                [
                    rng.normal(0.0, 0.5, loc.shape).astype(np.float32),
                    np.exp(rng.normal(0.0, 0.3, scale.shape)).astype(np.float32),
                ]
            )
        elif isinstance(layer, gfl.Reflection):
            (v,) = layer.get_weights()
            v = rng.normal(size=v.shape)
            layer.set_weights([(v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)])
        elif isinstance(layer, gfl.AdditiveCoupling):
            weights = layer.get_weights()
            layer.set_weights(
                [
                    w + rng.normal(0.0, 0.2, w.shape).astype(np.float32) if w.ndim == 1 else w
                    for w in weights
                ]
            )


def main() -> None:
    tf.keras.utils.set_random_seed(0)
    random.seed(0)
    rng = np.random.default_rng(2020)
    arrays: dict[str, np.ndarray] = {
        "gyoza_version": np.array(version("gyoza")),
        "tensorflow_version": np.array(tf.__version__),
        "configs": np.array(CONFIGS, dtype=np.int64),
    }
    for n, stages in CONFIGS:
        model = build(n, stages)
        perturb(model, rng)
        x = (1.5 * rng.normal(size=(BATCH, n)) + 0.3).astype(np.float32)
        y, logdet = model(tf.constant(x))
        x_inverse = model.invert(y)
        key = f"d{n}"
        arrays[f"{key}_stages"] = np.array(stages)
        arrays[f"{key}_x"] = x
        arrays[f"{key}_y"] = y.numpy()
        arrays[f"{key}_logdet"] = logdet.numpy()
        arrays[f"{key}_x_inverse"] = x_inverse.numpy()
        arrays[f"{key}_mask"] = gm.CheckerBoardMask(axes=[1], shape=[n])._mask_.numpy()
        arrays[f"{key}_permutation"] = np.array(
            gfl.CheckerBoardPermutation(axes=[1], shape=[n]).get_config()["permutation"]
        )
        arrays[f"{key}_layers"] = np.array(len(model._flow_layers_))
        for i, layer in enumerate(model._flow_layers_):
            arrays[f"{key}_layer{i:02d}_class"] = np.array(type(layer).__name__)
            for j, w in enumerate(layer.get_weights()):
                arrays[f"{key}_layer{i:02d}_w{j}"] = np.asarray(w)
        err = float(np.max(np.abs(x_inverse.numpy() - x)))
        print(f"N={n} stages={stages}: |y|max={np.abs(y).max():.3f} invert error {err:.2e}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(
        f"wrote {OUT} ({OUT.stat().st_size} bytes) with gyoza {version('gyoza')}", file=sys.stderr
    )


if __name__ == "__main__":
    main()
