"""Tests for tmx.inspect: finding layers, endpoints, exposing tensors, biases and structure."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tmx import inspect as ti

L = keras.layers
RTOL = 1e-6
ATOL = 1e-6


def _x(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _randomize(model, seed=1):
    """Give every weight (biases and BN statistics included) non-trivial values."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights and not isinstance(layer, keras.Model):
            new = [rng.uniform(0.5, 1.5, w.shape).astype(w.dtype) for w in weights]
            layer.set_weights(new)
    return model


def conv_net():
    x = keras.Input((8, 8, 1), name="img")
    h = L.Conv2D(4, 3, name="conv_a")(x)
    h = L.BatchNormalization(name="bn_a")(h)
    h = L.ReLU(name="relu_a")(h)
    h = L.Conv2D(6, 3, use_bias=False, name="conv_b")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    h = L.Dense(5, name="fc")(h)
    h = L.Dense(3, name="logits")(h)
    y = L.Activation("softmax", name="probs")(h)
    return keras.Model(x, y, name="convnet")


def nested_net():
    """Functional model holding a functional sub-model "base" and a Sequential "head"."""
    bx = keras.Input((8, 8, 1), name="base_in")
    bh = L.Conv2D(3, 3, name="conv_in")(bx)
    bh = L.BatchNormalization(name="bn_in")(bh)
    base = keras.Model(bx, L.ReLU(name="act_in")(bh), name="base")
    head = keras.Sequential(
        [keras.Input((3,)), L.Dense(4, name="hidden"), L.Dense(2, name="out")], name="head"
    )
    x = keras.Input((8, 8, 1), name="img")
    h = base(x)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    y = head(h)
    model = keras.Model(x, y, name="outer")
    _randomize(base, 2)
    _randomize(head, 3)
    return model, base, head


def shared_net():
    x = keras.Input((4,), name="x")
    shared = L.Dense(3, name="shared")
    a = shared(x)
    b = shared(L.Dense(4, name="pre")(x))
    y = L.Add(name="add")([a, b])
    return keras.Model(x, y, name="siamese"), shared


# ------------------------------------------------------------------------------------------
# Finding layers
# ------------------------------------------------------------------------------------------


def test_find_layer_by_name_index_class_and_attribute():
    m = conv_net()
    assert ti.find_layer(m, "fc") is m.get_layer("fc")
    assert ti.find_layer(m, index=0) is m.get_layer("img")
    assert ti.find_layer(m, index=1) is m.get_layer("conv_a")
    assert ti.find_layer(m, index=-1) is m.get_layer("probs")
    assert ti.find_layer(m, cls=L.Conv2D) is m.get_layer("conv_b")
    assert ti.find_layer(m, cls="Conv2D") is m.get_layer("conv_b")
    assert ti.find_layer(m, cls="Conv2D", reverse=False) is m.get_layer("conv_a")
    assert ti.find_layer(m, has="kernel") is m.get_layer("logits")
    assert ti.find_layer(m, has="kernel", reverse=False) is m.get_layer("conv_a")
    # criteria combine with AND; a base-class name matches subclasses
    assert ti.find_layer(m, cls="Dense", has="kernel", reverse=False) is m.get_layer("fc")
    assert ti.find_layer(m, cls="BaseConv") is m.get_layer("conv_b")
    # use_bias=False leaves bias None, so has="bias" excludes conv_b
    assert ti.find_layers(m, cls="Conv2D", has="bias") == [m.get_layer("conv_a")]
    assert [x.name for x in ti.find_layers(m, cls=(L.Conv2D, "Dense"))] == [
        "conv_a",
        "conv_b",
        "fc",
        "logits",
    ]
    assert ti.find_layers(m, cls="LSTM") == []
    with pytest.raises(ValueError, match="index"):
        ti.find_layer(m, "fc", index=1)  # both criteria must hold


def test_find_layer_errors_list_valid_names():
    m = conv_net()
    with pytest.raises(ValueError) as info:
        ti.find_layer(m, "fcc")
    msg = str(info.value)
    assert "'fcc'" in msg and "conv_a" in msg and "logits" in msg and "did you mean 'fc'" in msg
    with pytest.raises(ValueError, match="out of range"):
        ti.find_layer(m, index=42)
    with pytest.raises(ValueError, match=r"cls='LSTM'.*classes present: InputLayer, Conv2D"):
        ti.find_layer(m, cls="LSTM")
    with pytest.raises(ValueError, match="cls must be"):
        ti.find_layer(m, cls=3)
    with pytest.raises(ValueError, match=r"keras\.Model"):
        ti.find_layer("model.keras", "fc")


def test_long_name_lists_are_truncated():
    x = keras.Input((2,))
    h = x
    for i in range(60):
        h = L.Dense(2, name=f"d{i}")(h)
    m = keras.Model(x, h)
    with pytest.raises(ValueError) as info:
        ti.resolve(m, "nope")
    msg = str(info.value)
    assert "d0" in msg and "d59" in msg and "d30," not in msg and "61 in all" in msg


def test_find_layer_nested():
    m, base, head = nested_net()
    conv_in = base.get_layer("conv_in")
    assert ti.find_layer(m, "conv_in") is conv_in
    assert ti.find_layer(m, "base/conv_in") is conv_in
    assert ti.find_layer(m, ("head", "out")) is head.get_layer("out")
    assert ti.find_layer(m, cls="Conv2D") is conv_in  # depth-first search reaches inside
    assert ti.find_layer(m, has="kernel") is head.get_layer("out")
    assert ti.find_layer(m, has="kernel", reverse=False) is conv_in
    assert ti.layer_names(m) == [
        "img",
        "base",
        "base/base_in",
        "base/conv_in",
        "base/bn_in",
        "base/act_in",
        "gap",
        "head",
        f"head/{head._functional.layers[0].name}",  # the Sequential's own InputLayer
        "head/hidden",
        "head/out",
    ]
    with pytest.raises(ValueError, match="base/conv_in"):
        ti.find_layer(m, "base/nope")


def test_logits_layer_with_and_without_trailing_softmax():
    m = conv_net()  # Dense -> Activation("softmax")
    assert ti.logits_layer(m) is m.get_layer("logits")
    x = keras.Input((4,))
    h = L.Dense(6, activation="relu", name="hid")(x)
    y = L.Dense(3, activation="softmax", name="cls")(L.Dropout(0.5)(h))
    fused = keras.Model(x, y)
    assert ti.logits_layer(fused) is fused.get_layer("cls")
    seq = keras.Sequential([keras.Input((4,)), L.Dense(2, name="z"), L.Softmax(name="p")])
    assert ti.logits_layer(seq) is seq.get_layer("z")
    m2, _, head = nested_net()  # logits inside a nested Sequential
    assert ti.logits_layer(m2) is head.get_layer("out")
    nothing = keras.Model(x, L.Softmax()(x))
    with pytest.raises(ValueError, match="no layer with a kernel"):
        ti.logits_layer(nothing)


def test_last_pooling_layer():
    assert ti.last_pooling_layer(conv_net()).name == "gap"
    x = keras.Input((8, 8, 1))
    h = L.GlobalMaxPooling2D(name="gmp")(L.Conv2D(2, 3)(x))
    flat = L.Flatten(name="flat")(L.Conv2D(2, 3)(x))
    m = keras.Model(x, [L.Dense(2)(h), L.Dense(2)(flat)])
    assert ti.last_pooling_layer(m).name == "flat"
    with pytest.raises(ValueError, match="no GlobalAveragePooling"):
        ti.last_pooling_layer(keras.Model(x, L.Conv2D(2, 3)(x)))


# ------------------------------------------------------------------------------------------
# resolve / expose
# ------------------------------------------------------------------------------------------


def _dense_np(layer, x):
    w, b = (np.asarray(v, dtype=np.float64) for v in layer.get_weights())
    return x @ w + b


def test_expose_sequential_equals_manual_computation():
    m = keras.Sequential(
        [keras.Input((4,)), L.Dense(5, name="d1"), L.ReLU(name="relu"), L.Dense(3, name="d2")],
        name="seq",
    )
    _randomize(m)
    m.get_layer("d1").set_weights([_x((4, 5), 7), _x((5,), 8)])  # mixed signs so that relu matters
    x = _x((6, 4))
    eps = ti.resolve(m, ["d1", "relu", -1, {"name": "d2", "link": "input"}])
    assert [e.name for e in eps] == ["d1", "relu", "d2", "d2:input"]
    assert [e.shape for e in eps] == [(5,), (5,), (3,), (5,)]
    assert [e.link for e in eps] == ["output", "output", "output", "input"]
    assert eps[0].layer is m.get_layer("d1") and eps[0].path == ("d1",) and eps[0].call == 0
    exposed = ti.expose(m, ["d1", "relu", -1, {"name": "d2", "link": "input"}])
    assert isinstance(exposed.outputs, list) and len(exposed.outputs) == 4
    out = exposed.predict(x, verbose=0)
    h1 = _dense_np(m.get_layer("d1"), x.astype(np.float64))
    r = np.maximum(h1, 0)
    y = _dense_np(m.get_layer("d2"), r)
    assert (h1 < 0).any() and (h1 > 0).any()
    for got, want in zip(out, [h1, r, y, r], strict=True):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    single = ti.expose(m, "relu")
    assert len(single.outputs) == 1
    np.testing.assert_allclose(single.predict(x, verbose=0), r, rtol=RTOL, atol=ATOL)


def test_expose_sequential_built_on_data_accepts_any_batch():
    m = keras.Sequential([L.Dense(3, name="a"), L.Dense(2, name="b")])
    with pytest.raises(ValueError, match=r"not built.*call it once"):
        ti.expose(m, ["a"])
    m(_x((5, 4)))  # builds with a fixed batch of 5
    x = _x((2, 4), 3)
    out = ti.expose(m, ["a"]).predict(x, verbose=0)
    np.testing.assert_allclose(
        out, _dense_np(m.get_layer("a"), x.astype(np.float64)), rtol=RTOL, atol=ATOL
    )


def test_link_input_and_multi_input_index():
    m, shared = shared_net()
    _randomize(m)
    x = _x((3, 4))
    eps = ti.resolve(
        m, [{"name": "add", "link": "input"}, {"name": "add", "link": "input", "index": 1}]
    )
    assert [e.name for e in eps] == ["add:input", "add:input[1]"]
    a, b = ti.expose(m, eps).predict(x, verbose=0)
    xd = x.astype(np.float64)
    np.testing.assert_allclose(a, _dense_np(shared, xd), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        b, _dense_np(shared, _dense_np(m.get_layer("pre"), xd)), rtol=RTOL, atol=ATOL
    )
    with pytest.raises(ValueError, match="index 2 is out of range"):
        ti.resolve(m, {"name": "add", "link": "input", "index": 2})
    with pytest.raises(ValueError, match="no input link"):
        ti.resolve(m, {"name": "x", "link": "input"})
    # the model input itself is an endpoint (index 0 is the InputLayer)
    np.testing.assert_allclose(ti.expose(m, 0).predict(x, verbose=0), x)


def test_shared_layer_calls():
    m, shared = shared_net()
    _randomize(m)
    with pytest.raises(ValueError) as info:
        ti.resolve(m, "shared")
    assert "called 2 times" in str(info.value) and "'call'" in str(info.value)
    eps = ti.resolve(m, [{"name": "shared", "call": 0}, {"layer": shared, "call": 1}])
    assert [e.name for e in eps] == ["shared", "shared#1"]
    assert [e.call for e in eps] == [0, 1]
    x = _x((3, 4))
    c0, c1 = ti.expose(m, eps).predict(x, verbose=0)
    xd = x.astype(np.float64)
    np.testing.assert_allclose(c0, _dense_np(shared, xd), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        c1, _dense_np(shared, _dense_np(m.get_layer("pre"), xd)), rtol=RTOL, atol=ATOL
    )
    assert not np.allclose(c0, c1)
    with pytest.raises(ValueError, match="call 2 is out of range"):
        ti.resolve(m, {"name": "shared", "call": 2})
    assert ti.default_endpoints(m) == [
        "pre",
        {"name": "shared", "call": 0},
        {"name": "shared", "call": 1},
        "add",
    ]
    assert ti.structure(m)["calls"].sel(layer="shared").item() == 2


def test_expose_nested_submodel_layers():
    m, base, head = nested_net()
    x = _x((2, 8, 8, 1))
    descs = [("base", "conv_in"), "base/bn_in", "act_in", ("head", "hidden"), "head/out"]
    eps = ti.resolve(m, descs)
    assert [e.name for e in eps] == [
        "base/conv_in",
        "base/bn_in",
        "base/act_in",
        "head/hidden",
        "head/out",
    ]
    assert eps[0].path == ("base", "conv_in") and eps[0].layer is base.get_layer("conv_in")
    assert eps[0].shape == (6, 6, 3) and eps[3].shape == (4,)
    # a path may mix names and indices into each level's layers (base.layers[2] is bn_in)
    assert ti.resolve(m, ("base", 2))[0].name == "base/bn_in"
    with pytest.raises(ValueError, match="both name 'base/bn_in'"):
        ti.expose(m, [*descs, ("base", 2)])
    exposed = ti.expose(m, [*descs, -1])
    got = exposed.predict(x, verbose=0)
    # by hand: call the inner layers one by one
    c = base.get_layer("conv_in")(x)
    bn = base.get_layer("bn_in")(c, training=False)
    act = base.get_layer("act_in")(bn)
    pooled = keras.ops.mean(act, axis=(1, 2))
    hid = head.get_layer("hidden")(pooled)
    out = head.get_layer("out")(hid)
    want = [c, bn, act, hid, out, m(x)]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, keras.ops.convert_to_numpy(w), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[-1], m.predict(x, verbose=0), rtol=RTOL, atol=ATOL)
    # the original model still works and its graph is unchanged
    assert [lyr.name for lyr in m.layers] == ["img", "base", "gap", "head"]
    assert ti.default_endpoints(m) == ["base", "gap", "head"]


@pytest.mark.parametrize("flag", [True, False])
def test_training_flag_of_a_nested_call_reaches_inner_layers(flag):
    bx = keras.Input((4,))
    base = keras.Model(bx, L.BatchNormalization(name="bn")(bx), name="sub")
    base.get_layer("bn").set_weights(
        [np.full(4, 2.0), np.full(4, 0.5), np.full(4, 3.0), np.full(4, 4.0)]
    )
    x = keras.Input((4,))
    m = keras.Model(x, L.Dense(2, name="top")(base(x, training=flag)))
    data = _x((8, 4))
    exposed = ti.expose(m, ["sub/bn", -1])
    inference = 2.0 * (data - 3.0) / np.sqrt(4.0 + 1e-3) + 0.5
    batch = (data - data.mean(0)) / np.sqrt(data.var(0) + 1e-3) * 2.0 + 0.5
    # predict passes training=False, which overrides the nested call's flag (Keras 3); this
    # comes first because running in training mode updates the moving statistics
    np.testing.assert_allclose(exposed.predict(data, verbose=0)[0], inference, rtol=1e-5, atol=1e-5)
    bn, out = exposed(data)
    # called without training=, sub(x, training=True) keeps its BN in training mode (batch
    # statistics) in both models
    np.testing.assert_allclose(bn, batch if flag else inference, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out, m(data), rtol=RTOL, atol=ATOL)
    # an explicit training= on the outer call overrides it, in both models alike
    for outer in (True, False):
        np.testing.assert_allclose(
            exposed(data, training=outer)[1], m(data, training=outer), rtol=RTOL, atol=ATOL
        )


def test_bare_inner_name_ambiguity_and_bad_descriptors():
    def sub(name):
        i = keras.Input((3,))
        return keras.Model(i, L.Dense(3, name="dense")(i), name=name)

    x = keras.Input((3,))
    m = keras.Model(x, sub("s2")(sub("s1")(x)))
    with pytest.raises(ValueError, match=r"ambiguous.*s1/dense.*s2/dense"):
        ti.resolve(m, "dense")
    assert ti.resolve(m, "s2/dense")[0].path == ("s2", "dense")
    with pytest.raises(ValueError, match="exactly one of 'name' or 'layer'"):
        ti.resolve(m, {"name": "s1", "layer": "s2"})
    with pytest.raises(ValueError, match="unknown keys"):
        ti.resolve(m, {"name": "s1", "lnk": "input"})
    with pytest.raises(ValueError, match="link must be one of"):
        ti.resolve(m, {"name": "s1", "link": "inputs"})
    with pytest.raises(ValueError, match="call must be a non-negative int"):
        ti.resolve(m, {"name": "s1", "call": -1})
    with pytest.raises(ValueError, match="endpoint must be"):
        ti.resolve(m, 1.5)
    with pytest.raises(ValueError, match="must not be empty"):
        ti.resolve(m, [])
    with pytest.raises(ValueError, match="not part of the graph"):
        ti.resolve(m, L.Dense(2))
    with pytest.raises(ValueError, match="no layer named 'nope' in 's1'"):
        ti.resolve(m, ("s1", "nope"))
    # Endpoint objects are descriptors too
    ep = ti.resolve(m, {"name": ("s1", "dense"), "link": "input"})[0]
    assert ti.resolve(m, ep) == [ep]


def test_expose_from_keras_file(tmp_path):
    m = conv_net()
    _randomize(m)
    path = tmp_path / "convnet.keras"
    m.save(path)
    x = _x((2, 8, 8, 1))
    want = ti.expose(m, ["relu_a", "fc"]).predict(x, verbose=0)
    got = ti.expose(str(path), ["relu_a", "fc"]).predict(x, verbose=0)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)
    assert [e.name for e in ti.resolve(path, ["fc"])] == ["fc"]
    assert list(ti.structure(path)["layer"].values) == list(ti.structure(m)["layer"].values)
    with pytest.raises(ValueError, match="does not exist"):
        ti.expose(tmp_path / "missing.keras", ["fc"])
    with pytest.raises(ValueError, match=r"'\.keras' file"):
        ti.expose(tmp_path / "convnet.h5", ["fc"])


def test_lambda_model_needs_safe_mode_false(tmp_path):
    x = keras.Input((4,))
    y = L.Dense(2, name="d")(L.Lambda(lambda t: t * 2.0, name="double")(x))
    m = keras.Model(x, y)
    path = tmp_path / "lam.keras"
    m.save(path)
    with pytest.raises(ValueError):
        ti.load_model(path)
    with pytest.raises(ValueError):
        ti.expose(path, ["double"])
    loaded = ti.load_model(path, safe_mode=False)
    data = _x((3, 4))
    out = ti.expose(path, ["double"], safe_mode=False).predict(data, verbose=0)
    np.testing.assert_allclose(out, 2.0 * data, rtol=RTOL)
    np.testing.assert_allclose(
        loaded.predict(data, verbose=0), m.predict(data, verbose=0), rtol=RTOL, atol=ATOL
    )


class _Sub(keras.Model):
    def __init__(self):
        super().__init__(name="sub")
        self.d = L.Dense(2, name="dd")

    def call(self, x):
        return self.d(x) * 2.0


def test_subclassed_model_is_traced_into_its_layers():
    m = _Sub()
    data = _x((3, 4))
    m(data)
    # -1 is still the model's output, here computed by a keras.ops call after the layer
    (ep,) = ti.resolve(m, -1)
    assert ep.name == "multiply" and ep.shape == (2,)
    assert ti.resolve(m, ep) == [ep]
    np.testing.assert_allclose(ti.expose(m, -1).predict(data, verbose=0), m(data), rtol=RTOL)
    np.testing.assert_allclose(
        ti.expose(m, "dd").predict(data, verbose=0), m.d(data), rtol=RTOL, atol=ATOL
    )
    assert ti.default_endpoints(m) == ["dd", "multiply"]
    assert ti.find_layer(m, has="kernel") is m.d
    with pytest.raises(ValueError, match="call it once"):
        ti.expose(_Sub(), -1)


def test_default_endpoints_skip_inputs():
    m = conv_net()
    assert ti.default_endpoints(m) == [
        "conv_a",
        "bn_a",
        "relu_a",
        "conv_b",
        "gap",
        "fc",
        "logits",
        "probs",
    ]
    eps = ti.resolve(m, ti.default_endpoints(m))
    assert eps[0].shape == (6, 6, 4) and eps[-1].shape == (3,)


# ------------------------------------------------------------------------------------------
# biases
# ------------------------------------------------------------------------------------------


def _bn_weights(n, seed):
    rng = np.random.default_rng(seed)
    gamma = rng.uniform(0.5, 2.0, n)
    beta = rng.normal(size=n)
    mean = rng.normal(size=n)
    var = rng.uniform(0.1, 3.0, n)
    return gamma, beta, mean, var


def _stored(layer):
    """The layer's weights as stored (float32), in float64."""
    return [np.asarray(w, dtype=np.float64) for w in layer.get_weights()]


def test_dense_batchnorm_folding_closed_form():
    x = keras.Input((4,))
    h = L.Dense(3, name="d")(x)
    y = L.BatchNormalization(epsilon=1e-2, name="bn")(h)
    m = keras.Model(x, y)
    gamma, beta, mean, var = _bn_weights(3, 0)
    m.get_layer("bn").set_weights([gamma, beta, mean, var])
    m.get_layer("d").set_weights([_x((4, 3), 1), _x((3,), 2)])
    gamma, beta, mean, var = _stored(m.get_layer("bn"))
    b = _stored(m.get_layer("d"))[1]
    folded = ti.biases(m)
    assert list(folded) == ["d"]
    np.testing.assert_allclose(
        folded["d"], gamma * (b - mean) / np.sqrt(var + 1e-2) + beta, rtol=1e-12
    )
    # the folded bias really is the model's offset: output at x = 0
    np.testing.assert_allclose(m.predict(np.zeros((1, 4)), verbose=0)[0], folded["d"], rtol=1e-5)
    plain = ti.biases(m, fold=False)
    assert list(plain) == ["d", "bn"]
    np.testing.assert_allclose(plain["d"], b, rtol=1e-12)
    np.testing.assert_allclose(plain["bn"], beta - gamma * mean / np.sqrt(var + 1e-2), rtol=1e-12)


def test_center_and_scale_flags_are_respected():
    x = keras.Input((4,))
    y = L.BatchNormalization(epsilon=1e-2, center=False, scale=False, name="bn")(
        L.Dense(3, name="d")(x)
    )
    m = keras.Model(x, y)
    _, _, mean, var = _bn_weights(3, 4)
    m.get_layer("bn").set_weights([mean, var])
    b = _x((3,), 5)
    m.get_layer("d").set_weights([_x((4, 3), 6), b])
    np.testing.assert_allclose(ti.biases(m)["d"], (b - mean) / np.sqrt(var + 1e-2), rtol=1e-6)


def test_conv_without_bias_then_batchnorm_matches_manual_convolution():
    x = keras.Input((6, 6, 2))
    y = L.BatchNormalization(epsilon=1e-2, name="bn")(L.Conv2D(3, 3, use_bias=False, name="c")(x))
    m = keras.Model(x, y)
    gamma, beta, mean, var = _bn_weights(3, 7)
    m.get_layer("bn").set_weights([gamma, beta, mean, var])
    kernel = _x((3, 3, 2, 3), 8)
    m.get_layer("c").set_weights([kernel])
    gamma, beta, mean, var = _stored(m.get_layer("bn"))
    folded = ti.biases(m)
    assert list(folded) == ["c"]
    np.testing.assert_allclose(folded["c"], beta - gamma * mean / np.sqrt(var + 1e-2), rtol=1e-12)
    data = _x((2, 6, 6, 2), 9).astype(np.float64)
    scale = gamma / np.sqrt(var + 1e-2)
    windows = np.lib.stride_tricks.sliding_window_view(data, (3, 3), axis=(1, 2))
    conv = np.einsum("bhwcij,ijco->bhwo", windows, kernel.astype(np.float64) * scale)
    want = conv + folded["c"]
    np.testing.assert_allclose(
        m.predict(data.astype("float32"), verbose=0), want, rtol=1e-5, atol=1e-5
    )


def test_batchnorm_not_folded_after_activation_or_fanout():
    x = keras.Input((4,))
    h = L.Dense(3, activation="relu", name="d_relu")(x)
    y1 = L.BatchNormalization(name="bn1")(h)
    g = L.Dense(3, name="d_fan")(x)
    y2 = L.BatchNormalization(name="bn2")(g)
    m = keras.Model(x, [y1, y2, g])  # d_fan's output also leaves the model
    _randomize(m, 11)
    out = ti.biases(m)
    assert list(out) == ["d_relu", "d_fan", "bn1", "bn2"]  # graph order, nothing folded
    bn1 = m.get_layer("bn1")
    gamma, beta, mean, var = (np.asarray(v, np.float64) for v in bn1.get_weights())
    np.testing.assert_allclose(
        out["bn1"], beta - gamma * mean / np.sqrt(var + bn1.epsilon), rtol=1e-6
    )
    np.testing.assert_allclose(out["d_relu"], m.get_layer("d_relu").get_weights()[1], rtol=1e-6)


def test_layernorm_offset_is_beta_and_nested_keys():
    x = keras.Input((5,))
    ln = L.LayerNormalization(name="ln")
    ln_nc = L.LayerNormalization(center=False, name="ln_nc")
    m = keras.Model(x, ln_nc(ln(x)))
    beta = _x((5,), 3)
    ln.set_weights([np.ones(5), beta])
    out = ti.biases(m)
    np.testing.assert_allclose(out["ln"], beta, rtol=1e-7)
    np.testing.assert_array_equal(out["ln_nc"], np.zeros(5))
    nested, _, head = nested_net()
    keys = list(ti.biases(nested))
    assert keys == ["base/conv_in", "head/hidden", "head/out"]
    nb = ti.biases(nested, fold=False)
    assert list(nb) == ["base/conv_in", "base/bn_in", "head/hidden", "head/out"]
    np.testing.assert_allclose(nb["head/out"], head.get_layer("out").get_weights()[1], rtol=1e-7)


# ------------------------------------------------------------------------------------------
# structure
# ------------------------------------------------------------------------------------------


def test_structure_exact_table():
    x = keras.Input((8, 8, 1), name="img")
    h = L.Conv2D(4, 3, name="conv")(x)
    h = L.MaxPooling2D(2, name="pool")(h)
    h = L.Reshape((9, 4), name="seq")(h)
    h = L.Flatten(name="flat")(h)
    y = L.Dense(5, name="fc")(h)
    m = keras.Model(x, y)
    s = ti.structure(m)
    assert s.sizes == {"layer": 5}
    assert list(s["layer"].values) == ["conv", "pool", "seq", "flat", "fc"]
    assert list(s["class_name"].values) == ["Conv2D", "MaxPooling2D", "Reshape", "Flatten", "Dense"]
    assert list(s["output_shape"].values) == ["(6, 6, 4)", "(3, 3, 4)", "(9, 4)", "(36,)", "(5,)"]
    assert s["units"].values.tolist() == [144, 36, 36, 36, 5]
    assert s["channels"].values.tolist() == [4, 4, 4, 36, 5]
    assert s["spatial"].values.tolist() == [True, True, False, False, False]
    assert s["calls"].values.tolist() == [1, 1, 1, 1, 1]
    assert s["params"].values.tolist() == [40, 0, 0, 0, 185]
    assert s["units"].dtype == np.int64 and s["spatial"].dtype == bool


def test_structure_nested_and_multi_output():
    m, _, _ = nested_net()
    s = ti.structure(m)
    assert list(s["layer"].values) == [
        "base",
        "base/conv_in",
        "base/bn_in",
        "base/act_in",
        "gap",
        "head",
        "head/hidden",
        "head/out",
    ]
    assert list(s["class_name"].values)[:2] == ["Functional", "Conv2D"]
    assert s["output_shape"].sel(layer="base/bn_in").item() == "(6, 6, 3)"
    assert s["params"].sel(layer="base").item() == 30 + 12
    x = keras.Input((4, 2))
    parts = keras.layers.Lambda(lambda t: [t[:, :2], t[:, 2:]], name="split")(x)
    m2 = keras.Model(x, L.Concatenate(name="cat")(parts))
    s2 = ti.structure(m2)
    assert s2["output_shape"].sel(layer="split").item() == "multiple"
    assert s2["units"].sel(layer="split").item() == -1
    assert s2["output_shape"].sel(layer="cat").item() == "(2, 4)"


def test_descriptor_list_takes_one_descriptor_or_many():
    """One name is one descriptor (never its letters); tuples and dicts are one descriptor;
    lists, arrays and other iterables are many."""
    layer = L.Dense(2)
    assert ti.descriptor_list("conv1") == ["conv1"]
    assert ti.descriptor_list(b"conv1") == ["conv1"]
    assert ti.descriptor_list(("outer", "inner")) == [("outer", "inner")]
    assert ti.descriptor_list({"name": "a", "call": 1}) == [{"name": "a", "call": 1}]
    assert ti.descriptor_list(-1) == [-1]
    assert ti.descriptor_list(layer) == [layer]
    assert ti.descriptor_list(["a", "b"]) == ["a", "b"]
    assert ti.descriptor_list(np.array(["a", "b"])) == ["a", "b"]
    assert ti.descriptor_list(n for n in ("a", "b")) == ["a", "b"]
    x = keras.Input((3,))
    m = keras.Model(x, L.Dense(2, name="out")(L.Dense(4, name="hidden")(x)))
    assert [e.name for e in ti.resolve(m, "hidden")] == ["hidden"]
    assert [e.name for e in ti.resolve(m, np.array(["hidden", "out"]))] == ["hidden", "out"]
    assert len(ti.expose(m, "hidden").outputs) == 1
