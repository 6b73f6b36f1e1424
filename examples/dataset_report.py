"""Dataset report: which digits does a trained CNN find unfamiliar, and which are duplicates?

Trains (or loads from tmx's cache) the demo CNN on scikit-learn's digits, records the test
digits' responses, and runs the introspectors:

1. PFA: how many channels each layer needs (KL recipe), over every rotated digit;
2. IUA: the fraction of inactive units per layer;
3. the data set report of the test digits on ``dense`` and ``logits``: near-duplicates, a 2-D
   projection, familiarity overall and per digit; written as a static page ``report.html``
   (open it in a browser: hover the points, switch the colouring) and a Zarr store.

Run: .venv/bin/python examples/dataset_report.py [out-dir]   (about 40 s on 2 cores the first
time, when the model is trained; no network)
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quieter TensorFlow start-up

import shutil
import sys
import time
from pathlib import Path

import numpy as np

import tmx
from tmx import introspect as ti
from tmx import transforms as T

t0 = time.perf_counter()
out = Path(sys.argv[1] if len(sys.argv) > 1 else "report-output")
out.mkdir(parents=True, exist_ok=True)

data = tmx.datasets.digits(16, normalize=False)
model = tmx.models.trained_small_cnn(size=16, epochs=5, seed=0)
x = data.as_dataarray("test")  # (sample, y, x, channel) with a label coordinate

# -- PFA and IUA over 8 rotations of every test digit -----------------------------------------
cube = tmx.activations(model, x, T.rotation(np.arange(8) * 45.0)).load()
recipe = ti.pfa_recipe(ti.pfa(cube, transformation="stack"), "kl")
inactive = ti.iua(cube, transformation="stack")
print(f"{len(x.sample)} test digits × 8 rotations")
print(f"{'layer':8s} {'channels':>8s} {'PFA-KL keeps':>13s} {'inactive':>9s}")
for layer in recipe.layer.values:
    frac = float(inactive.mean_inactive.sel(layer=layer) / inactive.n_units.sel(layer=layer))
    print(
        f"{layer:8s} {int(recipe.original.sel(layer=layer)):8d} "
        f"{int(recipe.recommended.sel(layer=layer)):13d} {frac:9.1%}"
    )

# -- the data set report of the unrotated digits ----------------------------------------------
report = ti.report(cube, transformation=0, layers=["dense", "logits"], split_min=30)
page = out / "report.html"
ti.report_html(report, page, images=x, title="Test digits through the demo CNN")
store = out / "report.zarr"
shutil.rmtree(store, ignore_errors=True)
ti.save_report(report, store)

print()
for layer in report.layer.values:
    fam = report.familiarity.sel(layer=layer)
    order = np.argsort(fam.values)
    worst = report.sample.values[order[:5]]
    labels = report.label.values[order[:5]]
    clusters = int(report.duplicate_cluster.sel(layer=layer).max()) + 1
    print(
        f"{layer}: least familiar digits {worst.tolist()} (labels {labels.tolist()}); "
        f"{clusters} near-duplicate clusters"
    )
own = report.familiarity_own.sel(layer="logits")
print(f"familiarity under the digit's own model, median {float(own.median()):.2f}")
print(f"written: {page} ({page.stat().st_size / 1e6:.1f} MB), {store}")
print(f"done in {time.perf_counter() - t0:.0f} s")
