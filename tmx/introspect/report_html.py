"""A self-contained static HTML page for a data set report (no server, no network).

Everything is inline: the scatter plots are SVG drawn here, the sample images are PNG data
URIs, the small script only recolours the scatter (by label, familiarity or duplicate cluster).
The page opens from disk in any browser and can be attached to a paper's supplement.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib import image as mpimg

from .. import _validate

__all__ = ["report_html"]

_SIZE = 420  # scatter side, px
_PAD = 12

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em}h3{font-size:1em}
.meta{color:#555;font-size:.9em}
.layer{border-top:1px solid #ddd;padding-top:8px}
.row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
svg.scatter{border:1px solid #ccc;background:#fff}
table{border-collapse:collapse;font-size:.85em}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
.thumbs{display:flex;flex-wrap:wrap;gap:8px}
.thumb{text-align:center;font-size:.75em}
.thumb img{width:64px;height:64px;image-rendering:pixelated;border:1px solid #ccc;display:block}
.legend span{display:inline-block;margin-right:10px;font-size:.85em}
.legend i{display:inline-block;width:10px;height:10px;margin-right:3px;border-radius:50%}
"""

SCRIPT = """
(function () {
  function recolour(layer, by) {
    var points = document.querySelectorAll('svg[data-layer="' + layer + '"] circle.pt');
    for (var i = 0; i < points.length; i++) {
      var colour = points[i].getAttribute('data-' + by);
      if (colour) { points[i].setAttribute('fill', colour); }
    }
    var legends = document.querySelectorAll('.legend[data-layer="' + layer + '"]');
    for (var j = 0; j < legends.length; j++) {
      legends[j].style.display = legends[j].getAttribute('data-by') === by ? '' : 'none';
    }
  }
  var selects = document.querySelectorAll('select.colour-by');
  for (var k = 0; k < selects.length; k++) {
    selects[k].addEventListener('change', function (event) {
      recolour(event.target.getAttribute('data-layer'), event.target.value);
    });
    recolour(selects[k].getAttribute('data-layer'), selects[k].value);
  }
  document.body.setAttribute('data-points',
    String(document.querySelectorAll('svg.scatter circle.pt').length));
  document.body.setAttribute('data-ready', 'yes');
})();
"""


def _hex(rgba: Any) -> str:
    r, g, b = (round(255 * float(c)) for c in rgba[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def _categorical(values: np.ndarray) -> tuple[list[str], dict[Any, str]]:
    """A colour per sample from a categorical value, and the legend."""

    uniques = list(dict.fromkeys(values.tolist()))
    try:
        uniques = sorted(uniques)
    except TypeError:  # mixed types: keep the order of appearance
        pass
    cmap = colormaps["tab10" if len(uniques) <= 10 else "tab20"]
    legend = {u: _hex(cmap(i % cmap.N)) for i, u in enumerate(uniques)}
    return [legend[v] for v in values.tolist()], legend


def _continuous(values: np.ndarray) -> tuple[list[str], tuple[float, float]]:
    """Viridis colours between the 2nd and 98th percentiles of the finite values."""

    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return ["#999999"] * values.size, (np.nan, np.nan)
    lo, hi = np.percentile(finite, [2, 98])
    span = hi - lo if hi > lo else 1.0
    cmap = colormaps["viridis"]
    colours = [
        _hex(cmap(float(np.clip((v - lo) / span, 0, 1)))) if np.isfinite(v) else "#999999"
        for v in values
    ]
    return colours, (float(lo), float(hi))


def _png(image: np.ndarray) -> str:
    """A PNG data URI of an image (h, w), (h, w, 1), (h, w, 3) or (h, w, 4), min-max scaled."""

    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    finite = img[np.isfinite(img)]
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    img = np.clip((np.nan_to_num(img, nan=lo) - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    buf = io.BytesIO()
    mpimg.imsave(buf, img, cmap="gray" if img.ndim == 2 else None, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _check_images(images: Any, report: xr.Dataset) -> np.ndarray | None:
    if images is None:
        return None
    n = report.sizes["sample"]
    if isinstance(images, xr.DataArray):
        if "sample" not in images.dims:
            raise ValueError("images must have a sample dim when given as an xr.DataArray")
        images = images.transpose("sample", ...)
        if "sample" in images.coords and "sample" in report.coords:
            images = images.sel(sample=report["sample"].values)
        images = images.values
    images = np.asarray(images)
    ok = images.ndim == 3 or (images.ndim == 4 and images.shape[-1] in (1, 3, 4))
    if not ok or images.shape[0] != n:
        raise ValueError(
            f"images must be one image per sample of the report ({n}): shape (n, h, w) or "
            f"(n, h, w, c) with c in 1, 3, 4; got {images.shape}"
        )
    return images


def _scatter(layer: str, xy: np.ndarray, fills: dict[str, list[str]], tips: list[str]) -> str:
    finite = np.isfinite(xy).all(axis=1)
    lo = xy[finite].min(axis=0) if finite.any() else np.zeros(2)
    hi = xy[finite].max(axis=0) if finite.any() else np.ones(2)
    span = np.where(hi > lo, hi - lo, 1.0)
    scaled = (xy - lo) / span * (_SIZE - 2 * _PAD) + _PAD
    radius = 3.0 if xy.shape[0] <= 2000 else 1.8
    first = next(iter(fills))
    parts = [
        f'<svg class="scatter" data-layer="{html.escape(layer)}" width="{_SIZE}" '
        f'height="{_SIZE}" viewBox="0 0 {_SIZE} {_SIZE}" xmlns="http://www.w3.org/2000/svg" '
        f'role="img" aria-label="2-D projection of layer {html.escape(layer)}">'
    ]
    for i in np.flatnonzero(finite):
        x, y = scaled[i, 0], _SIZE - scaled[i, 1]
        data = " ".join(f'data-{k}="{v[i]}"' for k, v in fills.items())
        parts.append(
            f'<circle class="pt" cx="{x:.1f}" cy="{y:.1f}" r="{radius}" fill="{fills[first][i]}" '
            f'fill-opacity="0.8" {data}><title>{html.escape(tips[i])}</title></circle>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _legend_html(layer: str, by: str, content: str, shown: bool) -> str:
    style = "" if shown else ' style="display:none"'
    return (
        f'<div class="legend" data-layer="{html.escape(layer)}" data-by="{by}"{style}>'
        f"{content}</div>"
    )


def _thumbs(indices: np.ndarray, report: xr.Dataset, layer: str, images: np.ndarray | None) -> str:
    fam = report["familiarity"].sel(layer=layer).values
    samples = report["sample"].values
    labels = report["label"].values if "label" in report.coords else None
    cells = []
    for i in indices:
        caption = f"sample {samples[i]}"
        if labels is not None:
            caption += f" · label {labels[i]}"
        caption += f"<br>{fam[i]:.4g}"
        img = (
            f'<img alt="sample {samples[i]}" src="{_png(images[i])}">' if images is not None else ""
        )
        cells.append(f'<div class="thumb">{img}{caption}</div>')
    return '<div class="thumbs">' + "".join(cells) + "</div>"


def _clusters_table(report: xr.Dataset, layer: str, limit: int = 20) -> str:
    cl = report["duplicate_cluster"].sel(layer=layer).values
    ids = np.unique(cl[cl >= 0])
    if ids.size == 0:
        return "<p>No near-duplicate clusters.</p>"
    samples = report["sample"].values
    rows = []
    for c in ids[:limit]:
        members = samples[cl == c]
        shown = ", ".join(str(m) for m in members[:12]) + (" …" if members.size > 12 else "")
        rows.append(f"<tr><td>{c}</td><td>{members.size}</td><td>{html.escape(shown)}</td></tr>")
    more = f"<p>{ids.size - limit} more clusters not shown.</p>" if ids.size > limit else ""
    return (
        f"<p>{ids.size} clusters, {int((cl >= 0).sum())} samples.</p>"
        "<table><tr><th>cluster</th><th>size</th><th>samples</th></tr>"
        + "".join(rows)
        + "</table>"
        + more
    )


def layer_sections(
    report: xr.Dataset, pics: np.ndarray | None, chosen: list[str], top: int, level: int = 2
) -> list[str]:
    """The HTML sections of the chosen layers of a report (scatter, familiar samples,
    near-duplicates); ``pics`` are checked images (``_check_images``) or None. ``level`` is the
    heading level of a layer's title (its sub-headings are one level below)."""
    samples = report["sample"].values
    labels = report["label"].values if "label" in report.coords else None
    body: list[str] = []
    for layer in chosen:
        xy = report["projection"].sel(layer=layer).transpose("sample", "component").values
        fam = report["familiarity"].sel(layer=layer).values
        cl = report["duplicate_cluster"].sel(layer=layer).values
        fills: dict[str, list[str]] = {}
        legends = []
        if labels is not None:
            fills["label"], legend = _categorical(labels)
            content = "".join(
                f'<span><i style="background:{c}"></i>{html.escape(str(v))}</span>'
                for v, c in legend.items()
            )
            legends.append(("label", content))
        fills["familiarity"], (lo, hi) = _continuous(fam)
        legends.append(
            (
                "familiarity",
                f"<span>viridis: dark = less familiar ({lo:.4g}), yellow = more ({hi:.4g})</span>",
            )
        )
        fills["cluster"] = ["#cccccc" if c < 0 else "#d62728" for c in cl]
        legends.append(
            (
                "cluster",
                '<span><i style="background:#d62728"></i>near-duplicate</span>'
                '<span><i style="background:#cccccc"></i>other</span>',
            )
        )
        tips = [
            f"sample {samples[i]}"
            + (f", label {labels[i]}" if labels is not None else "")
            + f", familiarity {fam[i]:.4g}"
            + (f", duplicate cluster {cl[i]}" if cl[i] >= 0 else "")
            for i in range(samples.size)
        ]
        options = "".join(f'<option value="{k}">{k}</option>' for k in fills)
        first = next(iter(fills))
        order = np.argsort(np.where(np.isfinite(fam), fam, -np.inf), kind="stable")
        k = min(int(top), order.size)
        body += [
            f'<section class="layer" id="layer-{html.escape(layer)}">',
            f"<h{level}>Layer {html.escape(layer)}</h{level}>",
            '<div class="row"><div>',
            f'<div><label>colour by <select class="colour-by" data-layer="{html.escape(layer)}">'
            f"{options}</select></label></div>",
            _scatter(layer, xy, fills, tips),
            "".join(_legend_html(layer, by, c, by == first) for by, c in legends),
            "</div><div>",
            f"<h{level + 1}>Most familiar ({k})</h{level + 1}>",
            _thumbs(order[::-1][:k], report, layer, pics),
            f"<h{level + 1}>Least familiar ({k})</h{level + 1}>",
            _thumbs(order[:k], report, layer, pics),
            f"<h{level + 1}>Near-duplicates</h{level + 1}>",
            _clusters_table(report, layer),
            "</div></div></section>",
        ]
    return body


def report_html(
    report: xr.Dataset,
    path: str | os.PathLike[str] | None = None,
    *,
    images: Any = None,
    layers: list[str] | None = None,
    top: int = 8,
    title: str | None = None,
) -> str:
    """Render a report as one self-contained static HTML page.

    Per layer: the 2-D projection as a scatter plot coloured by label, familiarity or
    duplicate cluster (a selector switches; hovering a point shows its sample, label,
    familiarity and cluster), the ``top`` most and least familiar samples (as images when
    ``images`` are given), and the near-duplicate clusters.

    Parameters
    ----------
    report : xr.Dataset
        The output of :func:`tmx.introspect.report`.
    path : str or path-like, optional
        Where to write the page (UTF-8). The page is returned either way.
    images : array-like, optional
        The inputs, one per sample of the report: ``(n, h, w)`` or ``(n, h, w, c)`` with
        ``c`` in 1, 3, 4, or a DataArray with a ``sample`` dim (selected by the report's sample
        coordinate). Each image is min-max scaled on its own.
    layers : list of str, optional
        Layers to show (default: all of the report's).
    top : int, default 8
        How many most / least familiar samples to show per layer.
    title : str, optional
        Page title (default: the report's ``title`` attribute).

    Returns
    -------
    str
        The HTML page.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from tmx import introspect
    >>> responses = xr.DataArray(
    ...     np.random.default_rng(0).normal(size=(12, 3)),
    ...     dims=("sample", "unit"),
    ...     coords={"layer": ("unit", ["h"] * 3), "label": ("sample", [0, 1] * 6)},
    ... )
    >>> rep = introspect.report(
    ...     responses, precursor_components=2, mixture_components=1, split_min=5
    ... )
    >>> page = introspect.report_html(rep)
    >>> page.startswith("<!DOCTYPE html>"), 'data-layer="h"' in page
    (True, True)
    """
    if not isinstance(report, xr.Dataset) or not {"projection", "familiarity"} <= set(
        report.data_vars
    ):
        raise ValueError("report must be the xr.Dataset returned by tmx.introspect.report")
    if isinstance(top, bool) or not isinstance(top, int | np.integer) or top < 0:
        raise ValueError(f"top must be an int >= 0; got {top!r}")
    pics = _check_images(images, report)
    all_layers = [str(v) for v in report["layer"].values]
    chosen = all_layers if layers is None else _validate.names(layers)
    unknown = [v for v in chosen if v not in all_layers]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; the report has {all_layers}")
    title = title or str(report.attrs.get("title", "tmx data set report"))

    meta = {k: v for k, v in report.attrs.items() if k != "title"}
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{report.sizes["sample"]} samples · layers: '
        f"{html.escape(', '.join(all_layers))}</p>",
        f'<details class="meta"><summary>How it was computed</summary><pre>'
        f"{html.escape(json.dumps(meta, indent=1, default=str))}</pre></details>",
        *layer_sections(report, pics, chosen, top),
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(body)
        + f"<script>{SCRIPT}</script></body></html>\n"
    )
    if path is not None:
        Path(path).write_text(page, encoding="utf-8")
    return page
