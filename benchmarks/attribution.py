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

Then the methods of issue 20 (``--methods-only``: this table alone) on the demo CNN, each
against a direct TensorFlow implementation of its definition in the same run (the same rows
per call): ``noise_tunnel(saliency)`` and ``gradient_shap`` (20 draws), ``layer_conductance``
at ``dense`` (50 Gauss-Legendre steps, a forward-mode JVP), ``guided_backprop`` and
``guided_grad_cam`` (a hand-written forward with a custom-gradient ReLU).

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


def _direct_small_cnn(model, guided: bool):
    """A hand-written TensorFlow forward of ``tmx.models.small_cnn`` (ReLUs plain or guided),
    returning (logits, conv2 maps)."""
    import tensorflow as tf

    @tf.custom_gradient
    def guided_relu(t):
        def grad(dy):
            return tf.nn.relu(dy) * tf.cast(t > 0, dy.dtype)

        return tf.nn.relu(t), grad

    relu = guided_relu if guided else tf.nn.relu
    (k1, b1), (k2, b2), (wd, bd), (wo, bo) = (
        [tf.constant(w) for w in model.get_layer(n).get_weights()]
        for n in ("conv1", "conv2", "dense", "logits")
    )

    def forward(x):
        h = tf.nn.max_pool2d(relu(tf.nn.conv2d(x, k1, 1, "SAME") + b1), 2, 2, "VALID")
        maps = relu(tf.nn.conv2d(h, k2, 1, "SAME") + b2)
        h = tf.reshape(tf.nn.max_pool2d(maps, 2, 2, "VALID"), (tf.shape(x)[0], -1))
        return relu(h @ wd + bd) @ wo + bo, maps

    return forward


def measure_new_methods(A, n: int, repeats: int) -> list[tuple]:
    """(method, tmx s, direct s) for the methods of issue 20 on the demo CNN (28 × 28 × 1),
    each against a direct TensorFlow implementation of its definition, alternating."""
    import keras
    import tensorflow as tf

    import tmx

    model = tmx.models.small_cnn((28, 28, 1), seed=0)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 28, 28, 1)).astype(np.float32)
    refs = rng.normal(size=(8, 28, 28, 1)).astype(np.float32)
    classes = np.argmax(np.asarray(model(x, training=False)), axis=1).astype(np.int32)
    shape = (28, 28, 1)
    S = SAMPLES

    def batched(step, rows_per_sample, *arrays):
        group = max(1, BATCH // rows_per_sample)
        out = []
        for a in range(0, n, group):
            out.append(step(*(arr[a : a + group] for arr in arrays)).numpy())
        return np.concatenate(out)

    @tf.function(reduce_retracing=True)
    def nt_step(xb, cb):
        z = tf.reshape(xb[:, None] + tf.random.normal((tf.shape(xb)[0], S, *shape), 0, NOISE),
                       (-1, *shape))  # fmt: skip
        with tf.GradientTape() as tape:
            tape.watch(z)
            y = model(z, training=False)
            q = tf.reduce_sum(tf.gather(y, tf.repeat(cb, S), axis=1, batch_dims=1))
        g = tf.abs(tape.gradient(q, z))
        return tf.reduce_mean(tf.reshape(g, (-1, S, *shape)), axis=1)

    refs_t = tf.constant(refs)

    @tf.function(reduce_retracing=True)
    def shap_step(xb, cb):
        rows = tf.shape(xb)[0] * S
        b = tf.gather(refs_t, tf.random.uniform((rows,), 0, refs.shape[0], tf.int32))
        al = tf.random.uniform((rows, 1, 1, 1))
        xt = tf.reshape(tf.repeat(xb[:, None], S, axis=1), (-1, *shape))
        z = b + al * (xt - b)
        with tf.GradientTape() as tape:
            tape.watch(z)
            y = model(z, training=False)
            q = tf.reduce_sum(tf.gather(y, tf.repeat(cb, S), axis=1, batch_dims=1))
        g = tape.gradient(q, z) * (xt - b)
        return tf.reduce_mean(tf.reshape(g, (-1, S, *shape)), axis=1)

    head = keras.Model(model.inputs, model.get_layer("dense").output)
    logits = model.get_layer("logits")
    nodes, weights = np.polynomial.legendre.leggauss(STEPS)
    al_c = tf.constant(((nodes + 1) / 2).astype(np.float32))
    w_c = tf.constant((weights / 2).astype(np.float32))

    @tf.function(reduce_retracing=True)
    def cond_step(xb, cb):
        z = tf.reshape(al_c[None, :, None, None, None] * xb[:, None], (-1, *shape))
        d = tf.reshape(tf.repeat(xb[:, None], STEPS, axis=1), (-1, *shape))
        with tf.autodiff.ForwardAccumulator(z, d) as acc:
            h = head(z, training=False)
        dh = acc.jvp(h)
        with tf.GradientTape() as tape:
            tape.watch(h)
            q = tf.reduce_sum(tf.gather(logits(h), tf.repeat(cb, STEPS), axis=1, batch_dims=1))
        c = tf.reshape(tape.gradient(q, h) * dh, (-1, STEPS, h.shape[-1]))
        return tf.reduce_sum(c * w_c[None, :, None], axis=1)

    guided_fwd = _direct_small_cnn(model, guided=True)
    plain_fwd = _direct_small_cnn(model, guided=False)

    @tf.function(reduce_retracing=True)
    def guided_step(xb, cb):
        with tf.GradientTape() as tape:
            tape.watch(xb)
            y, _ = guided_fwd(xb)
            q = tf.reduce_sum(tf.gather(y, cb, axis=1, batch_dims=1))
        return tape.gradient(q, xb)

    @tf.function(reduce_retracing=True)
    def ggc_step(xb, cb):
        with tf.GradientTape() as tape:
            tape.watch(xb)
            y, maps = plain_fwd(xb)
            q = tf.reduce_sum(tf.gather(y, cb, axis=1, batch_dims=1))
        g = tape.gradient(q, maps)
        cam = tf.nn.relu(tf.reduce_sum(tf.reduce_mean(g, (1, 2), keepdims=True) * maps, -1))
        up = tf.image.resize(cam[..., None], shape[:2])
        return guided_step(xb, cb) * up

    cases = [
        ("noise_tunnel(saliency), 20 samples",
         lambda: A.noise_tunnel(A.saliency, model, x, classes, samples=S, noise=NOISE),
         lambda: batched(nt_step, S, x, classes)),
        ("gradient_shap, 20 samples",
         lambda: A.gradient_shap(model, x, classes, baselines=refs, samples=S),
         lambda: batched(shap_step, S, x, classes)),
        ("layer_conductance(dense), 50 steps",
         lambda: A.layer_conductance(model, x, classes, layer="dense", steps=STEPS),
         lambda: batched(cond_step, STEPS, x, classes)),
        ("guided_backprop",
         lambda: A.guided_backprop(model, x, classes),
         lambda: batched(guided_step, 1, x, classes)),
        ("guided_grad_cam(conv2)",
         lambda: A.guided_grad_cam(model, x, classes, layer="conv2"),
         lambda: batched(ggc_step, 1, x, classes)),
    ]  # fmt: skip
    # the deterministic methods agree with their direct implementations
    np.testing.assert_allclose(cases[2][1]().values, cases[2][2](), rtol=2e-3, atol=1e-4)
    np.testing.assert_allclose(cases[3][1]().values, cases[3][2](), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(cases[4][1]().values, cases[4][2](), rtol=1e-3, atol=1e-6)
    rows = []
    for name, t_fn, d_fn in cases:
        t_fn(), d_fn()
        t_runs, d_runs = [], []
        for _ in range(max(3, repeats)):
            t_runs.append(median_seconds(t_fn, 1, warmup=False))
            d_runs.append(median_seconds(d_fn, 1, warmup=False))
        rows.append((name, float(np.median(t_runs)), float(np.median(d_runs))))
    return rows


def print_new_methods(A, n: int, repeats: int) -> None:
    rows = measure_new_methods(A, n, repeats)
    print(
        f"issue-20 methods on small_cnn 28x28x1, N = {n}, batch_size {BATCH}; medians of "
        f"{max(3, repeats)} alternating runs; ratio = direct TF / tmx time"
    )
    print(f"{'method':38s} {'tmx s':>8s} {'direct s':>9s} {'ratio':>6s}")
    for name, t, d in rows:
        print(f"{name:38s} {t:8.3f} {d:9.3f} {d / t:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-cnn", type=int, default=256)
    parser.add_argument("--n-mobile", type=int, default=4)
    parser.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--methods-only",
        action="store_true",
        help="only the issue-20 methods against direct TensorFlow implementations",
    )
    parser.add_argument("--n-methods", type=int, default=32)
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
    if args.methods_only:
        print_new_methods(A, args.n_methods, args.repeats)
        print(f"total wall time {time.perf_counter() - start:.0f} s")
        return
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
    print_new_methods(A, args.n_methods, args.repeats)
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
