"""Small reference models: an untrained CNN and a cached, reproducibly trained one on digits.

The models output **logits** (no softmax layer). Evaluate with ``argmax`` of the logits (the
same as of the softmax), apply ``keras.ops.softmax`` for probabilities, and train with
``keras.losses.SparseCategoricalCrossentropy(from_logits=True)``.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from . import _validate as v
from ._version import __version__
from .datasets import digits

__all__ = ["cache_path", "default_cache_dir", "small_cnn", "trained_small_cnn"]

#: Hyper-parameters of ``trained_small_cnn``; part of what the cache file stands for.
LEARNING_RATE = 5e-3
BATCH_SIZE = 64


def small_cnn(
    input_shape: Sequence[int] = (28, 28, 1),
    n_classes: int = 10,
    *,
    seed: int = 0,
    name: str = "small_cnn",
    dtype: str | keras.DTypePolicy | None = None,
) -> keras.Model:
    """An untrained small convolutional network with named layers and seeded weights.

    ``input`` → ``conv1`` Conv2D(8, 3×3, same, relu) → ``pool1`` MaxPooling2D(2) →
    ``conv2`` Conv2D(16, 3×3, same, relu) → ``pool2`` MaxPooling2D(2) → ``flatten`` →
    ``dense`` Dense(32, relu) → ``logits`` Dense(n_classes, linear).

    Parameters
    ----------
    input_shape : sequence of 3 ints, default (28, 28, 1)
        ``(height, width, channels)``; height and width at least 4 (two 2× poolings).
    n_classes : int, default 10
        Number of output logits.
    seed : int, default 0
        Seed of the kernel initialisers (Glorot uniform, seed ``seed + k`` for the k-th
        layer with weights; biases start at zero). The same seed gives identical weights,
        independently of any global random state.
    name : str, default "small_cnn"
        The model's name.
    dtype : str or keras.DTypePolicy, optional
        dtype (policy) of every layer and of the input, e.g. ``"float64"``; ``None`` = Keras's
        current global policy (``keras.config.set_dtype_policy``, which
        ``keras.config.set_floatx`` alone does not change once a policy is set).

    Returns
    -------
    keras.Model
        A functional Keras 3 model, not compiled, whose output is **logits** (no softmax):
        use ``from_logits=True`` losses, or ``keras.ops.softmax`` for probabilities.  Its
        weights and outputs have the dtype policy's variable and compute dtypes.

    Examples
    --------
    >>> import tmx
    >>> model = tmx.models.small_cnn((8, 8, 1), 3, seed=0)
    >>> [layer.name for layer in model.layers[1:]]
    ['conv1', 'pool1', 'conv2', 'pool2', 'flatten', 'dense', 'logits']
    >>> model.output_shape, model.count_params()
    ((None, 3), 3427)
    """
    shape = v.int_vector(input_shape, "input_shape")
    if len(shape) != 3 or min(shape) < 1 or min(shape[:2]) < 4:
        raise ValueError(
            "input_shape must be (height, width, channels) with height and width at least 4; "
            f"got {tuple(input_shape)}"
        )
    n_classes = v.positive_int(n_classes, "n_classes")
    seed = v.seed(seed)
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string; got {v._describe(name)}")
    policy = _dtype_policy(dtype)

    def init(k: int) -> keras.initializers.Initializer:
        return keras.initializers.GlorotUniform(seed=seed + k)

    inputs = keras.Input(shape=shape, name="input", dtype=policy.compute_dtype)
    h = keras.layers.Conv2D(
        8,
        3,
        padding="same",
        activation="relu",
        kernel_initializer=init(0),
        name="conv1",
        dtype=policy,
    )(inputs)
    h = keras.layers.MaxPooling2D(2, name="pool1", dtype=policy)(h)
    h = keras.layers.Conv2D(
        16,
        3,
        padding="same",
        activation="relu",
        kernel_initializer=init(1),
        name="conv2",
        dtype=policy,
    )(h)
    h = keras.layers.MaxPooling2D(2, name="pool2", dtype=policy)(h)
    h = keras.layers.Flatten(name="flatten", dtype=policy)(h)
    h = keras.layers.Dense(
        32, activation="relu", kernel_initializer=init(2), name="dense", dtype=policy
    )(h)
    outputs = keras.layers.Dense(
        n_classes, kernel_initializer=init(3), name="logits", dtype=policy
    )(h)
    return keras.Model(inputs, outputs, name=name)


def default_cache_dir() -> Path:
    """The directory where ``trained_small_cnn`` caches models.

    ``$TMX_CACHE_DIR`` if set and non-empty, else ``$XDG_CACHE_HOME/tmx`` if
    ``XDG_CACHE_HOME`` is set and non-empty, else ``~/.cache/tmx``. Not created here.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import os, unittest.mock, tmx
    >>> with unittest.mock.patch.dict(os.environ, {"TMX_CACHE_DIR": "/data/tmx-cache"}):
    ...     str(tmx.models.default_cache_dir())
    '/data/tmx-cache'
    """
    env = os.environ.get("TMX_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "tmx"
    return Path.home() / ".cache" / "tmx"


def cache_path(
    *,
    seed: int = 0,
    epochs: int = 8,
    size: int = 28,
    cache_dir: str | os.PathLike[str] | None = None,
    dtype: str | keras.DTypePolicy | None = None,
) -> Path:
    """The cache file of ``trained_small_cnn`` for these arguments.

    ``<cache_dir>/small_cnn-v{tmx version}-s{seed}-e{epochs}-{size}px.keras``, with characters
    of the version other than letters, digits, ``.``, ``_`` and ``-`` replaced by ``_``, and
    ``-{policy name}`` before ``.keras`` when the dtype policy (``dtype``, ``None`` = the
    global one) is not ``float32``. ``cache_dir=None`` means ``default_cache_dir``.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import tmx
    >>> path = tmx.models.cache_path(seed=1, epochs=2, size=16, cache_dir="/data/c")
    >>> path.name  # doctest: +ELLIPSIS
    'small_cnn-v...-s1-e2-16px.keras'
    """
    seed = v.seed(seed)
    epochs = v.positive_int(epochs, "epochs")
    size = _size(size)
    directory = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    version = re.sub(r"[^A-Za-z0-9._-]", "_", str(__version__))
    policy = _dtype_policy(dtype).name
    suffix = "" if policy == "float32" else "-" + re.sub(r"[^A-Za-z0-9._-]", "_", policy)
    return directory / f"small_cnn-v{version}-s{seed}-e{epochs}-{size}px{suffix}.keras"


def trained_small_cnn(
    *,
    seed: int = 0,
    epochs: int = 8,
    size: int = 28,
    cache_dir: str | os.PathLike[str] | None = None,
    retrain: bool = False,
    verbose: bool = False,
    dtype: str | keras.DTypePolicy | None = None,
) -> keras.Model:
    """``small_cnn`` trained on the digits, cached on disk after the first call.

    Parameters
    ----------
    seed : int, default 0
        Seeds the data split (``tmx.datasets.digits(size, seed=seed)``), the weights and the
        shuffling of training.
    epochs : int, default 8
        Training epochs.
    size : int, default 28
        Image height and width (at least 8).
    cache_dir : path, optional
        Directory of the cache; default ``default_cache_dir`` (``$TMX_CACHE_DIR``, else
        ``$XDG_CACHE_HOME/tmx``, else ``~/.cache/tmx``). Created when missing.
    retrain : bool, default False
        Train and overwrite the cache even when a cached model exists.
    verbose : bool, default False
        Print one line per epoch while training.
    dtype : str or keras.DTypePolicy, optional
        dtype (policy) of the model (``small_cnn(..., dtype=dtype)``), e.g. ``"float64"``;
        ``None`` = Keras's global policy. Part of the cache key (``cache_path``).

    Returns
    -------
    keras.Model
        The trained model, **compiled** (Adam, ``SparseCategoricalCrossentropy(from_logits=
        True)``, ``accuracy`` metric), so ``model.evaluate(data.x_test, data.y_test)`` works.
        Its input is the *standardised* images of ``tmx.datasets.digits(size, seed=seed)``;
        its output is logits.

    Notes
    -----
    Training: ``keras.utils.set_random_seed(seed)`` (which also reseeds Python's ``random``,
    NumPy's global generator and TensorFlow's global seed: a side effect on the caller's global
    random state), then ``small_cnn((size, size, 1), 10, seed=seed)``, then ``fit`` on the
    training split with Adam (learning rate 5e-3), batch size 64, shuffling, ``epochs``
    epochs. The default configuration takes a few seconds on 2 CPU cores and reaches about
    97 % test accuracy (96–98 % over seeds 0–7).

    Reproducibility: on CPU, two trainings with the same arguments in the same environment
    give the same weights in practice (the ops of this model have deterministic CPU kernels),
    but TensorFlow guarantees bitwise determinism only under
    ``tf.config.experimental.enable_op_determinism()``, which is global and not set here;
    different TensorFlow/Keras versions, CPU instruction sets (oneDNN code paths), thread
    counts or GPUs may give slightly different weights.

    Cache: the file is ``cache_path`` (keyed by tmx version, seed, epochs and size) and is
    loaded with ``keras.models.load_model(path, safe_mode=True)``. It is written atomically (a
    temporary file in the same directory, then ``os.replace``), so an interrupted run never
    leaves a partial cache file. A cache file that cannot be loaded (or holds a model of the
    wrong input shape) is retrained and replaced, with a ``RuntimeWarning``.

    Examples
    --------
    One short training (one epoch on 8 × 8 digits) in a temporary cache; the second call loads it.

    >>> import tempfile, tmx
    >>> with tempfile.TemporaryDirectory() as cache:
    ...     model = tmx.models.trained_small_cnn(epochs=1, size=8, cache_dir=cache)
    ...     again = tmx.models.trained_small_cnn(epochs=1, size=8, cache_dir=cache)
    >>> model.input_shape, again.output_shape
    ((None, 8, 8, 1), (None, 10))
    >>> bool((again.get_weights()[0] == model.get_weights()[0]).all())
    True
    """
    policy = _dtype_policy(dtype)
    path = cache_path(seed=seed, epochs=epochs, size=size, cache_dir=cache_dir, dtype=policy)
    seed, epochs, size = v.seed(seed), int(epochs), int(size)
    retrain = v.flag(retrain, "retrain")
    if not retrain and path.exists():
        try:
            model = keras.models.load_model(path, safe_mode=True)
            if tuple(model.input_shape) != (None, size, size, 1):
                raise ValueError(f"input shape {model.input_shape}, expected (None, {size}, ...)")
            if model.layers[-1].dtype_policy.name != policy.name:
                raise ValueError(
                    f"dtype policy {model.layers[-1].dtype_policy.name}, expected {policy.name}"
                )
        except Exception as exc:  # any unreadable cache is retrained
            warnings.warn(
                f"tmx: the cached model {path} could not be loaded ({type(exc).__name__}: "
                f"{exc}); retraining and replacing it",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            return model
    model = _train(seed=seed, epochs=epochs, size=size, verbose=bool(verbose), dtype=policy)
    _save_atomic(model, path)
    return model


# -- helpers ------------------------------------------------------------------------------------
def _dtype_policy(dtype: object) -> keras.DTypePolicy:
    """The dtype policy for ``dtype`` (``None``: the current global policy)."""
    if dtype is None:
        return keras.config.dtype_policy()
    try:
        return keras.dtype_policies.get(dtype)
    except Exception as err:
        raise ValueError(
            f"dtype must be None, a float dtype name such as 'float64' or a Keras dtype "
            f"policy; got {v._describe(dtype)}"
        ) from err


def _size(size: object) -> int:
    if isinstance(size, bool | np.bool_) or not isinstance(size, int | np.integer) or size < 8:
        raise ValueError(f"size must be an integer of at least 8; got {v._describe(size)}")
    return int(size)


def _train(
    *, seed: int, epochs: int, size: int, verbose: bool, dtype: keras.DTypePolicy | None = None
) -> keras.Model:
    data = digits(size, seed=seed)
    keras.utils.set_random_seed(seed)
    model = small_cnn((size, size, 1), 10, seed=seed, dtype=dtype)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(
        data.x_train,
        data.y_train,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        shuffle=True,
        verbose=2 if verbose else 0,
    )
    return model


def _save_atomic(model: keras.Model, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp.keras", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
