"""Named attribution methods: special cases of :func:`tmx.attribution.attribute`."""

from __future__ import annotations

from typing import Any, Literal, get_args

import xarray as xr

from .. import _validate as v
from .._provenance import provenance
from ._core import _require_eager, _single_output, attribute
from ._doi import Rule

SmoothgradKind = Literal["smoothgrad", "smoothgrad_sq", "vargrad"]
SMOOTHGRAD_KINDS = get_args(SmoothgradKind)  # checked at the call


def _qoi(target: Any) -> Any:
    return "max" if target is None else target


def _check_call(model: Any, method: str, target: Any, cut: Any = None) -> None:
    """Refuse a traced call, and a model with several outputs unless a callable target picks
    one (at the input; a layer cut explains the model's only output)."""
    _require_eager()
    if cut is None and callable(target):
        return
    alternative = "pass a callable target f(outputs) -> (batch,) that picks one, or " * (
        cut is None
    )
    _single_output(model, method, alternative)


def _named(out: Any, method: str, **extra: Any) -> Any:
    """``attribute``'s result renamed as ``method``: its attrs, ``method`` and ``extra`` in
    the one attr encoding (a Dataset's ``attribution`` gets the same attrs)."""
    out.attrs = {**out.attrs, **provenance("method", method, **extra)}
    if isinstance(out, xr.Dataset):
        out["attribution"].attrs = dict(out.attrs)
    return out


def saliency(
    model: Any,
    x: Any,
    target: Any = None,
    *,
    absolute: bool = True,
    batch_size: int = 64,
    progress: bool | None = None,
) -> xr.DataArray:
    """Saliency |∂Q/∂x| (Simonyan, Vedaldi & Zisserman 2014), or the signed gradient.

    ``target``: an int class, one int per sample, or ``None`` for the predicted class.
    ``progress``: a bar over the compiled gradient calls (None: when run interactively).

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx import attribution as A
    >>> model = tmx.models.small_cnn((8, 8, 1), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    >>> sal = A.saliency(model, x, 3)
    >>> sal.dims, sal.shape, sal.attrs["method"], bool((sal >= 0).all())
    (('sample', 'y', 'x', 'channel'), (2, 8, 8, 1), 'saliency', True)
    """
    _check_call(model, "saliency", target)
    absolute = v.flag(absolute, "absolute")
    out = attribute(
        model,
        x,
        qoi=_qoi(target),
        doi="point",
        multiply_activation=False,
        batch_size=batch_size,
        progress=progress,
    )
    if absolute:
        out = abs(out)
    return _named(out, "saliency", absolute=absolute)


def input_x_gradient(
    model: Any,
    x: Any,
    target: Any = None,
    *,
    batch_size: int = 64,
    progress: bool | None = None,
) -> xr.DataArray:
    """x ⊙ ∂Q/∂x (Shrikumar et al. 2016). ``progress``: a bar over the compiled gradient
    calls (None: when run interactively).

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx import attribution as A
    >>> model = tmx.models.small_cnn((8, 8, 1), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    >>> ixg = A.input_x_gradient(model, x, 3)
    >>> signed = A.saliency(model, x, 3, absolute=False)
    >>> bool(np.allclose(ixg, x * signed, atol=1e-6))
    True
    """
    _check_call(model, "input_x_gradient", target)
    out = attribute(
        model, x, qoi=_qoi(target), doi="point", batch_size=batch_size, progress=progress
    )
    return _named(out, "input_x_gradient")


def integrated_gradients(
    model: Any,
    x: Any,
    target: Any = None,
    *,
    baseline: Any = None,
    steps: int = 50,
    rule: Rule = "gausslegendre",
    cut: Any = None,
    batch_size: int = 64,
    return_delta: bool = False,
    progress: bool | None = None,
) -> xr.DataArray | xr.Dataset:
    """Integrated gradients (Sundararajan, Taly & Yan 2017):
    (x − b) ⊙ ∫₀¹ ∂Q/∂z (b + α (x − b)) dα, by the quadrature ``rule`` with ``steps`` nodes.

    ``progress``: a bar over the compiled gradient calls (None: when run interactively). Runs
    eagerly: inside a ``tf.function`` it raises ``RuntimeError``.

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx import attribution as A
    >>> model = tmx.models.small_cnn((8, 8, 1), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    >>> out = A.integrated_gradients(model, x, 3, steps=16, return_delta=True)
    >>> out["attribution"].shape, out.attrs["method"]
    ((2, 8, 8, 1), 'integrated_gradients')
    >>> bool(np.abs(out["delta"]).max() < 0.05)                    # Σ attribution ≈ Q(x) − Q(b)
    True
    """
    _check_call(model, "integrated_gradients", target, cut)
    out = attribute(
        model,
        x,
        cut=cut,
        qoi=_qoi(target),
        doi="linear",
        baseline=baseline,
        steps=steps,
        rule=rule,
        batch_size=batch_size,
        return_delta=return_delta,
        progress=progress,
    )
    return _named(out, "integrated_gradients")


def smoothgrad(
    model: Any,
    x: Any,
    target: Any = None,
    *,
    noise: float = 0.1,
    samples: int = 20,
    kind: SmoothgradKind = "smoothgrad",
    seed: int = 0,
    batch_size: int = 64,
    progress: bool | None = None,
) -> xr.DataArray:
    """SmoothGrad and its variants over ``samples`` noisy copies x + N(0, noise²) per sample.

    ``"smoothgrad"``: the mean gradient (Smilkov et al. 2017); ``"smoothgrad_sq"``: the mean
    squared gradient; ``"vargrad"``: the variance of the gradients (Adebayo et al. 2018), the
    population variance over the samples. Signed gradients, not multiplied by x. ``progress``:
    a bar over the compiled gradient calls (None: when run interactively).

    Examples
    --------
    >>> import numpy as np, tmx
    >>> from tmx import attribution as A
    >>> model = tmx.models.small_cnn((8, 8, 1), seed=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    >>> sg = A.smoothgrad(model, x, 3, samples=4, noise=0.1, seed=0)
    >>> sg.shape, sg.attrs["method"]
    ((2, 8, 8, 1), 'smoothgrad')
    >>> vg = A.smoothgrad(model, x, 3, samples=4, kind="vargrad")
    >>> bool((vg >= 0).all())
    True
    """
    _check_call(model, "smoothgrad", target)
    v.choice(kind, "kind", SMOOTHGRAD_KINDS)
    gradients: dict[str, Literal["mean", "square", "variance"]] = {
        "smoothgrad": "mean",
        "smoothgrad_sq": "square",
        "vargrad": "variance",
    }
    which = gradients[kind]
    out = attribute(
        model,
        x,
        qoi=_qoi(target),
        doi="gaussian",
        noise=noise,
        samples=samples,
        seed=seed,
        multiply_activation=False,
        batch_size=batch_size,
        progress=progress,
        gradients=which,
    )
    return _named(out, kind)
