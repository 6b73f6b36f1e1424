"""Disentangle the demo CNN's penultimate layer into "digit" and "rotation" factors.

Pairs come from the rotation cube of the layer ``dense`` (32 units): the same digit under two
rotations shares the digit's identity, two digits under the same rotation share the rotation.
The script estimates how many of the 32 dimensions each factor deserves, fits an invertible
flow (`tmx.flows.fit`), measures the normalized variance of each factor block under the
rotations (the rotation block should vary, the digit block should barely), scores the blocks
against the known label and angle (held-out linear R²), and swaps the rotation block of one
digit for another's: decoded back to the layer and run through the model's head, the digit is
kept while the rotation changes.

Writes `flows-output/swap.png` (inputs, and class probabilities before and after the swap),
`flows-output/history.png` (training and validation loss) and prints the tables.

Run: .venv/bin/python examples/flows_rotation.py [out-dir]   (about two minutes on 2 cores
the first time, when the model is trained; no network)
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
import xarray as xr
from matplotlib.figure import Figure

import tmx
from tmx import flows
from tmx import transforms as T

t0 = time.perf_counter()
out = Path(sys.argv[1] if len(sys.argv) > 1 else "flows-output")
out.mkdir(parents=True, exist_ok=True)

data = tmx.datasets.digits(16, normalize=False)
model = tmx.models.trained_small_cnn(size=16, epochs=5, seed=0)
x = data.as_dataarray("test").isel(sample=slice(0, 240))
angles = np.linspace(-45.0, 45.0, 13)  # beyond ±90°, a 6 becomes a 9
rotations = T.rotation(angles)
cube = tmx.activations(model, x, rotations, layers=["dense"]).load()
print(f"cube {dict(cube.sizes)} in {time.perf_counter() - t0:.0f}s")

# -- pairs, factor sizes, training ----------------------------------------------------------
pr = flows.pairs(cube, by=("sample", "transformation"), n=12_000, seed=0)
dims = flows.factor_dimensions(pr)
sizes = dict(zip(dims["factor"].values.tolist(), dims.values.tolist(), strict=True))
print("estimated dimensions:", sizes)
print("scores:", np.round(dims["score"].values, 3).tolist())
flow = flows.flow(32, blocks=4, hidden=(64, 64), coupling="additive", seed=0)
flow, history = flows.fit(pr, dimensions=dims, flow=flow, epochs=25, seed=0)
print(
    f"loss {history['loss'].values[0]:.2f} -> {history['loss'].values[-1]:.2f}, "
    f"val {history['val_loss'].values[-1]:.2f}, invert error "
    f"{history['invert_error'].values.max():.1e}"
)

# -- the latent cube: NV of each factor block under the rotations ---------------------------
z = flows.transform(flow, cube)
latent_as_units = z.rename(latent="unit").assign_coords(
    layer=("unit", z["factor"].values),
    channel=("unit", np.arange(z.sizes["latent"])),
    y=("unit", np.full(z.sizes["latent"], -1)),
    x=("unit", np.full(z.sizes["latent"], -1)),
)
nv_latent = tmx.by_layer(tmx.normalized_variance(latent_as_units))
nv_units = tmx.by_layer(tmx.normalized_variance(cube))
print("normalized variance under rotations (0 = invariant):")
for factor in nv_latent["layer"].values:
    print(f"  block {factor:<15} {float(nv_latent.sel(layer=factor)):.3f}")
print(f"  the layer's units   {float(nv_units.sel(layer='dense')):.3f}")

# -- held-out linear R² of each block against the known label and angle ---------------------
targets = xr.Dataset(
    {
        "label": cube["label"].astype(str),  # one-hot: a class is not a number
        "angle": (
            ("transformation", "component"),
            np.stack([np.cos(np.radians(angles)), np.sin(np.radians(angles))], axis=1),
        ),
    }
)
r2 = flows.disentanglement(z, targets)
print("held-out R² (factor block x target):")
print(r2.round(3).to_pandas().to_string())

# -- swap the rotation of digit i (−45°) for that of digit j (+45°) --------------------------
i, j, first, last = 0, 1, 0, len(angles) - 1
a = cube.isel(sample=[i], transformation=[first]).squeeze("transformation", drop=True)
b = cube.isel(sample=[j], transformation=[last]).squeeze("transformation", drop=True)
walk = flows.interpolate(flow, a, b, factor="transformation", steps=2, model=model)
target = cube.isel(sample=[i], transformation=[last]).squeeze("transformation", drop=True)
swapped = walk["activation"].isel(step=-1).values
gap = np.linalg.norm(swapped - target.values) / np.linalg.norm(a.values - target.values)
print(f"swap: distance to digit {i}'s own +45° response / distance it had to travel = {gap:.2f}")


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


probs = softmax(walk["prediction"].values[:, 0])
images = {
    f"digit {int(x['label'][i])} at −45° (a)": T.apply(rotations, x.values[[i]], first)[0],
    f"digit {int(x['label'][j])} at +45° (b)": T.apply(rotations, x.values[[j]], last)[0],
    f"digit {int(x['label'][i])} at +45° (truth)": T.apply(rotations, x.values[[i]], last)[0],
}
fig = Figure(figsize=(11, 3.2), layout="constrained")
axes = fig.subplots(1, 4)
for ax, (title, img) in zip(axes[:3], images.items(), strict=True):
    ax.imshow(np.asarray(img)[..., 0], cmap="gray")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
truth = softmax(np.asarray(model(T.apply(rotations, x.values[[i]], last)))[0])
width = 0.28
classes = np.arange(probs.shape[-1])
axes[3].bar(classes - width, probs[0], width, label="a")
axes[3].bar(classes, probs[1], width, label="a with b's rotation block")
axes[3].bar(classes + width, truth, width, label="a rotated to +45° (truth)")
axes[3].set_xticks(classes)
axes[3].set_xlabel("class")
axes[3].set_ylabel("probability (model head)")
axes[3].legend(fontsize=8)
fig.savefig(out / "swap.png", dpi=120)

fig = Figure(figsize=(5, 3.2), layout="constrained")
ax = fig.subplots()
ax.plot(history["epoch"], history["loss"], label="training loss")
ax.plot(history["epoch"], history["val_loss"], label="validation loss")
ax.set_xlabel("epoch")
ax.set_ylabel("factor loss (gyoza)")
ax.legend()
fig.savefig(out / "history.png", dpi=120)
print(f"wrote {out}/swap.png and {out}/history.png in {time.perf_counter() - t0:.0f}s")
