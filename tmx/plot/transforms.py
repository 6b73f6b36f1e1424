"""A preview grid of a transformation set applied to a few inputs."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from .. import transforms as _transforms
from .._deprecation import renamed_keyword
from ..transforms import TransformationSet


def _length(line: str) -> int:
    """Visible length of a line; a trailing "+" or ", " may hang over the width."""
    return len(line.rstrip(" ,+"))


def _greedy(pieces: list[str], width: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for piece in pieces:
        if current and _length(current + piece) > width:
            lines.append(current)
            current = ""
        current += piece
    if current:
        lines.append(current)
    return lines


def wrap_label(label: str, width: int = 18, max_lines: int = 3) -> str:
    """Wrap a transformation label into lines of about ``width`` characters.

    Breaks go after ``+`` (between chained operations) first, then after ``", "`` (between
    parameters) in lines still too long, then anywhere; every character is kept, so
    ``wrap_label(s).replace("\\n", "") == s`` unless the label needs more than ``max_lines``
    lines, in which case it is shortened with a trailing "…".

    Examples
    --------
    >>> from tmx.plot.transforms import wrap_label
    >>> print(wrap_label("rotation(90)+translation(3, 0)+scale(2)", width=18))
    rotation(90)+
    translation(3, 0)+
    scale(2)
    """
    lines: list[str] = []
    for line in _greedy(re.split(r"(?<=\+)", label), width):
        if _length(line) <= width:
            lines.append(line)
            continue
        for part in _greedy(re.split(r"(?<=, )", line), width):
            while _length(part) > width:  # no break point left: cut hard
                lines.append(part[:width])
                part = part[width:]
            lines.append(part)
    lines = [line for line in lines if line]
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], lines[max_lines - 1][: width - 1].rstrip() + "…"]
    return "\n".join(lines)


def _columns(n_transforms: int, max_transforms: int) -> list[int]:
    if n_transforms <= max_transforms:
        return list(range(n_transforms))
    if max_transforms == 1:
        return [0]
    return np.rint(np.linspace(0, n_transforms - 1, max_transforms)).astype(int).tolist()


@renamed_keyword("tset", "transforms")
def transform_preview(
    transforms: TransformationSet,
    x: np.ndarray,
    *,
    n_samples: int = 4,
    max_transforms: int = 12,
    cmap: str | Colormap = "gray",
) -> Figure:
    """Show a grid of inputs (rows) under the transformations of a set (columns).

    Parameters
    ----------
    transforms : TransformationSet
        The transformations, applied with ``tmx.transforms.apply_many``.
    x : numpy.ndarray
        NHWC inputs; the first ``n_samples`` are shown.
    n_samples : int, default 4
        Number of rows (fewer if ``x`` holds fewer samples).
    max_transforms : int, default 12
        At most this many columns: all transformations when there are few enough, otherwise
        ``max_transforms`` evenly spaced ones (always including the first and the last).
    cmap : str or Colormap, default "gray"
        Colormap of single-channel inputs.

    Returns
    -------
    matplotlib.figure.Figure
        A new figure with ``n_rows × n_columns`` axes (row-major), sized with the grid.

    Notes
    -----
    Each row is scaled by the finite range of its *untransformed* input and transformed images
    are clipped to it, so that photometric transformations (brightness, contrast) stay visible.
    One channel is drawn with ``cmap``, three as RGB; other channel counts show the channel
    mean with ``cmap``. Columns are titled with the set's labels (small font, wrapped at ``+``
    and ``", "``, shortened with "…" when very long); rows are labelled ``sample i``; no ticks.

    Raises
    ------
    ValueError
        If ``transforms`` is not a TransformationSet, ``x`` is not a non-empty 4-D NHWC array, or
        ``n_samples`` / ``max_transforms`` is not a positive integer.

    Examples
    --------
    >>> import matplotlib.pyplot as plt, numpy as np, tmx, tmx.plot
    >>> x = np.random.default_rng(0).random((3, 8, 8, 1)).astype("float32")
    >>> fig = tmx.plot.transform_preview(tmx.transforms.rotation([0, 90, 180]), x, n_samples=2)
    >>> len(fig.axes), fig.axes[1].get_title()
    (6, 'rotation(90)')
    >>> plt.close(fig)
    """
    if not isinstance(transforms, TransformationSet):
        raise ValueError(f"transforms must be a TransformationSet; got {type(transforms).__name__}")
    for name, value in (("n_samples", n_samples), ("max_transforms", max_transforms)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    arr = np.asarray(x)
    if arr.ndim != 4 or 0 in arr.shape:
        raise ValueError(f"x must be a non-empty NHWC batch (N, H, W, C); got shape {arr.shape}")
    rows = min(int(n_samples), arr.shape[0])
    columns = _columns(len(transforms), int(max_transforms))
    batch = arr[:rows].astype(np.float32)
    out = np.asarray(_transforms.apply_many(transforms, batch, columns))
    labels = [transforms.labels[j] for j in columns]
    n_cols = len(columns)
    height, width = arr.shape[1:3]
    cell = float(np.clip(15.0 / n_cols, 0.8, 1.3))  # inches per column: at most ~16 in wide
    aspect = height / width
    fig, axes = plt.subplots(
        rows,
        n_cols,
        squeeze=False,
        figsize=(0.5 + cell * n_cols, 0.45 + cell * aspect * rows + 0.35),
        layout="constrained",
    )
    chars = max(8, int(cell * 16))  # about 16 characters per inch at 7 pt
    for i in range(rows):
        original = batch[i]
        if original.shape[-1] == 3:
            chan = original
        elif original.shape[-1] == 1:
            chan = original[..., 0]
        else:
            chan = original.mean(axis=-1)
        finite = np.isfinite(chan)
        lo = float(chan[finite].min()) if finite.any() else 0.0
        hi = float(chan[finite].max()) if finite.any() else 1.0
        if hi <= lo:
            hi = lo + 1.0
        for k in range(n_cols):
            ax = axes[i, k]
            img = out[i, k]
            if img.shape[-1] == 3:
                rgb = np.clip(np.nan_to_num((img - lo) / (hi - lo), nan=0.0), 0.0, 1.0)
                ax.imshow(rgb, interpolation="nearest")
            else:
                grey = img[..., 0] if img.shape[-1] == 1 else img.mean(axis=-1)
                ax.imshow(grey, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(wrap_label(labels[k], chars), fontsize=7)
            if k == 0:
                ax.set_ylabel(f"sample {i}", fontsize=8)
    return fig
