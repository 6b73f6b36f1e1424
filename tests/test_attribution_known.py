"""The issue's known answers: piecewise-linear ReLU nets, internal slices, completeness,
batches against rows, nested models against the same network built flat."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tmx import attribution as A


def relu_net_a(z, training=False):  # relu(relu(x1) − 1 − relu(x2))
    q = tf.nn.relu(tf.nn.relu(z[:, 0]) - 1.0 - tf.nn.relu(z[:, 1]))
    return tf.stack([q, -q], axis=1)


def relu_net_b(z, training=False):  # relu(relu(x1 − 1) − relu(x2))
    q = tf.nn.relu(tf.nn.relu(z[:, 0] - 1.0) - tf.nn.relu(z[:, 1]))
    return tf.stack([q, -q], axis=1)


@pytest.mark.parametrize("net", [relu_net_a, relu_net_b])
def test_integrated_gradients_known_answers(net) -> None:
    x = np.array([[3.0, 1.0]], np.float32)
    ig = A.integrated_gradients(net, x, 0, steps=50)
    np.testing.assert_allclose(ig.values, [[1.5, -0.5]], atol=1e-6)
    plain = A.attribute(net, x, qoi=0, doi="linear", steps=50, multiply_activation=False)
    np.testing.assert_allclose(plain.values, [[0.5, -0.5]], atol=1e-6)


R = np.random.default_rng(21)
W1, W2, W3 = (R.normal(size=s).astype(np.float32) for s in [(4, 6), (6, 5), (5, 3)])


def mlp() -> keras.Model:
    inp = keras.Input((4,))
    h = keras.layers.ReLU(name="relu1")(keras.layers.Dense(6, name="dense1")(inp))
    h = keras.layers.ReLU(name="relu2")(keras.layers.Dense(5, name="dense2")(h))
    out = keras.layers.Dense(3, name="dense3")(h)
    model = keras.Model(inp, out)
    for name, w in (("dense1", W1), ("dense2", W2), ("dense3", W3)):
        layer = model.get_layer(name)
        layer.set_weights([w, R.normal(size=w.shape[1]).astype(np.float32) * 0.1])
    return model


X = R.normal(size=(9, 4)).astype(np.float32)


def test_internal_slice_gives_the_weight_column() -> None:
    out = A.attribute(
        mlp(), X, cut="relu1", qoi=A.channel(2), qoi_cut="dense2", multiply_activation=False
    )
    np.testing.assert_allclose(out.values, np.tile(W2[:, 2], (9, 1)), rtol=1e-5, atol=1e-6)


def test_completeness_with_100_gauss_legendre_steps() -> None:
    """At the known answers (3, 1), |delta| ≤ 1e-3 with 100 Gauss-Legendre steps. On a generic
    small ReLU net the gradient jumps at each kink along the path, where no rule is better than
    first order: the error is about a node's weight (~π/(2·steps)) times the jump, so it falls
    like 1/steps; checked at 100 and 1000 steps."""
    x = np.array([[3.0, 1.0]], np.float32)
    for net in (relu_net_a, relu_net_b):
        ig = A.integrated_gradients(net, x, 0, steps=100, return_delta=True)
        assert np.abs(ig["delta"].values).max() <= 1e-3
    rng = np.random.default_rng(5)
    inp = keras.Input((2,))
    h = keras.layers.Dense(4, activation="relu")(inp)
    small = keras.Model(inp, keras.layers.Dense(1)(h))
    small.set_weights(
        [rng.normal(scale=0.3, size=w.shape).astype(np.float32) for w in small.get_weights()]
    )
    x = rng.normal(size=(20, 2)).astype(np.float32)
    errors = [
        np.abs(A.integrated_gradients(small, x, 0, steps=s, return_delta=True)["delta"]).max()
        for s in (10, 100, 1000)
    ]
    assert errors[1] <= 5e-3 and errors[2] <= 5e-4
    assert errors[0] > errors[1] > errors[2]


METHODS = {
    "saliency": lambda m, x: A.saliency(m, x, 1, batch_size=4),
    "input_x_gradient": lambda m, x: A.input_x_gradient(m, x, 1, batch_size=4),
    "integrated_gradients": lambda m, x: A.integrated_gradients(m, x, 1, steps=7, batch_size=4),
    "smoothgrad": lambda m, x: A.smoothgrad(m, x, 1, samples=5, batch_size=4),
    "vargrad": lambda m, x: A.smoothgrad(m, x, 1, samples=5, kind="vargrad", batch_size=4),
    "internal": lambda m, x: A.attribute(m, x, cut="relu2", qoi=1, batch_size=4),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_batch_equals_row_by_row(name: str) -> None:
    model = mlp()
    whole = METHODS[name](model, X).values
    rows = np.concatenate([METHODS[name](model, X[i : i + 1]).values for i in range(len(X))])
    if name in ("smoothgrad", "vargrad"):  # draws follow the position: row i alone is position 0
        rows = np.concatenate(
            [
                A.smoothgrad(
                    model,
                    X[i : i + 1],
                    1,
                    samples=5,
                    batch_size=4,
                    kind="vargrad" if name == "vargrad" else "smoothgrad",
                ).values
                for i in range(len(X))
            ]
        )
        first = METHODS[name](model, X[:1]).values
        np.testing.assert_allclose(whole[:1], first, rtol=1e-5, atol=1e-6)
        return
    np.testing.assert_allclose(whole, rows, rtol=1e-5, atol=1e-6)


def conv_layers():
    return [
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1"),
        keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="c2"),
    ]


def test_nested_backbone_equals_the_flat_network() -> None:
    images = R.normal(size=(3, 6, 6, 1)).astype(np.float32)
    inp = keras.Input((6, 6, 1))
    c1, c2 = conv_layers()
    flat_h = c2(c1(inp))
    gap, dense = keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, name="head")
    flat = keras.Model(inp, dense(gap(flat_h)))
    backbone = keras.Sequential([keras.Input((6, 6, 1)), c1, c2], name="backbone")
    nested = keras.Model(inp, dense(gap(backbone(inp))))  # the same layers, nested
    a = A.attribute(flat, images, cut="c1", qoi=1)
    b = A.attribute(nested, images, cut=("backbone", "c1"), qoi=1)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=1e-6)
    g_flat = A.grad_cam(flat, images, 1)
    g_nested = A.grad_cam(nested, images, 1, layer=("backbone", "c2"))
    np.testing.assert_allclose(g_flat.values, g_nested.values, rtol=1e-5, atol=1e-6)


def test_bad_inputs_name_the_argument() -> None:
    model = mlp()
    with pytest.raises(ValueError, match="dense1"):  # the error lists valid layer names
        A.attribute(model, X, cut="nope")
    with pytest.raises(ValueError, match="qoi: class index 7 is out of range"):
        A.saliency(model, X, 7)
    with pytest.raises(ValueError, match="non-empty"):
        A.saliency(model, X[:0], 0)
    with pytest.raises(ValueError, match="baseline"):
        A.integrated_gradients(model, X, 0, baseline=np.zeros(3))
