"""Metrics of an explanation: infidelity, sensitivity-max (Captum's definitions), deletion and
insertion curves (Xplique's / RISE's). All seeded per sample position and batched."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
import xarray as xr

from .. import _progress
from .. import _validate as v
from .._provenance import provenance
from ._core import _as_inputs, _baseline, _batches, _parse_qoi, _predict, _qoi_values
from ._doi import draws
from ._methods import _ROWS_PER_CALL

log = logging.getLogger("tmx")


def _attr_values(attr: Any, shape: tuple[int, ...]) -> np.ndarray:
    a = np.asarray(attr["attribution"].values if isinstance(attr, xr.Dataset) else attr)
    a = np.asarray(a.values if isinstance(a, xr.DataArray) else a, np.float64)
    if a.size != int(np.prod(shape)):
        raise ValueError(f"attr must have one value per input value {shape}; got {a.shape}")
    return a.reshape(shape)


def _qoi(model: Any, values: np.ndarray, target: Any, batch_size: int):
    return _parse_qoi(
        "max" if target is None else target,
        values.shape[0],
        lambda: _predict(model, values, batch_size),
    )


def _attribution(out: Any) -> np.ndarray:
    """A method's attribution values (a Dataset's ``attribution``), float64."""
    if isinstance(out, xr.Dataset):
        out = out["attribution"]
    return np.asarray(out.values if isinstance(out, xr.DataArray) else out, np.float64)


def _per_sample(values: np.ndarray, coords: dict, name: str, attrs: dict) -> xr.DataArray:
    sample = {k: c for k, c in coords.items()}
    return xr.DataArray(values, dims=("sample",), coords=sample, name=name, attrs=attrs)


def infidelity(
    model: Any,
    x: Any,
    attr: Any,
    target: Any = None,
    *,
    noise: float = 0.1,
    samples: int = 10,
    normalize: bool = False,
    seed: int = 0,
    batch_size: int = 64,
    perturbation: Callable[..., Any] | None = None,
    baseline: Any = None,
    progress: bool | None = None,
) -> xr.DataArray:
    """Infidelity (Yeh et al. 2019; Captum's definition) per sample.

    INFD = E_I[(Iᵀ Φ − (f(x) − f(x̃)))²], x̃ = x − I, over ``samples`` perturbations I; f is
    the target's score. ``normalize=True`` first scales Φ by β = E[Iᵀ Φ · Δf] / E[(Iᵀ Φ)²]
    (Captum's ``normalize``), so that only the direction of Φ counts. Lower is better.

    Perturbations: by default I ~ N(0, noise²); with a ``baseline`` b (one sample's shape,
    (1, …) or (N, …)) Yeh et al.'s *noisy baseline*, x̃ = b + ε, ε ~ N(0, noise²), i.e.
    I = x − b − ε. A custom ``perturbation(x_rows, rng)`` (or
    ``perturbation(x_rows, rng, baseline_rows)`` when ``baseline`` is given; Captum's
    ``perturb_func``) receives the sample repeated ``samples`` times (S, …) and a
    ``numpy.random.Generator`` seeded by (seed, the sample's position), and returns
    ``(I, x̃)`` (both (S, …)). The default draws come from
    ``tmx.attribution._doi.draws`` (seed, position).

    ``progress``: a bar over the model's compiled calls, one per ``batch_size`` rows: the N
    inputs, then the N × ``samples`` perturbed inputs (None: when run interactively; the
    numbers are the same with or without it).

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx import attribution as A
    >>> model = tmx.models.small_cnn((8, 8, 1), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    >>> phi = A.integrated_gradients(model, x, 3, steps=16)
    >>> def half(rows, rng):  # perturb half of the pixels towards zero
    ...     mask = rng.random(rows.shape) < 0.5
    ...     return rows * mask, rows * ~mask
    >>> A.infidelity(model, x, phi, 3, perturbation=half, samples=8).dims
    ('sample',)
    """
    show = _progress.resolve(progress)
    batch_size = v.positive_int(batch_size, "batch_size")
    values, coords = _as_inputs(x)
    n, shape = values.shape[0], values.shape[1:]
    phi = _attr_values(attr, values.shape)
    samples = v.positive_int(samples, "samples")
    noise = v.finite_real(noise, "noise")
    seed = v.seed(seed)
    normalize = v.flag(normalize, "normalize")
    if perturbation is not None and not callable(perturbation):
        raise ValueError(
            f"perturbation must be a callable (rows, rng) -> (I, x̃); got {perturbation!r}"
        )
    base = None if baseline is None else _baseline(baseline, values)
    log.info(
        "infidelity: %d sample(s) x %d perturbation(s) (%s), %d forward rows in batches of %d",
        n,
        samples,
        "custom" if perturbation is not None else ("normal" if base is None else "noisy baseline"),
        n * (samples + 1),
        batch_size,
    )
    q = _qoi(model, values, target, batch_size)
    if perturbation is None:
        eps = draws("normal", shape, np.arange(n), samples, noise, seed)
        if base is None:
            pert = eps
            moved = values[:, None] - pert
        else:  # noisy baseline: x̃ = b + ε
            moved = base[:, None] + eps
            pert = values[:, None] - moved
    else:
        pert = np.empty((n, samples, *shape), np.float32)
        moved = np.empty((n, samples, *shape), np.float32)
        for i in range(n):
            rng = np.random.default_rng([seed, i])
            rows_i = np.repeat(values[i : i + 1], samples, axis=0)
            args = (
                (rows_i, rng)
                if base is None
                else (rows_i, rng, np.repeat(base[i : i + 1], samples, 0))
            )
            got = perturbation(*args)
            if not isinstance(got, tuple) or len(got) != 2:
                raise ValueError(
                    "perturbation must return a pair (I, x̃) of perturbations and perturbed inputs"
                )
            for arr, out, what in ((got[0], pert, "I"), (got[1], moved, "x̃")):
                arr = np.asarray(arr, np.float32)
                if arr.shape != (samples, *shape):
                    raise ValueError(
                        f"perturbation returned {what} of shape {arr.shape}; expected "
                        f"{(samples, *shape)} (one row per repeated sample)"
                    )
                out[i] = arr
    rows = np.ascontiguousarray(moved, np.float32).reshape(n * samples, *shape)
    q_rows = type(q)(q.kind, None if q.params is None else np.repeat(q.params, samples, 0), q.fn)
    calls = -(-n // batch_size) + -(-(n * samples) // batch_size)
    with _progress.steps(calls, show, "batch") as bar:
        f_x = _qoi_values(model, q, values, batch_size, bar)
        f_p = _qoi_values(model, q_rows, rows, batch_size, bar).reshape(n, samples)
    dot = (pert.astype(np.float64).reshape(n, samples, -1) * phi.reshape(n, 1, -1)).sum(-1)
    diff = f_x[:, None] - f_p
    if normalize:
        denom = (dot**2).mean(axis=1, keepdims=True)
        beta = np.where(denom > 0, (dot * diff).mean(axis=1, keepdims=True) / denom, 1.0)
        dot = dot * beta
    out = ((dot - diff) ** 2).mean(axis=1)
    attrs = provenance(
        "metric",
        "infidelity",
        noise=noise,
        samples=samples,
        seed=seed,
        normalize=normalize,
        perturbation=(
            getattr(perturbation, "__name__", "custom")
            if perturbation is not None
            else ("normal" if base is None else "noisy baseline")
        ),
    )
    return _per_sample(out, coords, "infidelity", attrs)


def sensitivity_max(
    method: Callable[..., Any],
    model: Any,
    x: Any,
    target: Any = None,
    *,
    radius: float = 0.02,
    samples: int = 10,
    relative: bool = True,
    seed: int = 0,
    batch_size: int = 64,
    perturbation: Callable[..., Any] | None = None,
    progress: bool | None = None,
    **kwargs: Any,
) -> xr.DataArray:
    """Max-sensitivity (Yeh et al. 2019; Captum's definition) per sample.

    max_k ‖Φ(x + δ_k) − Φ(x)‖₂ over ``samples`` perturbations δ_k uniform in the L∞ ball of
    ``radius`` (Captum's default perturbation), divided by ‖Φ(x)‖₂ when ``relative`` (Captum
    divides by the explanation's norm); the target is fixed at x. Lower is better.

    A custom ``perturbation(x_rows, radius, rng)`` (Captum's ``perturb_func``) receives the
    sample repeated ``samples`` times (S, …), the radius and a ``numpy.random.Generator``
    seeded by (seed, the sample's position), and returns the perturbed inputs (S, …).
    ``**kwargs`` go to ``method``; a ``baseline`` with one row per sample (N, …) is repeated
    for the sample's perturbed copies.

    ``method`` explains the N inputs, then the N × ``samples`` perturbed inputs in calls of
    about 1024 rows (a whole number of ``batch_size`` batches); ``progress``: a bar over the
    rows explained (None: when run interactively), the method's own bar off; the numbers are
    the same with or without it. A random method (``smoothgrad``, ``noise_tunnel``,
    ``gradient_shap``, or ``attribute`` with a random ``doi``) seeds its draws by the row's
    position within one call, so when N × ``samples`` > 1024 each chunk draws as a call of
    its own: the result is deterministic for a given ``seed``, but differs from explaining
    all the perturbed rows in one call of the method.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx import attribution as A
    >>> model = tmx.models.small_cnn((8, 8, 1), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    >>> def sphere(rows, radius, rng):  # on the L2 sphere of the radius
    ...     d = rng.normal(size=rows.shape)
    ...     d /= np.linalg.norm(d.reshape(len(d), -1), axis=1).reshape(-1, 1, 1, 1)
    ...     return rows + radius * d
    >>> A.sensitivity_max(A.saliency, model, x, 3, perturbation=sphere, samples=4).dims
    ('sample',)
    """
    show = _progress.resolve(progress)
    if not callable(method):
        raise ValueError(f"method must be an attribution function; got {method!r}")
    batch_size = v.positive_int(batch_size, "batch_size")
    values, coords = _as_inputs(x)
    n, shape = values.shape[0], values.shape[1:]
    samples = v.positive_int(samples, "samples")
    radius = v.finite_real(radius, "radius")
    seed = v.seed(seed)
    relative = v.flag(relative, "relative")
    q = _qoi(model, values, target, batch_size)
    targets = q.params if q.kind == "class" else None
    if targets is None:
        raise ValueError("sensitivity_max needs a class target (an int, one per sample, or None)")
    if perturbation is not None and not callable(perturbation):
        raise ValueError(
            f"perturbation must be a callable (rows, radius, rng) -> rows; got {perturbation!r}"
        )
    name = getattr(method, "__name__", "method")
    log.info(
        "sensitivity_max: %s on %d sample(s) and %d perturbed copies each (radius %g)",
        name,
        n,
        samples,
        radius,
    )
    quiet = _progress.quiet(method)
    if perturbation is None:
        pert = draws("uniform", shape, np.arange(n), samples, radius, seed)
        rows = (values[:, None] + pert).reshape(n * samples, *shape)
    else:
        rows = np.empty((n * samples, *shape), np.float32)
        for i in range(n):
            rng = np.random.default_rng([seed, i])
            got = np.asarray(
                perturbation(np.repeat(values[i : i + 1], samples, axis=0), radius, rng),
                np.float32,
            )
            if got.shape != (samples, *shape):
                raise ValueError(
                    f"perturbation returned shape {got.shape}; expected {(samples, *shape)}"
                )
            rows[i * samples : (i + 1) * samples] = got
    b = kwargs.get("baseline")
    per_row = None  # a baseline per sample, repeated for its perturbed copies
    if b is not None and not isinstance(b, str | tuple):
        b = np.asarray(b.values if isinstance(b, xr.DataArray) else b)
        if b.ndim == values.ndim and b.shape[0] == n and n > 1:
            per_row = np.repeat(b, samples, axis=0)
    row_targets = np.repeat(targets, samples)
    # the perturbed rows in calls of a whole number of batches (~_ROWS_PER_CALL rows: bounded
    # memory, a bar that moves); always the same calls, shown or not
    chunk = max(1, _ROWS_PER_CALL // batch_size) * batch_size
    with _progress.steps(n * (samples + 1), show, "row") as bar:
        explained = method(model, values, targets, batch_size=batch_size, **kwargs, **quiet)
        base = _attribution(explained).reshape(n, -1)
        bar.advance(n)
        moved = np.empty((n * samples, base.shape[1]), np.float64)
        for a, z in _batches(n * samples, chunk):
            call = kwargs if per_row is None else {**kwargs, "baseline": per_row[a:z]}
            got = method(model, rows[a:z], row_targets[a:z], batch_size=batch_size, **call, **quiet)
            moved[a:z] = _attribution(got).reshape(z - a, -1)
            bar.advance(z - a)
    moved = moved.reshape(n, samples, -1)
    dist = np.linalg.norm(moved - base[:, None], axis=-1).max(axis=1)
    if relative:
        norm = np.linalg.norm(base, axis=-1)
        dist = np.where(
            norm > 0, dist / np.where(norm > 0, norm, 1.0), np.where(dist > 0, np.inf, 0.0)
        )
    attrs = provenance(
        "metric",
        "sensitivity_max",
        radius=radius,
        samples=samples,
        seed=seed,
        perturbation=(
            "uniform" if perturbation is None else getattr(perturbation, "__name__", "custom")
        ),
        relative=relative,
    )
    return _per_sample(dist, coords, "sensitivity_max", attrs)


def _curve(
    model: Any,
    x: Any,
    attr: Any,
    target: Any,
    *,
    insertion: bool,
    steps: int,
    baseline: float,
    batch_size: int,
    progress: Any,
) -> xr.Dataset:
    show = _progress.resolve(progress)
    batch_size = v.positive_int(batch_size, "batch_size")
    values, coords = _as_inputs(x)
    n = values.shape[0]
    if values.ndim != 4:
        raise ValueError(f"deletion/insertion need images (N, H, W, C); got {values.shape}")
    h, w = values.shape[1:3]
    phi = _attr_values(attr, values.shape)
    importance = phi.mean(axis=-1).reshape(n, h * w)  # pixels, channels averaged
    order = np.argsort(-importance, axis=1, kind="stable")  # most important first
    steps = v.positive_int(steps, "steps")
    baseline = v.finite_real(baseline, "baseline")
    name = "insertion" if insertion else "deletion"
    log.info(
        "%s: %d image(s) of %d x %d pixels, %d forward passes (fractions 0 to 1)",
        name,
        n,
        h,
        w,
        steps + 1,
    )
    q = _qoi(model, values, target, batch_size)
    if q.kind != "class":
        raise ValueError("deletion/insertion need a class target (int, one per sample, None)")
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = np.round(fractions * h * w).astype(int)
    scores = np.empty((n, steps + 1))
    with _progress.steps(steps + 1, show, "fraction") as bar:
        for s, k in enumerate(counts):
            mask = np.zeros((n, h * w), bool)
            np.put_along_axis(mask, order[:, :k], True, axis=1)
            mask = mask.reshape(n, h, w, 1)
            if insertion:
                z = np.where(mask, values, baseline)
            else:
                z = np.where(mask, baseline, values)
            y = _predict(model, z.astype(np.float32), batch_size)
            p = tf.nn.softmax(tf.constant(y, tf.float64), axis=-1).numpy() if y.ndim == 2 else y
            scores[:, s] = p[np.arange(n), q.params]
            bar.advance()
    auc = np.trapezoid(scores, fractions, axis=1)
    sample = {k: c for k, c in coords.items()}
    return xr.Dataset(
        {
            "curve": (("sample", "fraction"), scores),
            "auc": (("sample",), auc),
        },
        coords={**sample, "fraction": fractions},
        attrs=provenance("metric", name, steps=steps, baseline=baseline, score="softmax"),
    )


def deletion(
    model: Any,
    x: Any,
    attr: Any,
    target: Any = None,
    *,
    steps: int = 10,
    baseline: float = 0.0,
    batch_size: int = 64,
    progress: bool | None = None,
) -> xr.Dataset:
    """Deletion curve (Petsiuk et al. 2018; Xplique): the target's softmax probability as the
    most important pixels (attribution averaged over channels, largest first) are set to
    ``baseline``, at fractions 0, 1/steps, …, 1; ``auc`` by the trapezoid rule. Lower is better.
    ``progress``: a bar over the ``steps + 1`` forward passes, one per fraction (None: when run
    interactively; the numbers are the same with or without it).

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx import attribution as A
    >>> model = tmx.models.small_cnn((8, 8, 1), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    >>> attr = A.saliency(model, x, 3)
    >>> curve = A.deletion(model, x, attr, 3, steps=4)
    >>> curve["curve"].shape, curve["fraction"].values.tolist(), curve["auc"].dims
    ((2, 5), [0.0, 0.25, 0.5, 0.75, 1.0], ('sample',))
    """
    return _curve(
        model,
        x,
        attr,
        target,
        insertion=False,
        steps=steps,
        baseline=baseline,
        batch_size=batch_size,
        progress=progress,
    )


def insertion(
    model: Any,
    x: Any,
    attr: Any,
    target: Any = None,
    *,
    steps: int = 10,
    baseline: float = 0.0,
    batch_size: int = 64,
    progress: bool | None = None,
) -> xr.Dataset:
    """Insertion curve: pixels inserted into a ``baseline`` image, most important first; the
    target's softmax probability at fractions 0 … 1 and its ``auc``. Higher is better.
    ``progress``: a bar over the ``steps + 1`` forward passes, one per fraction (None: when run
    interactively; the numbers are the same with or without it).

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx import attribution as A
    >>> model = tmx.models.small_cnn((8, 8, 1), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    >>> attr = A.saliency(model, x, 3)
    >>> curve = A.insertion(model, x, attr, 3, steps=4)
    >>> curve["curve"].shape, curve.attrs["metric"]
    ((2, 5), 'insertion')
    """
    return _curve(
        model,
        x,
        attr,
        target,
        insertion=True,
        steps=steps,
        baseline=baseline,
        batch_size=batch_size,
        progress=progress,
    )
