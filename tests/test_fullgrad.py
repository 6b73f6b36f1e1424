"""FullGrad: a closed-form numpy computation, completeness, BN folding, batches, bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tmx


def _piecewise_net(seed=0):
    """Conv+BN+ReLU, a conv with a fused ReLU, max pooling, two Dense: piecewise linear."""
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 2))
    h = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Conv2D(3, 3, activation="relu", name="c2")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(5, activation="relu", name="d1")(h)
    out = keras.layers.Dense(3, name="logits")(h)
    model = keras.Model(inp, out)
    model.get_layer("bn").set_weights(
        [rng.random(4) + 0.5, rng.normal(size=4), rng.normal(size=4) * 0.1, rng.random(4) + 0.5]
    )
    for layer in model.layers:
        if getattr(layer, "kernel", None) is not None:
            layer.kernel.assign(rng.normal(size=layer.kernel.shape).astype("float32"))
            layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32") * 0.3)
    x = rng.random((6, 8, 8, 2)).astype("float32")
    return model, x


def test_full_grad_matches_closed_form_numpy():
    # 1x1 conv (3 -> 2) + ReLU + global average pooling + Dense: every gradient is explicit.
    rng = np.random.default_rng(1)
    w1 = rng.normal(size=(3, 2))
    b1 = np.array([0.3, -0.2])
    w2 = rng.normal(size=(2, 4))
    b2 = rng.normal(size=4)
    inp = keras.Input((5, 4, 3))
    h = keras.layers.Conv2D(2, 1, activation="relu", name="conv")(inp)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(4, name="logits")(h)
    model = keras.Model(inp, out)
    model.get_layer("conv").set_weights([w1[None, None].astype("float32"), b1.astype("float32")])
    model.get_layer("logits").set_weights([w2.astype("float32"), b2.astype("float32")])
    x = rng.normal(size=(3, 5, 4, 3)).astype("float32")
    target = [0, 2, 3]

    res = tmx.attribution.full_grad(model, x, target, return_delta=True)

    xd = x.astype(np.float64)
    pre = xd @ w1 + b1  # (N, H, W, 2)
    on = (pre > 0).astype(float)
    hw = 5 * 4
    wc = w2[:, target].T  # (N, 2): ∂Q/∂pooled
    g_h = on * wc[:, None, None, :] / hw  # ∂Q/∂pre
    g_x = g_h @ w1.T
    input_term = g_x * xd
    bias_term = g_h * b1

    def post(t):
        flat = np.abs(t).reshape(t.shape[0], -1)
        flat = flat - flat.min(1, keepdims=True)
        return (flat / (flat.max(1, keepdims=True) + 1e-6)).reshape(t.shape)

    expected = post(input_term).sum(-1, keepdims=True) + post(bias_term).sum(-1, keepdims=True)
    np.testing.assert_allclose(res.attribution.values, expected, atol=1e-5)
    q = np.maximum(pre, 0).mean(axis=(1, 2)) @ w2 + b2
    q = q[np.arange(3), target]
    # the Dense bias enters the completeness sum, not the map (it has no spatial axes)
    total = input_term.sum((1, 2, 3)) + bias_term.sum((1, 2, 3)) + b2[target]
    np.testing.assert_allclose(total - q, 0, atol=1e-6)
    np.testing.assert_allclose(res.delta.values, 0, atol=1e-4)
    assert res.attrs["bias_sites"] == ["conv", "logits"]

    raw = tmx.attribution.full_grad(model, x, target, normalize=False)
    np.testing.assert_allclose(
        raw.values,
        np.abs(input_term).sum(-1, keepdims=True) + np.abs(bias_term).sum(-1, keepdims=True),
        rtol=1e-5,
        atol=1e-7,
    )


@pytest.mark.parametrize("fold", [True, False])
def test_full_grad_completeness_on_a_piecewise_linear_net(fold):
    model, x = _piecewise_net()
    q = model.predict(x, verbose=0).max(axis=1)
    res = tmx.attribution.full_grad(model, x, fold=fold, return_delta=True, batch_size=4)
    assert np.abs(q).max() > 1.0  # not a dead network
    np.testing.assert_array_less(np.abs(res.delta.values), 1e-5 * np.maximum(1, np.abs(q)))
    sites = res.attrs["bias_sites"]
    if fold:  # the BN is folded into c1 and its bias sits at the BN's output
        assert sites == ["bn", "c2", "d1", "logits"]
    else:
        assert sites == ["c1", "bn", "c2", "d1", "logits"]
    assert res.attribution.dims == ("sample", "y", "x", "channel")
    assert res.attribution.shape == (6, 8, 8, 1)


def test_full_grad_every_bias_term_matters():
    # The negative control of completeness: every bias site's term Σ b·∂y/∂b is far from 0, so
    # leaving one out would break the sum the completeness test checks. The terms by hand, with
    # Keras and TensorFlow only: a bias (BN: β) is added at every position, so ∂y/∂b sums the
    # gradient at the site's output over positions, and b·∂y/∂b is the site's FullGrad term.
    model, x = _piecewise_net()
    res = tmx.attribution.full_grad(model, x, fold=False, return_delta=True)
    sites = res.attrs["bias_sites"]
    assert sites == ["c1", "bn", "c2", "d1", "logits"]
    bn = model.get_layer("bn")
    shifts = [bn.beta if name == "bn" else model.get_layer(name).bias for name in sites]
    # the BN's bias in inference mode: β − γ·μ/√(σ² + ε) (its output is γ·z/√(σ² + ε) + that)
    scale = keras.ops.convert_to_numpy(bn.gamma) / np.sqrt(
        keras.ops.convert_to_numpy(bn.moving_variance) + bn.epsilon
    )
    bn_bias = keras.ops.convert_to_numpy(bn.beta) - scale * keras.ops.convert_to_numpy(
        bn.moving_mean
    )
    biases = [
        bn_bias if name == "bn" else keras.ops.convert_to_numpy(b)
        for name, b in zip(sites, shifts, strict=True)
    ]
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = tf.reduce_max(model(xt, training=False), axis=1)  # the default target: the top class
        total = tf.reduce_sum(y)
    grad_x, *grads = tape.gradient(total, [xt, *shifts])
    terms = [float(np.sum(g.numpy() * b)) for g, b in zip(grads, biases, strict=True)]
    # the terms complete the sum on this piecewise-linear net: Σ y = Σ x·∂y/∂x + Σ_sites terms
    input_term = float(np.sum(grad_x.numpy() * x))
    np.testing.assert_allclose(input_term + sum(terms), float(total), rtol=1e-5, atol=1e-4)
    assert abs(float(total)) > 1.0  # not a dead network
    assert min(abs(t) for t in terms) > 1e-3, dict(zip(sites, terms, strict=True))


def test_full_grad_batch_and_order_independent():
    model, x = _piecewise_net(2)
    full = tmx.attribution.full_grad(model, x, [0, 1, 2, 0, 1, 2], batch_size=64)
    rows = [
        tmx.attribution.full_grad(model, x[i : i + 1], [i % 3], batch_size=1).values
        for i in range(6)
    ]
    np.testing.assert_allclose(full.values, np.concatenate(rows), atol=1e-5)
    rev = tmx.attribution.full_grad(model, x[::-1], [2, 1, 0, 2, 1, 0], batch_size=4)
    np.testing.assert_allclose(rev.values[::-1], full.values, atol=1e-5)


def test_full_grad_bad_input():
    model, x = _piecewise_net()
    with pytest.raises(ValueError, match="x must be images"):
        tmx.attribution.full_grad(model, x.reshape(6, -1))
    with pytest.raises(ValueError, match="normalize"):
        tmx.attribution.full_grad(model, x, normalize="yes")
    with pytest.raises(ValueError, match="target"):
        tmx.attribution.full_grad(model, x, 7)
    with pytest.raises(ValueError, match="x"):
        tmx.attribution.full_grad(model, x[:0])
