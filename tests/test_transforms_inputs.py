"""Transformations of inputs that are not images: tables, sequences, token ids.

Every value is checked against numpy (the transformed inputs) or a direct model call (the
activations); NV against a numpy computation of TV / SV.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import tmx
from tmx import transforms as T

N, F, L, C, VOCAB = 16, 8, 12, 2, 20


# -- data and models, built here --------------------------------------------------------------
def table(n=N, seed=0):
    return np.random.default_rng(seed).normal(size=(n, F)).astype(np.float32)


def sequences(n=N, seed=1):
    return np.random.default_rng(seed).normal(size=(n, L, C)).astype(np.float32)


def tokens(n=N, seed=2):
    return np.random.default_rng(seed).integers(1, VOCAB, size=(n, L)).astype(np.int32)


def _seeded(seed):
    import keras

    keras.utils.set_random_seed(seed)
    return keras


def mlp():
    keras = _seeded(0)
    inp = keras.Input((F,))
    h = keras.layers.Dense(6, activation="tanh", name="hidden")(inp)
    return keras.Model(inp, keras.layers.Dense(3, name="out")(h), name="mlp")


def conv1d():
    keras = _seeded(1)
    inp = keras.Input((L, C))
    h = keras.layers.Conv1D(4, 3, padding="same", activation="tanh", name="conv")(inp)
    out = keras.layers.Dense(2, name="out")(keras.layers.GlobalAveragePooling1D(name="pool")(h))
    return keras.Model(inp, out, name="conv1d")


def embedding():
    keras = _seeded(2)
    inp = keras.Input((L,), dtype="int32")
    e = keras.layers.Embedding(VOCAB, 4, name="emb")(inp)
    out = keras.layers.Dense(3, name="out")(keras.layers.GlobalAveragePooling1D(name="pool")(e))
    return keras.Model(inp, out, name="embedding")


def direct(model, layers, x):
    """Every recorded unit of ``layers`` for inputs ``x``, by a plain Keras call: (n, units)."""
    import keras

    probe = keras.Model(model.inputs[0], [model.get_layer(name).output for name in layers])
    outs = probe(x, training=False)
    outs = outs if isinstance(outs, list | tuple) else [outs]
    return np.concatenate([np.asarray(o).reshape(len(x), -1) for o in outs], axis=1)


def numpy_nv(a):
    """NV per unit of a (samples, transformations, units) array: std over T, over N (ddof 1)."""
    tv = a.std(axis=1, ddof=1).mean(axis=0)
    sv = a.std(axis=0, ddof=1).mean(axis=0)
    return tv, sv


def check_cube(model, x, tset, layers, transformed):
    """The cube equals model(transformed[j]) for every j, and its NV equals numpy's."""
    cube = tmx.activations(model, x, tset, layers=layers, batch_size=20)
    values = cube.values
    expected = np.stack([direct(model, layers, xt) for xt in transformed], axis=1)
    assert values.shape == expected.shape == (len(x), len(tset), expected.shape[2])
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)
    nv = tmx.normalized_variance(cube).values
    tv, sv = numpy_nv(expected.astype(np.float64))
    ok = sv > 1e-4
    assert ok.sum() > expected.shape[2] // 2
    np.testing.assert_allclose(nv[ok], (tv / sv)[ok], rtol=1e-3)
    assert np.all(tv[ok] > 0)  # the transformations did change the activations
    return cube


# -- tables (N, features) -----------------------------------------------------------------------
def shift_first(x, d):
    import tensorflow as tf

    return x + d * tf.one_hot(0, tf.shape(x)[1], dtype=x.dtype)


def test_photometric_noise_and_custom_on_a_table_equal_numpy():
    x = table()
    np.testing.assert_allclose(T.apply(T.brightness([1.0, -0.5]), x, 1), -0.5 * x, rtol=1e-6)
    mean = x.mean(axis=1, keepdims=True)  # a table's contrast: about each sample's mean
    np.testing.assert_allclose(T.apply(T.contrast(3.0), x, 0), mean + 3 * (x - mean), atol=1e-5)
    out = T.apply(T.custom(shift_first, {"d": [2.5]}), x, 0)
    np.testing.assert_allclose(out, x + 2.5 * (np.arange(F) == 0), rtol=1e-6)
    noise = T.gaussian_noise([0.0, 0.5], seed=4)
    np.testing.assert_array_equal(T.apply(noise, x, 0), x)
    big = table(2000, seed=5)
    eps = (T.apply(noise, big, 1) - big) / 0.5
    assert abs(eps.mean()) < 0.01 and abs(eps.std() - 1.0) < 0.01
    # per sample, not per batch: the noise of sample i does not depend on the batch it is in
    halves = np.concatenate(
        [T.apply(noise, x[:5], 1), T.apply(noise, x[5:], 1, sample_index=np.arange(5, N))]
    )
    np.testing.assert_array_equal(halves, T.apply(noise, x, 1))
    # float64 tables stay float64
    assert T.apply(T.brightness(2.0), x.astype(np.float64), 0).dtype == np.float64


def test_cube_of_a_table_model_equals_direct_calls():
    x = table()
    tset = T.union(
        T.brightness([1.0, 0.5, 2.0]),
        T.gaussian_noise([0.3], seed=3),
        T.custom(shift_first, {"d": [1.0, -2.0]}),
    )
    transformed = [
        x,
        0.5 * x,
        2.0 * x,
        T.apply(tset, x, 3),  # noise of sample i under j: keyed by (seed, j, i) alone
        x + (np.arange(F) == 0),
        x - 2 * (np.arange(F) == 0),
    ]
    assert np.abs(transformed[3] - x).mean() == pytest.approx(0.3 * np.sqrt(2 / np.pi), rel=0.2)
    check_cube(mlp(), x, tset, ["hidden", "out"], transformed)


# -- sequences (N, L, C) ------------------------------------------------------------------------
def test_roll_and_flip_along_named_axes_equal_numpy():
    x = sequences()
    for axis, np_axis in [("time", 1), ("length", 1), ("channel", 2), (1, 1), (-1, 2), (2, 2)]:
        tset = T.roll([0, 3, -5], axis=axis)
        for j, s in enumerate([0, 3, -5]):
            np.testing.assert_array_equal(T.apply(tset, x, j), np.roll(x, s, axis=np_axis))
        flipped = T.apply(T.flip(axis=["none", axis]), x, 1)
        np.testing.assert_array_equal(flipped, np.flip(x, axis=np_axis))
    np.testing.assert_array_equal(T.apply(T.flip(axis="none"), x, 0), x)
    # the same sets on a table (axis 1 = features) and on token ids (ints stay ints)
    np.testing.assert_array_equal(T.apply(T.roll(2, axis=1), table(), 0), np.roll(table(), 2, 1))
    out = T.apply(T.flip(axis="time"), tokens(), 0)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, tokens()[:, ::-1])
    # contrast of a sequence: about each sample's mean over time, per channel
    mean = x.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(T.apply(T.contrast(0.5), x, 0), mean + 0.5 * (x - mean), atol=1e-6)
    # apply_many stacks K transformations after the sample axis, for any rank
    many = T.apply_many(T.roll([1, 2], axis="time"), x)
    assert many.shape == (N, 2, L, C)
    np.testing.assert_array_equal(many[:, 1], np.roll(x, 2, axis=1))


def test_cube_of_a_conv1d_model_under_rolls_in_time_equals_direct_calls():
    x = sequences()
    shifts = [0, 1, 4, -3]
    tset = T.union(T.roll(shifts, axis="time"), T.flip(axis="time"), T.contrast(0.5))
    mean = x.mean(axis=1, keepdims=True)
    transformed = [np.roll(x, s, axis=1) for s in shifts] + [x[:, ::-1], mean + 0.5 * (x - mean)]
    cube = check_cube(conv1d(), x, tset, ["conv", "out"], transformed)
    np.testing.assert_array_equal(cube["shift"].values, [0, 1, 4, -3, 0, 0])
    conv = cube.sel(unit=cube.layer == "conv")
    np.testing.assert_array_equal(np.unique(conv["x"].values), np.arange(L))  # time positions


# -- token ids (N, L) ---------------------------------------------------------------------------
def token_dropout(x, rate):
    """Replace by 0 the tokens whose (token, position) hash falls below ``rate`` (deterministic)."""
    import tensorflow as tf

    positions = tf.range(tf.shape(x)[1], dtype=x.dtype)[None, :]
    u = tf.cast(tf.math.floormod(x * 37 + positions * 11, 100), tf.float32) / 100.0
    return tf.where(u >= rate, x, tf.zeros_like(x))


def numpy_dropout(tok, rate):
    u = ((tok.astype(np.int64) * 37 + np.arange(tok.shape[1]) * 11) % 100) / 100.0
    return np.where(u >= rate, tok, 0).astype(tok.dtype)


def test_custom_on_token_ids_keeps_integers():
    tok = tokens()
    seen = []

    def spy(x, rate):
        seen.append(x.dtype)
        return token_dropout(x, rate)

    tset = T.custom(spy, {"rate": [0.0, 0.5]})
    for dtype in (np.int32, np.int64):
        for j, rate in enumerate([0.0, 0.5]):
            out = T.apply(tset, tok.astype(dtype), j)
            assert out.dtype == dtype
            np.testing.assert_array_equal(out, numpy_dropout(tok.astype(dtype), rate))
    assert seen and all(d.is_integer for d in seen)  # never cast to float on the way
    assert 0 < (T.apply(tset, tok, 1) == 0).mean() < 1
    # float-only transformations refuse integer ids instead of casting them
    for bad in (T.brightness(2.0), T.contrast(0.5), T.gaussian_noise(0.1)):
        with pytest.raises(ValueError, match=r"needs floating inputs; x has dtype int32"):
            T.apply(bad, tok, 0)
    assert T.check_input(tset, (None, L), "int64") == np.dtype("int64")
    assert T.check_input(T.brightness(2.0), (None, 4, 4, 1), "uint8") == np.dtype("float32")


def test_cube_of_an_embedding_model_with_token_dropout_equals_direct_calls():
    tok = tokens()
    seen = []

    def spy(x, rate):
        seen.append(x.dtype)
        return token_dropout(x, rate)

    rates = [0.0, 0.3, 0.6]
    tset = T.custom(spy, {"rate": rates}, name="token_dropout")
    transformed = [numpy_dropout(tok, r) for r in rates]
    cube = check_cube(embedding(), tok, tset, ["pool", "out"], transformed)
    assert seen and all(d.is_integer for d in seen)  # the model received token ids, not floats
    np.testing.assert_allclose(cube["rate"].values, rates)
    assert list(cube.transform.values) == [f"token_dropout(rate={r:g})" for r in rates]


# -- refusals -------------------------------------------------------------------------------------
GEOMETRIC = [
    (T.rotation(30), "rotation(30)"),
    (T.translation(2, 0), "translation(2, 0)"),
    (T.translation(0.1, 0, relative=True), "translation(0.1w, 0h)"),
    (T.scale(1.5), "scale(1.5)"),
    (T.shear(10), "shear_x(10)"),
    (T.rot90(1), "rot90(1)"),
    (T.flip("x"), "flip(x)"),
    (T.roll(2, "x"), "roll(2, 0)"),
]


@pytest.mark.parametrize("tset,label", GEOMETRIC, ids=[g[1] for g in GEOMETRIC])
@pytest.mark.parametrize("shape", [(N, F), (N, L, C)], ids=["table", "sequence"])
def test_geometric_transformations_of_images_refuse_other_inputs(tset, label, shape):
    x = np.zeros(shape, np.float32)
    pattern = (
        re.escape(label) + r" is a geometric transformation of images and needs a rank-4 NHWC "
        r"batch .* x has shape " + re.escape(str(shape))
    )
    with pytest.raises(ValueError, match=pattern):
        T.apply(tset, x, 0)
    with pytest.raises(ValueError, match=pattern):
        T.check_input(T.union(T.brightness(2.0), tset), shape)
    assert tset.needs_images
    T.check_input(tset, (N, 8, 8, 1))  # images are fine


def test_axis_out_of_range_and_bad_axis_names_are_refused():
    assert not T.union(T.roll(1, axis="time"), T.brightness(2.0), T.flip(axis=-1)).needs_images
    with pytest.raises(ValueError, match=r"roll\(1, axis=2\): axis 2 is not an axis of x"):
        T.apply(T.roll(1, axis=2), table(), 0)
    with pytest.raises(ValueError, match=r"axis -3 is not an axis of x, which has shape \(16, 8\)"):
        T.apply(T.flip(axis=-3), table(), 0)
    with pytest.raises(ValueError, match="axis must be one of"):
        T.roll(1, axis=0)
    with pytest.raises(ValueError, match="axis must be one of"):
        T.flip(axis="z")
    with pytest.raises(ValueError, match="use flip\\(axis='time'\\)"):
        T.flip("time")
    with pytest.raises(ValueError, match="either axes"):
        T.flip("x", axis="time")
    with pytest.raises(ValueError, match="sample axis first"):
        T.apply(T.brightness(2.0), np.zeros(5, np.float32), 0)
    bad = T.custom(lambda x, a: x[:, :3], {"a": [1]})
    with pytest.raises(ValueError, match=r"input's shape \(16, 8\)"):
        T.apply(bad, table(), 0)


def test_cube_refuses_a_rotation_of_a_table_naming_both():
    with pytest.raises(ValueError, match=r"rotation\(30\) is a geometric .* \(16, 8\)"):
        tmx.activations(mlp(), table(), T.rotation(30))


# -- sets as data ---------------------------------------------------------------------------------
def test_axis_sets_have_coordinates_labels_and_round_trip_through_json():
    rolls = T.roll([0, 2, -1], axis="time")
    assert rolls.labels == ("roll(0, axis=1)", "roll(2, axis=1)", "roll(-1, axis=1)")
    assert rolls.parameters["shift"].attrs["units"] == "steps"
    flips = T.flip(axis=["none", "time", "channel"])
    np.testing.assert_array_equal(flips.parameters["flip_axis"].values, [0, 1, -1])
    assert flips.labels == ("flip(none)", "flip(axis=1)", "flip(axis=-1)")
    assert T.roll(1, axis="length") == T.roll(1, axis=1) != T.roll(1, axis="channel")
    assert T.roll(1, axis="time") != T.roll(1, axis="y")  # a sequence roll is not an image roll
    combos = [
        rolls,
        flips,
        T.product(rolls, T.roll([0, 1], axis="channel"), T.brightness([1.0, 2.0])),
        T.union(T.roll(3, axis=-1), T.flip(axis="time"), T.gaussian_noise(0.1, seed=2)),
    ]
    x = sequences(3)
    for tset in combos:
        back = T.from_dict(tset.to_json())
        assert back == tset and back.labels == tset.labels
        for j in range(len(tset)):
            np.testing.assert_array_equal(T.apply(back, x, j), T.apply(tset, x, j))
    prod = combos[2]
    assert {"shift_1", "shift_2", "factor"} <= set(prod.names)
    spec = json_spec(T.roll(1, axis="time"))
    spec["elements"][0][0]["options"]["axis"] = 0
    with pytest.raises(ValueError, match="invalid roll along axis 0"):
        T.from_dict(spec)
    spec["elements"][0][0]["options"]["axis"] = "time"
    with pytest.raises(ValueError, match="must be an int"):
        T.from_dict(spec)


def json_spec(tset):
    import json

    return json.loads(tset.to_json())


def test_invert_undoes_rolls_and_flips_in_time_on_sequence_maps():
    rng = np.random.default_rng(9)
    fmap = rng.normal(size=(2, 6, 5)).astype(np.float32)  # (B, l, c) of an input of length 12
    rolls = T.roll([4, -2], axis="time")
    np.testing.assert_array_equal(
        T.invert_maps(rolls, fmap, 0, input_size=12), np.roll(fmap, -2, 1)
    )
    np.testing.assert_array_equal(T.invert_maps(rolls, fmap, 1, input_size=12), np.roll(fmap, 1, 1))
    with pytest.raises(ValueError, match="input_size"):
        T.invert_maps(rolls, fmap, 0)
    with pytest.raises(ValueError, match="not a whole"):
        T.invert_maps(T.roll(3, axis="time"), fmap, 0, input_size=12)
    np.testing.assert_array_equal(T.invert_maps(T.flip(axis="time"), fmap, 0), fmap[:, ::-1])
    with pytest.raises(ValueError, match="the last axis holds its channels"):
        T.invert_maps(T.flip(axis="channel"), fmap, 0)
    # at the input's own resolution, invert(apply) is the identity
    x = sequences(2)
    tset = T.product(T.roll([0, 5], axis="time"), T.flip(axis=["none", "time"]))
    for j in range(len(tset)):
        np.testing.assert_array_equal(T.invert_maps(tset, T.apply(tset, x, j), j, input_size=L), x)


def test_docstring_examples_run():
    """The examples in the docstrings of every public name of ``tmx.transforms``."""
    import doctest

    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for name in T.__all__:
        for test in finder.find(getattr(T, name), name, globs={}):
            runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 10 and result.failed == 0
