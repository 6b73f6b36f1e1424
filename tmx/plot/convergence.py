"""The convergence curve: a measure and its interval against the number of samples."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .. import _validate
from ._common import new_axes, pretty_name


def convergence(
    curve: xr.Dataset,
    *,
    layers: list[str] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Estimate and interval against the subsample size, one line (and band) per layer.

    Parameters
    ----------
    curve : xr.Dataset
        The result of ``tmx.convergence(..., reduce=...)``: ``estimate``, ``low``, ``high``
        over ``size`` and ``layer``.
    layers : list of str, optional
        Layers to draw (default: all).
    ax : matplotlib Axes, optional
        Draw into this axes; default a new figure.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np, xarray as xr, tmx, tmx.plot
    >>> a = np.random.default_rng(0).normal(size=(80, 3, 2))
    >>> cube = xr.DataArray(a, dims=("sample", "transformation", "unit"),
    ...     coords={"layer": ("unit", ["d", "d"]), "channel": ("unit", [0, 1]),
    ...             "y": ("unit", [-1, -1]), "x": ("unit", [-1, -1])})
    >>> fig = tmx.plot.convergence(tmx.convergence(tmx.normalized_variance, cube, sizes=(20, 80)))
    >>> len(fig.axes[0].lines)
    1
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    if not isinstance(curve, xr.Dataset) or not {"estimate", "low", "high"} <= set(curve):
        raise ValueError(
            "curve must be the Dataset of tmx.convergence (estimate, low, high over size); "
            f"got {type(curve).__name__}"
        )
    if "size" not in curve.dims or "layer" not in curve.dims:
        raise ValueError(
            "curve must lie over 'size' and 'layer' (tmx.convergence(..., reduce=...)); "
            f"got dims {dict(curve.sizes)}"
        )
    names = [str(x) for x in curve["layer"].values]
    chosen = names if layers is None else _validate.names(layers)
    unknown = [name for name in chosen if name not in names]
    if unknown:
        raise ValueError(f"layers {unknown} are not in the curve (layers: {names})")
    fig, ax = new_axes(ax, figsize=(6.4, 4.2))
    sizes = np.asarray(curve["size"].values, dtype=np.float64)
    for name in chosen:
        row: Any = curve.sel(layer=name)
        (line,) = ax.plot(sizes, row["estimate"].values, marker="o", label=name)
        ax.fill_between(
            sizes, row["low"].values, row["high"].values, color=line.get_color(), alpha=0.2
        )
    ax.set_xscale("log")
    ax.set_xlabel("samples N")
    measure = pretty_name(curve.attrs.get("measure"), "measure")
    ax.set_ylabel(measure)
    ci = curve.attrs.get("ci")
    method = curve.attrs.get("method", "")
    band = f"{round(100 * float(ci))} % {method} interval" if ci is not None else "interval"
    ax.set_title(title or f"{measure} against N (bands: {band})", fontsize="medium")
    ax.legend(title="layer", fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig
