"""Same-equivariance: tmx.measures.invert on real Keras models."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tmx
from tmx import transforms as T
from tmx.measures import invert, normalized_variance

from .measures_util import random_cube


@keras.saving.register_keras_serializable(package="tmx_tests")
class CircularConv(keras.layers.Layer):
    """A 3x3 convolution with circular padding: exactly equivariant to cyclic shifts."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(3, 3, input_shape[-1], self.filters))

    def call(self, x):
        x = tf.concat([x[:, -1:], x, x[:, :1]], axis=1)
        x = tf.concat([x[:, :, -1:], x, x[:, :, :1]], axis=2)
        return tf.nn.relu(tf.nn.conv2d(x, self.kernel, 1, "VALID"))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package="tmx_tests")
class PositionGain(keras.layers.Layer):
    """Multiplies each position by a fixed gain: not equivariant to shifts."""

    def call(self, x):
        h, w = x.shape[1], x.shape[2]
        gain = tf.reshape(tf.linspace(0.5, 2.0, h * w), (1, h, w, 1))
        return x * gain


def model_with(layer_factory):
    inp = keras.Input((8, 8, 1))
    h = CircularConv(3, name="circ")(inp)
    h = layer_factory()(h)
    out = keras.layers.Dense(2, name="dense")(keras.layers.Flatten(name="flat")(h))
    model = keras.Model(inp, out)
    model.get_layer("circ").kernel.assign(np.random.default_rng(0).normal(size=(3, 3, 1, 3)))
    return model


def test_circular_conv_under_roll_has_zero_nvse_and_positive_nv():
    model = model_with(lambda: keras.layers.Identity(name="ident"))
    x = np.random.default_rng(1).normal(size=(12, 8, 8, 1)).astype(np.float32)
    tset = T.product(T.roll([0, 1, 3], "x"), T.roll([0, 2], "y"))
    cube = tmx.activations(model, x, tset, layers=["circ", "ident", "dense"], chunks={"sample": 5})
    inv = invert(cube)
    assert inv.attrs["equivariance_dropped_layers"] == ["dense"]
    assert set(np.unique(inv.layer.values)) == {"circ", "ident"}
    parts = normalized_variance(inv, parts=True).compute()
    alive = parts.sv > 0  # dead ReLU units are constant: NV = 0/0 → 1 by the zero_div policy
    assert int(alive.sum()) > 100
    nvse = parts.nv.where(alive, drop=True)
    nv = normalized_variance(cube)
    assert float(abs(nvse).max()) <= 1e-6
    spatial = nv.where(nv.layer == "circ", drop=True)
    assert float(spatial.mean()) > 0.1  # clearly not invariant


def test_position_dependent_gain_breaks_equivariance():
    model = model_with(lambda: PositionGain(name="gain"))
    x = np.random.default_rng(2).normal(size=(10, 8, 8, 1)).astype(np.float32)
    cube = tmx.activations(model, x, T.roll([0, 2, 4], "x"), layers=["circ", "gain"])
    parts = normalized_variance(invert(cube), parts=True).compute()
    alive = parts.sv > 0  # dead ReLU units are constant: NV = 0/0 → 1 by the zero_div policy
    assert int(alive.sum()) > 100
    nvse = parts.nv.where(alive, drop=True)
    circ = nvse.where(nvse.layer == "circ", drop=True)
    gain = nvse.where(nvse.layer == "gain", drop=True)
    assert float(abs(circ).max()) <= 1e-6
    assert float(gain.mean()) > 0.01  # measured 0.042; the equivariant layer gives ≤ 1e-6


def test_invert_rescales_shifts_to_each_layer_and_matches_invert_maps():
    inp = keras.Input((8, 8, 1))
    h = CircularConv(2, name="full")(inp)
    h = keras.layers.AveragePooling2D(2, name="half")(h)
    model = keras.Model(inp, h)
    x = np.random.default_rng(3).normal(size=(4, 8, 8, 1)).astype(np.float32)
    tset = T.translation([0, 2, 4], 0)
    cube = tmx.activations(model, x, tset)
    inv = invert(cube).compute()
    half = cube.where(cube.layer == "half", drop=True).values.reshape(4, 3, 4, 4, 2)
    expected = T.invert_maps(tset, half[:, 2], 2, input_size=8)  # 4 px on 8 → 2 px on 4
    got = inv.where(inv.layer == "half", drop=True).values.reshape(4, 3, 4, 4, 2)[:, 2]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(got[:, :, :2], half[:, 2][:, :, 2:], rtol=1e-6)


def test_lazy_and_eager_invert_agree():
    cube = random_cube(1, n=4, t=4)
    cube = cube.assign_coords(transform=("transformation", list(T.rot90([0, 1, 2, 3]).labels)))
    cube = cube.isel(unit=np.flatnonzero(cube.layer.values == "conv"))
    cube = cube.where(cube.x < 2, drop=True)  # a 2 x 2 map: rot90 needs square maps
    tset = T.rot90([0, 1, 2, 3])
    eager = invert(cube, tset)
    lazy = invert(cube.chunk({"sample": 3, "transformation": 3}), tset)
    np.testing.assert_allclose(lazy.values, eager.values)
    maps = cube.values.reshape(4, 4, 2, 2, 2)
    np.testing.assert_allclose(
        eager.values[:, 1].reshape(4, 2, 2, 2), np.rot90(maps[:, 1], -1, axes=(1, 2))
    )


def test_invert_errors():
    cube = random_cube(0, n=3, t=3)
    with pytest.raises(ValueError, match="record its transformation set"):
        invert(cube)
    with pytest.raises(ValueError, match="T = 2"):
        invert(cube, T.rotation([0, 90]))
    with pytest.raises(ValueError, match="cannot be inverted"):
        invert(cube, T.gaussian_noise([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="no layer with spatial axes"):
        invert(cube.where(cube.layer == "dense", drop=True), T.rotation([0, 1, 2]))
    with pytest.raises(ValueError, match="whole"):
        invert(cube.isel(unit=[0, 1, 5]), T.rotation([0, 1, 2]))
    labelled = cube.assign_coords(transform=("transformation", ["a", "b", "c"]))
    with pytest.raises(ValueError, match="does not match"):
        invert(labelled, T.rotation([0, 1, 2]))


@pytest.mark.parametrize(
    "tset",
    [
        T.rotation([0.0, 33.0, 90.0, 200.0], fill_value=0.7),
        T.rotation([15.0, -40.0], interpolation="nearest"),
        T.translation([0, 3, -2], [1, 0, 2], fill="wrap"),
        T.scale([0.8, 1.3]),
        T.product(T.rotation([10.0, 45.0]), T.translation([0, 2], 0)),
        T.union(T.flip("x"), T.rot90([1, 3]), T.roll([(2, 1)], axis="xy")),
    ],
    ids=["rotation-fill", "nearest", "wrap", "scale", "product", "exact"],
)
def test_invert_equals_invert_maps_on_every_map_size(tset):
    """tmx.invert (a cached sparse operator per map size, out = M map + b, built from the
    inverse of one-hot maps) gives invert_maps' direct TensorFlow inverse on every map size
    and channel count."""
    rng = np.random.default_rng(5)
    for h, w, c in [(12, 12, 3), (7, 7, 2), (9, 6, 1)]:
        if any(op.kind.name == "rot90" for chain in tset.elements for op in chain) and h != w:
            continue
        maps = rng.normal(size=(5, len(tset), h, w, c)).astype(np.float32)
        cube = tmx.from_array({"maps": maps}, transformation=tset)
        back = tmx.invert(cube, tset, input_size=(12, 12)).values
        for j in range(len(tset)):
            direct = np.asarray(T.invert_maps(tset, maps[:, j], j, input_size=(12, 12)))
            np.testing.assert_allclose(back[:, j], direct.reshape(5, -1), rtol=1e-5, atol=1e-5)
