"""Tests of Principal Filter Analysis (Suau, Zappella & Apostoloff 2020)."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import tmx
from tmx.introspect.pfa import pfa, pfa_recipe

DATA = Path(__file__).parent / "data" / "pfa_responses.npz"


def _dense(blocks: list[np.ndarray], names: list[str] | None = None) -> xr.DataArray:
    """Responses (sample, unit) of dense layers, one (sample, unit) block each."""
    names = names or [f"layer_{i}" for i in range(len(blocks))]
    cube = tmx.from_array({name: b[:, None] for name, b in zip(names, blocks, strict=True)})
    return cube.isel(transformation=0, drop=True)


@pytest.fixture(scope="module")
def reference() -> xr.DataArray:
    d = np.load(DATA)
    return _dense([d["layer_0"], d["layer_1"], d["layer_2"]])


@pytest.fixture(scope="module")
def reference_stats(reference: xr.DataArray) -> xr.Dataset:
    return pfa(reference)


def test_reference_kl(reference_stats: xr.Dataset) -> None:
    rec = pfa_recipe(reference_stats, "kl")
    assert rec["recommended"].values.tolist() == [99, 52, 20]
    np.testing.assert_allclose(rec["kl"].values, [1.129494, 0.844131, 1.332729], atol=1e-6)
    np.testing.assert_allclose(rec["ratio"].values, 1 - rec["kl"].values / np.log([128, 64, 32]))
    assert rec["keep"].sum("channel").values.tolist() == [99, 52, 20]
    assert rec["original"].values.tolist() == [128, 64, 32]


def test_reference_energy(reference_stats: xr.Dataset) -> None:
    rec = pfa_recipe(reference_stats, "energy", energy=0.98)
    assert rec["recommended"].values.tolist() == [82, 45, 17]
    assert np.all(rec["kept_energy"].values >= 0.98)


def _size_percentile_direct(blocks: list[np.ndarray], size: float) -> list[int]:
    """DNIKit's Size rule written out from its definition: per layer the exclusive cumulative
    energies E_k = Σ_{j<k} λ_j / Σλ of the descending, 0-clipped eigenvalues of np.cov; t = the
    100·size-th percentile of all E_k, clamped to [1e-8, 1 − 1e-8]; then each layer keeps the
    first k whose running energy share reaches t (an explicit loop, as DNIKit's Energy)."""
    spectra, exclusive = [], []
    for b in blocks:
        lam = np.maximum(np.linalg.eigvalsh(np.cov(b, rowvar=False)), 0.0)[::-1]
        spectra.append(lam)
        exclusive += [sum(lam[:k]) / lam.sum() for k in range(lam.size)]
    t = min(max(float(np.percentile(exclusive, 100 * size)), 1e-8), 1 - 1e-8)
    counts = []
    for lam in spectra:
        running, k = 0.0, 0
        for value in lam:
            running, k = running + value, k + 1
            if running / lam.sum() >= t:
                break
        counts.append(k)
    return counts


def test_reference_size_is_dnikits_rule(reference_stats: xr.Dataset) -> None:
    """DNIKit 2.0.0's Size(0.5) on its own regression data recommends [62, 36, 14]."""
    rec = pfa_recipe(reference_stats, "size", size=0.5)
    assert rec["recommended"].values.tolist() == [62, 36, 14]
    assert rec.attrs["size_rule"] == "percentile"
    assert rec["keep"].sum("channel").values.tolist() == [62, 36, 14]
    # the shared energy fraction, applied as the energy strategy, gives the same counts
    t = rec.attrs["size_energy"]
    assert 0 < t < 1
    energy = pfa_recipe(reference_stats, "energy", energy=t)
    assert energy["recommended"].values.tolist() == [62, 36, 14]


@pytest.mark.parametrize("size", [0.1, 0.25, 0.75, 0.9, 1.0])
def test_size_percentile_matches_direct_numpy(reference_stats: xr.Dataset, size: float) -> None:
    d = np.load(DATA)
    expected = _size_percentile_direct([d["layer_0"], d["layer_1"], d["layer_2"]], size)
    rec = pfa_recipe(reference_stats, "size", size=size)
    assert rec["recommended"].values.tolist() == expected


def test_size_percentile_on_random_layers() -> None:
    rng = np.random.default_rng(11)
    blocks = [
        rng.normal(size=(300, 20)) @ rng.normal(size=(20, 20)),
        rng.normal(size=(300, 3)) @ rng.normal(size=(3, 12)) + 0.1 * rng.normal(size=(300, 12)),
        rng.exponential(size=(300, 7)),
    ]
    stats = pfa(_dense(blocks))
    for size in (0.2, 0.4, 0.6, 0.8):
        rec = pfa_recipe(stats, "size", size=size)
        assert rec["recommended"].values.tolist() == _size_percentile_direct(blocks, size)


def test_size_share_rule(reference_stats: xr.Dataset) -> None:
    """tmx's own rule, by name: the exact kept total round(size × Σ channels), largest spectral
    shares first, and size=1 keeps every channel."""
    rec = pfa_recipe(reference_stats, "size", size=0.5, size_rule="share")
    assert rec.attrs["size_rule"] == "share" and np.isnan(rec.attrs["size_energy"])
    assert int(rec["recommended"].sum()) == round(0.5 * 224)
    shares = [
        reference_stats["eigenvalues"].values[i, :n]
        / reference_stats["eigenvalues"].values[i, :n].sum()
        for i, n in enumerate([128, 64, 32])
    ]
    cut = np.sort(np.concatenate(shares))[::-1][111]
    assert rec["recommended"].values.tolist() == [int(np.sum(s >= cut)) for s in shares]
    full = pfa_recipe(reference_stats, "size", size=1.0, size_rule="share")
    assert full["recommended"].values.tolist() == [128, 64, 32]


@pytest.mark.parametrize("unit_strategy", [None, "l1max", "l1min", "absmax", "absmin"])
def test_unit_strategies(reference_stats: xr.Dataset, unit_strategy: str | None) -> None:
    rec = pfa_recipe(reference_stats, unit_strategy=unit_strategy)
    for i, n in enumerate([128, 64, 32]):
        order = rec["removal_order"].values[i, :n]
        assert sorted(order.tolist()) == list(range(n))
        kept = np.flatnonzero(rec["keep"].values[i])
        assert set(kept.tolist()) == set(order[n - int(rec["recommended"][i]) :].tolist())
        assert not rec["keep"].values[i, n:].any()


def test_l1max_removes_redundant_channel() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    x = np.column_stack([x, x[:, 0] + 1e-3 * rng.normal(size=200)])  # 4 duplicates 0
    stats = pfa(_dense([x]))
    order = pfa_recipe(stats, unit_strategy="l1max")["removal_order"].values[0]
    assert order[0] in (0, 4)


def test_covariance_streamed_uneven_chunks() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(101, 6)) @ rng.normal(size=(6, 6)) + rng.normal(size=6) * 5
    y = rng.normal(size=(101, 3))
    r = _dense([x, y])
    lazy = r.copy(data=da.from_array(r.values, chunks=((7, 30, 1, 50, 13), (4, 5))))
    stats = pfa(lazy)
    np.testing.assert_allclose(stats["covariance"].values[0, :6, :6], np.cov(x.T), rtol=1e-10)
    np.testing.assert_allclose(stats["covariance"].values[1, :3, :3], np.cov(y.T), rtol=1e-10)
    assert np.isnan(stats["covariance"].values[1, 3:, :]).all()
    assert int(stats["n_samples"]) == 101


def test_stability_large_mean_small_std() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 3))
    x[:, 1] = 1e4 + 1e-3 * rng.normal(size=300)
    r = _dense([x])
    lazy = r.copy(data=da.from_array(r.values, chunks=((17, 100, 183), 3)))
    cov = pfa(lazy)["covariance"].values[0]
    expected = np.cov(x.T)
    np.testing.assert_allclose(cov, expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())
    np.testing.assert_allclose(cov[1, 1], expected[1, 1], rtol=1e-8)


def test_eigenvectors_ordered_like_eigenvalues(reference_stats: xr.Dataset) -> None:
    for i, n in enumerate([128, 64, 32]):
        a = reference_stats["covariance"].values[i, :n, :n]
        w = reference_stats["eigenvalues"].values[i, :n]
        v = reference_stats["eigenvectors"].values[i, :n, :n]
        assert np.all(np.diff(w) <= 0)
        for k in (0, 1, n // 2, n - 1):
            np.testing.assert_allclose(a @ v[:, k], w[k] * v[:, k], atol=1e-9 * w[0])
    assert np.isnan(reference_stats["eigenvalues"].values[2, 32:]).all()


def _conv(values: np.ndarray) -> xr.DataArray:
    """(sample, y, x, channel) -> responses in (y, x, channel) unit order."""
    return tmx.from_array({"conv": values[:, None]}).isel(transformation=0, drop=True)


@pytest.mark.parametrize("pool", ["max", "mean", "sum"])
def test_spatial_pooling(pool: str) -> None:
    rng = np.random.default_rng(3)
    v = rng.normal(size=(40, 3, 2, 5))
    stats = pfa(_conv(v), pool=pool)
    pooled = {"max": v.max(axis=(1, 2)), "mean": v.mean(axis=(1, 2)), "sum": v.sum(axis=(1, 2))}
    p = pooled[pool]
    np.testing.assert_allclose(stats["mean"].values[0], p.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats["covariance"].values[0], np.cov(p.T), rtol=1e-10)
    assert int(stats["n_units"][0]) == 30 and int(stats["n_channels"][0]) == 5
    assert stats.attrs["pool"] == pool


def test_known_channel_max() -> None:
    v = np.zeros((4, 2, 2, 2))
    v[:, 1, 0, 0] = [1.0, 2.0, 3.0, 4.0]  # channel 0: max at (1, 0)
    v[:, 0, 1, 1] = [5.0, 5.0, 6.0, 6.0]  # channel 1: max at (0, 1)
    stats = pfa(_conv(v), pool="max")
    np.testing.assert_allclose(stats["mean"].values[0], [2.5, 5.5])
    assert stats["channel_id"].values[0].tolist() == [0, 1]


def test_inactive_units_never_kept() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(100, 10))
    x[:, [2, 7]] = 3.0  # constant: inactive
    stats = pfa(_dense([x]))
    assert int(stats["n_active"][0]) == 8
    for strategy, kw in [
        ("kl", {}),
        ("energy", {"energy": 1.0}),
        ("size", {"size": 1.0}),
        ("size", {"size": 1.0, "size_rule": "share"}),
    ]:
        rec = pfa_recipe(stats, strategy, **kw)
        assert int(rec["recommended"][0]) <= 8
        assert not rec["keep"].values[0, [2, 7]].any()
        assert set(rec["removal_order"].values[0, :2].tolist()) == {2, 7}


def test_fewer_samples_than_channels_warns() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(10, 30))
    y = rng.normal(size=(10, 4))
    with pytest.warns(UserWarning, match="Ledoit-Wolf"):
        stats = pfa(_dense([x, y]))
    assert stats.sizes["layer"] == 2
    assert 0 < float(stats["shrinkage"][0]) <= 1 and float(stats["shrinkage"][1]) == 0
    w = stats["eigenvalues"].values[0]
    assert np.all(w > 0)  # shrinkage makes the covariance full rank
    rec = pfa_recipe(stats)
    assert 1 <= int(rec["recommended"][0]) <= 30


def test_numpy_dask_parity(reference: xr.DataArray, reference_stats: xr.Dataset) -> None:
    lazy = reference.copy(data=da.from_array(reference.values, chunks=(37, 100)))
    stats = pfa(lazy)
    for name in ("covariance", "eigenvalues", "mean", "variance"):
        np.testing.assert_allclose(
            stats[name].values, reference_stats[name].values, rtol=1e-10, atol=1e-12
        )
    a = pfa_recipe(stats)
    b = pfa_recipe(reference_stats)
    assert a["recommended"].values.tolist() == b["recommended"].values.tolist()
    assert (a["keep"].values == b["keep"].values).all()


def test_cube_input() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(20, 2, 5))
    cube = xr.DataArray(x, dims=("sample", "transformation", "unit"))
    stats = pfa(cube, transformation=1)
    np.testing.assert_allclose(stats["covariance"].values[0], np.cov(x[:, 1].T), rtol=1e-10)


def test_errors(reference_stats: xr.Dataset) -> None:
    r = _dense([np.random.default_rng(7).normal(size=(5, 3))])
    with pytest.raises(ValueError, match="pool"):
        pfa(r, pool="median")
    with pytest.raises(ValueError, match="at least 2 samples"):
        pfa(r.isel(sample=slice(0, 1)))
    with pytest.raises(ValueError, match="strategy"):
        pfa_recipe(reference_stats, "bogus")
    with pytest.raises(ValueError, match="energy"):
        pfa_recipe(reference_stats, "energy", energy=1.5)
    with pytest.raises(ValueError, match="energy"):
        pfa_recipe(reference_stats, "energy", energy=0.0)
    with pytest.raises(ValueError, match="size"):
        pfa_recipe(reference_stats, "size")
    with pytest.raises(ValueError, match="size"):
        pfa_recipe(reference_stats, "size", size=0.0)
    with pytest.raises(ValueError, match="unit_strategy"):
        pfa_recipe(reference_stats, unit_strategy="random")
    with pytest.raises(ValueError, match="size_rule"):
        pfa_recipe(reference_stats, "size", size=0.5, size_rule="global")
    with pytest.raises(ValueError, match="epsilon_energy"):
        pfa_recipe(reference_stats, "size", size=0.5, epsilon_energy=0.7)


def test_ledoit_wolf_shrinkage_matches_closed_form() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(size=(12, 30)) @ rng.normal(size=(30, 30))
    xc = x - x.mean(axis=0)
    n, p = x.shape
    x2 = xc**2
    tr = x2.sum(axis=0) / n
    mu = tr.sum() / p
    delta_ = np.sum((xc.T @ xc) ** 2) / n**2
    beta = min(
        (np.sum(x2.T @ x2) / n - delta_) / (p * n), (delta_ - 2 * mu * tr.sum() + p * mu**2) / p
    )
    expected = beta / ((delta_ - 2 * mu * tr.sum() + p * mu**2) / p)  # scikit-learn's formula
    r = _dense([x])
    lazy = r.copy(data=da.from_array(r.values, chunks=((5, 7), 30)))
    with pytest.warns(UserWarning):
        stats = pfa(lazy)
    assert float(stats["shrinkage"][0]) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("pool", ["max", "mean", "sum"])
def test_pooling_independent_of_unit_order(pool: str) -> None:
    """The (y, x, c) grid fast path and the general gather give the same statistics."""
    rng = np.random.default_rng(8)
    grid = _conv(rng.normal(size=(50, 3, 4, 6)))
    shuffled = grid.isel(unit=rng.permutation(grid.sizes["unit"]))
    a, b = pfa(grid, pool=pool), pfa(shuffled, pool=pool)
    for name in ("mean", "variance", "covariance", "eigenvalues"):
        np.testing.assert_allclose(a[name].values, b[name].values, rtol=1e-12, atol=1e-12)


def test_float32_cross_products() -> None:
    """float32 responses: per-chunk float32 cross-products, merged in float64, agree with
    np.cov of the same values to float32 precision; gram="float64" to 1e-10."""
    rng = np.random.default_rng(9)
    x = (rng.normal(size=(3000, 24)) @ rng.normal(size=(24, 24)) + 5.0).astype(np.float32)
    data = _dense([x]).chunk({"sample": (1000, 700, 1300)})
    expected = np.cov(x.astype(np.float64), rowvar=False)
    fast = pfa(data)
    assert fast.attrs["gram"] == "input" and fast.attrs["dtype"] == "float32"
    cov = fast["covariance"].values[0]
    np.testing.assert_allclose(cov, expected, rtol=0, atol=2e-6 * np.abs(expected).max())
    exact = pfa(data, gram="float64")["covariance"].values[0]
    np.testing.assert_allclose(exact, expected, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="gram"):
        pfa(data, gram="float16")


def test_eigenvalues_only(reference: xr.DataArray, reference_stats: xr.Dataset) -> None:
    stats = pfa(reference, eigenvectors=False)
    assert "eigenvectors" not in stats and stats.attrs["eigenvectors"] == 0
    np.testing.assert_allclose(
        stats["eigenvalues"].values, reference_stats["eigenvalues"].values, rtol=1e-9, atol=1e-12
    )
    a, b = pfa_recipe(stats), pfa_recipe(reference_stats)
    np.testing.assert_array_equal(a["recommended"].values, [99, 52, 20])
    np.testing.assert_array_equal(a["keep"].values, b["keep"].values)
    np.testing.assert_allclose(a["kl"].values, b["kl"].values, rtol=1e-9)
    with pytest.raises(ValueError, match="eigenvectors"):
        pfa(reference, eigenvectors="no")


@pytest.mark.parametrize("unit_strategy", ["l1max", "l1min", "absmax", "absmin"])
def test_unit_strategies_match_dnikit(unit_strategy: str) -> None:
    """Removal orders equal DNIKit 2.0.0's on six random layers (tests/data/
    make_pfa_units_dnikit.py ran DNIKit's own selection functions on these covariances),
    through ``pfa`` and ``pfa_recipe``: responses whose sample covariance is exactly (to
    rounding) the stored one."""
    import json

    cases = json.loads((Path(__file__).parent / "data" / "pfa_units_dnikit.json").read_text())
    for case in cases:
        cov = np.asarray(case["covariance"])
        p = cov.shape[0]
        n = 4 * p
        # q: n × p, orthonormal columns orthogonal to the ones vector, so x = √(n−1)·q·Lᵀ has
        # mean 0 and ddof=1 covariance L·Lᵀ = cov
        a = np.random.default_rng(0).normal(size=(n, p))
        q, _ = np.linalg.qr(a - a.mean(axis=0))
        x = np.sqrt(n - 1) * q @ np.linalg.cholesky(cov).T
        stats = pfa(_dense([x]))
        np.testing.assert_allclose(stats["covariance"].values[0], cov, rtol=0, atol=1e-12)
        expected = case["removal_order"][unit_strategy]
        order = pfa_recipe(stats, unit_strategy=unit_strategy)["removal_order"].values[0]
        assert order[: len(expected)].tolist() == expected, case["seed"]
