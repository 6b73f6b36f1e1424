"""noise_tunnel, gradient_shap, layer_conductance, guided_backprop, guided_grad_cam, several
cuts, input baselines at a cut and custom perturbations, against closed forms."""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

import tmx
from tmx import attribution as A
from tmx import transforms as T
from tmx.attribution import shap_draws

from .attribution_util import draws, gaussian_noise

RNG = np.random.default_rng(11)
X = RNG.normal(size=(5, 4)).astype(np.float32)
X64 = X.astype(np.float64)
W = RNG.normal(size=(4, 3)).astype(np.float32)
W1 = RNG.normal(size=(4, 6)).astype(np.float32)
B1 = RNG.normal(size=6).astype(np.float32) * 0.3
W2 = RNG.normal(size=(6, 5)).astype(np.float32)
W3 = RNG.normal(size=(5, 3)).astype(np.float32)


def linear_model() -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, use_bias=False)])
    model.set_weights([W])
    return model


def wavy(z, training=False):
    """Class 0: Σ z³ − Σ z (gradient 3z² − 1 changes sign); class 1: Σ z³."""
    cube = tf.reduce_sum(z**3, axis=1)
    return tf.stack([cube - tf.reduce_sum(z, axis=1), cube], axis=1)


def relu_net(layers: str = "fused") -> keras.Model:
    """x → Dense(6) → ReLU → Dense(5) → ReLU → Dense(3), the ReLUs fused, as ReLU layers or
    as Activation("relu")."""
    inp = keras.Input((4,))
    if layers == "fused":
        h = keras.layers.Dense(6, activation="relu", name="d1")(inp)
        h = keras.layers.Dense(5, activation="relu", use_bias=False, name="d2")(h)
    else:
        act = (
            keras.layers.ReLU
            if layers == "relu"
            else lambda name: keras.layers.Activation("relu", name=name)
        )
        h = act(name="r1")(keras.layers.Dense(6, name="d1")(inp))
        h = act(name="r2")(keras.layers.Dense(5, use_bias=False, name="d2")(h))
    out = keras.layers.Dense(3, use_bias=False, name="d3")(h)
    model = keras.Model(inp, out)
    model.get_layer("d1").set_weights([W1, B1])
    model.get_layer("d2").set_weights([W2])
    model.get_layer("d3").set_weights([W3])
    return model


def conv_net(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    h = keras.layers.Conv2D(3, 3, padding="same", activation="tanh", name="c2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inp, keras.layers.Dense(3, name="logits")(h))


IMAGES = np.random.default_rng(5).normal(size=(3, 6, 6, 2)).astype(np.float32)


# -- noise tunnel ---------------------------------------------------------------------------------
def test_noise_tunnel_of_saliency_is_smoothgrad_or_captums_absolute_default() -> None:
    eps = gaussian_noise((4,), np.arange(5), 6, 0.4, 3).astype(np.float64)
    grads = 3 * (X64[:, None] + eps) ** 2 - 1
    for kind, agg in (
        ("smoothgrad", lambda g: g.mean(axis=1)),
        ("smoothgrad_sq", lambda g: (g**2).mean(axis=1)),
        ("vargrad", lambda g: g.var(axis=1)),
    ):
        signed = A.noise_tunnel(
            A.saliency, wavy, X, 0, kind=kind, samples=6, noise=0.4, seed=3, absolute=False
        )
        np.testing.assert_allclose(signed.values, agg(grads), rtol=1e-5, atol=1e-6)
        sg = A.smoothgrad(wavy, X, 0, kind=kind, samples=6, noise=0.4, seed=3)
        np.testing.assert_allclose(signed.values, sg.values, rtol=1e-5, atol=1e-6)
    # saliency's own default (absolute), as Captum's NoiseTunnel(Saliency()): mean |g|
    captum = A.noise_tunnel(A.saliency, wavy, X, 0, samples=6, noise=0.4, seed=3)
    np.testing.assert_allclose(captum.values, np.abs(grads).mean(axis=1), rtol=1e-5)
    assert captum.attrs["method"] == "noise_tunnel"
    assert captum.attrs["inner_method"] == "saliency" and "tmx_version" in captum.attrs


def test_noise_tunnel_of_integrated_gradients_closed_form() -> None:
    # IG of Σ z³ from a zero baseline is z³ (2 Gauss-Legendre nodes integrate 3α² exactly)
    eps = gaussian_noise((4,), np.arange(5), 7, 0.3, 1).astype(np.float64)
    noisy = X64[:, None] + eps
    nt = A.noise_tunnel(A.integrated_gradients, wavy, X, 1, samples=7, noise=0.3, seed=1, steps=2)
    np.testing.assert_allclose(nt.values, (noisy**3).mean(axis=1), rtol=1e-5, atol=1e-6)
    var = A.noise_tunnel(
        A.integrated_gradients, wavy, X, 1, kind="vargrad", samples=7, noise=0.3, seed=1, steps=2
    )
    np.testing.assert_allclose(var.values, (noisy**3).var(axis=1), rtol=1e-4, atol=1e-6)
    ab = A.noise_tunnel(
        A.integrated_gradients, wavy, X, 1, samples=7, noise=0.3, seed=1, steps=2, absolute=True
    )
    np.testing.assert_allclose(ab.values, np.abs(noisy**3).mean(axis=1), rtol=1e-5, atol=1e-6)
    # a baseline per sample is repeated for the sample's copies: IG = z³ − b³
    base = RNG.normal(size=X.shape).astype(np.float32)
    with_base = A.noise_tunnel(
        A.integrated_gradients, wavy, X, 1, samples=7, noise=0.3, seed=1, steps=2, baseline=base
    )
    expected = (noisy**3 - base.astype(np.float64)[:, None] ** 3).mean(axis=1)
    np.testing.assert_allclose(with_base.values, expected, rtol=1e-4, atol=1e-5)
    # draws depend on the sample's position only
    again = A.noise_tunnel(
        A.integrated_gradients, wavy, X, 1, samples=7, noise=0.3, seed=1, steps=2, batch_size=3
    )
    np.testing.assert_allclose(again.values, nt.values, rtol=1e-6)
    with pytest.raises(ValueError, match="kind"):
        A.noise_tunnel(A.saliency, wavy, X, 0, kind="mean")


# -- GradientSHAP ---------------------------------------------------------------------------------
def test_gradient_shap_closed_forms_and_delta() -> None:
    refs = RNG.normal(size=(4, 4)).astype(np.float32)
    index, alpha, eps = shap_draws(np.arange(5), 4, 9, (4,), 0.2, 7)
    xt = X64[:, None] + eps.astype(np.float64)  # (N, S, 4)
    b = refs.astype(np.float64)[index]
    # linear: Φ = W[:, c] ⊙ mean_s (x̃_s − b_s), and completeness holds draw by draw
    lin = A.gradient_shap(
        linear_model(), X, 2, baselines=refs, samples=9, noise=0.2, seed=7, return_delta=True
    )
    np.testing.assert_allclose(
        lin["attribution"].values, W[:, 2] * (xt - b).mean(axis=1), rtol=1e-5, atol=1e-6
    )
    no_noise = A.gradient_shap(
        linear_model(), X, 2, baselines=refs, samples=9, seed=7, return_delta=True
    )
    np.testing.assert_allclose(no_noise["delta"].values, 0.0, atol=1e-5)
    # Σ z³: Φ = mean_s 3 (b + α (x̃ − b))² (x̃ − b)
    z = b + alpha[..., None] * (xt - b)
    got = A.gradient_shap(wavy, X, 1, baselines=refs, samples=9, noise=0.2, seed=7)
    np.testing.assert_allclose(got.values, (3 * z**2 * (xt - b)).mean(axis=1), rtol=1e-4)
    assert got.attrs["method"] == "gradient_shap" and got.attrs["baselines"] == 4
    # one baseline, many draws: the Monte-Carlo estimate of IG (x³ − b³)
    one = A.gradient_shap(wavy, X, 1, baselines=refs[0], samples=4000, seed=0)
    np.testing.assert_allclose(one.values, X64**3 - refs[0].astype(np.float64) ** 3, atol=0.25)
    with pytest.raises(ValueError, match="baselines"):
        A.gradient_shap(wavy, X, 1, baselines=np.zeros((2, 3)))


# -- layer conductance ----------------------------------------------------------------------------
def captum_multilayer() -> keras.Model:
    """Captum's tests' BasicModel_MultiLayer: linear0 = identity, linear1 = ones with bias
    (−10, 1, 1, 1), ReLU, linear2 = ones with bias (−1, 1)."""
    inp = keras.Input((3,))
    h = keras.layers.Dense(3, name="linear0")(inp)
    h = keras.layers.Dense(4, name="linear1")(h)
    h = keras.layers.ReLU(name="relu")(h)
    model = keras.Model(inp, keras.layers.Dense(2, name="linear2")(h))
    model.get_layer("linear0").set_weights([np.eye(3), np.zeros(3)])
    model.get_layer("linear1").set_weights([np.ones((3, 4)), np.array([-10.0, 1, 1, 1])])
    model.get_layer("linear2").set_weights([np.ones((4, 2)), np.array([-1.0, 1.0])])
    return model


@pytest.mark.parametrize("derivative", ["jvp", "difference"])
def test_layer_conductance_reproduces_captums_published_answers(derivative: str) -> None:
    """Captum's test_layer_conductance.py: input (0, 100, 0), target 0, 500 Gauss-Legendre
    steps: linear0 (0, 390, 0), linear1 and relu (90, 100, 100, 100), linear2 (390, 0), each
    within 0.1, and the completeness delta below 0.01 for Captum's difference form; the JVP
    form's total is the IG total at every node, so its delta is IG's quadrature error."""
    model = captum_multilayer()
    x = np.array([[0.0, 100.0, 0.0]], np.float32)
    ig = A.integrated_gradients(model, x, 0, steps=500, return_delta=True)
    for layer, expected in (
        ("linear0", [0.0, 390.0, 0.0]),
        ("linear1", [90.0, 100.0, 100.0, 100.0]),
        ("relu", [90.0, 100.0, 100.0, 100.0]),
        ("linear2", [390.0, 0.0]),
    ):
        got = A.layer_conductance(
            model, x, 0, layer=layer, steps=500, derivative=derivative, return_delta=True
        )
        np.testing.assert_allclose(got["attribution"].values[0], expected, atol=0.1)
        if derivative == "difference":
            assert abs(got["delta"].values[0]) < 0.01
        else:
            np.testing.assert_allclose(got["delta"].values, ig["delta"].values, atol=1e-3)
            assert abs(got["delta"].values[0]) < 0.1


def test_layer_conductance_closed_form_completeness_and_several_layers() -> None:
    model = relu_net()
    base = RNG.normal(size=(1, 4)).astype(np.float32)

    # at d2 (a ReLU layer) with the linear d3 after it: ∂Q/∂h = W3[:, c], constant, so
    # Cond = W3[:, c] ⊙ (h(x) − h(b)), whatever the path does below
    def h2(v):
        return np.maximum(np.maximum(v @ W1 + B1, 0) @ W2, 0).astype(np.float64)

    # Captum's difference form on the closed grid (trapezoid nodes 0 … 1) telescopes exactly
    got = A.layer_conductance(
        model, X, 1, layer="d2", baseline=base, steps=40, rule="trapezoid", derivative="difference"
    )
    expected = W3[:, 1] * (h2(X) - h2(base))
    np.testing.assert_allclose(got.values, expected, rtol=1e-4, atol=1e-5)
    # the JVP form integrates dh/dα across the ReLUs' kinks: first order in 1/steps
    jvp = A.layer_conductance(model, X, 1, layer="d2", baseline=base, steps=400)
    err = np.abs(jvp.values - expected)
    assert err.max() < 0.1 and err.mean() < 1e-2
    # completeness: Σ_j Cond_j is the IG total at every node, so the deltas are IG's, and
    # the total approaches Q(x) − Q(b) as the quadrature refines
    full = A.layer_conductance(model, X, 1, layer="d1", baseline=base, steps=400, return_delta=True)
    ig = A.integrated_gradients(model, X, 1, baseline=base, steps=400, return_delta=True)
    np.testing.assert_allclose(
        full["attribution"].values.sum(axis=1),
        ig["attribution"].values.sum(axis=1),
        rtol=1e-4,
        atol=1e-4,
    )
    np.testing.assert_allclose(full["delta"].values, ig["delta"].values, atol=1e-4)
    q = lambda v: (np.maximum(np.maximum(v @ W1 + B1, 0) @ W2, 0) @ W3)[:, 1]  # noqa: E731
    gap = full["attribution"].values.sum(axis=1) - (q(X) - q(base))
    np.testing.assert_allclose(full["delta"].values, gap, atol=1e-4)
    assert np.abs(gap).max() < 0.05
    both = A.layer_conductance(
        model, X, 1, layer=["d1", "d2"], baseline=base, steps=40, rule="trapezoid",
        derivative="difference",
    )  # fmt: skip
    assert both.dims == ("sample", "unit") and both.attrs["layers"] == ["d1", "d2"]
    np.testing.assert_array_equal(both.sel(unit=both.layer == "d2").values, got.values)
    assert list(both["channel"].values[:6]) == list(range(6))
    with pytest.raises(ValueError, match="derivative"):
        A.layer_conductance(model, X, 1, layer="d1", derivative="exact")


# -- guided backpropagation and guided Grad-CAM --------------------------------------------------
@pytest.mark.parametrize("layers", ["fused", "relu", "activation"])
def test_guided_backprop_closed_form_on_two_relus(layers: str) -> None:
    model = relu_net(layers)
    before = np.asarray(model(X))
    plain_before = A.saliency(model, X, 0, absolute=False).values
    p1 = X64 @ W1 + B1
    p2 = np.maximum(p1, 0) @ W2
    r2 = np.maximum(np.tile(W3[:, 0], (5, 1)), 0) * (p2 > 0)  # guided at the second ReLU
    r1 = np.maximum(r2 @ W2.T, 0) * (p1 > 0)
    got = A.guided_backprop(model, X, 0)
    np.testing.assert_allclose(got.values, r1 @ W1.T, rtol=1e-5, atol=1e-6)
    assert len(got.attrs["relus"]) == 2 and got.attrs["method"] == "guided_backprop"
    plain = (W3[:, 0] * (p2 > 0)) @ W2.T * (p1 > 0) @ W1.T  # the plain gradient differs
    assert np.abs(got.values - plain).max() > 1e-3
    # the user's model is unchanged: same outputs, same plain gradients
    np.testing.assert_array_equal(np.asarray(model(X)), before)
    np.testing.assert_array_equal(A.saliency(model, X, 0, absolute=False).values, plain_before)
    np.testing.assert_allclose(plain_before, plain, rtol=1e-4, atol=1e-5)


def test_guided_backprop_without_relus_is_the_gradient() -> None:
    got = A.guided_backprop(linear_model(), X, 1)
    np.testing.assert_allclose(got.values, np.tile(W[:, 1], (5, 1)), rtol=1e-6)
    assert got.attrs["relus"] == []


def test_guided_grad_cam_is_guided_backprop_times_the_upsampled_map() -> None:
    model = conv_net()
    for interpolation in ("nearest", "bilinear"):
        got = A.guided_grad_cam(model, IMAGES, 1, layer="c1", interpolation=interpolation)
        cam = A.grad_cam(model, IMAGES, 1, layer="c1").values  # already at 6 × 6
        guided = A.guided_backprop(model, IMAGES, 1).values
        np.testing.assert_allclose(got.values, guided * cam, rtol=1e-5, atol=1e-7)
        assert got.attrs["interpolation"] == interpolation
    # a coarser layer: nearest upsampling by 2 repeats each cell (GAP's input is c2 at 6 × 6;
    # pool a copy of the net instead)
    inp = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="c")(inp)
    h = keras.layers.MaxPooling2D(2, name="p")(h)
    out = keras.layers.Dense(2)(keras.layers.Flatten()(h))
    pooled = keras.Model(inp, out)
    got = A.guided_grad_cam(pooled, IMAGES, 0, layer="p", interpolation="nearest")
    cam = A.grad_cam(pooled, IMAGES, 0, layer="p").values
    up = np.repeat(np.repeat(cam, 2, axis=1), 2, axis=2)
    guided = A.guided_backprop(pooled, IMAGES, 0).values
    np.testing.assert_allclose(got.values, guided * up, rtol=1e-5, atol=1e-7)


# -- the over-transforms cube of every new method --------------------------------------------------
@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        (functools.partial(A.noise_tunnel, A.saliency), {"samples": 3}),
        (A.gradient_shap, {"baselines": np.zeros((2, 6, 6, 2), np.float32), "samples": 3}),
        (A.layer_conductance, {"layer": "c2", "steps": 4}),
        (A.guided_backprop, {}),
        (A.guided_grad_cam, {"layer": "c1"}),
    ],
)
def test_over_transforms_of_each_new_method(method, kwargs) -> None:
    model = conv_net()
    tset = T.rot90([0, 1])
    cube = A.over_transforms(method, model, IMAGES, tset, target=2, **kwargs)
    assert cube.dims == ("sample", "transformation", "unit") and cube.shape[:2] == (3, 2)
    for j in range(2):
        direct = method(model, T.apply(tset, IMAGES, j), 2, **kwargs).values.reshape(3, -1)
        np.testing.assert_allclose(cube.values[:, j], direct, rtol=1e-6, atol=1e-9)


# -- several cuts, input baselines at a cut, uniform steps=1 ---------------------------------------
def test_attribute_several_cuts_in_one_call() -> None:
    model = relu_net()
    one = [A.attribute(model, X, cut=c, qoi=2, doi="linear", steps=8) for c in ("d1", "d2")]
    both = A.attribute(model, X, cut=["d1", "d2"], qoi=2, doi="linear", steps=8, return_delta=True)
    flat = both["attribution"]
    assert flat.dims == ("sample", "unit") and flat.attrs["layers"] == ["d1", "d2"]
    np.testing.assert_array_equal(flat.sel(unit=flat.layer == "d1").values, one[0].values)
    np.testing.assert_array_equal(flat.sel(unit=flat.layer == "d2").values, one[1].values)
    assert both["delta"].dims == ("sample", "cut")
    with pytest.raises(ValueError, match="twice"):
        A.attribute(model, X, cut=["d1", "d1"], qoi=2)


def test_layer_baseline_from_the_input() -> None:
    model = relu_net()
    h1 = lambda v: np.maximum(v @ W1 + B1, 0)  # noqa: E731
    b_in = RNG.normal(size=(1, 4)).astype(np.float32)
    for baseline, b_cut in (("input", h1(np.zeros((1, 4)))), (("input", b_in), h1(b_in))):
        got = A.attribute(model, X, cut="d1", qoi=0, doi="linear", baseline=baseline, steps=6)
        given = A.attribute(
            model, X, cut="d1", qoi=0, doi="linear", baseline=b_cut.astype(np.float32), steps=6
        )
        np.testing.assert_allclose(got.values, given.values, rtol=1e-6, atol=1e-7)
        assert got.attrs["baseline"].startswith("h(")
    assert not np.allclose(
        A.attribute(model, X, cut="d1", qoi=0, doi="linear", steps=6).values, got.values
    )
    with pytest.raises(ValueError, match="baseline"):
        A.attribute(model, X, cut="d1", qoi=0, doi="linear", baseline="zeros")


def test_uniform_rule_with_one_step_evaluates_at_x() -> None:
    nodes, weights = A.quadrature(1, "uniform")
    np.testing.assert_array_equal(nodes, [1.0])
    np.testing.assert_array_equal(weights, [1.0])
    ig = A.integrated_gradients(wavy, X, 1, steps=1, rule="uniform")  # 3x² · x
    np.testing.assert_allclose(ig.values, 3 * X64**3, rtol=1e-5)


# -- custom perturbations and baselines of the metrics ---------------------------------------------
def test_infidelity_custom_perturbation_and_noisy_baseline() -> None:
    model = linear_model()
    exact = np.tile(W[:, 0], (5, 1))  # Iᵀ W_c = f(x) − f(x − I) for any I: infidelity 0
    base = RNG.normal(size=(5, 4)).astype(np.float32)
    noisy = A.infidelity(model, X, exact, 0, baseline=base, noise=0.2, samples=6)
    np.testing.assert_allclose(noisy.values, 0.0, atol=1e-8)
    assert noisy.attrs["perturbation"] == "noisy baseline"

    def to_baseline(rows, rng, base_rows):  # a random half of the features to the baseline
        mask = rng.random(rows.shape) < 0.5
        return (rows - base_rows) * mask, np.where(mask, base_rows, rows)

    wrong = np.ones_like(exact)
    got = A.infidelity(model, X, wrong, 0, baseline=base, perturbation=to_baseline, samples=6)
    expected = np.empty(5)
    for i in range(5):
        rng = np.random.default_rng([0, i])
        mask = rng.random((6, 4)) < 0.5
        pert = (X64[i] - base[i]) * mask
        expected[i] = ((pert @ np.ones(4) - pert @ W[:, 0].astype(np.float64)) ** 2).mean()
    np.testing.assert_allclose(got.values, expected, rtol=1e-4)
    # the default perturbation written as a custom one gives the default's numbers
    eps = draws("normal", (4,), np.arange(5), 6, 0.1, 0)

    stream = iter(eps)

    def same(rows, rng):
        e = next(stream)
        return e, rows - e

    np.testing.assert_allclose(
        A.infidelity(model, X, wrong, 0, samples=6, perturbation=same).values,
        A.infidelity(model, X, wrong, 0, samples=6).values,
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="pair"):
        A.infidelity(model, X, wrong, 0, samples=6, perturbation=lambda r, g: r)


def test_sensitivity_max_custom_perturbation_and_repeated_baseline() -> None:
    def shift(rows, radius, rng):  # every copy moved by +radius in every feature
        return rows + radius

    # saliency of Σ z³ − Σ z is |3z² − 1|: closed form at x + r
    got = A.sensitivity_max(
        A.saliency, wavy, X, 0, radius=0.1, samples=2, perturbation=shift, relative=False
    )
    moved = np.abs(3 * (X64 + 0.1) ** 2 - 1)
    here = np.abs(3 * X64**2 - 1)
    np.testing.assert_allclose(got.values, np.linalg.norm(moved - here, axis=1), rtol=1e-5)
    assert got.attrs["perturbation"] == "shift"
    # a baseline per sample follows its perturbed copies: IG of Σ z³ is x³ − b³
    base = RNG.normal(size=X.shape).astype(np.float32)
    ig = A.sensitivity_max(
        A.integrated_gradients,
        wavy,
        X,
        1,
        radius=0.1,
        samples=2,
        perturbation=shift,
        relative=False,
        baseline=base,
        steps=2,
    )
    np.testing.assert_allclose(
        ig.values, np.linalg.norm((X64 + 0.1) ** 3 - X64**3, axis=1), rtol=1e-4
    )


def test_new_methods_keep_sample_coordinates() -> None:
    import xarray as xr

    xs = xr.DataArray(
        IMAGES,
        dims=("sample", "y", "x", "channel"),
        coords={"sample": [7, 8, 9], "label": ("sample", [0, 1, 0])},
    )
    model = conv_net()
    for out in (
        A.noise_tunnel(A.saliency, model, xs, 1, samples=2),
        A.gradient_shap(model, xs, 1, baselines=np.zeros((6, 6, 2), np.float32), samples=2),
        A.layer_conductance(model, xs, 1, layer="c1", steps=3),
        A.guided_backprop(model, xs, 1),
        A.guided_grad_cam(model, xs, 1, layer="c1"),
    ):
        np.testing.assert_array_equal(out["sample"].values, [7, 8, 9])
        np.testing.assert_array_equal(out["label"].values, [0, 1, 0])
        assert out.attrs["tmx_version"] == tmx.__version__
