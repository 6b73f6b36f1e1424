"""tmx.datasets (the scikit-learn digits) and tmx.models (small CNN, cached trained model)."""

from __future__ import annotations

import os
import time
import warnings

import keras
import numpy as np
import pytest
import xarray as xr
from scipy import ndimage
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import tmx
from tmx import datasets, models


# -- helpers ------------------------------------------------------------------------------------
def _hand_bilinear(img: np.ndarray, size: int) -> np.ndarray:
    """Corner-aligned bilinear resize of one square image, computed axis by axis."""
    h = img.shape[0]
    grid = np.arange(size) * (h - 1) / (size - 1)
    rows = np.stack([np.interp(grid, np.arange(h), row) for row in img])  # (h, size)
    return np.stack([np.interp(grid, np.arange(h), col) for col in rows.T], axis=1)


def _accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    logits = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == y))


class _FitCounter:
    """Patches ``keras.Model.fit`` to count the calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = keras.Model.fit

        def fit(model, *args, **kwargs):
            self.calls += 1
            return original(model, *args, **kwargs)

        monkeypatch.setattr(keras.Model, "fit", fit)


@pytest.fixture(scope="module")
def data28() -> datasets.Digits:
    return datasets.digits(28, seed=0)


@pytest.fixture(scope="module")
def default_model(tmp_path_factory):
    """The default configuration, trained once for the module (timed)."""
    cache = tmp_path_factory.mktemp("cache-default")
    start = time.perf_counter()
    model = models.trained_small_cnn(cache_dir=cache)
    return model, time.perf_counter() - start, cache


# -- datasets.digits ----------------------------------------------------------------------------
def test_digits_shapes_dtypes_labels(data28):
    d = data28
    assert d.x_train.shape == (1347, 28, 28, 1) and d.x_test.shape == (450, 28, 28, 1)
    assert d.y_train.shape == (1347,) and d.y_test.shape == (450,)
    assert d.x_train.dtype == np.float32 and d.x_test.dtype == np.float32
    assert d.y_train.dtype == np.int64 and d.y_test.dtype == np.int64
    assert set(np.unique(d.y_train)) == set(range(10)) == set(np.unique(d.y_test))
    assert (d.size, d.seed, d.test_size, d.normalize, d.n_classes) == (28, 0, 0.25, True, 10)
    assert not d.x_train.flags.writeable and not d.y_test.flags.writeable
    with pytest.raises(AttributeError):
        d.seed = 1  # frozen


def test_digits_stratified_split():
    d = datasets.digits(12, test_size=0.3, seed=3, normalize=False)
    total = np.bincount(load_digits().target, minlength=10)
    n_train = np.bincount(d.y_train, minlength=10)
    n_test = np.bincount(d.y_test, minlength=10)
    np.testing.assert_array_equal(n_train + n_test, total)
    assert np.all(np.abs(n_test - 0.3 * total) <= 1)
    assert np.all(np.abs(n_train - 0.7 * total) <= 1)


def test_digits_deterministic_and_seeded(data28):
    again = datasets.digits(28, seed=0)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(again, name), getattr(data28, name))
    assert (again.mean, again.std) == (data28.mean, data28.std)
    other = datasets.digits(28, seed=1)
    assert not np.array_equal(other.y_test, data28.y_test)


def test_digits_normalize_stats(data28):
    raw = datasets.digits(28, seed=0, normalize=False)
    assert (raw.mean, raw.std) == (0.0, 1.0)
    assert raw.x_train.min() >= 0.0 and raw.x_train.max() <= 1.0 and raw.x_test.max() <= 1.0
    d = data28
    assert abs(float(d.x_train.mean(dtype=np.float64))) < 1e-6
    assert abs(float(d.x_train.std(dtype=np.float64)) - 1.0) < 1e-6
    assert d.mean == pytest.approx(raw.x_train.mean(dtype=np.float64), rel=1e-6)
    assert d.std == pytest.approx(raw.x_train.std(dtype=np.float64), rel=1e-6)
    np.testing.assert_allclose(d.x_test, (raw.x_test - d.mean) / d.std, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(d.y_test, raw.y_test)


def test_resize_align_corners_known_pattern():
    img = np.zeros((8, 8))
    img[3, 4] = 1.0
    img[0, 0] = 0.5
    img[7, :] = np.linspace(0.0, 1.0, 8)
    out = datasets.resize_align_corners(img[None], 16)[0]
    assert out.shape == (16, 16)
    np.testing.assert_allclose(out, _hand_bilinear(img, 16), atol=1e-12)
    np.testing.assert_allclose(
        out, ndimage.zoom(img, 2, order=1, mode="nearest", grid_mode=False), atol=1e-12
    )
    # Corners kept; a linear ramp stays a linear ramp.
    assert out[0, 0] == 0.5 and out[15, 15] == 1.0
    np.testing.assert_allclose(out[15], np.linspace(0.0, 1.0, 16), atol=1e-12)
    with pytest.raises(ValueError, match="images"):
        datasets.resize_align_corners(np.zeros((2, 8, 7)), 16)


def test_digits_pipeline_matches_hand_computation():
    d = datasets.digits(16, test_size=0.2, seed=5, normalize=False)
    bunch = load_digits()
    images = np.stack([_hand_bilinear(im / 16.0, 16) for im in bunch.images])
    idx_train, idx_test = train_test_split(
        np.arange(len(bunch.target)), test_size=0.2, stratify=bunch.target, random_state=5
    )
    np.testing.assert_allclose(d.x_train[..., 0], images[idx_train], atol=1e-6)
    np.testing.assert_allclose(d.x_test[..., 0], images[idx_test], atol=1e-6)
    np.testing.assert_array_equal(d.y_test, bunch.target[idx_test])
    # size 8 is the original images scaled to [0, 1].
    d8 = datasets.digits(8, test_size=0.2, seed=5, normalize=False)
    np.testing.assert_array_equal(d8.x_test[..., 0], (bunch.images[idx_test] / 16.0))


def test_digits_as_dataarray(data28):
    da = data28.as_dataarray()
    assert isinstance(da, xr.DataArray)
    assert da.dims == ("sample", "y", "x", "channel")
    assert da.shape == (450, 28, 28, 1) and da.dtype == np.float32
    assert da["label"].dims == ("sample",)
    np.testing.assert_array_equal(da["label"].values, data28.y_test)
    np.testing.assert_array_equal(da.values, data28.x_test)
    assert da.attrs["split"] == "test" and da.attrs["seed"] == 0
    train = data28.as_dataarray("train")
    assert train.sizes["sample"] == 1347
    np.testing.assert_array_equal(train["label"].values, data28.y_train)
    with pytest.raises(ValueError, match="split"):
        data28.as_dataarray("validation")


def test_digits_dataarray_labels_reach_the_cube(data28):
    x = data28.as_dataarray().isel(sample=slice(0, 6))
    cube = tmx.activations(models.small_cnn(), x, layers=["conv1"])
    np.testing.assert_array_equal(cube["label"].values, data28.y_test[:6])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"size": 7}, "size"),
        ({"size": 16.0}, "size"),
        ({"size": True}, "size"),
        ({"test_size": 0.0}, "test_size"),
        ({"test_size": 1.0}, "test_size"),
        ({"test_size": "0.2"}, "test_size"),
        ({"seed": 1.5}, "seed"),
        ({"seed": -1}, "seed"),
        ({"seed": None}, "seed"),
        ({"normalize": 1}, "normalize"),
    ],
)
def test_digits_bad_args(kwargs, name):
    with pytest.raises(ValueError, match=name):
        datasets.digits(**kwargs)


# -- models.small_cnn ---------------------------------------------------------------------------
def test_small_cnn_layers_and_output():
    model = models.small_cnn()
    assert model.name == "small_cnn"
    names = [layer.name for layer in model.layers]
    assert names == ["input", "conv1", "pool1", "conv2", "pool2", "flatten", "dense", "logits"]
    assert model.output_shape == (None, 10)
    assert model.get_layer("logits").activation is keras.activations.linear
    out = model.predict(np.zeros((3, 28, 28, 1), np.float32), verbose=0)
    assert out.shape == (3, 10)
    other = models.small_cnn((16, 12, 3), n_classes=4, name="tiny")
    assert other.name == "tiny" and other.output_shape == (None, 4)
    assert other.input_shape == (None, 16, 12, 3)


def test_small_cnn_seeded_weights():
    a = models.small_cnn(seed=7).get_weights()
    keras.utils.set_random_seed(123)  # the global state does not matter
    b = models.small_cnn(seed=7).get_weights()
    c = models.small_cnn(seed=8).get_weights()
    assert len(a) == len(b) == 8
    for wa, wb in zip(a, b, strict=True):
        np.testing.assert_array_equal(wa, wb)
    kernels = [i for i, w in enumerate(a) if w.ndim > 1]
    assert all(not np.array_equal(a[i], c[i]) for i in kernels)


def test_small_cnn_float64_weights_and_outputs():
    m32 = models.small_cnn(seed=3)
    m64 = models.small_cnn(seed=3, dtype="float64")
    assert keras.config.dtype_policy().name == "float32"  # nothing global changed
    assert all(w.dtype == "float64" for w in m64.weights) and len(m64.weights) == 8
    assert all(w.dtype == "float32" for w in m32.weights)
    assert m64.inputs[0].dtype == "float64"
    x = np.random.default_rng(0).normal(size=(4, 28, 28, 1))
    out64 = m64(x)
    assert out64.dtype == "float64" and m64.predict(x, verbose=0).dtype == np.float64
    # the same network: with the float32 weights it computes the float32 model's logits
    m64.set_weights([w.astype(np.float64) for w in m32.get_weights()])
    np.testing.assert_allclose(
        np.asarray(m64(x)), np.asarray(m32(x.astype(np.float32))), rtol=1e-4, atol=1e-5
    )
    with pytest.raises(ValueError, match="dtype"):
        models.small_cnn(dtype="no-such-dtype")


def test_trained_small_cnn_float64_is_cached_apart(tmp_path, monkeypatch):
    counter = _FitCounter(monkeypatch)
    path = models.cache_path(epochs=1, size=8, cache_dir=tmp_path, dtype="float64")
    assert path.name == f"small_cnn-v{tmx.__version__}-s0-e1-8px-float64.keras"
    assert models.cache_path(epochs=1, size=8, cache_dir=tmp_path).name.endswith("-8px.keras")
    model = models.trained_small_cnn(epochs=1, size=8, cache_dir=tmp_path, dtype="float64")
    assert counter.calls == 1 and path.exists()
    assert all(w.dtype == "float64" for w in model.weights)
    again = models.trained_small_cnn(epochs=1, size=8, cache_dir=tmp_path, dtype="float64")
    assert counter.calls == 1  # loaded, in float64
    assert all(w.dtype == "float64" for w in again.weights)
    x = datasets.digits(8).x_test[:16]
    out = again.predict(x, verbose=0)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, model.predict(x, verbose=0))


@pytest.mark.parametrize(
    ("args", "kwargs", "name"),
    [
        (((28, 28),), {}, "input_shape"),
        (((2, 2, 1),), {}, "input_shape"),
        ((), {"n_classes": 0}, "n_classes"),
        ((), {"seed": -1}, "seed"),
        ((), {"name": ""}, "name"),
    ],
)
def test_small_cnn_bad_args(args, kwargs, name):
    with pytest.raises(ValueError, match=name):
        models.small_cnn(*args, **kwargs)


# -- models.trained_small_cnn -------------------------------------------------------------------
def test_trained_default_accuracy_and_time(default_model, data28):
    model, seconds, cache = default_model
    acc = _accuracy(model, data28.x_test, data28.y_test)
    print(f"\ntrained_small_cnn() default: {seconds:.1f} s (train + save), test accuracy {acc:.4f}")
    assert acc > 0.9
    assert seconds < 60
    expected = f"small_cnn-v{tmx.__version__}-s0-e8-28px.keras"
    assert [p.name for p in cache.iterdir()] == [expected]
    # Compiled: evaluate works and agrees.
    _, eval_acc = model.evaluate(data28.x_test, data28.y_test, verbose=0)
    assert eval_acc == pytest.approx(acc, abs=1e-6)


def test_trained_reproducible(default_model, data28, tmp_path):
    model, _, _ = default_model
    again = models.trained_small_cnn(cache_dir=tmp_path)
    p0 = model.predict(data28.x_test, verbose=0)
    p1 = again.predict(data28.x_test, verbose=0)
    np.testing.assert_allclose(p1, p0, atol=1e-5)
    acc0 = _accuracy(model, data28.x_test, data28.y_test)
    assert _accuracy(again, data28.x_test, data28.y_test) == pytest.approx(acc0, abs=1e-6)


def test_cache_created_then_loaded(tmp_path, monkeypatch):
    counter = _FitCounter(monkeypatch)
    first = models.trained_small_cnn(epochs=1, size=12, seed=2, cache_dir=tmp_path)
    assert counter.calls == 1
    path = tmp_path / f"small_cnn-v{tmx.__version__}-s2-e1-12px.keras"
    assert path == models.cache_path(epochs=1, size=12, seed=2, cache_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary files left
    mtime = path.stat().st_mtime_ns

    second = models.trained_small_cnn(epochs=1, size=12, seed=2, cache_dir=tmp_path)
    assert counter.calls == 1  # loaded, not trained
    assert path.stat().st_mtime_ns == mtime
    x = datasets.digits(12, seed=2).x_test[:32]
    np.testing.assert_array_equal(second.predict(x, verbose=0), first.predict(x, verbose=0))

    models.trained_small_cnn(epochs=1, size=12, seed=2, cache_dir=tmp_path, retrain=True)
    assert counter.calls == 2
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("bad", ["garbage", "wrong_model"])
def test_corrupt_cache_is_retrained(bad, tmp_path, monkeypatch):
    path = models.cache_path(epochs=1, size=8, cache_dir=tmp_path)
    if bad == "garbage":
        path.write_bytes(b"\x00not a keras zip file\xff" * 10)
    else:  # a valid .keras file holding a model of another input shape
        models.small_cnn((16, 16, 1)).save(path)
    counter = _FitCounter(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        model = models.trained_small_cnn(epochs=1, size=8, cache_dir=tmp_path)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "could not be loaded" in messages[0]
    assert str(path) in messages[0]
    assert counter.calls == 1 and model.input_shape == (None, 8, 8, 1)
    keras.models.load_model(path, safe_mode=True)  # replaced by a valid file
    models.trained_small_cnn(epochs=1, size=8, cache_dir=tmp_path)
    assert counter.calls == 1


def test_interrupted_save_leaves_no_file(tmp_path, monkeypatch):
    def broken_save(model, filepath, *args, **kwargs):
        with open(filepath, "wb") as fh:
            fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        models.trained_small_cnn(epochs=1, size=8, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    env_dir = tmp_path / "env-cache"
    monkeypatch.setenv("TMX_CACHE_DIR", str(env_dir))
    assert models.default_cache_dir() == env_dir
    models.trained_small_cnn(epochs=1, size=8, seed=1)
    assert [p.name for p in env_dir.iterdir()] == [f"small_cnn-v{tmx.__version__}-s1-e1-8px.keras"]
    monkeypatch.delenv("TMX_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.default_cache_dir() == tmp_path / "xdg" / "tmx"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models.default_cache_dir() == tmp_path / "home" / ".cache" / "tmx"
    assert os.fspath(models.cache_path()).startswith(os.fspath(tmp_path / "home"))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"seed": -1}, "seed"),
        ({"epochs": 0}, "epochs"),
        ({"size": 4}, "size"),
        ({"retrain": "yes"}, "retrain"),
    ],
)
def test_trained_small_cnn_bad_args(kwargs, name, tmp_path):
    with pytest.raises(ValueError, match=name):
        models.trained_small_cnn(cache_dir=tmp_path, **kwargs)
