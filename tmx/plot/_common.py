"""Shared helpers of ``tmx.plot``: readable names, figure/axes handling, colours."""

from __future__ import annotations

import re
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, to_hex
from matplotlib.figure import Figure

_WRAPPER = re.compile(r"^\s*(?:bootstrap|boot|convergence)\((.*)\)\s*$")


def pretty_name(name: Any, default: str = "value") -> str:
    """A readable version of a measure or variable name.

    ``"normalized_variance"`` → ``"normalized variance"``; a ``bootstrap(...)`` or
    ``convergence(...)`` wrapper (the ``measure`` attr of their results) is removed; ``None``
    or ``""`` give ``default``.
    """
    if name is None:
        return default
    text = str(name).strip()
    match = _WRAPPER.match(text)
    if match:
        text = match.group(1).strip()
    text = text.replace("_", " ").strip()
    return " ".join(text.split()) or default


def figure_of(ax: Axes) -> Figure:
    """The (root) figure an axes belongs to, also inside a sub-figure."""
    try:
        fig = ax.get_figure(root=True)  # matplotlib >= 3.10
    except TypeError:  # pragma: no cover - older matplotlib
        parent: Any = ax.figure
        while not isinstance(parent, Figure) or getattr(parent, "_parent", None) is not None:
            parent = parent._parent  # SubFigure → parent
        fig = parent
    if fig is None:  # pragma: no cover - an Axes is made on a figure; matplotlib types allow None
        raise ValueError("ax must belong to a matplotlib figure")
    return fig


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """``(figure, axes)``: the given axes and its figure, or a new constrained-layout figure."""
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        return fig, ax
    if not isinstance(ax, Axes):
        raise ValueError(f"ax must be a matplotlib Axes or None; got {type(ax).__name__}")
    return figure_of(ax), ax


def with_bad_color(cmap: str | Colormap) -> Colormap:
    """A copy of ``cmap`` whose "bad" (masked, non-finite) colour stands out.

    A colormap that already has an opaque bad colour keeps it; otherwise light grey is used, or
    magenta when light grey is close to a colour of the map (grey colormaps).
    """
    base = plt.get_cmap(cmap) if isinstance(cmap, str) else cmap
    if not isinstance(base, Colormap):
        raise ValueError(f"cmap must be a colormap name or Colormap; got {cmap!r}")
    if base.get_bad()[3] > 0:
        return base.copy()
    grey = np.array([0.83, 0.83, 0.83])
    colours = base(np.linspace(0, 1, 256))[:, :3]
    near = np.min(np.linalg.norm(colours - grey, axis=1)) < 0.2
    return base.with_extremes(bad="magenta" if near else "lightgrey")


def bad_color_name(cmap: Colormap) -> str:
    """A short name of a colormap's bad colour for notes ("light grey", "magenta", or hex)."""
    red, green, blue, alpha = (round(float(c), 3) for c in cmap.get_bad())
    rgba = (red, green, blue, alpha)
    names = {(0.827, 0.827, 0.827, 1.0): "light grey", (1.0, 0.0, 1.0, 1.0): "magenta"}
    return names.get(rgba, to_hex(rgba, keep_alpha=False))
