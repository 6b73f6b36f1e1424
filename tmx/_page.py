"""The results page of ``tmx run`` / ``tmx report``: one self-contained static HTML file.

Invariance per layer (with the intervals explained), the most and least invariant units of
each layer, the accuracy per transformation, the data set report (``tmx.introspect``'s
sections) and the provenance. Figures are PNG data URIs, nothing is fetched; the only script
is the data set report's (recolouring its scatter plots) plus a check that every image decoded
(``data-images-ok`` on ``<body>``, for headless tests).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .introspect.report_html import SCRIPT, layer_sections
from .introspect.report_html import STYLE as _REPORT_STYLE

__all__ = ["render"]

_STYLE = (
    _REPORT_STYLE
    + """
nav a{margin-right:12px}
table.results td:first-child,table.results th:first-child{text-align:left}
.note{background:#f6f6f6;border-left:3px solid #999;padding:6px 10px;max-width:60em}
figure{margin:8px 0}figure img{max-width:100%;border:1px solid #eee}
details.units{margin:6px 0}
.scroll{overflow-x:auto;max-width:100%}
"""
)

_CHECK = """
window.addEventListener('load', function () {
  var images = document.images, ok = true;
  for (var i = 0; i < images.length; i++) {
    if (!images[i].complete || images[i].naturalWidth === 0) { ok = false; }
  }
  document.body.setAttribute('data-images', String(images.length));
  document.body.setAttribute('data-images-ok', ok ? 'yes' : 'no');
});
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return "—" if not np.isfinite(value) else f"{float(value):.4g}"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    return html.escape(str(value))


def _table(frame: pd.DataFrame, cls: str = "results") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = [
        "<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    ]
    return (
        f'<div class="scroll"><table class="{cls}"><tr>{head}</tr>'
        + "".join(rows)
        + "</table></div>"
    )


def _figure(path: Path | None, caption: str) -> str:
    if path is None or not Path(path).exists():
        return ""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)} ({html.escape(Path(path).name)})</figcaption>"
        "</figure>"
    )


_INTERVALS = (
    "<p class='note'><b>How to read the intervals.</b> A layer's NV is Σ TV / Σ SV over its "
    "units (the seed package's layer value). The estimate shown is its <b>jackknife "
    "bias-corrected</b> value θ<sub>J</sub> (delete-m jackknife over groups of samples): the raw "
    "ratio moves with the number of samples N when units are sparse, θ<sub>J</sub> does not. "
    "The 95 % interval is θ<sub>J</sub> ± t<sub>G−1</sub> SE<sub>J</sub>, centred on "
    "θ<sub>J</sub>, so it always contains it; the uncorrected ratio θ̂ is shown beside it and "
    "can lie outside the interval when the correction is larger than the interval's half-width "
    "(few samples, many nearly silent units). The same holds for the plain mean of the unit "
    "NVs. Units that never vary over samples (SV = 0, dead units) have no NV and are left out; "
    "their count is given. ANOVA: the fraction of units whose mean activation changes with the "
    "transformation (one-way F test per unit, Bonferroni-corrected at α = {alpha}).</p>"
)


def _units_section(units: xr.Dataset, layers: Sequence[str], top: int) -> str:
    parts = [
        f"<p>The {top} most and least invariant units of each layer (lowest and highest NV, "
        "uncorrected per unit); every unit is in <code>units.csv</code>.</p>"
    ]
    columns = {
        "channel": "channel",
        "y": "y",
        "x": "x",
        "tv": "TV",
        "sv": "SV",
        "nv": "NV",
        "anova_f": "ANOVA F",
        "anova_p_adjusted": "p (Bonferroni)",
        "anova_significant": "significant",
    }
    for layer in layers:
        sel = units.isel(unit=np.flatnonzero(np.asarray(units["layer"].values) == layer))
        frame = pd.DataFrame(
            {label: np.asarray(sel[name].values) for name, label in columns.items()}
        )
        finite = frame[np.isfinite(frame["NV"])]
        order = finite.sort_values("NV", kind="stable")
        dead = len(frame) - len(finite)
        parts.append(
            f'<details class="units" id="units-{html.escape(layer)}"><summary>{html.escape(layer)}'
            f": {len(frame)} units, {dead} without NV (SV = 0)</summary>"
            f"<h4>Most invariant</h4>{_table(order.head(top))}"
            f"<h4>Least invariant</h4>{_table(order.tail(top).iloc[::-1])}</details>"
        )
    return "".join(parts)


def render(
    *,
    title: str,
    meta: str,
    layers: pd.DataFrame,
    units: xr.Dataset,
    unit_layers: Sequence[str],
    accuracy: pd.DataFrame | None,
    figures: dict[str, tuple[Path | None, str]],
    report: xr.Dataset | None,
    images: Any,
    report_layers: Sequence[str],
    provenance: dict[str, Any],
    sections: Sequence[tuple[str, str]] = (),
    alpha: float = 0.01,
    top: int = 8,
) -> str:
    """The page's HTML. ``figures``: key → (PNG path or None, caption); ``sections``: extra
    (title, HTML) sections placed after the accuracy."""
    nav = [("invariance", "Invariance per layer"), ("units", "Units")]
    nav += [("accuracy", "Accuracy per transformation")]
    nav += [(f"extra-{i}", t) for i, (t, _) in enumerate(sections)]
    nav += [("dataset", "Data set report"), ("provenance", "Provenance")]
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{meta}</p>',
        "<nav>" + "".join(f'<a href="#{k}">{html.escape(t)}</a>' for k, t in nav) + "</nav>",
        '<section id="invariance"><h2>Invariance per layer</h2>',
        _INTERVALS.replace("{alpha}", f"{alpha:g}"),
        _table(layers),
        '<div class="row">',
        _figure(*figures.get("nv_per_layer", (None, ""))),
        _figure(*figures.get("nv_units", (None, ""))),
        "</div>",
        _figure(*figures.get("transforms", (None, ""))),
        "</section>",
        '<section id="units"><h2>Units</h2>',
        _units_section(units, unit_layers, top),
        "</section>",
        '<section id="accuracy"><h2>Accuracy per transformation</h2>',
    ]
    if accuracy is None:
        body.append("<p>No labels were given (<code>tmx run … --labels LABELS.npy</code>).</p>")
    else:
        body += [
            "<p>The fraction of samples whose largest output is their label, and the mean "
            "cross-entropy, under each transformation.</p>",
            _table(accuracy),
            _figure(*figures.get("accuracy", (None, ""))),
        ]
    body.append("</section>")
    for i, (sec_title, content) in enumerate(sections):
        body.append(f'<section id="extra-{i}"><h2>{html.escape(sec_title)}</h2>{content}</section>')
    body.append('<section id="dataset"><h2>Data set report</h2>')
    if report is None:
        body.append("<p>Not computed (<code>--report-layers none</code>).</p>")
    else:
        transform = str(report.attrs.get("transform", ""))
        body.append(
            f"<p>Each sample seen through the layers {html.escape(', '.join(report_layers))} "
            f"under {html.escape(transform)}: a 2-D projection, familiarity (log-likelihood "
            "under a Gaussian mixture of all samples; low = unusual) and near-duplicates "
            "(<code>tmx.introspect.report</code>). Also in <code>report.zarr</code>.</p>"
        )
        body += layer_sections(report, images, list(report_layers), top, level=3)
    body.append("</section>")
    body += [
        '<section id="provenance"><h2>Provenance</h2>',
        "<pre>" + html.escape(json.dumps(provenance, indent=1, default=str)) + "</pre>",
        "</section>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        + "\n".join(body)
        + f"<script>{SCRIPT}{_CHECK}</script></body></html>\n"
    )
