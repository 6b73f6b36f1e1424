"""Per-layer curves: one value (with an optional bootstrap interval) per layer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._common import new_axes, pretty_name

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h", "p")


@dataclass(eq=False)
class _Series:
    label: str
    layers: list[str]
    estimate: np.ndarray
    low: np.ndarray | None
    high: np.ndarray | None
    measure: str
    ci: float | None


def _layers_of(obj: xr.DataArray | xr.Dataset, what: str) -> list[str]:
    if "layer" not in obj.dims:
        raise ValueError(f"{what} has no 'layer' dim (dims: {list(obj.dims)})")
    layers = [str(x) for x in obj["layer"].values]
    if not layers:
        raise ValueError(f"{what} has no layers")
    if len(set(layers)) != len(layers):
        raise ValueError(f"{what} names a layer twice: {layers}")
    return layers


def _values(da: xr.DataArray, what: str) -> np.ndarray:
    if da.dims != ("layer",):
        raise ValueError(
            f"{what} must be one value per layer (dims ('layer',)); got dims {da.dims}. "
            "Reduce per-unit results with tmx.by_layer first."
        )
    try:
        return np.asarray(da.values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must hold numbers; got dtype {da.dtype}") from None


def _series(obj: Any, label: str | None, what: str) -> _Series:
    if isinstance(obj, xr.Dataset):
        missing = [k for k in ("estimate", "low", "high") if k not in obj.data_vars]
        if missing:
            raise ValueError(
                f"{what} is a Dataset without {missing}; expected a bootstrap result with "
                "'estimate', 'low' and 'high' over 'layer' (tmx.bootstrap(..., reduce=...))"
            )
        layers = _layers_of(obj, what)
        est = _values(obj["estimate"], f"{what}['estimate']")
        low = _values(obj["low"], f"{what}['low']")
        high = _values(obj["high"], f"{what}['high']")
        measure = obj.attrs.get("measure") or obj["estimate"].attrs.get("measure")
        ci = obj.attrs.get("ci")
        ci = float(ci) if ci is not None else None
        name = pretty_name(measure)
        return _Series(label or name, layers, est, low, high, name, ci)
    if isinstance(obj, xr.DataArray):
        layers = _layers_of(obj, what)
        est = _values(obj, what)
        name = pretty_name(obj.name or obj.attrs.get("measure"))
        return _Series(label or name, layers, est, None, None, name, None)
    raise ValueError(
        f"{what} must be an xr.DataArray over 'layer' or a bootstrap xr.Dataset; "
        f"got {type(obj).__name__}"
    )


def _collect(results: Any, labels: Sequence[str] | None) -> list[_Series]:
    single = isinstance(results, xr.DataArray | xr.Dataset)  # a Dataset is a Mapping too
    if single:
        items: list[tuple[str | None, Any, str]] = [(None, results, "results")]
    elif isinstance(results, Mapping):
        items = [(str(k), r, f"results[{k!r}]") for k, r in results.items()]
    elif isinstance(results, Sequence) and not isinstance(results, str | bytes):
        items = [(None, r, f"results[{i}]") for i, r in enumerate(results)]
    else:
        raise ValueError(
            "results must be a DataArray over 'layer', a bootstrap Dataset, or a list/dict of "
            f"those; got {type(results).__name__}"
        )
    if not items:
        raise ValueError("results is empty: give at least one per-layer result")
    if labels is not None:
        if isinstance(labels, str) or len(labels) != len(items):
            raise ValueError(
                f"labels must be a sequence of {len(items)} strings (one per result); "
                f"got {labels!r}"
            )
        items = [(str(lab), r, what) for lab, (_, r, what) in zip(labels, items, strict=True)]
    series = [_series(r, lab, what) for lab, r, what in items]
    # Several unnamed results of the same measure (two models): number the duplicates.
    if labels is not None or (isinstance(results, Mapping) and not single):
        return series
    names = [s.label for s in series]
    for i, s in enumerate(series):
        if names.count(s.label) > 1:
            s.label = f"{s.label} ({names[: i + 1].count(s.label)})"
    return series


def _union(series: Sequence[_Series]) -> list[str]:
    seen: dict[str, None] = {}
    for s in series:
        for layer in s.layers:
            seen.setdefault(layer, None)
    return list(seen)


def _aligned(s: _Series, index: Mapping[str, int], n: int, values: np.ndarray) -> np.ndarray:
    out = np.full(n, np.nan)
    out[[index[layer] for layer in s.layers]] = values
    out[~np.isfinite(out)] = np.nan
    return out


def _draw_interval(
    ax: Axes,
    x: np.ndarray,
    est: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    color: Any,
    label: str,
) -> None:
    """Error bars spanning exactly [low, high], even where the estimate lies outside."""
    ok = np.isfinite(est) & np.isfinite(low) & np.isfinite(high)
    lo, hi = np.minimum(low[ok], high[ok]), np.maximum(low[ok], high[ok])
    y = est[ok]
    yerr = np.vstack([np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)])
    container = ax.errorbar(
        x[ok],
        y,
        yerr=yerr,
        fmt="none",
        ecolor=color,
        elinewidth=1.2,
        capsize=3,
        label=label,
        zorder=2,
    )
    if np.any((y < lo) | (y > hi)):  # percentile intervals need not contain the estimate
        (bars,) = container.lines[2]
        bars.set_segments(
            [np.array([[xi, a], [xi, b]]) for xi, a, b in zip(x[ok], lo, hi, strict=True)]
        )
        caps = container.lines[1]
        if len(caps) == 2:
            caps[0].set_ydata(lo)
            caps[1].set_ydata(hi)


def layer_curves(
    results: xr.DataArray
    | xr.Dataset
    | Sequence[xr.DataArray | xr.Dataset]
    | Mapping[str, xr.DataArray | xr.Dataset],
    *,
    labels: Sequence[str] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    ylabel: str | None = None,
    log: bool = False,
) -> Figure:
    """Plot one or several per-layer results as curves over the layers.

    Parameters
    ----------
    results : xr.DataArray, xr.Dataset, or a list or dict of those
        A per-layer result (a DataArray over ``layer``, e.g. from ``tmx.by_layer``) or a
        bootstrap result (a Dataset with ``estimate``, ``low`` and ``high`` over ``layer``,
        from ``tmx.bootstrap(..., reduce=...)``). A list or dict draws several series (several
        measures, or several models) on one axes; dict keys label the series.
    labels : sequence of str, optional
        Legend labels, one per result (override dict keys). By default the measure's readable
        name (numbered when several results share it).
    ax : matplotlib.axes.Axes, optional
        Draw into this axes; by default a new figure is created.
    title : str, optional
        Axes title.
    ylabel : str, optional
        y-axis label; by default the readable measure name when all series share it, else
        ``"value"``.
    log : bool, default False
        Logarithmic y axis (non-positive values are not drawn).

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the axes.

    Notes
    -----
    The x axis lists the layers categorically, in order: the union of all results' layers in
    order of first appearance, so results over different layers share one axis (a layer missing
    from a result leaves a gap in its curve). Non-finite values are skipped (the curve breaks
    there). Each series has its own marker. Bootstrap results get error bars spanning
    ``[low, high]`` and their legend label mentions the interval, e.g. ``"(95% CI)"``; a legend is
    shown when there are several series or any interval.

    Raises
    ------
    ValueError
        If ``results`` is empty or not per-layer, a result has no or duplicate layers, a
        bootstrap Dataset lacks ``estimate``/``low``/``high``, or ``labels`` has the wrong length.

    Examples
    --------
    >>> import matplotlib.pyplot as plt, xarray as xr, tmx.plot
    >>> per_layer = xr.DataArray([0.2, 0.5, 0.4], dims="layer",
    ...                          coords={"layer": ["conv1", "conv2", "dense"]},
    ...                          name="normalized_variance")
    >>> fig = tmx.plot.layer_curves(per_layer)
    >>> ax = fig.axes[0]
    >>> [t.get_text() for t in ax.get_xticklabels()], ax.get_ylabel()
    (['conv1', 'conv2', 'dense'], 'normalized variance')
    >>> plt.close(fig)
    """
    series = _collect(results, labels)
    layers = _union(series)
    index = {layer: i for i, layer in enumerate(layers)}
    n = len(layers)
    longest = max(len(layer) for layer in layers)
    width = float(np.clip(1.6 + 0.42 * n + (0.04 * longest if n > 8 else 0), 5.0, 16.0))
    fig, ax = new_axes(ax, (width, 4.2 + min(longest, 30) * 0.03))
    x = np.arange(n, dtype=np.float64)
    any_interval = False
    # Several series with intervals: dodge them sideways so the error bars stay apart.
    with_ci = [k for k, s in enumerate(series) if s.low is not None]
    step = min(0.24 / len(with_ci), 0.08) if len(with_ci) > 1 else 0.0
    for k, s in enumerate(series):
        est = _aligned(s, index, n, s.estimate)
        xk = x + (with_ci.index(k) - (len(with_ci) - 1) / 2) * step if k in with_ci else x
        marker = MARKERS[k % len(MARKERS)]
        label = s.label
        if s.low is not None and s.high is not None:
            any_interval = True
            if s.ci is not None:
                label = f"{label} ({s.ci * 100:g}% CI)"
            else:
                label = f"{label} (interval)"
        (line,) = ax.plot(
            xk, est, marker=marker, markersize=6, linewidth=1.6, label=label, zorder=3
        )
        if s.low is not None and s.high is not None:
            low = _aligned(s, index, n, s.low)
            high = _aligned(s, index, n, s.high)
            _draw_interval(ax, xk, est, low, high, line.get_color(), "_nolegend_")
    ax.set_xticks(x)
    rotate = n > 1 and (longest > 8 or n * longest > 70)
    fontsize = 9 if n <= 30 else 7
    if rotate:
        ax.set_xticklabels(
            layers,
            rotation=45 if n <= 40 else 90,
            ha="right",
            rotation_mode="anchor",
            fontsize=fontsize,
        )
    else:
        ax.set_xticklabels(layers, fontsize=fontsize)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_xlabel("layer")
    if ylabel is None:
        measures = {s.measure for s in series}
        ylabel = measures.pop() if len(measures) == 1 else "value"
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log", nonpositive="mask")
    if title is not None:
        ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    if len(series) > 1 or any_interval:
        ax.legend(fontsize=8, frameon=False)
    return fig
