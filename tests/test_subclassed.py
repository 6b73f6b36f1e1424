"""Subclassed Keras models: their inner layers are traced into the cube; an untraceable one
warns and records its output (issue 19, item 3)."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import tmx


class _Traceable(keras.Model):
    def __init__(self) -> None:
        super().__init__(name="traceable")
        self.conv = keras.layers.Conv2D(3, 3, activation="relu", name="sub_conv")
        self.flat = keras.layers.Flatten(name="sub_flat")
        self.dense = keras.layers.Dense(4, name="sub_dense")

    def call(self, x):
        return self.dense(self.flat(self.conv(x)))


class _Untraceable(keras.Model):
    """A TensorFlow op in ``call``: Keras cannot run it on a symbolic KerasTensor (the model
    runs, and Keras infers its output shape, in TensorFlow's own graph)."""

    def __init__(self) -> None:
        super().__init__(name="untraceable")
        self.dense = keras.layers.Dense(3, name="u_dense")

    def call(self, x):
        x = ops.reshape(x, (-1, 64))
        return self.dense(tf.nn.softplus(x))


def _x(n: int = 6) -> np.ndarray:
    return np.random.default_rng(0).random((n, 8, 8, 1), dtype=np.float32)


def test_subclassed_model_records_its_inner_layers() -> None:
    model = _Traceable()
    x = _x()
    model(x)
    assert tmx.inspect.default_endpoints(model) == ["sub_conv", "sub_flat", "sub_dense"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        cube = tmx.activations(model, x, progress=False).compute()
    assert list(dict.fromkeys(cube["layer"].values.tolist())) == [
        "sub_conv",
        "sub_flat",
        "sub_dense",
    ]
    # the cube's values are the eager inner outputs, in the cube's unit order
    conv = np.asarray(model.conv(x)).reshape(len(x), -1)
    dense = np.asarray(model(x))
    got = cube.isel(transformation=0)
    np.testing.assert_allclose(got.sel(unit=got.layer == "sub_conv").values, conv, atol=1e-5)
    np.testing.assert_allclose(got.sel(unit=got.layer == "sub_dense").values, dense, atol=1e-5)
    # a layer by name, as for a functional model
    one = tmx.activations(model, x, layers=["sub_dense"], progress=False).compute()
    np.testing.assert_allclose(one.isel(transformation=0).values, dense, atol=1e-5)


def test_untraceable_subclassed_model_warns_and_records_its_output() -> None:
    model = _Untraceable()
    x = _x()
    model(x)
    with pytest.warns(UserWarning, match=r"could not be traced.*layers=\[-1\]"):
        cube = tmx.activations(model, x, progress=False).compute()
    assert cube.sizes["unit"] == 3
    np.testing.assert_allclose(cube.isel(transformation=0).values, np.asarray(model(x)), atol=1e-5)
    # the one-line fix silences it
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        quiet = tmx.activations(model, x, layers=[-1], progress=False).compute()
    np.testing.assert_array_equal(quiet.values, cube.values)
    with pytest.raises(ValueError, match="subclassed"):
        tmx.activations(model, x, layers=["u_dense"], progress=False)
