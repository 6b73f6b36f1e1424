"""netlens 0.0.1 side of ``benchmarks/attribution.py``; run by the netlens venv's python.

Not a module of the tmx benchmarks package: ``benchmarks/attribution.py`` executes this file with
``benchmarks/.venv-netlens/bin/python`` (netlens 0.0.1 on tensorflow-cpu 2.15 / tf.keras 2, no
tmx) as

    python _netlens_runner.py WORKDIR

``WORKDIR/spec.json`` (relative file names are relative to WORKDIR)::

    {
      "models": [
        {"name": "demo_cnn",                # used in the output file names
         "builder": "small_cnn",            # "small_cnn" (tmx.models.small_cnn) | "mobilenetv2"
         "input_shape": [16, 16, 1],        # (height, width, channels)
         "classes": 10,
         "weights": "demo_cnn.npz",         # np.savez(f, *keras3_model.get_weights())
         "x": "demo_cnn_x.npy",             # float32 (n, h, w, c); optional if "x" is top-level
         "targets": "demo_cnn_t.npy",       # optional int (n,); default: argmax of the outputs
         "classifier_activation": "softmax"}  # mobilenetv2 only, as in keras.applications
                                            # (default "softmax": probabilities; null: logits)
      ],
      "x": "x.npy",                         # optional shared inputs for models without "x"
      "ig_steps": 50,                       # LinearDoi resolution (zero baseline)
      "smooth_samples": 20,                 # GaussianDoi resolution
      "noise": 0.1,                         # SmoothGrad noise *standard deviation* (var = noise**2)
      "repeats": 3,                         # timed runs; the median is reported
      "warmup": 1,                          # untimed runs first (default 1)
      "batch_size": 0,                      # inputs per netlens attributions() call (0: all);
                                            # netlens evaluates resolution * batch rows at once
      "check_rows": 8,                      # rows of outputs_<name>.npy (default 8)
      "threads": 0,                         # TF intra/inter-op threads (0: TF default)
      "seed": 0,                            # np.random seed (GaussianDoi draws with np.random)
      "methods": ["integrated_gradients", "smoothgrad"]   # optional subset
    }

Writes into WORKDIR:

- ``outputs_<name>.npy``: the rebuilt tf.keras model's logits for the first ``check_rows`` inputs
  (compare with the Keras 3 model's to check the weights were loaded in the right order);
- ``targets_<name>.npy``: the classes attributed (given, or the predicted classes);
- ``ig_<name>.npy`` / ``smoothgrad_<name>.npy``: the first input's attributions, (h, w, c);
- ``result.json`` (also printed on stdout): ``versions`` and, per model name, ``seconds``
  (method -> median seconds for all the model's inputs), ``times`` (every timed run), ``n``,
  ``n_weights``, ``ig_completeness`` (sum of the first input's IG attributions vs
  f(x)[t] - f(0)[t]) and the file names above.

netlens's computations, as used here (read from netlens 0.0.1's source):

- IG: ``InputAttribution(wrapper, OutputCut(), qoi, LinearDoi(None, ig_steps))`` with
  ``multiply_activation=True`` -- what ``netlens.attribution.IntegratedGradients`` builds, except
  that its QoI is ``'max'`` (``MaxClassQoI``: the max logit of *each interpolated point*), while
  here the QoI is the logit of a fixed class per input (the predicted class of x), like tmx's.
  LinearDoi puts ``ig_steps`` equally spaced points on [x, 0] endpoints included, equal weights
  (not Gauss-Legendre); the attribution is x * mean(gradients).
- SmoothGrad: ``InternalInfluence(wrapper, (InputCut(), OutputCut()), qoi,
  GaussianDoi(noise**2, smooth_samples), multiply_activation=False)``: the mean gradient over
  x + N(0, noise^2) (GaussianDoi takes a variance; its numpy path draws float64 noise).
- netlens 0.0.1 with the 'tensorflow' backend on TF 2 uses ``Tensorflow2ModelWrapper``: it runs
  the model eagerly (layer ``call`` hooks, no tf.function) on all resolution * batch rows at once.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import warnings
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("NETLENS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import netlens
import numpy as np
import tensorflow as tf

netlens.initialize_backend("tensorflow")

from netlens.attribution import InputAttribution, InternalInfluence  # noqa: E402
from netlens.distributions import GaussianDoi, LinearDoi  # noqa: E402
from netlens.models import ModelWrapper  # noqa: E402
from netlens.quantities import QoI  # noqa: E402
from netlens.slices import InputCut, OutputCut  # noqa: E402

keras = tf.keras


class TargetQoI(QoI):
    """The logit of a fixed class per input.

    netlens concatenates the DoI points as [point 0 of every input, point 1 of every input, ...],
    so row r of the QoI batch belongs to input r % batch; ``set`` the batch's classes first.
    """

    def __init__(self) -> None:
        self._targets = np.zeros(0, np.int32)

    def set(self, targets: np.ndarray) -> None:
        self._targets = np.asarray(targets, np.int32)

    def __call__(self, y):
        reps = int(y.shape[0]) // len(self._targets)
        idx = tf.constant(np.tile(self._targets, reps)[:, None])
        return tf.gather(y, idx, axis=1, batch_dims=1)[:, 0]


def small_cnn(input_shape, n_classes: int) -> keras.Model:
    """tmx.models.small_cnn's architecture in tf.keras 2 (same layer names and weight order)."""
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = keras.layers.MaxPooling2D(2, name="pool1")(h)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.MaxPooling2D(2, name="pool2")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(32, activation="relu", name="dense")(h)
    outputs = keras.layers.Dense(n_classes, name="logits")(h)
    return keras.Model(inputs, outputs, name="small_cnn")


def build(spec: dict) -> keras.Model:
    if spec["builder"] == "small_cnn":
        return small_cnn(spec["input_shape"], int(spec["classes"]))
    if spec["builder"] == "mobilenetv2":
        return keras.applications.MobileNetV2(
            input_shape=tuple(spec["input_shape"]),
            weights=None,
            classes=int(spec["classes"]),
            classifier_activation=spec.get("classifier_activation", "softmax"),
        )
    raise ValueError(f"unknown builder {spec['builder']!r}")


def load_weights(model: keras.Model, path: Path) -> int:
    with np.load(path) as f:
        arrays = [f[f"arr_{i}"] for i in range(len(f.files))]
    mine = model.get_weights()
    if len(arrays) != len(mine):
        raise ValueError(f"{path.name}: {len(arrays)} arrays, the tf.keras model has {len(mine)}")
    bad = [
        (i, a.shape, b.shape)
        for i, (a, b) in enumerate(zip(arrays, mine, strict=True))
        if a.shape != b.shape
    ]
    if bad:
        raise ValueError(f"{path.name}: shape mismatches (index, npz, tf.keras): {bad[:5]}")
    model.set_weights(arrays)
    return len(arrays)


def predict(model: keras.Model, x: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate(
        [model(x[i : i + batch], training=False).numpy() for i in range(0, len(x), batch)]
    )


def median_seconds(fn, repeats: int, warmup: int) -> tuple[float, list[float], object]:
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, out


def main() -> None:
    work = Path(sys.argv[1])
    opts = json.loads((work / "spec.json").read_text())
    warnings.simplefilter("ignore")
    tf.get_logger().setLevel("ERROR")
    threads = int(opts.get("threads", 0))
    if threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    steps = int(opts.get("ig_steps", 50))
    samples = int(opts.get("smooth_samples", 20))
    noise = float(opts.get("noise", 0.1))
    repeats = int(opts.get("repeats", 3))
    warmup = int(opts.get("warmup", 1))
    batch_opt = int(opts.get("batch_size", 0))
    check_rows = int(opts.get("check_rows", 8))
    seed = int(opts.get("seed", 0))
    methods = list(opts.get("methods", ["integrated_gradients", "smoothgrad"]))

    result: dict = {
        "versions": {
            "netlens": version("netlens"),
            "tensorflow": tf.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
        "settings": {
            "ig_steps": steps,
            "smooth_samples": samples,
            "noise": noise,
            "repeats": repeats,
            "warmup": warmup,
            "batch_size": batch_opt,
            "threads": threads,
        },
        "models": {},
    }
    for spec in opts["models"]:
        name = spec["name"]
        tf.keras.backend.clear_session()
        model = build(spec)
        n_weights = load_weights(model, work / spec["weights"])
        x = np.load(work / spec.get("x", opts.get("x"))).astype(np.float32)
        logits = predict(model, x)
        np.save(work / f"outputs_{name}.npy", logits[:check_rows])
        if spec.get("targets"):
            targets = np.load(work / spec["targets"]).astype(np.int32)
        else:
            targets = logits.argmax(axis=1).astype(np.int32)
        np.save(work / f"targets_{name}.npy", targets)

        wrapper = ModelWrapper(model)
        qoi = TargetQoI()
        batch = len(x) if batch_opt <= 0 else batch_opt
        chunks = [(x[i : i + batch], targets[i : i + batch]) for i in range(0, len(x), batch)]

        def run_all(method, chunks=chunks, qoi=qoi):
            def fn():
                outs = []
                for xb, tb in chunks:
                    qoi.set(tb)
                    outs.append(np.asarray(method.attributions(xb)))
                return np.concatenate(outs)

            return fn

        entry: dict = {
            "n": len(x),
            "n_weights": n_weights,
            "seconds": {},
            "times": {},
            "outputs": f"outputs_{name}.npy",
            "targets": f"targets_{name}.npy",
        }
        if "integrated_gradients" in methods:
            ig = InputAttribution(
                wrapper, OutputCut(), qoi, LinearDoi(None, steps), multiply_activation=True
            )
            sec, times, attr = median_seconds(run_all(ig), repeats, warmup)
            entry["seconds"]["integrated_gradients"] = sec
            entry["times"]["integrated_gradients"] = times
            np.save(work / f"ig_{name}.npy", attr[0])
            entry["ig"] = f"ig_{name}.npy"
            t0 = int(targets[0])
            f0 = predict(model, np.zeros_like(x[:1]))[0, t0]
            entry["ig_completeness"] = {
                "sum_attribution": float(attr[0].sum()),
                "f_x_minus_f_0": float(logits[0, t0] - f0),
            }
        if "smoothgrad" in methods:
            np.random.seed(seed)  # noqa: NPY002 - netlens's GaussianDoi draws from np.random
            sg = InternalInfluence(
                wrapper,
                (InputCut(), OutputCut()),
                qoi,
                GaussianDoi(noise**2, samples),
                multiply_activation=False,
            )
            sec, times, attr = median_seconds(run_all(sg), repeats, warmup)
            entry["seconds"]["smoothgrad"] = sec
            entry["times"]["smoothgrad"] = times
            np.save(work / f"smoothgrad_{name}.npy", attr[0])
            entry["smoothgrad"] = f"smoothgrad_{name}.npy"
        result["models"][name] = entry
        print(f"{name}: {entry['seconds']}", file=sys.stderr, flush=True)

    (work / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
