"""Shared test helpers for the measures: cubes from arrays (``tmx.from_array``)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import xarray as xr

import tmx

# Cube A of the design note measures.md (a copy of shared/design/reference/cube_a.npz)
REFERENCE = Path(__file__).resolve().parent / "data"


def make_cube(layers: dict[str, np.ndarray], **sample_coords) -> xr.DataArray:
    """A cube from per-layer arrays (N, T, C) or (N, T, H, W, C), units in (y, x, c) order."""
    return tmx.from_array(layers, sample=sample_coords or None)


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
    """A cube of units without spatial axes; ``layers`` names each unit (default "conv"), each
    layer's units contiguous."""
    n, t, u = arr.shape
    names = list(layers) if layers is not None else ["conv"] * u
    runs: dict[str, np.ndarray] = {}
    for name, group in itertools.groupby(range(u), key=lambda k: names[k]):
        cols = list(group)
        assert name not in runs, "flat_cube: each layer's units must be contiguous"
        runs[name] = arr[:, :, cols[0] : cols[-1] + 1]
    coords = None if transforms is None else {"transform": list(transforms)}
    if runs:
        cube = tmx.from_array(runs, transformation=coords)
    else:  # no units: from_array needs one per layer, so a cube of one unit, sliced to none
        cube = tmx.from_array({"conv": np.zeros((n, t, 1), arr.dtype)}, transformation=coords)
        cube = cube.isel(unit=slice(0, 0))
    return cube.chunk(chunks) if chunks else cube
