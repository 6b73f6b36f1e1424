"""Per-unit images: the units of one layer as channels × spatial positions."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from .. import _schema
from .._schema import UNIT_COORDS
from .._validate import str_array
from ._common import bad_color_name, new_axes, pretty_name, with_bad_color


def _layer_grid(
    per_unit: xr.DataArray, layer: str
) -> tuple[np.ma.MaskedArray, int, int, bool, int]:
    """``(image, h, w, spatial, missing)`` for one layer; image rows are channels."""
    if not isinstance(per_unit, xr.DataArray):
        raise ValueError(
            f"per_unit must be an xr.DataArray over 'unit'; got {type(per_unit).__name__}"
        )
    if per_unit.dims != ("unit",):
        raise ValueError(
            f"per_unit must have the single dim 'unit' (one value per unit); got dims "
            f"{per_unit.dims}. Select or reduce other dims first."
        )
    absent = [c for c in UNIT_COORDS if c not in per_unit.coords]
    if absent:
        raise ValueError(
            f"per_unit lacks the unit coordinates {absent}; a per-unit result has "
            f"{list(UNIT_COORDS)} along 'unit'"
        )
    names = str_array(per_unit["layer"].values)
    layers = _schema.layers(per_unit, "per_unit")
    if layer not in layers:
        raise ValueError(f"unknown layer {layer!r}; layers: {layers}")
    sel = names == layer
    values = np.asarray(per_unit.values[sel], dtype=np.float64)
    channel = per_unit["channel"].values[sel].astype(np.int64)
    ys = per_unit["y"].values[sel].astype(np.int64)
    xs = per_unit["x"].values[sel].astype(np.int64)
    if np.any(channel < 0):
        raise ValueError(f"layer {layer!r} has negative channel indices")
    spatial = bool(np.any(ys >= 0) or np.any(xs >= 0))
    n_channels = int(channel.max()) + 1
    if spatial:
        h = int(ys.max()) + 1 if np.any(ys >= 0) else 1
        w = int(xs.max()) + 1 if np.any(xs >= 0) else 1
        pos = np.maximum(ys, 0) * w + np.maximum(xs, 0)
        shape = (n_channels, h * w)
        rows, cols = channel, pos
    else:
        h = w = 1
        shape = (1, n_channels)
        rows, cols = np.zeros_like(channel), channel
    grid = np.full(shape, np.nan)
    filled = np.zeros(shape, dtype=bool)
    grid[rows, cols] = values
    filled[rows, cols] = True
    if filled.sum() != len(values):
        raise ValueError(f"layer {layer!r} has several units at the same (channel, y, x)")
    missing = int(filled.size - filled.sum())
    return np.ma.masked_invalid(grid), h, w, spatial, missing


def unit_heatmap(
    per_unit: xr.DataArray,
    layer: str,
    *,
    ax: Axes | None = None,
    cmap: str | Colormap = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    title: str | None = None,
) -> Figure:
    """Show the per-unit values of one layer as an image of channels × spatial positions.

    Parameters
    ----------
    per_unit : xr.DataArray
        A per-unit result: dim ``unit`` with coordinates ``layer``, ``channel``, ``y`` and ``x``
        (−1 where a layer has no such axis), as returned by the tmx measures.
    layer : str
        The layer to show.
    ax : matplotlib.axes.Axes, optional
        Draw into this axes; by default a new figure is created.
    cmap : str or Colormap, default "viridis"
        Colormap of the values.
    vmin, vmax : float, optional
        Colour limits (default: the finite range of the layer's values).
    title : str, optional
        Axes title; by default the layer, the value's name and the grid size.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the axes.

    Notes
    -----
    For a layer with spatial axes (an (H, W, C) output) each row is a channel and each column a
    spatial position, numbered ``y·w + x`` (row-major; x ticks mark the start of each row y when
    there are few rows). A sequence output (L, C) uses its position x. A layer without spatial
    axes (a dense (C,) output) is drawn as a *single row* of its channels (features), with the
    channel index along x. Non-finite values are masked: drawn in a distinct "bad" colour (light
    grey, or magenta for grey colormaps) and counted in the title (``"k non-finite"``; also
    when ``title`` is given); units of the grid absent from ``per_unit`` (a subset of units)
    are masked too and counted as ``"k missing"``. The colorbar is labelled with the value's
    readable name (``"value"`` for an unnamed DataArray).

    Raises
    ------
    ValueError
        If ``layer`` is not a layer of ``per_unit`` (the message lists them), or ``per_unit`` is
        not a one-dimensional per-unit result with the unit coordinates.

    Examples
    --------
    >>> import matplotlib.pyplot as plt, numpy as np, xarray as xr, tmx.plot
    >>> coords = tmx.cube.unit_coords(["conv"], [(2, 2, 3)])           # (H, W, C): 12 units
    >>> per_unit = xr.DataArray(np.arange(12.0), dims="unit", name="invariance",
    ...                         coords={k: ("unit", c) for k, c in coords.items()})
    >>> fig = tmx.plot.unit_heatmap(per_unit, "conv")
    >>> fig.axes[0].images[0].get_array().shape                        # channels × positions
    (3, 4)
    >>> fig.axes[0].get_title()
    'conv: invariance (3 channels × 2×2 positions)'
    >>> plt.close(fig)
    """
    image, h, w, spatial, n_missing = _layer_grid(per_unit, layer)
    n_rows, n_cols = image.shape
    n_bad = int(np.ma.count_masked(image)) - n_missing
    if spatial:
        width = float(np.clip(2.5 + n_cols * 0.06, 5.0, 12.0))
        height = float(np.clip(1.6 + n_rows * 0.12, 2.8, 8.0))
    else:
        width = float(np.clip(2.5 + n_cols * 0.1, 5.0, 12.0))
        height = 2.2
    fig, ax = new_axes(ax, (width, height))
    colormap = with_bad_color(cmap)
    im = ax.imshow(
        image,
        cmap=colormap,
        vmin=vmin,
        vmax=vmax,
        aspect="auto",
        interpolation="nearest",
        origin="upper",
    )
    name = pretty_name(per_unit.name or per_unit.attrs.get("measure"))
    if spatial:
        ax.set_xlabel("position (y·w + x)")
        ax.set_ylabel("channel")
        if 1 < h <= 16 and w > 1:  # mark where each row y of the feature map starts
            ax.set_xticks(np.arange(h) * w)
            for k in range(1, h):
                ax.axvline(k * w - 0.5, color="white", linewidth=0.6, alpha=0.6)
        size = f"{n_rows} channels × {h}×{w} positions"
    else:
        ax.set_xlabel("channel (feature)")
        ax.set_yticks([])
        size = f"{n_cols} features, no spatial axes"
    cbar = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    cbar.set_label(name)
    note = ", ".join(
        text
        for count, text in ((n_bad, f"{n_bad} non-finite"), (n_missing, f"{n_missing} missing"))
        if count
    )
    if title is None:
        title = f"{layer}: {name} ({size})"
    if note:
        title = f"{title}\n{note} (shown in {bad_color_name(colormap)})"
    ax.set_title(title, fontsize=10)
    return fig
