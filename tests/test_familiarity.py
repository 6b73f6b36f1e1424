"""Gaussian-mixture familiarity against direct scikit-learn computations."""

from __future__ import annotations

import inspect

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from tmx import __version__
from tmx.introspect.familiarity import familiarity

LAYERS = np.array(["a"] * 3 + ["b"] * 4)


def _responses(n: int, seed: int, chunks: tuple[int, ...] | None = None) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    values = rng.normal(size=(n, 7)) + 3.0 * labels[:, None]
    data = values if chunks is None else da.from_array(values, chunks=(chunks, -1))
    return xr.DataArray(
        data,
        dims=("sample", "unit"),
        coords={
            "sample": np.arange(100, 100 + n),
            "label": ("sample", labels),
            "layer": ("unit", LAYERS),
            "channel": ("unit", np.arange(7)),
        },
    )


def _direct(
    x: np.ndarray,
    y: np.ndarray,
    components: int,
    covariance: str,
    seed: int,
    max_iter: int = 200,
    tol: float = 1e-3,
):
    model = GaussianMixture(
        n_components=components,
        covariance_type=covariance,
        random_state=seed,
        max_iter=max_iter,
        tol=tol,
    )
    return model.fit(x).score_samples(y)


def _dnikit_scores(model: GaussianMixture, y: np.ndarray) -> np.ndarray:
    """DNIKit's scoring of a fitted mixture: scipy's multivariate normal log-density of every
    component (a diag covariance expanded to a full matrix), in float64, log-sum-exp with the
    log weights."""
    cov = np.asarray(model.covariances_, dtype=np.float64)
    if model.covariance_type == "diag":
        cov = np.stack([np.diag(c) for c in cov])
    y64 = np.asarray(y, dtype=np.float64)
    logs = [
        multivariate_normal(np.asarray(mu, dtype=np.float64), c).logpdf(y64)
        for mu, c in zip(model.means_, cov, strict=True)
    ]
    w = np.log(np.asarray(model.weights_, dtype=np.float64))
    return logsumexp(np.stack(logs, axis=1) + w, axis=1)


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_matches_sklearn(covariance: str) -> None:
    fit, sco = _responses(60, 0), _responses(17, 1)
    out = familiarity(fit, sco, n_components=3, covariance=covariance, seed=4)
    assert out["familiarity"].dims == ("sample", "layer")
    assert out["familiarity"].dtype == np.float64
    assert list(out["layer"].values) == ["a", "b"]
    np.testing.assert_array_equal(out["sample"].values, sco["sample"].values)
    np.testing.assert_array_equal(out["label"].values, sco["label"].values)
    for name in ("a", "b"):
        cols = LAYERS == name
        exp = _direct(fit.values[:, cols], sco.values[:, cols], 3, covariance, 4)
        np.testing.assert_allclose(
            out["familiarity"].sel(layer=name).values, exp, rtol=0, atol=1e-10
        )
    assert out.attrs == {
        "n_components": 3,
        "covariance": covariance,
        "seed": 4,
        "max_iter": 200,
        "tol": 1e-3,
        "score_dtype": "float64",
        "by": "None",
        "introspector": "familiarity",
        "tmx_version": __version__,
    }


def test_default_score_is_fit_on_and_reproducible() -> None:
    fit = _responses(40, 2)
    one = familiarity(fit, n_components=2)
    xr.testing.assert_identical(one, familiarity(fit, fit, n_components=2))
    xr.testing.assert_identical(one, familiarity(fit, n_components=2))
    exp = _direct(fit.values[:, LAYERS == "b"], fit.values[:, LAYERS == "b"], 2, "diag", 0)
    np.testing.assert_allclose(one["familiarity"].sel(layer="b").values, exp, rtol=0, atol=1e-10)


def test_dask_parity_and_layers() -> None:
    eager = familiarity(_responses(50, 3), _responses(19, 4), n_components=2)
    lazy = familiarity(
        _responses(50, 3, chunks=(13, 30, 7)), _responses(19, 4, chunks=(5, 9, 5)), n_components=2
    )
    np.testing.assert_allclose(eager["familiarity"].values, lazy["familiarity"].values, atol=1e-10)
    # numpy responses of more samples than one 4096-row block are scored block by block
    fit, many = _responses(50, 3), _responses(4133, 4)
    chunked = familiarity(fit, many, n_components=2)
    for name in ("a", "b"):
        exp = _direct(fit.values[:, LAYERS == name], many.values[:, LAYERS == name], 2, "diag", 0)
        np.testing.assert_allclose(
            chunked["familiarity"].sel(layer=name).values, exp, rtol=0, atol=1e-10
        )
    only_b = familiarity(_responses(50, 3), _responses(19, 4), n_components=2, layers=["b"])
    assert list(only_b["layer"].values) == ["b"]
    np.testing.assert_allclose(
        only_b["familiarity"].values[:, 0], eager["familiarity"].sel(layer="b").values, atol=1e-10
    )


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_by_label_matches_per_label_models(covariance: str) -> None:
    fit, sco = _responses(60, 5), _responses(15, 6)
    out = familiarity(fit, sco, n_components=2, covariance=covariance, by="label", seed=1)
    assert out["familiarity"].dims == ("sample", "layer", "label_model")
    np.testing.assert_array_equal(out["label_model"].values, [0, 1])
    labels_fit, labels_sco = fit["label"].values, sco["label"].values
    for name in ("a", "b"):
        cols = LAYERS == name
        for lab in (0, 1):
            x = fit.values[labels_fit == lab][:, cols]
            exp = _direct(x, sco.values[:, cols], 2, covariance, 1)
            got = out["familiarity"].sel(layer=name, label_model=lab).values
            np.testing.assert_allclose(got, exp, rtol=0, atol=1e-10)
        own = out["familiarity_own"].sel(layer=name).values
        full = out["familiarity"].sel(layer=name).values
        np.testing.assert_array_equal(own, full[np.arange(len(labels_sco)), labels_sco])
    assert out.attrs["by"] == "label"


def test_by_label_score_without_labels() -> None:
    fit = _responses(40, 7)
    sco = _responses(9, 8).drop_vars("label")
    with pytest.raises(ValueError, match="score"):
        familiarity(fit, sco, n_components=2, by="label")
    own = familiarity(fit, n_components=2, by="label")
    assert "familiarity_own" in own


def test_outlier_scores_lower() -> None:
    fit = _responses(80, 9)
    sco = _responses(10, 10)
    values = sco.values.copy()
    values[3] = 25.0
    sco = sco.copy(data=values)
    out = familiarity(fit, sco, n_components=2)
    for name in ("a", "b"):
        f = out["familiarity"].sel(layer=name).values
        assert f[3] < np.delete(f, 3).min()


def test_cube_inputs() -> None:
    base = _responses(30, 11)
    cube = xr.concat([base, base * 2.0], dim="transformation").transpose(
        "sample", "transformation", "unit"
    )
    out = familiarity(cube, n_components=2, transformation=1)
    cols = LAYERS == "a"
    x = base.values[:, cols] * 2.0
    np.testing.assert_allclose(
        out["familiarity"].sel(layer="a").values, _direct(x, x, 2, "diag", 0), atol=1e-10
    )
    stacked = familiarity(cube, n_components=2, transformation="stack")
    assert stacked.sizes["sample"] == 60


def test_errors() -> None:
    fit = _responses(20, 12)
    with pytest.raises(ValueError, match="components"):
        familiarity(fit, n_components=0)
    with pytest.raises(ValueError, match="components"):
        familiarity(fit, n_components=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="covariance"):
        familiarity(fit, covariance="spherical")
    with pytest.raises(ValueError, match="unknown layers"):
        familiarity(fit, layers=["zzz"])
    with pytest.raises(ValueError, match="by='nope'"):
        familiarity(fit, by="nope")
    with pytest.raises(ValueError, match="fewer than n_components"):
        familiarity(fit, n_components=21)
    few = fit.assign_coords(label=("sample", np.where(np.arange(20) < 2, 7, 0)))
    with pytest.raises(ValueError, match="label=7 has 2 samples"):
        familiarity(few, n_components=3, by="label")
    with pytest.raises(ValueError, match="same units"):
        familiarity(fit, fit.isel(unit=slice(0, 5)))
    other = fit.assign_coords(layer=("unit", np.array(["a"] * 4 + ["b"] * 3)))
    with pytest.raises(ValueError, match="'layer'"):
        familiarity(fit, other)
    with pytest.raises(ValueError, match="'channel'"):
        familiarity(fit, fit.assign_coords(channel=("unit", np.arange(7)[::-1])))


def test_defaults_are_dnikits() -> None:
    """DNIKit's GMM strategy: 5 diag components, max_iterations=200, convergence 1e-3."""
    params = inspect.signature(familiarity).parameters
    assert params["n_components"].default == 5
    assert params["covariance"].default == "diag"
    assert params["max_iter"].default == 200
    assert params["tol"].default == 1e-3
    assert params["score_dtype"].default == "float64"


def test_max_iter_default_is_200() -> None:
    """With tol=0 EM runs to max_iter, and 100 and 200 iterations give different mixtures: the
    default equals scikit-learn's with max_iter=200, and max_iter=100 is passed through."""
    rng = np.random.default_rng(21)
    values = np.concatenate([rng.normal(size=(150, 7)), 0.7 * rng.normal(size=(150, 7)) + 0.4])
    fit = _responses(300, 0).copy(data=values)
    cols = LAYERS == "b"
    x = values[:, cols]
    with pytest.warns(ConvergenceWarning):
        at200 = _direct(x, x, 4, "diag", 3, max_iter=200, tol=0.0)
    with pytest.warns(ConvergenceWarning):
        at100 = _direct(x, x, 4, "diag", 3, max_iter=100, tol=0.0)
    assert np.max(np.abs(at200 - at100)) > 1e-6  # the iteration count matters here
    with pytest.warns(ConvergenceWarning):  # tol=0: EM never stops before max_iter
        out = familiarity(fit, n_components=4, seed=3, tol=0.0)
    np.testing.assert_allclose(out["familiarity"].sel(layer="b").values, at200, rtol=0, atol=1e-10)
    with pytest.warns(ConvergenceWarning):
        out100 = familiarity(fit, n_components=4, seed=3, tol=0.0, max_iter=100)
    np.testing.assert_allclose(
        out100["familiarity"].sel(layer="b").values, at100, rtol=0, atol=1e-10
    )
    assert out.attrs["max_iter"] == 200 and out100.attrs["max_iter"] == 100


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_float32_scored_in_float64_like_dnikit(covariance: str) -> None:
    """float32 responses (a tmx cube's dtype) are fitted as scikit-learn fits the float32 array
    (what DNIKit hands it) and scored in float64: equal to DNIKit's scipy scoring of that fit
    to 1e-9 relative, where scoring in float32 is off by far more."""
    rng = np.random.default_rng(22)
    n, units = 400, 40
    pre = rng.normal(size=(n, 6)) @ rng.normal(size=(6, units)) + rng.normal(size=(n, units))
    values = np.maximum(pre + 0.5, 0).astype(np.float32) + np.float32(0.05) * rng.random(
        (n, units), dtype=np.float32
    )
    layers = np.array(["one"] * units)
    fit = xr.DataArray(values, dims=("sample", "unit"), coords={"layer": ("unit", layers)})
    out = familiarity(fit, n_components=3, covariance=covariance, seed=2)
    model = GaussianMixture(3, covariance_type=covariance, random_state=2, max_iter=200).fit(values)
    assert model.means_.dtype == np.float32
    expected = _dnikit_scores(model, values)
    got = out["familiarity"].sel(layer="one").values
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=0)
    old = familiarity(fit, n_components=3, covariance=covariance, seed=2, score_dtype="input")
    np.testing.assert_allclose(
        old["familiarity"].sel(layer="one").values, model.score_samples(values), rtol=0, atol=1e-10
    )
    assert (
        np.max(np.abs(old["familiarity"].sel(layer="one").values - expected) / np.abs(expected))
        > 1e-8
    )


def test_float64_input_unchanged_by_score_dtype() -> None:
    fit = _responses(80, 5)
    a = familiarity(fit, n_components=2, seed=1)
    b = familiarity(fit, n_components=2, seed=1, score_dtype="input")
    np.testing.assert_array_equal(a["familiarity"].values, b["familiarity"].values)
    with pytest.raises(ValueError, match="score_dtype"):
        familiarity(fit, score_dtype="float32")
    with pytest.raises(ValueError, match="max_iter"):
        familiarity(fit, max_iter=0)
    with pytest.raises(ValueError, match="tol"):
        familiarity(fit, tol=-1.0)
