"""Infidelity, sensitivity-max, deletion and insertion against direct numpy computations."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tmx import attribution as A

from .attribution_util import draws

RNG = np.random.default_rng(11)
W = RNG.normal(size=(6, 3)).astype(np.float32)
X = RNG.normal(size=(5, 6)).astype(np.float32)


def linear(z, training=False):
    return tf.matmul(z, W)


def cubic(z, training=False):
    return tf.stack([tf.reduce_sum(z**3, axis=1), tf.reduce_sum(z, axis=1)], axis=1)


def test_infidelity() -> None:
    exact = A.saliency(linear, X, 1, absolute=False)  # Φ = w: Iᵀw = f(x) − f(x − I) exactly
    np.testing.assert_allclose(A.infidelity(linear, X, exact, 1).values, 0.0, atol=1e-8)
    ixg = A.input_x_gradient(cubic, X, 0)
    got = A.infidelity(cubic, X, ixg, 0, noise=0.2, samples=6, seed=3)
    pert = draws("normal", (6,), np.arange(5), 6, 0.2, 3).astype(np.float64)
    x64 = X.astype(np.float64)
    diff = (x64**3).sum(1)[:, None] - ((x64[:, None] - pert) ** 3).sum(-1)
    dot = (pert * ixg.values[:, None]).sum(-1)
    np.testing.assert_allclose(got.values, ((dot - diff) ** 2).mean(1), rtol=1e-4)
    assert got.attrs["metric"] == "infidelity"
    scaled = A.infidelity(cubic, X, ixg * 7.0, 0, noise=0.2, samples=6, seed=3, normalize=True)
    same = A.infidelity(cubic, X, ixg, 0, noise=0.2, samples=6, seed=3, normalize=True)
    np.testing.assert_allclose(scaled.values, same.values, rtol=1e-6)  # scale-free


def test_sensitivity_max() -> None:
    constant = A.sensitivity_max(A.saliency, linear, X, 0, absolute=False)
    np.testing.assert_allclose(constant.values, 0.0, atol=1e-7)
    got = A.sensitivity_max(A.saliency, cubic, X, 0, radius=0.1, samples=5, seed=2, absolute=False)
    pert = draws("uniform", (6,), np.arange(5), 5, 0.1, 2).astype(np.float64)
    x64 = X.astype(np.float64)
    base = 3 * x64**2
    moved = 3 * (x64[:, None] + pert) ** 2
    expected = np.linalg.norm(moved - base[:, None], axis=-1).max(1) / np.linalg.norm(base, axis=-1)
    np.testing.assert_allclose(got.values, expected, rtol=1e-4)


def image_model() -> keras.Model:
    inp = keras.Input((4, 4, 1))
    out = keras.layers.Dense(2, use_bias=False)(keras.layers.Flatten()(inp))
    model = keras.Model(inp, out)
    model.set_weights([RNG.normal(size=(16, 2)).astype(np.float32)])
    return model


def test_deletion_and_insertion_against_a_loop() -> None:
    model = image_model()
    images = RNG.normal(size=(3, 4, 4, 1)).astype(np.float32)
    attr = A.input_x_gradient(model, images, 1)
    dele = A.deletion(model, images, attr, 1, steps=4)
    ins = A.insertion(model, images, attr, 1, steps=4)
    assert dele["curve"].dims == ("sample", "fraction") and dele.sizes["fraction"] == 5
    for i in range(3):
        order = np.argsort(-attr.values[i].reshape(-1), kind="stable")
        curve_d, curve_i = [], []
        for k in (0, 4, 8, 12, 16):
            keep = np.ones(16, bool)
            keep[order[:k]] = False
            img_d = np.where(keep.reshape(4, 4, 1), images[i], 0.0)[None].astype(np.float32)
            img_i = np.where(~keep.reshape(4, 4, 1), images[i], 0.0)[None].astype(np.float32)
            curve_d.append(tf.nn.softmax(np.asarray(model(img_d), np.float64)).numpy()[0, 1])
            curve_i.append(tf.nn.softmax(np.asarray(model(img_i), np.float64)).numpy()[0, 1])
        np.testing.assert_allclose(dele["curve"].values[i], curve_d, rtol=1e-5)
        np.testing.assert_allclose(ins["curve"].values[i], curve_i, rtol=1e-5)
        assert dele["auc"].values[i] == pytest.approx(np.trapezoid(curve_d, dx=0.25), rel=1e-6)
    # a faithful attribution deletes the evidence first: lower AUC than the reverse order
    reverse = A.deletion(model, images, -attr, 1, steps=4)
    assert (dele["auc"].values < reverse["auc"].values).all()
    with pytest.raises(ValueError, match="one value per input"):
        A.deletion(model, images, attr.values[:, :2], 1)


def test_infidelity_normalize_is_captums() -> None:
    """Captum's infidelity(normalize=True) from its definition: with a_k = I_kᵀ Φ and
    d_k = f(x) − f(x − I_k), β = mean(a d) / mean(a²) and INFD = mean(β² a² − 2 β a d + d²);
    normalize=False is mean((a − d)²). Same perturbations: tmx's seeded draws."""
    ixg = A.input_x_gradient(cubic, X, 0)
    pert = draws("normal", (6,), np.arange(5), 8, 0.3, 5).astype(np.float64)
    x64 = X.astype(np.float64)
    d = (x64**3).sum(1)[:, None] - ((x64[:, None] - pert) ** 3).sum(-1)
    a = (pert * ixg.values[:, None]).sum(-1)
    beta = (a * d).mean(1, keepdims=True) / (a**2).mean(1, keepdims=True)
    captum = (beta**2 * a**2 - 2 * beta * a * d + d**2).mean(1)
    got = A.infidelity(cubic, X, ixg, 0, noise=0.3, samples=8, seed=5, normalize=True)
    np.testing.assert_allclose(got.values, captum, rtol=1e-4)
    assert got.attrs["normalize"] == 1
    plain = A.infidelity(cubic, X, ixg, 0, noise=0.3, samples=8, seed=5)
    np.testing.assert_allclose(plain.values, ((a - d) ** 2).mean(1), rtol=1e-4)
    assert np.all(got.values <= plain.values * (1 + 1e-6))  # the best scale never does worse
