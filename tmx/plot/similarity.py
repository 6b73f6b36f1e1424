"""Representation similarity: a heat map of CKA between layers (``tmx.cka``) or of CKA
invariance over transformations and layers (``tmx.cka_invariance``)."""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._common import bad_color_name, new_axes, pretty_name, with_bad_color

_ANNOTATE_MAX = 12  # annotate the cells with their values up to this many rows and columns


def _labels(result: xr.DataArray, dim: Hashable) -> list[str]:
    if dim == "transformation":
        for name in ("transform", "description"):
            if name in result.coords and result[name].dims == (dim,):
                return [str(v) for v in result[name].values]
    return [str(v) for v in result[dim].values]


def similarity_heatmap(
    result: xr.DataArray, ax: Axes | None = None, title: str | None = None
) -> Figure:
    """Draw a CKA matrix as a heat map on the fixed scale [0, 1].

    Parameters
    ----------
    result : xr.DataArray
        ``tmx.cka(...)`` (dims ``layer_a`` × ``layer_b``: rows are the layers of the first cube)
        or ``tmx.cka_invariance(...)`` (dims ``transformation`` × ``layer``: rows are the
        transformations, labelled by the ``transform`` coordinate when the cube has one).
    ax : matplotlib Axes, optional
        Draw into this axes; default a new figure.
    title : str, optional
        Axes title; by default the measure, the kernel and the estimator.

    Returns
    -------
    matplotlib.figure.Figure

    Notes
    -----
    Cells are annotated with their values when there are at most 12 rows and columns. NaN
    cells (a layer constant over the samples) are drawn in a distinct "bad" colour. The scale
    is fixed to [0, 1], the range of CKA with the biased estimator (unbiased estimates may dip
    slightly below 0 and are clipped in colour, not in the annotations).

    Examples
    --------
    >>> import numpy as np, xarray as xr, tmx, tmx.plot
    >>> a = np.random.default_rng(0).normal(size=(50, 1, 4))
    >>> cube = xr.DataArray(a, dims=("sample", "transformation", "unit"),
    ...     coords={"layer": ("unit", ["p", "p", "q", "q"]), "channel": ("unit", [0, 1] * 2),
    ...             "y": ("unit", [-1] * 4), "x": ("unit", [-1] * 4)})
    >>> fig = tmx.plot.similarity_heatmap(tmx.cka(cube))
    >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
    ['p', 'q']
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    if not isinstance(result, xr.DataArray) or result.ndim != 2:
        raise ValueError(
            "result must be the 2-D DataArray of tmx.cka (layer_a, layer_b) or "
            f"tmx.cka_invariance (transformation, layer); got {type(result).__name__}"
            + (f" with dims {result.dims}" if isinstance(result, xr.DataArray) else "")
        )
    if set(result.dims) == {"layer_a", "layer_b"}:
        result = result.transpose("layer_a", "layer_b")
        xlabel, ylabel = "layer (b)", "layer (a)"
    elif set(result.dims) == {"transformation", "layer"}:
        result = result.transpose("transformation", "layer")
        xlabel, ylabel = "layer", "transformation"
    else:
        raise ValueError(
            "result must have dims (layer_a, layer_b) (tmx.cka) or (transformation, layer) "
            f"(tmx.cka_invariance); got {result.dims}"
        )
    rows, cols = result.dims
    values = np.ma.masked_invalid(np.asarray(result.values, dtype=np.float64))
    n_rows, n_cols = values.shape
    width = float(np.clip(2.5 + 0.55 * n_cols, 4.0, 12.0))
    height = float(np.clip(1.5 + 0.45 * n_rows, 3.0, 10.0))
    fig, ax = new_axes(ax, (width, height))
    cmap = with_bad_color("magma")
    im = ax.imshow(values, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_xticks(np.arange(n_cols), _labels(result, cols), rotation=45, ha="right")
    ax.set_yticks(np.arange(n_rows), _labels(result, rows))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if n_rows <= _ANNOTATE_MAX and n_cols <= _ANNOTATE_MAX:
        for i in range(n_rows):
            for j in range(n_cols):
                v = result.values[i, j]
                if np.isfinite(v):
                    ax.text(
                        j,
                        i,
                        f"{v:.2f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="black" if v > 0.6 else "white",
                    )
    cbar = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    measure = result.attrs.get("measure", result.name)
    cbar.set_label(pretty_name(result.name or measure, "CKA"))
    if title is None:
        details = ", ".join(
            f"{result.attrs[k]}" for k in ("kernel", "estimator") if k in result.attrs
        )
        title = pretty_name(measure, "CKA") + (f" ({details})" if details else "")
    n_bad = int(np.ma.count_masked(values))
    if n_bad:
        title = f"{title}\n{n_bad} NaN (shown in {bad_color_name(cmap)})"
    ax.set_title(title, fontsize=10)
    return fig
