"""Compare two models layer by layer: does training make a CNN more rotation-invariant?

The same small CNN twice — untrained (`tmx.models.small_cnn`) and trained on the digits
(`tmx.models.trained_small_cnn`, which starts from exactly those weights) — measured on the
same cube setup: 200 test digits × 8 rotations. For each layer it prints the normalized
variance (the layer's Σ TV / Σ SV, jackknife bias-corrected) with its 95 % jackknife interval
over digits, side by side, plus each model's
accuracy under the rotations, and draws both curves with `tmx.plot.layer_curves` into a PNG.

Run: .venv/bin/python examples/compare_models.py   (about 30 s on 2 cores, no network)
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quieter TensorFlow start-up

import shutil
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no window

import numpy as np

import tmx
import tmx.plot
from tmx import transforms as T

t0 = time.perf_counter()
out_dir = Path(tempfile.mkdtemp(prefix="tmx-compare-"))
cache = out_dir / "model-cache"

# -- data: standardised digits, as the trained model expects --------------------------------------
data = tmx.datasets.digits(16)  # (x - mean) / std with the training split's statistics
x = data.as_dataarray("test").isel(sample=slice(0, 200))  # carries a `label` coordinate
background = (0.0 - data.mean) / data.std  # what a blank pixel is after standardisation
rotations = T.rotation(np.arange(0, 360, 45), fill_value=background)  # T = 8, fill = blank

# -- two models with the same architecture and the same initial weights ----------------------------
models = {
    "untrained": tmx.models.small_cnn((16, 16, 1), seed=0),
    "trained": tmx.models.trained_small_cnn(seed=0, size=16, cache_dir=cache),  # ~5 s to train
}

results, accuracy = {}, {}
for name, model in models.items():
    cube = tmx.activations(model, x, rotations, batch_size=600)
    # the layer value that does not move with N: Σ TV / Σ SV, jackknife bias-corrected, with its
    # 95 % jackknife interval over samples (tmx.bootstrap's default for the variance family: one
    # pass over the cube)
    results[name] = tmx.bootstrap(tmx.normalized_variance, cube, reduce="ratio_of_means")
    scores = tmx.evaluate(model, x, x.label, rotations, batch_size=600)
    accuracy[name] = scores["accuracy"]

print(f"{len(x.sample)} test digits × {len(rotations)} rotations ({rotations.description})")
print("\naccuracy under each rotation (degrees):")
angles = accuracy["trained"].angle.values.astype(int)
print("  " + " ".join(f"{a:>5d}" for a in angles))
for name, acc in accuracy.items():
    print("  " + " ".join(f"{v:5.2f}" for v in acc.values) + f"   {name}")

print("\nnormalized variance per layer (Σ TV / Σ SV, jackknifed; 95 % jackknife interval):")
print(f"  {'layer':8s} {'untrained':>24s} {'trained':>24s}")
for layer in results["trained"].layer.values:
    cells = []
    for name in models:
        r = results[name].sel(layer=layer)
        cells.append(f"{float(r.estimate):.3f} [{float(r.low):.3f}, {float(r.high):.3f}]")
    print(f"  {layer:8s} {cells[0]:>24s} {cells[1]:>24s}")

fig = tmx.plot.layer_curves(
    results, title="Normalized variance under rotations (digits, 16 px)", ylabel="NV"
)
png = out_dir / "compare_models.png"
fig.savefig(png, dpi=100, bbox_inches="tight")
shutil.rmtree(cache, ignore_errors=True)  # keep only the figure
print(f"\nfigure: {png}")
print(f"done in {time.perf_counter() - t0:.1f} s")
