"""progress= on evaluate, over_transforms, noise_tunnel, grad_cam, grad_cam_pp and flows.pairs
(a bar when asked, none otherwise, a named error for anything but True/False/None, the same
numbers either way), and evaluate's laziness: lazy in, lazy out where the result can be a dask
graph, computed (and said so) where it cannot."""

from __future__ import annotations

import logging
import re

import dask.array as da
import keras
import numpy as np
import pytest
import xarray as xr
import zarr
from scipy.special import log_softmax

import tmx
from tmx import attribution as A
from tmx import flows
from tmx import transforms as T

from .attribution_util import draws, two_conv_cnn

RNG = np.random.default_rng(7)
X = RNG.normal(size=(6, 8, 8, 1)).astype(np.float32)
Y = np.array([0, 1, 2, 0, 1, 2])
TSET = T.rot90([0, 1])


MODEL = two_conv_cnn()


def _shown(capfd: pytest.CaptureFixture[str]) -> str:
    """What was written to stdout and stderr, colour codes removed."""
    got = capfd.readouterr()
    return re.sub(r"\x1b\[[0-9;]*m", "", got.out + got.err)


def _finished(text: str, total: int, unit: str) -> bool:
    """A bar ran to its end: ``total/total`` and ``/unit`` (Keras's Progbar)."""
    return f"{total}/{total}" in text and f"/{unit}" in text


# -- evaluate -------------------------------------------------------------------------------------
def _expected(model: keras.Model, x: np.ndarray, y: np.ndarray, tset: T.TransformationSet):
    """Accuracy and cross-entropy per transformation, by numpy and scipy."""
    acc, loss = [], []
    for j in range(len(tset)):
        logits = np.asarray(model.predict(T.apply(tset, x, j), verbose=0), np.float64)
        acc.append(np.mean(logits.argmax(axis=1) == y))
        loss.append(-log_softmax(logits, axis=1)[np.arange(y.size), y].mean())
    return np.array(acc), np.array(loss)


def _is_dask(ds: xr.Dataset) -> bool:
    return all(isinstance(ds[k].data, da.Array) for k in ("accuracy", "loss"))


def test_evaluate_in_memory_computes_with_a_bar_over_the_forward_blocks(capfd) -> None:
    acc, loss = _expected(MODEL, X, Y, TSET)
    quiet = tmx.evaluate(MODEL, X, Y, TSET, progress=False)
    assert _shown(capfd) == ""
    loud = tmx.evaluate(MODEL, X, Y, TSET, progress=True)
    shown = _shown(capfd)
    assert "/block" in shown and re.search(r"(\d+)/\1", shown)
    for ds in (quiet, loud):
        assert not _is_dask(ds)
        np.testing.assert_allclose(ds.accuracy.values, acc)
        np.testing.assert_allclose(ds.loss.values, loss, rtol=1e-5)
    xr.testing.assert_identical(quiet, loud)
    tmx.evaluate(MODEL, X, Y, TSET)  # None: not interactive under pytest
    assert _shown(capfd) == ""
    with pytest.raises(ValueError, match="progress must be True, False or None"):
        tmx.evaluate(MODEL, X, Y, TSET, progress="yes")
    with pytest.raises(ValueError, match="from_logits must be True, False or None"):
        tmx.evaluate(MODEL, X, Y, TSET, from_logits="yes")


def test_evaluate_lazy_in_lazy_out_when_from_logits_is_given(capfd, caplog) -> None:
    eager = tmx.evaluate(MODEL, X, Y, TSET, from_logits=True, progress=False)
    _shown(capfd)
    with caplog.at_level(logging.INFO, logger="tmx"):
        lazy = tmx.evaluate(
            MODEL, da.from_array(X, chunks=(2, 8, 8, 1)), Y, TSET, from_logits=True, progress=True
        )
    assert _is_dask(lazy)
    assert _shown(capfd) == ""  # nothing has run yet
    assert any("evaluate:" in r.message and "lazy" in r.message for r in caplog.records)
    done = lazy.compute()  # both variables from one set of forward passes
    assert "/block" in _shown(capfd)
    assert done.attrs == eager.attrs and done.attrs["from_logits"] == 1
    xr.testing.assert_allclose(done, eager, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(done.accuracy.values, eager.accuracy.values)
    # a zarr array and a DataArray over dask are lazy inputs too; probabilities read as such
    probs = keras.Model(MODEL.input, keras.layers.Softmax()(MODEL.output))
    store = zarr.array(X, chunks=(3, 8, 8, 1))
    as_probs = tmx.evaluate(probs, store, Y, TSET, from_logits=False)
    assert _is_dask(as_probs)
    decided = tmx.evaluate(probs, X, Y, TSET)  # from_logits=None decides: probabilities
    assert decided.attrs["from_logits"] == 0
    xr.testing.assert_allclose(as_probs.compute(), decided, rtol=1e-12, atol=0)
    wrapped = xr.DataArray(da.from_array(X, chunks=(3, 8, 8, 1)), dims=("sample", "a", "b", "c"))
    assert _is_dask(tmx.evaluate(MODEL, wrapped, Y, TSET, from_logits=True))


def test_evaluate_lazy_in_computes_when_from_logits_must_be_decided(caplog) -> None:
    eager = tmx.evaluate(MODEL, X, Y, TSET)
    with caplog.at_level(logging.INFO, logger="tmx"):
        got = tmx.evaluate(MODEL, da.from_array(X, chunks=(2, 8, 8, 1)), Y, TSET)
    assert not _is_dask(got) and got.attrs["from_logits"] == 1  # logits, decided here
    assert any("computed now: from_logits=None" in r.message for r in caplog.records)
    xr.testing.assert_identical(got, eager)


# -- attributions ---------------------------------------------------------------------------------
def test_over_transforms_bar_over_the_transformations(capfd) -> None:
    for method in (A.saliency, A.attribute):
        quiet = A.over_transforms(method, MODEL, X, TSET, progress=False)
        assert _shown(capfd) == ""
        loud = A.over_transforms(method, MODEL, X, TSET, progress=True)
        shown = _shown(capfd)
        assert _finished(shown, 2, "transformation")
        assert "/batch" not in shown  # the method's own bar stays off
        xr.testing.assert_identical(quiet, loud)
    # the numbers: saliency of each rotated input, |∂logit_c/∂x| for the class predicted at x
    cube = A.over_transforms(A.saliency, MODEL, X, TSET)
    target = MODEL.predict(X, verbose=0).argmax(axis=1)
    for j in range(len(TSET)):
        xj = T.apply(TSET, X, j)
        np.testing.assert_allclose(
            cube.isel(transformation=j).values,
            A.saliency(MODEL, xj, target).values.reshape(len(X), -1),
        )
    with pytest.raises(ValueError, match="progress must be"):
        A.over_transforms(A.saliency, MODEL, X, TSET, progress="yes")


def _plain_gradient(model, x, target, *, batch_size=64):
    """An attribution method without ``progress``: ∂logit/∂x by tf.GradientTape."""
    import tensorflow as tf

    z = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(z)
        out = model(z)
        picked = tf.gather(out, np.asarray(target), axis=1, batch_dims=1)
    grad = tape.gradient(picked, z).numpy().astype(np.float64)
    return xr.DataArray(grad, dims=("sample", "y", "x", "channel"), attrs={"method": "plain"})


def test_noise_tunnel_passes_progress_on_or_counts_samples(capfd) -> None:
    args = dict(samples=3, noise=0.2, seed=1)
    quiet = A.noise_tunnel(A.saliency, MODEL, X, 1, batch_size=4, progress=False, **args)
    assert _shown(capfd) == ""
    loud = A.noise_tunnel(A.saliency, MODEL, X, 1, batch_size=4, progress=True, **args)
    assert _finished(_shown(capfd), 5, "batch")  # 18 noisy rows in calls of 4: saliency's bar
    xr.testing.assert_identical(quiet, loud)
    # a method without progress: a bar over the samples; the mean of its noisy gradients
    plain = A.noise_tunnel(_plain_gradient, MODEL, X, 1, progress=True, **args)
    assert _finished(_shown(capfd), 6, "sample")

    eps = draws("normal", X.shape[1:], np.arange(6), 3, 0.2, 1)
    rows = (X[:, None] + eps).reshape(-1, *X.shape[1:])
    expected = _plain_gradient(MODEL, rows, np.ones(18, int)).values.reshape(6, 3, 8, 8, 1)
    np.testing.assert_allclose(plain.values, expected.mean(axis=1), rtol=1e-6, atol=1e-7)
    A.noise_tunnel(A.saliency, MODEL, X, 1, **args)  # None: quiet under pytest
    assert _shown(capfd) == ""
    with pytest.raises(ValueError, match="progress must be"):
        A.noise_tunnel(A.saliency, MODEL, X, 1, progress="yes")


@pytest.mark.parametrize("method", ["grad_cam", "grad_cam_pp"])
def test_grad_cams_bar_over_the_gradient_calls(capfd, method) -> None:
    fn = getattr(A, method)
    quiet = fn(MODEL, X, 2, layer="conv2", batch_size=4, progress=False)
    assert _shown(capfd) == ""
    loud = fn(MODEL, X, 2, layer="conv2", batch_size=4, progress=True)
    assert _finished(_shown(capfd), 2, "batch")  # 6 samples in calls of 4
    xr.testing.assert_identical(quiet, loud)
    fn(MODEL, X, 2, layer="conv2")
    assert _shown(capfd) == ""
    with pytest.raises(ValueError, match="progress must be"):
        fn(MODEL, X, 2, layer="conv2", progress="yes")
    if method == "grad_cam":  # α_k = mean ∂logit/∂A_k: the weights through GAP and Dense
        acts = np.asarray(keras.Model(MODEL.input, MODEL.get_layer("conv2").output)(X))
        kernel = MODEL.get_layer("logits").get_weights()[0][:, 2]  # GAP: ∂/∂A = W / (H W)
        expected = np.maximum((acts * kernel / 64).sum(axis=-1, keepdims=True), 0)
        np.testing.assert_allclose(loud.values, expected, rtol=1e-5, atol=1e-7)


# -- flows.pairs ----------------------------------------------------------------------------------
def test_pairs_bar_over_the_factors(capfd) -> None:
    cube = xr.DataArray(
        RNG.normal(size=(8, 3, 2)),
        dims=("sample", "transformation", "unit"),
        coords={"layer": ("unit", ["h", "h"]), "angle": ("transformation", [0.0, 90.0, 180.0])},
    )

    def rho(factor, a, b):
        return 0.9 * np.cos(np.radians(a["angle"] - b["angle"])) ** 2

    by = ("sample", "transformation", "angle")
    quiet = flows.pairs(cube, by, n=30, rho=rho, progress=False)
    assert _shown(capfd) == ""
    loud = flows.pairs(cube, by, n=30, rho=rho, progress=True)
    assert _finished(_shown(capfd), 3, "factor")
    xr.testing.assert_identical(quiet, loud)
    # the members are the cube's rows and the ρ is the function's, on the drawn factor
    rows = cube.values[loud.sample_a.values, loud.transformation_a.values]
    np.testing.assert_array_equal(loud.a.values, rows)
    angle = loud.drawn.values == "angle"
    diff = np.radians(loud.angle_a.values - loud.angle_b.values)
    np.testing.assert_allclose(loud.rho.values[angle, 3], 0.9 * np.cos(diff[angle]) ** 2)
    flows.pairs(cube, by, n=30)
    assert _shown(capfd) == ""
    with pytest.raises(ValueError, match="progress must be"):
        flows.pairs(cube, by, n=30, progress="yes")
