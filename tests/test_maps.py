"""Learned equivariance and equivalence (Lenc & Vedaldi): exact maps recovered, ridge closed
form, held-out R², streaming over dask chunks, argument errors, docstring examples."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import xarray as xr

import tmx
from tmx.measures import equivalence, equivariance_map

from .measures_util import flat_cube, make_cube


def _circular_conv_2d(x, kernel):
    """Circular 2-D convolution, (N, H, W, Cin) ⊛ (H, W, Cin, Cout) → (N, H, W, Cout)."""
    fx = np.fft.fft2(x, axes=(1, 2))
    fk = np.fft.fft2(kernel, axes=(0, 1))
    return np.real(np.fft.ifft2(np.einsum("nhwi,hwio->nhwo", fx, fk), axes=(1, 2)))


SHIFTS = [(0, 0), (1, 0), (0, 2), (3, 1)]


def _shift_cube(n=240, h=4, w=3, c=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, h, w, c))
    kernel = rng.normal(size=(h, w, c, c))
    acts = np.stack([_circular_conv_2d(np.roll(x, s, axis=(1, 2)), kernel) for s in SHIFTS], axis=1)
    return make_cube({"conv": acts, "dense": rng.normal(size=(n, len(SHIFTS), 2))})


def _roll_permutation(h, w, c, shift):
    """P with (P a)[u] = roll(a)[u], units in (y, x, c) order."""
    idx = np.arange(h * w * c).reshape(h, w, c)
    src = np.roll(idx, shift, axis=(0, 1)).reshape(-1)
    p = np.zeros((h * w * c, h * w * c))
    p[np.arange(h * w * c), src] = 1.0
    return p


def test_circular_conv_under_cyclic_shift_gives_the_shift_permutation():
    cube = _shift_cube()
    eq = equivariance_map(cube, layer="conv", ridge=1e-10)
    np.testing.assert_allclose(eq.r2, 1.0, atol=1e-8)
    np.testing.assert_allclose(eq.r2_unit, 1.0, atol=1e-8)
    for j, s in enumerate(SHIFTS):
        np.testing.assert_allclose(
            eq["map"].isel(transformation=j), _roll_permutation(4, 3, 2, s), atol=1e-5
        )
        np.testing.assert_allclose(eq.bias.isel(transformation=j), 0.0, atol=1e-5)
    assert eq["map"].dims == ("transformation", "unit_out", "unit_in")
    units = cube.isel(unit=cube.layer == "conv")
    np.testing.assert_array_equal(eq.channel_out, units.channel)
    np.testing.assert_array_equal(eq.y_in, units.y)
    assert eq.attrs["measure"] == "equivariance_map" and eq.attrs["layer"] == "conv"
    assert eq.attrs["n_test"] == 60 and eq.held_out.sum() == 60


def test_circular_1d_conv_and_a_subset_of_transformations():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(150, 6))
    k = rng.normal(size=6)
    conv = lambda v: np.real(np.fft.ifft(np.fft.fft(v, axis=1) * np.fft.fft(k), axis=1))  # noqa: E731
    acts = np.stack([conv(np.roll(x, s, axis=1)) for s in range(3)], axis=1)
    eq = equivariance_map(flat_cube(acts), transformation=[2, 1], ridge=1e-10)
    np.testing.assert_array_equal(eq.transformation, [2, 1])
    np.testing.assert_allclose(eq.r2, 1.0, atol=1e-8)
    np.testing.assert_allclose(
        eq["map"].sel(transformation=2), np.roll(np.eye(6), 2, axis=0), atol=1e-5
    )


def test_invariant_layer_gives_the_identity():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(80, 1, 2, 2, 3)) * 3 + 1
    cube = make_cube({"conv": np.repeat(a, 3, axis=1)})
    for kind, size in (("linear", 12), ("conv1x1", 3)):
        eq = equivariance_map(cube, kind=kind)
        np.testing.assert_allclose(eq.r2, 1.0, atol=1e-9)
        for j in range(3):
            np.testing.assert_allclose(eq["map"].isel(transformation=j), np.eye(size), atol=1e-4)
    assert eq["map"].dims == ("transformation", "channel_out", "channel_in")


def test_conv1x1_recovers_a_channel_map_shared_by_positions():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(60, 4, 4, 3))
    mix = rng.normal(size=(3, 3))
    acts = np.stack([a, a @ mix.T + 0.5], axis=1)
    eq = equivariance_map(make_cube({"conv": acts}), kind="conv1x1", ridge=0)
    np.testing.assert_allclose(eq["map"].isel(transformation=1), mix, atol=1e-10)
    np.testing.assert_allclose(eq.bias.isel(transformation=1), 0.5, atol=1e-10)
    np.testing.assert_allclose(eq.r2, 1.0, atol=1e-10)
    np.testing.assert_array_equal(eq.channel_out, [0, 1, 2])


def test_conv1x1_after_invert_remaps_positions():
    """conv1x1 does not remap positions: a circular conv under a shift is no channel map, but it
    is the identity channel map once tmx.invert has mapped the positions back."""
    from tmx import transforms as T

    rng = np.random.default_rng(10)
    x = rng.normal(size=(60, 4, 4, 2))
    kernel = rng.normal(size=(4, 4, 2, 2))
    acts = np.stack([_circular_conv_2d(np.roll(x, s, axis=2), kernel) for s in (0, 1, 3)], axis=1)
    cube = make_cube({"conv": acts})
    plain = equivariance_map(cube, kind="conv1x1")
    assert (plain.r2[1:] < 0.5).all()
    back = tmx.invert(cube, T.roll([0, 1, 3], "x"), input_size=(4, 4))
    eq = equivariance_map(back, kind="conv1x1")
    np.testing.assert_allclose(eq.r2, 1.0, atol=1e-6)
    for j in range(3):
        np.testing.assert_allclose(eq["map"].isel(transformation=j), np.eye(2), atol=1e-4)


def test_random_linear_map_with_noise_matches_closed_form():
    rng = np.random.default_rng(4)
    n, p = 400, 5
    x = rng.normal(size=(n, p)) * np.arange(1, p + 1)
    m_true = rng.normal(size=(p, p))
    y = x @ m_true.T + 2.0 + 0.3 * rng.normal(size=(n, p))
    cube = flat_cube(np.stack([x, y], axis=1))
    ridge = 1e-2
    eq = equivariance_map(cube, transformation=1, ridge=ridge, test_size=0.3, seed=7)
    held = np.zeros(n, bool)
    held[np.random.default_rng(7).permutation(n)[: round(0.3 * n)]] = True
    np.testing.assert_array_equal(eq.held_out, held)
    xt, yt = x[~held], y[~held]
    xc, yc = xt - xt.mean(0), yt - yt.mean(0)
    lam = ridge * np.trace(xc.T @ xc) / p
    m = np.linalg.solve(xc.T @ xc + lam * np.eye(p), xc.T @ yc).T
    b = yt.mean(0) - m @ xt.mean(0)
    np.testing.assert_allclose(eq["map"].isel(transformation=0), m, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(eq.bias.isel(transformation=0), b, rtol=1e-9, atol=1e-12)
    assert eq.attrs["ridge_lambda"] == pytest.approx(lam)
    res = y[held] - x[held] @ m.T - b
    tot = y[held] - y[held].mean(0)
    np.testing.assert_allclose(eq.r2[0], 1 - (res**2).sum() / (tot**2).sum(), rtol=1e-9)
    np.testing.assert_allclose(eq.r2_unit[0], 1 - (res**2).sum(0) / (tot**2).sum(0), rtol=1e-9)
    assert 0.9 < float(eq.r2[0]) < 1.0
    # the ridge shrinks the map (most along the low-variance input); a tiny one recovers it
    small = equivariance_map(cube, transformation=1, ridge=1e-8)
    np.testing.assert_allclose(small["map"].isel(transformation=0), m_true, atol=0.05)
    np.testing.assert_allclose(small.bias.isel(transformation=0), 2.0, atol=0.1)


def test_dask_uneven_chunks_equal_numpy_and_float32():
    cube = _shift_cube(n=100).astype(np.float32)
    eager = equivariance_map(cube, layer="conv", kind="conv1x1", ridge=1e-3)
    lazy = equivariance_map(
        cube.chunk({"sample": (7, 50, 1, 42), "unit": 10}),
        layer="conv",
        kind="conv1x1",
        ridge=1e-3,
    )
    for key in ("r2", "r2_unit", "map", "bias"):
        np.testing.assert_allclose(lazy[key], eager[key], rtol=1e-9, atol=1e-12)
    eager = equivalence(cube, layer_a="conv", layer_b="dense", transformation=1)
    lazy = equivalence(
        cube.chunk({"sample": (30, 3, 67)}), layer_a="conv", layer_b="dense", transformation=1
    )
    for key in ("r2", "map", "bias"):
        np.testing.assert_allclose(lazy[key], eager[key], rtol=1e-9, atol=1e-12)


def test_zarr_store_is_streamed(tmp_path):
    cube = _shift_cube(n=64).astype(np.float32).chunk({"sample": 10})
    tmx.save(cube, tmp_path / "cube.zarr", progress=False)
    opened = tmx.open(tmp_path / "cube.zarr")
    assert opened.chunks is not None
    lazy = equivariance_map(opened, layer="conv", ridge=1e-4)
    eager = equivariance_map(cube.compute(), layer="conv", ridge=1e-4)
    for key in ("r2", "map", "bias"):
        np.testing.assert_allclose(lazy[key], eager[key], rtol=1e-9, atol=1e-12)


def test_reference_from_the_identity_coordinate():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(40, 2))
    acts = np.stack([2 * a, a], axis=1)
    eq = equivariance_map(flat_cube(acts, transforms=["scale", "identity"]), ridge=0)
    assert eq.attrs["reference"] == 1
    np.testing.assert_allclose(eq["map"].isel(transformation=0), 2 * np.eye(2), atol=1e-10)
    np.testing.assert_array_equal(eq.transform, ["scale", "identity"])
    eq0 = equivariance_map(flat_cube(acts, transforms=["scale", "identity"]), reference=0, ridge=0)
    np.testing.assert_allclose(eq0["map"].isel(transformation=1), 0.5 * np.eye(2), atol=1e-10)


def test_equivalence_with_a_rotated_copy():
    rng = np.random.default_rng(6)
    a = rng.normal(size=(200, 2, 4))
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    cube_a = make_cube({"a": a})
    cube_b = make_cube({"b": a @ q.T})
    eqv = equivalence(cube_a, cube_b, layer_a="a", layer_b="b", ridge=1e-10)
    np.testing.assert_allclose(float(eqv.r2), 1.0, atol=1e-9)
    np.testing.assert_allclose(eqv["map"], q, atol=1e-6)
    assert eqv["map"].dims == ("unit_out", "unit_in")
    assert eqv.attrs["two_cubes"] == 1 and eqv.attrs["layer_b"] == "b"
    one = equivalence(make_cube({"a": a, "b": a @ q.T}), layer_a="b", layer_b="a", ridge=1e-10)
    np.testing.assert_allclose(one["map"], q.T, atol=1e-6)


def test_equivalence_conv1x1():
    rng = np.random.default_rng(8)
    a = rng.normal(size=(50, 1, 3, 3, 2))
    mix = rng.normal(size=(3, 2))
    cube = make_cube({"a": a, "b": a @ mix.T})
    eqv = equivalence(cube, layer_a="a", layer_b="b", kind="conv1x1", ridge=0)
    np.testing.assert_allclose(eqv["map"], mix, atol=1e-10)
    assert eqv["map"].dims == ("channel_out", "channel_in")
    bad = make_cube({"a": a, "b": rng.normal(size=(50, 1, 2, 3, 2))})
    with pytest.raises(ValueError, match="same"):
        equivalence(bad, layer_a="a", layer_b="b", kind="conv1x1")


def test_independent_noise_gives_no_fit():
    rng = np.random.default_rng(9)
    cube = flat_cube(rng.normal(size=(400, 3, 4)))
    eq = equivariance_map(cube, transformation=[1, 2])
    assert (eq.r2 < 0.05).all()
    eqv = equivalence(
        make_cube({"a": rng.normal(size=(400, 1, 4)), "b": rng.normal(size=(400, 1, 3))}),
        layer_a="a",
        layer_b="b",
    )
    assert float(eqv.r2) < 0.05


def test_argument_errors_name_the_argument():
    cube = _shift_cube(n=20)
    with pytest.raises(ValueError, match="layer"):
        equivariance_map(cube)
    with pytest.raises(ValueError, match="layer"):
        equivariance_map(cube, layer="nope")
    with pytest.raises(ValueError, match="kind"):
        equivariance_map(cube, layer="conv", kind="conv3x3")
    with pytest.raises(ValueError, match="ridge"):
        equivariance_map(cube, layer="conv", ridge=-1)
    with pytest.raises(ValueError, match="test_size"):
        equivariance_map(cube, layer="conv", test_size=1.5)
    with pytest.raises(ValueError, match="test_size"):
        equivariance_map(cube, layer="conv", test_size=0.01)
    with pytest.raises(ValueError, match="seed"):
        equivariance_map(cube, layer="conv", seed=0.5)
    with pytest.raises(ValueError, match="reference"):
        equivariance_map(cube, layer="conv", reference=9)
    with pytest.raises(ValueError, match="transformation"):
        equivariance_map(cube, layer="conv", transformation=[0, 7])
    with pytest.raises(ValueError, match="memory"):
        equivariance_map(cube, layer="conv", memory=1000)
    with pytest.raises(ValueError, match="memory"):
        equivariance_map(cube, layer="conv", memory="big")
    with pytest.raises(ValueError, match="cube"):
        equivariance_map(np.zeros((3, 2, 1)))
    with pytest.raises(ValueError, match="layer_b"):
        equivalence(cube, layer_a="conv", layer_b="x")
    with pytest.raises(ValueError, match="transformation"):
        equivalence(cube, layer_a="conv", layer_b="dense", transformation=4)
    with pytest.raises(ValueError, match="same samples"):
        equivalence(cube, cube.isel(sample=slice(10)), layer_a="conv", layer_b="conv")
    with pytest.raises(ValueError, match="grid"):
        equivariance_map(cube.isel(unit=slice(1, 24)), layer="conv", kind="conv1x1")


def test_top_level_exports():
    assert tmx.equivariance_map is equivariance_map
    assert tmx.equivalence is equivalence
    assert isinstance(equivariance_map(_shift_cube(n=40), layer="dense"), xr.Dataset)


def test_docstring_examples_run():
    import importlib

    module = importlib.import_module("tmx.measures.maps")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
