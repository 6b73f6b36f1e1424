"""Analysis figures: how accuracy relates to a measure across transformation groups."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from ._common import new_axes, pretty_name

# Candidate label offsets in points: (dx, dy, horizontal alignment, vertical alignment).
_OFFSETS = (
    (5, 4, "left", "bottom"),
    (5, -4, "left", "top"),
    (-5, 4, "right", "bottom"),
    (-5, -4, "right", "top"),
    (0, 8, "center", "bottom"),
    (0, -8, "center", "top"),
)


def _overlap(a: Bbox, b: Bbox) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0.0) * max(h, 0.0)


def _annotate(ax: Axes, names: list[str], x: np.ndarray, y: np.ndarray) -> None:
    """Label each point with its name, trying a few offsets to avoid overlaps (greedy).

    Each label takes the first candidate offset with the least overlap with the labels placed
    so far, the other points and the outside of the axes, measured on the current layout (a
    heuristic: the final layout can still move things a little).
    """
    canvas: Any = ax.figure.canvas  # get_renderer: a method of the Agg canvases only
    try:
        renderer = canvas.get_renderer()
    except AttributeError:  # pragma: no cover - a backend without a renderer: no search
        renderer = None
    points = ax.transData.transform(np.column_stack([x, y]))
    r = 4.0  # marker half-size in pixels (about s=36 points²)
    markers = [Bbox.from_extents(px - r, py - r, px + r, py + r) for px, py in points]
    frame = ax.get_window_extent(renderer) if renderer is not None else None
    placed: list[Bbox] = []
    anns = [  # in the order of the points; placed from left to right
        ax.annotate(name, (xi, yi), xytext=_OFFSETS[0][:2], textcoords="offset points", fontsize=8)
        for name, xi, yi in zip(names, x, y, strict=True)
    ]
    for i in np.argsort(x, kind="stable"):
        ann = anns[i]
        best, best_cost = _OFFSETS[0], np.inf
        for cand in _OFFSETS if renderer is not None else _OFFSETS[:1]:
            dx, dy, ha, va = cand
            ann.xyann = (dx, dy)
            ann.set_ha(ha)
            ann.set_va(va)
            if renderer is None or frame is None:
                break
            box = ann.get_window_extent(renderer).expanded(1.05, 1.15)
            cost = sum(_overlap(box, b) for b in placed)
            cost += sum(_overlap(box, m) for j, m in enumerate(markers) if j != i)
            cost += box.width * box.height - _overlap(box, frame)  # outside the axes
            if cost < best_cost - 1e-6:
                best, best_cost = cand, cost
        dx, dy, ha, va = best
        ann.xyann = (dx, dy)
        ann.set_ha(ha)
        ann.set_va(va)
        if renderer is not None:
            placed.append(ann.get_window_extent(renderer))


def accuracy_scatter(
    analysis: xr.Dataset,
    *,
    ax: Axes | None = None,
    layer: str | None = None,
    title: str | None = None,
) -> Figure:
    """Scatter accuracy against a measure, one point per transformation group.

    Parameters
    ----------
    analysis : xr.Dataset
        An analysis (from ``tmx.analyze``): dim ``group`` with variables ``accuracy`` and
        ``overall`` (and ``measure`` over (group, layer) when ``layer`` is given); ``attrs
        ["measure"]`` names the measure.
    ax : matplotlib.axes.Axes, optional
        Draw into this axes; by default a new figure is created.
    layer : str, optional
        Use this layer's value (``measure.sel(layer=layer)``) instead of ``overall``.
    title : str, optional
        Axes title.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the axes.

    Notes
    -----
    Each point is annotated with its group name, offset a few points in the direction chosen
    greedily to keep labels apart (a simple heuristic, not a guarantee). Groups whose measure or
    accuracy is non-finite are left out. The x label is the readable measure name with
    ``"(mean over units)"`` (or the layer), the y label ``"accuracy"``; y spans [0, 1.02].

    Raises
    ------
    ValueError
        If ``analysis`` lacks ``group``, ``accuracy`` or ``overall``/``measure``, or ``layer``
        is not one of its layers (the message lists them).

    Examples
    --------
    >>> import matplotlib.pyplot as plt, xarray as xr, tmx.plot
    >>> analysis = xr.Dataset(
    ...     {"accuracy": ("group", [0.98, 0.61]), "overall": ("group", [0.05, 0.42])},
    ...     coords={"group": ["identity", "rotation"]}, attrs={"measure": "normalized_variance"})
    >>> fig = tmx.plot.accuracy_scatter(analysis)
    >>> ax = fig.axes[0]
    >>> ax.get_xlabel(), ax.get_ylabel(), [t.get_text() for t in ax.texts]
    ('normalized variance (mean over units)', 'accuracy', ['identity', 'rotation'])
    >>> plt.close(fig)
    """
    if not isinstance(analysis, xr.Dataset):
        raise ValueError(f"analysis must be an xr.Dataset; got {type(analysis).__name__}")
    if "group" not in analysis.dims:
        raise ValueError(f"analysis has no 'group' dim (dims: {list(analysis.dims)})")
    needed = ["accuracy", "overall" if layer is None else "measure"]
    missing = [k for k in needed if k not in analysis.data_vars]
    if missing:
        raise ValueError(f"analysis lacks the variables {missing}")
    measure = pretty_name(analysis.attrs.get("measure"), default="measure")
    if layer is None:
        xs = analysis["overall"]
        reduce = analysis.attrs.get("reduce", "mean")
        xlabel = f"{measure} ({reduce} over units)"
    else:
        layers = [str(v) for v in analysis["measure"]["layer"].values]
        if layer not in layers:
            raise ValueError(f"unknown layer {layer!r}; layers: {layers}")
        xs = analysis["measure"].sel(layer=layer)
        xlabel = f"{measure} ({layer})"
    ys = analysis["accuracy"]
    for name, var in (("x", xs), ("accuracy", ys)):
        if var.dims != ("group",):
            raise ValueError(f"{name} values must be one per group; got dims {var.dims}")
    groups = [str(g) for g in analysis["group"].values]
    x = np.asarray(xs.values, dtype=np.float64)
    y = np.asarray(ys.values, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    fig, ax = new_axes(ax, (6.4, 4.8))
    ax.scatter(x[ok], y[ok], s=36, zorder=3)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.grid(True, alpha=0.3)
    if title is not None:
        ax.set_title(title)
    if ok.any():
        span = float(np.ptp(x[ok]))
        pad = 0.12 * span if span > 0 else 0.5 * (abs(float(x[ok][0])) or 1.0)
        ax.set_xlim(x[ok].min() - pad, x[ok].max() + pad)
        _annotate(ax, [g for g, good in zip(groups, ok, strict=True) if good], x[ok], y[ok])
    left_out = int((~ok).sum())
    if left_out:
        ax.text(
            0.99,
            0.01,
            f"{left_out} group(s) with non-finite values left out",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=7,
            color="0.4",
        )
    return fig
