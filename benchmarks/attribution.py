"""Attribution throughput against a hand-written sum-trick loop, and IG memory against steps.

Run: .venv/bin/python -m benchmarks.attribution [--repeats 3] [--n-cnn 256] [--n-mobile 4]
         [--small-n-only]

First, IG at the default ``batch_size`` on ``tmx.models.small_cnn((64, 64, 3))`` for N = 4, 16
and 64 images (``--small-n-only``: this table alone), against the same hand-written loop at the
same rows per call, the two alternating in each repeat (target ≥ 0.95 whatever N).

Models: the demo CNN (``tmx.models.small_cnn`` on 28 × 28 × 1) and a MobileNetV2-sized model
(``keras.applications.MobileNetV2(input_shape=(96, 96, 3), weights=None, classes=10)``).
Methods: integrated gradients (50 Gauss-Legendre steps, zero baseline) and SmoothGrad (20
samples, noise 0.1), target = the predicted class, ``batch_size`` = 64 rows per call.

Baseline (a), the limit on this machine: a hand-written ``tf.function`` that folds the DoI
points of a group of samples into one batch of the same size, takes one backward pass of the
summed class scores (the per-example sum trick) and reduces the points on the device;
ratio = baseline time / tmx time (≥ 0.9 is the target). Baseline (b), netlens 0.0.1 in its
own venv (``benchmarks/.venv-netlens``), runs when ``benchmarks/_netlens_runner.py`` and that
venv exist; otherwise a message says so.

Memory: the peak RSS of a fresh process running IG on the demo CNN with 50 and with 400 steps
at the same ``batch_size`` (target: within 1.2×), since tmx streams the points in fixed
batches.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from ._timing import median_seconds

BATCH = 64
STEPS = 50
SAMPLES = 20
NOISE = 0.1


def build(name: str):
    import keras

    import tmx

    if name == "demo CNN":
        return tmx.models.small_cnn((28, 28, 1), seed=0), (28, 28, 1)
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), weights=None, classes=10)
    return model, (96, 96, 3)


def padded_groups(x: np.ndarray, classes: np.ndarray, group: int):
    """(inputs, int32 classes, real rows) of consecutive groups, the last padded with zeros."""
    for s in range(0, len(x), group):
        xb, cb = x[s : s + group], classes[s : s + group].astype(np.int32)
        pad = group - len(xb)
        if pad:
            xb = np.concatenate([xb, np.zeros((pad, *x.shape[1:]), np.float32)])
            cb = np.concatenate([cb, np.zeros(pad, np.int32)])
        yield xb, cb, group - pad


def baseline_ig(model, x: np.ndarray, classes: np.ndarray, steps: int, batch: int):
    """Hand-written IG: groups of batch // steps samples, their points in one batch."""
    import tensorflow as tf

    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas = tf.constant((nodes + 1) / 2, tf.float32)
    w = tf.constant(weights / 2, tf.float32)
    group = max(1, batch // steps)
    shape = x.shape[1:]

    @tf.function(
        input_signature=[
            tf.TensorSpec((group, *shape), tf.float32),
            tf.TensorSpec((group,), tf.int32),
        ]
    )
    def step(xb, cb):
        z = alphas[None, :, None, None, None] * xb[:, None]
        z = tf.reshape(z, (-1, *shape))
        rows = tf.repeat(cb, steps)
        with tf.GradientTape() as tape:
            tape.watch(z)
            y = model(z, training=False)
            q = tf.reduce_sum(tf.gather(y, rows, axis=1, batch_dims=1))
        g = tf.reshape(tape.gradient(q, z), (group, steps, *shape))
        return tf.reduce_sum(g * w[None, :, None, None, None], axis=1) * xb

    def run():
        return np.concatenate(
            [step(xb, cb).numpy()[:real] for xb, cb, real in padded_groups(x, classes, group)]
        )

    return run


def baseline_smoothgrad(model, x: np.ndarray, classes: np.ndarray, samples: int, batch: int):
    import tensorflow as tf

    group = max(1, batch // samples)
    shape = x.shape[1:]
    rng = np.random.default_rng(0)

    @tf.function(
        input_signature=[
            tf.TensorSpec((group, samples, *shape), tf.float32),
            tf.TensorSpec((group,), tf.int32),
        ]
    )
    def step(zb, cb):
        z = tf.reshape(zb, (-1, *shape))
        rows = tf.repeat(cb, samples)
        with tf.GradientTape() as tape:
            tape.watch(z)
            y = model(z, training=False)
            q = tf.reduce_sum(tf.gather(y, rows, axis=1, batch_dims=1))
        return tf.reduce_mean(tf.reshape(tape.gradient(q, z), (group, samples, *shape)), axis=1)

    def run():
        out = []
        for xb, cb, real in padded_groups(x, classes, group):
            noisy = xb[:, None] + rng.normal(0, NOISE, (group, samples, *shape)).astype(np.float32)
            out.append(step(noisy, cb).numpy()[:real])
        return np.concatenate(out)

    return run


def memory_child(steps: int) -> None:
    """Child process: IG on the demo CNN, then print the peak RSS in MiB."""
    from tmx import attribution as A

    model, shape = build("demo CNN")
    x = np.random.default_rng(0).normal(size=(64, *shape)).astype(np.float32)
    A.integrated_gradients(model, x, 0, steps=steps, batch_size=BATCH)
    print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_netlens(keep: dict, repeats: int) -> dict | None:
    """Seconds of netlens 0.0.1 per (model, method), run by its own venv; None if absent."""
    import tempfile

    here = os.path.dirname(os.path.abspath(__file__))
    runner = os.path.join(here, "_netlens_runner.py")
    python = os.path.join(here, ".venv-netlens", "bin", "python")
    if not os.path.exists(python):
        return None
    with tempfile.TemporaryDirectory(prefix="tmx-netlens-") as work:
        models = []
        for k, (name, (model, shape, x, classes)) in enumerate(keep.items()):
            np.savez(os.path.join(work, f"w{k}.npz"), *model.get_weights())
            np.save(os.path.join(work, f"x{k}.npy"), x)
            np.save(os.path.join(work, f"t{k}.npy"), classes.astype(np.int64))
            models.append(
                {
                    "name": f"m{k}",
                    "builder": "small_cnn" if name == "demo CNN" else "mobilenetv2",
                    "input_shape": list(shape),
                    "classes": 10,
                    "weights": f"w{k}.npz",
                    "x": f"x{k}.npy",
                    "targets": f"t{k}.npy",
                }
            )
        spec = {
            "models": models,
            "ig_steps": STEPS,
            "smooth_samples": SAMPLES,
            "noise": NOISE,
            "repeats": repeats,
            "batch_size": 4,
        }
        with open(os.path.join(work, "spec.json"), "w") as fh:
            json.dump(spec, fh)
        subprocess.run([python, runner, work], capture_output=True, text=True, check=True)
        with open(os.path.join(work, "result.json")) as fh:
            result = json.load(fh)
    names = list(keep)
    out = {}
    for k, name in enumerate(names):
        seconds = (
            result["models"][f"m{k}"]["seconds"]
            if "models" in result
            else result[f"m{k}"]["seconds"]
        )
        out[(name, "integrated gradients")] = seconds["integrated_gradients"]
        out[(name, "SmoothGrad")] = seconds["smoothgrad"]
    return out


def measure(A, name: str, n: int, repeats: int, keep: dict) -> list[tuple]:
    """(model, method, N, tmx s, loop s, points/s) rows for one model."""
    model, shape = build(name)
    x = np.random.default_rng(1).normal(size=(n, *shape)).astype(np.float32)
    classes = np.argmax(np.asarray(model(x, training=False)), axis=1)
    keep[name] = (model, shape, x, classes)

    def tmx_ig():
        return A.integrated_gradients(model, x, classes, steps=STEPS, batch_size=BATCH)

    def tmx_sg():
        return A.smoothgrad(model, x, classes, samples=SAMPLES, noise=NOISE, batch_size=BATCH)

    base_ig = baseline_ig(model, x, classes, STEPS, BATCH)
    base_sg = baseline_smoothgrad(model, x, classes, SAMPLES, BATCH)
    np.testing.assert_allclose(tmx_ig().values, base_ig(), rtol=1e-3, atol=1e-4)
    rows = []
    for method, t_fn, b_fn, points in (
        ("integrated gradients (50 steps)", tmx_ig, base_ig, STEPS),
        ("SmoothGrad (20 samples)", tmx_sg, base_sg, SAMPLES),
    ):
        t = median_seconds(t_fn, repeats)
        b = median_seconds(b_fn, repeats)
        rows.append((name, method, n, t, b, n * points / t))
    return rows


def measure_small_n(A, ns: tuple[int, ...], repeats: int) -> tuple[list[tuple], int]:
    """IG at the default ``batch_size`` on a small CNN at 64 × 64 × 3 for each N, against the
    hand-written loop at the same rows per call; tmx and the loop alternate in each repeat.
    ((N, tmx s, loop s) rows, the default batch_size)."""
    import inspect

    import tmx

    default = inspect.signature(A.integrated_gradients).parameters["batch_size"].default
    model = tmx.models.small_cnn((64, 64, 3), seed=0)
    rows = []
    for n in ns:
        x = np.random.default_rng(2).normal(size=(n, 64, 64, 3)).astype(np.float32)
        classes = np.argmax(np.asarray(model(x, training=False)), axis=1)

        def tmx_ig(x=x, classes=classes):
            return A.integrated_gradients(model, x, classes, steps=STEPS)

        base = baseline_ig(model, x, classes, STEPS, default)
        np.testing.assert_allclose(tmx_ig().values, base(), rtol=1e-3, atol=1e-4)
        t_runs, b_runs = [], []
        for _ in range(max(3, repeats)):
            t_runs.append(median_seconds(tmx_ig, 1, warmup=False))
            b_runs.append(median_seconds(base, 1, warmup=False))
        rows.append((n, float(np.median(t_runs)), float(np.median(b_runs))))
    return rows, default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-cnn", type=int, default=256)
    parser.add_argument("--n-mobile", type=int, default=4)
    parser.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--small-n-only",
        action="store_true",
        help="only IG at the default batch_size on 64x64x3 inputs, N = 4, 16, 64",
    )
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    from tmx import attribution as A

    start = time.perf_counter()
    small, default = measure_small_n(A, (4, 16, 64), args.repeats)
    print(
        f"IG (50 steps) on small_cnn 64x64x3, default batch_size {default} for tmx and the "
        f"loop; medians of {max(3, args.repeats)} alternating runs; ratio = loop / tmx time "
        "(tmx throughput / loop throughput, target >= 0.95)"
    )
    print(f"{'N':>4s} {'tmx s':>8s} {'loop s':>8s} {'ratio':>6s}  met")
    for n, t, b in small:
        print(f"{n:4d} {t:8.3f} {b:8.3f} {b / t:6.2f}  {'yes' if b / t >= 0.95 else 'NO'}")
    if args.small_n_only:
        print(f"total wall time {time.perf_counter() - start:.0f} s")
        return
    rows = []
    keep: dict = {}
    for name, n in (("demo CNN", args.n_cnn), ("MobileNetV2 96x96", args.n_mobile)):
        rows += measure(A, name, n, args.repeats, keep)
    print(
        f"attributions, batch_size {BATCH} rows; medians of {args.repeats}; "
        f"{os.cpu_count()} CPU cores; ratio = hand-written loop / tmx (target >= 0.9)"
    )
    head = ("model", "method", "N", "tmx s", "loop s", "ratio", "points/s")
    print("{:18s} {:32s} {:>4s} {:>8s} {:>8s} {:>6s} {:>9s}".format(*head))
    for name, method, n, t, b, thr in rows:
        print(f"{name:18s} {method:32s} {n:4d} {t:8.2f} {b:8.2f} {b / t:6.2f} {thr:9.0f}")
    peaks = {}
    for steps in (50, 400):
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.attribution", "--memory-child", str(steps)],
            capture_output=True,
            text=True,
            check=True,
        )
        peaks[steps] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]
    print(
        f"IG peak RSS, 64 samples, batch_size {BATCH}: 50 steps {peaks[50]:.0f} MiB, "
        f"400 steps {peaks[400]:.0f} MiB, ratio {peaks[400] / peaks[50]:.2f} (target <= 1.2)"
    )
    netlens = run_netlens(keep, args.repeats)
    if netlens is None:
        print(
            "netlens 0.0.1 not found in benchmarks/.venv-netlens: baseline (b) skipped (create "
            "it: python3 -m venv benchmarks/.venv-netlens && benchmarks/.venv-netlens/bin/pip "
            'install netlens==0.0.1 "tensorflow-cpu==2.15.*" "numpy<2")'
        )
    else:
        print(
            "baseline (b): netlens 0.0.1 (TF 2.15, eager), same weights and inputs; "
            "ratio = netlens / tmx (target >= 10)"
        )
        tmx_s = {(r[0], r[1].split(" (")[0]): r[3] for r in rows}
        for (name, method), sec in netlens.items():
            t = tmx_s[(name, method)]
            print(
                f"  {name:18s} {method:22s} netlens {sec:8.2f} s  tmx {t:6.2f} s  "
                f"ratio {sec / t:6.1f}"
            )
    print(f"total wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
