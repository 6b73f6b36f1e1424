"""Quickstart: how invariant to rotations is each layer of a small CNN?

Trains tmx's small CNN (`tmx.models.small_cnn`) for a few epochs on scikit-learn's digits
(8 × 8, resized to 16 × 16 by `tmx.datasets.digits`), records the activation cube under a
rotation set, and prints

1. the cube (dims, coordinates, laziness),
2. the normalized variance NV = TV / SV per layer (0 = invariant),
3. the same-equivariance NVSE of the convolutional layers under quarter turns (`rot90`),
   computed as `tmx.normalized_variance(tmx.invert(cube))`.

Run: .venv/bin/python examples/quickstart.py   (about 20 s on 2 cores, no network)
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quieter TensorFlow start-up

import time

import dask
import keras
import numpy as np

import tmx
from tmx import transforms as T

t0 = time.perf_counter()
keras.utils.set_random_seed(0)

# -- data and model ---------------------------------------------------------------------------
# scikit-learn's digits (bundled, offline), resized to 16 × 16, NHWC float32 in [0, 1]
data = tmx.datasets.digits(16, normalize=False)
# conv1 → pool1 → conv2 → pool2 → flatten → dense → logits; 'same' convolutions keep the maps
# square, so quarter turns apply to every feature map
model = tmx.models.small_cnn(data.x_train.shape[1:], seed=0)
model.compile(
    optimizer=keras.optimizers.Adam(3e-3),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
model.fit(data.x_train, data.y_train, epochs=5, batch_size=32, verbose=0)
_, accuracy = model.evaluate(data.x_test, data.y_test, verbose=0)
print(f"trained {model.name} for 5 epochs: test accuracy {accuracy:.3f}")

# -- the cube ----------------------------------------------------------------------------------
x_test = data.as_dataarray("test").isel(sample=slice(0, 200))  # 200 test digits, with labels
rotations = T.rotation(np.arange(0, 360, 45))  # T = 8: 0°, 45°, …, 315°
cube = tmx.activations(model, x_test, rotations, batch_size=512)
print("\nThe cube (lazy: no forward pass has run yet)")
print(f"  dims {dict(cube.sizes)}, dtype {cube.dtype}, dask chunks {cube.data.chunksize}")
print(f"  transformations: {cube.transform.values[:4].tolist()} … (angle: {cube.angle.values})")
print(f"  layers: {list(dict.fromkeys(cube.layer.values.tolist()))}")
print(f"  labels on `sample`: {cube.label.values[:10].tolist()} …")
print(f"  attrs: {sorted(cube.attrs)}")

# -- normalized variance per unit, then per layer ---------------------------------------------
parts = tmx.normalized_variance(cube, parts=True).compute()  # tv, sv, nv per unit, one pass
nv = parts["nv"]
per_layer = tmx.by_layer(nv)  # mean over finite units; `excluded` counts the others
dead = ((parts["tv"] == 0) & (parts["sv"] == 0)).groupby("layer").sum()  # never-active units
print("\nNormalized variance under rotations (0 = invariant, 1 = varies as much as samples)")
print(
    f"  options recorded in attrs: dispersion={parts.attrs['dispersion']!r}, "
    f"zero_div={parts.attrs['zero_div']!r}, pool={parts.attrs['pool']!r}"
)
print(f"  {'layer':8s} {'units':>6s} {'NV':>8s} {'excluded':>9s} {'constant':>9s}")
for layer in per_layer.layer.values:
    row = per_layer.sel(layer=layer)
    n_dead = int(dead.sel(layer=layer))
    print(f"  {layer:8s} {int(row.units):6d} {float(row):8.3f} {int(row.excluded):9d} {n_dead:9d}")
print("  constant units have TV = SV = 0: zero_div='tmeasures' scores them 0/0 → 1;")
nv_nan = tmx.normalized_variance(cube, zero_div="nan").compute()
nan_layers = tmx.by_layer(nv_nan)
print("  with zero_div='nan' they are NaN, and by_layer leaves them out (counted in `excluded`):")
print(f"  NV {nan_layers.values.round(3)}, excluded {nan_layers.excluded.values}")

# per channel of conv2: mean over the finite units of each channel's (y, x) map
per_channel = tmx.by_channel(nv_nan).sel(layer="conv2").dropna("channel")
lo, hi = per_channel.idxmin("channel"), per_channel.idxmax("channel")
print(
    f"  conv2 per channel: most invariant channel {int(lo)} (NV {float(per_channel.min()):.3f}), "
    f"least invariant channel {int(hi)} (NV {float(per_channel.max()):.3f})"
)

# -- same-equivariance under quarter turns ----------------------------------------------------
quarter = T.rot90([0, 1, 2, 3])  # exact on square maps
cube90 = tmx.activations(model, x_test, quarter, batch_size=512)
back = tmx.invert(cube90)  # feature maps turned back by g_j⁻¹; non-spatial layers dropped
print(f"\nSame-equivariance under {quarter.description}")
print(f"  dropped (no spatial axes): {back.attrs['equivariance_dropped_layers']}")
invariance = tmx.by_layer(tmx.normalized_variance(cube90))
equivariance = tmx.by_layer(tmx.normalized_variance(back))
invariance, equivariance = dask.compute(invariance, equivariance)  # one pass over each cube
print(f"  {'layer':8s} {'NV':>8s} {'NVSE':>8s}")
for layer in equivariance.layer.values:
    nv_l, nvse_l = float(invariance.sel(layer=layer)), float(equivariance.sel(layer=layer))
    print(f"  {layer:8s} {nv_l:8.3f} {nvse_l:8.3f}")
print("  (NVSE < NV: the layer's maps turn with the input rather than staying put;")
print("   NVSE = 0 would be exact equivariance)")
print(f"\ndone in {time.perf_counter() - t0:.1f} s")
