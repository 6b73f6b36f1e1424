"""The tmx calls that reproduce the peers' numbers, and the peers' behaviours tmx does not copy.

The peers are ``tmeasures`` (the reference PyTorch library) and the seed TF package
``transformational_measures_tf``. Their algorithms are re-implemented here from their
descriptions (docs/measures.md, "Reproducing tmeasures and the seed package") with plain numpy
loops, independently of tmx.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

import tmx
from tmx.measures import by_layer

from .measures_util import make_cube

N, T = 9, 6


def peer_cube(seed: int = 0):
    """Dense (N, T, 5): noise, invariant, transformation-only, constant, noise around 1e3; conv
    (N, T, 2, 2, 3) noise."""
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(N, T, 5))
    dense[:, :, 1] = rng.normal(size=(N, 1))
    dense[:, :, 2] = rng.normal(size=(1, T))
    dense[:, :, 3] = 0.7
    dense[:, :, 4] = 1e3 + rng.normal(size=(N, T))
    conv = rng.normal(size=(N, T, 2, 2, 3)) + 0.5
    cube = make_cube({"dense": dense.astype(np.float32), "conv": conv.astype(np.float32)})
    return cube, cube.values.astype(np.float64)


def safe_divide(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """tmeasures' quotient: x / y where y > 0; 1 where x ≤ 0 and y ≤ 0; +inf where y ≤ 0 < x."""
    out = np.empty_like(x)
    for k, (a, b) in enumerate(zip(x, y, strict=True)):
        out[k] = a / b if b > 0 else (1.0 if a <= 0 else np.inf)
    return out


# -- tmeasures ------------------------------------------------------------------------------------
def test_tmeasures_variance_family_is_the_default():
    """tmeasures: per row (a sample's transformations, or a transformation's samples) the std with
    ddof = 1 in float64, averaged over rows; NV by safe_divide; layer value = mean of the finite
    units. tmx: ``normalized_variance(cube)`` and ``by_layer``."""
    cube, a = peer_cube()
    u = a.shape[2]
    tv = np.array([np.mean([np.std(a[i, :, k], ddof=1) for i in range(N)]) for k in range(u)])
    sv = np.array([np.mean([np.std(a[:, j, k], ddof=1) for j in range(T)]) for k in range(u)])
    nv = safe_divide(tv, sv)
    parts = tmx.normalized_variance(cube, parts=True)
    np.testing.assert_allclose(parts.tv, tv, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(parts.sv, sv, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(parts.nv, nv, rtol=1e-12)
    assert parts.nv.values[1] == 0 and parts.nv.values[2] == np.inf and parts.nv.values[3] == 1
    layers = np.asarray(cube.layer.values)
    expected = [nv[(layers == name) & np.isfinite(nv)].mean() for name in ("dense", "conv")]
    np.testing.assert_allclose(by_layer(parts.nv).values, expected, rtol=1e-12)


def batch_pairs(v: np.ndarray, batch: int) -> float:
    """Mean |v_j − v_k| over the pairs inside each batch of ``batch`` consecutive values,
    averaged over the batches (the batch-restricted pairs of the reference library)."""
    means = []
    for lo in range(0, len(v), batch):
        b = v[lo : lo + batch]
        if len(b) > 1:
            means.append(np.mean([abs(x - y) for i, x in enumerate(b) for y in b[i + 1 :]]))
    return float(np.mean(means))


def test_tmeasures_batch_dependent_distances_are_not_reproduced():
    """The reference library averages only the pairs inside one batch: its TD and SD change
    with the batch size. tmx uses all pairs: the peer's numbers with one batch holding every
    sample and transformation, whatever the cube's chunking."""
    cube, a = peer_cube(1)
    u = a.shape[2]

    def peer(batch: int) -> tuple[np.ndarray, np.ndarray]:
        td = [np.mean([batch_pairs(a[i, :, k], batch) for i in range(N)]) for k in range(u)]
        sd = [np.mean([batch_pairs(a[:, j, k], batch) for j in range(T)]) for k in range(u)]
        return np.array(td), np.array(sd)

    full_td, full_sd = peer(max(N, T))
    for c in (cube, cube.chunk({"sample": 2, "transformation": 4})):
        ds = tmx.normalized_distance(c, parts=True).compute()
        np.testing.assert_allclose(ds.td, full_td, rtol=1e-12)
        np.testing.assert_allclose(ds.sd, full_sd, rtol=1e-12)
    small_td, small_sd = peer(3)
    assert not np.allclose(small_td, full_td) and not np.allclose(small_sd, full_sd)


def test_tmeasures_goodfellow_differences():
    """``goodfellow(cube, local="all")`` is the reference library's L (all cells). Its "normal"
    threshold uses σ with ddof = 1 (tmx: ddof = 0) and its percentile threshold the order
    statistic at ⌊n (1 − rate)⌋ (tmx: numpy's interpolated quantile): not reproduced."""
    rng = np.random.default_rng(2)
    arr = rng.normal(size=(200, 3, 4))
    cube = make_cube({"dense": arr})
    rate = 0.05
    ref = arr.reshape(-1, 4)  # reference="all": every cell
    normal = tmx.goodfellow(cube, reference="all", rate=rate, local="all")
    population = ref.mean(0) + ref.std(0, ddof=0) * stats.norm.isf(rate)
    peer_normal = ref.mean(0) + ref.std(0, ddof=1) * stats.norm.ppf(1 - rate)
    np.testing.assert_allclose(normal["threshold"], population, rtol=1e-12)
    assert not np.allclose(normal["threshold"], peer_normal, rtol=1e-6)
    fires = ref > population
    np.testing.assert_array_equal(normal["local"], fires.mean(0))  # L over all cells
    pct = tmx.goodfellow(cube, reference="all", rate=rate, threshold="percentile")
    np.testing.assert_allclose(pct["threshold"], np.quantile(ref, 1 - rate, axis=0), rtol=1e-12)
    order = np.sort(ref, axis=0)[int(np.floor(len(ref) * (1 - rate)))]
    assert not np.allclose(pct["threshold"], order)


# -- the seed package ----------------------------------------------------------------------------
def seed_variance(a32: np.ndarray, rows_axis: int) -> np.ndarray:
    """The seed's per-unit variance: per row a float32 Welford update, M / (count − 1), averaged
    over the rows."""
    rows = np.moveaxis(a32, rows_axis, 0)  # (rows, count, U)
    total = np.zeros(rows.shape[2], np.float32)
    for row in rows:
        mean = np.zeros(rows.shape[2], np.float32)
        moment = np.zeros(rows.shape[2], np.float32)
        for count, x in enumerate(row, start=1):
            last = mean
            mean = last + (x - last) / np.float32(count)
            moment = moment + (x - last) * (x - mean)
        total = total + moment / np.float32(len(row) - 1)
    return total / np.float32(len(rows))


def test_seed_layer_values_with_dispersion_var_and_ratio_of_means():
    """The seed: variances (ddof = 1) accumulated in float32, layer value mean_u TV / mean_u SV.
    tmx: ``dispersion="var", zero_div="nan", parts=True`` and ``by_layer(parts,
    reduce="ratio_of_means")``, in float64 (the seed's float32 rounding is not reproduced: they
    agree to ~1e-5)."""
    cube, _ = peer_cube(3)
    a32 = cube.values
    tv, sv = seed_variance(a32, 0), seed_variance(a32, 1)
    parts = tmx.normalized_variance(cube, dispersion="var", zero_div="nan", parts=True)
    np.testing.assert_allclose(parts.tv, tv, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(parts.sv, sv, rtol=1e-4, atol=1e-3)
    layers = np.asarray(cube.layer.values)  # every TV and SV is finite: all units count
    expected = [tv[layers == name].mean() / sv[layers == name].mean() for name in ("dense", "conv")]
    got = by_layer(parts, reduce="ratio_of_means")
    np.testing.assert_allclose(got.values, expected, rtol=1e-4)
    assert np.isnan(parts.nv.values[3])  # 0/0 → NaN under zero_div="nan"


def test_seed_per_feature_measures_pool_mean():
    """The seed's per-feature measures: per (layer, channel), mean over (y, x) of TV and of SV,
    then divide: ``pool="mean"``."""
    cube, a = peer_cube(4)
    parts = tmx.normalized_variance(cube, dispersion="var", zero_div="nan", pool="mean", parts=True)
    conv = a[:, :, 5:].reshape(N, T, 4, 3)  # (y, x) flattened, 3 channels
    tv = conv.var(axis=1, ddof=1).mean(axis=0).mean(axis=0)
    sv = conv.var(axis=0, ddof=1).mean(axis=0).mean(axis=0)
    np.testing.assert_allclose(parts.tv.values[5:], tv, rtol=1e-12)
    np.testing.assert_allclose(parts.sv.values[5:], sv, rtol=1e-12)
    np.testing.assert_allclose(parts.nv.values[5:], tv / sv, rtol=1e-12)
