"""check and disentanglement of ``tmx.flows`` (``tmx/flows/_diagnostics.py``)."""

import warnings

import keras
import numpy as np
import pytest
import xarray as xr
from keras import ops
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

from tmx.flows import check, disentanglement, flow
from tmx.flows.layers import Flow

from .flow_helpers import perturb

D = 6


def _perturb(model, seed=0, scale=0.3):
    return perturb(model, seed, scale)


def _x(n=20, d=D, seed=0):
    return np.random.default_rng(seed).normal(0.3, 1.0, (n, d)).astype(np.float32)


class _Scale2(keras.layers.Layer):
    """y = 2x with a deliberately wrong logdet (off by ``logdet_offset``) or inverse (off by
    ``inverse_offset``): negative controls for ``check``."""

    def __init__(self, logdet_offset=0.0, inverse_offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.logdet_offset = logdet_offset
        self.inverse_offset = inverse_offset

    def _true_logdet(self, x):
        return ops.zeros((ops.shape(x)[0],)) + x.shape[-1] * np.log(2.0)

    def call(self, x):
        return 2.0 * x, self._true_logdet(x) + self.logdet_offset

    def inverse(self, y):
        return y / 2.0 + self.inverse_offset, -self._true_logdet(y) - self.logdet_offset

    def compute_output_spec(self, x):
        return keras.KerasTensor(x.shape, x.dtype), keras.KerasTensor((x.shape[0],), x.dtype)


def _single(layer):
    f = Flow([layer])
    f.build((None, D))
    return f


@pytest.mark.parametrize("coupling", ["affine", "additive"])
def test_check_passes_for_a_correct_flow(coupling):
    x = _x()
    f = flow(D, blocks=2, coupling=coupling, hidden=(16,), seed=7)
    f(x)
    _perturb(f, seed=7)
    assert np.max(np.abs(ops.convert_to_numpy(f(x)[0]) - x)) > 1e-2  # not the identity
    coords = {"sample": np.arange(100, 120), "label": ("sample", np.arange(20) % 2)}
    res = check(f, xr.DataArray(x, dims=("sample", "unit"), coords=coords))
    assert set(res.data_vars) == {
        "invert_error",
        "logdet_error",
        "logdet_inverse_error",
        "logdet",
        "finite",
    }
    assert res["invert_error"].dims == ("sample",)
    np.testing.assert_array_equal(res["sample"].values, coords["sample"])
    np.testing.assert_array_equal(res["label"].values, coords["label"][1])
    assert float(res["invert_error"].max()) < 1e-5
    assert float(res["logdet_error"].max()) <= 1e-4
    assert float(res["logdet_inverse_error"].max()) <= 1e-5
    assert bool(res["finite"].all())
    assert res.attrs["D"] == D and res.attrs["logdet_checked"]
    np.testing.assert_allclose(res["logdet"].values, ops.convert_to_numpy(f(x)[1]), atol=1e-5)
    if coupling == "additive":  # volume preserving apart from ActNorm: logdet is constant
        assert np.ptp(res["logdet"].values) < 1e-5


def test_check_negative_controls():
    x = _x()
    ok = check(_single(_Scale2()), x)
    assert float(ok["logdet_error"].max()) < 1e-5
    assert float(ok["invert_error"].max()) < 1e-6
    bad_logdet = check(_single(_Scale2(logdet_offset=0.5)), x)
    np.testing.assert_allclose(bad_logdet["logdet_error"].values, 0.5, atol=1e-5)
    assert float(bad_logdet["invert_error"].max()) < 1e-6
    bad_inverse = check(_single(_Scale2(inverse_offset=0.1)), x)
    np.testing.assert_allclose(bad_inverse["invert_error"].values, 0.1, atol=1e-5)
    assert float(bad_inverse["logdet_error"].max()) < 1e-5


def test_check_large_d_skips_the_jacobian_and_validates():
    x = _x()
    f = _single(_Scale2(logdet_offset=0.5))
    with pytest.warns(UserWarning, match="max_units"):
        res = check(f, x, max_units=4)
    assert np.all(np.isnan(res["logdet_error"].values))
    assert not res.attrs["logdet_checked"]
    assert float(res["invert_error"].max()) < 1e-6 and bool(res["finite"].all())
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        check(f, x[:3], batch_size=2)  # D ≤ max_units: no warning
    with pytest.raises(ValueError, match=r"^x"):
        check(f, x[:, :4])
    with pytest.raises(ValueError, match=r"^x"):
        check(f, xr.DataArray(x[:, None, :], dims=("sample", "transformation", "unit")))
    pairs = check(f, xr.DataArray(x, dims=("pair", "unit")))  # another row dim
    assert pairs["invert_error"].dims == ("pair",)
    with pytest.raises(ValueError, match=r"^flow"):
        check(keras.Sequential([keras.layers.Dense(D)]), x)


# -- disentanglement -------------------------------------------------------------------------------
N_S, N_T = 40, 6


def _synthetic(seed=0):
    """z over (sample, transformation, latent): block A = a linear function of t1(sample) plus
    tiny noise, block B = noise, the residual = a linear function of the angle."""
    rng = np.random.default_rng(seed)
    t1 = rng.normal(size=N_S)
    angle = np.linspace(-30.0, 30.0, N_T)
    a = np.stack([2.0 * t1 + 1.0, -t1], axis=-1)[:, None, :] + rng.normal(0, 1e-3, (N_S, N_T, 2))
    b = rng.normal(size=(N_S, N_T, 2))
    res = (angle / 30.0)[None, :, None] + rng.normal(0, 1e-3, (N_S, N_T, 1))
    values = np.concatenate([res, a, b], axis=-1).astype(np.float32)
    z = xr.DataArray(
        values,
        dims=("sample", "transformation", "latent"),
        coords={
            "sample": np.arange(N_S),
            "label": ("sample", np.arange(N_S) % 4),
            "angle": ("transformation", angle),
            "latent": np.arange(5),
            "factor": ("latent", ["residual", "A", "A", "B", "B"]),
        },
        attrs={"factors": ["residual", "A", "B", "C"], "dimensions": [1, 2, 2, 0]},
    )
    targets = xr.Dataset(
        {"t1": ("sample", t1), "angle": ("transformation", angle)},
        coords={"sample": np.arange(N_S)},
    )
    return z, targets


def _held_out(n, test_size, seed):
    """The documented split: the first round(test_size·n) of default_rng(seed).permutation(n)."""
    n_test = min(max(round(test_size * n), 1), n - 1)
    return np.random.default_rng(seed).permutation(n)[:n_test]


def test_disentanglement_on_synthetic_codes():
    z, targets = _synthetic()
    r2 = disentanglement(z, targets)
    assert r2.name == "r2" and r2.dims == ("factor", "target")
    assert r2["factor"].values.tolist() == ["residual", "A", "B", "C"]
    assert r2["target"].values.tolist() == ["t1", "angle"]
    assert r2["dimensions"].values.tolist() == [1, 2, 2, 0]
    assert float(r2.sel(factor="A", target="t1")) > 0.999
    assert float(r2.sel(factor="B", target="t1")) < 0.05
    assert float(r2.sel(factor="residual", target="angle")) > 0.999
    assert float(r2.sel(factor="A", target="angle")) < 0.05
    assert np.all(np.isnan(r2.sel(factor="C").values))  # a block of size 0
    # the split is by sample: held-out samples were never seen in training
    test_samples = _held_out(N_S, 0.25, 0)
    assert r2.attrs["split"] == "sample"
    assert r2.attrs["n_test"] == len(test_samples) * N_T
    assert r2.attrs["n_train"] == (N_S - len(test_samples)) * N_T
    # the same numbers with scikit-learn on that split
    test = np.isin(np.arange(N_S), test_samples)
    rows_test = np.repeat(test, N_T)
    x = z.values.reshape(-1, 5).astype(np.float64)
    y = np.repeat(targets["t1"].values, N_T)[:, None]
    for factor, cols in [("A", [1, 2]), ("B", [3, 4]), ("residual", [0])]:
        lr = LinearRegression().fit(x[~rows_test][:, cols], y[~rows_test])
        expected = r2_score(y[rows_test], lr.predict(x[rows_test][:, cols]))
        np.testing.assert_allclose(float(r2.sel(factor=factor, target="t1")), expected, atol=1e-9)


def test_disentanglement_multivariate_and_categorical_targets():
    z, _ = _synthetic(seed=1)
    onehot = np.eye(4)[np.arange(N_S) % 4]
    targets = xr.Dataset(
        {
            "label_onehot": (("sample", "class"), onehot),
            "label_str": ("sample", (np.arange(N_S) % 4).astype(str)),
        }
    )
    r2 = disentanglement(z, targets, test_size=0.3, seed=5)
    np.testing.assert_allclose(
        r2.sel(target="label_onehot").values, r2.sel(target="label_str").values, atol=1e-12
    )
    test = np.isin(np.arange(N_S), _held_out(N_S, 0.3, 5))
    rows_test = np.repeat(test, N_T)
    x = z.values.reshape(-1, 5).astype(np.float64)
    y = np.repeat(onehot, N_T, axis=0)
    lr = LinearRegression().fit(x[~rows_test][:, 3:5], y[~rows_test])
    expected = r2_score(
        y[rows_test], lr.predict(x[rows_test][:, 3:5]), multioutput="variance_weighted"
    )
    np.testing.assert_allclose(float(r2.sel(factor="B", target="label_onehot")), expected, 1e-9)
    # names of z's coordinates work as targets
    by_name = disentanglement(z, ["angle"], test_size=0.3, seed=5)
    assert float(by_name.sel(factor="residual", target="angle")) > 0.999


def test_disentanglement_without_sample_splits_rows():
    z, _ = _synthetic()
    z1 = z.isel(sample=0, drop=True).rename(transformation="view")
    z1 = xr.concat([z1] * 5, dim="view")  # 30 rows, no sample dim
    t = xr.Dataset({"v": ("view", np.arange(30.0))})
    r2 = disentanglement(z1, t, test_size=0.2)
    assert r2.attrs["split"] == "row"
    assert r2.attrs["n_test"] == 6 and r2.attrs["n_train"] == 24


def test_disentanglement_validates_its_arguments():
    z, targets = _synthetic()
    with pytest.raises(ValueError, match=r"^z"):
        disentanglement(z.rename(latent="dim"), targets)
    with pytest.raises(ValueError, match=r"^z"):
        disentanglement(z.drop_vars("factor"), targets)
    with pytest.raises(ValueError, match=r"^z"):
        disentanglement(z.values, targets)
    with pytest.raises(ValueError, match=r"^targets"):
        disentanglement(z, xr.Dataset({"t": (("sample", "a", "b"), np.zeros((N_S, 2, 2)))}))
    with pytest.raises(ValueError, match=r"^targets"):
        disentanglement(z, xr.Dataset({"t": ("subject", np.zeros(N_S))}))
    with pytest.raises(ValueError, match=r"^targets"):
        disentanglement(z, xr.Dataset({"t": ("sample", np.zeros(N_S - 1))}))
    with pytest.raises(ValueError, match=r"^targets"):
        shifted = targets.assign_coords(sample=np.arange(N_S) + 1)
        disentanglement(z, shifted)
    with pytest.raises(ValueError, match=r"^targets"):
        disentanglement(z, ["nope"])
    with pytest.raises(ValueError, match=r"^targets"):
        disentanglement(z, {"t1": targets["t1"]})
    with pytest.raises(ValueError, match="test_size"):
        disentanglement(z, targets, test_size=1.0)
    with pytest.raises(ValueError, match="seed"):
        disentanglement(z, targets, seed=-1)
