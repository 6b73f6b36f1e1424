"""Figures of attributions: heat maps over the images, masks, samples × methods grids."""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from scipy import ndimage

from .. import _validate as v
from .overlay import display_image, resize_half_pixel

Normalization = Literal[
    "unsigned_max",
    "unsigned_max_positive_centered",
    "magnitude_max",
    "magnitude_sum",
    "signed_max",
    "signed_max_positive_centered",
    "signed_sum",
    "01",
    "unnormalized",
]
NORMALIZATIONS = get_args(Normalization)  # checked at the call


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), 0.0)


def normalize_attribution(values: Any, normalization: Normalization = "unsigned_max") -> np.ndarray:
    """netlens's normalizations of maps ``(N, H, W, C)``, per sample and per channel.

    - ``unsigned_max``: a / max|a| ∈ [−1, 1]; ``magnitude_max``: |a| / max|a| ∈ [0, 1];
    - ``magnitude_sum``: |a| / Σ|a|;
    - ``signed_max``: positives / max positive, negatives / |min negative| ∈ [−1, 1];
    - ``signed_sum``: positives / Σ positives, negatives / Σ |negatives|;
    - ``*_positive_centered``: the [−1, 1] result mapped to [0, 1] by x/2 + 1/2;
    - ``01``: (a − min) / (max − min); ``unnormalized``: a.

    A zero denominator gives 0 (netlens adds 1e-20 instead). Every mode works per channel, as
    netlens's documentation says (its code normalizes the two ``*_sum`` modes over all
    channels together and the others per channel).

    Examples
    --------
    >>> import numpy as np, tmx.plot
    >>> a = np.array([-2.0, 1.0, 0.0, 4.0]).reshape(1, 2, 2, 1)        # (N, H, W, C)
    >>> tmx.plot.normalize_attribution(a).ravel().tolist()
    [-0.5, 0.25, 0.0, 1.0]
    >>> tmx.plot.normalize_attribution(a, "signed_max").ravel().tolist()
    [-1.0, 0.25, 0.0, 1.0]
    >>> tmx.plot.normalize_attribution(a, "magnitude_sum").ravel().tolist()
    [0.2857142857142857, 0.14285714285714285, 0.0, 0.5714285714285714]
    """
    v.choice(normalization, "normalization", NORMALIZATIONS)
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 4:
        raise ValueError(f"attributions must be (sample, y, x, channel); got shape {a.shape}")
    if normalization == "unnormalized":
        return a
    ax = (1, 2)
    if normalization in ("unsigned_max", "unsigned_max_positive_centered"):
        out = _safe_div(a, np.abs(a).max(axis=ax, keepdims=True))
    elif normalization == "magnitude_max":
        out = _safe_div(np.abs(a), np.abs(a).max(axis=ax, keepdims=True))
    elif normalization == "magnitude_sum":
        out = _safe_div(np.abs(a), np.abs(a).sum(axis=ax, keepdims=True))
    elif normalization in ("signed_max", "signed_max_positive_centered"):
        pos = np.maximum(a, 0).max(axis=ax, keepdims=True)
        neg = np.maximum(-a, 0).max(axis=ax, keepdims=True)
        out = np.where(a >= 0, _safe_div(a, pos), -_safe_div(-a, neg))
    elif normalization == "signed_sum":
        pos = np.maximum(a, 0).sum(axis=ax, keepdims=True)
        neg = np.maximum(-a, 0).sum(axis=ax, keepdims=True)
        out = np.where(a >= 0, _safe_div(a, pos), -_safe_div(-a, neg))
    else:  # "01"
        lo = a.min(axis=ax, keepdims=True)
        out = _safe_div(a - lo, a.max(axis=ax, keepdims=True) - lo)
    if normalization.endswith("positive_centered"):
        out = out / 2.0 + 0.5
    return out


def _maps(attr: Any, combine: bool, blur: float) -> tuple[np.ndarray, np.ndarray]:
    """(maps (N, H, W, C'), sample labels) from an attribution DataArray or array."""
    if isinstance(attr, xr.DataArray):
        if attr.dims != ("sample", "y", "x", "channel"):
            raise ValueError(f"attr must have dims (sample, y, x, channel); got {attr.dims}")
        labels = np.asarray(attr["sample"].values)
        a = np.asarray(attr.values, np.float64)
    else:
        a = np.asarray(attr, np.float64)
        if a.ndim == 3:
            a = a[..., None]
        labels = np.arange(a.shape[0])
    if a.ndim != 4:
        raise ValueError(f"attr must be (sample, y, x, channel); got shape {a.shape}")
    if combine:
        a = a.mean(axis=-1, keepdims=True)
    if blur > 0:
        a = ndimage.gaussian_filter(a, sigma=(0, blur, blur, 0))
    return a, labels


def attribution(
    attr: Any,
    images: Any = None,
    *,
    normalization: Normalization = "unsigned_max",
    blur: float = 0.0,
    cmap: Any = None,
    overlay: float = 0.5,
    combine_channels: bool = True,
    max_samples: int = 8,
) -> Figure:
    """Attribution heat maps, over the images when given; a samples × methods grid.

    ``attr``: one attribution (DataArray ``(sample, y, x, channel)``) or a dict
    ``{method name: attribution}`` for a grid with one column per method (plus a column of
    images). Maps are averaged over channels (``combine_channels``), blurred by a Gaussian of
    ``blur`` pixels, normalised (:func:`normalize_attribution`), resized to the image and drawn
    with opacity ``overlay`` over it. ``cmap`` defaults to ``"RdBu_r"`` for signed modes,
    ``"magma"`` otherwise. Returns the Figure.

    Examples
    --------
    >>> import numpy as np, xarray as xr, tmx.plot
    >>> rng = np.random.default_rng(0)
    >>> images = rng.random((2, 8, 8, 1))
    >>> attr = xr.DataArray(rng.normal(size=(2, 4, 4, 1)), dims=("sample", "y", "x", "channel"))
    >>> fig = tmx.plot.attribution({"saliency": attr, "grad_cam": attr ** 2}, images)
    >>> type(fig).__name__, len(fig.axes), [ax.get_title() for ax in fig.axes[:3]]
    ('Figure', 6, ['input', 'saliency', 'grad_cam'])
    """
    v.choice(normalization, "normalization", NORMALIZATIONS)
    blur = v.finite_real(blur, "blur")
    overlay = v.fraction(overlay, "overlay", low_open=False, high_open=False)
    max_samples = v.positive_int(max_samples, "max_samples")
    methods = attr if isinstance(attr, dict) else {"attribution": attr}
    if not methods:
        raise ValueError("attr must be an attribution or a non-empty dict of them")
    prepared = {k: _maps(a, combine_channels, blur) for k, a in methods.items()}
    n = min(max_samples, min(m.shape[0] for m, _ in prepared.values()))
    imgs = (
        None
        if images is None
        else np.asarray(
            images.transpose("sample", ...).values if isinstance(images, xr.DataArray) else images
        )
    )
    signed = normalization in ("unsigned_max", "signed_max", "signed_sum", "unnormalized")
    cmap = cmap or ("RdBu_r" if signed else "magma")
    cols = len(prepared) + (imgs is not None)
    fig = Figure(figsize=(2.2 * cols, 2.2 * n), layout="constrained")
    axes = fig.subplots(n, cols, squeeze=False)
    for i in range(n):
        col = 0
        if imgs is not None:
            shown, kw = display_image(imgs[i])
            axes[i, 0].imshow(shown, **kw)
            axes[i, 0].set_title("input" if i == 0 else "")
            col = 1
        for name, (maps, labels) in prepared.items():
            norm = normalize_attribution(maps[i : i + 1], normalization)[0, :, :, 0]
            ax = axes[i, col]
            if imgs is not None:
                shown, kw = display_image(imgs[i])
                ax.imshow(shown, **kw)
                norm = resize_half_pixel(norm, shown.shape[:2])
                alpha = overlay
            else:
                alpha = 1.0
            lim = (-1.0, 1.0) if signed and normalization != "unnormalized" else (None, None)
            if normalization == "unnormalized":
                m = float(np.nanmax(np.abs(norm))) or 1.0
                lim = (-m, m)
            ax.imshow(norm, cmap=cmap, alpha=alpha, vmin=lim[0], vmax=lim[1])
            if i == 0:
                ax.set_title(str(name))
            ax.set_ylabel(f"sample {labels[i]}" if col == 0 else "")
            col += 1
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def attribution_mask(
    attr: Any,
    images: Any,
    *,
    normalization: Normalization = "magnitude_max",
    blur: float = 0.0,
    max_samples: int = 8,
) -> Figure:
    """The images masked by their attribution: image × normalised magnitude (in [0, 1]), so
    that only the attributed pixels stay visible; one row per sample (input, mask, masked).

    Examples
    --------
    >>> import numpy as np, tmx.plot
    >>> rng = np.random.default_rng(0)
    >>> fig = tmx.plot.attribution_mask(rng.normal(size=(2, 4, 4, 1)), rng.random((2, 8, 8, 1)))
    >>> len(fig.axes), [ax.get_title() for ax in fig.axes[:3]]
    (6, ['input', 'mask', 'masked'])
    """
    v.choice(normalization, "normalization", NORMALIZATIONS)
    blur = v.finite_real(blur, "blur")
    max_samples = v.positive_int(max_samples, "max_samples")
    maps, labels = _maps(attr, True, blur)
    imgs = np.asarray(
        images.transpose("sample", ...).values if isinstance(images, xr.DataArray) else images
    )
    n = min(max_samples, maps.shape[0], imgs.shape[0])
    fig = Figure(figsize=(6.6, 2.2 * n), layout="constrained")
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        shown, kw = display_image(imgs[i])
        mask = np.clip(
            np.abs(normalize_attribution(maps[i : i + 1], normalization)[0, ..., 0]), 0, 1
        )
        mask = np.clip(resize_half_pixel(mask, shown.shape[:2]), 0, 1)
        axes[i, 0].imshow(shown, **kw)
        axes[i, 1].imshow(mask, cmap="gray", vmin=0, vmax=1)
        lo, hi = kw.get("vmin", 0.0), kw.get("vmax", 1.0)
        base = (shown - lo) / (hi - lo) if shown.ndim == 2 else shown
        masked = base * (mask if base.ndim == 2 else mask[..., None])
        axes[i, 2].imshow(masked, cmap="gray" if masked.ndim == 2 else None, vmin=0, vmax=1)
        axes[i, 0].set_ylabel(f"sample {labels[i]}")
        if i == 0:
            for ax, title in zip(axes[0], ("input", "mask", "masked"), strict=True):
                ax.set_title(title)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig
