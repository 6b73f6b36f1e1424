"""evaluate and analyze: accuracy under transformations, measures beside accuracy."""

from __future__ import annotations

import logging

import keras
import numpy as np
import pytest
import xarray as xr

import tmx
from tmx import transforms as T


def rot90_invariant_model(channels: int = 3, classes: int = 4) -> keras.Model:
    """Global average pooling then a dense layer: exactly invariant to quarter turns."""
    inp = keras.Input((6, 6, channels))
    h = keras.layers.GlobalAveragePooling2D(name="gap")(inp)
    out = keras.layers.Dense(classes, name="logits")(h)
    model = keras.Model(inp, out, name="gap_model")
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape) for w in model.get_weights()])
    return model


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 6, 6, 3)).astype(np.float32)
    y = rng.integers(0, 4, size=40)
    return x, y


def test_evaluate_matches_a_direct_computation_and_is_rot90_invariant(data):
    x, y = data
    model = rot90_invariant_model()
    tset = T.rot90([0, 1, 2, 3])
    result = tmx.evaluate(model, x, y, tset)
    assert result.accuracy.dims == ("transformation",)
    assert list(result.k.values) == [0, 1, 2, 3]
    direct = np.asarray(model(x))
    expected = (direct.argmax(1) == y).mean()
    np.testing.assert_allclose(result.accuracy.values, expected)  # equal under all four
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, direct)
    np.testing.assert_allclose(result.loss.values, float(loss), rtol=1e-5)
    assert result.attrs["from_logits"] == 1 and type(result.attrs["from_logits"]) is int
    shifted = tmx.evaluate(model, x, y, T.translation([0, 3], 0))
    assert shifted.accuracy.values[0] == pytest.approx(expected)
    assert shifted.accuracy.values[1] != pytest.approx(expected)  # not translation invariant


def test_evaluate_probabilities_and_one_hot(data):
    x, y = data
    base = rot90_invariant_model()
    probs = keras.Model(base.inputs, keras.layers.Softmax(name="softmax")(base.output))
    result = tmx.evaluate(probs, x, np.eye(4)[y])
    assert result.attrs["from_logits"] == 0 and type(result.attrs["from_logits"]) is int
    p = np.asarray(probs([x]))
    np.testing.assert_allclose(result.loss.values, -np.log(p[np.arange(40), y]).mean(), rtol=1e-5)
    with pytest.raises(ValueError, match="y must hold"):
        tmx.evaluate(probs, x, y[:5])
    with pytest.raises(ValueError, match="classes outside"):
        tmx.evaluate(probs, x, y + 10)


def small_cnn():
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv")(inp)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(3, name="logits")(h)
    model = keras.Model(inp, out, name="cnn")
    rng = np.random.default_rng(2)
    model.set_weights([rng.normal(size=w.shape) for w in model.get_weights()])
    return model


def test_analyze_is_pure_and_matches_its_parts():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(24, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 3, size=24)
    model = small_cnn()
    groups = {"rotation": T.rotation([0, 90, 180, 270]), "shift": T.translation([0, 1, 2], 0)}
    first = tmx.analyze(model, x, y, groups, layers=["conv", "gap"])
    second = tmx.analyze(model, x, y, groups, layers=["conv", "gap"])
    xr.testing.assert_identical(first, second)  # the seed's Analyzer alternated TV/SV here
    assert list(first.group.values) == ["rotation", "shift"]
    assert list(first.layer.values) == ["conv", "gap"]
    assert first.measure.dims == ("group", "layer")
    for name, tset in groups.items():
        cube = tmx.activations(model, x, tset, layers=["conv", "gap"])
        # default: the layer's Σ TV / Σ SV, jackknifed, with the plain unit mean beside it
        parts = tmx.normalized_variance(cube, parts=True, bias_correction="jackknife")
        per_layer = tmx.by_layer(parts, reduce="ratio_of_means")
        np.testing.assert_allclose(first.measure.sel(group=name), per_layer, rtol=1e-10)
        unit_mean = tmx.by_layer(tmx.normalized_variance(cube))
        np.testing.assert_allclose(first.unit_mean.sel(group=name), unit_mean, rtol=1e-10)
        np.testing.assert_array_equal(first.inactive.sel(group=name), unit_mean.inactive)
        everything = parts.assign_coords(layer=("unit", np.full(parts.sizes["unit"], "all")))
        overall = tmx.by_layer(everything, reduce="ratio_of_means")
        np.testing.assert_allclose(first.overall.sel(group=name), overall[0], rtol=1e-10)
        acc = tmx.evaluate(model, x, y, tset).accuracy.mean()
        np.testing.assert_allclose(first.accuracy.sel(group=name), acc)
    assert first.attrs["measure"] == "normalized_variance"
    assert "jackknife" in first.measure.attrs["long_name"]
    assert "moves with" in first.unit_mean.attrs["long_name"]
    plain = tmx.analyze(model, x, y, groups, layers=["conv", "gap"], reduce="mean")
    cube = tmx.activations(model, x, groups["shift"], layers=["conv", "gap"])
    np.testing.assert_allclose(
        plain.measure.sel(group="shift"), tmx.by_layer(tmx.normalized_variance(cube)), rtol=1e-10
    )
    assert "unit_mean" not in plain
    single = tmx.analyze(model, x, y, groups, layers="gap", reduce="mean")  # one name, not letters
    assert list(single.layer.values) == ["gap"]


def test_analyze_default_groups_are_the_seed_groups_and_options_pass_through():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(10, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 3, size=10)
    result = tmx.analyze(small_cnn(), x, y, n=4, dispersion="var", layers=["gap"])
    assert list(result.group.values) == list(T.GROUP_NAMES)
    assert (result.n_transformations == 4).all()
    assert result.attrs["option_dispersion"] == "var"
    with pytest.raises(ValueError, match="groups"):
        tmx.analyze(small_cnn(), x, y, {"a": "rotation"})


def two_head_model() -> keras.Model:
    """A shared trunk and two classifier heads; ``aux`` is the last entry of ``model.layers``
    (the head a ``layers[-1]`` lookup would score), ``main`` the first output."""
    inp = keras.Input((6, 6, 3))
    h = keras.layers.GlobalAveragePooling2D(name="gap")(inp)
    main = keras.layers.Dense(4, name="main")(h)
    aux = keras.layers.Dense(4, name="aux")(h)
    model = keras.Model(inp, [main, aux], name="two_heads")
    rng = np.random.default_rng(5)
    model.set_weights([rng.normal(size=w.shape) for w in model.get_weights()])
    return model


def test_evaluate_scores_the_chosen_output_of_a_two_head_model(data):
    x, y = data
    model = two_head_model()
    assert model.layers[-1].name == "aux"
    main, aux = model.predict(x, verbose=0)
    acc_main, acc_aux = (main.argmax(1) == y).mean(), (aux.argmax(1) == y).mean()
    assert acc_main != acc_aux  # the heads are told apart
    for output, expected in (("main", acc_main), (0, acc_main), ("aux", acc_aux), (-1, acc_aux)):
        result = tmx.evaluate(model, x, y, output=output)
        np.testing.assert_allclose(result.accuracy.values, [expected])
    assert tmx.evaluate(model, x, y, output=0).attrs["output"] == "main"
    with pytest.raises(ValueError, match=r"2 outputs \(0: 'main', 1: 'aux'\).*pass output="):
        tmx.evaluate(model, x, y)
    with pytest.raises(ValueError, match="names no output"):
        tmx.evaluate(model, x, y, output="gap")
    with pytest.raises(ValueError, match="out of range"):
        tmx.evaluate(model, x, y, output=2)


def test_analyze_scores_the_chosen_output_and_records_it(data):
    x, y = data
    model = two_head_model()
    main = model.predict(x, verbose=0)[0]
    groups = {"rot90": T.rot90([0, 1, 2, 3])}  # the pooled heads are invariant to it
    result = tmx.analyze(model, x, y, groups, layers=["gap"], output="main")
    np.testing.assert_allclose(result.accuracy.sel(group="rot90"), (main.argmax(1) == y).mean())
    assert result.attrs["output"] == "main"
    assert list(result.layer.values) == ["gap"]  # the output is scored, not measured
    with pytest.raises(ValueError, match="pass output="):
        tmx.analyze(model, x, y, groups, layers=["gap"])


def test_analyze_progress_bar_when_asked_and_quiet_under_pytest(capsys, caplog):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(6, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 3, size=6)
    groups = {"shift": T.translation([0, 1], 0)}
    with caplog.at_level(logging.INFO, logger="tmx"):
        tmx.analyze(small_cnn(), x, y, groups, layers=["gap"], progress=True)
    shown = capsys.readouterr().out
    assert "100% Completed" in shown and "group" not in shown  # the group goes to the log
    assert any("analyze: group 'shift'" in r.getMessage() for r in caplog.records)
    tmx.analyze(small_cnn(), x, y, groups, layers=["gap"])
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="progress must be"):
        tmx.analyze(small_cnn(), x, y, groups, layers=["gap"], progress="yes")
