"""gyoza 0.3.0 side of ``benchmarks/flows.py``; run by the gyoza venv's python.

Not a module of the tmx benchmarks package: ``benchmarks/flows.py`` executes this file with
``benchmarks/.venv-gyoza/bin/python`` (Python 3.12, gyoza 0.3.0 on the same TensorFlow/Keras
versions as tmx's venv, no tmx) as

    python _gyoza_runner.py WORKDIR

``WORKDIR/spec.json``::

    {
      "units": 64,              # D
      "blocks": 4,              # repetitions of the block below
      "hidden": 128,            # width of the coupling networks' one hidden ReLU layer
      "reflections": 2,         # Householder reflections per block
      "batch_size": 256,        # training and forward/inverse batches
      "epochs": 4,              # epochs per timed training run (the first one is not timed)
      "repeats": 3,             # timed forward/inverse passes
      "train_runs": 1,          # training runs (a fresh model each; default "repeats")
      "learning_rate": 0.001,   # Adam
      "dimensions": [..],       # factor sizes, residual first (SupervisedFactorLoss)
      "data": "data.npz",       # a, b: float32 (pairs, D); rho: float32 (pairs, factors);
                                # x: float32 (rows, D) for forward/inverse
      "seed": 0,
      "threads": 1              # TF intra-/inter-op threads (0: TF's defaults)
    }

Prints (and writes ``WORKDIR/result.json``) a JSON object: ``versions``; ``epoch_seconds`` (per
training run, every epoch's wall time from a Keras callback); ``train_seconds`` (the median over
runs of the median epoch time without the first epoch, which traces the train function);
``forward_seconds`` / ``inverse_seconds`` (median over ``repeats`` of one pass over ``x`` in
batches, each batch's result fetched to numpy, after one untimed warm-up pass);
``inverse_compiled`` (whether ``FlowModel.invert`` could be wrapped in ``tf.function``; gyoza
documents it as eager-only, and it is timed eagerly otherwise); ``invert_error`` (max |x −
invert(model(x))| over the first batch); ``reported_loss`` (what gyoza's ``fit`` reports per
epoch: 0.0 on Keras 3, since its loss tracker is never updated); ``parameters``; ``layers``.

The model is gyoza's ``DisentanglingFlowModel`` with, per block, the layer sequence of tmx's
default ``flow`` (the closest gyoza allows)::

    ActivationNormalization → AdditiveCoupling(checkerboard mask) → CheckerBoardPermutation
        → AdditiveCoupling(checkerboard mask) → Reflection(reflection_count)

with coupling networks ``Dense(hidden, relu) → Dense(D)`` (gyoza feeds the full masked vector
``m ⊙ x`` of D entries and keeps the outputs at the transformed positions, so its networks are
``D → hidden → D`` where tmx's are ``D/2 → hidden → D/2``), trained with Keras ``fit`` on
``((a, b), rho)`` and ``SupervisedFactorLoss(dimensions)`` (float32), Adam, shuffled batches
(Keras's ``jit_compile="auto"`` means no XLA on a CPU-only machine). gyoza
0.3.0 has no usable affine coupling (its ``AffineCoupling`` is commented out), no data-dependent
ActNorm initialisation, and ``ActivationNormalization``/``Reflection`` weights carry constraints
(a clip, a unit norm) that Keras applies after every step.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np
import tensorflow as tf
from gyoza.modelling import flow_layers as gfl
from gyoza.modelling import losses as gl
from gyoza.modelling import masks as gm


def build(spec: dict) -> gfl.DisentanglingFlowModel:
    n, hidden = int(spec["units"]), int(spec["hidden"])
    layers = []
    for _ in range(int(spec["blocks"])):
        layers.append(gfl.ActivationNormalization(axes=[1], shape=[n]))
        for k in range(2):
            network = tf.keras.Sequential(
                [
                    tf.keras.layers.Dense(units=hidden, activation="relu"),
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
            if k == 0:
                layers.append(gfl.CheckerBoardPermutation(axes=[1], shape=[n]))
        layers.append(
            gfl.Reflection(axes=[1], shape=[n], reflection_count=int(spec["reflections"]))
        )
    model = gfl.DisentanglingFlowModel(flow_layers=layers)
    model.build(input_shape=[None, n])
    return model


class EpochTimer(tf.keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def passes(fn, x: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate(
        [np.asarray(fn(tf.constant(x[s : s + batch]))) for s in range(0, len(x), batch)]
    )


def timed(fn, repeats: int) -> list[float]:
    fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    work = Path(sys.argv[1])
    spec = json.loads((work / "spec.json").read_text())
    threads = int(spec.get("threads", 0))
    if threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    data = np.load(work / spec["data"])
    a, b, rho, x = data["a"], data["b"], data["rho"], data["x"]
    seed = int(spec.get("seed", 0))
    batch, epochs, repeats = int(spec["batch_size"]), int(spec["epochs"]), int(spec["repeats"])

    epoch_seconds, reported = [], []
    model = None
    for r in range(int(spec.get("train_runs", repeats))):
        tf.keras.utils.set_random_seed(seed + r)
        random.seed(seed + r)
        model = build(spec)
        model.compile(
            optimizer=tf.keras.optimizers.Adam(learning_rate=float(spec["learning_rate"])),
            loss=gl.SupervisedFactorLoss(dimensions_per_factor=list(spec["dimensions"])),
        )
        timer = EpochTimer()
        history = model.fit(
            x=(a, b),
            y=rho,
            batch_size=batch,
            epochs=epochs,
            shuffle=True,
            verbose=0,
            callbacks=[timer],
        )
        epoch_seconds.append(timer.seconds)
        reported.append([float(v) for v in history.history.get("loss", [])])
    train = statistics.median(statistics.median(s[1:] if len(s) > 1 else s) for s in epoch_seconds)

    spec_x = tf.TensorSpec([None, x.shape[1]], tf.float32)
    forward = tf.function(lambda t: model(t)[0], input_signature=[spec_x])
    try:
        inverse = tf.function(model.invert, input_signature=[spec_x])
        inverse(tf.constant(x[:batch]))
        compiled = True
    except Exception:  # gyoza documents invert as eager-only
        inverse, compiled = model.invert, False
    forward_times = timed(lambda: passes(forward, x, batch), repeats)
    y = passes(forward, x, batch)
    inverse_times = timed(lambda: passes(inverse, y, batch), repeats)
    back = np.asarray(inverse(tf.constant(y[:batch])))
    result = {
        "versions": {
            "gyoza": version("gyoza"),
            "tensorflow": tf.__version__,
            "keras": tf.keras.__version__,
            "python": sys.version.split()[0],
        },
        "epoch_seconds": epoch_seconds,
        "train_seconds": train,
        "train_pairs": len(a),
        "forward_seconds": statistics.median(forward_times),
        "inverse_seconds": statistics.median(inverse_times),
        "forward_times": forward_times,
        "inverse_times": inverse_times,
        "inverse_compiled": compiled,
        "rows": len(x),
        "invert_error": float(np.max(np.abs(back - x[:batch]))),
        "reported_loss": reported,
        "parameters": int(sum(int(np.prod(v.shape)) for v in model.trainable_variables)),
        "layers": [type(layer).__name__ for layer in model._flow_layers_],
    }
    text = json.dumps(result)
    (work / "result.json").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
