"""Internal influence: attribution = E_{z∼DoI}[∂Q/∂z (z)] ⊙ m(x), batched and compiled.

The distribution of interest's points of every sample are folded into the batch axis and
streamed in fixed batches of ``batch_size`` rows (the last one padded), so memory is bounded by
``batch_size`` whatever ``steps`` or ``samples``. One compiled ``tf.function`` per (model, QoI
kind, input shape, batch size) takes the gradient of Σ_b Q_b(z_b): in inference mode each row's
Q depends on its own input only, so this one backward pass gives every row's gradient (the
per-example sum trick).

References
----------
Leino, K., Sen, S., Datta, A., Fredrikson, M., Li, L. (2018). Influence-directed explanations
for deep convolutional networks. IEEE International Test Conference.
Sundararajan, M., Taly, A., Yan, Q. (2017). Axiomatic attribution for deep networks. ICML.
Smilkov, D., Thorat, N., Kim, B., Viégas, F., Wattenberg, M. (2017). SmoothGrad: removing noise
by adding noise. arXiv:1706.03825.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from .. import _validate as v
from ._doi import RULES, gaussian_noise, quadrature

DOIS = ("point", "linear", "gaussian")


@dataclass(frozen=True)
class Channel:
    """QoI: channel ``index`` of the output, summed (``agg="sum"``) or averaged (``"mean"``)
    over its spatial axes. Build it with :func:`channel`."""

    index: int
    agg: str = "sum"


def channel(index: int, agg: str = "sum") -> Channel:
    """A quantity of interest: one channel of the QoI tensor, aggregated over its other axes.

    Parameters
    ----------
    index : int
        The channel (last axis).
    agg : {"sum", "mean"}
        How the channel's values of one sample are aggregated.
    """
    if isinstance(index, bool) or not isinstance(index, int | np.integer):
        raise ValueError(f"index must be an int; got {index!r}")
    v.choice(agg, "agg", ("sum", "mean"))
    return Channel(int(index), agg)


# -- quantities of interest ----------------------------------------------------------------------
@dataclass(frozen=True)
class _Qoi:
    """A parsed QoI: ``kind`` in class | pair | channel | callable, and per-sample parameters."""

    kind: str
    params: np.ndarray | None = None  # (N,) classes or (N, 2) pairs
    fn: Any = None
    description: str = ""


def _as_inputs(x: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Inputs as float32 numpy with the sample axis first, and the sample coordinates."""
    if isinstance(x, xr.DataArray):
        if "sample" not in x.dims:
            raise ValueError(f"x must have a 'sample' dim when it is a DataArray; got {x.dims}")
        x = x.transpose("sample", ...)
        coords = {k: c.variable for k, c in x.coords.items() if c.dims == ("sample",)}
        values = np.asarray(x.values)
    else:
        values = np.asarray(x)
        coords = {}
    if values.ndim < 2 or values.shape[0] == 0:
        raise ValueError(
            f"x must be a non-empty batch with a sample axis first; got shape {values.shape}"
        )
    if values.dtype.kind not in "fiub":
        raise ValueError(f"x must be numeric; got dtype {values.dtype}")
    if "sample" not in coords:
        coords["sample"] = xr.Variable("sample", np.arange(values.shape[0]))
    return values.astype(np.float32, copy=False), coords


def _parse_qoi(qoi: Any, n: int, predict: Callable[[], np.ndarray]) -> _Qoi:
    if isinstance(qoi, str):
        if qoi != "max":
            raise ValueError(
                f'qoi must be "max", a class, classes per sample, a (c1, c2) pair, '
                f"tmx.attribution.channel(...) or a callable; got {qoi!r}"
            )
        y = predict()
        if y.ndim != 2:
            raise ValueError(
                f'qoi="max" needs an output of shape (batch, classes); got {y.shape[1:]} per sample'
            )
        return _Qoi("class", np.argmax(y, axis=1).astype(np.int64), description="max")
    if isinstance(qoi, Channel):
        return _Qoi("channel", np.full(n, qoi.index, np.int64), qoi.agg, f"channel {qoi.index}")
    if callable(qoi):
        return _Qoi("callable", None, qoi, getattr(qoi, "__name__", "callable"))
    if isinstance(qoi, tuple):
        if len(qoi) != 2 or not all(
            isinstance(c, int | np.integer) and not isinstance(c, bool) for c in qoi
        ):
            raise ValueError(f"a qoi tuple must be a pair of ints (c1, c2); got {qoi!r}")
        pair = np.tile(np.asarray(qoi, np.int64), (n, 1))
        return _Qoi("pair", pair, description=f"{qoi[0]} - {qoi[1]}")
    if isinstance(qoi, int | np.integer) and not isinstance(qoi, bool):
        return _Qoi("class", np.full(n, int(qoi), np.int64), description=f"class {int(qoi)}")
    arr = np.asarray(qoi)
    if arr.ndim == 1 and arr.dtype.kind in "iu" and arr.shape[0] == n:
        return _Qoi("class", arr.astype(np.int64), description="one class per sample")
    raise ValueError(
        f'qoi must be "max", an int class, {n} ints (one class per sample), a (c1, c2) pair, '
        f"tmx.attribution.channel(...) or a callable f(y) -> (batch,); got {qoi!r}"
    )


def _qoi_tensor(tf: Any, qoi: _Qoi, y: Any, params: Any) -> Any:
    """Q per row, shape (B,), from the model output ``y`` and the row parameters."""
    if qoi.kind == "callable":
        return tf.reshape(qoi.fn(y), (-1,))
    if qoi.kind == "channel":
        picked = tf.gather(y, params[0], axis=-1)  # the same channel for every row
        axes = list(range(1, len(y.shape) - 1))
        if not axes:
            return picked
        return tf.reduce_sum(picked, axes) if qoi.fn == "sum" else tf.reduce_mean(picked, axes)
    if len(y.shape) != 2:
        raise ValueError(f"a class QoI needs an output of shape (batch, classes); got {y.shape}")
    rows = tf.range(tf.shape(y)[0])
    if qoi.kind == "class":
        return tf.gather_nd(y, tf.stack([rows, tf.cast(params, tf.int32)], axis=1))
    first = tf.gather_nd(y, tf.stack([rows, tf.cast(params[:, 0], tf.int32)], axis=1))
    second = tf.gather_nd(y, tf.stack([rows, tf.cast(params[:, 1], tf.int32)], axis=1))
    return first - second


# -- compiled functions, per live model (weakly) ---------------------------------------------
_FUNCTIONS: weakref.WeakKeyDictionary[Any, dict[tuple, Any]] = weakref.WeakKeyDictionary()


def _functions(model: Any, qoi: _Qoi, shape: tuple[int, ...], batch: int):
    """(gradient function, QoI function) for fixed (batch, *shape) float32 inputs."""
    import tensorflow as tf

    key = (qoi.kind, id(qoi.fn) if qoi.kind == "callable" else qoi.fn, shape, batch)
    try:
        cache = _FUNCTIONS.setdefault(model, {})
    except TypeError:
        cache = {}
    if key in cache:
        return cache[key]
    param_shape = (batch, 2) if qoi.kind == "pair" else (batch,)
    if qoi.kind == "channel":
        param_shape = (1,)
    specs = [tf.TensorSpec((batch, *shape), tf.float32), tf.TensorSpec(param_shape, tf.int64)]

    def output(z):
        y = model(z, training=False)
        if isinstance(y, list | tuple):
            if len(y) != 1 and qoi.kind != "callable":
                raise ValueError(
                    "the model has several outputs: pass a callable qoi that picks one"
                )
            y = y[0] if len(y) == 1 else y
        return y if isinstance(y, list | tuple) else tf.cast(y, tf.float32)

    @tf.function(input_signature=specs)
    def gradient(z, params):
        with tf.GradientTape() as tape:
            tape.watch(z)
            q = _qoi_tensor(tf, qoi, output(z), params)
            total = tf.reduce_sum(q)
        return tape.gradient(total, z), q

    @tf.function(input_signature=specs)
    def value(z, params):
        return _qoi_tensor(tf, qoi, output(z), params)

    cache[key] = (gradient, value)
    return cache[key]


def _batches(total: int, batch: int):
    for start in range(0, total, batch):
        yield start, min(total, start + batch)


def _pad(arr: np.ndarray, rows: int) -> np.ndarray:
    if arr.shape[0] == rows:
        return arr
    pad = np.zeros((rows - arr.shape[0], *arr.shape[1:]), arr.dtype)
    return np.concatenate([arr, pad])


def _row_params(qoi: _Qoi, samples: np.ndarray, batch: int) -> np.ndarray:
    if qoi.kind == "callable":
        return np.zeros(batch, np.int64)
    if qoi.kind == "channel":
        return qoi.params[:1]
    return _pad(qoi.params[samples], batch)


def _qoi_values(model, qoi: _Qoi, z: np.ndarray, batch: int) -> np.ndarray:
    """Q at every row of ``z`` (one point per sample), batched."""
    _, value = _functions(model, qoi, z.shape[1:], batch)
    out = np.empty(z.shape[0], np.float64)
    for a, b in _batches(z.shape[0], batch):
        params = _row_params(qoi, np.arange(a, b), batch)
        out[a:b] = np.asarray(value(_pad(z[a:b], batch), params))[: b - a]
    return out


def _baseline(baseline: Any, x: np.ndarray) -> np.ndarray:
    """The baseline broadcast to x's shape: zeros, one sample (1, …) or one per sample (N, …)."""
    if baseline is None:
        return np.zeros_like(x)
    b = np.asarray(baseline.values if isinstance(baseline, xr.DataArray) else baseline)
    b = b.astype(np.float32)
    if b.shape == x.shape[1:]:
        b = b[None]
    if b.shape[1:] != x.shape[1:] or b.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"baseline must have the shape of one sample {x.shape[1:]}, (1, …) or "
            f"({x.shape[0]}, …) at the DoI cut; got {b.shape}"
        )
    return np.broadcast_to(b, x.shape)


def gradient_moments(
    model: Any,
    x: np.ndarray,
    qoi: _Qoi,
    doi: Any,
    *,
    baseline: np.ndarray | None,
    steps: int,
    rule: str,
    noise: float,
    samples: int,
    seed: int,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Σ_k w_k g(z_ik) and Σ_k w_k g(z_ik)² per sample, g = ∂Q/∂z, over the DoI's points."""
    n, shape = x.shape[0], x.shape[1:]
    alphas = weights = None
    if callable(doi):
        pass  # custom: points and weights per sample, below
    elif doi == "point":
        weights = np.ones(1)
    elif doi == "linear":
        alphas, weights = quadrature(steps, rule)
    else:  # gaussian
        weights = np.full(samples, 1.0 / samples)
    gradient, _ = _functions(model, qoi, shape, batch_size)
    mean = np.zeros(x.shape, np.float64)
    square = np.zeros(x.shape, np.float64)
    # rows (sample, point) are generated one batch at a time
    per_sample = 1 if weights is None else len(weights)
    custom_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if weights is None:  # custom DoI: its points and weights per sample
        for i in range(n):
            pts, w = doi(x[i : i + 1], np.array([i]))
            pts = np.asarray(pts, np.float32).reshape(-1, *shape)
            w = np.asarray(w, np.float64).reshape(-1)
            if pts.shape[0] != w.shape[0]:
                raise ValueError(
                    "a custom doi must return (points (1, K, …) or (K, …), weights (K,)); got "
                    f"{pts.shape[0]} points and {w.shape[0]} weights"
                )
            custom_cache[i] = (pts, w)
        per_sample = max(p.shape[0] for p, _ in custom_cache.values())
    total = n * per_sample
    for a, b in _batches(total, batch_size):
        rows = np.arange(a, b)
        s_idx, k_idx = rows // per_sample, rows % per_sample
        if doi == "point":
            z, w = x[s_idx], np.ones(rows.size)
        elif doi == "linear":
            base = baseline[s_idx]
            al = alphas[k_idx].astype(np.float32).reshape(-1, *([1] * len(shape)))
            z, w = base + al * (x[s_idx] - base), weights[k_idx]
        elif doi == "gaussian":
            uniq = np.unique(s_idx)
            eps = gaussian_noise(shape, uniq, samples, noise, seed)
            where = np.searchsorted(uniq, s_idx)
            z, w = x[s_idx] + eps[where, k_idx], weights[k_idx]
        else:
            z = np.empty((rows.size, *shape), np.float32)
            w = np.zeros(rows.size)
            for r, (i, k) in enumerate(zip(s_idx, k_idx, strict=True)):
                pts, ws = custom_cache[int(i)]
                if k < pts.shape[0]:
                    z[r], w[r] = pts[k], ws[k]
                else:
                    z[r] = x[i]
        params = _row_params(qoi, s_idx, batch_size)
        g, _ = gradient(_pad(np.ascontiguousarray(z, np.float32), batch_size), params)
        g = np.asarray(g, np.float64)[: rows.size]
        wg = w.reshape(-1, *([1] * len(shape))) * g
        np.add.at(mean, s_idx, wg)
        np.add.at(square, s_idx, wg * g)
    return mean, square


def _predict(model: Any, x: np.ndarray, batch: int) -> np.ndarray:
    import tensorflow as tf

    outs = []
    for a, b in _batches(x.shape[0], batch):
        y = model(tf.constant(_pad(x[a:b], batch)), training=False)
        y = y[0] if isinstance(y, list | tuple) else y
        outs.append(np.asarray(y)[: b - a])
    return np.concatenate(outs)


def attribute(
    model: Any,
    x: Any,
    *,
    cut: Any = None,
    qoi: Any = "max",
    qoi_cut: Any = None,
    doi: Any = "point",
    doi_cut: Any = None,
    multiply_activation: bool = True,
    baseline: Any = None,
    steps: int = 50,
    rule: str = "gausslegendre",
    noise: float = 0.1,
    samples: int = 20,
    seed: int = 0,
    batch_size: int = 64,
    return_delta: bool = False,
    _gradients: str = "mean",
) -> xr.DataArray | xr.Dataset:
    """Internal influence: E_{z∼DoI}[∂Q/∂z (z)] ⊙ m(x), one attribution per input value.

    attribution_i = (Σ_k w_k ∂Q_i/∂z (z_ik)) ⊙ m_i, with z_ik the DoI's points for sample i and
    m_i = x_i (``doi="point"``/``"gaussian"``), x_i − b_i (``"linear"``) or 1 (when
    ``multiply_activation=False``). The model runs in inference mode.

    Parameters
    ----------
    model : keras.Model
        A Keras 3 model (or any callable ``model(z, training=False)`` of TensorFlow tensors).
    x : array-like or xr.DataArray
        The samples to explain, sample axis first (a DataArray needs a ``sample`` dim; its
        sample coordinates, such as ``label``, are carried over).
    cut, qoi_cut, doi_cut : None
        Where attributions live, where the QoI is computed and where the DoI applies. This
        version supports the model input and output only (``None``, and ``doi_cut="input"``);
        layer cuts raise ``NotImplementedError``.
    qoi : "max", int, ints, (c1, c2), tmx.attribution.channel(...) or callable
        ``"max"``: the largest output, chosen at x (never re-chosen along the DoI); an int
        class c: y[:, c]; N ints: one class per sample; a pair: y[:, c1] − y[:, c2]; a
        channel: that output channel aggregated over its spatial axes; a callable f(y) → (B,).
    doi : "point", "linear", "gaussian" or callable
        ``"point"``: z = x. ``"linear"``: z = b + α (x − b) at the nodes of ``rule`` with
        ``steps`` points (weights sum to 1; see ``tmx.attribution.quadrature``).
        ``"gaussian"``: ``samples`` points x + N(0, noise²), seeded per sample. A callable
        ``f(x_i (1, …), positions) -> (points (K, …), weights (K,))``.
    multiply_activation : bool, default True
        Multiply by m (x, or x − b for the linear DoI).
    baseline : array-like, optional
        The linear DoI's start: one sample's shape, (1, …) or (N, …); default zeros.
    steps, rule : int, str
        The linear DoI's quadrature.
    noise, samples, seed : float, int, int
        The gaussian DoI: standard deviation, points per sample, seed (≥ 0).
    batch_size : int, default 64
        Rows (sample × DoI point) per compiled call: bounds memory; never changes the numbers.
    return_delta : bool, default False
        Linear DoI only: also return ``delta`` = Σ attribution − (Q(x) − Q(b)) per sample, the
        completeness error of the quadrature.

    Returns
    -------
    xr.DataArray or xr.Dataset
        ``attribution``, float64, dims ``(sample, y, x, channel)`` for images (N, H, W, C),
        otherwise ``(sample, unit)`` over the flattened features; ``attrs`` record cut, qoi,
        doi, steps, rule, multiply_activation, noise, samples, seed. With ``return_delta``, a
        Dataset with ``attribution`` and ``delta`` (sample).
    """
    for name, value in (("cut", cut), ("qoi_cut", qoi_cut)):
        if value is not None:
            raise NotImplementedError(
                f"{name}={value!r}: attributions at a layer are not available yet in this "
                "version of tmx.attribution; use the model input and output (None)"
            )
    if doi_cut not in (None, "input"):
        raise NotImplementedError(
            f"doi_cut={doi_cut!r}: only the model input (None or 'input') is available yet"
        )
    if not isinstance(multiply_activation, bool):
        raise ValueError(f"multiply_activation must be True or False; got {multiply_activation!r}")
    if not callable(doi):
        v.choice(doi, "doi", DOIS)
    steps = v.positive_int(steps, "steps")
    v.choice(rule, "rule", RULES)
    samples = v.positive_int(samples, "samples")
    batch_size = v.positive_int(batch_size, "batch_size")
    noise = v.finite_real(noise, "noise")
    if noise < 0:
        raise ValueError(f"noise must be a standard deviation >= 0; got {noise}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an int >= 0; got {seed!r}")
    if return_delta and doi != "linear":
        raise ValueError('return_delta needs doi="linear" (the completeness of a path integral)')
    values, coords = _as_inputs(x)
    n = values.shape[0]
    q = _parse_qoi(qoi, n, lambda: _predict(model, values, batch_size))
    base = _baseline(baseline, values) if doi == "linear" else None
    mean, square = gradient_moments(
        model,
        values,
        q,
        doi,
        baseline=base,
        steps=steps,
        rule=rule,
        noise=noise,
        samples=samples,
        seed=int(seed),
        batch_size=batch_size,
    )
    if _gradients == "mean":
        attr = mean
    elif _gradients == "square":
        attr = square
    else:  # variance of the gradients over the DoI's points (weights summing to 1)
        attr = np.maximum(square - mean**2, 0.0)
    if multiply_activation:
        attr = attr * (values - base if doi == "linear" else values)

    if values.ndim == 4:
        dims = ("sample", "y", "x", "channel")
        data = attr
    else:
        dims = ("sample", "unit")
        data = attr.reshape(n, -1)
    attrs = {
        "cut": "input",
        "qoi": q.description,
        "qoi_cut": "output",
        "doi": doi if isinstance(doi, str) else "custom",
        "steps": steps,
        "rule": rule,
        "multiply_activation": int(multiply_activation),
        "noise": noise,
        "samples": samples,
        "seed": int(seed),
    }
    out = xr.DataArray(data, dims=dims, coords=coords, name="attribution", attrs=attrs)
    if not return_delta:
        return out
    q_x = _qoi_values(model, q, values, batch_size)
    q_b = _qoi_values(model, q, np.ascontiguousarray(base), batch_size)
    total = data.reshape(n, -1).sum(axis=1)
    delta = xr.DataArray(total - (q_x - q_b), dims=("sample",), coords=coords, name="delta")
    return xr.Dataset({"attribution": out, "delta": delta}, attrs=attrs)
