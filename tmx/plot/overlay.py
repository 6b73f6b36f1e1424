"""Attribution-style overlays: a low-resolution heat map drawn over an image."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from scipy import ndimage

from .. import _validate as v
from ._common import new_axes


def resize_half_pixel(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D map to ``shape`` by bilinear interpolation on half-pixel centres.

    Pixels are areas: the grid of heat maps drawn over images (formerly ``resize_bilinear``,
    renamed apart from ``tmx.datasets.resize_align_corners``, whose corners are aligned).

    Uses ``scipy.ndimage.zoom(order=1, grid_mode=True, mode="nearest")``: each input cell
    covers an equal block of the output (half-pixel centres, like ``tf.image.resize``), and the
    border is extended with the nearest value. Non-finite cells stay non-finite (NaN) in the
    output where they dominate (nearest-neighbour resized mask), their neighbours are
    interpolated from the finite values only.

    Examples
    --------
    >>> import numpy as np
    >>> from tmx.plot.overlay import resize_half_pixel
    >>> resize_half_pixel(np.array([[0.0, 1.0]]), (1, 4)).tolist()     # half-pixel centres
    [[0.0, 0.25, 0.75, 1.0]]
    """
    hm = np.asarray(heatmap, dtype=np.float64)
    if hm.ndim != 2 or 0 in hm.shape:
        raise ValueError(f"heatmap must be a non-empty 2-D array (h, w); got shape {hm.shape}")
    out_h, out_w = (int(s) for s in shape)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"shape must be positive; got {shape}")
    finite = np.isfinite(hm)
    if not finite.any():
        return np.full((out_h, out_w), np.nan)
    factors = (out_h / hm.shape[0], out_w / hm.shape[1])
    if finite.all():
        out = ndimage.zoom(hm, factors, order=1, grid_mode=True, mode="nearest")
    else:
        filled = ndimage.zoom(
            np.where(finite, hm, 0.0), factors, order=1, grid_mode=True, mode="nearest"
        )
        weight = ndimage.zoom(
            finite.astype(np.float64), factors, order=1, grid_mode=True, mode="nearest"
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            out = filled / weight
        bad = (
            ndimage.zoom(
                (~finite).astype(np.float64), factors, order=0, grid_mode=True, mode="nearest"
            )
            > 0.5
        )
        out[bad] = np.nan
    if out.shape != (out_h, out_w):  # rounding of the zoom factor: pad or crop by one
        out = np.pad(
            out, ((0, max(0, out_h - out.shape[0])), (0, max(0, out_w - out.shape[1]))), mode="edge"
        )[:out_h, :out_w]
    return out


def resize_bilinear(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Deprecated: ``resize_half_pixel`` (same arguments, same result).

    Renamed apart from ``tmx.datasets.resize_align_corners`` (formerly
    ``tmx.datasets.resize_bilinear``), which aligns the corners instead; warns a
    ``DeprecationWarning`` and will be removed.

    Examples
    --------
    >>> import warnings, numpy as np
    >>> from tmx.plot.overlay import resize_bilinear
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     out = resize_bilinear(np.array([[0.0, 1.0]]), (1, 4))
    >>> out.tolist(), caught[0].category.__name__
    ([[0.0, 0.25, 0.75, 1.0]], 'DeprecationWarning')
    """
    warnings.warn(
        "tmx.plot.overlay.resize_bilinear is deprecated and will be removed; use "
        "tmx.plot.overlay.resize_half_pixel instead",
        DeprecationWarning,
        stacklevel=2,
    )
    return resize_half_pixel(heatmap, shape)


def display_image(image: np.ndarray, what: str = "image") -> tuple[np.ndarray, dict[str, Any]]:
    """An image ready for ``imshow`` and the keyword arguments to draw it.

    (H, W) and (H, W, 1) are grey (colour limits: the image's finite range); (H, W, 3) is RGB
    scaled by its own finite range to [0, 1] (non-finite pixels black).

    Examples
    --------
    >>> import numpy as np
    >>> from tmx.plot.overlay import display_image
    >>> shown, kwargs = display_image(np.array([[0.0, 2.0], [1.0, 3.0]])[..., None])
    >>> shown.shape, kwargs
    ((2, 2), {'cmap': 'gray', 'vmin': 0.0, 'vmax': 3.0})
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3) or 0 in img.shape:
        raise ValueError(
            f"{what} must have shape (H, W), (H, W, 1) or (H, W, 3); got {np.shape(image)}"
        )
    img = img.astype(np.float64)
    finite = np.isfinite(img)
    lo = float(img[finite].min()) if finite.any() else 0.0
    hi = float(img[finite].max()) if finite.any() else 1.0
    if img.ndim == 2:
        return img, {"cmap": "gray", "vmin": lo, "vmax": hi if hi > lo else lo + 1.0}
    scaled = (img - lo) / (hi - lo) if hi > lo else np.full_like(img, 0.5)
    return np.clip(np.nan_to_num(scaled, nan=0.0), 0.0, 1.0), {}


def overlay(
    image: np.ndarray,
    heatmap: np.ndarray,
    *,
    alpha: float = 0.5,
    cmap: str | Colormap = "jet",
    ax: Axes | None = None,
    title: str | None = None,
    colorbar: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Figure:
    """Draw a heat map (an attribution, a feature map) semi-transparently over an image.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) or (H, W, 1) grey image, or (H, W, 3) RGB image (any range: scaled by its own
        finite range for display).
    heatmap : numpy.ndarray
        (h, w) values, resized to (H, W) by bilinear interpolation (see
        ``resize_half_pixel``: ``scipy.ndimage.zoom`` with ``order=1, grid_mode=True``, i.e.
        each heat-map cell covers an equal block of image pixels). Non-finite cells are not
        drawn.
    alpha : float, default 0.5
        Opacity of the heat map, in [0, 1].
    cmap : str or Colormap, default "jet"
        Colormap of the heat map.
    ax : matplotlib.axes.Axes, optional
        Draw into this axes; by default a new figure is created.
    title : str, optional
        Axes title.
    colorbar : bool, default True
        Add a colorbar for the heat map.
    vmin, vmax : float, optional
        Colour limits of the heat map (default: its finite range).

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the axes; the axes holds two images (the image, then the resized
        heat map on top).

    Raises
    ------
    ValueError
        If the image or heat map has an unsupported shape, or ``alpha`` is outside [0, 1].

    Examples
    --------
    >>> import matplotlib.pyplot as plt, numpy as np, tmx.plot
    >>> rng = np.random.default_rng(0)
    >>> fig = tmx.plot.overlay(rng.random((8, 8)), rng.random((2, 2)), title="conv1")
    >>> ax = fig.axes[0]
    >>> [im.get_array().shape for im in ax.images], ax.get_title(), len(fig.axes)   # + colorbar
    ([(8, 8), (8, 8)], 'conv1', 2)
    >>> plt.close(fig)
    """
    alpha = v.fraction(alpha, "alpha", low_open=False, high_open=False)
    base, kwargs = display_image(image)
    height, width = base.shape[:2]
    hm = np.asarray(heatmap)
    if hm.ndim != 2:
        raise ValueError(
            f"heatmap must be 2-D (h, w) to overlay an image of shape {np.shape(image)}; "
            f"got shape {hm.shape}"
        )
    resized = np.ma.masked_invalid(resize_half_pixel(hm, (height, width)))
    fig, ax = new_axes(ax, (5.2 if colorbar else 4.4, 4.4 * height / max(width, 1) + 0.3))
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    ax.imshow(base, interpolation="nearest", extent=extent, **kwargs)
    im = ax.imshow(
        resized,
        cmap=cmap,
        alpha=float(alpha),
        vmin=vmin,
        vmax=vmax,
        extent=extent,
        interpolation="nearest",
    )
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        # An opaque colorbar with the heat map's colours and limits (not faded by alpha).
        fig.colorbar(ScalarMappable(norm=im.norm, cmap=im.cmap), ax=ax, fraction=0.046, pad=0.03)
    if title is not None:
        ax.set_title(title)
    return fig
