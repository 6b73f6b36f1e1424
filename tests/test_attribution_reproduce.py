"""docs/attribution.md, "To reproduce <peer method>, call …": every row against the peer's
definition written out directly (NumPy closed-form gradients or a hand-written TensorFlow
forward), since Captum and TruLens are not installed. Random draws are tmx's, so the peer's
formula is evaluated on the same draws."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tmx import attribution as A
from tmx.attribution import shap_draws

from .attribution_util import gaussian_noise

R = np.random.default_rng(23)
X = R.normal(size=(4, 3)).astype(np.float32)
X64 = X.astype(np.float64)
BASE = R.normal(size=(1, 3)).astype(np.float32) * 0.5
W1, B1 = R.normal(size=(3, 5)), R.normal(size=5) * 0.3
W2, B2 = R.normal(size=(5, 4)), R.normal(size=4) * 0.3
W3, B3 = R.normal(size=(4, 2)), R.normal(size=2) * 0.3
C = 1  # the class explained


def tanh_net() -> keras.Model:
    """x → h1 = tanh(x W1 + B1) → h2 = tanh(h1 W2 + B2) → y = h2 W3 + B3."""
    inp = keras.Input((3,))
    h = keras.layers.Dense(5, activation="tanh", name="h1")(inp)
    h = keras.layers.Dense(4, activation="tanh", name="h2")(h)
    model = keras.Model(inp, keras.layers.Dense(2, name="out")(h))
    for name, w, b in (("h1", W1, B1), ("h2", W2, B2), ("out", W3, B3)):
        model.get_layer(name).set_weights([w, b])
    return model


def h1(x):
    return np.tanh(np.asarray(x, np.float64) @ W1 + B1)


def q_of_h1(h):
    return (np.tanh(h @ W2 + B2) @ W3 + B3)[:, C]


def dq_dh1(h):
    """∂Q/∂h1 at h1 = h, (N, 5)."""
    return ((1 - np.tanh(h @ W2 + B2) ** 2) * W3[:, C]) @ W2.T


def dq_dx(x):
    """∂Q/∂x at x, (N, 3)."""
    return (dq_dh1(h1(x)) * (1 - h1(x) ** 2)) @ W1.T


def gauss_legendre(n):
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return (nodes + 1) / 2, weights / 2


# -- layer methods --------------------------------------------------------------------------------
def test_captum_layer_integrated_gradients() -> None:
    """Captum LayerIntegratedGradients(m, layer).attribute(x, baselines=b): the straight path
    in the layer's space from h(b) to h(x), times h(x) − h(b)."""
    model = tanh_net()
    alphas, weights = gauss_legendre(12)
    for baseline, b_in in (("input", np.zeros((1, 3))), (("input", BASE), BASE)):
        hx, hb = h1(X), h1(b_in)
        grads = sum(w * dq_dh1(hb + a * (hx - hb)) for a, w in zip(alphas, weights, strict=True))
        captum = grads * (hx - hb)
        got = A.attribute(
            model,
            X,
            cut="h1",
            qoi=C,
            doi="linear",
            baseline=baseline,
            steps=12,
            rule="gausslegendre",
        )
        np.testing.assert_allclose(got.values, captum, rtol=1e-4, atol=1e-6)


def test_captum_internal_influence_and_the_input_path_times_the_activation_difference() -> None:
    """Captum InternalInfluence(m, layer): the mean gradient at the layer along the *input*
    path b + α (x − b), not multiplied. tmx's attribute(cut, doi="linear", doi_cut="input")
    is that times h(x) − h(b), which is not LayerIntegratedGradients."""
    model = tanh_net()
    alphas, weights = gauss_legendre(10)
    b = BASE.astype(np.float64)
    influence = sum(w * dq_dh1(h1(b + a * (X64 - b))) for a, w in zip(alphas, weights, strict=True))
    got = A.attribute(
        model, X, cut="h1", qoi=C, doi="linear", doi_cut="input", baseline=BASE, steps=10,
        multiply_activation=False,
    )  # fmt: skip
    np.testing.assert_allclose(got.values, influence, rtol=1e-4, atol=1e-6)
    times = A.attribute(
        model, X, cut="h1", qoi=C, doi="linear", doi_cut="input", baseline=BASE, steps=10
    )
    np.testing.assert_allclose(times.values, influence * (h1(X) - h1(b)), rtol=1e-4, atol=1e-6)
    lig = A.attribute(model, X, cut="h1", qoi=C, doi="linear", baseline=("input", BASE), steps=10)
    assert np.abs(times.values - lig.values).max() > 1e-3  # two different methods


def test_captum_layer_conductance_difference_form() -> None:
    """Captum LayerConductance: Σ_k ∂Q/∂h(z(α_k)) ⊙ (h(z(α_{k+1})) − h(z(α_k))) over the
    n + 1 nodes of the rule (Gauss-Legendre by default)."""
    model = tanh_net()
    n = 16
    alphas, _ = gauss_legendre(n + 1)
    b = BASE.astype(np.float64)
    hs = [h1(b + a * (X64 - b)) for a in alphas]
    captum = sum(dq_dh1(hs[k]) * (hs[k + 1] - hs[k]) for k in range(n))
    got = A.layer_conductance(
        model, X, C, layer="h1", baseline=BASE, steps=n, derivative="difference"
    )
    np.testing.assert_allclose(got.values, captum, rtol=1e-4, atol=1e-6)


def test_captum_layer_gradient_x_activation() -> None:
    model = tanh_net()
    got = A.attribute(model, X, cut="h1", qoi=C)
    np.testing.assert_allclose(got.values, h1(X) * dq_dh1(h1(X)), rtol=1e-4, atol=1e-6)


def test_trulens_internal_influence_with_a_linear_doi() -> None:
    """TruLens InternalInfluence(m, Cut(layer), ClassQoI(c), LinearDoi(resolution=r)): the
    DoI at the cut from 0 in the cut's space (its default baseline), the gradients' mean on
    linspace(0, 1, r), times h(x) − 0."""
    model = tanh_net()
    r = 7
    hx = h1(X)
    trulens = np.mean([dq_dh1(a * hx) for a in np.linspace(0, 1, r)], axis=0) * hx
    got = A.attribute(model, X, cut="h1", qoi=C, doi="linear", rule="uniform", steps=r)
    np.testing.assert_allclose(got.values, trulens, rtol=1e-4, atol=1e-6)


# -- input methods with random draws ---------------------------------------------------------------
def test_captum_noise_tunnel_of_saliency_default() -> None:
    """Captum NoiseTunnel(Saliency(m)).attribute(x, target=c): nt_type="smoothgrad",
    nt_samples=5, stdevs=1.0, Saliency's abs=True: the mean of |∂Q/∂x| at x + ε."""
    eps = gaussian_noise((3,), np.arange(4), 5, 1.0, 0).astype(np.float64)
    captum = np.mean([np.abs(dq_dx(X64 + eps[:, s])) for s in range(5)], axis=0)
    got = A.noise_tunnel(A.saliency, tanh_net(), X, C, samples=5, noise=1.0)
    np.testing.assert_allclose(got.values, captum, rtol=1e-4, atol=1e-6)


def test_captum_noise_tunnel_of_integrated_gradients_smoothgrad_sq() -> None:
    eps = gaussian_noise((3,), np.arange(4), 3, 0.2, 0).astype(np.float64)
    alphas, weights = gauss_legendre(20)

    def ig(x):
        return x * sum(w * dq_dx(a * x) for a, w in zip(alphas, weights, strict=True))

    captum = np.mean([ig(X64 + eps[:, s]) ** 2 for s in range(3)], axis=0)
    got = A.noise_tunnel(
        A.integrated_gradients, tanh_net(), X, C, kind="smoothgrad_sq", samples=3, noise=0.2,
        steps=20,
    )  # fmt: skip
    np.testing.assert_allclose(got.values, captum, rtol=1e-4, atol=1e-7)


def test_captum_gradient_shap() -> None:
    """Captum GradientShap(m).attribute(x, baselines=B, n_samples=k, stdevs=σ): per draw a
    random baseline, x̃ = x + ε, α ~ U(0, 1), (x̃ − b) ⊙ ∂Q/∂z(b + α (x̃ − b)); the mean."""
    refs = R.normal(size=(6, 3)).astype(np.float32)
    index, alpha, eps = shap_draws(np.arange(4), 6, 5, (3,), 0.1, 0)
    out = np.zeros((4, 3))
    for s in range(5):
        b = refs.astype(np.float64)[index[:, s]]
        xt = X64 + eps[:, s]
        out += (xt - b) * dq_dx(b + alpha[:, s, None] * (xt - b)) / 5
    got = A.gradient_shap(tanh_net(), X, C, baselines=refs, samples=5, noise=0.1)
    np.testing.assert_allclose(got.values, out, rtol=1e-3, atol=1e-6)


# -- guided methods on a hand-written TensorFlow forward ----------------------------------------
@tf.custom_gradient
def guided_relu(t):
    def grad(dy):
        return tf.nn.relu(dy) * tf.cast(t > 0, dy.dtype)

    return tf.nn.relu(t), grad


def relu_conv():
    keras.utils.set_random_seed(3)
    inp = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="c")(inp)
    h = keras.layers.MaxPooling2D(2, name="p")(h)
    h = keras.layers.Dense(4, activation="relu", name="d")(keras.layers.Flatten()(h))
    return keras.Model(inp, keras.layers.Dense(2, name="out")(h))


def direct(model, x, guided: bool):
    """(∂Q/∂x, pool maps A, ∂Q/∂A) of the hand-written forward; ReLUs guided or plain."""
    (k, kb), (wd, bd), (wo, bo) = (model.get_layer(n).get_weights() for n in ("c", "d", "out"))
    relu = guided_relu if guided else tf.nn.relu
    x = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        a = tf.nn.max_pool2d(relu(tf.nn.conv2d(x, k, 1, "SAME") + kb), 2, 2, "VALID")
        tape.watch(a)
        y = relu(tf.reshape(a, (x.shape[0], -1)) @ wd + bd) @ wo + bo
        q = tf.reduce_sum(y[:, C])
    return tape.gradient(q, x).numpy(), a.numpy(), tape.gradient(q, a).numpy()


IMAGES = np.random.default_rng(4).normal(size=(3, 6, 6, 2)).astype(np.float32)


def test_captum_guided_backprop_gradcam_and_guided_gradcam() -> None:
    model = relu_conv()
    guided, _, _ = direct(model, IMAGES, guided=True)
    np.testing.assert_allclose(
        A.guided_backprop(model, IMAGES, C).values, guided, rtol=1e-4, atol=1e-6
    )
    # Captum LayerGradCam (relu_attributions=False) and GuidedGradCam (nearest upsampling)
    _, maps, grads = direct(model, IMAGES, guided=False)
    cam = (grads.mean(axis=(1, 2), keepdims=True) * maps).sum(axis=-1, keepdims=True)
    got = A.grad_cam(model, IMAGES, C, layer="p", relu=False)
    np.testing.assert_allclose(got.values, cam, rtol=1e-4, atol=1e-6)
    up = np.repeat(np.repeat(np.maximum(cam, 0), 2, axis=1), 2, axis=2)
    got = A.guided_grad_cam(model, IMAGES, C, layer="p", interpolation="nearest")
    np.testing.assert_allclose(got.values, guided * up, rtol=1e-4, atol=1e-6)


# -- metrics with Captum's perturb_func ------------------------------------------------------------
def test_captum_infidelity_and_sensitivity_with_a_perturb_func() -> None:
    """Captum infidelity(forward, perturb_func, x, Φ, target): E[(IᵀΦ − (f(x) − f(x̃)))²];
    sensitivity_max(explain, x, perturb_func): max_k ‖Φ(x̃_k) − Φ(x)‖ / ‖Φ(x)‖."""
    model = tanh_net()
    phi = A.saliency(model, X, C, absolute=False).values

    def perturb(rows, rng):
        noise = rng.uniform(-0.3, 0.3, size=rows.shape)
        return noise, rows - noise

    def f(x):
        return q_of_h1(h1(x))

    expected = np.empty(4)
    for i in range(4):
        noise = np.random.default_rng([0, i]).uniform(-0.3, 0.3, size=(8, 3))
        moved = X64[i] - noise
        expected[i] = ((noise @ phi[i] - (f(X64[i : i + 1]) - f(moved))) ** 2).mean()
    got = A.infidelity(model, X, phi, C, samples=8, perturbation=perturb)
    np.testing.assert_allclose(got.values, expected, rtol=1e-3, atol=1e-9)

    def shift(rows, radius, rng):
        return rows + rng.uniform(-radius, radius, size=rows.shape)

    sens = np.empty(4)
    for i in range(4):
        moved = X64[i] + np.random.default_rng([0, i]).uniform(-0.05, 0.05, size=(6, 3))
        d = np.linalg.norm(np.abs(dq_dx(moved)) - np.abs(dq_dx(X64[i : i + 1])), axis=1)
        sens[i] = d.max() / np.linalg.norm(np.abs(dq_dx(X64[i : i + 1])))
    got = A.sensitivity_max(A.saliency, model, X, C, radius=0.05, samples=6, perturbation=shift)
    np.testing.assert_allclose(got.values, sens, rtol=1e-3)
