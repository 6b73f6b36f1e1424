"""tmx.flows.fit: disentangling known factors, the true training loss, seeds, early stopping,
streaming from Zarr, metadata, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import xarray as xr
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

import tmx
from tmx import flows

N, T = 400, 32


def synthetic_cube(seed: int = 0, n: int = N, t: int = T) -> tuple[xr.DataArray, dict]:
    """Units = a monotone nonlinearity of a random rotation of (identity (2), transformation
    parameter (1), noise (2)): identity per sample, parameter per transformation, noise per
    (sample, transformation)."""
    rng = np.random.default_rng(seed)
    identity = rng.normal(size=(n, 2))
    parameter = rng.normal(size=(t, 1))
    noise = rng.normal(size=(n, t, 2))
    latent = np.concatenate(
        [
            np.broadcast_to(identity[:, None], (n, t, 2)),
            np.broadcast_to(parameter[None], (n, t, 1)),
            noise,
        ],
        axis=-1,
    )
    rotation, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    mixed = latent @ rotation
    units = mixed + 0.5 * np.tanh(mixed)  # monotone
    cube = xr.DataArray(
        units.astype(np.float32),
        dims=("sample", "transformation", "unit"),
        coords={
            "sample": np.arange(n),
            "transformation": np.arange(t),
            "unit": np.arange(5),
            "layer": ("unit", ["h"] * 5),
            "channel": ("unit", np.arange(5)),
            "y": ("unit", [-1] * 5),
            "x": ("unit", [-1] * 5),
        },
        name="activation",
    )
    return cube, {"identity": identity, "parameter": parameter}


def held_out_r2(z: np.ndarray, target: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    """Linear R² of a block z (sample, transformation, k) against target, fitted on the train
    samples and scored on the held-out ones (scikit-learn, independent of tmx)."""
    k, c = z.shape[-1], target.shape[-1]
    model = LinearRegression().fit(z[train].reshape(-1, k), target[train].reshape(-1, c))
    return r2_score(target[test].reshape(-1, c), model.predict(z[test].reshape(-1, k)))


@pytest.fixture(scope="module")
def trained():
    cube, truth = synthetic_cube()
    pr = flows.pairs(cube, by=("sample", "transformation"), n=8000, seed=0)
    flow = flows.flow(5, blocks=3, hidden=(32, 32), coupling="additive", seed=0)
    flow, history = flows.fit(
        pr, flow=flow, dimensions=[2, 2, 1], epochs=20, progress=False, jit=False, jitter=0.0
    )
    return cube, truth, pr, flow, history


def test_fit_disentangles_known_factors(trained) -> None:
    cube, truth, _, flow, _ = trained
    z = np.asarray(flow(cube.values.reshape(-1, 5))[0]).reshape(N, T, 5)
    targets = {
        "sample": np.broadcast_to(truth["identity"][:, None], (N, T, 2)),
        "transformation": np.broadcast_to(truth["parameter"][None], (N, T, 1)),
    }
    blocks = {"sample": slice(2, 4), "transformation": slice(4, 5)}
    train, test = np.arange(300), np.arange(300, N)  # held-out samples
    for block, where in blocks.items():
        for target, values in targets.items():
            r2 = held_out_r2(z[..., where], values, train, test)
            if block == target:
                assert r2 >= 0.98, (block, target, r2)
            else:
                assert r2 <= 0.02, (block, target, r2)
    # negative control: the units themselves mix the factors
    x = cube.values
    assert held_out_r2(x[..., :2], targets["sample"], train, test) < 0.9


def test_history_is_the_true_loss(trained) -> None:
    _, _, pr, flow, history = trained
    loss = history["loss"].values
    assert history.sizes["epoch"] == 20 and list(history["epoch"].values[:2]) == [1, 2]
    assert np.all(np.isfinite(loss)) and np.all(loss != 0.0)
    assert loss[-1] < loss[0] and np.mean(loss[-5:]) < np.mean(loss[:5])
    assert np.all(history["invert_error"].values < 1e-4)
    assert np.all(history["seconds"].values > 0)
    assert history.attrs["n_train"] + history.attrs["n_val"] == 8000
    assert history.attrs["dimensions"] == [2, 2, 1]
    assert flow.factors == ["residual", "sample", "transformation"]
    assert flow.dimensions == [2, 2, 1]
    assert flow.unit_coords["layer"] == ["h"] * 5
    # val_loss is the mean pair loss of the held-out tail, recomputed independently
    n_train = history.attrs["n_train"]
    a = pr["a"].values[n_train:]
    b = pr["b"].values[n_train:]
    za, lda = flow(a)
    zb, ldb = flow(b)
    direct = flows.factor_loss(
        za.numpy(), zb.numpy(), lda.numpy(), ldb.numpy(), pr["rho"].values[n_train:], [2, 2, 1]
    )
    np.testing.assert_allclose(history["val_loss"].values[-1], direct, rtol=1e-5)


def test_loss_equals_the_mean_factor_loss_of_the_batches() -> None:
    # learning_rate 0: the weights stay put, so every epoch's loss is the mean over its
    # batches of the batch's mean factor_loss, i.e. (equal batches) the mean over the pairs
    cube, _ = synthetic_cube(1, n=40, t=8)
    pr = flows.pairs(cube, by=("sample", "transformation"), n=1100, seed=3)
    flow, history = flows.fit(
        pr,
        flow=flows.flow(5, blocks=2, hidden=(16,), seed=1),
        dimensions={"residual": 2, "sample": 2, "transformation": 1},
        epochs=2,
        batch_size=250,
        learning_rate=0.0,
        jitter=0.0,
        validation=100 / 1100,
        progress=False,
        jit=False,
    )
    assert history.attrs["n_train"] == 1000
    a, b = pr["a"].values[:1000], pr["b"].values[:1000]
    za, lda = flow(a)
    zb, ldb = flow(b)
    per_pair = flows.factor_loss(
        za.numpy(),
        zb.numpy(),
        lda.numpy(),
        ldb.numpy(),
        pr["rho"].values[:1000],
        [2, 2, 1],
        reduction="none",
    )
    np.testing.assert_allclose(history["loss"].values, per_pair.mean(), rtol=1e-6)
    assert history["loss"].values[0] != 0.0


def test_jitter_scale_and_its_effect_on_the_loss() -> None:
    cube, _ = synthetic_cube(8, n=40, t=8)
    pr = flows.pairs(cube, by=("sample", "transformation"), n=1100, seed=3)
    common = dict(
        dimensions=[2, 2, 1],
        epochs=1,
        batch_size=250,
        learning_rate=0.0,
        progress=False,
        jit=False,
        validation=100 / 1100,
    )
    plain = dict(blocks=1, hidden=(8,), standardize=False)
    _, clean = flows.fit(pr, jitter=0.0, flow=flows.flow(5, **plain), **common)
    _, noisy = flows.fit(pr, jitter=0.5, flow=flows.flow(5, **plain), **common)
    pooled = np.concatenate([pr["a"].values[:1000], pr["b"].values[:1000]]).astype(np.float64)
    rms = np.sqrt(np.mean(pooled.std(axis=0) ** 2))
    assert noisy.attrs["noise_std"] == pytest.approx(0.5 * rms, rel=1e-6)
    assert clean.attrs["noise_std"] == 0.0
    assert noisy.attrs["standardized"] == clean.attrs["standardized"] == 0
    # with a Standardize layer (the default) σ = jitter in standardised units
    flow, std = flows.fit(pr, jitter=0.5, flow=flows.flow(5, blocks=1, hidden=(8,)), **common)
    assert std.attrs["noise_std"] == 0.5 and std.attrs["standardized"] == 1
    np.testing.assert_allclose(
        np.exp(flow.flow_layers[0].log_scale.numpy()), pooled.std(axis=0), rtol=1e-5
    )
    # independent noise on both members decorrelates them: the loss of shared factors rises
    assert noisy["loss"].values[0] > clean["loss"].values[0]
    with pytest.raises(ValueError, match="jitter"):
        flows.fit(pr, jitter=-1.0, **common)


def test_fit_is_seeded_and_reproducible() -> None:
    cube, _ = synthetic_cube(2, n=40, t=8)
    pr = flows.pairs(cube, by=("sample", "transformation"), n=600, seed=0)

    def run(seed):
        flow, history = flows.fit(
            pr,
            dimensions=[2, 2, 1],
            epochs=3,
            batch_size=64,
            progress=False,
            seed=seed,
            jit=False,
            flow=flows.flow(5, blocks=2, hidden=(16,), seed=seed),
        )
        return flow, history

    f1, h1 = run(0)
    f2, h2 = run(0)
    np.testing.assert_array_equal(h1["loss"].values, h2["loss"].values)
    for w1, w2 in zip(f1.get_weights(), f2.get_weights(), strict=True):
        np.testing.assert_array_equal(w1, w2)
    assert len({float(v) for v in h1["loss"].values}) == 3  # it did train


def test_early_stopping_restores_the_best_epoch() -> None:
    cube, _ = synthetic_cube(3, n=40, t=8)
    pr = flows.pairs(cube, by=("sample", "transformation"), n=600, seed=0)
    flow, history = flows.fit(
        pr,
        dimensions=[2, 2, 1],
        epochs=30,
        batch_size=64,
        learning_rate=0.05,
        patience=2,
        jitter=0.0,
        progress=False,
        jit=False,
        flow=flows.flow(5, blocks=2, hidden=(16,), seed=0),
    )
    best = history.attrs["best_epoch"]
    assert history.attrs["stopped_early"] == 1 and history.sizes["epoch"] < 30
    assert history.sizes["epoch"] == best + 2
    n_train = history.attrs["n_train"]
    za, lda = flow(pr["a"].values[n_train:])
    zb, ldb = flow(pr["b"].values[n_train:])
    now = flows.factor_loss(
        za.numpy(), zb.numpy(), lda.numpy(), ldb.numpy(), pr["rho"].values[n_train:], [2, 2, 1]
    )
    np.testing.assert_allclose(now, history["val_loss"].values[best - 1], rtol=1e-5)


def test_fit_streams_pairs_of_a_zarr_cube(tmp_path) -> None:
    cube, _ = synthetic_cube(4, n=60, t=8)
    cube.attrs = {}
    store = tmp_path / "cube.zarr"
    xr.Dataset({"activation": cube.chunk({"sample": 10})}).to_zarr(store)
    lazy = xr.open_zarr(store)["activation"]
    assert lazy.chunks is not None
    pr = flows.pairs(lazy, by=("sample", "transformation"), n=2000, seed=0)
    assert isinstance(pr["a"].data, type(lazy.data))  # still lazy
    common = dict(dimensions=[2, 2, 1], epochs=3, batch_size=100, progress=False, jit=False, seed=0)
    _, h_stream = flows.fit(
        pr, memory=4096, flow=flows.flow(5, blocks=2, hidden=(16,), seed=0), **common
    )
    _, h_mem = flows.fit(pr.load(), flow=flows.flow(5, blocks=2, hidden=(16,), seed=0), **common)
    assert h_stream.attrs["source"] == "zarr" and h_mem.attrs["source"] == "memory"
    assert np.all(np.isfinite(h_stream["loss"].values))
    assert h_stream["loss"].values[-1] < h_stream["loss"].values[0]
    # the same pairs and weights: the first epoch's losses agree up to batch composition
    np.testing.assert_allclose(h_stream["val_loss"].values, h_mem["val_loss"].values, rtol=0.2)


def test_no_validation_and_estimated_dimensions() -> None:
    cube, _ = synthetic_cube(5, n=40, t=8)
    pr = flows.pairs(cube, by=("sample", "transformation"), n=600, seed=0)
    flow, history = flows.fit(
        pr,
        epochs=1,
        batch_size=64,
        validation=0.0,
        progress=False,
        jit=False,
        flow=flows.flow(5, blocks=1, hidden=(8,), seed=0),
    )
    assert np.isnan(history["val_loss"].values).all()
    assert np.isfinite(history["invert_error"].values).all()
    expected = flows.factor_dimensions(pr).values.tolist()
    assert flow.dimensions == expected == history.attrs["dimensions"]


def test_fitted_flow_round_trips_through_keras_files(trained, tmp_path) -> None:
    import keras

    cube, _, _, flow, _ = trained
    path = tmp_path / "flow.keras"
    flow.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.factors == flow.factors and loaded.dimensions == flow.dimensions
    assert loaded.unit_coords == flow.unit_coords
    x = cube.values[:3].reshape(-1, 5)
    np.testing.assert_array_equal(np.asarray(loaded(x)[0]), np.asarray(flow(x)[0]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dimensions": [2, 2, 2]}, "dimensions"),
        ({"dimensions": {"residual": 2, "sample": 2, "angle": 1}}, "dimensions: unknown factor"),
        ({"dimensions": [3, 2]}, "dimensions"),
        ({"dimensions": "guess"}, "dimensions"),
        ({"epochs": 0}, "epochs"),
        ({"validation": 1.0}, "validation"),
        ({"semantics": "nll"}, "semantics"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"patience": 0}, "patience"),
        ({"flow": "not a flow"}, "flow"),
    ],
)
def test_bad_arguments(kwargs, match) -> None:
    cube, _ = synthetic_cube(6, n=20, t=4)
    pr = flows.pairs(cube, by=("sample", "transformation"), n=100, seed=0)
    args = {"dimensions": [2, 2, 1], "epochs": 1, "progress": False, "jit": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        flows.fit(pr, **args)


def test_bad_pairs() -> None:
    cube, _ = synthetic_cube(6, n=20, t=4)
    pr = flows.pairs(cube, by=("sample", "transformation"), n=100, seed=0)
    with pytest.raises(ValueError, match="pairs must be"):
        flows.fit(cube, progress=False)
    with pytest.raises(ValueError, match="pairs must have a data variable 'rho'"):
        flows.fit(pr.drop_vars("rho"), progress=False)
    bad = pr.copy()
    bad["rho"] = bad["rho"] + 1.0
    with pytest.raises(ValueError, match="rho"):
        flows.fit(bad, dimensions=[2, 2, 1], progress=False)


def test_fit_under_mixed_precision_with_a_dead_unit_is_finite() -> None:
    import keras

    cube, _ = synthetic_cube(7, n=20, t=4)
    cube = cube.copy()
    cube[..., 0] = 0.0  # a dead unit
    pr = flows.pairs(cube, by=("sample", "transformation"), n=300, seed=0)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        flow, history = flows.fit(
            pr,
            dimensions=[2, 2, 1],
            epochs=2,
            batch_size=64,
            progress=False,
            jit=False,
            flow=flows.flow(5, blocks=1, hidden=(8,), seed=0),
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(history["loss"].values).all()
    assert np.isfinite(history["val_loss"].values).all()
    assert tf.reduce_all(tf.math.is_finite(flow(cube.values[0])[0]))


def test_top_level_api() -> None:
    assert tmx.flows.fit is flows.fit


def _nll(flow, a, b, rho, dims) -> np.ndarray:
    """Per-pair factor loss (gyoza form) in numpy float64 from the flow's outputs: an
    independent computation of the loss (no tmx loss code)."""
    za, lda = (np.asarray(t, np.float64) for t in flow(a))
    zb, ldb = (np.asarray(t, np.float64) for t in flow(b))
    r_d = np.repeat(np.asarray(rho, np.float64), dims, axis=1)
    var = 1.0 - r_d**2
    quad = za**2 + (zb - r_d * za) ** 2 / var + np.log(var)
    return 0.5 * quad.sum(axis=1) - lda - ldb


def test_xla_fit_of_ten_thousand_units() -> None:
    # the XLA step used to fail (tf.repeat in the loss) on layers wider than ~3,000 units
    d, n = 10_000, 256
    rng = np.random.default_rng(0)
    cube = xr.DataArray(
        rng.gamma(2.0, 1.0, size=(8, 4, d)).astype(np.float32),
        dims=("sample", "transformation", "unit"),
        coords={"unit": np.arange(d)},
    )
    pr = flows.pairs(cube, by=("sample", "transformation"), n=n, seed=0)
    dims = [d - 2, 1, 1]
    flow, history = flows.fit(
        pr,
        flow=flows.flow(d, blocks=1, hidden=(4,), seed=0),
        dimensions=dims,
        epochs=2,
        batch_size=n,
        learning_rate=0.0,
        jitter=0.0,
        validation=0.0,
        progress=False,
        jit=True,
    )
    assert history.attrs["jit"] == 1 and history.attrs["batch_size"] == n
    # one batch of all the pairs, weights fixed: the loss is their mean factor loss
    expected = _nll(flow, pr["a"].values, pr["b"].values, pr["rho"].values, dims).mean()
    np.testing.assert_allclose(history["loss"].values, expected, rtol=1e-5)
    assert np.all(history["invert_error"].values < 1e-3)


def tiny_cube(seed: int = 0, n: int = 40, t: int = 8, scale: float = 1e-12) -> xr.DataArray:
    """synthetic_cube's 5 units at a scale of ~1e-12 (as MobileNetV2's pooled units with
    random weights), plus two dead units (all 0) and a constant one."""
    cube, _ = synthetic_cube(seed, n=n, t=t)
    live = (cube.values.astype(np.float64) + 3.0) * scale
    dead = np.zeros((n, t, 2))
    const = np.full((n, t, 1), 2.5 * scale)
    values = np.concatenate([live, dead, const], axis=-1).astype(np.float32)
    return xr.DataArray(
        values,
        dims=("sample", "transformation", "unit"),
        coords={"unit": np.arange(8), "layer": ("unit", ["pool"] * 8)},
    )


@pytest.fixture(scope="module")
def tiny_fit():
    cube = tiny_cube()
    pr = flows.pairs(cube, by=("sample", "transformation"), n=1100, seed=0)
    flow, history = flows.fit(
        pr,
        flow=flows.flow(8, blocks=2, hidden=(16,), seed=0),
        dimensions=[4, 2, 2],
        epochs=4,
        batch_size=100,
        progress=False,
        jit=False,
    )
    return cube, pr, flow, history


def test_fit_standardises_units_of_scale_1e_minus_12_with_dead_units(tiny_fit) -> None:
    cube, pr, flow, history = tiny_fit
    # before: loss and val_loss ran to 1e35 then NaN, invert_error reported as 0.0
    for name in ("loss", "val_loss", "invert_error"):
        assert np.all(np.isfinite(history[name].values)), name
    assert history["loss"].values[-1] < history["loss"].values[0]
    assert history.attrs["standardized"] == 1
    assert np.all(history["invert_error"].values > 0)
    assert np.all(history["invert_error"].values < 1e-5 * 1e-12)  # in the layer's own units
    # the Standardize layer holds the training pairs' statistics (a and b pooled, float64)
    n_train = history.attrs["n_train"]
    pooled = np.concatenate([pr["a"].values[:n_train], pr["b"].values[:n_train]])
    mean, std = pooled.astype(np.float64).mean(axis=0), pooled.astype(np.float64).std(axis=0)
    standardize = flow.flow_layers[0]
    assert isinstance(standardize, flows.Standardize) and not standardize.trainable_weights
    np.testing.assert_allclose(standardize.loc.numpy(), mean, rtol=1e-5)
    scale = np.exp(standardize.log_scale.numpy().astype(np.float64))
    np.testing.assert_allclose(scale[:5], std[:5], rtol=1e-4)
    rms = np.sqrt(np.mean(std[:5] ** 2))  # dead and constant units: the live units' RMS scale
    np.testing.assert_allclose(scale[5:], rms, rtol=1e-4)
    # the trainable layers see units of scale 1; dead and constant units are exactly 0
    inner = np.asarray(standardize(cube.values.reshape(-1, 8))[0])
    np.testing.assert_array_equal(inner[:, 5:], 0.0)
    assert 0.5 < inner[:, :5].std() < 2.0
    z = flows.transform(flow, cube)
    assert np.all(np.isfinite(z.values)) and 0.1 < float(z.std()) < 10.0


def test_standardised_flow_transforms_consistently_after_save_and_load(tiny_fit, tmp_path):
    import keras

    cube, pr, flow, _ = tiny_fit
    z = flows.transform(flow, cube)
    # transform on the cube = the flow on the pairs' rows (what fit trained on)
    row = pr.isel(pair=0)
    one = cube.sel(sample=row["sample_a"], transformation=row["transformation_a"])
    np.testing.assert_array_equal(one.values, pr["a"].values[0])
    direct = np.asarray(flow(pr["a"].values[:1])[0])[0]
    np.testing.assert_allclose(flows.transform(flow, one.values[None]).values[0], direct, rtol=1e-5)
    path = tmp_path / "tiny.keras"
    flow.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.flow_layers[0], flows.Standardize)
    np.testing.assert_array_equal(flows.transform(loaded, cube).values, z.values)
    back = flows.inverse(loaded, z)
    np.testing.assert_allclose(back.values, cube.values, rtol=0, atol=1e-5 * 1e-12)
    assert list(back["layer"].values) == ["pool"] * 8


@pytest.mark.parametrize("build", [{"preset": "gyoza", "blocks": 1}, {"standardize": False}])
def test_fit_refuses_badly_scaled_units_without_standardize(build) -> None:
    pr = flows.pairs(tiny_cube(n=20, t=4), by=("sample", "transformation"), n=200, seed=0)
    flow = flows.flow(8, **build)
    with pytest.raises(ValueError, match=r"standard deviations are 1\.\d+e-12.*Standardize"):
        flows.fit(pr, flow=flow, dimensions=[4, 2, 2], epochs=1, progress=False, jit=False)


class _NanInverse:
    """Builds a flow whose inverse gives NaN: the inversion error must not read 0.0."""

    @staticmethod
    def flow():
        import keras

        class NanInverse(keras.layers.Layer):
            def call(self, x):
                return x, tf.zeros((tf.shape(x)[0],), x.dtype)

            def inverse(self, y):
                return y * np.nan, tf.zeros((tf.shape(y)[0],), y.dtype)

        layers = [flows.Standardize(), NanInverse(), flows.AdditiveCoupling([0, 1, 0, 1, 0])]
        f = flows.Flow(layers)
        f.build((None, 5))
        return f


def test_non_finite_values_stop_fit_with_the_epoch() -> None:
    cube, _ = synthetic_cube(9, n=20, t=4)
    pr = flows.pairs(cube, by=("sample", "transformation"), n=200, seed=0)
    common = dict(dimensions=[2, 2, 1], epochs=2, batch_size=50, progress=False, jit=False)

    def small():
        return flows.flow(5, blocks=1, hidden=(8,), seed=0)

    # a NaN in a held-out pair: the validation loss is NaN in epoch 1
    bad = pr.copy(deep=True)
    bad["a"][-1, 0] = np.nan
    with pytest.raises(FloatingPointError, match="validation loss is nan in epoch 1"):
        flows.fit(bad, flow=small(), **common)
    # a NaN in a training pair is refused before training
    bad = pr.copy(deep=True)
    bad["b"][3, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        flows.fit(bad, flow=small(), **common)
    # NaN from the inverse: never reported as an inversion error of 0.0
    with pytest.raises(FloatingPointError, match=r"inversion error .* is nan in epoch 1"):
        flows.fit(pr, flow=_NanInverse.flow(), **common)
    # a diverging training run stops in the epoch where the loss stops being finite
    with pytest.raises(FloatingPointError, match=r"training loss is (nan|inf|-inf) in epoch \d"):
        flows.fit(pr, flow=small(), learning_rate=1e30, **{**common, "epochs": 5})


def test_fit_in_float64() -> None:
    import keras

    cube, _ = synthetic_cube(10, n=20, t=4)
    pr = flows.pairs(cube, by=("sample", "transformation"), n=300, seed=0)
    common = dict(dimensions=[2, 2, 1], progress=False, jit=True, validation=0.0)
    f64 = flows.flow(5, blocks=1, hidden=(8,), seed=0, dtype="float64")
    flow, history = flows.fit(
        pr, flow=f64, epochs=1, batch_size=300, learning_rate=0.0, jitter=0.0, **common
    )
    assert history.attrs["dtype"] == "float64"
    assert all(w.dtype == "float64" for w in flow.weights)
    # the loss in float64 from end to end: equal to the numpy value to ~1e-12
    expected = _nll(
        flow,
        pr["a"].values.astype(np.float64),
        pr["b"].values.astype(np.float64),
        pr["rho"].values,
        [2, 2, 1],
    ).mean()
    np.testing.assert_allclose(history["loss"].values[0], expected, rtol=1e-11)
    z = flows.transform(flow, cube)
    assert z.dtype == np.float64
    np.testing.assert_allclose(flows.inverse(flow, z).values, cube.values, atol=1e-12)
    # the default flow (tmx.flows.flow(units, seed=, dtype=)) is built with dtype=, and a
    # float64 fit trains it: same layers and weight shapes as that flow, all in float64
    flow, history = flows.fit(
        pr, dtype="float64", epochs=2, batch_size=64, learning_rate=1e-2, **{**common, "jit": False}
    )
    default = flows.flow(5, seed=0, dtype="float64")
    default(np.zeros((2, 5)))  # built, so that its weights exist
    assert [type(layer) for layer in flow.layers] == [type(layer) for layer in default.layers]
    assert [tuple(w.shape) for w in flow.weights] == [tuple(w.shape) for w in default.weights]
    assert history.attrs["dtype"] == "float64" and flow.compute_dtype == "float64"
    assert all(w.dtype == "float64" for w in flow.weights)
    assert np.all(np.isfinite(history["loss"].values))
    assert history["loss"].values[1] < history["loss"].values[0]
    with pytest.raises(ValueError, match="dtype"):
        flows.fit(pr, flow=flows.flow(5, blocks=1, dtype="float32"), dtype="float64", **common)
    assert keras.config.dtype_policy().name == "float32"  # nothing global changed


def _fit_recording_traces(monkeypatch, pr, **kwargs):
    """fit, with every tf.function tmx compiles during fit recorded, and the symbolic
    (traced) calls of the flow and of its inverse counted."""
    made = []
    real = tf.function

    def recording(func=None, **options):
        if func is None:
            return lambda f: recording(f, **options)
        fn = real(func, **options)
        if getattr(func, "__module__", "").startswith("tmx."):
            made.append(fn)
        return fn

    monkeypatch.setattr(tf, "function", recording)
    flow = flows.flow(5, blocks=1, hidden=(8,), seed=0)
    traced = {"call": 0, "inverse": 0}
    for name in traced:
        real_method = getattr(flow, name)

        def counting(*args, _name=name, _real=real_method, **kw):
            traced[_name] += not tf.executing_eagerly()
            return _real(*args, **kw)

        monkeypatch.setattr(flow, name, counting)
    flow, history = flows.fit(pr, flow=flow, progress=False, jit=False, **kwargs)
    return flow, history, made, traced


def test_fit_traces_each_compiled_function_once(monkeypatch) -> None:
    # 1100 held-out pairs: more than one evaluation block (1024), of two sizes before padding
    cube, _ = synthetic_cube(9, n=50, t=8)
    pr = flows.pairs(cube, by=("sample", "transformation"), n=2200, seed=4)
    flow, history, made, traced = _fit_recording_traces(
        monkeypatch,
        pr,
        dimensions=[2, 2, 1],
        epochs=3,
        batch_size=250,
        validation=0.5,
        learning_rate=0.0,
        jitter=0.0,
    )
    assert history.attrs["n_val"] == 1100 and history.sizes["epoch"] == 3
    names = sorted(fn.python_function.__name__ for fn in made)
    assert names == ["evaluate", "train_step"]
    assert [fn.experimental_get_tracing_count() for fn in made] == [1, 1]
    # the flow is traced once per compiled function, its inverse once (the evaluation)
    assert traced == {"call": 2, "inverse": 1}
    # the padded blocks leave the numbers alone: the weights stay put (learning_rate 0), so
    # val_loss is the mean factor loss of the held-out pairs and invert_error their round trip
    a, b = pr["a"].values[1100:], pr["b"].values[1100:]
    za, lda = flow(a)
    zb, ldb = flow(b)
    direct = flows.factor_loss(
        za.numpy(), zb.numpy(), lda.numpy(), ldb.numpy(), pr["rho"].values[1100:], [2, 2, 1]
    )
    np.testing.assert_allclose(history["val_loss"].values, direct, rtol=1e-5)
    back = np.asarray(flow.inverse(za)[0])
    np.testing.assert_allclose(history["invert_error"].values, np.abs(back - a).max(), atol=1e-6)


def test_fit_progress_bar_when_asked_and_quiet_under_pytest(capsys) -> None:
    cube, _ = synthetic_cube(10, n=20, t=4)
    pr = flows.pairs(cube, by=("sample", "transformation"), n=100, seed=0)
    args = {"flow": flows.flow(5, blocks=1, hidden=(8,)), "dimensions": [2, 2, 1], "jit": False}
    flows.fit(pr, epochs=2, progress=True, **args)
    shown = capsys.readouterr().out
    assert "2/2" in shown and "val_loss" in shown
    flows.fit(pr, epochs=1, **args)
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="progress must be"):
        flows.fit(pr, progress="yes", **args)
