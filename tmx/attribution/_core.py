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
Adebayo, J., Gilmer, J., Goodfellow, I., Kim, B. (2018). Local explanation methods for deep
neural networks lack sensitivity to parameter values. ICLR workshop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args, overload

import numpy as np
import tensorflow as tf
import xarray as xr

from .. import _batching, _progress
from .. import _validate as v
from .._batching import pad_rows
from .._deprecation import UNSET, renamed
from .._memo import memo, per_object
from .._provenance import provenance
from .._schema import unit_coords
from ..inspect import expose, resolve, rewire
from ._doi import RULES, Rule, check_noise, gaussian_doi_draws, quadrature

Doi = Literal["point", "linear", "gaussian"]
DOIS = get_args(Doi)  # checked at the call
Gradients = Literal["mean", "square", "variance"]
GRADIENTS = get_args(Gradients)  # checked at the call
# DoI rows (sample × point) handed to one looped compiled call at most: the loop inside runs
# batch_size rows at a time; this bounds the chunk of inputs and moments that cross over
_LOOP_ROWS = 8192


@dataclass(frozen=True)
class Channel:
    """QoI: channel ``index`` of the output, summed (``agg="sum"``) or averaged (``"mean"``)
    over its spatial axes. Build it with :func:`channel`.

    Examples
    --------
    >>> from tmx import attribution as A
    >>> A.channel(0) == A.channel(0, "sum")
    True
    """

    index: int
    agg: Literal["sum", "mean"] = "sum"


def channel(index: int, agg: Literal["sum", "mean"] = "sum") -> Channel:
    """A quantity of interest: one channel of the QoI tensor, aggregated over its other axes.

    Parameters
    ----------
    index : int
        The channel (last axis).
    agg : {"sum", "mean"}
        How the channel's values of one sample are aggregated.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx import attribution as A
    >>> model = tmx.models.small_cnn((8, 8, 1), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    >>> q = A.channel(2, "mean")                       # channel 2 of conv1, averaged over y, x
    >>> q
    Channel(index=2, agg='mean')
    >>> A.attribute(model, x, qoi=q, qoi_cut="conv1").shape
    (2, 8, 8, 1)
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

    @property
    def indices(self) -> np.ndarray:
        """``params`` of a class, pair or channel QoI: the per-sample indices it always has."""
        if self.params is None:
            raise ValueError(f"a {self.kind} QoI has no class or channel indices")
        return self.params


def _require_eager() -> None:
    """Refuse to run inside a ``tf.function``: attributions are computed eagerly, NumPy and
    xarray in and out, around tmx's own compiled functions (a symbolic tensor has no values
    to attribute, and the result could not be returned into the graph)."""

    if tf.inside_function():
        raise RuntimeError(
            "tmx attributions run eagerly (NumPy or xarray in, xarray out; they compile their "
            "own tf.functions inside): call them outside tf.function, on the input values, "
            "not inside a function being traced"
        )


def _several_outputs(model: Any) -> list[str]:
    """The output names of a Keras model with several outputs; [] for one (or a callable)."""
    outputs = getattr(model, "outputs", None) if hasattr(model, "get_config") else None
    if not outputs or len(outputs) < 2:
        return []
    return [getattr(t._keras_history.operation, "name", str(t)) for t in outputs]


def _single_output(model: Any, method: str, alternative: str = "") -> None:
    """Raise for a model with several outputs, naming them and what ``method`` accepts."""
    names = _several_outputs(model)
    if names:
        raise ValueError(
            f"{method} explains one output, and model {model.name!r} has {len(names)} "
            f"({', '.join(map(repr, names))}): {alternative}build a model with the output to "
            "explain, e.g. keras.Model(model.inputs, model.outputs[k])"
        )


def _as_inputs(x: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Inputs as float32 numpy with the sample axis first, and the sample coordinates (outside
    a ``tf.function`` only)."""
    _require_eager()
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


def _check_classes(qoi: _Qoi, model: Any, values: np.ndarray, name: str = "qoi") -> None:
    """Raise unless the QoI's class (or channel) indices exist in the model's output."""
    if qoi.kind not in ("class", "pair", "channel"):
        return
    outputs = getattr(model, "outputs", None)  # a Keras model's symbolic output: no forward
    if outputs and len(outputs) == 1 and outputs[0].shape[-1] is not None:
        shape = tuple(outputs[0].shape[1:])
    else:
        shape = _predict(model, values[:1], 1).shape[1:]
    size = shape[-1] if shape else 1
    bad = qoi.indices[(qoi.indices < 0) | (qoi.indices >= size)]
    if bad.size:
        what = "channel" if qoi.kind == "channel" else "class"
        raise ValueError(
            f"{name}: {what} index {int(bad.flat[0])} is out of range for an output with {size} "
            f"{what}{'s' if size != 1 else ''} (valid: 0..{size - 1})"
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
_FUNCTIONS = per_object()


def _param_spec(tf: Any, qoi: _Qoi, batch: int) -> Any:
    """The TensorSpec of the QoI's row parameters: classes (batch,), pairs (batch, 2), or the
    one channel (1,) shared by every row."""
    if qoi.kind == "channel":
        return tf.TensorSpec((1,), tf.int64)
    return tf.TensorSpec((batch, 2) if qoi.kind == "pair" else (batch,), tf.int64)


def _qoi_key(qoi: _Qoi) -> tuple:
    """What identifies a QoI's compiled functions (its kind, and the callable or aggregation)."""
    return (qoi.kind, id(qoi.fn) if qoi.kind == "callable" else qoi.fn)


def _functions(model: Any, qoi: _Qoi, shape: tuple[int, ...], batch: int):
    """(gradient function, QoI function) for fixed (batch, *shape) float32 inputs."""
    return memo(
        _FUNCTIONS,
        model,
        (*_qoi_key(qoi), shape, batch),
        lambda: _compile(model, qoi, shape, batch),
    )


def _model_output(tf: Any, model: Any, qoi: _Qoi, z: Any) -> Any:
    """The model's output at ``z`` for a QoI: float32, or the list of outputs that a callable
    QoI picks from (several outputs with another QoI are an error)."""
    y = model(z, training=False)
    if isinstance(y, list | tuple):
        if len(y) != 1 and qoi.kind != "callable":
            raise ValueError("the model has several outputs: pass a callable qoi that picks one")
        y = y[0] if len(y) == 1 else y
    return y if isinstance(y, list | tuple) else tf.cast(y, tf.float32)


def _compile(model: Any, qoi: _Qoi, shape: tuple[int, ...], batch: int):

    specs = [tf.TensorSpec((batch, *shape), tf.float32), _param_spec(tf, qoi, batch)]

    def output(z):
        return _model_output(tf, model, qoi, z)

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

    return gradient, value


def _batches(total: int, batch: int):
    for start in range(0, total, batch):
        yield start, min(total, start + batch)


def _row_params(qoi: _Qoi, samples: np.ndarray, batch: int) -> np.ndarray:
    if qoi.kind == "callable":
        return np.zeros(batch, np.int64)
    if qoi.kind == "channel":
        return qoi.indices[:1]
    return pad_rows(qoi.indices[samples], batch)


def _qoi_values(model, qoi: _Qoi, z: np.ndarray, batch: int, bar: Any = None) -> np.ndarray:
    """Q at every row of ``z`` (one point per sample), batched; ``bar`` (a ``tmx._progress``
    bar) advances once per compiled call."""
    _, value = _functions(model, qoi, z.shape[1:], batch)
    out = np.empty(z.shape[0], np.float64)
    for a, b in _batches(z.shape[0], batch):
        params = _row_params(qoi, np.arange(a, b), batch)
        out[a:b] = np.asarray(value(pad_rows(z[a:b], batch), params))[: b - a]
        if bar is not None:
            bar.advance()
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
    rule: Rule,
    noise: float,
    samples: int,
    seed: int,
    batch_size: int,
    grad: Callable[[np.ndarray, np.ndarray, int], np.ndarray] | None = None,
    attr_shape: tuple[int, ...] | None = None,
    squares: bool = True,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Σ_k w_k g(z_ik) and Σ_k w_k g(z_ik)² per sample, g = ∂Q/∂z, over the DoI's points
    (the second None unless ``squares``).

    ``x`` holds the samples where the DoI lives (the model input, or a layer's activations).
    ``grad(sample_indices, points, rows)`` returns the gradients at a batch of points (padded
    to ``rows`` for the compiled call), in the attribution's shape ``attr_shape`` (default:
    the model's input gradient). A call holds whole samples' points when they fit in
    ``batch_size`` (the largest multiple of the points per sample), so no rows are wasted
    on padding but the last call's. ``progress``: a bar over the compiled calls."""
    n, shape = x.shape[0], x.shape[1:]
    alphas: np.ndarray | None = None
    weights: np.ndarray | None = None
    if callable(doi):
        pass  # custom: points and weights per sample, below
    elif doi == "point":
        weights = np.ones(1)
    elif doi == "linear":
        alphas, weights = quadrature(steps, rule)
    else:  # gaussian
        weights = np.full(samples, 1.0 / samples)
    # the built-in DoIs at the model input, a sample's points in one call: in the graph
    if grad is None and weights is not None and len(weights) <= batch_size:
        return _moments_in_graph(
            model, x, qoi, doi, baseline, alphas, weights, batch_size, squares, progress,
            noise=noise, samples=samples, seed=seed, key=(rule,) if doi == "linear" else (),
        )  # fmt: skip
    if grad is None:

        def input_grad(s_idx: np.ndarray, z: np.ndarray, rows: int) -> np.ndarray:
            gradient, _ = _functions(model, qoi, shape, rows)
            params = _row_params(qoi, s_idx, rows)
            g, _ = gradient(pad_rows(np.ascontiguousarray(z, np.float32), rows), params)
            return np.asarray(g, np.float64)[: s_idx.size]

        grad = input_grad
        attr_shape = shape
    elif attr_shape is None:  # the default: the model input's gradient
        attr_shape = shape
    mean = np.zeros((n, *attr_shape), np.float64)
    square = np.zeros((n, *attr_shape), np.float64) if squares else None
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
    call_rows = batch_size
    if per_sample <= batch_size:  # whole samples per call: padding only in the last one
        call_rows = (batch_size // per_sample) * per_sample
    n_calls = -(-total // call_rows)
    with _progress.steps(n_calls, progress, "batch") as bar:
        for a, b in _batches(total, call_rows):
            rows = np.arange(a, b)
            s_idx, k_idx = rows // per_sample, rows % per_sample
            if doi == "point":
                z, w = x[s_idx], np.ones(rows.size)
            elif doi == "linear":
                assert alphas is not None and weights is not None  # set for this DoI above
                al = alphas[k_idx].astype(np.float32).reshape(-1, *([1] * len(shape)))
                if baseline is None:  # zeros: 0 + α (x − 0) is α x, the same numbers
                    z = al * x[s_idx]
                else:
                    base = baseline[s_idx]
                    z = base + al * (x[s_idx] - base)
                w = weights[k_idx]
            elif doi == "gaussian":
                assert weights is not None  # set for this DoI above
                uniq = np.unique(s_idx)
                eps = gaussian_doi_draws(shape, uniq, samples, noise, seed)
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
            g = grad(s_idx, z, call_rows)
            wg = w.reshape(-1, *([1] * len(attr_shape))) * g
            # rows come sample by sample: sum each sample's run of rows (reduceat, no scatter)
            starts = np.flatnonzero(np.r_[True, s_idx[1:] != s_idx[:-1]])
            owners = s_idx[starts]
            mean[owners] += np.add.reduceat(wg, starts, axis=0)
            if square is not None:  # squares
                square[owners] += np.add.reduceat(wg * g, starts, axis=0)
            bar.advance()
    return mean, square


def _sample_param_spec(tf: Any, qoi: _Qoi, group: int) -> Any:
    """The TensorSpec of the QoI's parameters per *sample* (repeated over its points in the
    graph): classes (group,), pairs (group, 2), the one channel (1,), or a placeholder."""
    if qoi.kind == "channel":
        return tf.TensorSpec((1,), tf.int64)
    return tf.TensorSpec((group, 2) if qoi.kind == "pair" else (group,), tf.int64)


def _sample_params(qoi: _Qoi, a: int, b: int, group: int) -> np.ndarray:
    """The QoI parameters of samples a … b − 1, padded to ``group`` (see _sample_param_spec)."""
    if qoi.kind == "callable":
        return np.zeros(group, np.int64)
    if qoi.kind == "channel":
        return qoi.indices[:1]
    return pad_rows(qoi.indices[a:b], group)


def _compile_moments(
    model: Any,
    qoi: _Qoi,
    shape: tuple[int, ...],
    group: int,
    doi: str,
    alphas: np.ndarray | None,
    weights: np.ndarray,
    squares: bool,
    zero_base: bool,
    looped: bool = False,
):
    """Σ_k w_k g(z_ik) (and Σ_k w_k g(z_ik)² when ``squares``) of ``group`` whole samples in
    one compiled call (``looped``: of any number of samples, ``group`` at a time in a
    ``tf.while_loop`` of one iteration in flight, so memory stays that of ``group`` samples'
    points and the host makes one call per chunk instead of one per group): the linear DoI's
    points are made in the graph (the same float32 operations as NumPy's b + α (x − b); α x
    when the baseline is zero, the same numbers),
    the other DoIs' points come in; the gradients are weighted and summed per sample in
    float64 on the device, so only (group, …) moments come back to the host. The nodes and
    weights are constants of the graph and the QoI's parameters come per sample, so a call
    converts one or two arrays; it is returned as a concrete function (no per-call dispatch).
    """

    k = len(weights)
    rows = group * k
    ones = [1] * len(shape)
    if doi == "linear":
        points = [tf.TensorSpec((group, *shape), tf.float32)]  # x
        if not zero_base:
            points.append(tf.TensorSpec((group, *shape), tf.float32))  # baseline
    else:
        points = [tf.TensorSpec((rows, *shape), tf.float32)]
    specs = [*points, _sample_param_spec(tf, qoi, group)]
    w = tf.constant(np.asarray(weights, np.float64).reshape(1, k, *ones))
    al = None
    if alphas is not None:
        al = tf.constant(np.asarray(alphas).astype(np.float32).reshape(1, k, *ones))

    def compute(pts, params):
        if qoi.kind != "channel":
            params = tf.repeat(params, k, axis=0)
        if doi == "linear":
            x = pts[0]
            if zero_base:
                z = tf.reshape(al * x[:, None], (rows, *shape))
            else:
                b = pts[1]
                step = al * (x - b)[:, None]
                z = tf.reshape(b[:, None] + step, (rows, *shape))
        else:
            z = pts[0]
        with tf.GradientTape() as tape:
            tape.watch(z)
            total = tf.reduce_sum(_qoi_tensor(tf, qoi, _model_output(tf, model, qoi, z), params))
        g = tf.cast(tf.reshape(tape.gradient(total, z), (group, k, *shape)), tf.float64)
        wg = g * w  # the streamed path's float64 products
        if squares:
            return tf.reduce_sum(wg, axis=1), tf.reduce_sum(wg * g, axis=1)
        return (tf.reduce_sum(wg, axis=1),)

    if looped:  # whole samples of the point / linear DoI, any number of them per call
        n_pts = 1 if zero_base or doi != "linear" else 2
        specs = [tf.TensorSpec((None, *shape), tf.float32)] * n_pts
        per_sample = qoi.kind != "channel"
        specs.append(
            tf.TensorSpec((None, 2) if qoi.kind == "pair" else (None,), tf.int64)
            if per_sample
            else tf.TensorSpec((1,), tf.int64)
        )

        @tf.function(input_signature=specs)
        def looped_moments(*args):
            *pts, params = args
            n = tf.shape(pts[0])[0]
            groups = (n + group - 1) // group
            pad = groups * group - n
            pts = [tf.pad(p, [[0, pad]] + [[0, 0]] * len(shape)) for p in pts]
            if per_sample:
                params = tf.pad(params, [[0, pad]] + [[0, 0]] * (len(params.shape) - 1))
            outs = [tf.TensorArray(tf.float64, size=groups) for _ in range(1 + squares)]

            def body(i, *arrays):
                lo = i * group
                part = [p[lo : lo + group] for p in pts]
                got = compute(part, params[lo : lo + group] if per_sample else params)
                return (i + 1, *[a.write(i, m) for a, m in zip(arrays, got, strict=True)])

            _, *outs = tf.while_loop(
                lambda i, *_: i < groups, body, [tf.constant(0), *outs], parallel_iterations=1
            )
            return [tf.reshape(a.stack(), (groups * group, *shape))[:n] for a in outs]

        return looped_moments.get_concrete_function()

    @tf.function(input_signature=specs)
    def moments(*args):
        *pts, params = args
        return compute(pts, params)

    return moments.get_concrete_function()


def _moments_in_graph(
    model: Any,
    x: np.ndarray,
    qoi: _Qoi,
    doi: str,
    baseline: np.ndarray | None,
    alphas: np.ndarray | None,
    weights: np.ndarray,
    batch_size: int,
    squares: bool,
    progress: bool,
    *,
    noise: float,
    samples: int,
    seed: int,
    key: tuple = (),
) -> tuple[np.ndarray, np.ndarray | None]:
    """``gradient_moments`` of the built-in DoIs when a sample's points fit in a call:
    ``batch_size // K`` whole samples per compiled call (the last padded with zero samples),
    points made and gradients reduced in the graph (``_compile_moments``). A linear DoI's
    ``baseline`` None is zeros. ``key`` names the nodes and weights (the rule)."""

    n, shape = x.shape[0], tuple(x.shape[1:])
    k = len(weights)
    group = _batching.call_rows(n, batch_size // k)  # fewer samples: a power of two ≥ n
    zero_base = doi == "linear" and baseline is None
    moments = memo(
        _FUNCTIONS,
        model,
        ("moments", *_qoi_key(qoi), shape, group, k, doi, squares, zero_base, key),
        lambda: _compile_moments(
            model, qoi, shape, group, doi, alphas, weights, squares, zero_base
        ),
    )
    mean = np.empty((n, *shape), np.float64)
    square = np.empty((n, *shape), np.float64) if squares else None
    if doi in ("linear", "point"):  # one call per chunk of samples, the groups looped in it
        looped = memo(
            _FUNCTIONS,
            model,
            ("looped", *_qoi_key(qoi), shape, group, k, doi, squares, zero_base, key),
            lambda: _compile_moments(
                model, qoi, shape, group, doi, alphas, weights, squares, zero_base, looped=True
            ),
        )
        # a shown bar advances per group; otherwise as many groups per call as _LOOP_ROWS allows
        chunk = group if progress else group * max(1, _LOOP_ROWS // (group * k))
        with _progress.steps(-(-n // chunk), progress, "batch") as bar:
            for a, b in _batches(n, chunk):
                pts = [tf.constant(x[a:b])]
                if doi == "linear" and baseline is not None:  # not zero_base
                    pts.append(tf.constant(np.ascontiguousarray(baseline[a:b], np.float32)))
                if qoi.kind == "channel":
                    params = tf.constant(qoi.indices[:1])
                elif qoi.kind == "callable":
                    params = tf.constant(np.zeros(b - a, np.int64))
                else:
                    params = tf.constant(qoi.indices[a:b])
                out = looped(*pts, params)
                mean[a:b] = out[0].numpy()
                if square is not None:  # squares
                    square[a:b] = out[1].numpy()
                bar.advance()
        return mean, square
    with _progress.steps(-(-n // group), progress, "batch") as bar:
        for a, b in _batches(n, group):
            params = tf.constant(_sample_params(qoi, a, b, group))
            if doi == "linear":
                pts = [tf.constant(pad_rows(x[a:b], group))]
                if baseline is not None:  # not zero_base
                    pts.append(tf.constant(pad_rows(np.ascontiguousarray(baseline[a:b]), group)))
            elif doi == "point":
                pts = [tf.constant(pad_rows(x[a:b], group))]
            else:  # gaussian: the same seeded noise per sample as the streamed path
                eps = gaussian_doi_draws(shape, np.arange(a, b), samples, noise, seed)
                z = (x[a:b, None] + eps).reshape(-1, *shape)
                pts = [tf.constant(pad_rows(np.ascontiguousarray(z, np.float32), group * k))]
            out = moments(*pts, params)
            mean[a:b] = out[0].numpy()[: b - a]
            if square is not None:  # squares
                square[a:b] = out[1].numpy()[: b - a]
            bar.advance()
    return mean, square


def _compile_predict(model: Any, shape: tuple[int, ...], batch: int):

    @tf.function(input_signature=[tf.TensorSpec((batch, *shape), tf.float32)])
    def predict(z):
        y = model(z, training=False)
        return y[0] if isinstance(y, list | tuple) else y

    return predict


def _predict(model: Any, x: np.ndarray, batch: int) -> np.ndarray:
    """The model's (first) output of every row, compiled for fixed batches: ``batch`` rows, or
    the power of two ≥ the rows at hand when fewer (a few shapes, and one sample is not
    padded to a whole batch)."""
    batch = _batching.call_rows(x.shape[0], batch)
    shape = tuple(x.shape[1:])
    predict = memo(
        _FUNCTIONS, model, ("predict", shape, batch), lambda: _compile_predict(model, shape, batch)
    )
    outs = []
    for a, b in _batches(x.shape[0], batch):
        y = predict(pad_rows(np.ascontiguousarray(x[a:b], np.float32), batch))
        outs.append(np.asarray(y)[: b - a])
    return np.concatenate(outs)


_REWIRED = per_object()


def _rewired(model: Any, cut: Any, qoi_cut: Any) -> tuple[Any, Any]:
    """(head, tail) of ``tmx.inspect.rewire``, cached per live model and cut."""

    return memo(
        _REWIRED, model, (repr(cut), repr(qoi_cut)), lambda: rewire(model, cut, qoi_cut=qoi_cut)
    )


def _qoi_model(model: Any, qoi_cut: Any) -> Any:
    """The model whose output is the QoI tensor (the model itself, or its qoi_cut endpoint)."""
    if qoi_cut is None:
        return model

    return memo(_REWIRED, model, ("qoi", repr(qoi_cut)), lambda: expose(model, [qoi_cut]))


def _tail_functions(tail: Any, qoi: _Qoi, x_shape: tuple, z_shape: tuple, batch: int):
    """(gradient w.r.t. the cut, QoI value) of ``tail([x, z])``, compiled for fixed batches."""
    key = ("tail", *_qoi_key(qoi), x_shape, batch)
    return memo(_FUNCTIONS, tail, key, lambda: _compile_tail(tail, qoi, x_shape, z_shape, batch))


def _compile_tail(tail: Any, qoi: _Qoi, x_shape: tuple, z_shape: tuple, batch: int):

    specs = [
        tf.TensorSpec((batch, *x_shape), tf.float32),
        tf.TensorSpec((batch, *z_shape), tf.float32),
        _param_spec(tf, qoi, batch),
    ]

    def output(x, z):
        y = tail([x, z], training=False)
        return tf.cast(y[0] if isinstance(y, list | tuple) else y, tf.float32)

    @tf.function(input_signature=specs)
    def gradient(x, z, params):
        with tf.GradientTape() as tape:
            tape.watch(z)
            total = tf.reduce_sum(_qoi_tensor(tf, qoi, output(x, z), params))
        g = tape.gradient(total, z)
        return tf.zeros_like(z) if g is None else g

    @tf.function(input_signature=specs)
    def value(x, z, params):
        return _qoi_tensor(tf, qoi, output(x, z), params)

    return gradient, value


def _head_values(head: Any, x: np.ndarray, batch: int, bar: Any = None) -> np.ndarray:
    """The cut's activations of every row of ``x`` (float32), in fixed batches; ``bar`` (a
    ``tmx._progress`` bar) advances once per batch."""

    outs = []
    for a, b in _batches(x.shape[0], batch):
        h = head(tf.constant(pad_rows(np.ascontiguousarray(x[a:b], np.float32), batch)))
        outs.append(np.asarray(h, np.float32)[: b - a])
        if bar is not None:
            bar.advance()
    return np.concatenate(outs)


def _tail_values(tail: Any, x: np.ndarray, z: np.ndarray, batch: int) -> np.ndarray:
    """``tail([x, z])`` of every row (float32), in fixed batches."""

    outs = []
    for a, b in _batches(x.shape[0], batch):
        y = tail(
            [
                tf.constant(pad_rows(x[a:b], batch)),
                tf.constant(pad_rows(z[a:b], batch)),
            ]
        )
        outs.append(np.asarray(y[0] if isinstance(y, list | tuple) else y, np.float32)[: b - a])
    return np.concatenate(outs)


def _doi_space(
    model: Any, cut: Any, cut_name: str, doi_cut: Any, head: Any, batch: int
) -> tuple[str, Callable[[np.ndarray, np.ndarray], np.ndarray] | None]:
    """The DoI's place (``"cut"``, ``"input"`` or a layer's endpoint name) and the map from
    (x rows, DoI points) to the cut's activations (None when the DoI is at the cut)."""
    if doi_cut is None:
        return "cut", None
    if isinstance(doi_cut, str) and doi_cut == "input":
        return "input", lambda x_rows, z: _head_values(head, z, batch)

    try:
        name = resolve(model, [doi_cut])[0].name
    except ValueError as err:
        raise ValueError(f"doi_cut: {err}") from None
    if name == cut_name:
        return "cut", None
    try:
        mid = _rewired(model, doi_cut, cut)[1]
    except ValueError as err:
        raise ValueError(
            f"doi_cut {name!r} must lie upstream of the cut {cut_name!r} (the cut's "
            f"activations must depend on it): {err}"
        ) from None
    return name, lambda x_rows, z: _tail_values(mid, x_rows, z, batch)


@overload
def attribute(
    model: Any,
    x: Any,
    *,
    cut: Any = None,
    qoi: Any = "max",
    qoi_cut: Any = None,
    doi: Doi | Callable[..., tuple[np.ndarray, np.ndarray]] = "point",
    doi_cut: Any = None,
    multiply_activation: bool = True,
    baseline: Any = None,
    steps: int = 50,
    rule: Rule = "gausslegendre",
    noise: float = 0.1,
    samples: int = 20,
    seed: int = 0,
    batch_size: int = 64,
    return_delta: Literal[False] = False,
    progress: bool | None = None,
    gradients: Gradients = "mean",
    _gradients: Any = UNSET,
) -> xr.DataArray: ...


@overload
def attribute(
    model: Any,
    x: Any,
    *,
    cut: Any = None,
    qoi: Any = "max",
    qoi_cut: Any = None,
    doi: Doi | Callable[..., tuple[np.ndarray, np.ndarray]] = "point",
    doi_cut: Any = None,
    multiply_activation: bool = True,
    baseline: Any = None,
    steps: int = 50,
    rule: Rule = "gausslegendre",
    noise: float = 0.1,
    samples: int = 20,
    seed: int = 0,
    batch_size: int = 64,
    return_delta: Literal[True],
    progress: bool | None = None,
    gradients: Gradients = "mean",
    _gradients: Any = UNSET,
) -> xr.Dataset: ...


@overload
def attribute(
    model: Any,
    x: Any,
    *,
    cut: Any = None,
    qoi: Any = "max",
    qoi_cut: Any = None,
    doi: Doi | Callable[..., tuple[np.ndarray, np.ndarray]] = "point",
    doi_cut: Any = None,
    multiply_activation: bool = True,
    baseline: Any = None,
    steps: int = 50,
    rule: Rule = "gausslegendre",
    noise: float = 0.1,
    samples: int = 20,
    seed: int = 0,
    batch_size: int = 64,
    return_delta: bool = False,
    progress: bool | None = None,
    gradients: Gradients = "mean",
    _gradients: Any = UNSET,
) -> xr.DataArray | xr.Dataset: ...


def attribute(
    model: Any,
    x: Any,
    *,
    cut: Any = None,
    qoi: Any = "max",
    qoi_cut: Any = None,
    doi: Doi | Callable[..., tuple[np.ndarray, np.ndarray]] = "point",
    doi_cut: Any = None,
    multiply_activation: bool = True,
    baseline: Any = None,
    steps: int = 50,
    rule: Rule = "gausslegendre",
    noise: float = 0.1,
    samples: int = 20,
    seed: int = 0,
    batch_size: int = 64,
    return_delta: bool = False,
    progress: bool | None = None,
    gradients: Gradients = "mean",
    _gradients: Any = UNSET,
) -> xr.DataArray | xr.Dataset:
    """Internal influence: E_{z∼DoI}[∂Q/∂h (z)] ⊙ m(h(x)), one attribution per cut value.

    attribution_i = (Σ_k w_k ∂Q_i/∂h (z_ik)) ⊙ m_i, with h the tensor at the cut, z_ik the
    DoI's points for sample i and m_i = h(x_i) (``doi="point"``/``"gaussian"``),
    h(x_i) − h(b_i) (``"linear"``) or 1 (``multiply_activation=False``). The model runs in
    inference mode. Memory: the cut's activations of all samples are held (N × cut size).

    Parameters
    ----------
    model : keras.Model
        A Keras 3 model (or any callable ``model(z, training=False)`` of TensorFlow tensors).
    x : array-like or xr.DataArray
        The samples to explain, sample axis first (a DataArray needs a ``sample`` dim; its
        sample coordinates, such as ``label``, are carried over).
    cut : endpoint descriptor or list of them, optional
        Where attributions live: ``None`` = the model input, or a layer as in
        ``tmx.activations(layers=...)`` (name, index, nested path, ``{"name", "link", "call"}``;
        an input link replaces the tensor for that one call only). The graph is re-wired
        (``tmx.inspect.rewire``): branches that bypass the cut keep seeing x. A list of
        layers gives one ``(sample, unit)`` array in the activation cube's unit layout
        (coords ``layer``, ``channel``, ``y``, ``x``), each cut computed as if alone.
    qoi_cut : endpoint descriptor, optional
        Where the QoI is computed: ``None`` = the model output, or a layer.
    doi_cut : None, "input" or endpoint descriptor
        Where the DoI applies: ``None`` = at the cut (points around h(x), a baseline in the
        cut's shape: layer integrated gradients; Captum's LayerIntegratedGradients with
        ``baseline="input"``), ``"input"`` = along the model input (points around x, the
        gradient taken at the cut's activations of each point: Captum's InternalInfluence,
        times h(x) − h(b) when ``multiply_activation``), or any layer upstream of the
        cut (points around that layer's h_D(x), a baseline in its shape; the cut's
        activations of each point are computed from it, branches bypassing it see x).
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
    baseline : array-like, "input" or ("input", b), optional
        The linear DoI's start in the DoI's space: one sample's shape, (1, …) or (N, …);
        default zeros there (for a layer cut: 0 in the cut's space, TruLens's convention).
        ``"input"``: the activations of a zero input where the DoI lives, h(0) (Captum's
        layer baseline); ``("input", b)``: those of the input baseline b.
    steps, rule : int, str
        The linear DoI's quadrature.
    noise, samples, seed : float, int, int
        The gaussian DoI: standard deviation, points per sample, seed (≥ 0).
    batch_size : int, default 64
        Rows (sample × DoI point) per compiled call: bounds memory; never changes the numbers.
    return_delta : bool, default False
        Linear DoI only: also return ``delta`` = Σ attribution − (Q(x) − Q(b)) per sample, the
        completeness error of the quadrature.
    progress : bool or None, default None
        A progress bar over the compiled gradient calls; None: when run interactively (a
        terminal, not under pytest or CI).
    gradients : {"mean", "square", "variance"}, default "mean"
        Which moment of the gradients g_k = ∂Q/∂h (z_k) over the DoI's points (weights w_k
        summing to 1) is multiplied by m: ``"mean"`` Σ_k w_k g_k (the formula above);
        ``"square"`` Σ_k w_k g_k² (SmoothGrad², Smilkov et al. 2017); ``"variance"``
        Σ_k w_k g_k² − (Σ_k w_k g_k)², clipped at 0 (VarGrad, Adebayo et al. 2018). With
        ``doi="gaussian"`` and ``multiply_activation=False`` these are ``smoothgrad``'s kinds.
        ``_gradients=`` is its deprecated former name (a ``DeprecationWarning``).

    Returns
    -------
    xr.DataArray or xr.Dataset
        ``attribution``, float64, dims ``(sample, y, x, channel)`` when the cut holds images
        or feature maps (rank 3 per sample), otherwise ``(sample, unit)`` over the flattened
        features; ``attrs`` record ``method`` = "attribute" (the named methods, such as
        ``saliency``, write their own name), cut, qoi, doi, steps, rule,
        multiply_activation (0/1), noise, samples, seed, baseline, gradients and tmx_version.
        With ``return_delta``, a Dataset with
        ``attribution`` and ``delta`` (sample) ((sample, cut) for several cuts).

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx import attribution as A
    >>> model = tmx.models.small_cnn((8, 8, 1), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    >>> lig = A.attribute(model, x, cut="conv2", qoi=3, doi="linear", baseline="input")
    >>> lig.dims, lig.attrs["baseline"]
    (('sample', 'y', 'x', 'channel'), 'h(0 input)')
    >>> both = A.attribute(model, x, cut=["conv1", "dense"], qoi=3)
    >>> both.attrs["layers"]
    ['conv1', 'dense']
    >>> vg = A.attribute(model, x, qoi=3, doi="gaussian", samples=4, multiply_activation=False,
    ...                  gradients="variance")                    # VarGrad
    >>> vg.shape, bool((vg >= 0).all())
    ((2, 8, 8, 1), True)

    Raises
    ------
    RuntimeError
        When called inside a ``tf.function``: attributions run eagerly.
    ValueError
        For bad arguments (the message names the argument).
    """
    _require_eager()
    gradients = renamed("attribute", "_gradients", "gradients", _gradients, gradients, "mean")
    cuts, options = _check_arguments(
        cut, doi_cut, doi, multiply_activation, steps, rule, noise, samples, seed, batch_size,
        gradients, return_delta, progress,
    )  # fmt: skip
    job = _make_job(
        model, x, qoi, qoi_cut, doi, doi_cut, multiply_activation, baseline, gradients, options
    )
    results = _attribute_cuts(job, [cut] if cuts is None else cuts, return_delta)
    return _wrap(job, results, several=cuts is not None, return_delta=return_delta)


# -- attribute's steps: check, plan one cut, compute it, wrap ------------------------------------
def _check_arguments(
    cut: Any,
    doi_cut: Any,
    doi: Any,
    multiply_activation: Any,
    steps: Any,
    rule: Any,
    noise: Any,
    samples: Any,
    seed: Any,
    batch_size: Any,
    gradients: Any,
    return_delta: bool,
    progress: Any,
) -> tuple[list[Any] | None, dict[str, Any]]:
    """``attribute``'s argument checks, in order: (the list of several cuts or None, the
    options of ``gradient_moments``)."""
    show = _progress.resolve(progress)
    cuts = list(cut) if isinstance(cut, list) else None
    if cuts is not None and not cuts:
        raise ValueError("cut: an empty list; pass None (the input), a layer, or several layers")
    if doi_cut not in (None, "input") and (cut is None or cuts is not None):
        where = (
            "with cut=None the attributions live at the model input"
            if cut is None
            else ("with several cuts each has its own DoI")
        )
        raise ValueError(
            f"doi_cut={doi_cut!r}: {where}, so the DoI can only apply at the cut or the "
            "input (doi_cut=None or 'input')"
        )
    v.flag(multiply_activation, "multiply_activation")
    if not callable(doi):
        v.choice(doi, "doi", DOIS)
    steps = v.positive_int(steps, "steps")
    v.choice(rule, "rule", RULES)
    samples = v.positive_int(samples, "samples")
    batch_size = v.positive_int(batch_size, "batch_size")
    noise = check_noise(noise)
    seed = v.seed(seed)
    v.choice(gradients, "gradients", GRADIENTS)
    if return_delta and doi != "linear":
        raise ValueError('return_delta needs doi="linear" (the completeness of a path integral)')
    options = {
        "steps": steps,
        "rule": rule,
        "noise": noise,
        "samples": samples,
        "seed": int(seed),
        "batch_size": batch_size,
        "squares": gradients != "mean",
        "progress": show,
    }
    return cuts, options


def _input_baseline(baseline: Any) -> Any:
    """The input baseline of ``baseline="input"`` (zeros: None) or ``("input", b)`` (b), or
    ``False`` when the baseline is given in the DoI's space (or is the default zeros)."""
    if isinstance(baseline, str):
        if baseline != "input":
            raise ValueError(
                f'baseline must be an array, "input" or ("input", b); got {baseline!r}'
            )
        return None
    if isinstance(baseline, tuple) and len(baseline) == 2 and isinstance(baseline[0], str):
        if baseline[0] != "input":
            raise ValueError(
                f'baseline must be an array, "input" or ("input", b); got a tuple starting '
                f"with {baseline[0]!r}"
            )
        return baseline[1]
    return False


def _baseline_name(baseline: Any, input_base: Any) -> str:
    """The baseline as recorded in attrs."""
    if input_base is not False:
        return "h(0 input)" if input_base is None else "h(input baseline)"
    return "zeros" if baseline is None else "given"


@dataclass(frozen=True)
class _Job:
    """What every cut of one ``attribute`` call shares."""

    model: Any
    values: np.ndarray
    coords: dict[str, Any]  # the sample coordinates of x
    q: _Qoi
    q_model: Any
    qoi_cut: Any
    doi: Any
    doi_cut: Any
    multiply: bool
    gradients: str  # "mean", "square" or "variance" of the gradients over the DoI
    baseline: Any  # the linear DoI's start in the DoI's space (None: zeros), unless from_input
    from_input: bool  # baseline="input" or ("input", b): the DoI starts at an input's values
    zero_input: bool  # that input is zeros (baseline="input")
    b_input: np.ndarray | None  # that input, x's shape (linear DoI only)
    options: dict
    attrs: dict


def _make_job(
    model: Any,
    x: Any,
    qoi: Any,
    qoi_cut: Any,
    doi: Any,
    doi_cut: Any,
    multiply: bool,
    baseline: Any,
    gradients: str,
    options: dict[str, Any],
) -> _Job:
    """The inputs, the QoI (parsed, its classes checked), the baseline and the attrs that
    every cut of one call shares."""
    input_base = _input_baseline(baseline)
    values, coords = _as_inputs(x)
    batch_size = options["batch_size"]
    q_model = _qoi_model(model, qoi_cut)
    q = _parse_qoi(qoi, values.shape[0], lambda: _predict(q_model, values, batch_size))
    _check_classes(q, q_model, values)
    from_input = input_base is not False
    b_input = _baseline(input_base, values) if from_input and doi == "linear" else None
    attrs = provenance(
        "method",
        "attribute",
        qoi=q.description,
        qoi_cut="output" if qoi_cut is None else repr(qoi_cut),
        doi=doi if isinstance(doi, str) else "custom",
        steps=options["steps"],
        rule=options["rule"],
        multiply_activation=multiply,
        noise=options["noise"],
        samples=options["samples"],
        seed=options["seed"],
        baseline=_baseline_name(baseline, input_base),
        gradients=gradients,
    )
    return _Job(
        model, values, coords, q, q_model, qoi_cut, doi, doi_cut, multiply, gradients, baseline,
        from_input, from_input and input_base is None, b_input, options, attrs,
    )  # fmt: skip


@dataclass(frozen=True)
class _Place:
    """Where one cut's attributions and its DoI live."""

    cut_name: str  # "input", or the cut's endpoint name
    doi_name: str  # "cut", "input" or the DoI layer's endpoint name (as recorded in attrs)
    activation: np.ndarray  # h(x): the values at the cut, (N, *cut shape)
    space: np.ndarray  # the values where the DoI lives, (N, *DoI shape)
    space_head: Any  # the model from x to the DoI's space; None: the DoI lives at the input
    to_cut: Callable[[np.ndarray, np.ndarray], np.ndarray] | None  # DoI points → cut values
    grad: Callable[[np.ndarray, np.ndarray, int], np.ndarray] | None  # None: ∂Q/∂x of q_model


def _input_place(job: _Job) -> _Place:
    """Attributions at the model input: the DoI lives there too."""
    doi_name = "cut" if job.doi_cut is None else "input"
    return _Place("input", doi_name, job.values, job.values, None, None, None)


def _cut_place(job: _Job, cut: Any) -> _Place:
    """Attributions at a layer: its activations, where the DoI lives (the cut, the input or an
    upstream layer) and the gradient at the cut of the rewired model's tail."""
    model, values, batch_size = job.model, job.values, job.options["batch_size"]
    head, tail = _rewired(model, cut, job.qoi_cut)
    cut_name = resolve(model, [cut])[0].name
    h = _head_values(head, values, batch_size)
    doi_name, to_cut = _doi_space(model, cut, cut_name, job.doi_cut, head, batch_size)
    if doi_name in ("cut", "input"):
        at_input = doi_name == "input"
        space, space_head = (values, None) if at_input else (h, head)
    else:
        space_head = _rewired(model, job.doi_cut, cut)[0]
        space = _head_values(space_head, values, batch_size)
    grad = _cut_gradient(job, tail, h.shape[1:], to_cut, at_input=doi_name == "input")
    return _Place(cut_name, doi_name, h, space, space_head, to_cut, grad)


def _cut_gradient(
    job: _Job,
    tail: Any,
    cut_shape: tuple[int, ...],
    to_cut: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
    at_input: bool,
) -> Callable[[np.ndarray, np.ndarray, int], np.ndarray]:
    """``grad(sample indices, DoI points, rows)`` of ``gradient_moments``: ∂Q/∂h at the cut's
    values of each point (``to_cut`` maps the points there when the DoI lives elsewhere)."""
    values, q = job.values, job.q

    def grad(s_idx: np.ndarray, z: np.ndarray, rows: int) -> np.ndarray:
        z = np.ascontiguousarray(z, np.float32)
        if to_cut is None:
            x_rows, z_rows = values[s_idx], z
        else:  # the DoI moves the input or a layer; the gradient is taken at the cut
            x_rows = z if at_input else values[s_idx]
            z_rows = to_cut(values[s_idx], z)
        params = _row_params(q, s_idx, rows)
        g_fn = _tail_functions(tail, q, values.shape[1:], cut_shape, rows)[0]
        g = g_fn(pad_rows(x_rows, rows), pad_rows(z_rows, rows), params)
        return np.asarray(g, np.float64)[: s_idx.size]

    return grad


def _doi_baseline(job: _Job, place: _Place, at_model_input: bool) -> np.ndarray | None:
    """The linear DoI's start where the DoI lives; None for the other DoIs, and for zeros in
    the model input's own attributions (their points are then α x, the same numbers)."""
    if job.doi != "linear":
        return None
    if not job.from_input:  # given in the DoI's space, or the default zeros
        if job.baseline is None and at_model_input:
            return None
        return _baseline(job.baseline, place.space)
    assert job.b_input is not None  # set for a linear DoI from an input baseline
    if place.space_head is None:  # the DoI lives at the model input: the input baseline
        return None if at_model_input and job.zero_input else job.b_input
    # h_D(b): the baseline input's activations where the DoI lives
    batch_size = job.options["batch_size"]
    return _head_values(place.space_head, np.ascontiguousarray(job.b_input), batch_size)


@dataclass(frozen=True)
class _Result:
    """One cut's attribution (N, *cut shape) float64, completeness delta (N,) or None, and
    names."""

    attr: np.ndarray
    delta: np.ndarray | None
    cut_name: str
    doi_name: str


def _attribute_cuts(job: _Job, cuts: list[Any], return_delta: bool) -> list[_Result]:
    """Each cut computed as if alone (a cut given twice is an error)."""
    results: list[_Result] = []
    for cut in cuts:
        result = _attribute_one(job, cut, return_delta)
        if any(r.cut_name == result.cut_name for r in results):
            raise ValueError(f"cut: {result.cut_name!r} is given twice")
        results.append(result)
    return results


def _attribute_one(job: _Job, cut: Any, return_delta: bool) -> _Result:
    """One cut: (Σ_k w_k ∂Q/∂h (z_k)) ⊙ m, or the square or variance of the gradients."""
    place = _input_place(job) if cut is None else _cut_place(job, cut)
    base = _doi_baseline(job, place, at_model_input=cut is None)
    mean, square = gradient_moments(
        job.q_model if place.grad is None else None,
        place.space,
        job.q,
        job.doi,
        baseline=base,
        grad=place.grad,
        attr_shape=None if place.grad is None else place.activation.shape[1:],
        **job.options,
    )
    attr = _combine(job.gradients, mean, square)
    if job.multiply:
        if base is not None:  # the linear DoI: × (h(x) − h(b))
            to_cut = place.to_cut
            b_cut = (
                base
                if to_cut is None
                else to_cut(job.values, np.ascontiguousarray(base, np.float32))
            )
            attr *= place.activation - b_cut
        else:  # point, gaussian, or a linear DoI from a zero baseline: × h(x)
            attr *= place.activation
    delta = _delta(job, cut, place, attr, base) if return_delta else None
    return _Result(attr, delta, place.cut_name, place.doi_name)


def _combine(which: str, mean: np.ndarray, square: np.ndarray | None) -> np.ndarray:
    """The gradients' mean Σ_k w_k g_k, square Σ_k w_k g_k², or variance (the two combined,
    the weights summing to 1; clipped at 0 against rounding)."""
    if which == "mean":
        return mean
    assert square is not None  # the options ask for the squares unless only the mean
    if which == "square":
        return square
    return np.maximum(square - mean**2, 0.0)


def _delta(
    job: _Job, cut: Any, place: _Place, attr: np.ndarray, base: np.ndarray | None
) -> np.ndarray:
    """Σ attribution − (Q(x) − Q(b)) per sample: the completeness error of the linear DoI, Q
    with the DoI's place set to its values at x and at the baseline (other branches at x)."""
    values, q, batch_size = job.values, job.q, job.options["batch_size"]
    n, space = values.shape[0], place.space
    if base is None:
        base = np.zeros_like(space)
    if place.space_head is None:  # the DoI at the model input
        q_x = _qoi_values(job.q_model, q, values, batch_size)
        q_b = _qoi_values(job.q_model, q, np.ascontiguousarray(base), batch_size)
    else:
        where = cut if place.doi_name == "cut" else job.doi_cut
        tail_d = _rewired(job.model, where, job.qoi_cut)[1]
        value_d = _tail_functions(tail_d, q, values.shape[1:], space.shape[1:], batch_size)[1]
        q_x = np.empty(n)
        q_b = np.empty(n)
        for a, b in _batches(n, batch_size):
            params = _row_params(q, np.arange(a, b), batch_size)
            xb = pad_rows(values[a:b], batch_size)
            q_x[a:b] = np.asarray(value_d(xb, pad_rows(space[a:b], batch_size), params))[: b - a]
            bb = pad_rows(np.ascontiguousarray(base[a:b], np.float32), batch_size)
            q_b[a:b] = np.asarray(value_d(xb, bb, params))[: b - a]
    total = attr.reshape(n, -1).sum(axis=1)
    return total - (q_x - q_b)


def _wrap(
    job: _Job, results: list[_Result], *, several: bool, return_delta: bool
) -> xr.DataArray | xr.Dataset:
    """The labeled result: one cut's attribution with its own dims, or several cuts' in one
    ``(sample, unit)`` array in the activation cube's unit layout; with the deltas."""
    n, coords = job.values.shape[0], job.coords
    names = [r.cut_name for r in results]
    doi_names = [r.doi_name for r in results]
    dims: tuple[str, ...]
    if several:
        attrs = {"cut": names, **job.attrs, "doi_cut": doi_names, "layers": names}
        parts = [r.attr.reshape(n, -1) for r in results]
        units = unit_coords(names, [r.attr.shape[1:] for r in results])
        total = sum(p.shape[1] for p in parts)
        data, dims = np.concatenate(parts, axis=1), ("sample", "unit")
        unit = {"unit": np.arange(total), **{k: ("unit", c) for k, c in units.items()}}
        out_coords = {**coords, **unit}
    else:
        attrs = {"cut": names[0], **job.attrs, "doi_cut": doi_names[0]}
        data, out_coords = results[0].attr, coords
        if data.ndim == 4:
            dims = ("sample", "y", "x", "channel")
        else:
            dims, data = ("sample", "unit"), data.reshape(n, -1)
    out = xr.DataArray(data, dims=dims, coords=out_coords, name="attribution", attrs=attrs)
    if not return_delta:
        return out
    deltas = [r.delta for r in results if r.delta is not None]  # return_delta: all given
    if several:
        delta = xr.DataArray(
            np.stack(deltas, axis=1),
            dims=("sample", "cut"),
            coords={**coords, "cut": names},
            name="delta",
        )
    else:
        delta = xr.DataArray(deltas[0], dims=("sample",), coords=coords, name="delta")
    return xr.Dataset({"attribution": out, "delta": delta}, attrs=attrs)
