"""The factor loss and the IIN factor-dimension estimate (design note flows.md)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
import xarray as xr
from scipy import stats

from tmx.flows import factor_dimensions, factor_loss

# The worked example of flows.md ("Factor loss")
Z_A = np.array([[1.0, 0.0, 2.0, -1.0]])
Z_B = np.array([[0.5, 1.0, 1.0, -0.5]])
J_A = np.array([0.1])
J_B = np.array([-0.2])
RHO = np.array([0.0, 0.5, 0.975])
DIMS = [1, 1, 2]
GYOZA = 12.163565207591304
IIN = 15.315717299578045


def _reference(za, zb, ja, jb, rho, dims, semantics):
    """Per-pair loss, written out with plain numpy loops over pairs and dimensions."""
    za, zb = np.asarray(za, np.float64), np.asarray(zb, np.float64)
    rho = np.broadcast_to(np.asarray(rho, np.float64), (za.shape[0], len(dims)))
    out = np.zeros(za.shape[0])
    for i in range(za.shape[0]):
        rho_d = [rho[i, f] for f, size in enumerate(dims) for _ in range(size)]
        total = 0.0
        for d, r in enumerate(rho_d):
            total += 0.5 * za[i, d] ** 2 + 0.5 * (zb[i, d] - r * za[i, d]) ** 2 / (1 - r * r)
            if semantics == "gyoza":
                total += 0.5 * np.log(1 - r * r)
        out[i] = total - ja[i] - jb[i]
    return out


def _random(seed=0, batch=7, dims=(3, 2, 4), per_pair=True):
    rng = np.random.default_rng(seed)
    d = sum(dims)
    za = rng.normal(size=(batch, d))
    zb = 0.5 * za + rng.normal(size=(batch, d))
    ja, jb = rng.normal(size=batch), rng.normal(size=batch)
    shape = (batch, len(dims)) if per_pair else (len(dims),)
    rho = rng.uniform(0, 0.99, size=shape)
    rho[..., 0] = 0.0
    return za, zb, ja, jb, rho, list(dims)


# -- values ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("semantics", "expected"), [("gyoza", GYOZA), ("iin", IIN)])
def test_design_note_example(semantics, expected):
    got = factor_loss(Z_A, Z_B, J_A, J_B, RHO, DIMS, semantics=semantics)
    assert isinstance(got, np.floating)
    assert got == pytest.approx(expected, rel=1e-12)
    per_row = factor_loss(
        Z_A, Z_B, J_A, J_B, RHO[None], DIMS, semantics=semantics, reduction="none"
    )
    assert per_row.shape == (1,)
    assert per_row[0] == pytest.approx(expected, rel=1e-12)


def test_default_is_gyoza_mean():
    assert factor_loss(Z_A, Z_B, J_A, J_B, RHO, DIMS) == pytest.approx(GYOZA, rel=1e-12)


@pytest.mark.parametrize("semantics", ["gyoza", "iin"])
@pytest.mark.parametrize("per_pair", [True, False])
def test_matches_independent_formula(semantics, per_pair):
    za, zb, ja, jb, rho, dims = _random(per_pair=per_pair)
    expected = _reference(za, zb, ja, jb, rho, dims, semantics)
    none = factor_loss(za, zb, ja, jb, rho, dims, semantics=semantics, reduction="none")
    np.testing.assert_allclose(none, expected, rtol=1e-12)
    mean = factor_loss(za, zb, ja, jb, rho, dims, semantics=semantics)
    assert mean == pytest.approx(expected.mean(), rel=1e-12)


def test_empty_factor_block_and_scalar_logdets():
    za, zb, _, _, rho, _ = _random(dims=(3, 0, 6))
    dims = [3, 0, 6]
    got = factor_loss(za, zb, 0.25, -1.0, rho, dims, reduction="none")
    expected = _reference(za, zb, np.full(7, 0.25), np.full(7, -1.0), rho, dims, "gyoza")
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_float32_inputs_give_the_float64_value():
    za, zb, ja, jb, rho, dims = _random(seed=3)
    rho[:, 1:] = 0.999  # where float32 1 − ρ² loses digits
    exact = factor_loss(za, zb, ja, jb, rho, dims, reduction="none")
    f32 = [x.astype(np.float32) for x in (za, zb, ja, jb)]
    got = factor_loss(*f32, rho, dims, reduction="none")
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, exact, rtol=1e-6)
    tf_got = factor_loss(*(tf.constant(x) for x in f32), tf.constant(rho), dims, reduction="none")
    assert tf_got.dtype == tf.float64
    np.testing.assert_allclose(tf_got.numpy(), exact, rtol=1e-6)


def test_gaussian_negative_log_likelihood():
    """ℓ_gyoza = −log p(z_a) − log p(z_b | z_a) − D·log 2π − j_a − j_b (scipy densities)."""
    za, zb, ja, jb, rho, dims = _random(seed=5)
    d = za.shape[1]
    got = factor_loss(za, zb, ja, jb, rho, dims, reduction="none")
    for i in range(za.shape[0]):
        r = np.repeat(rho[i], dims)
        log_a = stats.norm.logpdf(za[i]).sum()
        log_b = stats.norm.logpdf(zb[i], loc=r * za[i], scale=np.sqrt(1 - r**2)).sum()
        cov = np.block([[np.eye(d), np.diag(r)], [np.diag(r), np.eye(d)]])
        joint = stats.multivariate_normal(np.zeros(2 * d), cov).logpdf(np.r_[za[i], zb[i]])
        assert log_a + log_b == pytest.approx(joint, rel=1e-10)
        nll = -joint - d * np.log(2 * np.pi) - ja[i] - jb[i]
        assert got[i] == pytest.approx(nll, rel=1e-10)


# -- TensorFlow ----------------------------------------------------------------------------------
def _gradients(semantics, tensors, rho, dims, function=False):
    def loss(*args):
        return factor_loss(*args, rho, dims, semantics=semantics)

    def step(za, zb, ja, jb):
        with tf.GradientTape() as tape:
            tape.watch([za, zb, ja, jb])
            value = loss(za, zb, ja, jb)
        return value, tape.gradient(value, [za, zb, ja, jb])

    return (tf.function(step) if function else step)(*tensors)


@pytest.mark.parametrize("function", [False, True])
def test_gradients_exist_and_agree_between_semantics(function):
    za, zb, ja, jb, rho, dims = _random(seed=1)
    tensors = [tf.constant(x, tf.float32) for x in (za, zb, ja, jb)]
    value_g, grads_g = _gradients("gyoza", tensors, tf.constant(rho), dims, function)
    value_i, grads_i = _gradients("iin", tensors, tf.constant(rho), dims, function)
    assert value_g.dtype == tf.float64
    assert value_g.numpy() == pytest.approx(
        _reference(za, zb, ja, jb, rho, dims, "gyoza").mean(), rel=1e-6
    )
    assert value_i.numpy() != pytest.approx(value_g.numpy())
    for g, i, x in zip(grads_g, grads_i, tensors, strict=True):
        assert g is not None and g.dtype == tf.float32 and g.shape == x.shape
        assert np.all(np.isfinite(g.numpy()))
        np.testing.assert_array_equal(g.numpy(), i.numpy())
    # d/dz_a of the mean loss, by hand
    r = np.repeat(rho, dims, axis=1)
    expected = (za - r * (zb - r * za) / (1 - r**2)) / za.shape[0]
    np.testing.assert_allclose(grads_g[0].numpy(), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads_g[2].numpy(), np.full(7, -1 / 7), rtol=1e-6)


def test_tensor_in_numpy_out():
    got = factor_loss(*(tf.constant(x) for x in (Z_A, Z_B, J_A, J_B)), RHO, DIMS)
    assert tf.is_tensor(got)
    assert got.numpy() == pytest.approx(GYOZA, rel=1e-12)
    var = tf.Variable(RHO)
    assert factor_loss(Z_A, Z_B, J_A, J_B, var, DIMS).numpy() == pytest.approx(GYOZA, rel=1e-12)
    z = keras.Variable(Z_A)
    with tf.GradientTape() as tape:
        got = factor_loss(z, Z_B, J_A, J_B, RHO, DIMS)
    assert got.numpy() == pytest.approx(GYOZA, rel=1e-12)
    assert tape.gradient(got, z.value) is not None


def test_symbolic_rho_is_checked_when_run():
    @tf.function(input_signature=[tf.TensorSpec([3], tf.float64)])
    def loss(rho):
        return factor_loss(Z_A, Z_B, J_A, J_B, rho, DIMS)

    assert loss(tf.constant(RHO)).numpy() == pytest.approx(GYOZA, rel=1e-12)
    with pytest.raises(tf.errors.InvalidArgumentError, match="rho"):
        loss(tf.constant([0.0, 0.5, 1.0], tf.float64))
    with pytest.raises(tf.errors.InvalidArgumentError, match="rho"):
        loss(tf.constant([0.0, -0.1, 0.5], tf.float64))


def test_constant_rho_is_checked_at_tracing():
    @tf.function
    def loss(za):
        return factor_loss(za, Z_B, J_A, J_B, tf.constant([0.0, 0.5, 1.0]), DIMS)

    with pytest.raises(ValueError, match="rho"):
        loss(tf.constant(Z_A))


# -- bad arguments -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "rho",
    [[0.0, 0.5, 1.0], [0.0, 0.5, 1.5], [0.0, -0.01, 0.5], [0.0, np.nan, 0.5], [[0.0, 0.5, 1.0]]],
)
def test_rho_outside_unit_interval(rho):
    with pytest.raises(ValueError, match="rho"):
        factor_loss(Z_A, Z_B, J_A, J_B, rho, DIMS)
    with pytest.raises(ValueError, match="rho"):
        factor_loss(*(tf.constant(x) for x in (Z_A, Z_B, J_A, J_B)), tf.constant(rho), DIMS)


@pytest.mark.parametrize("rho", [0.5, [0.0, 0.5], [[0.0, 0.5, 0.5]] * 2])
def test_rho_shape(rho):
    with pytest.raises(ValueError, match="rho"):
        factor_loss(Z_A, Z_B, J_A, J_B, rho, DIMS)


@pytest.mark.parametrize("dims", [[1, 1, 1], [2, 3], [1, -1, 4], [1.0, 1.0, 2.0], []])
def test_dimensions_must_sum_to_width(dims):
    with pytest.raises(ValueError, match="dimensions"):
        factor_loss(Z_A, Z_B, J_A, J_B, RHO[: max(len(dims), 1)], dims)


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="semantics"):
        factor_loss(Z_A, Z_B, J_A, J_B, RHO, DIMS, semantics="tf")
    with pytest.raises(ValueError, match="reduction"):
        factor_loss(Z_A, Z_B, J_A, J_B, RHO, DIMS, reduction="sum")
    with pytest.raises(ValueError, match="z_b"):
        factor_loss(Z_A, Z_B[:, :3], J_A, J_B, RHO, DIMS)
    with pytest.raises(ValueError, match="z_a"):
        factor_loss(Z_A[0], Z_B[0], J_A, J_B, RHO, DIMS)
    with pytest.raises(ValueError, match="logdet_a"):
        factor_loss(Z_A, Z_B, np.zeros(3), J_B, RHO, DIMS)


# -- factor dimensions ---------------------------------------------------------------------------
def _pairs_dataset(a, b, drawn, factors, chunks=None):
    ds = xr.Dataset(
        {"a": (("pair", "unit"), a), "b": (("pair", "unit"), b)},
        coords={"drawn": ("pair", np.asarray(drawn)), "factor": ["residual", *factors]},
    )
    return ds.chunk(chunks) if chunks else ds


def _scores_by_loops(a, b, drawn, factors):
    """score_F of flows.md, with plain loops (independent of the implementation)."""
    n_pairs, n_units = a.shape
    var = 0.0
    for k in range(n_units):
        pooled = [a[p, k] for p in range(n_pairs)] + [b[p, k] for p in range(n_pairs)]
        mean = sum(pooled) / len(pooled)
        var += sum((x - mean) ** 2 for x in pooled) / len(pooled)
    scores = [1.0]
    for f in factors:
        rows = [p for p in range(n_pairs) if drawn[p] == f]
        cov = 0.0
        for k in range(n_units):
            m = 0.5 * (
                sum(a[p, k] for p in rows) / len(rows) + sum(b[p, k] for p in rows) / len(rows)
            )
            cov += sum((a[p, k] - m) * (b[p, k] - m) for p in rows) / len(rows)
        scores.append(cov / var)
    return np.array(scores)


def test_factor_dimensions_small_example():
    a = np.array([[1.0, 2.0, 0.0], [2.0, 0.0, 1.0], [0.0, 1.0, 3.0], [3.0, 3.0, 1.0]])
    b = np.array([[1.5, 2.0, 0.5], [2.0, 1.0, 0.0], [1.0, 0.0, 3.0], [3.0, 2.0, 2.0]])
    drawn = ["sample", "label", "sample", "label"]
    ds = _pairs_dataset(a, b, drawn, ["sample", "label"])
    got = factor_dimensions(ds, total=16)
    scores = _scores_by_loops(a, b, drawn, ["sample", "label"])
    np.testing.assert_allclose(got["score"].values, scores, rtol=1e-12)
    assert got["score"].values[0] == 1.0
    soft = np.exp(scores) / np.exp(scores).sum()
    expected = np.floor(soft * 16).astype(int)
    expected[0] = 16 - expected[1:].sum()
    np.testing.assert_array_equal(got.values, expected)
    assert got.dims == ("factor",)
    assert list(got["factor"].values) == ["residual", "sample", "label"]
    assert got.dtype == np.int64 and int(got.sum()) == 16
    assert got.attrs["total"] == 16 and got.attrs["pairs_per_factor"] == [2, 2]
    assert "softmax" in got.attrs["formula"]


def test_factor_dimensions_default_total_and_correlated_factor_wins():
    rng = np.random.default_rng(0)
    n, u = 400, 32
    a = rng.normal(size=(n, u)) + 100.0  # a large mean must not cost digits
    drawn = np.where(np.arange(n) % 2 == 0, "sample", "transformation")
    b = 100.0 + rng.normal(size=(n, u))
    same = drawn == "sample"
    b[same] = a[same] + 0.3 * rng.normal(size=(int(same.sum()), u))
    ds = _pairs_dataset(a, b, drawn, ["sample", "transformation"])
    got = factor_dimensions(ds)
    assert int(got.sum()) == u
    scores = _scores_by_loops(a - 100.0, b - 100.0, drawn, ["sample", "transformation"])
    np.testing.assert_allclose(got["score"].values, scores, rtol=1e-9, atol=1e-12)
    assert got.sel(factor="sample") > got.sel(factor="transformation")


def test_factor_dimensions_numpy_and_dask_identical():
    rng = np.random.default_rng(2)
    n, u = 90, 12
    a = rng.normal(size=(n, u)).astype(np.float32)
    b = (0.6 * a + rng.normal(size=(n, u))).astype(np.float32)
    drawn = np.array(["sample", "transformation", "label"])[np.arange(n) % 3]
    factors = ["sample", "transformation", "label"]
    eager = factor_dimensions(_pairs_dataset(a, b, drawn, factors))
    lazy_ds = _pairs_dataset(a, b, drawn, factors, chunks={"pair": 16, "unit": 5})
    lazy = factor_dimensions(lazy_ds, total=u)
    xr.testing.assert_identical(eager.drop_vars("score"), lazy.drop_vars("score"))
    np.testing.assert_allclose(eager["score"], lazy["score"], rtol=1e-12)
    np.testing.assert_allclose(
        eager["score"], _scores_by_loops(a.astype(float), b.astype(float), drawn, factors), 1e-9
    )


def test_factor_dimensions_bad_input():
    a = np.ones((4, 3))
    ds = _pairs_dataset(a, a, ["x", "x", "x", "x"], ["x"])
    with pytest.raises(ValueError, match="variance"):
        factor_dimensions(ds)
    with pytest.raises(ValueError, match="pairs"):
        factor_dimensions(ds["a"])
    with pytest.raises(ValueError, match="total"):
        factor_dimensions(ds, total=0)
    rng = np.random.default_rng(0)
    ds = _pairs_dataset(rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), ["x"] * 4, ["x", "y"])
    with pytest.raises(ValueError, match="'y'"):
        factor_dimensions(ds)


@pytest.mark.parametrize("dims", [[9998, 1, 1], [3334, 3333, 3333]])
def test_xla_compiled_loss_of_a_wide_layer(dims):
    # tf.repeat's XLA lowering failed here (a reshape to the wrong size) from ~3,000 units
    batch = 256
    rng = np.random.default_rng(0)
    za = rng.normal(size=(batch, sum(dims))).astype(np.float32)
    zb = (0.5 * za + rng.normal(size=za.shape)).astype(np.float32)
    rho = rng.uniform(0.0, 0.9, size=(batch, len(dims)))
    jitted = tf.function(
        lambda a, b, r: factor_loss(a, b, tf.zeros(batch), tf.zeros(batch), r, dims),
        jit_compile=True,
    )
    got = float(jitted(tf.constant(za), tf.constant(zb), tf.constant(rho)))
    # independent: ρ per dimension by numpy's repeat, the Gaussian negative log-likelihood
    za64, zb64 = za.astype(np.float64), zb.astype(np.float64)
    r_d = np.repeat(rho, dims, axis=1)
    var = 1.0 - r_d**2
    per_pair = 0.5 * (za64**2 + (zb64 - r_d * za64) ** 2 / var + np.log(var)).sum(axis=1)
    np.testing.assert_allclose(got, per_pair.mean(), rtol=1e-10)


def test_gyoza_rho_clipping_is_reproduced_by_clipping_rho_yourself():
    # gyoza 0.3.0 clips ρ ≥ 1 to 1 − 1e−6 silently; tmx refuses ρ = 1, and clipping ρ before
    # the call gives gyoza's (float64) value
    za, zb, ja, jb, rho, dims = _random(4, per_pair=False)
    rho = rho.copy()
    rho[-1] = 1.0
    with pytest.raises(ValueError, match="rho"):
        factor_loss(za, zb, ja, jb, rho, dims)
    clipped = np.minimum(rho, 1.0 - 1e-6)
    expected = _reference(za, zb, ja, jb, np.where(rho >= 1.0, 1.0 - 1e-6, rho), dims, "gyoza")
    np.testing.assert_allclose(factor_loss(za, zb, ja, jb, clipped, dims), expected.mean(), 1e-9)
