"""Constant units (a dead unit at a non-zero bias, a constant model) get exact results.

A unit whose activation is the same value c for every sample and transformation has TV = SV = 0
exactly, so NV = 1 under ``zero_div="tmeasures"`` and NaN under ``"nan"``; likewise TD = SD = 0,
ND = 1; ANOVA F = p = NaN (as ``scipy.stats.f_oneway``). This must hold for float32 and float64
cubes, any c from 0 to 1e4 and any chunking: the mean of n float64 copies of c need not round
back to c, so x − mean is not exactly 0 unless the moments are taken around a value of the data.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import tmx
from tmx.measures import by_channel, by_layer

from .measures_util import make_cube

N, T = 11, 7  # odd counts: n·c / n does not round back to c in float64
OFFSETS = np.concatenate(
    [
        [0.0, 1e-3, 0.1, 1 / 3, 1.0, 7.77, 123.456, 1234.5678901234, 1e4 / 3, 1e4],
        np.random.default_rng(0).uniform(0, 1e4, size=6),
    ]
)
DTYPES = [np.float32, np.float64]
CHUNKINGS = [
    None,
    {"sample": (4, 3, 4)},
    {"sample": (2, 9), "transformation": (3, 1, 3), "unit": (5, 10, 49)},
    {"sample": (1, 5, 5), "transformation": (6, 1), "unit": (1, 63)},
]


def constant_cube(dtype, chunks=None) -> tuple:
    """Every unit constant: a dense layer with one unit per offset, and a conv layer (2 × 3 maps,
    8 channels) whose maps are fixed patterns around the offsets. Returns (cube, values)."""
    rng = np.random.default_rng(1)
    dense = np.broadcast_to(OFFSETS, (N, T, OFFSETS.size))
    pattern = rng.uniform(-1, 1, size=(2, 3, 8)) + OFFSETS[-8:]
    conv = np.broadcast_to(pattern, (N, T, 2, 3, 8))
    cube = make_cube(
        {"dense": dense.astype(dtype), "conv": conv.astype(dtype)}, label=np.arange(N) % 2
    )
    assert cube.sizes["unit"] == 64 and cube.dtype == dtype
    values = cube.values[0, 0].astype(np.float64)
    return (cube if chunks is None else cube.chunk(chunks)), values


def assert_all(values, expected) -> None:
    values = np.asarray(values, dtype=np.float64)
    if np.isnan(expected):
        assert np.isnan(values).all(), values
    else:
        assert (values == expected).all(), values


# -- the variance family ------------------------------------------------------------------------
@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_variance_family_of_constant_units_is_exact(dtype, chunks):
    cube, _ = constant_cube(dtype, chunks)
    for dispersion in ("std", "var"):
        parts = tmx.normalized_variance(cube, dispersion=dispersion, parts=True).compute()
        assert_all(parts.tv, 0.0)
        assert_all(parts.sv, 0.0)
        assert_all(parts.nv, 1.0)
        per_channel = by_channel(parts.nv).values  # (layer, channel), NaN where none
        assert_all(per_channel[np.isfinite(per_channel)], 1.0)
        assert np.isfinite(per_channel).sum() == OFFSETS.size + 8
        assert_all(by_layer(parts.nv), 1.0)
        assert_all(by_layer(parts, reduce="ratio_of_means"), 1.0)
        nan = tmx.normalized_variance(cube, dispersion=dispersion, zero_div="nan").compute()
        assert_all(nan, np.nan)
    assert_all(tmx.transformation_variance(cube, ddof=0).compute(), 0.0)
    assert_all(tmx.sample_variance(cube, ddof=0).compute(), 0.0)
    for pool in ("mean", "pre_mean", "pre_max"):
        pooled = tmx.normalized_variance(cube, pool=pool, parts=True).compute()
        assert pooled.sizes["unit"] == OFFSETS.size + 8
        assert_all(pooled.tv, 0.0)
        assert_all(pooled.sv, 0.0)
        assert_all(pooled.nv, 1.0)
        assert_all(tmx.normalized_variance(cube, pool=pool, zero_div="nan").compute(), np.nan)
    assert_all(tmx.normalized_variance(cube, by="label").compute(), 1.0)


@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_exactly_zero_spreads_stay_zero(dtype, chunks):
    """A unit that depends only on the sample has TV = 0 exactly (NV = 0), one that depends only
    on the transformation SV = 0 exactly (NV = inf); the other parts match numpy."""
    rng = np.random.default_rng(2)
    s = rng.normal(size=(N, 1, OFFSETS.size))
    r = rng.normal(size=(1, T, OFFSETS.size))
    sample_only = np.broadcast_to(OFFSETS + s, (N, T, OFFSETS.size))
    transform_only = np.broadcast_to(OFFSETS + r, (N, T, OFFSETS.size))
    arr = np.concatenate([sample_only, transform_only], axis=2).astype(dtype)
    cube = make_cube({"dense": arr})
    cube = cube if chunks is None else cube.chunk({**chunks, "unit": (12, 20)})
    parts = tmx.normalized_variance(cube, parts=True).compute()
    u = OFFSETS.size
    a = arr.astype(np.float64)
    assert_all(parts.tv[:u], 0.0)
    assert_all(parts.nv[:u], 0.0)
    assert_all(parts.sv[u:], 0.0)
    assert_all(parts.nv[u:], np.inf)
    np.testing.assert_allclose(parts.sv[:u], a[:, :, :u].std(axis=0, ddof=1).mean(0), rtol=1e-9)
    np.testing.assert_allclose(parts.tv[u:], a[:, :, u:].std(axis=1, ddof=1).mean(0), rtol=1e-9)


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_float64_large_mean_small_spread_keeps_its_digits(chunks):
    rng = np.random.default_rng(3)
    arr = 1e4 + 1e-2 * rng.normal(size=(N, T, 64))
    cube = make_cube({"dense": arr})
    cube = cube if chunks is None else cube.chunk(chunks)
    parts = tmx.normalized_variance(cube, parts=True).compute()
    np.testing.assert_allclose(parts.tv, arr.std(axis=1, ddof=1).mean(0), rtol=1e-9)
    np.testing.assert_allclose(parts.sv, arr.std(axis=0, ddof=1).mean(0), rtol=1e-9)


# -- distances ----------------------------------------------------------------------------------
DISTANCES = [
    {"per": "unit"},
    {"per": "channel"},
    {"per": "channel", "normalize": True},
    {"per": "channel", "metric": "cosine"},
    {"per": "channel", "metric": "cosine", "normalize": True},
]


@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_distances_of_constant_units_are_exact(dtype, chunks):
    cube, _ = constant_cube(dtype, chunks)
    for opts in DISTANCES:
        parts = tmx.normalized_distance(cube, parts=True, **opts).compute()
        assert_all(parts.td, 0.0)
        assert_all(parts.sd, 0.0)
        assert_all(parts.nd, 1.0)
        assert_all(tmx.normalized_distance(cube, zero_div="nan", **opts).compute(), np.nan)


# -- ANOVA and Goodfellow -----------------------------------------------------------------------
@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_anova_of_constant_units_is_nan_like_scipy(dtype, chunks):
    cube, values = constant_cube(dtype, chunks)
    result = tmx.anova(cube).compute()
    assert_all(result["f"], np.nan)
    assert_all(result["p"], np.nan)
    a = np.broadcast_to(values, (N, T, values.size))
    with np.errstate(all="ignore"):
        ref = stats.f_oneway(*(a[:, j, :5] for j in range(T)), axis=0)
    assert np.isnan(ref.statistic).all() and np.isnan(ref.pvalue).all()
    invariance = tmx.anova_invariance(cube)
    assert invariance.attrs["m"] == 0 and not invariance["reject"].values.any()


@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_anova_of_sample_only_units_is_exactly_zero(dtype, chunks):
    """Every group holds the same values: the group means are equal, so F = 0 and p = 1."""
    rng = np.random.default_rng(4)
    arr = np.broadcast_to(OFFSETS + rng.normal(size=(N, 1, OFFSETS.size)), (N, T, OFFSETS.size))
    cube = make_cube({"dense": arr.astype(dtype)})
    cube = cube if chunks is None else cube.chunk({**chunks, "unit": (7, 9)})
    result = tmx.anova(cube).compute()
    assert_all(result["f"], 0.0)
    assert_all(result["p"], 1.0)


@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_goodfellow_of_constant_units(dtype, chunks):
    """The threshold is the constant itself (σ = 0), so the unit never fires: L = G = 0."""
    cube, values = constant_cube(dtype, chunks)
    for threshold in ("normal", "percentile"):
        result = tmx.goodfellow(cube, threshold=threshold).compute()
        np.testing.assert_array_equal(result["threshold"].values, values)
        assert_all(result["global"], 0.0)
        assert_all(result["local"], 0.0)
        assert_all(result["score"], np.nan)


# -- bootstrap ----------------------------------------------------------------------------------
@pytest.mark.parametrize("chunks", [None, {"sample": (4, 3, 4)}])
@pytest.mark.parametrize("dtype", DTYPES)
def test_bootstrap_of_constant_units(dtype, chunks):
    cube, _ = constant_cube(dtype, chunks)
    result = tmx.bootstrap(tmx.normalized_variance, cube, n=50)
    for k in ("estimate", "low", "high"):
        assert_all(result[k], 1.0)
