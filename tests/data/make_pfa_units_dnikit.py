"""Regenerate ``pfa_units_dnikit.json``: DNIKit 2.0.0's unit selection on 6 random layers.

Run with the DNIKit venv of the benchmarks (``python -m benchmarks.introspect --setup-dnikit``):

    benchmarks/.venv-dnikit/bin/python tests/data/make_pfa_units_dnikit.py

Each layer: 12 channels, 300 samples of a rank-5 signal plus noise; the covariance (ddof=1) and
the removal order of each of DNIKit's four strategies, asked to keep 1 channel.
"""

import json
from pathlib import Path

import numpy as np
from dnikit.introspectors._pfa._pfa_units import (
    _select_units_abs_given_corr,
    _select_units_l1_given_corr,
)

STRATEGIES = {
    "l1max": (_select_units_l1_given_corr, np.nanmax),
    "l1min": (_select_units_l1_given_corr, np.nanmin),
    "absmax": (_select_units_abs_given_corr, np.nanmax),
    "absmin": (_select_units_abs_given_corr, np.nanmin),
}

out = []
for seed in range(6):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 12)) + 0.5 * rng.normal(size=(300, 12))
    cov = np.cov(x, rowvar=False)
    sd = np.sqrt(np.diag(cov))
    orders = {}
    for name, (select, direction) in STRATEGIES.items():
        corr = np.abs(cov / np.outer(sd, sd))
        np.fill_diagonal(corr, np.nan)
        orders[name] = [int(v) for v in select(corr, np.array([], dtype=int), 1, direction)]
    out.append({"seed": seed, "covariance": cov.tolist(), "removal_order": orders})
path = Path(__file__).with_name("pfa_units_dnikit.json")
path.write_text(json.dumps(out, indent=1) + "\n")
