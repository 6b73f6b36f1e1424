"""How faithfully do explanations follow the transformation of their input?

For the demo CNN on the digits, explain each test digit under rotations and translations with
saliency, integrated gradients and Grad-CAM (`tmx.attribution.over_transforms`), map every
explanation back by the inverse transformation (`tmx.invert`) and measure how much it still
varies: the normalized variance of the inverted explanations (explanation same-equivariance,
0 = the explanation moves exactly with its input). No peer library measures this.

Writes `explanation-output/equivariance.png` (bars per method and transformation set) and
`explanation-output/attributions.png` (one digit, its rotations, the three methods).

Run: .venv/bin/python examples/explanation_equivariance.py [out-dir]   (about a minute on
2 cores the first time, when the model is trained; no network)
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
from matplotlib.figure import Figure

import tmx
from tmx import attribution as A
from tmx import transforms as T

t0 = time.perf_counter()
out = Path(sys.argv[1] if len(sys.argv) > 1 else "explanation-output")
out.mkdir(parents=True, exist_ok=True)

data = tmx.datasets.digits(16, normalize=False)
model = tmx.models.trained_small_cnn(size=16, epochs=5, seed=0)
x = data.as_dataarray("test").isel(sample=slice(0, 48))

sets = {
    "rotation": T.rotation(np.arange(8) * 45.0),
    "translation": T.translation([-2, -1, 0, 1, 2], 0),
}
methods = {
    "saliency": (A.saliency, {"absolute": False}),
    "integrated gradients": (A.integrated_gradients, {"steps": 16}),
    "Grad-CAM": (A.grad_cam, {"relu": False}),
}
results: dict[str, dict[str, float]] = {}
for set_name, tset in sets.items():
    for name, (method, kwargs) in methods.items():
        cube = A.over_transforms(method, model, x, tset, **kwargs)
        nvse = tmx.normalized_variance(tmx.invert(cube), zero_div="nan")
        nv = tmx.normalized_variance(cube, zero_div="nan")
        layer = tmx.by_layer(nvse)
        results.setdefault(name, {})[set_name] = float(layer.values[0])
        print(
            f"{set_name:12s} {name:22s} NVSE {float(layer.values[0]):.3f}   "
            f"(NV without inverting {float(tmx.by_layer(nv).values[0]):.3f})"
        )

fig = Figure(figsize=(6, 3.2), layout="constrained")
ax = fig.subplots()
width = 0.8 / len(sets)
for k, set_name in enumerate(sets):
    values = [results[m][set_name] for m in methods]
    ax.bar(np.arange(len(methods)) + k * width, values, width, label=set_name)
ax.set_xticks(np.arange(len(methods)) + width * (len(sets) - 1) / 2, list(methods))
ax.set_ylabel("NVSE of the explanation\n(0 = follows its input)")
ax.legend()
fig.savefig(out / "equivariance.png", dpi=120)

digit = x.isel(sample=[0])
rot = sets["rotation"]
rotated = np.concatenate([T.apply(rot, digit.values, j) for j in range(0, 8, 2)])
grid = {
    "saliency": A.saliency(model, rotated),
    "integrated gradients": A.integrated_gradients(model, rotated, steps=16),
    "Grad-CAM": A.upsample(A.grad_cam(model, rotated), rotated.shape[1:3]),
}
tmx.plot.attribution(grid, rotated, normalization="unsigned_max").savefig(
    out / "attributions.png", dpi=120
)
print(f"written: {out / 'equivariance.png'}, {out / 'attributions.png'}")
print(f"done in {time.perf_counter() - t0:.0f} s")
