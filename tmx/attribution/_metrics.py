"""Metrics of an explanation: infidelity, sensitivity-max (Captum's definitions), deletion and
insertion curves (Xplique's / RISE's). All seeded per sample position and batched."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
import xarray as xr

from .. import _validate as v
from ._core import _as_inputs, _baseline, _parse_qoi, _predict, _qoi_values
from ._doi import check_seed, draws


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
    values, coords = _as_inputs(x)
    n, shape = values.shape[0], values.shape[1:]
    phi = _attr_values(attr, values.shape)
    samples = v.positive_int(samples, "samples")
    noise = v.finite_real(noise, "noise")
    seed = check_seed(seed)
    if perturbation is not None and not callable(perturbation):
        raise ValueError(
            f"perturbation must be a callable (rows, rng) -> (I, x̃); got {perturbation!r}"
        )
    base = None if baseline is None else _baseline(baseline, values)
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
    f_x = _qoi_values(model, q, values, batch_size)
    rows = np.ascontiguousarray(moved, np.float32).reshape(n * samples, *shape)
    q_rows = type(q)(q.kind, None if q.params is None else np.repeat(q.params, samples, 0), q.fn)
    f_p = _qoi_values(model, q_rows, rows, batch_size).reshape(n, samples)
    dot = (pert.astype(np.float64).reshape(n, samples, -1) * phi.reshape(n, 1, -1)).sum(-1)
    diff = f_x[:, None] - f_p
    if normalize:
        denom = (dot**2).mean(axis=1, keepdims=True)
        beta = np.where(denom > 0, (dot * diff).mean(axis=1, keepdims=True) / denom, 1.0)
        dot = dot * beta
    out = ((dot - diff) ** 2).mean(axis=1)
    attrs = {"metric": "infidelity", "noise": noise, "samples": samples, "seed": seed}
    attrs["normalize"] = int(normalize)
    attrs["perturbation"] = (
        getattr(perturbation, "__name__", "custom")
        if perturbation is not None
        else ("normal" if base is None else "noisy baseline")
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
    values, coords = _as_inputs(x)
    n, shape = values.shape[0], values.shape[1:]
    samples = v.positive_int(samples, "samples")
    radius = v.finite_real(radius, "radius")
    seed = check_seed(seed)
    q = _qoi(model, values, target, batch_size)
    targets = q.params if q.kind == "class" else None
    if targets is None:
        raise ValueError("sensitivity_max needs a class target (an int, one per sample, or None)")
    if perturbation is not None and not callable(perturbation):
        raise ValueError(
            f"perturbation must be a callable (rows, radius, rng) -> rows; got {perturbation!r}"
        )
    explained = method(model, values, targets, batch_size=batch_size, **kwargs)
    if isinstance(explained, xr.Dataset):
        explained = explained["attribution"]
    base = np.asarray(explained.values).reshape(n, -1).astype(np.float64)
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
    if b is not None and not isinstance(b, str | tuple):
        b = np.asarray(b.values if isinstance(b, xr.DataArray) else b)
        if b.ndim == values.ndim and b.shape[0] == n and n > 1:
            kwargs = {**kwargs, "baseline": np.repeat(b, samples, axis=0)}
    moved = method(model, rows, np.repeat(targets, samples), batch_size=batch_size, **kwargs)
    if isinstance(moved, xr.Dataset):
        moved = moved["attribution"]
    moved = np.asarray(moved.values, np.float64).reshape(n, samples, -1)
    dist = np.linalg.norm(moved - base[:, None], axis=-1).max(axis=1)
    if relative:
        norm = np.linalg.norm(base, axis=-1)
        dist = np.where(
            norm > 0, dist / np.where(norm > 0, norm, 1.0), np.where(dist > 0, np.inf, 0.0)
        )
    attrs = {"metric": "sensitivity_max", "radius": radius, "samples": samples, "seed": seed}
    attrs["perturbation"] = (
        "uniform" if perturbation is None else getattr(perturbation, "__name__", "custom")
    )
    attrs["relative"] = int(relative)
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
) -> xr.Dataset:

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
    q = _qoi(model, values, target, batch_size)
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = np.round(fractions * h * w).astype(int)
    scores = np.empty((n, steps + 1))
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
        if q.kind != "class":
            raise ValueError("deletion/insertion need a class target (int, one per sample, None)")
        scores[:, s] = p[np.arange(n), q.params]
    auc = np.trapezoid(scores, fractions, axis=1)
    name = "insertion" if insertion else "deletion"
    sample = {k: c for k, c in coords.items()}
    return xr.Dataset(
        {
            "curve": (("sample", "fraction"), scores),
            "auc": (("sample",), auc),
        },
        coords={**sample, "fraction": fractions},
        attrs={"metric": name, "steps": steps, "baseline": baseline, "score": "softmax"},
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
) -> xr.Dataset:
    """Deletion curve (Petsiuk et al. 2018; Xplique): the target's softmax probability as the
    most important pixels (attribution averaged over channels, largest first) are set to
    ``baseline``, at fractions 0, 1/steps, …, 1; ``auc`` by the trapezoid rule. Lower is better.

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
) -> xr.Dataset:
    """Insertion curve: pixels inserted into a ``baseline`` image, most important first; the
    target's softmax probability at fractions 0 … 1 and its ``auc``. Higher is better.

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
    )
