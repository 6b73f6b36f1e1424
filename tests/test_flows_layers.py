"""Invertible layers, ``Flow`` and the ``flow()`` builder of ``tmx.flows`` (``flows.md``)."""

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tmx.flows import flow, mask, permutation
from tmx.flows.layers import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    Flow,
    Householder,
    Permute,
    Standardize,
)

from .flow_helpers import perturb

DIMS = (1, 5, 6, 12)
GYOZA_REFERENCE = Path(__file__).parent / "data" / "gyoza_flow_reference.npz"


def _mask_for(d):
    return np.zeros(1, dtype=int) if d == 1 else mask("checkerboard", d)


def _perturb(model, seed=0, scale=0.4):
    return perturb(model, seed, scale)


def _built(layer, d):
    layer.build((None, d))
    return layer


def _make(kind, d):
    """A built layer or flow over d units with non-trivial weights."""
    if kind == "actnorm":
        layer = _built(ActNorm("identity"), d)
    elif kind == "actnorm_data":
        layer = _built(ActNorm(), d)
    elif kind == "additive":
        layer = _built(AdditiveCoupling(_mask_for(d), hidden=(16, 16), seed=1), d)
    elif kind == "affine":
        layer = _built(AffineCoupling(_mask_for(d), hidden=(16,), seed=2), d)
    elif kind == "permute":
        layer = _built(Permute(permutation("shuffle", d, seed=3)), d)
    elif kind == "householder":
        layer = _built(Householder(3, seed=4), d)
    elif kind == "flow_additive":
        layer = flow(d, blocks=2, coupling="additive", hidden=(16,), seed=5)
    elif kind == "flow_affine":
        layer = flow(d, blocks=2, coupling="affine", hidden=(16,), seed=6)
    else:  # pragma: no cover
        raise AssertionError(kind)
    return _perturb(layer, seed=d)


def _x(d, n=4, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(0.3, 1.0, (n, d)).astype(np.float32))


def _jacobian_logdet(f, x):
    # persistent tape without pfor: D backward passes, much faster than pfor for small D
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y, _ = f(x)
    jac = tape.batch_jacobian(y, x, experimental_use_pfor=False).numpy().astype(np.float64)
    return jac, np.linalg.slogdet(jac)[1]


KINDS = [
    "actnorm",
    "actnorm_data",
    "additive",
    "affine",
    "permute",
    "householder",
    "flow_additive",
    "flow_affine",
]


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("kind", KINDS)
def test_logdet_matches_autodiff_and_inverse(kind, d):
    f = _make(kind, d)
    x = _x(d)
    f(_x(d, n=16, seed=1))  # data-initialised ActNorm sees its first batch here
    y, logdet = f(x)
    assert logdet.shape == (4,) and y.shape == (4, d)
    _, expected = _jacobian_logdet(f, x)
    np.testing.assert_allclose(logdet.numpy(), expected, atol=1e-4, rtol=0)
    x_back, logdet_inv = f.inverse(y)
    assert logdet_inv.shape == (4,)
    assert np.max(np.abs(x_back.numpy() - x.numpy())) <= 1e-5
    np.testing.assert_allclose(logdet.numpy() + logdet_inv.numpy(), 0.0, atol=1e-5)
    if kind.startswith("flow") and d > 1:
        assert np.max(np.abs(y.numpy() - x.numpy())) > 1e-2  # the weights did something


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("cls", [AdditiveCoupling, AffineCoupling])
def test_coupling_pass_through_half_is_exactly_unchanged(cls, d):
    m = mask("heaviside", d) if d > 1 else np.zeros(1, dtype=int)
    for mk in (_mask_for(d), m):
        layer = _perturb(_built(cls(mk, hidden=(8,), seed=0), d))
        x = _x(d)
        y, _ = layer(x)
        keep = mk == 1
        np.testing.assert_array_equal(y.numpy()[:, keep], x.numpy()[:, keep])
        assert np.all(np.abs(y.numpy()[:, ~keep] - x.numpy()[:, ~keep]) > 0)  # others move
        np.testing.assert_array_equal(layer.inverse(y)[0].numpy()[:, keep], x.numpy()[:, keep])


@pytest.mark.parametrize(
    ("d", "kind", "shape"),
    [(d, k, None) for d in DIMS for k in ("checkerboard", "heaviside", "reverse", "shuffle")]
    + [(12, "checkerboard", (3, 4)), (15, "checkerboard", (3, 5)), (24, "shuffle", (2, 3, 4))],
)
@pytest.mark.parametrize("coupling", ["additive", "affine"])
def test_every_dimension_transformed_within_one_block(d, kind, shape, coupling):
    # blocks=1 without ActNorm and Householder: exactly coupling → permutation → coupling
    options = {"permutation": kind, "actnorm": None, "reflections": 0, "shape": shape}
    options["standardize"] = False
    f = flow(d, blocks=1, coupling=coupling, hidden=(8,), seed=1, **options)
    assert [type(la).__name__ for la in f.flow_layers] == [
        f"{coupling.title()}Coupling",
        "Permute",
        f"{coupling.title()}Coupling",
    ]
    _perturb(f)
    p = f.flow_layers[1].indices
    # one forward pass over x and its D single-unit perturbations x + h·e_k
    x = np.random.default_rng(0).normal(0.3, 1.0, d)
    h = 1e-2
    batch = np.vstack([x, x + h * np.eye(d)]).astype(np.float32)
    y = f(batch)[0].numpy()
    # output i holds unit p[i]; none of them is a plain copy of its unit
    assert np.all(np.abs(y[0] - x[p]) > 1e-6)
    if d > 1:  # and each output responds to some other unit: it was coupled
        response = np.abs(y[1:] - y[0]).T  # [output i, perturbed unit k]
        response[np.arange(d), p] = 0.0
        assert np.all(response.max(axis=1) > 1e-5)
    x = tf.constant(batch[:1])
    # a single coupling, by contrast, leaves its pass-through half alone
    first = f.flow_layers[0]
    y1, _ = first(x)
    np.testing.assert_array_equal(y1.numpy()[:, first.mask == 1], x.numpy()[:, first.mask == 1])


def test_actnorm_data_init_standardises_and_survives_dead_units(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.5, (64, 6)).astype(np.float32)
    x[:, 2] = 0.0  # dead unit
    x[:, 4] = 3.7  # constant unit
    layer = ActNorm()
    y, logdet = layer(x)
    y = y.numpy()
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(logdet.numpy()))
    live = [0, 1, 3, 5]
    np.testing.assert_allclose(y[:, live].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y[:, live].std(axis=0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(y[:, [2, 4]], 0.0)
    log_scale = keras.ops.convert_to_numpy(layer.log_scale)
    np.testing.assert_array_equal(log_scale[[2, 4]], 0.0)
    np.testing.assert_allclose(logdet.numpy(), -log_scale.sum(), rtol=1e-6)
    # initialised once: a second batch does not re-initialise
    before = keras.ops.convert_to_numpy(layer.loc).copy()
    layer(rng.normal(-5.0, 0.1, (8, 6)).astype(np.float32))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.loc), before)
    # nor does a saved and loaded flow
    f = Flow([layer])
    f.build((None, 6))
    f.save(tmp_path / "a.keras")
    g = keras.models.load_model(tmp_path / "a.keras")
    z = rng.normal(-5.0, 0.1, (8, 6)).astype(np.float32)
    np.testing.assert_array_equal(g(z)[0].numpy(), f(z)[0].numpy())


def test_actnorm_data_init_in_graph_mode_and_batch_of_one():
    layer = ActNorm()
    x = np.random.default_rng(1).normal(2.0, 3.0, (32, 5)).astype(np.float32)
    y, _ = tf.function(layer)(tf.constant(x))
    np.testing.assert_allclose(y.numpy().mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.numpy().std(axis=0), 1.0, atol=1e-4)
    one = ActNorm()
    y1, ld1 = one(x[:1])
    assert np.all(np.isfinite(y1.numpy())) and np.all(np.isfinite(ld1.numpy()))


def test_actnorm_on_extra_axes_counts_positions():
    layer = _built(ActNorm("identity"), 3)
    layer.log_scale.assign(np.log([2.0, 0.5, 4.0]).astype(np.float32))
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32))
    _, logdet = layer(x)
    np.testing.assert_allclose(logdet.numpy(), -5 * np.log(4.0), rtol=1e-6)


def test_actnorm_identity_example_from_flows_md():
    s = np.array([2, 0.5, 1.5, 1, 0.1, 3])
    layer = _built(ActNorm("identity"), 6)
    x = _x(6)
    y, logdet = layer(x)
    np.testing.assert_array_equal(y.numpy(), x.numpy())  # identity initialisation
    layer.log_scale.assign(np.log(s).astype(np.float32))
    y, logdet = layer(x)
    np.testing.assert_allclose(logdet.numpy(), 0.798508, atol=1e-6)
    np.testing.assert_allclose(logdet.numpy(), -np.log(0.45), atol=1e-6)
    np.testing.assert_allclose(y.numpy(), x.numpy() / s, rtol=1e-6)


def test_householder_is_orthogonal_for_non_unit_vectors():
    d = 7
    layer = _built(Householder(3), d)
    rng = np.random.default_rng(0)
    v = (5.0 * rng.normal(size=(3, d))).astype(np.float32)  # far from unit norm
    layer.vectors.assign(v)
    x = _x(d)
    jac, logdet = _jacobian_logdet(layer, x)
    for j in jac:
        np.testing.assert_allclose(j.T @ j, np.eye(d), atol=1e-5)
    np.testing.assert_allclose(logdet, 0.0, atol=1e-5)
    # H_0 is applied first on the forward pass
    v64 = v.astype(np.float64)
    hs = [np.eye(d) - 2 * np.outer(u, u) / (u @ u) for u in v64]
    expected = hs[2] @ hs[1] @ hs[0]
    np.testing.assert_allclose(jac[0], expected, atol=1e-5)
    y, _ = layer(x)
    np.testing.assert_allclose(layer.inverse(y)[0].numpy(), x.numpy(), atol=1e-5)


def _assert_same(a, b, x):
    ya, la = a(x)
    yb, lb = b(x)
    np.testing.assert_array_equal(ya.numpy(), yb.numpy())
    np.testing.assert_array_equal(la.numpy(), lb.numpy())
    np.testing.assert_array_equal(a.inverse(ya)[0].numpy(), b.inverse(ya)[0].numpy())


@pytest.mark.parametrize("kind", KINDS[:6])
def test_layer_config_round_trip(kind):
    d = 6
    layer = _make(kind, d)
    x = _x(d)
    layer(x)  # initialise data ActNorm
    twin = type(layer).from_config(layer.get_config())
    twin.build((None, d))
    twin.set_weights(layer.get_weights())
    _assert_same(layer, twin, x)
    twin = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    twin.set_weights(layer.get_weights())
    _assert_same(layer, twin, x)


def test_permute_indices_survive_config_save_and_clone(tmp_path):
    p = permutation("shuffle", 9, seed=11)
    layer = Permute(p)
    np.testing.assert_array_equal(Permute.from_config(layer.get_config()).indices, p)
    f = Flow([layer])
    f.build((None, 9))
    f.save(tmp_path / "p.keras")
    g = keras.models.load_model(tmp_path / "p.keras")
    np.testing.assert_array_equal(g.flow_layers[0].indices, p)
    np.testing.assert_array_equal(keras.models.clone_model(f).flow_layers[0].indices, p)


@pytest.mark.parametrize("coupling", ["additive", "affine"])
def test_flow_save_load_config_and_clone_round_trips(tmp_path, coupling):
    d = 12
    f = flow(d, blocks=2, coupling=coupling, hidden=(16,), permutation="shuffle", seed=3)
    _perturb(f)
    x = _x(d)
    f(x)  # data-initialise the ActNorms
    f.factors = ["residual", "angle", "label"]
    f.dimensions = [6, 3, 3]
    f.unit_coords = {
        "layer": ["dense"] * d,
        "channel": list(range(d)),
        "y": [0] * d,
        "x": [0] * d,
        "unit": list(range(d)),
    }
    path = tmp_path / "flow.keras"
    f.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, Flow)
    _assert_same(f, loaded, x)
    assert loaded.factors == ["residual", "angle", "label"]
    assert loaded.dimensions == [6, 3, 3]
    assert loaded.unit_coords["channel"] == list(range(d))
    assert loaded.unit_coords["layer"] == ["dense"] * d
    for la, lb in zip(f.flow_layers, loaded.flow_layers, strict=True):
        if isinstance(la, Permute):
            np.testing.assert_array_equal(la.indices, lb.indices)
    twin = Flow.from_config(f.get_config())
    twin.build((None, d))
    twin.set_weights(f.get_weights())
    _assert_same(f, twin, x)
    assert twin.dimensions == [6, 3, 3]
    clone = keras.models.clone_model(f)
    clone.set_weights(f.get_weights())
    _assert_same(f, clone, x)
    assert clone.factors == f.factors


def test_fresh_seeded_flow_clones_identically_without_weights():
    f = flow(6, blocks=2, hidden=(8,), actnorm="identity", permutation="shuffle", seed=2)
    _assert_same(f, keras.models.clone_model(f), _x(6))


def test_user_network_round_trip(tmp_path):
    d = 6
    m = mask("checkerboard", d)
    inp = keras.Input((3,))
    out = keras.layers.Dense(6)(keras.layers.Dense(5, activation="tanh")(inp))
    layer = AffineCoupling(m, network=keras.Model(inp, out), clamp=1.5)
    f = Flow([layer, Permute(permutation("reverse", d)), AdditiveCoupling(m, hidden=())])
    f.build((None, d))
    _perturb(f)
    x = _x(d)
    f.save(tmp_path / "u.keras")
    _assert_same(f, keras.models.load_model(tmp_path / "u.keras"), x)
    clone = keras.models.clone_model(f)
    clone.set_weights(f.get_weights())
    _assert_same(f, clone, x)


def test_flow_accepts_any_invertible_layer():
    class Scale(keras.layers.Layer):
        def call(self, x):
            return 2.0 * x, tf.fill((tf.shape(x)[0],), 3 * np.log(2.0))

        def inverse(self, y):
            return y / 2.0, tf.fill((tf.shape(y)[0],), -3 * np.log(2.0))

    f = Flow([Scale(), Householder(1, seed=0)])
    x = _x(3)
    y, logdet = f(x)
    np.testing.assert_allclose(logdet.numpy(), 3 * np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(f.inverse(y)[0].numpy(), x.numpy(), atol=1e-6)


@pytest.fixture
def mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("coupling", ["additive", "affine"])
def test_mixed_float16_runs_finite(mixed_precision, coupling):
    d = 12
    f = flow(d, blocks=2, coupling=coupling, hidden=(16,), seed=0)
    _perturb(f)
    coupling_layer = next(la for la in f.flow_layers if hasattr(la, "network"))
    assert coupling_layer.network.layers[0].compute_dtype == "float16"  # networks follow policy
    assert coupling_layer.compute_dtype == "float32"  # the flow itself stays in float32
    x = 100.0 * _x(d, n=8)
    y, logdet = f(x)
    assert y.dtype == tf.float32 and logdet.dtype == tf.float32
    assert np.all(np.isfinite(y.numpy())) and np.all(np.isfinite(logdet.numpy()))
    x_back, logdet_inv = f.inverse(y)
    np.testing.assert_allclose(x_back.numpy(), x.numpy(), atol=1e-3)
    np.testing.assert_allclose(logdet.numpy() + logdet_inv.numpy(), 0.0, atol=1e-4)
    big = flow(10_000, blocks=1, coupling=coupling, hidden=(8,), seed=0)
    yb, lb = big(np.full((2, 10_000), 300.0, dtype=np.float32))  # float16 sums would overflow
    assert np.all(np.isfinite(yb.numpy())) and np.all(np.isfinite(lb.numpy()))


def test_float64_inputs_and_float64_flows():
    d = 6
    f = flow(d, blocks=1, hidden=(8,), seed=0)
    y, logdet = f(np.random.default_rng(0).normal(size=(3, d)))  # float64 in
    assert y.dtype == tf.float32 and np.all(np.isfinite(y.numpy()))
    assert f.inverse(y.numpy().astype(np.float64))[0].dtype == tf.float32
    g = Flow(
        [
            ActNorm(dtype="float64"),
            AffineCoupling(mask("checkerboard", d), hidden=(8,), dtype="float64"),
            Householder(2, dtype="float64"),
        ],
        dtype="float64",
    )
    g.build((None, d))
    _perturb(g)
    x = tf.constant(np.random.default_rng(1).normal(size=(3, d)))
    g(x)
    y, logdet = g(x)
    assert y.dtype == tf.float64 and logdet.dtype == tf.float64
    _, expected = _jacobian_logdet(g, x)
    np.testing.assert_allclose(logdet.numpy(), expected, atol=1e-10)
    np.testing.assert_allclose(g.inverse(y)[0].numpy(), x.numpy(), atol=1e-12)


def test_hundred_thousand_units_additive_flow_runs():
    d = 100_000
    f = flow(d, blocks=1, coupling="additive", hidden=(8,), seed=0)
    assert sum(int(np.prod(v.shape)) for v in f.weights) < 5 * d * 8  # no D×D anywhere
    x = _x(d, n=2)
    y, _ = f(x)
    assert y.shape == (2, d) and np.all(np.isfinite(y.numpy()))
    assert np.max(np.abs(f.inverse(y)[0].numpy() - x.numpy())) <= 1e-4


def test_flow_is_seeded():
    a = flow(12, blocks=2, hidden=(8,), permutation="shuffle", seed=3)
    b = flow(12, blocks=2, hidden=(8,), permutation="shuffle", seed=3)
    c = flow(12, blocks=2, hidden=(8,), permutation="shuffle", seed=4)
    for va, vb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(va, vb)
    assert any(
        va.shape == vc.shape and va.size > 1 and not np.array_equal(va, vc)
        for va, vc in zip(a.get_weights(), c.get_weights(), strict=True)
    )
    pa = [la.indices for la in a.flow_layers if isinstance(la, Permute)]
    pb = [la.indices for la in b.flow_layers if isinstance(la, Permute)]
    np.testing.assert_array_equal(pa, pb)
    assert not np.array_equal(pa[0], pa[1])  # a new shuffle per block


def test_default_flow_structure_and_identity_start():
    f = flow(6, blocks=2, hidden=(8,), actnorm="identity", seed=0)
    names = [type(la).__name__ for la in f.flow_layers]
    block = ["ActNorm", "AffineCoupling", "Permute", "AffineCoupling", "Householder"]
    assert names == ["Standardize"] + block * 2
    assert not f.flow_layers[0].trainable and not f.flow_layers[0].trainable_weights
    assert [type(la).__name__ for la in flow(6, standardize=False).flow_layers] == block * 8
    g = flow(6, blocks=2, hidden=(8,), actnorm="identity", reflections=0, seed=0, standardize=False)
    x = _x(6)
    p = g.flow_layers[2].indices  # an involution: two blocks permute back
    np.testing.assert_allclose(g(x)[0].numpy(), x.numpy()[:, p][:, p])
    np.testing.assert_array_equal(g(x)[1].numpy(), 0.0)


def _load_gyoza_weights(f, ref, key):
    for i, layer in enumerate(f.flow_layers):
        cls = str(ref[f"{key}_layer{i:02d}_class"])
        w = [ref[k] for k in sorted(ref.files) if k.startswith(f"{key}_layer{i:02d}_w")]
        if isinstance(layer, ActNorm):
            assert cls == "ActivationNormalization"
            layer.set_weights([w[0], np.log(w[1]), np.float32(1.0)])
        elif isinstance(layer, Householder):
            assert cls == "Reflection"
            layer.set_weights([w[0]])
        elif isinstance(layer, AdditiveCoupling):
            assert cls == "AdditiveCoupling"
            keep, move = np.flatnonzero(layer.mask == 1), np.flatnonzero(layer.mask == 0)
            # gyoza's network sees m ⊙ x (D inputs) and its outputs are used at mask-0 positions
            layer.network.set_weights([w[0][keep], w[1], w[2][:, move], w[3][move]])
        else:
            assert isinstance(layer, Permute) and cls == "CheckerBoardPermutation"
            np.testing.assert_array_equal(layer.indices, w[0])


@pytest.mark.skipif(not GYOZA_REFERENCE.exists(), reason="gyoza reference data missing")
def test_gyoza_preset_reproduces_gyoza_forward_numbers():
    ref = np.load(GYOZA_REFERENCE)
    assert str(ref["gyoza_version"]) == "0.3.0"
    for d, stages in ref["configs"]:
        d, stages, key = int(d), int(stages), f"d{d}"
        f = flow(d, blocks=stages, preset="gyoza", seed=0)
        assert len(f.flow_layers) == int(ref[f"{key}_layers"]) == 6 * stages + 1
        np.testing.assert_array_equal(f.flow_layers[2].mask, ref[f"{key}_mask"])
        np.testing.assert_array_equal(f.flow_layers[3].indices, ref[f"{key}_permutation"])
        _load_gyoza_weights(f, ref, key)
        y, logdet = f(ref[f"{key}_x"])
        np.testing.assert_allclose(y.numpy(), ref[f"{key}_y"], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(logdet.numpy(), ref[f"{key}_logdet"], atol=1e-5)
        x_back, _ = f.inverse(y)
        np.testing.assert_allclose(x_back.numpy(), ref[f"{key}_x"], atol=1e-5)


def test_gyoza_preset_architecture_and_initialisation(tmp_path):
    d = 6
    f = flow(d, blocks=2, preset="gyoza", seed=0)
    names = [type(la).__name__ for la in f.flow_layers]
    stage = ["Householder", "AdditiveCoupling", "Permute", "AdditiveCoupling", "Permute", "ActNorm"]
    assert names == ["ActNorm", *stage * 2]
    limit = np.sqrt(6 / (5 * d))
    x = _x(d)
    for layer in f.flow_layers:
        if isinstance(layer, ActNorm):
            assert layer.init == "identity"
        elif isinstance(layer, Householder):
            v = keras.ops.convert_to_numpy(layer.vectors)
            assert v.shape == (1, d)
            np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-6)
        elif isinstance(layer, AdditiveCoupling):
            np.testing.assert_array_equal(layer.mask, mask("checkerboard", d))
            k1, b1, k2, b2 = layer.network.get_weights()
            assert k1.shape == (3, 4 * d) and k2.shape == (4 * d, 3)
            for k in (k1, k2):
                assert np.all(np.abs(k) <= limit) and np.std(k) > limit / 4  # not zero-init
            np.testing.assert_array_equal(b1, 0.0)
            np.testing.assert_array_equal(b2, 0.0)
        else:
            np.testing.assert_array_equal(layer.indices, permutation("checkerboard", d))
    assert np.max(np.abs(f(x)[0].numpy() - x.numpy())) > 1e-3  # gyoza does not start at identity
    f.save(tmp_path / "gyoza.keras")
    _assert_same(f, keras.models.load_model(tmp_path / "gyoza.keras"), x)
    # seeded initialisers: a clone's fresh weights give the same map (its Householder vectors
    # are not renormalised, which the layer's own normalisation makes irrelevant)
    clone = keras.models.clone_model(f)
    np.testing.assert_allclose(clone(x)[0].numpy(), f(x)[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(f.inverse(f(x)[0])[0].numpy(), x.numpy(), atol=1e-5)
    # odd D and D = 1 build and invert too
    for n in (5, 1):
        g = flow(n, blocks=1, preset="gyoza", seed=1)
        y, logdet = g(_x(n))
        np.testing.assert_allclose(g.inverse(y)[0].numpy(), _x(n).numpy(), atol=1e-5)
        np.testing.assert_array_equal(logdet.numpy(), 0.0)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: AdditiveCoupling([0, 2, 1]), "mask"),
        (lambda: AdditiveCoupling([[0, 1]]), "mask"),
        (lambda: AdditiveCoupling([1, 1, 1]), "mask"),
        (lambda: AdditiveCoupling(["a", "b"]), "mask"),
        (lambda: AdditiveCoupling([0, 1, 0])(np.zeros((2, 4), np.float32)), "mask"),
        (lambda: AffineCoupling([0, 1], clamp=0.0), "clamp"),
        (lambda: AffineCoupling([0, 1], hidden=(0,)), "hidden"),
        (lambda: AffineCoupling([0, 1], network="dense"), "network"),
        (lambda: _built(AdditiveCoupling([0, 1], network=keras.layers.Dense(3)), 2), "network"),
        (lambda: Permute([0, 0, 1]), "indices"),
        (lambda: Permute([1, 2, 3]), "indices"),
        (lambda: Permute([0, 2, 1])(np.zeros((2, 4), np.float32)), "indices"),
        (lambda: ActNorm(init="ones"), "init"),
        (lambda: Householder(0), "reflections"),
        (lambda: Flow([object()]), "layers"),
        (lambda: Flow([Permute([0, 1])], dimensions=[1, 2]).build((None, 2)), "dimensions"),
        (lambda: Flow([Permute([0, 1])], factors=["a"], dimensions=[1, 1]), "dimensions"),
        (
            lambda: Flow([Permute([0, 1])], unit_coords={"unit": [0, 1, 2]}).build((None, 2)),
            "unit_coords",
        ),
        (lambda: flow(6, coupling="spline"), "coupling"),
        (lambda: flow(6, blocks=0), "blocks"),
        (lambda: flow(6, blocks=-2), "blocks"),
        (lambda: flow(0), "units"),
        (lambda: flow(6, hidden=(8, -1)), "hidden"),
        (lambda: flow(6, clamp=-1.0), "clamp"),
        (lambda: flow(6, reflections=-1), "reflections"),
        (lambda: flow(6, permutation="random"), "permutation"),
        (lambda: flow(6, actnorm="batch"), "actnorm"),
        (lambda: flow(6, preset="glow"), "preset"),
        (lambda: flow(6, seed=-1), "seed"),
        (lambda: flow(6, shape=(2, 2)), "shape"),
        (lambda: flow(6, preset="gyoza", coupling="affine", hidden=(8,)), "hidden"),
        (lambda: flow(6, preset="gyoza", coupling="additive"), "coupling"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        call()


@pytest.mark.parametrize("preset", [None, "gyoza"])
def test_dtype_argument_builds_float64_flows(preset):
    # keras.config.set_floatx alone does not change a dtype policy that is already set:
    # flow(..., dtype="float64") does, without touching the global policy
    d = 6
    size = {"hidden": (8,)} if preset is None else {}
    f = flow(d, blocks=1, preset=preset, seed=0, dtype="float64", **size)
    assert keras.config.dtype_policy().name == "float32"
    assert f.compute_dtype == "float64" and f.weights
    assert all(w.dtype == "float64" for w in f.weights)
    assert all(la.compute_dtype == "float64" for la in f.flow_layers)
    _perturb(f)
    x = tf.constant(np.random.default_rng(2).normal(size=(3, d)))
    f(x)  # data initialisation
    y, logdet = f(x)
    assert y.dtype == tf.float64 and logdet.dtype == tf.float64
    _, expected = _jacobian_logdet(f, x)
    np.testing.assert_allclose(logdet.numpy(), expected, atol=1e-10)
    x_back, _ = f.inverse(y)
    assert x_back.dtype == tf.float64
    np.testing.assert_allclose(x_back.numpy(), x.numpy(), atol=1e-12)
    with pytest.raises(ValueError, match="dtype"):
        flow(d, dtype="no-such-dtype")


def test_global_float64_policy_gives_float64_flows():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        f = flow(4, blocks=1, hidden=(4,), seed=0)
    finally:
        keras.config.set_dtype_policy(previous)
    assert all(w.dtype == "float64" for w in f.weights)
    assert f(np.ones((2, 4)))[0].dtype == tf.float64


def test_standardize_layer_statistics_logdet_and_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.normal(3.0, 2.0, (50, 5)) * [1e-12, 1e-12, 1.0, 1e6, 1.0]).astype(np.float32)
    x[:, 4] = 7.0  # a constant unit
    mean, std = x.astype(np.float64).mean(axis=0), x.astype(np.float64).std(axis=0)
    layer = Standardize()
    layer.set_statistics(mean, std)
    assert not layer.trainable_weights and len(layer.non_trainable_weights) == 3
    y, logdet = layer(x)
    live = std[:4]
    fill = np.sqrt(np.mean(live**2))  # the constant unit gets the live units' RMS scale
    expected = (x.astype(np.float64) - mean) / np.append(live, fill)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(y.numpy()[:, 4], 0.0)
    np.testing.assert_allclose(logdet.numpy(), -np.sum(np.log(np.append(live, fill))), rtol=1e-6)
    _, autodiff = _jacobian_logdet(layer, tf.constant(x[:3]))
    np.testing.assert_allclose(logdet.numpy()[:3], autodiff, rtol=1e-5)
    np.testing.assert_allclose(layer.inverse(y)[0].numpy(), x, rtol=1e-5)
    # set once: a later call does not re-initialise on its batch; saved with its statistics
    layer(x[:5] * 3)
    np.testing.assert_allclose(layer.loc.numpy(), mean, rtol=1e-6)
    f = Flow([layer, Householder(1, seed=0)])
    f.build((None, 5))
    f.save(tmp_path / "s.keras")
    loaded = keras.models.load_model(tmp_path / "s.keras")
    assert isinstance(loaded.flow_layers[0], Standardize)
    assert not loaded.flow_layers[0].trainable and not loaded.flow_layers[0].trainable_weights
    np.testing.assert_array_equal(loaded(x)[0].numpy(), f(x)[0].numpy())
    with pytest.raises(ValueError, match="finite"):
        Standardize().set_statistics([np.nan, 1.0], [1.0, 1.0])
