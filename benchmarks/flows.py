"""Interpretation-flow throughput: tmx.flows against a hand-written Keras loop and gyoza 0.3.0.

Run: .venv/bin/python -m benchmarks.flows [--repeats 3] [--pairs 20000] [--epochs 6]
         [--coupling additive,affine] [--threads 1] [--skip-gyoza] [--profile]
     .venv/bin/python -m benchmarks.flows --setup-gyoza   # once: create gyoza's venv

Configuration (the issue's): D = 64 units, 4 blocks, one hidden layer of 128 ReLU units per
coupling network, batch 256, Adam (learning rate 1e-3), the factor loss with gyoza's semantics.
tmx: ``tmx.flows.flow(64, blocks=4, hidden=(128,), coupling=...)``, i.e. a ``Standardize``
first layer (fixed, not trained: each unit's mean and standard deviation) then per block
``ActNorm(data) → Coupling(checkerboard) → Permute(checkerboard) → Coupling → Householder(2)``,
each coupling network ``Dense(128, relu) → Dense(32)`` (additive) or ``Dense(64)`` (affine: a
log-scale and a shift per transformed unit), on the 32-unit conditioning half.

Data: a synthetic cube (sample, transformation, unit) = (1000, ⌈pairs / 1000⌉, 64), float32,
seeded: a random linear mix of 16 sample factors, 8 transformation factors and 40 units of noise,
and ``tmx.flows.pairs(cube, by=("sample", "transformation"), n=--pairs, rho=0.975)`` drawn from
it (the real path). The factor sizes are fixed once by ``tmx.flows.factor_dimensions(pairs)``
and given to every side, so no side times the estimate.

Rows (throughputs; ratio = tmx / baseline):

- train (pairs/s): pairs trained per second of a steady epoch. tmx: one ``tmx.flows.fit(pairs,
  dimensions=dims, flow=tmx.flows.flow(...), epochs=--epochs, batch_size=256, validation=0,
  progress=False)`` per coupling kind; an epoch trains ``⌊pairs / 256⌋ · 256`` pairs (``fit``
  drops the last partial batch) and its time is the history's ``seconds`` (the training pass
  plus ``fit``'s invert check on 1024 pairs; ``validation=0`` so that no held-out loss is
  computed, which the baselines do not do either). The first epoch (tracing and graph
  optimisation of the train step, ActNorm's data initialisation) is left out: the median of
  epochs 2..E (default E = 6; the second epoch is often still slower on every side, which the
  median of five absorbs). The ``fit`` call's wall time beyond its epochs (materialising the
  pairs, building the optimizer, the history) is printed below the table; ``--profile`` also
  times a ``validation=0.1`` fit.
- forward / inverse (rows/s): medians of ``--repeats`` passes (after one untimed pass) over all
  the pairs' ``a`` rows (``--pairs`` rows) in batches of 256, each batch's (z, logdet) fetched to
  numpy; tmx: ``tf.function`` around ``flow(x)`` / ``flow.inverse(y)`` of the trained flow.
- transform / inverse vs one direct call (seconds; ratio = tmx / direct, target <= 1.5 with
  the first call, <= 1.1 on repeat calls): a cube (sample, transformation, unit) = (1000, 24,
  16) of 24,000 rows and a flow ``tmx.flows.flow(16, blocks=3, hidden=(128,))`` (ActNorm
  initialised on 256 rows, weights untrained); ``tmx.flows.transform(flow, cube).values``
  against ``flow(x)[0]`` on the same rows as one numpy array, and ``tmx.flows.inverse(flow,
  z).values`` against ``flow.inverse(z)[0]``. Each of ``--repeats`` runs makes a new Flow (a
  fresh state: nothing traced or compiled for it) and times, on it: the direct call, then the
  tmx call (the first calls), then 3 more of each, alternating (the repeat calls; their
  median); the table gives the medians over the runs (``--direct-only`` runs just these rows).
- transform (rows/s): ``tmx.flows.transform(flow, cube)`` (when it exists) on the DataArray cube
  itself (1000 · ⌈pairs / 1000⌉ rows, labelled (sample, transformation, latent) output, its
  default batch of 4096 rows), median of ``--repeats`` after a warm-up, against the plain
  loop's forward over the same rows in batches of 4096; inverse (DataArray) likewise:
  ``tmx.flows.inverse(flow, z)`` of that latent DataArray against the plain inverse.

Baseline (a), the limit: a hand-written loop with the same compute and no flow abstractions
(``PlainFlow``). The same Dense stacks (count, sizes, activations, initial weights copied from a
tmx flow built with the same seed, checked to give the same z and logdet), the same
Standardize and ActNorm,
couplings and Householder reflections, written on a fixed unit layout in which each coupling's
two halves are contiguous (split by slicing, one concat per block; the checkerboard permutation
becomes a swap of the halves and costs nothing), ActNorm initialised eagerly from the first
batch before training, the factor loss inline with the same float64 arithmetic as
``tmx.flows.factor_loss`` (ρ per dimension by one gather), Keras Adam, one ``tf.function`` train
step over in-memory numpy batches of 256 (a new permutation per epoch, full batches only, every
batch loss read back, like ``fit``). The step is compiled and dequantised as ``fit``'s is by
default (read from its signature: ``jit`` → ``jit_compile``, ``jitter`` → the same Gaussian
noise, σ = jitter × RMS of the unit standard deviations, added to a and b), so that the ratio
measures the flow and training-loop abstractions, not a compiler or a feature. Its epochs
bracket tmx's fit: E epochs before it (the first one traces) and E − 1 after it, and its
throughput is the median of those 2E − 2 steady epochs, so that a change in the machine's load
weighs on both sides (the notes also give the ratio of the fastest epochs, the least disturbed
ones). Its z is tmx's z in
the layout L (``z[:, L]``), which the forward/inverse rows leave as is. Target: tmx ≥ 0.9 × the
plain loop.

Baseline (b): gyoza 0.3.0 in its own venv (it needs Python ≥ 3.12), additive couplings only
(gyoza 0.3.0 has no affine coupling), run by ``benchmarks/_gyoza_runner.py`` after tmx's side,
on the same training pairs and rows (an .npz); its docstring lists the architecture
differences: the same layer sequence per block, but gyoza's coupling networks read the full
masked vector and write a full one (``64 → 128 → 64``, twice tmx's ``32 → 128 → 32``
multiply-adds; 133,632 weights against tmx's 67,840), no data-initialised ActNorm, float32 loss,
Keras ``fit`` (no XLA: ``jit_compile="auto"`` is off on a CPU-only machine, while tmx's ``fit``
compiles its step with XLA by default) with epoch times from a callback (first epoch left
out; Keras ``fit`` also trains the last partial batch, so an epoch is all ``--pairs`` pairs),
``tf.function`` around ``model(x)`` and ``model.invert`` (gyoza documents ``invert`` as
eager-only; it traces fine), one training run, forward/inverse medians of ``--repeats``.
gyoza's ``fit`` reports a loss of 0.0 every epoch on Keras 3 (its loss tracker is never
updated), which does not matter for timing. Ratio = tmx / gyoza (target ≥ 1).
``--setup-gyoza`` creates the venv (git-ignored) with Python 3.12 (``--python``, default pyenv's
3.12.1, or the running python if it is ≥ 3.12), pinning TensorFlow to tmx's version so both sides
run the same kernels:

    /root/.pyenv/versions/3.12.1/bin/python -m venv benchmarks/.venv-gyoza
    benchmarks/.venv-gyoza/bin/pip install gyoza==0.3.0 tensorflow-cpu==<tmx's TensorFlow>

(``--gyoza-wheel PATH`` installs a local wheel instead of the registry's; tested: gyoza 0.3.0,
TensorFlow 2.21.0, Keras 3.15.1, numpy 2.5, Python 3.12.1). Without the
venv, or with ``--skip-gyoza``, the gyoza rows are skipped with a message.

``--profile`` adds a breakdown of the training epoch (steady seconds per epoch, one run each,
sequential, so differences under ~10 % are noise): the plain loop with the other ``jit``, without
jitter and with a float32 loss (what XLA, dequantisation and float64 cost); tmx's Flow in the
plain loop's step and batching, with the inline loss and then with ``tmx.flows.factor_loss``
(what the layers and the loss function cost over the plain compute); ``fit`` with
``validation=0``, with the other ``jit``, and with ``validation=0.1`` (the default; per-epoch
held-out loss and invert check).

Threads: ``--threads 1`` (default) sets TensorFlow's intra- and inter-op pools to one thread on
every side (gyoza's too). This machine is shared: with TensorFlow's default pools (``--threads
0``) every side competes with other processes for both cores and epoch times vary by ±30 % from
one minute to the next; one thread gives repeatable ratios. ``--threads 0`` measures what a user
gets by default (both numbers are worth a look: the plain loop gains more from a second core).

Timing goes to stdout as a table (what | tmx | baseline | ratio | target) with the machine's CPU
count. Default sizes take about 3 minutes on 2 cores (``--profile`` adds about 4).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from ._timing import median_seconds

HERE = Path(__file__).resolve().parent
GYOZA_VENV = HERE / ".venv-gyoza"
GYOZA_PYTHON = GYOZA_VENV / "bin" / "python"
GYOZA_RUNNER = HERE / "_gyoza_runner.py"
PYTHON_312 = Path("/root/.pyenv/versions/3.12.1/bin/python")

D = 64
BLOCKS = 4
HIDDEN = 128
REFLECTIONS = 2
BATCH = 256
LEARNING_RATE = 1e-3
RHO = 0.975
TRANSFORM_BATCH = 4096  # tmx.flows.transform's default batch_size
CLAMP = 2.0
SAMPLES = 1000


# -- setup ---------------------------------------------------------------------------------------
def setup_gyoza(python: str, wheel: str | None = None) -> None:
    from importlib.metadata import version

    cmds = [
        [python, "-m", "venv", str(GYOZA_VENV)],
        [
            str(GYOZA_VENV / "bin" / "pip"),
            "install",
            wheel or "gyoza==0.3.0",
            f"tensorflow-cpu=={version('tensorflow-cpu')}",
        ],
    ]
    for cmd in cmds:
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    print(f"gyoza venv ready: {GYOZA_VENV} (keep it out of git)")


def gyoza_available() -> bool:
    if not GYOZA_PYTHON.exists():
        return False
    probe = subprocess.run(
        [str(GYOZA_PYTHON), "-c", "import gyoza.modelling.flow_layers"],
        capture_output=True,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return probe.returncode == 0


# -- data ----------------------------------------------------------------------------------------
def synthetic_cube(pairs: int, seed: int = 0):
    """A (sample, transformation, unit) float32 cube mixing sample and transformation factors."""
    import xarray as xr

    rng = np.random.default_rng(seed)
    n_t = max(2, -(-pairs // SAMPLES))
    f_s = rng.normal(size=(SAMPLES, 1, 16))
    g_t = rng.normal(size=(1, n_t, 8))
    noise = rng.normal(size=(SAMPLES, n_t, D - 24))
    latent = np.concatenate(
        [np.broadcast_to(f_s, (SAMPLES, n_t, 16)), np.broadcast_to(g_t, (SAMPLES, n_t, 8)), noise],
        axis=-1,
    )
    mix = rng.normal(size=(D, D)) / np.sqrt(D)
    x = (latent @ mix.T + rng.normal(0.0, 0.5, size=D)).astype(np.float32)
    return xr.DataArray(
        x,
        dims=("sample", "transformation", "unit"),
        coords={
            "sample": np.arange(SAMPLES),
            "transformation": np.arange(n_t),
            "unit": np.arange(D),
        },
        name="responses",
    )


# -- the plain loop (the limit) -----------------------------------------------------------------
class PlainFlow:
    """The compute of ``tmx.flows.flow(D, blocks, hidden=(H,), coupling)``, hand-written.

    Works on a fixed layout ``L = [even units, odd units]`` (the checkerboard mask's transformed
    half first), where a coupling's halves are slices and the checkerboard permutation is a swap
    of the halves. Weights are copied from a built (and ActNorm-initialised) tmx flow.
    """

    def __init__(self, template, coupling: str, clamp: float = CLAMP) -> None:
        import keras
        import tensorflow as tf

        from tmx.flows.layers import ActNorm, Householder, Permute, Standardize

        self.coupling = coupling
        self.clamp = clamp
        self.order = np.r_[0:D:2, 1:D:2]
        self.h = D // 2
        layers = list(template.flow_layers)
        # tmx.flows.flow's first layer (standardize=True, the default): a fixed affine map
        # by each unit's mean and standard deviation, not trained
        self.standardize = None
        if layers and isinstance(layers[0], Standardize):
            first = layers.pop(0)
            self.standardize = tuple(
                tf.constant(keras.ops.convert_to_numpy(w)[self.order])
                for w in (first.loc, first.log_scale)
            )
        if len(layers) != 5 * BLOCKS:
            raise ValueError(f"expected {5 * BLOCKS} layers; got {len(layers)}")
        self.blocks = []
        self.variables = []
        for k in range(BLOCKS):
            act, c1, perm, c2, hh = layers[5 * k : 5 * k + 5]
            assert isinstance(act, ActNorm) and isinstance(perm, Permute)
            assert isinstance(hh, Householder)
            odd = (np.arange(D) % 2).astype(np.int64)
            assert np.array_equal(c1.mask, odd) and np.array_equal(c2.mask, odd)
            assert np.array_equal(perm.indices, np.arange(D) ^ 1)
            loc = keras.ops.convert_to_numpy(act.loc)[self.order]
            log_scale = keras.ops.convert_to_numpy(act.log_scale)[self.order]
            vectors = keras.ops.convert_to_numpy(hh.vectors)[:, self.order]
            block = {
                "loc": tf.Variable(loc, name=f"loc{k}"),
                "log_scale": tf.Variable(log_scale, name=f"log_scale{k}"),
                "net1": self._copy_network(c1.network),
                "net2": self._copy_network(c2.network),
                "vectors": tf.Variable(vectors, name=f"vectors{k}"),
            }
            self.blocks.append(block)
            self.variables += [block["loc"], block["log_scale"]]
            for net in (block["net1"], block["net2"]):
                for dense in net:
                    self.variables += [dense.kernel, dense.bias]
            self.variables.append(block["vectors"])

    @staticmethod
    def _copy_network(network):
        import keras

        out = []
        width = D // 2
        for dense in network.layers:
            kernel, bias = dense.get_weights()
            copy = keras.layers.Dense(kernel.shape[1], activation=dense.activation)
            copy.build((None, width))
            copy.set_weights([kernel, bias])
            width = kernel.shape[1]
            out.append(copy)
        return out

    @staticmethod
    def _net(net, x):
        for dense in net:
            x = dense(x)
        return x

    def _couple(self, x, params, sign):
        import tensorflow as tf

        if self.coupling == "additive":
            return x + sign * params, 0.0
        s = self.clamp * tf.tanh(params[:, : self.h] / self.clamp)
        shift = params[:, self.h :]
        if sign > 0:
            return x * tf.exp(s) + shift, tf.reduce_sum(s, axis=1)
        return (x - shift) * tf.exp(-s), -tf.reduce_sum(s, axis=1)

    @staticmethod
    def _reflect(x, vectors, order):
        import tensorflow as tf

        u = vectors / tf.sqrt(tf.maximum(tf.reduce_sum(vectors * vectors, 1, keepdims=True), 1e-38))
        for r in order:
            u_r = u[r : r + 1]
            x = x - 2.0 * tf.reduce_sum(x * u_r, axis=1, keepdims=True) * u_r
        return x

    def forward(self, x):
        """z and logdet of rows ``x`` given in layout L (z in layout L)."""
        import tensorflow as tf

        logdet = tf.zeros(tf.shape(x)[:1], x.dtype)
        h = self.h
        if self.standardize is not None:
            loc, log_scale = self.standardize
            x = (x - loc) * tf.exp(-log_scale)
            logdet = logdet - tf.reduce_sum(log_scale)
        for blk in self.blocks:
            x = (x - blk["loc"]) * tf.exp(-blk["log_scale"])
            logdet = logdet - tf.reduce_sum(blk["log_scale"])
            x_t, x_c = x[:, :h], x[:, h:]
            x_t, ld1 = self._couple(x_t, self._net(blk["net1"], x_c), 1)
            x_c, ld2 = self._couple(x_c, self._net(blk["net2"], x_t), 1)
            logdet = logdet + ld1 + ld2
            x = self._reflect(tf.concat([x_c, x_t], axis=1), blk["vectors"], range(REFLECTIONS))
        return x, logdet

    def inverse(self, z):
        import tensorflow as tf

        logdet = tf.zeros(tf.shape(z)[:1], z.dtype)
        h = self.h
        for blk in reversed(self.blocks):
            z = self._reflect(z, blk["vectors"], range(REFLECTIONS - 1, -1, -1))
            x_c, x_t = z[:, :h], z[:, h:]
            x_c, ld2 = self._couple(x_c, self._net(blk["net2"], x_t), -1)
            x_t, ld1 = self._couple(x_t, self._net(blk["net1"], x_c), -1)
            z = tf.concat([x_t, x_c], axis=1) * tf.exp(blk["log_scale"]) + blk["loc"]
            logdet = logdet + ld1 + ld2 + tf.reduce_sum(blk["log_scale"])
        if self.standardize is not None:
            loc, log_scale = self.standardize
            z = z * tf.exp(log_scale) + loc
            logdet = logdet + tf.reduce_sum(log_scale)
        return z, logdet


def plain_loss(za, zb, ja, jb, rho, factor_of, dtype):
    """The gyoza-semantics factor loss (tmx.flows.factor_loss's arithmetic) in ``dtype``."""
    import tensorflow as tf

    za, zb = tf.cast(za, dtype), tf.cast(zb, dtype)
    ja, jb = tf.cast(ja, dtype), tf.cast(jb, dtype)
    r_d = tf.gather(tf.cast(rho, dtype), factor_of, axis=1)
    var_b = (1.0 - r_d) * (1.0 + r_d)
    nll = (
        0.5 * tf.reduce_sum(tf.square(za), axis=-1)
        + 0.5 * tf.reduce_sum(tf.square(zb - r_d * za) / var_b + tf.math.log(var_b), axis=-1)
        - ja
        - jb
    )
    return tf.reduce_mean(nll)


def fit_defaults() -> dict:
    """``tmx.flows.fit``'s defaults that change the step's compute (jit, jitter), if it has them."""
    import inspect

    import tmx

    params = inspect.signature(tmx.flows.fit).parameters
    return {
        "jit": bool(params["jit"].default) if "jit" in params else False,
        "jitter": float(params["jitter"].default) if "jitter" in params else 0.0,
    }


def noise_std(a: np.ndarray, jitter: float) -> float:
    """``fit``'s dequantisation noise: jitter × RMS of the unit standard deviations."""
    if not jitter:
        return 0.0
    unit_std = a[:10_000].astype(np.float64).std(axis=0)
    return float(jitter * np.sqrt(np.mean(unit_std**2))) or float(jitter)


def plain_trainer(
    model,
    dims,
    loss_dtype: str = "float64",
    *,
    tmx_flow: bool = False,
    tmx_loss: bool = False,
    jit: bool = False,
    noise: float = 0.0,
):
    """A train-epoch function over numpy arrays (a, b in the model's layout).

    ``model`` is a ``PlainFlow`` (layout L), or a tmx ``Flow`` with ``tmx_flow=True`` (natural
    order); ``tmx_loss`` uses ``tmx.flows.factor_loss`` instead of the inline loss; ``jit``
    compiles the step with XLA; ``noise`` adds ``fit``'s jitter (stateless normal draws).
    """
    import keras
    import tensorflow as tf

    import tmx

    factor_of = np.repeat(np.arange(len(dims)), dims)
    if tmx_flow:
        forward, variables = model, model.trainable_variables
    else:
        factor_of = factor_of[model.order]
        forward, variables = model.forward, model.variables
    factor_of = tf.constant(factor_of, tf.int32)
    opt = keras.optimizers.Adam(learning_rate=LEARNING_RATE)
    opt.build(variables)
    spec = tf.TensorSpec([BATCH, D], tf.float32)

    def loss_fn(za, zb, ja, jb, rho):
        if tmx_loss:
            return tmx.flows.factor_loss(za, zb, ja, jb, rho, dims)
        return plain_loss(za, zb, ja, jb, rho, factor_of, loss_dtype)

    @tf.function(
        input_signature=[
            spec,
            spec,
            tf.TensorSpec([BATCH, len(dims)], tf.float64),
            tf.TensorSpec([2], tf.int64),
        ],
        jit_compile=jit,
    )
    def step(a, b, rho, seed):
        if noise:
            scale = tf.constant(noise, tf.float32)
            a = a + scale * tf.random.stateless_normal(tf.shape(a), seed)
            b = b + scale * tf.random.stateless_normal(tf.shape(b), seed + 1)
        with tf.GradientTape() as tape:
            za, ja = forward(a)
            zb, jb = forward(b)
            loss = loss_fn(za, zb, ja, jb, rho)
        grads = tape.gradient(loss, variables)
        opt.apply(grads, variables)
        return loss

    def epoch(a, b, rho, rng):
        order = rng.permutation(len(a))
        total, count = 0.0, 0
        for s in range(0, len(a) - BATCH + 1, BATCH):  # full batches, like fit
            idx = order[s : s + BATCH]
            seed = np.array([count, 2 * s], np.int64)
            total += float(step(a[idx], b[idx], rho[idx], seed))  # fit reads every loss too
            count += 1
        return total / count

    return epoch


def time_epochs(epoch, a, b, rho, epochs: int, seed: int) -> tuple[list[float], float]:
    rng = np.random.default_rng(seed)
    seconds, loss = [], float("nan")
    for _ in range(epochs):
        start = time.perf_counter()
        loss = epoch(a, b, rho, rng)
        seconds.append(time.perf_counter() - start)
    return seconds, loss


def steady(seconds: list[float]) -> float:
    """The median epoch time without the first epoch (tracing)."""
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def passes(fn, x: np.ndarray, batch: int = BATCH) -> list:
    import tensorflow as tf

    out = []
    for s in range(0, len(x), batch):
        z, logdet = fn(tf.constant(x[s : s + batch]))
        out.append((z.numpy(), logdet.numpy()))
    return out


def compiled(fn):
    import tensorflow as tf

    return tf.function(fn, input_signature=[tf.TensorSpec([None, D], tf.float32)])


# -- one coupling kind ---------------------------------------------------------------------------
def arrays(data: dict) -> dict:
    """The pairs as numpy arrays: natural unit order and the plain loop's layout L."""
    pr = data["pairs"]
    a = np.asarray(pr["a"].values, np.float32)
    b = np.asarray(pr["b"].values, np.float32)
    order = np.r_[0:D:2, 1:D:2]
    return {
        "a": a,
        "b": b,
        "rho": np.asarray(pr["rho"].values, np.float64),
        "a_l": np.ascontiguousarray(a[:, order]),
        "b_l": np.ascontiguousarray(b[:, order]),
        "order": order,
    }


def build(coupling: str, seed: int):
    import tmx

    return tmx.flows.flow(D, blocks=BLOCKS, hidden=(HIDDEN,), coupling=coupling, seed=seed)


def plain_from(coupling: str, seed: int, first: np.ndarray) -> PlainFlow:
    """The plain model with the initial weights of tmx's flow of ``seed``, ActNorm on ``first``."""
    template = build(coupling, seed)
    template(first)
    return PlainFlow(template, coupling)


def check_plain(coupling: str, x: dict) -> tuple[float, float]:
    """max |z, logdet differences| of plain vs tmx, and the plain inverse's error."""
    import keras

    ref = build(coupling, 0)
    ref(x["a"][:BATCH])
    plain = PlainFlow(ref, coupling)
    probe, order = x["a"][-BATCH:], x["order"]
    z_ref, ld_ref = (keras.ops.convert_to_numpy(t) for t in ref(probe))
    z_pl, ld_pl = (t.numpy() for t in plain.forward(probe[:, order]))
    err = float(max(np.max(np.abs(z_ref[:, order] - z_pl)), np.max(np.abs(ld_ref - ld_pl))))
    back, _ = plain.inverse(z_pl)
    err_inv = float(np.max(np.abs(back.numpy() - probe[:, order])))
    if err > 1e-4 or err_inv > 1e-4:
        raise AssertionError(f"plain loop differs from tmx ({coupling}): {err:.2e}, {err_inv:.2e}")
    return err, err_inv


def fit_tmx(data: dict, coupling: str, epochs: int, seed: int, **options):
    """``tmx.flows.fit`` on a fresh flow: (flow, history, wall seconds of the call)."""
    import keras

    import tmx

    keras.utils.set_random_seed(seed)
    f = build(coupling, seed)
    kwargs = {"validation": 0.0, **options}
    start = time.perf_counter()
    flow, history = tmx.flows.fit(
        data["pairs"],
        dimensions=data["dims"],
        flow=f,
        epochs=epochs,
        batch_size=BATCH,
        learning_rate=LEARNING_RATE,
        seed=seed,
        progress=False,
        **kwargs,
    )
    return flow, history, time.perf_counter() - start


def measure(coupling: str, data: dict, args: argparse.Namespace) -> dict:
    """Time tmx and the plain loop for one coupling kind."""
    import tmx

    x = arrays(data)
    out: dict = {"check": check_plain(coupling, x)}
    trained = (len(x["a"]) // BATCH) * BATCH  # pairs per epoch: full batches (fit's rule)
    same = fit_defaults()  # the plain step compiles and jitters as fit's does by default
    noise = noise_std(x["a"], same["jitter"])

    # the plain loop's epochs bracket the fit (E before, E - 1 after, one trace), so that a
    # change in the machine's load during the run weighs on both sides
    plain = plain_from(coupling, 0, x["a"][:BATCH])
    epoch = plain_trainer(plain, data["dims"], jit=same["jit"], noise=noise)
    before, loss_plain = time_epochs(epoch, x["a_l"], x["b_l"], x["rho"], args.epochs, seed=0)
    flow, history, wall = fit_tmx(data, coupling, args.epochs, 0)
    tmx_epochs = [float(s) for s in history["seconds"].values]
    after, _ = time_epochs(epoch, x["a_l"], x["b_l"], x["rho"], args.epochs - 1, seed=1)
    plain_steady = before[1:] + after
    out["train"] = {
        "tmx": trained / steady(tmx_epochs),
        "plain": trained / statistics.median(plain_steady),
        "fastest": min(plain_steady) / min(tmx_epochs[1:]),
        "tmx_epochs": tmx_epochs,
        "plain_epochs": before + after,
        "fit_overhead": wall - sum(tmx_epochs),
        "losses": {"tmx": float(history["loss"].values[-1]), "plain": loss_plain},
        "same": {**same, "noise": noise},
    }

    # forward / inverse over all a rows, batches of 256
    rows = len(x["a"])
    t_fwd, t_inv = compiled(flow), compiled(flow.inverse)
    p_fwd, p_inv = compiled(plain.forward), compiled(plain.inverse)
    z_tmx = np.concatenate([z for z, _ in passes(t_fwd, x["a"])])
    z_pl = np.concatenate([z for z, _ in passes(p_fwd, x["a_l"])])
    out["forward"] = {
        "tmx": rows / median_seconds(lambda: passes(t_fwd, x["a"]), args.repeats),
        "plain": rows / median_seconds(lambda: passes(p_fwd, x["a_l"]), args.repeats),
    }
    out["inverse"] = {
        "tmx": rows / median_seconds(lambda: passes(t_inv, z_tmx), args.repeats),
        "plain": rows / median_seconds(lambda: passes(p_inv, z_pl), args.repeats),
    }

    # the labelled functions on the cube (sample, transformation, unit), when they exist
    cube = data["cube"]
    cube_rows = cube.sizes["sample"] * cube.sizes["transformation"]
    x_cube = np.ascontiguousarray(cube.values.reshape(cube_rows, D)[:, x["order"]])
    transform = getattr(tmx.flows, "transform", None)
    if transform is not None:
        out["transform"] = {
            "tmx": cube_rows
            / median_seconds(lambda: np.asarray(transform(flow, cube).values), args.repeats),
            "plain": cube_rows
            / median_seconds(lambda: passes(p_fwd, x_cube, TRANSFORM_BATCH), args.repeats),
        }
        inverse = getattr(tmx.flows, "inverse", None)
        if inverse is not None:
            z = transform(flow, cube)
            z_cube = np.concatenate([z for z, _ in passes(p_fwd, x_cube, TRANSFORM_BATCH)])
            out["inverse (DataArray)"] = {
                "tmx": cube_rows
                / median_seconds(lambda: np.asarray(inverse(flow, z).values), args.repeats),
                "plain": cube_rows
                / median_seconds(lambda: passes(p_inv, z_cube, TRANSFORM_BATCH), args.repeats),
            }
    if args.profile:
        out["profile"] = profile(coupling, data, x, args, same, noise)
    return out


def profile(
    coupling: str, data: dict, x: dict, args: argparse.Namespace, same: dict, noise: float
) -> dict:
    """(steady seconds per epoch, pairs per epoch) of variants between the plain loop and fit."""
    import inspect

    import tmx

    dims = data["dims"]
    first = x["a"][:BATCH]
    trained = (len(x["a"]) // BATCH) * BATCH
    jit = same["jit"]
    res: dict[str, tuple[float, int]] = {}

    def timed(name, epoch, a, b) -> None:
        seconds = time_epochs(epoch, a, b, x["rho"], args.epochs, seed=0)[0]
        res[name] = (steady(seconds), trained)

    def plain(**kw):
        return plain_trainer(plain_from(coupling, 0, first), dims, **kw)

    def tmx_flow():
        f = build(coupling, 0)
        f(first)
        return f

    timed(f"plain loop (the limit; jit={jit}, jitter)", plain(jit=jit, noise=noise), *in_layout(x))
    timed(f"plain loop, jit={not jit}", plain(jit=not jit, noise=noise), *in_layout(x))
    timed("plain loop, no jitter", plain(jit=jit), *in_layout(x))
    timed(
        "plain loop, float32 loss", plain(loss_dtype="float32", jit=jit, noise=noise), *in_layout(x)
    )
    f = tmx_flow()
    epoch = plain_trainer(f, dims, tmx_flow=True, jit=jit, noise=noise)
    timed("tmx Flow in the plain loop", epoch, x["a"], x["b"])
    f = tmx_flow()
    epoch = plain_trainer(f, dims, tmx_flow=True, tmx_loss=True, jit=jit, noise=noise)
    timed("tmx Flow + tmx.flows.factor_loss in the plain loop", epoch, x["a"], x["b"])
    if not jit:
        f = tmx_flow()
        epoch = plain_trainer(f, dims, tmx_flow=True, tmx_loss=True, jit=True, noise=noise)
        timed("  the same, jit=True", epoch, x["a"], x["b"])

    _, history, _ = fit_tmx(data, coupling, args.epochs, 0)
    res["tmx.flows.fit, validation=0"] = (steady(list(history["seconds"].values)), trained)
    if "jit" in inspect.signature(tmx.flows.fit).parameters:
        _, history, _ = fit_tmx(data, coupling, args.epochs, 0, jit=not jit)
        res[f"tmx.flows.fit, validation=0, jit={not jit}"] = (
            steady(list(history["seconds"].values)),
            trained,
        )
    _, history, _ = fit_tmx(data, coupling, args.epochs, 0, validation=0.1)
    n_train = int(history.attrs["n_train"])
    res["tmx.flows.fit, validation=0.1 (held-out loss each epoch)"] = (
        steady(list(history["seconds"].values)),
        (n_train // BATCH) * BATCH,
    )
    return res


def in_layout(x: dict) -> tuple[np.ndarray, np.ndarray]:
    """The pairs' a and b in the plain loop's layout L."""
    return x["a_l"], x["b_l"]


# -- transform / inverse of a DataArray against one direct call ------------------------------------
DIRECT_D, DIRECT_BLOCKS, DIRECT_SAMPLES, DIRECT_TRANSFORMATIONS = 16, 3, 1000, 24


def measure_direct(args: argparse.Namespace) -> dict:
    """Seconds of transform/inverse of a DataArray and of one direct call of the same Flow."""
    import keras
    import xarray as xr

    import tmx

    rng = np.random.default_rng(0)
    shape = (DIRECT_SAMPLES, DIRECT_TRANSFORMATIONS, DIRECT_D)
    mix = rng.normal(size=(DIRECT_D, DIRECT_D)).astype(np.float32)
    x = (rng.normal(size=(DIRECT_SAMPLES * DIRECT_TRANSFORMATIONS, DIRECT_D)) @ mix).astype(
        np.float32
    )
    cube = xr.DataArray(x.reshape(shape), dims=("sample", "transformation", "unit"))

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    runs: dict[str, list] = {k: [] for k in ("transform", "inverse")}
    for run in range(args.repeats):
        f = tmx.flows.flow(DIRECT_D, blocks=DIRECT_BLOCKS, hidden=(HIDDEN,), seed=run)
        f(x[:256])  # ActNorm's data initialisation (a fitted flow has done it)
        z_np = keras.ops.convert_to_numpy(f(x)[0])
        z = xr.DataArray(z_np.reshape(shape), dims=("sample", "transformation", "latent"))
        calls = {
            "transform": (
                lambda f=f: keras.ops.convert_to_numpy(f(x)[0]),
                lambda f=f: np.asarray(tmx.flows.transform(f, cube).values),
            ),
            "inverse": (
                lambda f=f, z_np=z_np: keras.ops.convert_to_numpy(f.inverse(z_np)[0]),
                lambda f=f, z=z: np.asarray(tmx.flows.inverse(f, z).values),
            ),
        }
        for key, (direct, labelled) in calls.items():
            first = (timed(direct), timed(labelled))
            repeat = [(timed(direct), timed(labelled)) for _ in range(3)]
            runs[key].append(
                {
                    "first": first,
                    "repeat": (
                        statistics.median(r[0] for r in repeat),
                        statistics.median(r[1] for r in repeat),
                    ),
                }
            )
    out = {}
    for key, rs in runs.items():
        for when in ("first", "repeat"):
            direct = statistics.median(r[when][0] for r in rs)
            tmx_s = statistics.median(r[when][1] for r in rs)
            ratios = [r[when][1] / r[when][0] for r in rs]
            out[(key, when)] = (tmx_s, direct, statistics.median(ratios))
    return out


def print_direct(res: dict) -> None:
    print(
        f"transform / inverse of a (sample, transformation, unit) DataArray, "
        f"{DIRECT_SAMPLES * DIRECT_TRANSFORMATIONS} rows, D = {DIRECT_D}, {DIRECT_BLOCKS} blocks, "
        f"hidden ({HIDDEN},), vs one direct call of the same Flow (seconds; ratio = tmx / direct, "
        "median of the runs' ratios)"
    )
    line = "{:44s} {:>8s} {:>8s} {:>6s} {:>7s}"
    print(line.format("what", "tmx s", "direct s", "ratio", "target"))
    for (key, when), (t, d, ratio) in res.items():
        target = 1.5 if when == "first" else 1.1
        name = f"{key} (DataArray) vs flow{'(x)' if key == 'transform' else '.inverse(z)'}, {when}"
        print(f"{name:44s} {t:8.3f} {d:8.3f} {ratio:6.2f} {'<= ' + str(target):>7s}")


# -- gyoza ---------------------------------------------------------------------------------------
def run_gyoza(data: dict, args: argparse.Namespace) -> dict:
    """gyoza's timings (see ``_gyoza_runner.py``) on the same pairs and rows."""
    pr, dims = data["pairs"], data["dims"]
    with tempfile.TemporaryDirectory(prefix="tmx-gyoza-") as work:
        a = np.asarray(pr["a"].values, np.float32)
        np.savez(
            os.path.join(work, "data.npz"),
            a=a,
            b=np.asarray(pr["b"].values, np.float32),
            rho=np.asarray(pr["rho"].values, np.float32),
            x=a,
        )
        spec = {
            "units": D,
            "blocks": BLOCKS,
            "hidden": HIDDEN,
            "reflections": REFLECTIONS,
            "batch_size": BATCH,
            "epochs": args.epochs,
            "repeats": args.repeats,
            "train_runs": 1,
            "learning_rate": LEARNING_RATE,
            "dimensions": [int(d) for d in dims],
            "data": "data.npz",
            "seed": 0,
            "threads": args.threads,
        }
        with open(os.path.join(work, "spec.json"), "w") as fh:
            json.dump(spec, fh)
        proc = subprocess.run(
            [str(GYOZA_PYTHON), str(GYOZA_RUNNER), work],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        if proc.returncode != 0:
            raise RuntimeError(f"gyoza runner failed:\n{proc.stderr[-3000:]}")
        with open(os.path.join(work, "result.json")) as fh:
            return json.load(fh)


# -- main ----------------------------------------------------------------------------------------
def set_threads(threads: int) -> None:
    """TensorFlow's intra- and inter-op pools (before it runs anything); 0 keeps its defaults."""
    if threads > 0:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def prepare(args: argparse.Namespace) -> dict:
    import tmx

    cube = synthetic_cube(args.pairs)
    pr = tmx.flows.pairs(cube, by=("sample", "transformation"), n=args.pairs, rho=RHO, seed=0)
    dims = [int(d) for d in tmx.flows.factor_dimensions(pr).values]
    return {"cube": cube, "pairs": pr, "dims": dims}


def fmt(seconds: list[float]) -> str:
    return " ".join(f"{s:.2f}" for s in seconds)


def table(results: dict, gyoza: dict | None) -> list[tuple]:
    rows = []
    for coupling, res in results.items():
        for key, unit in (("train", "pairs/s"), ("forward", "rows/s"), ("inverse", "rows/s")):
            rows.append(
                (
                    f"{key} {coupling} ({unit})",
                    res[key]["tmx"],
                    "plain loop",
                    res[key]["plain"],
                    0.9,
                )
            )
        for key, base in (("transform", "plain forward"), ("inverse (DataArray)", "plain inverse")):
            if key in res:
                name = "transform (DataArray)" if key == "transform" else key
                rows.append(
                    (f"{name} {coupling} (rows/s)", res[key]["tmx"], base, res[key]["plain"], 0.9)
                )
    if gyoza is not None and "additive" in results:
        res = results["additive"]
        gyoza_rate = {
            "train": gyoza["train_pairs"] / gyoza["train_seconds"],
            "forward": gyoza["rows"] / gyoza["forward_seconds"],
            "inverse": gyoza["rows"] / gyoza["inverse_seconds"],
        }
        for key, unit in (("train", "pairs/s"), ("forward", "rows/s"), ("inverse", "rows/s")):
            rows.append(
                (f"{key} additive ({unit})", res[key]["tmx"], "gyoza 0.3.0", gyoza_rate[key], 1.0)
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--coupling", default="additive,affine")
    parser.add_argument("--skip-gyoza", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--direct-only", action="store_true", help="only transform/inverse vs a direct call"
    )
    parser.add_argument("--threads", type=int, default=1, help="TF threads per pool (0: TF's)")
    parser.add_argument("--setup-gyoza", action="store_true", help="create gyoza's venv and exit")
    parser.add_argument("--python", default=None, help="python >= 3.12 for --setup-gyoza")
    parser.add_argument("--gyoza-wheel", default=None, help="a local gyoza 0.3.0 wheel to install")
    args = parser.parse_args()
    if args.setup_gyoza:
        python = args.python
        if python is None:
            python = sys.executable if sys.version_info >= (3, 12) else str(PYTHON_312)
        setup_gyoza(python, args.gyoza_wheel)
        return
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is not timed)")
    if args.pairs < BATCH:
        parser.error(f"--pairs must be at least {BATCH}")

    start = time.perf_counter()
    set_threads(args.threads)
    if args.direct_only:
        print_direct(measure_direct(args))
        print(f"total wall time {time.perf_counter() - start:.0f} s")
        return
    direct = measure_direct(args)
    data = prepare(args)
    couplings = [c.strip() for c in args.coupling.split(",") if c.strip()]
    results = {coupling: measure(coupling, data, args) for coupling in couplings}

    gyoza = None
    if args.skip_gyoza:
        gyoza_note = "gyoza 0.3.0: skipped (--skip-gyoza)"
    elif not gyoza_available():
        gyoza_note = (
            f"gyoza 0.3.0: skipped, no working venv at {GYOZA_VENV} (it needs Python >= 3.12; "
            "create it with: python -m benchmarks.flows --setup-gyoza)"
        )
    else:
        gyoza = run_gyoza(data, args)

    trained = (args.pairs // BATCH) * BATCH
    print(
        f"interpretation flows: D = {D}, {BLOCKS} blocks, hidden ({HIDDEN},), batch {BATCH}, "
        f"{args.pairs} pairs ({trained} per tmx/plain epoch: full batches), {args.epochs} epochs "
        f"(first not timed); medians of {args.repeats}; {os.cpu_count()} CPU cores, TF threads "
        f"{args.threads or 'default'}; "
        f"dimensions {data['dims']}; ratio = tmx / baseline throughput"
    )
    line = "{:44s} {:>10s} {:>14s} {:>10s} {:>6s} {:>7s}"
    print(line.format("what", "tmx", "baseline", "base", "ratio", "target"))
    for what, t, base, b, target in table(results, gyoza):
        print(f"{what:44s} {t:10.0f} {base:>14s} {b:10.0f} {t / b:6.2f} {'>= ' + str(target):>7s}")
    for coupling, res in results.items():
        tr = res["train"]
        print(
            f"{coupling}: plain vs tmx max |dz|, |dlogdet| {res['check'][0]:.1e}, plain invert "
            f"error {res['check'][1]:.1e}; last-epoch loss tmx {tr['losses']['tmx']:.3f}, plain "
            f"{tr['losses']['plain']:.3f}; fit wall time beyond its epochs "
            f"{tr['fit_overhead']:.2f} s; plain step as fit's (jit={tr['same']['jit']}, "
            f"jitter sigma {tr['same']['noise']:.3g}); train ratio of the fastest epochs "
            f"{tr['fastest']:.2f}\n  epoch s tmx {fmt(tr['tmx_epochs'])}\n  epoch s "
            f"plain {fmt(tr['plain_epochs'])} (E before the fit, E - 1 after)"
        )
        if "profile" in res:
            print(f"{coupling} profile (steady seconds per epoch, in this order):")
            for name, (sec, pairs) in res["profile"].items():
                print(f"  {name:60s} {sec:7.3f} s  {pairs / sec:8.0f} pairs/s")
    if gyoza is not None:
        v = gyoza["versions"]
        fastest_gyoza = None
        if "additive" in results:
            tmx_fast = trained / min(results["additive"]["train"]["tmx_epochs"][1:])
            gyoza_fast = gyoza["train_pairs"] / min(gyoza["epoch_seconds"][0][1:])
            fastest_gyoza = tmx_fast / gyoza_fast
        print(
            f"gyoza {v['gyoza']} (Python {v['python']}, TF {v['tensorflow']}, Keras "
            f"{v['keras']}): {gyoza['parameters']} weights, {gyoza['train_pairs']} pairs per "
            f"epoch; reported loss {gyoza['reported_loss'][-1]} (0.0: its loss tracker is never "
            f"updated); invert compiled {gyoza['inverse_compiled']}, invert error "
            f"{gyoza['invert_error']:.1e}\n  epoch s {fmt(gyoza['epoch_seconds'][0])}"
            + (f"; train ratio of the fastest epochs {fastest_gyoza:.2f}" if fastest_gyoza else "")
        )
    else:
        print(gyoza_note)
    print_direct(direct)
    print(f"total wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
