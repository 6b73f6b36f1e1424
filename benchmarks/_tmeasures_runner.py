"""The seed package's side of ``benchmarks.seed_package``; runs in the seed's own environment.

Usage (done by ``benchmarks.seed_package``, not by hand):
    benchmarks/.venv-tmeasures/bin/python benchmarks/_tmeasures_runner.py IN.npz OUT.npz

This file is executed by the Python of ``benchmarks/.venv-tmeasures`` (TensorFlow 2.15 with
Keras 2 as ``tf.keras``, numpy < 2, ``transformational-measures-tf`` 0.72a0); it imports nothing
from tmx. ``IN.npz`` holds the model weights, the pre-transformed inputs (N, T, H, W, C) and the
settings; ``OUT.npz`` receives the seed's per-layer and per-unit values, its timings, the
outputs of the rebuilt model on the check images and the library versions.

The inputs reach the seed through ``PreTransformed``, a ``TransformationsDataSet`` whose
``get_matrix`` indexes the array (rows = samples, columns = transformations, swapped after the
seed's in-place ``transpose``), so the seed computes on exactly the images tmx sees.
``apply_inverse_transformation`` (a method of the seed's data set API) undoes quarter turns
exactly with ``np.rot90``: the seed's own ``AffineTransformation.apply_inverse`` is not a
correct inverse under this TensorFlow (see ``inverse_check`` below and the benchmark's docstring).
"""

from __future__ import annotations

import json
import os
import sys
import time
from importlib.metadata import version

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TQDM_DISABLE", "1")  # the seed's Iterator wraps its batches in tqdm

import keras
import numpy as np
import scipy
import tensorflow as tf
import transformational_measures_tf as tm

tf.keras.utils.disable_interactive_logging()  # no progress bar per Model.predict call

LAYERS = ("conv1", "pool1", "conv2", "pool2", "flatten", "dense", "logits")


class PreTransformed(tm.TransformationsDataSet):
    """A (samples × transformations) data set over an already transformed array."""

    def __init__(self, pre: np.ndarray, quarter_turns: np.ndarray | None = None) -> None:
        self.pre = pre
        self.height, self.width = int(pre.shape[0]), int(pre.shape[1])
        self.matrix_transpose = False
        self.quarter_turns = quarter_turns

    def get_data_shape(self):
        return self.pre.shape

    def get_width(self):
        return self.width

    def get_height(self):
        return self.height

    def get_matrix(self, rows, columns):
        rows, columns = np.asarray(rows), np.asarray(columns)
        if not self.matrix_transpose:
            block = self.pre[rows][:, columns]
        else:  # rows are transformations, columns samples
            block = self.pre[columns][:, rows].swapaxes(0, 1)
        return tf.convert_to_tensor(block)

    def transpose(self):
        self.matrix_transpose = not self.matrix_transpose
        self.height, self.width = self.width, self.height

    def is_transpose(self):
        return self.matrix_transpose

    def get_testing_data(self):
        raise NotImplementedError

    def apply_inverse_transformation(self, tensor, index_transformation):
        # the seed calls this on one (h, w) feature map at a time; rot90 by -k undoes rot90(k)
        return np.rot90(np.asarray(tensor), -int(self.quarter_turns[index_transformation]))

    def get_size_transformations_groups(self):
        return 1

    def set_transformation_group(self, group, n):
        raise NotImplementedError


def build_model(weights: dict[str, list[np.ndarray]], input_shape, n_classes: int):
    """tmx.models.small_cnn's architecture in tf.keras (Keras 2), as a Sequential model: the
    seed's Model reads ``layer.output.name`` up to its '/', which an InputLayer lacks."""
    k = tf.keras.layers
    model = tf.keras.Sequential(
        [
            tf.keras.Input(tuple(input_shape)),
            k.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
            k.MaxPooling2D(2, name="pool1"),
            k.Conv2D(16, 3, padding="same", activation="relu", name="conv2"),
            k.MaxPooling2D(2, name="pool2"),
            k.Flatten(name="flatten"),
            k.Dense(32, activation="relu", name="dense"),
            k.Dense(n_classes, name="logits"),
        ]
    )
    for layer in model.layers:
        if layer.name in weights:
            layer.set_weights(weights[layer.name])
    return model


def timed(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, times


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    data = np.load(src, allow_pickle=False)
    cfg = json.loads(str(data["config"]))
    threads = int(cfg["threads"])
    if threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    weights: dict[str, list[np.ndarray]] = {}
    for key in data.files:
        if key.startswith("w/"):
            _, layer, idx = key.split("/")
            weights.setdefault(layer, []).append((int(idx), data[key]))
    weights = {name: [w for _, w in sorted(ws)] for name, ws in weights.items()}
    keras_model = build_model(weights, cfg["input_shape"], cfg["n_classes"])
    model = tm.Model(keras_model, None)
    assert model.layers_names == list(LAYERS), model.layers_names
    out: dict[str, np.ndarray] = {}

    # the rebuilt model on the check images, every layer, for the caller to compare
    check = model.model_layers.predict(data["check_x"], batch_size=64)
    for name, arr in zip(LAYERS, check, strict=True):
        out[f"check/{name}"] = arr
    # warm up Keras' predict function outside the timings
    model.model_layers.predict(data["check_x"][:32], batch_size=32)

    height, width = cfg["block"]
    repeats = int(cfg["repeats"])
    times: dict[str, list[float]] = {}

    if "nv_pre" in data.files:
        pre = data["nv_pre"]
        n_nv = int(cfg["n_nv"])
        pre = pre[:n_nv]

        def run_nv():
            measure = tm.NormalizedVariance(tm.Iterator(model, PreTransformed(pre)))
            measure.compute(height, width)
            return measure

        nv, times["nv"] = timed(run_nv, repeats)
        out["nv/layers"] = np.array([float(v) for v in nv.variance_layers])
        for name, arr in zip(LAYERS, nv.variance_layers_activations, strict=True):
            out[f"nv/units/{name}"] = np.asarray(arr).reshape(-1)

    if "se_pre" in data.files:
        pre = data["se_pre"][: int(cfg["n_se"])]
        turns = data["se_quarter_turns"]

        def run_se():
            dataset = PreTransformed(pre, turns)
            measure = tm.SameEquivariance(tm.Iterator(model, dataset), dataset)
            measure.compute(height, width)
            return measure

        se, times["se"] = timed(run_se, repeats)
        out["se/layers"] = np.array([float(np.mean(f)) for f in se.variance_layers_features])
        structure = model.model_structure
        for k in structure.map_layers_features:
            out[f"se/units/{LAYERS[k]}"] = np.asarray(se.variance_layers_activations[k]).reshape(-1)
        out["se/features"] = np.concatenate(
            [np.asarray([float(v) for v in f]) for f in se.variance_layers_features]
        )

        if cfg.get("nse"):

            def run_nse():
                dataset = PreTransformed(pre, turns)
                measure = tm.NormalizedSameEquivariance(tm.Iterator(model, dataset), dataset)
                measure.compute(height, width)
                return measure

            nse, times["nse"] = timed(run_nse, repeats)
            out["nse/layers"] = np.array([float(v) for v in nse.variance_layers])

        # the seed's own inverse (AffineTransformation.apply_inverse) on a feature map, against
        # the exact inverse of the same quarter turn: how far it is from undoing it
        fmap = np.random.default_rng(0).normal(size=(14, 14)).astype(np.float32)
        diffs = []
        for k in range(4):
            seed_inv = tm.AffineTransformation(theta=90 * k).apply_inverse(tf.constant(fmap))
            diffs.append(float(np.abs(np.asarray(seed_inv) - np.rot90(fmap, -k)).max()))
        out["inverse_check"] = np.array(diffs)

    out["times"] = np.array(json.dumps(times))
    out["versions"] = np.array(
        json.dumps(
            {
                "python": sys.version.split()[0],
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "numpy": np.__version__,
                "scipy": scipy.__version__,
                "transformational-measures-tf": version("transformational-measures-tf"),
            }
        )
    )
    np.savez(dst, **out)


if __name__ == "__main__":
    main()
