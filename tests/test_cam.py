"""The CAM family on a conv → global average pooling → dense model, against closed forms."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tmx import attribution as A

RNG = np.random.default_rng(3)
IMAGES = RNG.normal(size=(5, 6, 6, 1)).astype(np.float32)
KERNEL = RNG.normal(size=(3, 3, 1, 3)).astype(np.float32)
DENSE = RNG.normal(size=(3, 4)).astype(np.float32)


def gap_model() -> keras.Model:
    inp = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(3, 3, padding="same", use_bias=False, name="conv")(inp)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(4, name="logits")(h)
    model = keras.Model(inp, out)
    model.get_layer("conv").set_weights([KERNEL])
    model.get_layer("logits").set_weights([DENSE, np.zeros(4, np.float32)])
    return model


def activations(model: keras.Model) -> np.ndarray:
    conv = keras.Model(model.inputs[0], model.get_layer("conv").output)
    return np.asarray(conv(IMAGES), float)


def test_cam_and_grad_cam_closed_forms() -> None:
    model = gap_model()
    acts = activations(model)
    c = 2
    expected_cam = (acts * DENSE[:, c]).sum(axis=-1, keepdims=True)
    got = A.cam(model, IMAGES, c)
    assert got.dims == ("sample", "y", "x", "channel") and got.shape == (5, 6, 6, 1)
    assert got.attrs["cut"] == "conv" and got.attrs["method"] == "cam"
    np.testing.assert_allclose(got.values, expected_cam, rtol=1e-5, atol=1e-5)
    # with global average pooling, Grad-CAM's weights are W[:, c] / (H W)
    signed = A.grad_cam(model, IMAGES, c, relu=False)
    np.testing.assert_allclose(signed.values, expected_cam / 36, rtol=1e-5, atol=1e-6)
    relu = A.grad_cam(model, IMAGES, c)
    np.testing.assert_allclose(relu.values, np.maximum(expected_cam / 36, 0), atol=1e-6)
    predicted = np.argmax(np.asarray(model(IMAGES)), axis=1)
    by_default = A.grad_cam(model, IMAGES, relu=False).values
    for i, k in enumerate(predicted):
        expected = (acts[i] * DENSE[:, k]).sum(axis=-1, keepdims=True) / 36
        np.testing.assert_allclose(by_default[i], expected, rtol=1e-5, atol=1e-6)


def test_grad_cam_pp_closed_form() -> None:
    model = gap_model()
    acts = activations(model)
    c = 1
    g = np.broadcast_to(DENSE[:, c] / 36, acts.shape)
    den = 2 * g**2 + acts.sum(axis=(1, 2), keepdims=True) * g**3
    alpha = np.where(den != 0, g**2 / den, 0.0)
    w = (alpha * np.maximum(g, 0)).sum(axis=(1, 2))
    expected = np.maximum((w[:, None, None, :] * acts).sum(axis=-1, keepdims=True), 0)
    got = A.grad_cam_pp(model, IMAGES, c)
    np.testing.assert_allclose(got.values, expected, rtol=1e-4, atol=1e-6)


def test_score_cam_against_a_channel_by_channel_loop() -> None:
    model = gap_model()
    acts = activations(model)
    c = 3

    def prob(x):
        return tf.nn.softmax(tf.cast(model(x), tf.float64)).numpy()[:, c]

    base = prob(np.zeros_like(IMAGES))
    expected = np.empty((5, 6, 6, 1))
    for i in range(5):
        weights = []
        for k in range(3):
            up = tf.image.resize(acts[i, :, :, k][..., None], (6, 6)).numpy()[..., 0]
            span = up.max() - up.min()
            mask = (up - up.min()) / span if span > 0 else np.zeros_like(up)
            weights.append(prob(IMAGES[i : i + 1] * mask[None, ..., None].astype(np.float32))[0])
        weights = np.asarray(weights) - base[i]
        expected[i] = np.maximum((acts[i] * weights).sum(axis=-1, keepdims=True), 0)
    got = A.score_cam(model, IMAGES, c, batch_size=2)
    np.testing.assert_allclose(got.values, expected, rtol=1e-4, atol=1e-7)
    batched = A.score_cam(model, IMAGES, c).values  # float32 forward passes: 1e-7 absolute
    np.testing.assert_allclose(batched, got.values, rtol=1e-4, atol=1e-7)


def test_upsample_and_errors() -> None:
    model = gap_model()
    maps = A.grad_cam(model, IMAGES, 0)
    big = A.upsample(maps, (12, 18))
    assert big.shape == (5, 12, 18, 1)
    np.testing.assert_allclose(
        big.values, tf.image.resize(maps.values, (12, 18)).numpy(), rtol=1e-6
    )
    with pytest.raises(ValueError, match="spatial"):
        A.grad_cam(model, IMAGES, 0, layer="logits")
    with pytest.raises(ValueError, match="relu"):
        A.grad_cam(model, IMAGES, 0, relu=1)
    with pytest.raises(ValueError, match="class target"):
        A.cam(model, IMAGES, (0, 1))
    with pytest.raises(ValueError, match="dims"):
        A.upsample(maps.isel(channel=0), (12, 12))
    for method in (A.cam, A.grad_cam, A.grad_cam_pp, A.score_cam):
        with pytest.raises(ValueError, match="target: class index 9 is out of range"):
            method(model, IMAGES, 9)


def test_grad_cam_pp_times_exp_score_is_the_papers_exponential_form() -> None:
    """With Y = exp(S) (the paper's, and its authors' code): ∂Y/∂A = e^S g, ∂²Y = e^S g²,
    ∂³Y = e^S g³, α = ∂²Y / (2 ∂²Y + Σ_ab A ∂³Y), w = Σ α ReLU(∂Y/∂A), L = ReLU(Σ w A).
    tmx leaves out e^S (same for every channel), so multiplying by exp(S) reproduces it."""
    model = gap_model()
    acts = activations(model)
    c = 2
    score = np.asarray(model(IMAGES), float)[:, c]
    e = np.exp(score)[:, None, None, None]
    g = np.broadcast_to(DENSE[:, c] / 36, acts.shape).astype(float)
    d1, d2, d3 = e * g, e * g**2, e * g**3
    den = 2 * d2 + acts.sum(axis=(1, 2), keepdims=True) * d3
    alpha = np.where(den != 0, d2 / den, 0.0)
    w = (alpha * np.maximum(d1, 0)).sum(axis=(1, 2))
    paper = np.maximum((w[:, None, None, :] * acts).sum(axis=-1, keepdims=True), 0)
    got = A.grad_cam_pp(model, IMAGES, c).values * e
    np.testing.assert_allclose(got, paper, rtol=1e-4, atol=1e-6 * np.abs(paper).max())


class SubclassedCnn(keras.Model):
    """The layers of ``gap_model`` in a subclassed model's Python ``call``."""

    def __init__(self) -> None:
        super().__init__(name="subclassed_cnn")
        self.conv = keras.layers.Conv2D(3, 3, padding="same", use_bias=False, name="conv")
        self.gap = keras.layers.GlobalAveragePooling2D(name="gap")
        self.logits = keras.layers.Dense(4, name="logits")

    def call(self, x):
        return self.logits(self.gap(self.conv(x)))


@pytest.mark.parametrize("method", ["cam", "grad_cam", "grad_cam_pp", "score_cam"])
def test_cams_on_a_subclassed_model_name_the_real_reason(method: str) -> None:
    model = SubclassedCnn()
    model(IMAGES)
    with pytest.raises(ValueError) as err:
        getattr(A, method)(model, IMAGES)
    message = str(err.value)
    assert message.startswith(f"{method} ")
    assert "subclassed keras.Model" in message and "'conv' (Conv2D)" in message
    assert "functional model" in message and "saliency" in message
    # never an option the function does not take, nor a false claim about the layers
    assert "qoi_cut" not in message and "no layer with spatial axes" not in message
    # the input-side attributions it points to work on this model
    assert A.saliency(model, IMAGES).shape == IMAGES.shape


@pytest.mark.parametrize("method", ["cam", "grad_cam", "grad_cam_pp", "score_cam"])
def test_cams_on_a_two_output_model_suggest_what_they_accept(method: str) -> None:
    base = gap_model()
    model = keras.Model(base.inputs, [base.output, base.get_layer("gap").output])
    with pytest.raises(
        ValueError, match=rf"{method} explains one output.*has 2 \('logits', 'gap'\)"
    ) as err:
        getattr(A, method)(model, IMAGES)
    assert "qoi_cut" not in str(err.value) and "model.outputs[k]" in str(err.value)


def test_score_cam_progress_bar_when_asked_and_quiet_under_pytest(capsys) -> None:
    A.score_cam(gap_model(), IMAGES, progress=True)
    assert "5/5" in capsys.readouterr().out
    A.score_cam(gap_model(), IMAGES)
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="progress must be"):
        A.score_cam(gap_model(), IMAGES, progress=1)
