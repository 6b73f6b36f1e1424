"""Noise tunnel, layer conductance and GradientSHAP: methods built on tmx's compiled gradients.

References
----------
Smilkov, D., Thorat, N., Kim, B., Viégas, F., Wattenberg, M. (2017). SmoothGrad: removing noise
by adding noise. arXiv:1706.03825.
Adebayo, J., Gilmer, J., Goodfellow, I., Kim, B. (2018). Local explanation methods for deep
neural networks lack sensitivity to parameter values. ICLR workshop (VarGrad).
Dhamdhere, K., Sundararajan, M., Yan, Q. (2018). How important is a neuron? arXiv:1805.12233
(ICLR 2019).
Lundberg, S. M., Lee, S.-I. (2017). A unified approach to interpreting model predictions.
NeurIPS (GradientSHAP in the SHAP library).
Erion, G., Janizek, J. D., Sturmfels, P., Lundberg, S. M., Lee, S.-I. (2021). Improving
performance of deep learning models with axiomatic attribution priors and expected gradients.
Nature Machine Intelligence 3, 620–631 (arXiv:1906.10670).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args

import numpy as np
import tensorflow as tf
import xarray as xr

from .. import _batching, _progress
from .. import _validate as v
from .._batching import pad_rows
from .._memo import memo
from .._provenance import provenance
from .._schema import unit_coords
from ..inspect import resolve
from ._cam import _require_graph, _target
from ._core import (
    _FUNCTIONS,
    _as_inputs,
    _baseline,
    _batches,
    _functions,
    _param_spec,
    _qoi_key,
    _qoi_tensor,
    _qoi_values,
    _require_eager,
    _rewired,
    _row_params,
    _single_output,
)
from ._doi import RULES, Rule, check_noise, draws, quadrature

NoiseKind = Literal["smoothgrad", "smoothgrad_sq", "vargrad"]
Derivative = Literal["jvp", "difference"]
NOISE_KINDS = get_args(NoiseKind)  # checked at the call
DERIVATIVES = get_args(Derivative)
_ROWS_PER_CALL = 1024  # noisy rows handed to the wrapped method at a time (bounds memory)


def _dims(data: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """The attribution's dims: (sample, y, x, channel) for rank-3 values, else (sample, unit)."""
    if data.ndim == 4:
        return ("sample", "y", "x", "channel"), data
    return ("sample", "unit"), data.reshape(data.shape[0], -1)


# -- noise tunnel --------------------------------------------------------------------------------
def noise_tunnel(
    method: Callable[..., Any],
    model: Any,
    x: Any,
    target: Any = None,
    *,
    kind: NoiseKind = "smoothgrad",
    samples: int = 20,
    noise: float = 0.1,
    seed: int = 0,
    absolute: bool | None = None,
    batch_size: int = 64,
    progress: bool | None = None,
    **kwargs: Any,
) -> xr.DataArray:
    """A noise tunnel around any attribution method: Φ aggregated over noisy copies of x.

    For each sample, ``samples`` copies x̃_s = x + ε_s, ε_s ~ N(0, noise²) (drawn from
    (seed, the sample's position), so results never depend on ``batch_size``), are explained
    by ``method`` for the same target, and aggregated:

    - ``"smoothgrad"``: (1/S) Σ_s Φ(x̃_s) (Smilkov et al. 2017);
    - ``"smoothgrad_sq"``: (1/S) Σ_s Φ(x̃_s)²;
    - ``"vargrad"``: (1/S) Σ_s Φ(x̃_s)² − ((1/S) Σ_s Φ(x̃_s))², the population variance
      (Adebayo et al. 2018).

    Parameters
    ----------
    method : callable
        An attribution method of ``tmx.attribution`` called as
        ``method(model, rows, targets, batch_size=..., **kwargs)`` (``saliency``,
        ``integrated_gradients``, ``input_x_gradient``, ``gradient_shap``,
        ``guided_backprop``, ``layer_conductance``, ...).
    model, x
        As for the method; x with the sample axis first (a DataArray keeps its sample coords).
    target : int, ints or None
        The class explained for every noisy copy of a sample; None: the class predicted at the
        *noise-free* x (so every copy explains the same class).
    kind : {"smoothgrad", "smoothgrad_sq", "vargrad"}
    samples : int, default 20
        Noisy copies per sample (Captum's ``nt_samples``).
    noise : float, default 0.1
        Standard deviation of the noise (Captum's ``stdevs``), in the input's units.
    seed : int, default 0
    absolute : bool or None, default None
        None: the method's own convention (``saliency`` takes |∂Q/∂x| by default, as Captum's
        ``Saliency``). True/False: passed on as ``absolute`` to a method that has that option
        (``saliency``); for any other method True takes |Φ(x̃_s)| before aggregating.
    batch_size : int, default 64
        Passed to the method.
    progress : bool or None, default None
        Passed to a method that takes ``progress`` (``saliency``, ``integrated_gradients``,
        ``gradient_shap``, ...): its bar over its compiled calls on the noisy copies, one bar
        per call of the method (at most 1024 noisy rows a call, so one bar for
        N · ``samples`` ≤ 1024). For a method without it, a bar over the samples, advanced
        after each call. None: when run interactively (a terminal, not under pytest or CI).
    **kwargs
        Other arguments of the method. A ``baseline`` with one row per sample (N, …) is
        repeated for the sample's noisy copies.

    Returns
    -------
    xr.DataArray
        The method's dims and float64 values; the sample coordinates of x; attrs: the
        method's attrs, ``method`` = ``"noise_tunnel"``, ``inner_method``, ``kind``,
        ``samples``, ``noise``, ``seed``, ``absolute`` (1, 0, or ``"None"`` for the method's
        own convention) and ``tmx_version``.

    Notes
    -----
    Captum's default ``NoiseTunnel(Saliency(m)).attribute(x, target=c)`` (``nt_type=
    "smoothgrad"``, ``nt_samples=5``, ``stdevs=1.0``, Saliency's ``abs=True``) is
    ``noise_tunnel(saliency, m, x, c, samples=5, noise=1.0)`` given the same draws;
    ``absolute=False`` gives the signed gradients of :func:`tmx.attribution.smoothgrad`.

    References
    ----------
    Smilkov et al. (2017), arXiv:1706.03825; Adebayo et al. (2018), ICLR workshop.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx import attribution as A
    >>> model = tmx.models.small_cnn((8, 8, 1), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    >>> sg = A.noise_tunnel(A.integrated_gradients, model, x, 3, samples=4, steps=8)
    >>> sg.dims, sg.attrs["inner_method"]
    (('sample', 'y', 'x', 'channel'), 'integrated_gradients')
    """
    _require_eager()
    if not callable(method):
        raise ValueError(f"method must be an attribution function; got {method!r}")
    v.choice(kind, "kind", NOISE_KINDS)
    samples = v.positive_int(samples, "samples")
    noise = check_noise(noise)
    seed = v.seed(seed)
    batch_size = v.positive_int(batch_size, "batch_size")
    show = _progress.resolve(progress)
    if absolute is not None:
        absolute = v.flag(absolute, "absolute")
    values, coords = _as_inputs(x)
    n, shape = values.shape[0], values.shape[1:]
    name = getattr(method, "__name__", None) or getattr(
        getattr(method, "func", None), "__name__", "method"
    )
    accepts: Mapping[str, inspect.Parameter]
    try:
        accepts = inspect.signature(method).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        accepts = {}
    take_abs = False
    if absolute is not None:
        if "absolute" in accepts:
            kwargs["absolute"] = absolute
        else:
            take_abs = absolute
    targets = None
    if target is None or not callable(target):
        q = _target(model, values, target, batch_size)
        if q.kind == "class":
            targets = q.params
    base = kwargs.pop("baseline", None)
    per_sample_base = None
    if base is not None and not isinstance(base, str | tuple):
        b = np.asarray(base.values if isinstance(base, xr.DataArray) else base, np.float32)
        if b.ndim == values.ndim and b.shape[0] == n and n > 1:
            per_sample_base = b
        else:
            kwargs["baseline"] = b
    elif base is not None:
        kwargs["baseline"] = base
    passes = "progress" in accepts  # the method's own bar, over its calls
    group = max(1, _ROWS_PER_CALL // samples)
    first_sum = first_sq = None
    out_attrs: dict = {}
    with _progress.steps(n, show and not passes, "sample") as bar:
        for a, b in _batches(n, group):
            eps = draws("normal", shape, np.arange(a, b), samples, noise, seed)
            rows = (values[a:b, None] + eps).reshape(-1, *shape)
            call = dict(kwargs)
            if passes:
                call["progress"] = show
            if per_sample_base is not None:
                call["baseline"] = np.repeat(per_sample_base[a:b], samples, axis=0)
            t = target if targets is None else np.repeat(targets[a:b], samples)
            out = method(model, rows, t, batch_size=batch_size, **call)
            if isinstance(out, xr.Dataset):
                out = out["attribution"]
            if not out_attrs:
                out_attrs = dict(out.attrs)
                dims = out.dims
                attr_shape = out.shape[1:]
            phi = np.asarray(out.values, np.float64).reshape(b - a, samples, *attr_shape)
            if take_abs:
                phi = np.abs(phi)
            mean = phi.mean(axis=1)
            if first_sum is None:
                first_sum = np.empty((n, *attr_shape))
                first_sq = np.empty((n, *attr_shape)) if kind != "smoothgrad" else None
            first_sum[a:b] = mean
            if first_sq is not None:  # smoothgrad_sq or vargrad
                first_sq[a:b] = (
                    (phi**2).mean(axis=1) if kind == "smoothgrad_sq" else phi.var(axis=1)
                )
            bar.advance(b - a)
    data = first_sum if kind == "smoothgrad" else first_sq
    attrs = {
        **out_attrs,
        **provenance(
            "method",
            "noise_tunnel",
            inner_method=str(out_attrs.get("method", name)),
            kind=kind,
            samples=samples,
            noise=noise,
            seed=seed,
            absolute=absolute,
        ),
    }
    return xr.DataArray(data, dims=dims, coords=coords, name="attribution", attrs=attrs)


# -- GradientSHAP / expected gradients -----------------------------------------------------------
def shap_draws(
    positions: np.ndarray, n_baselines: int, samples: int, shape: tuple, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GradientSHAP's draws per sample position p, from ``numpy.random.default_rng([seed, p])``
    alone: baseline indices (P, S) uniform over the ``n_baselines``, α (P, S) uniform on
    [0, 1), and input noise (P, S, *shape) ~ N(0, noise²) (zeros when ``noise`` = 0).

    Examples
    --------
    >>> import numpy as np
    >>> from tmx import attribution as A
    >>> index, alpha, eps = A.shap_draws(np.array([0, 1]), 5, 3, (2,), 0.1, 0)
    >>> index.shape, alpha.shape, eps.shape
    ((2, 3), (2, 3), (2, 3, 2))
    >>> again = A.shap_draws(np.array([1]), 5, 3, (2,), 0.1, 0)    # position 1 alone: same draws
    >>> bool((again[0][0] == index[1]).all() and (again[2][0] == eps[1]).all())
    True
    """
    p = len(positions)
    index = np.empty((p, samples), np.int64)
    alpha = np.empty((p, samples), np.float64)
    eps = np.zeros((p, samples, *shape), np.float32)
    for row, pos in enumerate(np.asarray(positions, np.int64)):
        rng = np.random.default_rng([int(seed), int(pos)])
        index[row] = rng.integers(0, n_baselines, samples)
        alpha[row] = rng.uniform(0.0, 1.0, samples)
        if noise > 0:
            rng.standard_normal(dtype=np.float32, out=eps[row])
            eps[row] *= np.float32(noise)
    return index, alpha, eps


def gradient_shap(
    model: Any,
    x: Any,
    target: Any = None,
    *,
    baselines: Any,
    samples: int = 20,
    noise: float = 0.0,
    seed: int = 0,
    batch_size: int = 64,
    return_delta: bool = False,
    progress: bool | None = None,
) -> xr.DataArray | xr.Dataset:
    """GradientSHAP / expected gradients: E_{b∼D, α∼U(0,1), ε}[(x̃ − b) ⊙ ∂Q/∂z(b + α (x̃ − b))].

    For each sample, ``samples`` draws of a baseline b_s (uniformly among ``baselines``), a
    point α_s ~ U(0, 1) on the straight path and input noise ε_s ~ N(0, noise²)
    (x̃_s = x + ε_s) give

    .. math::

        Φ(x) = \\frac{1}{S} Σ_s (x̃_s − b_s) ⊙ ∂Q/∂z\\big(b_s + α_s (x̃_s − b_s)\\big),

    a Monte-Carlo estimate of integrated gradients averaged over the baseline distribution
    (Erion et al.'s expected gradients; the SHAP library's GradientExplainer and Captum's
    ``GradientShap``). Its expectation is complete: E[Σ Φ] = Q(x) − E_b[Q(b)] when
    ``noise`` = 0. Draws come from (seed, the sample's position) (:func:`shap_draws`).

    Parameters
    ----------
    model : keras.Model or callable
    x : array-like or xr.DataArray
        Samples, sample axis first.
    target : int, ints or None
        The class explained (None: the predicted class).
    baselines : array-like
        The baseline distribution: M samples (M, …) of x's sample shape (or one sample).
    samples : int, default 20
        Draws per sample (Captum's ``n_samples``, default 5 there).
    noise : float, default 0.0
        Standard deviation of the input noise (Captum's ``stdevs``).
    seed : int, default 0
    batch_size : int, default 64
        Rows (sample × draw) per compiled gradient call; never changes the numbers.
    return_delta : bool, default False
        Also return ``delta`` = Σ Φ − (Q(x) − (1/S) Σ_s Q(b_s)) per sample, the
        Monte-Carlo completeness error (0 in expectation without noise).
    progress : bool or None
        A bar over the compiled calls (None: when run interactively).

    Returns
    -------
    xr.DataArray or xr.Dataset
        ``attribution`` float64 with x's dims ((sample, y, x, channel) or (sample, unit)),
        attrs: method, qoi, samples, noise, seed, baselines (M), tmx_version; with
        ``return_delta`` a Dataset with ``delta`` (sample).

    References
    ----------
    Lundberg & Lee (2017), NeurIPS; Erion et al. (2021), Nature Machine Intelligence 3,
    620–631 (arXiv:1906.10670).

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx import attribution as A
    >>> model = tmx.models.small_cnn((8, 8, 1), seed=0)
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(2, 8, 8, 1)).astype("float32")
    >>> refs = rng.normal(size=(5, 8, 8, 1)).astype("float32")
    >>> shap = A.gradient_shap(model, x, 3, baselines=refs, samples=8, return_delta=True)
    >>> shap["attribution"].dims
    ('sample', 'y', 'x', 'channel')
    """
    _require_eager()
    _single_output(model, "gradient_shap")
    samples = v.positive_int(samples, "samples")
    noise = check_noise(noise)
    seed = v.seed(seed)
    batch_size = v.positive_int(batch_size, "batch_size")
    return_delta = v.flag(return_delta, "return_delta")
    show = _progress.resolve(progress)
    values, coords = _as_inputs(x)
    n, shape = values.shape[0], tuple(values.shape[1:])
    refs = np.asarray(baselines.values if isinstance(baselines, xr.DataArray) else baselines)
    refs = refs.astype(np.float32)
    if refs.shape == shape:
        refs = refs[None]
    if refs.ndim != values.ndim or refs.shape[1:] != shape or refs.shape[0] == 0:
        raise ValueError(
            f"baselines must be M samples of shape {shape}, i.e. (M, {', '.join(map(str, shape))})"
            f", or one sample; got {refs.shape}"
        )
    q = _target(model, values, target, batch_size)
    total = n * samples
    rows = _batching.call_rows(total, batch_size)
    gradient, _ = _functions(model, q, shape, rows)
    out = np.zeros((n, *shape), np.float64)
    ones = (1,) * len(shape)
    with _progress.steps(-(-total // rows), show, "batch") as bar:
        for a, b in _batches(total, rows):
            s_idx = np.arange(a, b) // samples
            d_idx = np.arange(a, b) % samples
            uniq = np.unique(s_idx)
            index, alpha, eps = shap_draws(uniq, refs.shape[0], samples, shape, noise, seed)
            where = np.searchsorted(uniq, s_idx)
            base = refs[index[where, d_idx]]
            xt = values[s_idx] + eps[where, d_idx]
            al = alpha[where, d_idx].astype(np.float32).reshape(-1, *ones)
            z = base + al * (xt - base)
            g, _ = gradient(pad_rows(np.ascontiguousarray(z), rows), _row_params(q, s_idx, rows))
            contrib = np.asarray(g, np.float64)[: b - a] * (xt - base)
            starts = np.flatnonzero(np.r_[True, s_idx[1:] != s_idx[:-1]])
            out[s_idx[starts]] += np.add.reduceat(contrib, starts, axis=0)
            bar.advance()
    out /= samples
    dims, data = _dims(out)
    attrs = provenance(
        "method",
        "gradient_shap",
        qoi=q.description,
        samples=samples,
        noise=noise,
        seed=seed,
        baselines=int(refs.shape[0]),
    )
    result = xr.DataArray(data, dims=dims, coords=coords, name="attribution", attrs=attrs)
    if not return_delta:
        return result
    index, _, _ = shap_draws(np.arange(n), refs.shape[0], samples, shape, 0.0, seed)
    q_refs = _qoi_of_baselines(model, q, refs, batch_size)  # (N or 1, M)
    q_b = np.take_along_axis(np.broadcast_to(q_refs, (n, refs.shape[0])), index, 1).mean(1)
    q_x = _qoi_values(model, q, values, batch_size)
    delta = out.reshape(n, -1).sum(axis=1) - (q_x - q_b)
    d = xr.DataArray(delta, dims=("sample",), coords=coords, name="delta")
    return xr.Dataset({"attribution": result, "delta": d}, attrs=attrs)


def _qoi_of_baselines(model: Any, q: Any, refs: np.ndarray, batch_size: int) -> np.ndarray:
    """Q_i(b_m) for every sample i's QoI and baseline m: (N, M) (one evaluation of the
    baselines per distinct class or pair)."""
    m = refs.shape[0]
    if q.kind not in ("class", "pair"):  # the same QoI for every sample
        return _qoi_values(model, q, refs, batch_size)[None]
    keys = [tuple(np.atleast_1d(p)) for p in q.params]
    cache: dict = {}
    for key in dict.fromkeys(keys):
        params = np.tile(np.asarray(key, np.int64), (m, 1))
        params = params[:, 0] if q.kind == "class" else params
        cache[key] = _qoi_values(
            model, type(q)(q.kind, params, q.fn, q.description), refs, batch_size
        )
    return np.stack([cache[k] for k in keys])


# -- layer conductance -------------------------------------------------------------------------
def _compile_conductance(head: Any, tail: Any, qoi: Any, x_shape: tuple, rows: int, jvp: bool):
    """Per row at point z: ∂Q/∂h(z) ⊙ J_h(z)·d (``jvp``), or (∂Q/∂h(z), h(z))."""

    specs = [tf.TensorSpec((rows, *x_shape), tf.float32)]
    if jvp:
        specs.append(tf.TensorSpec((rows, *x_shape), tf.float32))
    specs.append(_param_spec(tf, qoi, rows))

    def output(z, h):
        y = tail([z, h], training=False)
        return tf.cast(y[0] if isinstance(y, list | tuple) else y, tf.float32)

    @tf.function(input_signature=specs)
    def fn(*args):
        if jvp:
            z, d, params = args
            with tf.autodiff.ForwardAccumulator(z, d) as acc:
                h = head(z, training=False)
            dh = acc.jvp(h)
        else:
            z, params = args
            h = head(z, training=False)
        with tf.GradientTape() as tape:
            tape.watch(h)
            total = tf.reduce_sum(_qoi_tensor(tf, qoi, output(z, h), params))
        g = tape.gradient(total, h)
        g = tf.zeros_like(h) if g is None else g
        if jvp:
            return g * (tf.zeros_like(h) if dh is None else dh), h
        return g, h

    return fn


def _conductance_one(
    model: Any,
    values: np.ndarray,
    base: np.ndarray | None,
    q: Any,
    layer: Any,
    steps: int,
    rule: Rule,
    derivative: str,
    batch_size: int,
    show: bool,
) -> tuple[np.ndarray, str]:

    name = resolve(model, [layer])[0].name
    head, tail = _rewired(model, layer, None)
    jvp = derivative == "jvp"
    if jvp:
        alphas, weights = quadrature(steps, rule)
        per = steps
    else:  # Captum's: steps + 1 nodes, the gradient at node k times h(α_{k+1}) − h(α_k)
        alphas = quadrature(steps + 1, rule)[0]
        weights = None
        per = steps + 1
    n, shape = values.shape[0], tuple(values.shape[1:])
    total = n * per
    rows = _batching.call_rows(total, batch_size)
    fn = memo(
        _FUNCTIONS,
        tail,
        ("conductance", *_qoi_key(q), shape, rows, jvp),
        lambda: _compile_conductance(head, tail, q, shape, rows, jvp),
    )
    out = None
    carry = None  # the previous row's gradient (difference form)
    ones = (1,) * len(shape)
    with _progress.steps(-(-total // rows), show, "batch") as bar:
        for a, b in _batches(total, rows):
            r = np.arange(a, b)
            s_idx, k_idx = r // per, r % per
            al = alphas[k_idx].astype(np.float32).reshape(-1, *ones)
            xs = values[s_idx]
            if base is None:
                z, d = al * xs, xs
            else:
                bs = base[s_idx]
                d = xs - bs
                z = bs + al * d
            params = _row_params(q, s_idx, rows)
            if weights is not None:  # jvp
                prod, _ = fn(pad_rows(z, rows), pad_rows(np.ascontiguousarray(d), rows), params)
                wk = weights[k_idx].reshape(-1, *([1] * (len(prod.shape) - 1)))
                contrib = wk * np.asarray(prod, np.float64)[: b - a]
            else:
                g, h = fn(pad_rows(z, rows), params)
                g = np.asarray(g, np.float64)[: b - a]
                h = np.asarray(h, np.float64)[: b - a]
                prev = np.concatenate([g[:1] * 0 if carry is None else carry, g[:-1]])
                lag = (k_idx >= 1).reshape(-1, *([1] * (g.ndim - 1)))
                lead = (k_idx < steps).reshape(-1, *([1] * (g.ndim - 1)))
                # Σ_k g_k (h_{k+1} − h_k), regrouped by row: h_k (g_{k−1} − g_k)
                contrib = h * (np.where(lag, prev, 0.0) - np.where(lead, g, 0.0))
                carry = g[-1:]
            if out is None:
                out = np.zeros((n, *contrib.shape[1:]), np.float64)
            starts = np.flatnonzero(np.r_[True, s_idx[1:] != s_idx[:-1]])
            out[s_idx[starts]] += np.add.reduceat(contrib, starts, axis=0)
            bar.advance()
    assert out is not None  # x is never empty (_as_inputs)
    return out, name


def layer_conductance(
    model: Any,
    x: Any,
    target: Any = None,
    *,
    layer: Any,
    baseline: Any = None,
    steps: int = 50,
    rule: Rule = "gausslegendre",
    derivative: Derivative = "jvp",
    batch_size: int = 64,
    return_delta: bool = False,
    progress: bool | None = None,
) -> xr.DataArray | xr.Dataset:
    """Layer conductance (Dhamdhere, Sundararajan & Yan 2018): the flow of integrated
    gradients through each unit of a layer.

    With z(α) = b + α (x − b) the straight path at the model input and h the layer,

    .. math::

        \\operatorname{Cond}_j(x) = ∫_0^1 \\frac{∂Q}{∂h_j}(z(α))\\,
        \\frac{d h_j(z(α))}{dα}\\, dα
        = Σ_i (x_i − b_i) ∫_0^1 \\frac{∂Q}{∂h_j} \\frac{∂h_j}{∂x_i}\\, dα ,

    integrated by the quadrature ``rule`` with ``steps`` nodes; dh/dα = J_h(z)(x − b) is
    a forward-mode Jacobian-vector product (``derivative="jvp"``, exact at each node).
    ``derivative="difference"`` is Captum's ``LayerConductance``: Σ_k ∂Q/∂h(z(α_k)) ⊙
    (h(z(α_{k+1})) − h(z(α_k))) over the ``steps + 1`` nodes α_k of the rule.

    Completeness: when every path from the input to the QoI goes through the layer,
    Σ_j Cond_j = Q(x) − Q(b) (the integrated-gradients total) up to the quadrature error,
    which ``return_delta`` reports.

    Parameters
    ----------
    model : keras.Model
        Functional or Sequential (the graph is cut at ``layer``), one output.
    x : array-like or xr.DataArray
        Samples, sample axis first.
    target : int, ints or None
        The class explained (None: the predicted class).
    layer : endpoint descriptor or list of them
        The layer (as in ``tmx.activations(layers=...)``); a list gives several layers in
        one (sample, unit) array in the activation cube's unit layout (coords ``layer``,
        ``channel``, ``y``, ``x``).
    baseline : array-like, optional
        The input baseline b: one sample's shape, (1, …) or (N, …); default zeros.
    steps, rule : int, str
        The quadrature (``tmx.attribution.quadrature``); Captum's default is
        ``rule="gausslegendre"``.
    derivative : {"jvp", "difference"}
    batch_size : int, default 64
        Rows (sample × node) per compiled call; never changes the numbers.
    return_delta : bool, default False
        Also return ``delta`` = Σ_j Cond_j − (Q(x) − Q(b)) per sample (per layer).
    progress : bool or None
        A bar over the compiled calls (None: when run interactively).

    Returns
    -------
    xr.DataArray or xr.Dataset
        ``attribution`` float64, (sample, y, x, channel) for a layer with feature maps,
        else (sample, unit); attrs: method, cut, qoi, steps, rule, derivative, baseline,
        tmx_version. With ``return_delta``, a Dataset with ``delta`` (sample) (or
        (sample, cut) for several layers).

    References
    ----------
    Dhamdhere, K., Sundararajan, M., Yan, Q. (2018). How important is a neuron?
    arXiv:1805.12233.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx import attribution as A
    >>> model = tmx.models.small_cnn((8, 8, 1), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    >>> cond = A.layer_conductance(model, x, 3, layer="dense", steps=64, return_delta=True)
    >>> cond["attribution"].dims, bool(abs(cond["delta"]).max() < 1e-2)
    (('sample', 'unit'), True)
    """

    _require_eager()
    _require_graph(model, "layer_conductance")
    steps = v.positive_int(steps, "steps")
    v.choice(rule, "rule", RULES)
    v.choice(derivative, "derivative", DERIVATIVES)
    batch_size = v.positive_int(batch_size, "batch_size")
    return_delta = v.flag(return_delta, "return_delta")
    show = _progress.resolve(progress)
    values, coords = _as_inputs(x)
    n = values.shape[0]
    base = None if baseline is None else np.ascontiguousarray(_baseline(baseline, values))
    q = _target(model, values, target, batch_size)
    layers = list(layer) if isinstance(layer, list) else [layer]
    if not layers:
        raise ValueError("layer: an empty list; pass a layer or several")
    results = [
        _conductance_one(model, values, base, q, one, steps, rule, derivative, batch_size, show)
        for one in layers
    ]
    attrs = provenance(
        "method",
        "layer_conductance",
        cut=results[0][1] if len(results) == 1 else [r[1] for r in results],
        qoi=q.description,
        steps=steps,
        rule=rule,
        derivative=derivative,
        baseline="zeros" if baseline is None else "given",
    )
    if len(results) == 1:
        dims, data = _dims(results[0][0])
        out = xr.DataArray(data, dims=dims, coords=coords, name="attribution", attrs=attrs)
    else:
        names = [r[1] for r in results]
        if len(set(names)) != len(names):
            raise ValueError(f"layer: a layer is given twice in {names}")
        units = unit_coords(names, [r[0].shape[1:] for r in results])
        flat = np.concatenate([r[0].reshape(n, -1) for r in results], axis=1)
        attrs["layers"] = names
        out = xr.DataArray(
            flat,
            dims=("sample", "unit"),
            coords={
                **coords,
                "unit": np.arange(flat.shape[1]),
                **{k: ("unit", c) for k, c in units.items()},
            },
            name="attribution",
            attrs=attrs,
        )
    if not return_delta:
        return out
    q_x = _qoi_values(model, q, values, batch_size)
    q_b = _qoi_values(model, q, np.zeros_like(values) if base is None else base, batch_size)
    sums = np.stack([r[0].reshape(n, -1).sum(axis=1) for r in results], axis=1)
    gap = (sums - (q_x - q_b)[:, None]).astype(np.float64)
    if len(results) == 1:
        delta = xr.DataArray(gap[:, 0], dims=("sample",), coords=coords, name="delta")
    else:
        delta = xr.DataArray(
            gap, dims=("sample", "cut"), coords={**coords, "cut": attrs["layers"]}, name="delta"
        )
    return xr.Dataset({"attribution": out, "delta": delta}, attrs=attrs)


__all__ = ["gradient_shap", "layer_conductance", "noise_tunnel", "shap_draws"]
