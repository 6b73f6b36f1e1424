"""Introspectors over responses (a cube or any (sample, unit) DataArray), streamed by chunks.

- ``pfa`` / ``pfa_recipe``: principal filter analysis (how many units a layer needs);
- ``iua``: inactive unit analysis (dead and rarely active units);
- ``familiarity``: Gaussian-mixture log-likelihoods (unfamiliar samples score low);
- ``reduce``: projections (PCA, incremental PCA, t-SNE, UMAP, PaCMAP);
- ``duplicates``: near-duplicate samples;
- ``report`` / ``save_report`` / ``report_html``: a per-sample data set report and its page.
"""

from .._schema import as_responses
from .duplicates import duplicate_groups, duplicates
from .familiarity import familiarity
from .iua import iua
from .pfa import pfa, pfa_recipe
from .reduce import reduce
from .report import open_report, report, report_table, save_report
from .report_html import report_html

__all__ = [
    "as_responses",
    "duplicate_groups",
    "duplicates",
    "familiarity",
    "iua",
    "open_report",
    "pfa",
    "pfa_recipe",
    "reduce",
    "report",
    "report_html",
    "report_table",
    "save_report",
]
