"""Out of core: save a cube to Zarr, survive an interrupted save, measure from the store.

1. Build a lazy cube (600 digits × 8 rotations × every unit of a small CNN), chunked by 100
   samples, and save it with `tmx.save` chunk by chunk.
2. Simulate a crash part-way through the save (a dask block that raises): the store is left
   incomplete, and `tmx.open` refuses it with a clear error.
3. Finish it with `tmx.save(cube, store, resume=True)`: only the missing chunks are computed.
4. Open the store lazily and compute measures chunk by chunk from it — memory is bounded by a
   few blocks, not by the cube — and check them against the in-memory result.

Run: .venv/bin/python examples/out_of_core.py   (about 15 s on 2 cores, no network)
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quieter TensorFlow start-up

import shutil
import tempfile
import threading
import time
from pathlib import Path

import dask
import keras
import numpy as np
import xarray as xr
from scipy.ndimage import zoom
from sklearn.datasets import load_digits

import tmx
from tmx import transforms as T

t0 = time.perf_counter()
keras.utils.set_random_seed(0)

digits = load_digits()
x = zoom(digits.images[:600] / 16.0, (1, 2, 2), order=1)[..., None].astype("float32")
model = keras.Sequential(
    [
        keras.Input((16, 16, 1)),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(2, name="pool1"),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(10, name="logits"),
    ],
    name="cnn",
)

cube = tmx.activations(
    model,
    x,
    T.rotation(np.arange(0, 360, 45)),
    labels=digits.target[:600],
    chunks={"sample": 100},  # 6 sample blocks; each block is one task with one forward pass
)
block_mib = np.prod(cube.data.chunksize) * cube.dtype.itemsize / 2**20
print(f"cube {dict(cube.sizes)}: {cube.nbytes / 2**20:.1f} MiB in {cube.data.npartitions} blocks")
print(f"  of {block_mib:.1f} MiB each (chunks {cube.data.chunksize})")

tmp = Path(tempfile.mkdtemp(prefix="tmx-out-of-core-"))
store = tmp / "cube.zarr"
try:
    # -- 2. an interrupted save --------------------------------------------------------------
    # The same cube (same coords, attrs and chunks, hence the same store fingerprint), but the
    # computation of sample block 0 fails, as a worker killed or out of memory would.
    # (The synchronous scheduler makes the order, and so what was written, reproducible.)
    def crash_on_first_block(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 0:
            raise RuntimeError("simulated crash while computing sample block 0")
        return block

    crashing = cube.copy(data=cube.data.map_blocks(crash_on_first_block, dtype=cube.dtype))
    try:
        with dask.config.set(scheduler="synchronous"):
            tmx.save(crashing, store)
    except RuntimeError as err:
        print(f"\nsave interrupted: {err}")
        print(f"  note added by tmx.save: {err.__notes__[-1][:90]}…")
    try:
        tmx.open(store)
    except ValueError as err:
        print(f"open refuses the store: {err}")

    # -- 3. resume: only the chunks not yet written are computed -------------------------------
    # Here the process survived, so we resume with the same cube. After a real crash, rebuild
    # the cube exactly as before (same model weights, inputs, set, layers, batch size, chunks);
    # its `created` attr then differs from the store's: see docs/guide/out_of_core.md.
    computed: list[int] = []
    lock = threading.Lock()

    def count_block(block, block_info=None):
        with lock:
            computed.append(block_info[0]["chunk-location"][0])
        return block

    counted = cube.copy(data=cube.data.map_blocks(count_block, dtype=cube.dtype))
    tmx.save(counted, store, resume=True)
    print(
        f"\nresume=True computed {len(computed)} of {cube.data.npartitions} blocks: "
        f"sample blocks {sorted(computed)}"
    )
    size = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
    print(f"store {store.name}: {size / 2**20:.1f} MiB on disk (zstd)")

    # -- 4. open lazily and measure chunk by chunk ----------------------------------------------
    opened = tmx.open(store)  # validated, lazy: one dask chunk per Zarr chunk
    print(
        f"\nopened: lazy, dask chunks {opened.data.chunksize}; "
        f"attrs keep the provenance (model {opened.attrs['model_name']!r}, "
        f"{opened.attrs['transforms_description']})"
    )

    # Every measure reads the store block by block. Peak memory is about
    # num_workers × (one block + its float64 partial moments); cap it with the number of
    # threads (or, on a cluster, with the workers' memory_limit). Measures that regroup the
    # cube (the distance family needs every sample of a transformation in one block) keep
    # their blocks within dask's "array.chunk-size".
    with dask.config.set({"num_workers": 2, "array.chunk-size": "16MiB"}):
        t1 = time.perf_counter()
        parts = tmx.normalized_variance(opened, parts=True)  # TV, SV, NV in one pass
        nd = tmx.normalized_distance(opened)
        parts, nd = dask.compute(parts, nd)
        print(f"NV and ND from the store in {time.perf_counter() - t1:.1f} s")

    table = xr.Dataset({"NV": tmx.by_layer(parts["nv"]), "ND": tmx.by_layer(nd)}).reset_coords(
        drop=True
    )
    print(table.to_dataframe().round(3).to_string())

    reference = tmx.normalized_variance(cube.compute())  # in memory, for comparison
    np.testing.assert_allclose(parts["nv"].values, reference.values, rtol=1e-6)
    print("store result == in-memory result (rtol 1e-6)")
    xr.testing.assert_identical(opened.isel(sample=slice(0, 10)), cube.isel(sample=slice(0, 10)))
    print("opened cube identical to the original (values, coords, attrs)")
finally:
    shutil.rmtree(tmp, ignore_errors=True)
print(f"\ndone in {time.perf_counter() - t0:.1f} s")
