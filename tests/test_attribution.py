"""Attributions at the model input against closed forms (linear and cubic models)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
import xarray as xr

from tmx import attribution as A

from .attribution_util import gaussian_noise

RNG = np.random.default_rng(0)
W = RNG.normal(size=(5, 3)).astype(np.float32)
BIAS = np.array([0.1, -0.2, 0.3], np.float32)
X = RNG.normal(size=(7, 5)).astype(np.float32)


def linear_model() -> keras.Model:
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    model.set_weights([W, BIAS])
    return model


def cubic(z, training=False):
    """Class 0: Σ z³; class 1: Σ z²."""
    return tf.stack([tf.reduce_sum(z**3, axis=1), tf.reduce_sum(z**2, axis=1)], axis=1)


# -- quadrature ---------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", A.RULES)
def test_every_rule_sums_to_one(rule: str) -> None:
    for steps in range(1, 12):
        nodes, weights = A.quadrature(steps, rule)
        assert nodes.shape == weights.shape == (steps,)
        assert weights.sum() == pytest.approx(1.0, abs=1e-14)
        assert ((nodes >= 0) & (nodes <= 1)).all()


def test_rules_closed_forms() -> None:
    for n in range(1, 8):  # Gauss-Legendre is exact up to degree 2n - 1
        nodes, weights = A.quadrature(n, "gausslegendre")
        for d in range(2 * n):
            assert (weights * nodes**d).sum() == pytest.approx(1 / (d + 1), rel=1e-12)
    nodes, weights = A.quadrature(5, "trapezoid")
    np.testing.assert_allclose(nodes, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(weights, [0.125, 0.25, 0.25, 0.25, 0.125])
    np.testing.assert_allclose(A.quadrature(4, "riemann_left")[0], [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(A.quadrature(4, "riemann_right")[0], [0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(A.quadrature(4, "riemann_middle")[0], [0.125, 0.375, 0.625, 0.875])
    nodes, weights = A.quadrature(3, "uniform")  # netlens: closed grid, equal weights
    np.testing.assert_allclose(nodes, [0, 0.5, 1])
    np.testing.assert_allclose(weights, [1 / 3] * 3)


# -- linear model: every gradient is a row of W --------------------------------------------
def test_linear_model_closed_forms() -> None:
    model = linear_model()
    predicted = np.argmax(X @ W + BIAS, axis=1)
    sal = A.saliency(model, X)
    assert sal.dims == ("sample", "unit") and sal.name == "attribution"
    np.testing.assert_allclose(sal.values, np.abs(W[:, predicted].T), rtol=1e-6)
    signed = A.saliency(model, X, 2, absolute=False)
    np.testing.assert_allclose(signed.values, np.tile(W[:, 2], (7, 1)), rtol=1e-6)
    ixg = A.input_x_gradient(model, X, 1)
    np.testing.assert_allclose(ixg.values, X * W[:, 1], rtol=1e-5, atol=1e-7)
    per_sample = [0, 1, 2, 0, 1, 2, 0]
    got = A.saliency(model, X, per_sample, absolute=False).values
    np.testing.assert_allclose(got, W[:, per_sample].T, rtol=1e-6)
    pair = A.attribute(model, X, qoi=(0, 2), multiply_activation=False).values
    np.testing.assert_allclose(pair, np.tile(W[:, 0] - W[:, 2], (7, 1)), rtol=1e-5, atol=1e-7)
    for rule in A.RULES:
        ig = A.integrated_gradients(
            model, X, 1, baseline=X[0], steps=3, rule=rule, return_delta=True
        )
        np.testing.assert_allclose(
            ig["attribution"].values, (X - X[0]) * W[:, 1], rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(ig["delta"].values, 0.0, atol=1e-5)


# -- cubic model: the rules differ ----------------------------------------------------------------
def test_integrated_gradients_of_a_cubic() -> None:
    exact = A.integrated_gradients(cubic, X, 0, steps=2, return_delta=True)
    np.testing.assert_allclose(exact["attribution"].values, X.astype(np.float64) ** 3, rtol=1e-5)
    np.testing.assert_allclose(exact["delta"].values, 0.0, atol=1e-4)
    right = A.integrated_gradients(cubic, X, 0, steps=4, rule="riemann_right", return_delta=True)
    nodes, weights = A.quadrature(4, "riemann_right")
    expected = X.astype(np.float64) ** 3 * 3 * (weights * nodes**2).sum()
    np.testing.assert_allclose(right["attribution"].values, expected, rtol=1e-5)
    total = (X.astype(np.float64) ** 3).sum(axis=1)
    np.testing.assert_allclose(right["delta"].values, expected.sum(axis=1) - total, atol=1e-4)
    assert np.abs(right["delta"].values).max() > 0.1  # a coarse right Riemann sum is not exact


def test_max_is_chosen_at_the_input_not_along_the_path() -> None:
    def model(z, training=False):  # class 0 = z0, class 1 = 0.5: class 1 wins near the baseline
        return tf.stack([z[:, 0], 0.5 + 0.0 * z[:, 0]], axis=1)

    x = np.array([[1.0, 3.0]], np.float32)
    ig = A.integrated_gradients(model, x, None, steps=8, return_delta=True)
    np.testing.assert_allclose(ig["attribution"].values, [[1.0, 0.0]], atol=1e-6)
    assert ig.attrs["qoi"] == "max"
    np.testing.assert_allclose(ig["delta"].values, 0.0, atol=1e-6)


# -- smoothgrad ---------------------------------------------------------------------------------
def test_smoothgrad_kinds_against_direct_draws() -> None:
    sg = A.smoothgrad(cubic, X, 0, noise=0.3, samples=9, seed=4)
    eps = gaussian_noise((5,), np.arange(7), 9, 0.3, 4).astype(np.float64)
    grads = 3 * (X[:, None].astype(np.float64) + eps) ** 2
    np.testing.assert_allclose(sg.values, grads.mean(axis=1), rtol=1e-5)
    sq = A.smoothgrad(cubic, X, 0, noise=0.3, samples=9, seed=4, kind="smoothgrad_sq")
    np.testing.assert_allclose(sq.values, (grads**2).mean(axis=1), rtol=1e-5)
    var = A.smoothgrad(cubic, X, 0, noise=0.3, samples=9, seed=4, kind="vargrad")
    np.testing.assert_allclose(var.values, grads.var(axis=1), rtol=1e-4, atol=1e-6)
    assert sg.attrs["method"] == "smoothgrad" and var.attrs["method"] == "vargrad"
    lin = A.smoothgrad(linear_model(), X, 2, kind="vargrad")
    np.testing.assert_allclose(lin.values, 0.0, atol=1e-10)  # constant gradients


def test_independent_of_batch_size_and_order() -> None:
    a = A.smoothgrad(cubic, X, 0, samples=7, seed=1, batch_size=3)
    b = A.smoothgrad(cubic, X, 0, samples=7, seed=1, batch_size=64)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-6)
    c = A.integrated_gradients(cubic, X, 0, steps=11, batch_size=1)
    d = A.integrated_gradients(cubic, X, 0, steps=11, batch_size=50)
    np.testing.assert_allclose(c.values, d.values, rtol=1e-6)
    # a sample's draws depend on its position only, not on the others in the batch
    first = A.smoothgrad(cubic, X[:1], 0, samples=7, seed=1)
    np.testing.assert_allclose(first.values[0], a.values[0], rtol=1e-6)


def test_in_graph_moments_equal_the_streamed_path_and_closed_forms() -> None:
    """Whole samples per call (points made and reduced in the graph, the default) against
    the streamed path (a sample's points split over calls, batch_size < points per sample)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 6, 6, 2)).astype(np.float32)
    conv = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(3, 3, activation="tanh", padding="same"),
            keras.layers.Flatten(),
            keras.layers.Dense(4),
        ]
    )
    for qoi in ("max", (1, 2), A.channel(3)):
        fast = A.integrated_gradients(conv, x, qoi, steps=9)  # 9 rows a sample: in the graph
        slow = A.integrated_gradients(conv, x, qoi, steps=9, batch_size=1)  # streamed
        np.testing.assert_allclose(fast.values, slow.values, rtol=1e-5, atol=1e-7)
    for kind in ("smoothgrad", "smoothgrad_sq", "vargrad"):  # every kind smoothgrad takes
        fast = A.smoothgrad(conv, x, 0, samples=6, kind=kind, seed=2)
        slow = A.smoothgrad(conv, x, 0, samples=6, kind=kind, seed=2, batch_size=4)
        np.testing.assert_allclose(fast.values, slow.values, rtol=1e-5, atol=1e-7)
    fast = A.input_x_gradient(conv, x, 1)
    slow = A.input_x_gradient(conv, x, 1, batch_size=1)
    np.testing.assert_allclose(fast.values, slow.values, rtol=1e-5, atol=1e-7)
    # closed form: IG of a linear model is (x − b) ⊙ W[:, c], at every batch size and N
    base = RNG.normal(size=(1, 5)).astype(np.float32)
    for n, batch in ((1, 64), (3, 64), (7, 64), (7, 20), (7, 10)):
        ig = A.integrated_gradients(linear_model(), X[:n], 2, baseline=base, batch_size=batch)
        np.testing.assert_allclose(ig.values, (X[:n] - base) * W[:, 2], rtol=1e-5, atol=1e-6)


def test_memory_is_bounded_by_batch_size() -> None:
    seen: list[int] = []

    def model(z, training=False):
        seen.append(int(z.shape[0]))
        return cubic(z)

    A.integrated_gradients(model, X, 0, steps=500, batch_size=16)
    assert seen and max(seen) == 16


# -- inputs, outputs, custom DoI and QoI -------------------------------------------------------
def test_images_dataarray_channel_qoi_and_custom_doi() -> None:
    images = RNG.normal(size=(3, 4, 4, 2)).astype(np.float32)
    x = xr.DataArray(
        images,
        dims=("sample", "y", "x", "channel"),
        coords={"sample": [10, 11, 12], "label": ("sample", [1, 0, 1])},
    )

    def double(z, training=False):
        return 2.0 * z

    out = A.attribute(double, x, qoi=A.channel(1), multiply_activation=False)
    assert out.dims == ("sample", "y", "x", "channel")
    np.testing.assert_array_equal(out["label"].values, [1, 0, 1])
    np.testing.assert_array_equal(out["sample"].values, [10, 11, 12])
    expected = np.zeros(images.shape)
    expected[..., 1] = 2.0
    np.testing.assert_allclose(out.values, expected)
    mean = A.attribute(double, x, qoi=A.channel(1, "mean"), multiply_activation=False)
    np.testing.assert_allclose(mean.values, expected / 16)

    def doi(xi, positions):  # two points, x and 0, equal weights
        return np.concatenate([xi, np.zeros_like(xi)]), np.array([0.5, 0.5])

    custom = A.attribute(cubic, X, qoi=0, doi=doi, multiply_activation=False)
    np.testing.assert_allclose(custom.values, 1.5 * X.astype(np.float64) ** 2, rtol=1e-5)
    assert custom.attrs["doi"] == "custom"
    fn = A.attribute(cubic, X, qoi=lambda y: y[:, 1], multiply_activation=False)
    np.testing.assert_allclose(fn.values, 2 * X, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"qoi": "min"}, ValueError, "qoi"),
        ({"qoi": (0, 1, 2)}, ValueError, "pair"),
        ({"qoi": [0, 1]}, ValueError, "one class per sample"),
        ({"doi": "uniform"}, ValueError, "doi"),
        ({"doi": "linear", "rule": "simpson"}, ValueError, "rule"),
        ({"doi": "linear", "steps": 0}, ValueError, "steps"),
        ({"doi": "linear", "baseline": np.zeros((2, 5))}, ValueError, "baseline"),
        ({"return_delta": True}, ValueError, "linear"),
        ({"seed": -1, "doi": "gaussian"}, ValueError, "seed"),
        ({"noise": -0.1, "doi": "gaussian"}, ValueError, "noise"),
        ({"cut": "nope"}, ValueError, "nope"),
        ({"doi_cut": "dense"}, ValueError, "doi_cut"),
    ],
)
def test_bad_arguments(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        A.attribute(linear_model(), X, **kwargs)


# -- layer cuts: a linear graph with a shared tensor, a skip path and a nested model --------
R = np.random.default_rng(7)
W1, W2, W3, WS = (R.normal(size=s).astype(np.float32) for s in [(4, 3), (3, 2), (3, 2), (4, 2)])
B1 = R.normal(size=3).astype(np.float32)
XC = R.normal(size=(6, 4)).astype(np.float32)


def cut_model() -> keras.Model:
    inp = keras.Input((4,))
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d1")], name="inner")
    h = inner(inp)
    a = keras.layers.Dense(2, use_bias=False, name="d2")(h)
    b = keras.layers.Dense(2, use_bias=False, name="d3")(h)
    skip = keras.layers.Dense(2, use_bias=False, name="skip")(inp)
    out = keras.layers.Add(name="out")([a, b, skip])
    model = keras.Model(inp, out)
    inner.get_layer("d1").set_weights([W1, B1])
    model.get_layer("d2").set_weights([W2])
    model.get_layer("d3").set_weights([W3])
    model.get_layer("skip").set_weights([WS])
    return model


def test_rewire_reproduces_the_model_and_replaces_the_cut() -> None:
    from tmx.inspect import rewire

    model = cut_model()
    head, tail = rewire(model, ("inner", "d1"))
    h = np.asarray(head(XC))
    np.testing.assert_allclose(h, XC @ W1 + B1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(tail([XC, h])), np.asarray(model(XC)), atol=1e-5)
    z = R.normal(size=h.shape).astype(np.float32)  # the cut replaced, the skip path still sees x
    np.testing.assert_allclose(
        np.asarray(tail([XC, z])), z @ (W2 + W3) + XC @ WS, rtol=1e-5, atol=1e-5
    )


def test_cut_inside_a_nested_model_and_at_one_call_input() -> None:
    model = cut_model()
    h = XC @ W1 + B1
    at_cut = A.attribute(model, XC, cut=("inner", "d1"), qoi=1)
    assert at_cut.dims == ("sample", "unit") and at_cut.attrs["cut"] == "inner/d1"
    np.testing.assert_allclose(at_cut.values, h * (W2 + W3)[:, 1], rtol=1e-4, atol=1e-5)
    # the input of d2 only: the path through d3 is not the cut's
    d2_in = A.attribute(model, XC, cut={"name": "d2", "link": "input"}, qoi=1)
    np.testing.assert_allclose(d2_in.values, h * W2[:, 1], rtol=1e-4, atol=1e-5)


def test_integrated_gradients_at_a_cut_along_the_cut_or_the_input_path() -> None:
    model = cut_model()
    h = (XC @ W1 + B1).astype(np.float64)
    grad = (W2 + W3)[:, 0].astype(np.float64)
    along_cut = A.attribute(
        model, XC, cut=("inner", "d1"), qoi=0, doi="linear", steps=3, return_delta=True
    )
    np.testing.assert_allclose(along_cut["attribution"].values, h * grad, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(along_cut["delta"].values, 0.0, atol=1e-4)
    along_input = A.attribute(
        model,
        XC,
        cut=("inner", "d1"),
        qoi=0,
        doi="linear",
        doi_cut="input",
        steps=3,
        return_delta=True,
    )
    expected = (XC @ W1).astype(np.float64) * grad  # h(x) - h(0): the bias cancels
    np.testing.assert_allclose(along_input["attribution"].values, expected, rtol=1e-4, atol=1e-5)
    # completeness misses what flows around the cut (the skip path)
    np.testing.assert_allclose(along_input["delta"].values, -(XC @ WS)[:, 0], atol=1e-4)
    assert along_input.attrs["doi_cut"] == "input"


def test_doi_at_a_layer_upstream_of_the_cut() -> None:
    model = cut_model()
    h1 = (XC @ W1 + B1).astype(np.float64)
    res = A.attribute(
        model,
        XC,
        cut="d2",
        qoi=0,
        doi="linear",
        doi_cut=("inner", "d1"),
        steps=4,
        return_delta=True,
    )
    # ∂out_0/∂d2 = e_0 and d2(d1 = 0) = 0: attribution = e_0 ⊙ h1 W2
    expected = np.stack([h1 @ W2[:, 0], np.zeros(6)], axis=1)
    np.testing.assert_allclose(res["attribution"].values, expected, rtol=1e-4, atol=1e-5)
    # Q(x) − Q(d1 = 0) = h1 (W2 + W3)[:, 0]: the path through d3 bypasses the cut
    np.testing.assert_allclose(res["delta"].values, -(h1 @ W3[:, 0]), rtol=1e-4, atol=1e-4)
    assert res.attrs["doi_cut"] == "inner/d1"
    same = A.attribute(model, XC, cut="d2", qoi=0, doi="linear", doi_cut="d2", steps=4)
    plain = A.attribute(model, XC, cut="d2", qoi=0, doi="linear", steps=4)
    np.testing.assert_array_equal(same.values, plain.values)
    with pytest.raises(ValueError, match="doi_cut 'd2' must lie upstream of the cut 'inner/d1'"):
        A.attribute(model, XC, cut=("inner", "d1"), qoi=0, doi_cut="d2")
    with pytest.raises(ValueError, match=r"doi_cut: .*nope"):
        A.attribute(model, XC, cut="d2", qoi=0, doi_cut="nope")


def test_qoi_at_an_internal_layer() -> None:
    model = cut_model()
    out = A.attribute(model, XC, qoi=1, qoi_cut="d2", multiply_activation=False)
    np.testing.assert_allclose(out.values, np.tile(W1 @ W2[:, 1], (6, 1)), rtol=1e-4, atol=1e-5)


# -- explanations over transformations ------------------------------------------------------------
def test_over_transforms_gives_a_cube_that_measures_and_invert_accept() -> None:
    import tmx
    from tmx import transforms as T

    def energy(z, training=False):  # Σ z² per image: invariant to quarter turns and flips
        total = tf.reduce_sum(z**2, axis=[1, 2, 3])
        return tf.stack([total, -total], axis=1)

    images = np.random.default_rng(2).normal(size=(4, 5, 5, 2)).astype(np.float32)
    tset = T.rot90([0, 1, 2, 3])
    cube = A.over_transforms(A.saliency, energy, images, tset, target=0)
    assert cube.dims == ("sample", "transformation", "unit") and cube.shape == (4, 4, 50)
    assert set(cube["layer"].values) == {"attribution"}
    np.testing.assert_array_equal(cube["channel"].values[:3], [0, 1, 0])
    for j in range(4):  # each slice is the method on the transformed inputs
        direct = A.saliency(energy, T.apply(tset, images, j), 0).values.reshape(4, -1)
        np.testing.assert_allclose(cube.values[:, j], direct, rtol=1e-6)
    # saliency |2x| follows the rotation exactly: zero same-equivariance, nonzero variance
    tv_inverted = tmx.transformation_variance(tmx.invert(cube))
    np.testing.assert_allclose(tv_inverted.values, 0.0, atol=1e-6)
    assert tmx.transformation_variance(cube).values.max() > 0.1
    ig = A.over_transforms(A.attribute, energy, images, tset, target=0, doi="linear", steps=2)
    np.testing.assert_allclose(tmx.transformation_variance(tmx.invert(ig)).values, 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="TransformationSet"):
        A.over_transforms(A.saliency, energy, images, [0, 1])


# -- reproducing Captum and netlens (docs/attribution.md, "Reproducing Captum and TruLens") -----
def _captum_riemann(method: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Captum 0.9's approximation_methods, from their definitions: riemann alphas on a grid,
    step sizes 1/n (the trapezoid halves the two end steps, so they sum to 1 - 1/n), and
    Gauss-Legendre nodes and weights mapped from [-1, 1] to [0, 1]."""
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return 0.5 * (nodes + 1), 0.5 * weights
    steps = np.full(n, 1.0 / n)
    alphas = {
        "riemann_left": np.linspace(0, 1 - 1 / n, n),
        "riemann_right": np.linspace(1 / n, 1, n),
        "riemann_middle": np.linspace(1 / (2 * n), 1 - 1 / (2 * n), n),
        "riemann_trapezoid": np.linspace(0, 1, n),
    }[method]
    if method == "riemann_trapezoid":
        steps[[0, -1]] /= 2
    return alphas, steps


@pytest.mark.parametrize(
    ("method", "rule"),
    [
        ("gausslegendre", "gausslegendre"),
        ("riemann_left", "riemann_left"),
        ("riemann_right", "riemann_right"),
        ("riemann_middle", "riemann_middle"),
        ("riemann_trapezoid", "trapezoid"),
    ],
)
def test_integrated_gradients_reproduce_captum(method: str, rule: str) -> None:
    """Captum's IntegratedGradients(method=...) on Σ z³ with a zero baseline:
    x_i Σ_k w_k 3 (α_k x_i)². tmx's rules sum to 1, so Captum's trapezoid is tmx's times
    (n − 1) / n; the other rules are the same."""
    n = 6
    alphas, steps = _captum_riemann(method, n)
    x64 = X.astype(np.float64)
    captum = 3 * x64**3 * np.sum(steps * alphas**2)
    got = A.integrated_gradients(cubic, X, 0, steps=n, rule=rule).values.astype(np.float64)
    if method == "riemann_trapezoid":
        got = got * (n - 1) / n
        assert np.sum(steps) == pytest.approx(1 - 1 / n)
    np.testing.assert_allclose(got, captum, rtol=1e-5, atol=1e-7)


def test_integrated_gradients_reproduce_netlens_uniform_grid() -> None:
    """netlens / TruLens-Explain's IG: the mean of the gradients on linspace(0, 1, resolution),
    times (x − b): rule="uniform"."""
    n = 5
    x64 = X.astype(np.float64)
    base = np.full_like(x64, 0.25)
    alphas = np.linspace(0, 1, n)
    grads = [3 * (base + a * (x64 - base)) ** 2 for a in alphas]  # ∂Σz³/∂z on the grid
    netlens = (x64 - base) * np.mean(grads, axis=0)
    got = A.integrated_gradients(
        cubic, X, 0, baseline=base.astype(np.float32), steps=n, rule="uniform"
    )
    np.testing.assert_allclose(got.values, netlens, rtol=1e-5, atol=1e-6)


# -- calling conventions: tf.function, progress, several outputs -------------------------------
@pytest.mark.parametrize(
    "call",
    [
        lambda m, x: A.integrated_gradients(m, x, steps=4),
        lambda m, x: A.attribute(m, x),
        lambda m, x: A.smoothgrad(m, x, samples=2),
        lambda m, x: A.saliency(m, x),
    ],
)
def test_attributions_refuse_tf_function_clearly(call) -> None:
    model = linear_model()

    @tf.function
    def traced(x):
        return call(model, x)

    with pytest.raises(RuntimeError, match=r"run eagerly.*outside tf\.function"):
        traced(tf.constant(X))
    # outside it, the same call works: ∂Q/∂x of a linear model is the chosen class's column
    out = call(model, X)
    assert out.shape == X.shape


def test_progress_bar_when_asked_and_quiet_under_pytest(capsys) -> None:
    import re

    model = linear_model()
    # 7 samples × 4 steps = 28 rows in calls of at most 8 rows: a bar over several calls, to
    # its end
    ig = A.integrated_gradients(model, X, 0, steps=4, batch_size=8, progress=True)
    shown = capsys.readouterr().out
    done = re.findall(r"(\d+)/(\d+)", re.sub(r"\x1b\[[0-9;]*m", "", shown))
    assert "/batch" in shown and done[-1][0] == done[-1][1] and int(done[-1][1]) >= 4
    # linear model: IG is exactly (x − 0) ⊙ W[:, 0] whatever the batching
    np.testing.assert_allclose(ig.values, X * W[:, 0], rtol=1e-5)
    A.smoothgrad(model, X, samples=3, batch_size=8, progress=True)
    assert "/batch" in capsys.readouterr().out
    A.integrated_gradients(model, X, steps=4, batch_size=8)
    A.attribute(model, X)
    assert capsys.readouterr().out == ""
    for bad in ("yes", 1):
        with pytest.raises(ValueError, match="progress must be"):
            A.integrated_gradients(model, X, progress=bad)


def test_shortcuts_on_a_two_output_model_suggest_what_they_accept() -> None:
    inp = keras.Input((5,))
    hidden = keras.layers.Dense(4, name="hidden")(inp)
    model = keras.Model(inp, [keras.layers.Dense(3, name="main")(hidden), hidden])
    with pytest.raises(ValueError, match=r"has 2 \('main', 'hidden'\): pass a callable target"):
        A.integrated_gradients(model, X, steps=4)
    with pytest.raises(ValueError, match="explains one output") as err:
        A.integrated_gradients(model, X, steps=4, cut="hidden")
    assert "qoi_cut" not in str(err.value) and "callable target" not in str(err.value)
    # a callable target picks the output: the gradient of main's class 1 is its kernel path
    picked = A.saliency(model, X, target=lambda ys: ys[0][:, 1], absolute=False)
    head = keras.Model(inp, model.outputs[0])
    expected = A.saliency(head, X, target=1, absolute=False)
    np.testing.assert_allclose(picked.values, expected.values, rtol=1e-6)
