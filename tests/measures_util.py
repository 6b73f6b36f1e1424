"""Shared test helpers for the measures: cubes built by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

# Cube A of the design note measures.md (a copy of shared/design/reference/cube_a.npz)
REFERENCE = Path(__file__).resolve().parent / "data"


def make_cube(layers: dict[str, np.ndarray], **sample_coords) -> xr.DataArray:
    """A cube from per-layer arrays (N, T, C) or (N, T, H, W, C), units in (y, x, c) order."""
    data, names, chans, ys, xs = [], [], [], [], []
    for name, arr in layers.items():
        n, t = arr.shape[:2]
        if arr.ndim == 3:
            c = arr.shape[2]
            y = x = np.full(c, -1)
            ch = np.arange(c)
        else:
            h, w, c = arr.shape[2:]
            y, x, ch = (
                g.reshape(-1)
                for g in np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
            )
        data.append(arr.reshape(n, t, -1))
        names += [name] * len(ch)
        chans.append(ch)
        ys.append(y)
        xs.append(x)
    values = np.concatenate(data, axis=2)
    coords = {
        "sample": np.arange(values.shape[0]),
        "transformation": np.arange(values.shape[1]),
        "unit": np.arange(values.shape[2]),
        "layer": ("unit", np.array(names)),
        "channel": ("unit", np.concatenate(chans).astype(np.int64)),
        "y": ("unit", np.concatenate(ys).astype(np.int64)),
        "x": ("unit", np.concatenate(xs).astype(np.int64)),
    }
    coords.update({k: ("sample", np.asarray(v)) for k, v in sample_coords.items()})
    return xr.DataArray(
        values, dims=("sample", "transformation", "unit"), coords=coords, name="activation"
    )


def cube_a() -> xr.DataArray:
    ref = np.load(REFERENCE / "cube_a.npz")
    return make_cube({"dense": ref["dense"], "conv": ref["conv_nthwc"]})


def random_cube(seed: int = 0, n: int = 9, t: int = 5) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    return make_cube(
        {
            "conv": rng.normal(size=(n, t, 2, 3, 2)).astype(np.float32),
            "dense": rng.normal(size=(n, t, 3)).astype(np.float32),
        },
        label=np.arange(n) % 3,
    )


def flat_cube(arr, transforms=None, chunks=None, layers=None) -> xr.DataArray:
    """A cube of units without spatial axes; ``layers`` names each unit (default "conv")."""
    u = arr.shape[2]
    coords = {
        "layer": ("unit", list(layers) if layers is not None else ["conv"] * u),
        "channel": ("unit", np.arange(u)),
        "y": ("unit", np.full(u, -1)),
        "x": ("unit", np.full(u, -1)),
    }
    if transforms is not None:
        coords["transform"] = ("transformation", transforms)
    cube = xr.DataArray(arr, dims=("sample", "transformation", "unit"), coords=coords)
    return cube.chunk(chunks) if chunks else cube
