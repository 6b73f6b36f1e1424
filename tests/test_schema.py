"""``tmx.from_array``: a cube from activations a user already has, in the cube's contract."""

from __future__ import annotations

import dask
import dask.array as da
import keras
import numpy as np
import pytest
import xarray as xr

import tmx
from tmx import transforms as T

N = 5
LAYERS = ["conv", "seq", "dense"]


@pytest.fixture(scope="module")
def model() -> keras.Model:
    """Conv maps (H, W, C), a sequence (L, C) and a dense layer (C,)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 1))
    conv = keras.layers.Conv2D(2, 3, activation="relu", name="conv")(inputs)  # (4, 4, 2)
    seq = keras.layers.Reshape((16, 2), name="seq")(conv)  # (16, 2)
    flat = keras.layers.Flatten()(seq)
    dense = keras.layers.Dense(3, name="dense")(flat)
    return keras.Model(inputs, dense)


def _outputs(model: keras.Model, x: np.ndarray, ks: list[int]) -> dict[str, np.ndarray]:
    """Each layer's output (N, T, *shape) under quarter turns k of x, by Keras directly."""
    probe = keras.Model(model.inputs, [model.get_layer(name).output for name in LAYERS])
    per_t = [probe.predict(np.rot90(x, k, axes=(1, 2)), verbose=0) for k in ks]
    return {name: np.stack([out[i] for out in per_t], axis=1) for i, name in enumerate(LAYERS)}


def test_equals_the_cube_of_tmx_activations(model: keras.Model) -> None:
    x = np.random.default_rng(0).random((N, 6, 6, 1)).astype(np.float32)
    ks = [0, 1, 2]
    rotations = T.rot90(ks)
    expected = tmx.activations(model, x, rotations, layers=LAYERS).compute()
    cube = tmx.from_array(_outputs(model, x, ks), transformation=rotations)
    assert cube.dims == expected.dims and cube.dtype == np.float32
    assert set(cube.coords) == set(expected.coords)
    for name in expected.coords:  # same unit order and coordinates, values and dtypes
        np.testing.assert_array_equal(cube[name].values, expected[name].values, err_msg=name)
        assert cube[name].dtype == expected[name].dtype, name
        assert cube[name].dims == expected[name].dims, name
    np.testing.assert_allclose(cube.values, expected.values, rtol=1e-5, atol=1e-6)
    assert cube.attrs["transforms"] == expected.attrs["transforms"]
    assert cube.attrs["layers"] == expected.attrs["layers"] == LAYERS
    assert cube.attrs["tmx_version"] == tmx.__version__


def test_units_follow_y_x_channel_order() -> None:
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(3, 2, 4, 5, 3))
    seq = rng.normal(size=(3, 2, 6, 2))
    one = rng.normal(size=(3, 2))
    cube = tmx.from_array({"maps": maps, "seq": seq, "one": one})
    assert cube.sizes["unit"] == 4 * 5 * 3 + 6 * 2 + 1
    layer, channel = cube["layer"].values, cube["channel"].values
    ys, xs = cube["y"].values, cube["x"].values
    for u in range(cube.sizes["unit"]):
        got = cube.values[:, :, u]
        if layer[u] == "maps":
            want = maps[:, :, ys[u], xs[u], channel[u]]
        elif layer[u] == "seq":
            assert ys[u] == -1
            want = seq[:, :, xs[u], channel[u]]
        else:
            assert (ys[u], xs[u], channel[u]) == (-1, -1, 0)
            want = one
        np.testing.assert_array_equal(got, want)
    # every (layer, y, x, channel) is one unit
    keys = set(zip(layer.tolist(), ys.tolist(), xs.tolist(), channel.tolist(), strict=True))
    assert len(keys) == cube.sizes["unit"]
    # a 2-D layer is the one-channel 3-D layer
    xr.testing.assert_identical(
        tmx.from_array({"one": one}), tmx.from_array({"one": one[..., None]})
    )


def test_coordinates_and_attrs() -> None:
    a = np.arange(24.0).reshape(2, 3, 4)
    cube = tmx.from_array(
        {"d": a},
        sample={"sample": [10, 20], "label": ["cat", "dog"]},
        transformation=[0.0, 45.0, 90.0],
        attrs={"model_name": "toy"},
    )
    assert cube["sample"].values.tolist() == [10, 20]
    assert cube["label"].dims == ("sample",) and cube["label"].values.tolist() == ["cat", "dog"]
    assert cube["transformation"].values.tolist() == [0.0, 45.0, 90.0]
    assert cube.attrs["model_name"] == "toy" and cube.name == "activation"
    # a valid cube: any measure takes it, and gives what numpy gives
    sv = tmx.sample_variance(cube, dispersion="var")
    np.testing.assert_allclose(sv.values, a.var(axis=0, ddof=1).mean(axis=0))
    np.testing.assert_array_equal(sv["layer"].values, ["d"] * 4)


def test_dtype_is_the_inputs_common_dtype() -> None:
    ints = np.arange(12, dtype=np.int32).reshape(2, 3, 2)
    assert tmx.from_array({"a": ints}).dtype == np.int32
    mixed = tmx.from_array({"a": ints, "b": ints.astype(np.float32)})
    assert mixed.dtype == np.result_type(np.int32, np.float32)


def test_lazy_in_lazy_out_nothing_computed() -> None:
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(6, 2, 2, 3, 4))
    dense = rng.normal(size=(6, 2, 5))
    calls = []

    def record(block: np.ndarray) -> np.ndarray:
        calls.append(block.shape)
        return block

    lazy_maps = da.from_array(maps, chunks=(4, 1, 2, 3, 4)).map_blocks(record, meta=np.array(()))
    with dask.config.set(scheduler="synchronous"):
        cube = tmx.from_array({"maps": lazy_maps, "dense": dense})
        assert isinstance(cube.data, da.Array)
        assert calls == []  # nothing ran
        assert cube.data.chunks[:2] == ((4, 2), (1, 1))  # the dask layer's blocks
        eager = tmx.from_array({"maps": maps, "dense": dense})
        xr.testing.assert_identical(cube.compute(), eager)
    assert calls
    assert isinstance(eager.data, np.ndarray)
    # a dask-backed DataArray is taken lazily too
    wrapped = xr.DataArray(da.from_array(dense, chunks=3), dims=("a", "b", "c"))
    assert isinstance(tmx.from_array({"dense": wrapped}).data, da.Array)


def test_transformation_set_must_match_t() -> None:
    with pytest.raises(ValueError, match=r"transformation holds 4 transformations.*T = 2"):
        tmx.from_array({"d": np.zeros((3, 2, 1))}, transformation=T.rot90())


@pytest.mark.parametrize(
    ("arrays", "kwargs", "match"),
    [
        (np.zeros((2, 3, 4)), {}, r"arrays must be a mapping of layer names"),
        ({}, {}, r"arrays must hold at least one layer"),
        ({"": np.zeros((2, 3))}, {}, r"every key must be a layer name"),
        ({"v": np.zeros(4)}, {}, r"arrays\['v'\] has shape \(4,\); expected \(N, T\)"),
        (
            {"big": np.zeros((2, 3, 1, 1, 1, 1))},
            {},
            r"arrays\['big'\] has shape \(2, 3, 1, 1, 1, 1\); expected .*\(N, T, H, W, C\)",
        ),
        (
            {"a": np.zeros((4, 3, 2)), "b": np.zeros((5, 3, 2))},
            {},
            r"arrays\['b'\] has shape \(5, 3, 2\); expected \(N=4, T=3, \.\.\.\) as arrays\['a'\]",
        ),
        ({"a": np.zeros((4, 3, 0))}, {}, r"arrays\['a'\] .* at least one unit"),
        ({"a": np.array([[["x"]]])}, {}, r"arrays\['a'\] must be numeric"),
        ({"a": np.zeros((4, 3))}, {"sample": [1, 2]}, r"sample must hold one value per sample"),
        (
            {"a": np.zeros((4, 3))},
            {"transformation": {"angle": [0, 1]}},
            r"transformation\['angle'\] must hold one value per transformation \(3\)",
        ),
        ({"a": np.zeros((4, 3))}, {"sample": {"layer": [0] * 4}}, r"'layer' cannot name"),
        (
            {"a": np.zeros((4, 3))},
            {"sample": {"label": [0] * 4}, "transformation": {"label": [0] * 3}},
            r"transformation: 'label' already names a coordinate",
        ),
        ({"a": np.zeros((4, 3))}, {"attrs": [1]}, r"attrs must be a mapping"),
    ],
)
def test_errors_name_the_layer_and_the_expected_shape(arrays, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        tmx.from_array(arrays, **kwargs)


def test_a_saved_cube_opens_the_same(tmp_path) -> None:
    rng = np.random.default_rng(3)
    cube = tmx.from_array(
        {"conv": rng.normal(size=(4, 2, 2, 2, 3)).astype(np.float32)},
        sample={"label": [0, 1, 0, 1]},
    )
    opened = tmx.open(tmx.save(cube, tmp_path / "cube.zarr"))
    np.testing.assert_array_equal(opened.values, cube.values)
    for name in ("layer", "channel", "y", "x", "label"):
        np.testing.assert_array_equal(opened[name].values, cube[name].values)
