"""progress= on the attribution metrics (deletion, insertion, infidelity, sensitivity_max),
full_grad, flows.swap, flows.interpolate and flows.check: a bar when asked, none otherwise, a
named error for anything but True/False/None, the same numbers either way (checked against
direct computations), and one INFO line on the ``tmx`` logger per call."""

from __future__ import annotations

import logging
import re

import dask.array as da
import keras
import numpy as np
import pytest
import xarray as xr
from scipy.special import softmax

from tmx import attribution as A
from tmx import flows
from tmx.cube import unit_coords

from .attribution_util import draws, two_conv_cnn
from .flow_helpers import perturb

RNG = np.random.default_rng(11)
X = RNG.normal(size=(6, 8, 8, 1)).astype(np.float32)


MODEL = two_conv_cnn()


def _logits(x: np.ndarray) -> np.ndarray:
    return np.asarray(MODEL.predict(x, verbose=0), np.float64)


def _shown(capfd: pytest.CaptureFixture[str]) -> str:
    """What was written to stdout and stderr, colour codes removed."""
    got = capfd.readouterr()
    return re.sub(r"\x1b\[[0-9;]*m", "", got.out + got.err)


def _finished(text: str, total: int, unit: str) -> bool:
    """A bar ran to its end: ``total/total`` and ``/unit`` (Keras's Progbar)."""
    return f"{total}/{total}" in text and f"/{unit}" in text


def _one_info(caplog: pytest.LogCaptureFixture, prefix: str) -> str:
    """The INFO line on the tmx logger starting with ``prefix``: one per call that ran (the
    three of ``_quiet_loud``; the bad ``progress`` fails before it), all alike."""
    got = [r.getMessage() for r in caplog.records if r.name == "tmx" and r.levelno == logging.INFO]
    mine = [m for m in got if m.startswith(prefix)]
    assert len(mine) == 3 and len(set(mine)) == 1, got
    return mine[0]


def _quiet_loud(capfd, call, total: int, unit: str):
    """(result with progress=False, result with progress=True); the loud one showed a bar of
    ``total`` ``unit``s, the quiet ones (False, None under pytest) nothing."""
    quiet = call(progress=False)
    assert _shown(capfd) == ""
    loud = call(progress=True)
    shown = _shown(capfd)
    assert _finished(shown, total, unit), shown
    call()  # None: not interactive under pytest
    assert _shown(capfd) == ""
    with pytest.raises(ValueError, match="progress must be True, False or None"):
        call(progress="yes")
    return quiet, loud


# -- cam --------------------------------------------------------------------------------------
def test_cam_bar_over_the_forward_calls(capfd) -> None:
    quiet, loud = _quiet_loud(
        capfd, lambda **kw: A.cam(MODEL, X, 1, layer="conv2", batch_size=4, **kw), 2, "batch"
    )
    xr.testing.assert_identical(quiet, loud)
    # CAM by hand: the logits' kernel column of class 1 over conv2's channels
    acts = np.asarray(keras.Model(MODEL.inputs, MODEL.get_layer("conv2").output)(X), np.float64)
    w = np.asarray(MODEL.get_layer("logits").kernel, np.float64)[:, 1]
    np.testing.assert_allclose(quiet.values[..., 0], acts @ w, rtol=1e-5, atol=1e-6)


# -- deletion / insertion -------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["deletion", "insertion"])
def test_curves_bar_over_the_fractions(capfd, caplog, which) -> None:
    attr = RNG.normal(size=X.shape)
    fn = getattr(A, which)
    with caplog.at_level(logging.INFO, logger="tmx"):
        quiet, loud = _quiet_loud(
            capfd, lambda **kw: fn(MODEL, X, attr, 1, steps=4, batch_size=4, **kw), 5, "fraction"
        )
    assert "6 image(s) of 8 x 8 pixels, 5 forward passes" in _one_info(caplog, f"{which}:")
    xr.testing.assert_identical(quiet, loud)
    # the numbers: softmax(logits)[1] with the k most important pixels removed / inserted
    order = np.argsort(-attr.reshape(6, 64), axis=1, kind="stable")
    expected = np.empty((6, 5))
    for s, k in enumerate(np.round(np.linspace(0, 1, 5) * 64).astype(int)):
        mask = np.zeros((6, 64), bool)
        for i in range(6):
            mask[i, order[i, :k]] = True
        mask = mask.reshape(6, 8, 8, 1)
        z = np.where(mask, X, 0.0) if which == "insertion" else np.where(mask, 0.0, X)
        expected[:, s] = softmax(_logits(z.astype(np.float32)), axis=1)[:, 1]
    np.testing.assert_allclose(loud["curve"].values, expected, rtol=1e-5, atol=1e-7)
    auc = np.trapezoid(expected, np.linspace(0, 1, 5), axis=1)
    np.testing.assert_allclose(loud["auc"].values, auc, rtol=1e-5, atol=1e-7)


# -- infidelity -----------------------------------------------------------------------------------
def test_infidelity_bar_over_the_forward_calls(capfd, caplog) -> None:
    phi = RNG.normal(size=X.shape)
    args = dict(noise=0.3, samples=3, seed=2, batch_size=4)
    with caplog.at_level(logging.INFO, logger="tmx"):
        quiet, loud = _quiet_loud(
            capfd, lambda **kw: A.infidelity(MODEL, X, phi, 2, **args, **kw), 2 + 5, "batch"
        )  # 6 inputs in calls of 4, then 18 perturbed inputs in calls of 4
    assert "6 sample(s) x 3 perturbation(s)" in _one_info(caplog, "infidelity:")
    xr.testing.assert_identical(quiet, loud)
    # INFD = mean_k (I_k · Φ − (f(x) − f(x − I_k)))², f the logit of class 2
    eps = draws("normal", X.shape[1:], np.arange(6), 3, 0.3, 2)
    f_x = _logits(X)[:, 2]
    f_p = _logits((X[:, None] - eps).reshape(18, 8, 8, 1).astype(np.float32))[:, 2].reshape(6, 3)
    dot = (eps.reshape(6, 3, -1).astype(np.float64) * phi.reshape(6, 1, -1)).sum(-1)
    expected = ((dot - (f_x[:, None] - f_p)) ** 2).mean(axis=1)
    np.testing.assert_allclose(loud.values, expected, rtol=1e-4)


# -- sensitivity_max ------------------------------------------------------------------------------
def _offset(model, x, target, *, batch_size=64, baseline):
    """A method without ``progress``: x − baseline (row by row), whatever the model."""
    return xr.DataArray(np.asarray(x, np.float64) - baseline, dims=("sample", "y", "x", "channel"))


def test_sensitivity_max_bar_over_the_rows_in_several_calls(capfd, caplog) -> None:
    # 6 × 200 = 1200 perturbed rows: two calls of the method (1024 rows, then 176)
    base = RNG.normal(size=X.shape).astype(np.float32)
    args = dict(radius=0.05, samples=200, seed=4)
    with caplog.at_level(logging.INFO, logger="tmx"):
        quiet, loud = _quiet_loud(
            capfd,
            lambda **kw: A.sensitivity_max(_offset, MODEL, X, 0, baseline=base, **args, **kw),
            6 * 201,
            "row",
        )
    assert "_offset on 6 sample(s) and 200 perturbed copies" in _one_info(caplog, "sensitivity")
    xr.testing.assert_identical(quiet, loud)
    # Φ(x + δ) − Φ(x) = δ with each sample's own baseline: max_k ‖δ_k‖ / ‖x − b‖
    delta = draws("uniform", X.shape[1:], np.arange(6), 200, 0.05, 4).reshape(6, 200, -1)
    expected = np.linalg.norm(delta.astype(np.float64), axis=-1).max(axis=1)
    expected /= np.linalg.norm((X - base).reshape(6, -1).astype(np.float64), axis=1)
    np.testing.assert_allclose(loud.values, expected, rtol=1e-5)


def test_sensitivity_max_turns_the_methods_own_bar_off(capfd) -> None:
    args = dict(radius=0.05, samples=3, seed=1, batch_size=4, absolute=False)
    quiet, loud = _quiet_loud(
        capfd, lambda **kw: A.sensitivity_max(A.saliency, MODEL, X, 1, **args, **kw), 24, "row"
    )
    xr.testing.assert_identical(quiet, loud)
    # the numbers: saliency of the 18 perturbed rows in one call of saliency itself
    delta = draws("uniform", X.shape[1:], np.arange(6), 3, 0.05, 1)
    rows = (X[:, None] + delta).reshape(18, 8, 8, 1).astype(np.float32)
    at_x = A.saliency(MODEL, X, 1, absolute=False).values.reshape(6, -1)
    moved = A.saliency(MODEL, rows, 1, absolute=False).values.reshape(6, 3, -1)
    dist = np.linalg.norm(moved - at_x[:, None], axis=-1).max(axis=1)
    np.testing.assert_allclose(loud.values, dist / np.linalg.norm(at_x, axis=1), rtol=1e-6)
    A.sensitivity_max(A.saliency, MODEL, X, 1, progress=True, samples=3, batch_size=4)
    assert "/batch" not in _shown(capfd)  # saliency's own bar stays off


# -- full_grad ------------------------------------------------------------------------------------
def test_full_grad_bar_over_the_gradient_calls(capfd, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="tmx"):
        quiet, loud = _quiet_loud(
            capfd,
            lambda **kw: A.full_grad(MODEL, X, 0, batch_size=4, return_delta=True, **kw),
            2,
            "batch",
        )
    assert "6 image(s) of 8 x 8, 3 bias site(s), 2 gradient call(s)" in _one_info(caplog, "full")
    xr.testing.assert_identical(quiet, loud)
    # ReLU, average pooling and affine maps: the decomposition is complete (delta = 0), and the
    # batching does not change the map
    assert float(np.abs(loud["delta"]).max()) < 1e-4 * float(np.abs(_logits(X)[:, 0]).max())
    whole = A.full_grad(MODEL, X, 0, batch_size=64)
    np.testing.assert_allclose(loud["attribution"].values, whole.values, rtol=1e-5, atol=1e-7)


# -- flows ----------------------------------------------------------------------------------------
D = 6


def _flow(values: np.ndarray) -> flows.Flow:
    f = flows.flow(D, blocks=1, hidden=(8,), seed=3)
    f(values)  # data-initialised ActNorm sees its first batch
    perturb(f, seed=3)
    f.factors, f.dimensions = ["residual", "a", "b"], [2, 1, 3]
    coords = {k: v.tolist() for k, v in unit_coords(["h"], [(D,)]).items()}
    f.unit_coords = {**coords, "unit": list(range(D))}
    return f


def _tail_model() -> keras.Model:
    """x → h = Dense(6, relu) → logits (3): the flow's layer is h."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    h = keras.layers.Dense(D, activation="relu", name="h")(inp)
    return keras.Model(inp, keras.layers.Dense(3, name="o")(h))


ROWS = np.random.default_rng(5).normal(0.2, 1.0, (12, D)).astype(np.float32)
FLOW = _flow(ROWS)
A_ROWS, B_ROWS = ROWS[:6], ROWS[6:]


def _expected_swap(alpha: float) -> np.ndarray:
    """T⁻¹ of T(a) with block "a" (latent 2) moved a fraction alpha towards T(b)'s."""
    za = flows.transform(FLOW, A_ROWS).values
    zb = flows.transform(FLOW, B_ROWS).values
    za[:, 2] = (1 - alpha) * za[:, 2] + alpha * zb[:, 2]
    return flows.inverse(FLOW, za).values


def test_swap_one_bar_over_the_three_flow_passes(capfd, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="tmx"):
        quiet, loud = _quiet_loud(
            capfd,
            lambda **kw: flows.swap(FLOW, A_ROWS, B_ROWS, factor="a", batch_size=4, **kw),
            3 * 2,  # T(a), T(b), T⁻¹: 6 rows in calls of 4 each
            "batch",
        )
    assert "factor 'a' of 6 row(s) of 6 unit(s)" in _one_info(caplog, "swap:")
    xr.testing.assert_identical(quiet, loud)
    np.testing.assert_allclose(loud.values, _expected_swap(1.0), rtol=1e-5, atol=1e-5)
    # dask in: lazy out, nothing runs (no bar) until computed
    lazy_a = da.from_array(A_ROWS, chunks=3)
    lazy = flows.swap(FLOW, lazy_a, B_ROWS, factor="a", batch_size=4, progress=True)
    assert isinstance(lazy.data, da.Array)
    shown = _shown(capfd)
    assert _finished(shown, 2, "batch") and "6/6" not in shown  # T(b) only ran here
    np.testing.assert_allclose(lazy.compute().values, loud.values, rtol=1e-5, atol=1e-5)


def test_interpolate_one_bar_over_the_flow_and_model_calls(capfd, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="tmx"):
        quiet, loud = _quiet_loud(
            capfd,
            lambda **kw: flows.interpolate(
                FLOW, A_ROWS, B_ROWS, factor="a", steps=3, batch_size=4, **kw
            ),
            2 + 2 + 5,  # T(a), T(b): 6 rows; T⁻¹: 18 rows; calls of 4
            "batch",
        )
    assert "factor 'a' of 6 row(s) of 6 unit(s) in 3 step(s)" in _one_info(caplog, "interpolate:")
    xr.testing.assert_identical(quiet, loud)
    for s, alpha in enumerate((0.0, 0.5, 1.0)):
        np.testing.assert_allclose(loud.values[s], _expected_swap(alpha), rtol=1e-5, atol=1e-5)
    # with the model: its 3 passes over 6 rows (calls of 4) join the same bar
    model = _tail_model()
    quiet, loud = _quiet_loud(
        capfd,
        lambda **kw: flows.interpolate(
            FLOW, A_ROWS, B_ROWS, factor="a", steps=3, batch_size=4, model=model, **kw
        ),
        9 + 6,
        "batch",
    )
    xr.testing.assert_identical(quiet, loud)
    out = model.get_layer("o")
    for s in range(3):
        act = loud["activation"].values[s]
        pred = keras.ops.convert_to_numpy(out(act))
        np.testing.assert_allclose(loud["prediction"].values[s], pred, rtol=1e-5, atol=1e-5)
    # dask in with the model: computed here under dask's bar, then the model's calls
    lazy = flows.interpolate(
        FLOW,
        da.from_array(A_ROWS, chunks=3),
        B_ROWS,
        factor="a",
        steps=3,
        batch_size=4,
        model=model,
        progress=True,
    )
    shown = _shown(capfd)
    assert "100%" in shown and _finished(shown, 2 + 6, "batch")  # T(b) and the model
    xr.testing.assert_allclose(lazy, loud, rtol=1e-5, atol=1e-5)


def test_check_bar_over_the_calls(capfd, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="tmx"):
        quiet, loud = _quiet_loud(
            capfd, lambda **kw: flows.check(FLOW, ROWS, batch_size=5, **kw), 3, "batch"
        )  # 12 rows in calls of 5
    assert "12 row(s) of 6 unit(s), 3 call(s) of 5 rows" in _one_info(caplog, "check:")
    xr.testing.assert_identical(quiet, loud)
    # the round trip by transform / inverse, and log|det J| by central differences (float64)
    back = flows.inverse(FLOW, flows.transform(FLOW, ROWS)).values
    assert float(loud["invert_error"].max()) < 1e-5  # float32 rounding (other batch shapes)
    np.testing.assert_allclose(
        loud["invert_error"].values, np.abs(back - ROWS).max(axis=1), rtol=0, atol=5e-6
    )
    h = 1e-2
    for i in (0, 7):
        steps = np.concatenate([np.eye(D), -np.eye(D)]).astype(np.float32) * h
        y = flows.transform(FLOW, ROWS[i] + steps).values.astype(np.float64)
        jac = (y[:D] - y[D:]).T / (2 * h)  # column k: ∂y/∂x_k
        logabs = np.linalg.slogdet(jac)[1]
        np.testing.assert_allclose(loud["logdet"].values[i], logabs, rtol=0, atol=5e-3)
    # a dask x is computed under dask's bar first
    flows.check(FLOW, da.from_array(ROWS, chunks=5), batch_size=5, progress=True)
    shown = _shown(capfd)
    assert "100%" in shown and _finished(shown, 3, "batch")
