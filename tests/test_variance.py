"""The variance family against measures.md's reference values, closed forms and properties."""

from __future__ import annotations

import dask
import dask.array
import numpy as np
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st

import tmx
from tmx.measures import (
    by_channel,
    by_layer,
    normalized_variance,
    sample_variance,
    transformation_variance,
)

from .measures_util import cube_a, make_cube, random_cube


def test_cube_a_reference_values_per_unit_and_per_layer():
    cube = cube_a()
    dense = cube.layer == "dense"
    tv = transformation_variance(cube)
    sv = sample_variance(cube)
    nv = normalized_variance(cube)
    np.testing.assert_allclose(tv[dense], [0, 1.278165, 0, 1.148227], atol=1e-6)
    np.testing.assert_allclose(sv[dense], [0.923556, 0, 0, 1.232778], atol=1e-6)
    np.testing.assert_allclose(nv[dense], [0, np.inf, 1, 0.931414], atol=1e-6)
    np.testing.assert_allclose(by_layer(tv).values, [0.606598, 0.483279], atol=1e-6)
    np.testing.assert_allclose(by_layer(sv).values, [0.539084, 0.925870], atol=1e-6)
    layer_nv = by_layer(nv)
    np.testing.assert_allclose(layer_nv.values, [0.643805, 0.512317], atol=1e-6)
    assert list(layer_nv.layer.values) == ["dense", "conv"]
    assert list(layer_nv.excluded.values) == [1, 0]  # the inf unit
    conv_c0_y0 = nv.where((nv.layer == "conv") & (nv.channel == 0) & (nv.y == 0), drop=True)
    np.testing.assert_allclose(conv_c0_y0.values, [0.099048, 0.096594, 0.268093], atol=1e-6)


def test_cube_a_pool_mean():
    cube = cube_a()
    pooled = normalized_variance(cube, pool="mean")
    conv = pooled.where(pooled.layer == "conv", drop=True)
    np.testing.assert_allclose(conv.values, [0.114948, 0.878067], atol=1e-6)
    assert list(conv.units.values) == [9, 9] and (conv.y == -1).all()
    dense = pooled.where(pooled.layer == "dense", drop=True)
    np.testing.assert_allclose(dense.values, [0, np.inf, 1, 0.931414], atol=1e-6)
    np.testing.assert_allclose(by_layer(pooled).values, [0.643805, 0.496507], atol=1e-6)


def test_matches_closed_form_numpy_for_every_option():
    cube = random_cube()
    a = cube.values.astype(np.float64)
    for dispersion, ddof in [("std", 1), ("var", 1), ("std", 0), ("var", 2)]:
        d = np.std if dispersion == "std" else np.var
        tv = d(a, axis=1, ddof=ddof).mean(axis=0)
        sv = d(a, axis=0, ddof=ddof).mean(axis=0)
        parts = normalized_variance(cube, dispersion=dispersion, ddof=ddof, parts=True)
        np.testing.assert_allclose(parts.tv, tv, rtol=1e-12)
        np.testing.assert_allclose(parts.sv, sv, rtol=1e-12)
        np.testing.assert_allclose(parts.nv, tv / sv, rtol=1e-12)
        assert parts.attrs["dispersion"] == dispersion and parts.attrs["ddof"] == ddof
        assert parts.attrs["n_samples"] == 9 and parts.attrs["n_transformations"] == 5


def test_pre_pooling_and_stratification_closed_form():
    cube = random_cube()
    a = cube.values.astype(np.float64)
    conv = a[:, :, :12].reshape(9, 5, 6, 2)  # (y, x) flattened, 2 channels
    for how, fn in [("pre_mean", np.mean), ("pre_max", np.max)]:
        pooled = fn(conv, axis=2)
        expected = pooled.std(axis=1, ddof=1).mean(0) / pooled.std(axis=0, ddof=1).mean(0)
        got = normalized_variance(cube, pool=how)
        np.testing.assert_allclose(got[:2], expected, rtol=1e-12)
        assert got.sizes["unit"] == 2 + 3
    labels = cube.label.values
    per = []
    for value in range(3):
        sub = a[labels == value]
        per.append(sub.std(axis=1, ddof=1).mean(0) / sub.std(axis=0, ddof=1).mean(0))
    np.testing.assert_allclose(normalized_variance(cube, by="label"), np.mean(per, axis=0), 1e-12)


def test_seed_semantics_with_ratio_of_means():
    cube = cube_a()
    parts = normalized_variance(cube, dispersion="var", zero_div="nan", pool="mean", parts=True)
    layer = by_layer(parts, reduce="ratio_of_means")
    a = cube.values.astype(np.float64)
    dense = a[:, :, :4]
    expected_dense = (
        dense.var(axis=1, ddof=1).mean(0).mean() / dense.var(axis=0, ddof=1).mean(0).mean()
    )
    np.testing.assert_allclose(layer.sel(layer="dense"), expected_dense, rtol=1e-12)
    nv = normalized_variance(cube, zero_div="nan")
    assert np.isnan(nv[2]) and np.isinf(nv[1])  # 0/0 → NaN, x/0 → inf
    with pytest.raises(ValueError, match="ratio_of_means"):
        by_layer(nv, reduce="ratio_of_means")


def test_one_pass_over_a_lazy_cube_runs_each_forward_pass_once():
    import keras

    from tmx import transforms as T
    from tmx.cube import forward_runner

    inp = keras.Input((8, 8, 1))
    out = keras.layers.Dense(3, name="d")(
        keras.layers.Flatten(name="f")(keras.layers.Conv2D(2, 3, padding="same", name="c")(inp))
    )
    model = keras.Model(inp, out)
    x = np.random.default_rng(0).normal(size=(20, 8, 8, 1)).astype(np.float32)
    cube = tmx.activations(model, x, T.rotation([0, 90, 180]), chunks={"sample": 5, "unit": 40})
    parts = normalized_variance(cube, parts=True)
    assert forward_runner(cube).batches == 0  # still lazy
    computed = parts.compute()
    runner = forward_runner(cube)
    assert runner.batches == 4  # 4 sample blocks, one batch each: TV and SV shared them
    expected = normalized_variance(cube.compute(), parts=True)
    xr.testing.assert_allclose(computed, expected, rtol=1e-10)


def test_numerically_stable_for_large_mean_small_spread():
    rng = np.random.default_rng(0)
    values = (1e4 + 1e-2 * rng.normal(size=(200, 8, 3))).astype(np.float32)
    cube = make_cube({"dense": values})
    exact = values.astype(np.float64)
    tv = exact.std(axis=1, ddof=1).mean(0)
    sv = exact.std(axis=0, ddof=1).mean(0)
    lazy = cube.chunk({"sample": 7, "transformation": 3, "unit": 1})
    for c in (cube, lazy):
        parts = normalized_variance(c, parts=True).compute()
        np.testing.assert_allclose(parts.tv, tv, rtol=1e-6)
        np.testing.assert_allclose(parts.sv, sv, rtol=1e-6)


@pytest.mark.parametrize(
    "chunks", [{"sample": 2}, {"transformation": 2, "unit": 3}, {"sample": 4, "transformation": 1}]
)
def test_numpy_and_dask_parity_and_chunk_independence(chunks):
    cube = random_cube(3)
    lazy = cube.chunk(chunks)
    for kwargs in [
        {},
        {"pool": "mean"},
        {"pool": "pre_max"},
        {"by": "label"},
        {"dispersion": "var"},
    ]:
        eager = normalized_variance(cube, parts=True, **kwargs)
        result = normalized_variance(lazy, parts=True, **kwargs)
        assert all(isinstance(v.data, dask.array.Array) for v in result.data_vars.values())
        xr.testing.assert_allclose(result.compute(), eager, rtol=1e-10)


@given(
    seed=st.integers(0, 10_000),
    a=st.floats(0.1, 100),
    b=st.floats(-100, 100),
)
def test_properties_affine_invariance_invariant_units_and_order(seed, a, b):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(6, 4, 3))
    values[:, :, 0] = rng.normal(size=(6, 1))  # invariant unit: depends on the sample only
    cube = make_cube({"dense": values})
    nv = normalized_variance(cube)
    assert nv[0] == 0
    scaled = normalized_variance(cube * a + b)
    np.testing.assert_allclose(scaled, nv, rtol=1e-9, atol=1e-12)
    perm = normalized_variance(
        cube.isel(sample=rng.permutation(6), transformation=rng.permutation(4))
    )
    np.testing.assert_allclose(perm, nv, rtol=1e-12, atol=1e-15)


def test_zero_div_policies_exact():
    values = np.zeros((4, 3, 3))
    values[:, :, 1] = np.arange(3)  # varies with the transformation only: SV = 0, TV > 0
    values[:, :, 2] = np.arange(4)[:, None]  # sample only: TV = 0
    cube = make_cube({"dense": values})
    assert list(normalized_variance(cube).values) == [1.0, np.inf, 0.0]
    nan = normalized_variance(cube, zero_div="nan").values
    assert np.isnan(nan[0]) and nan[1] == np.inf and nan[2] == 0


def test_by_layer_and_by_channel_reductions():
    cube = random_cube(5)
    nv = normalized_variance(cube)
    ch = by_channel(nv)
    assert ch.dims == ("layer", "channel")
    conv = nv.values[:12].reshape(6, 2)
    np.testing.assert_allclose(ch.sel(layer="conv").values[:2], conv.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(ch.sel(layer="dense").values, nv.values[12:], rtol=1e-12)
    assert list(ch.units.sel(layer="conv").values[:2]) == [6, 6]
    med = by_layer(nv, reduce="median")
    np.testing.assert_allclose(med.sel(layer="conv"), np.median(nv.values[:12]), rtol=1e-12)
    with_inf = nv.copy()
    with_inf[0] = np.inf
    mean = by_layer(with_inf)
    np.testing.assert_allclose(mean.sel(layer="conv"), nv.values[1:12].mean(), rtol=1e-12)
    assert int(mean.excluded.sel(layer="conv")) == 1
    assert np.isinf(by_layer(with_inf, finite_only=False).sel(layer="conv"))
    lazy = by_layer(normalized_variance(cube.chunk({"sample": 3})))
    np.testing.assert_allclose(lazy.values, by_layer(nv).values, rtol=1e-10)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda c: normalized_variance(c.isel(transformation=[0])), "T = 1"),
        (lambda c: normalized_variance(c.isel(sample=[0])), "N = 1"),
        (lambda c: normalized_variance(c.drop_vars("layer")), "unit coordinates"),
        (lambda c: normalized_variance(c.rename(sample="n")), "dims"),
        (lambda c: normalized_variance(c.values), "xr.DataArray"),
        (
            lambda c: normalized_variance(c.where(c.layer == "dense", drop=True), pool="mean"),
            "no layer of the cube has spatial axes",
        ),
        (lambda c: normalized_variance(c, pool="max"), "pool must be one of"),
        (lambda c: normalized_variance(c, dispersion="mad"), "dispersion must be one of"),
        (lambda c: normalized_variance(c, zero_div=0), "zero_div must be one of"),
        (lambda c: normalized_variance(c, ddof=9), "ddof=9"),
        (lambda c: normalized_variance(c, by="nope"), "by must name a coordinate"),
        (lambda c: normalized_variance(c.isel(sample=[0, 1, 2, 3]), by="label"), "stratum"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(random_cube())


def test_results_are_labeled():
    cube = random_cube()
    nv = normalized_variance(cube)
    assert nv.name == "normalized_variance" and nv.dims == ("unit",)
    for c in ("layer", "channel", "y", "x"):
        np.testing.assert_array_equal(nv[c].values, cube[c].values)
    assert nv.attrs["measure"] == "normalized_variance"
    assert nv.attrs["zero_div"] == "tmeasures" and nv.attrs["pool"] == "None"
    with dask.config.set(scheduler="synchronous"):
        assert transformation_variance(cube.chunk({"sample": 2})).name == "transformation_variance"
