"""The split entry points (issue 18, item 5): ``attribute``, ``activations`` and ``open`` give
the numbers computed independently (tf.GradientTape by hand, a plain model call, the saved
values), ``attribute(gradients=...)`` replaces the private ``_gradients=`` with a warning, and
``open`` raises each validation phase's error, in phase order."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import xarray as xr

import tmx
from tmx import attribution as A

# --------------------------------------------------------------------------------------------
# tiny models and by-hand gradients


@pytest.fixture(scope="module")
def mlp() -> keras.Model:
    keras.utils.set_random_seed(3)
    x = keras.Input((4,))
    h = keras.layers.Dense(5, activation="tanh", name="h1")(x)
    y = keras.layers.Dense(3, name="out")(h)
    return keras.Model(x, y)


X = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
B = np.random.default_rng(1).normal(size=(4,)).astype("float32")


def _grad_input(model: keras.Model, z: np.ndarray, c: int) -> np.ndarray:
    """∂y_c/∂z, one row per point, by hand."""
    z = tf.constant(z, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(z)
        q = model(z, training=False)[:, c]
    return tape.gradient(q, z).numpy().astype(np.float64)


def _grad_cut(model: keras.Model, h: np.ndarray, c: int) -> np.ndarray:
    """∂y_c/∂h1 at the cut's values ``h``: the tail (the ``out`` layer) by hand."""
    h = tf.constant(h, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(h)
        q = model.get_layer("out")(h)[:, c]
    return tape.gradient(q, h).numpy().astype(np.float64)


def _h1(model: keras.Model, z: np.ndarray) -> np.ndarray:
    return np.asarray(model.get_layer("h1")(tf.constant(z, tf.float32)), np.float64)


def _q(model: keras.Model, z: np.ndarray, c: int) -> np.ndarray:
    return np.asarray(model(tf.constant(z, tf.float32), training=False), np.float64)[:, c]


def _q_tail(model: keras.Model, h: np.ndarray, c: int) -> np.ndarray:
    return np.asarray(model.get_layer("out")(tf.constant(h, tf.float32)), np.float64)[:, c]


def _gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights on [0, 1], the weights summing to 1 (numpy's, not tmx's)."""
    t, w = np.polynomial.legendre.leggauss(steps)
    return (t + 1) / 2, w / 2


def _close(got, want) -> None:
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=2e-5, atol=2e-6)


# --------------------------------------------------------------------------------------------
# attribute: the input and the cut share one path; each gives the by-hand numbers


def test_input_x_gradient_at_the_input_and_at_a_cut(mlp) -> None:
    got = A.attribute(mlp, X, qoi=1)
    assert got.dims == ("sample", "unit") and got.attrs["cut"] == "input"
    _close(got.values, _grad_input(mlp, X, 1) * X)
    h = _h1(mlp, X)
    at_cut = A.attribute(mlp, X, qoi=1, cut="h1")
    assert at_cut.attrs["cut"] == "h1" and at_cut.attrs["doi_cut"] == "cut"
    _close(at_cut.values, _grad_cut(mlp, h, 1) * h)


def test_integrated_gradients_at_the_input_with_its_delta(mlp) -> None:
    alphas, weights = _gauss_legendre(6)
    mean = sum(
        w * _grad_input(mlp, B + a * (X - B), 2) for a, w in zip(alphas, weights, strict=True)
    )
    want = mean * (X - B)
    got = A.attribute(mlp, X, qoi=2, doi="linear", steps=6, baseline=B, return_delta=True)
    _close(got["attribution"].values, want)
    delta = want.sum(axis=1) - (_q(mlp, X, 2) - _q(mlp, B[None], 2))
    _close(got["delta"].values, delta)
    # streamed in small batches (not in the graph): the same numbers
    small = A.attribute(mlp, X, qoi=2, doi="linear", steps=6, baseline=B, batch_size=2)
    _close(small.values, want)


def test_layer_integrated_gradients_along_the_cut_and_along_the_input(mlp) -> None:
    alphas, weights = _gauss_legendre(5)
    h, h0 = _h1(mlp, X), _h1(mlp, np.zeros((1, 4)))
    # the DoI at the cut, from h(0 input)
    mean = sum(
        w * _grad_cut(mlp, h0 + a * (h - h0), 0) for a, w in zip(alphas, weights, strict=True)
    )
    want = mean * (h - h0)
    got = A.attribute(
        mlp, X, qoi=0, cut="h1", doi="linear", steps=5, baseline="input", return_delta=True
    )
    _close(got["attribution"].values, want)
    _close(
        got["delta"].values,
        want.sum(axis=1) - (_q_tail(mlp, h, 0) - _q_tail(mlp, np.broadcast_to(h0, h.shape), 0)),
    )
    # the DoI along the input from b, the gradient taken at the cut
    hb = _h1(mlp, B[None])
    mean = sum(
        w * _grad_cut(mlp, _h1(mlp, B + a * (X - B)), 0)
        for a, w in zip(alphas, weights, strict=True)
    )
    want = mean * (h - hb)
    got = A.attribute(
        mlp,
        X,
        qoi=0,
        cut="h1",
        doi="linear",
        steps=5,
        doi_cut="input",
        baseline=("input", B),
        return_delta=True,
    )
    assert got.attrs["doi_cut"] == "input"
    _close(got["attribution"].values, want)
    _close(got["delta"].values, want.sum(axis=1) - (_q(mlp, X, 0) - _q(mlp, B[None], 0)))


def test_several_cuts_are_each_computed_as_if_alone(mlp) -> None:
    both = A.attribute(mlp, X, qoi=1, cut=["h1", "out"])
    h = _h1(mlp, X)
    y = np.asarray(mlp(X), np.float64)
    onehot = np.zeros_like(y)
    onehot[:, 1] = 1.0
    _close(both.values, np.concatenate([_grad_cut(mlp, h, 1) * h, onehot * y], axis=1))
    assert both.dims == ("sample", "unit")
    assert both.layer.values.tolist() == ["h1"] * 5 + ["out"] * 3
    assert both.channel.values.tolist() == [*range(5), *range(3)]
    assert both.attrs["cut"] == both.attrs["layers"] == ["h1", "out"]
    with pytest.raises(ValueError, match="'h1' is given twice"):
        A.attribute(mlp, X, qoi=1, cut=["h1", "h1"])
    with_delta = A.attribute(
        mlp, X, qoi=1, cut=["h1", "out"], doi="linear", steps=3, return_delta=True
    )
    assert with_delta["delta"].dims == ("sample", "cut")
    assert with_delta["delta"].cut.values.tolist() == ["h1", "out"]


def _three_points(xi: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A custom DoI: x, x / 2 and −x with weights 0.2, 0.3, 0.5."""
    return np.concatenate([xi, 0.5 * xi, -xi]), np.array([0.2, 0.3, 0.5])


@pytest.mark.parametrize("gradients", ["mean", "square", "variance"])
def test_gradients_picks_a_moment_of_the_gradients_over_the_doi(mlp, gradients) -> None:
    g = np.stack([_grad_input(mlp, s * X, 2) for s in (1.0, 0.5, -1.0)])  # (K, N, 4)
    w = np.array([0.2, 0.3, 0.5])[:, None, None]
    mean, square = (w * g).sum(axis=0), (w * g * g).sum(axis=0)
    want = {"mean": mean, "square": square, "variance": np.maximum(square - mean**2, 0)}
    got = A.attribute(
        mlp, X, qoi=2, doi=_three_points, multiply_activation=False, gradients=gradients
    )
    _close(got.values, want[gradients])
    timesx = A.attribute(mlp, X, qoi=2, doi=_three_points, gradients=gradients)
    _close(timesx.values, want[gradients] * X)


def test_the_private_gradients_keyword_still_works_and_warns(mlp) -> None:
    new = A.attribute(mlp, X, qoi=0, doi="gaussian", samples=4, gradients="variance")
    with pytest.warns(DeprecationWarning, match=r"_gradients= is deprecated.*use gradients="):
        old = A.attribute(mlp, X, qoi=0, doi="gaussian", samples=4, _gradients="variance")
    xr.testing.assert_identical(old, new)
    with pytest.raises(TypeError, match=r"got both _gradients= \(deprecated\) and gradients="):
        A.attribute(mlp, X, gradients="square", _gradients="variance")
    with pytest.raises(ValueError, match="gradients"):
        A.attribute(mlp, X, gradients="median")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the new name does not warn
        A.attribute(mlp, X, qoi=0, gradients="square")


def test_smoothgrad_kinds_are_attribute_with_gradients(mlp) -> None:
    for kind, gradients in [("smoothgrad_sq", "square"), ("vargrad", "variance")]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # while smoothgrad says _gradients
            sg = A.smoothgrad(mlp, X, 1, samples=3, noise=0.3, seed=2, kind=kind)
        direct = A.attribute(
            mlp,
            X,
            qoi=1,
            doi="gaussian",
            samples=3,
            noise=0.3,
            seed=2,
            multiply_activation=False,
            gradients=gradients,
        )
        np.testing.assert_array_equal(sg.values, direct.values)


# --------------------------------------------------------------------------------------------
# activations: checks, plan, graph, wrapping; the numbers of a plain model call, lazily


@pytest.fixture(scope="module")
def cnn() -> keras.Model:
    keras.utils.set_random_seed(5)
    x = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(2, 3, activation="relu", name="conv")(x)
    h = keras.layers.Flatten(name="flat")(h)
    return keras.Model(x, keras.layers.Dense(3, name="d")(h))


IMAGES = np.random.default_rng(2).normal(size=(5, 6, 6, 1)).astype("float32")


def test_activations_are_the_model_outputs_of_each_transformed_sample(cnn) -> None:
    probe = keras.Model(cnn.inputs, [cnn.get_layer("conv").output, cnn.get_layer("d").output])
    cube = tmx.activations(
        cnn,
        IMAGES,
        tmx.transforms.rot90([0, 1]),
        layers=["conv", "d"],
        chunks={"sample": 2, "transformation": 1, "unit": 7},
    )
    runner = tmx.cube.forward_runner(cube)
    assert runner.blocks == 0  # building ran no forward pass
    assert cube.data.chunks == ((2, 2, 1), (1, 1), (7,) * 5)
    values = cube.values
    assert runner.blocks == 3 * 2  # one pass per (sample block, transformation block)
    for k in (0, 1):
        turned = np.rot90(IMAGES, k, axes=(1, 2)).copy()
        conv, d = probe([turned], training=False)
        want = np.concatenate([np.asarray(conv).reshape(5, -1), np.asarray(d)], axis=1)
        np.testing.assert_allclose(values[:, k], want, rtol=1e-5, atol=1e-5)
    assert cube.layer.values.tolist() == ["conv"] * 32 + ["d"] * 3
    assert cube.channel.values[:4].tolist() == [0, 1, 0, 1]
    assert cube.y.values[:4].tolist() == [0, 0, 0, 0] and cube.x.values[:4].tolist() == [0, 0, 1, 1]
    assert cube.attrs["layers"] == ["conv", "d"] and cube.attrs["input_shape"] == [6, 6, 1]
    assert cube.transform.values.tolist() == ["rot90(0)", "rot90(1)"]


def test_activations_keep_sample_and_label_coordinates(cnn) -> None:
    x = xr.DataArray(
        IMAGES,
        dims=("sample", "y", "x", "channel"),
        coords={"sample": [10, 11, 12, 13, 14], "label": ("sample", [1, 0, 1, 0, 1])},
    )
    cube = tmx.activations(cnn, x, layers="d")
    assert cube.sample.values.tolist() == [10, 11, 12, 13, 14]
    assert cube.label.values.tolist() == [1, 0, 1, 0, 1]
    relabeled = tmx.activations(cnn, x, layers="d", labels=[5, 6, 7, 8, 9])
    assert relabeled.label.values.tolist() == [5, 6, 7, 8, 9]
    np.testing.assert_allclose(
        cube.values[:, 0], np.asarray(cnn(IMAGES, training=False)), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match=r"labels must have one entry per sample \(5\)"):
        tmx.activations(cnn, IMAGES, labels=[1, 2])
    with pytest.raises(ValueError, match="each endpoint must be given once"):
        tmx.activations(cnn, IMAGES, layers=["d", "d"])
    with pytest.raises(ValueError, match="chunks: unknown dims"):
        tmx.activations(cnn, IMAGES, chunks={"samples": 2})


# --------------------------------------------------------------------------------------------
# open: one named error per validation phase, the phases in order


def _saved(tmp_path: Path) -> tuple[Path, xr.DataArray]:
    values = np.random.default_rng(4).random((6, 3, 5), np.float32)
    cube = tmx.from_array({"dense": values}).chunk({"sample": 2, "transformation": 3})
    path = tmp_path / "c.zarr"
    tmx.save(cube, path)
    return path, cube


def _edit(path: Path, edit) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _group_attrs(path: Path, **attrs) -> None:
    _edit(path / "zarr.json", lambda m: m["attributes"].update(attrs))


def test_open_reads_back_what_was_saved(tmp_path) -> None:
    path, cube = _saved(tmp_path)
    back = tmx.open(path)
    assert back.chunks == ((2, 2, 2), (3,), (5,))
    xr.testing.assert_identical(back.compute(), cube.compute())
    assert tmx.open(path, chunks={"sample": 3}).chunks == ((3, 3), (3,), (5,))
    with pytest.raises(ValueError, match="chunks keys must be among"):
        tmx.open(path, chunks={"samples": 3})


@pytest.mark.parametrize(
    ("attrs", "match"),
    [
        ({"tmx_format": "table"}, "is not a tmx cube"),
        ({"tmx_format_version": 9}, "has tmx_format_version 9"),
        ({"tmx_complete": False}, "is incomplete: its save was interrupted"),
        ({"tmx_fingerprint": "0" * 64}, "tmx_manifest does not match tmx_fingerprint"),
    ],
)
def test_open_phase_1_the_group_attrs(tmp_path, attrs, match) -> None:
    path, _ = _saved(tmp_path)
    _group_attrs(path, **attrs)
    with pytest.raises(ValueError, match=match):
        tmx.open(path)


def test_open_phase_2_the_arrays_layout(tmp_path) -> None:
    path, _ = _saved(tmp_path)
    meta = path / "activation" / "zarr.json"
    original = meta.read_text()
    _edit(meta, lambda m: m.update(dimension_names=["sample", "unit", "transformation"]))
    with pytest.raises(ValueError, match=r"'activation' must have dims exactly"):
        tmx.open(path)
    meta.write_text(original)
    _edit(meta, lambda m: m.update(data_type="int32"))
    with pytest.raises(ValueError, match=r"'activation' must have a float dtype; got int32"):
        tmx.open(path)
    meta.write_text(original)
    _edit(path / "layer" / "zarr.json", lambda m: m.update(dimension_names=["sample"]))
    with pytest.raises(ValueError, match=r"coordinate 'layer' has dims \['sample'\]"):
        tmx.open(path)


def test_open_phase_3_the_coordinate_values(tmp_path) -> None:
    import zarr

    path, _ = _saved(tmp_path)
    zarr.open_group(str(path), mode="r+")["channel"][0] = 99
    with pytest.raises(ValueError, match="'channel' do not match their sha256"):
        tmx.open(path)


def test_open_phase_4_the_chunks_and_on_read(tmp_path) -> None:
    path, _ = _saved(tmp_path)
    chunk = path / "activation" / "c" / "1" / "0" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    damaged = tmx.open(path)  # the files and records are there: opens
    with pytest.raises(tmx.store.StoreDamagedError, match=r"chunk \(1, 0, 0\)"):
        damaged.compute()
    chunk.unlink()
    with pytest.raises(
        tmx.store.StoreDamagedError, match=r"found at open.*chunk \(1, 0, 0\).*file is missing"
    ):
        tmx.open(path)


def test_open_runs_the_phases_in_order(tmp_path) -> None:
    path, _ = _saved(tmp_path)
    (path / "activation" / "c" / "0" / "0" / "0").unlink()  # phase 4
    _edit(path / "activation" / "zarr.json", lambda m: m.update(data_type="int32"))  # phase 2
    with pytest.raises(ValueError, match="must have a float dtype"):
        tmx.open(path)
    _group_attrs(path, tmx_format_version=9)  # phase 1
    with pytest.raises(ValueError, match="tmx_format_version 9"):
        tmx.open(path)
