"""Small, offline image data sets for examples, tests and the bundled models.

The only data set is scikit-learn's bundled ``load_digits`` (it ships inside the scikit-learn
wheel, so nothing is downloaded): 1797 grey-level images of 8×8 pixels with values 0..16 and
labels 0..9.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import xarray as xr
from scipy import ndimage
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from . import _validate as v
from ._provenance import provenance

__all__ = ["Digits", "digits", "resize_align_corners", "resize_bilinear"]

_N_CLASSES = 10


@dataclass(frozen=True, eq=False)
class Digits:
    """A seeded, stratified train/test split of the scikit-learn digits.

    The arrays are read-only (the dataclass is frozen); copy one to modify it.

    Attributes
    ----------
    x_train, x_test : numpy.ndarray
        float32 images, NHWC ``(n, size, size, 1)``. Standardised with ``mean`` and ``std``
        when the data set was made with ``normalize=True``; in [0, 1] otherwise.
    y_train, y_test : numpy.ndarray
        int64 labels in 0..9, shape ``(n,)``.
    mean, std : float
        The scalar statistics of the [0, 1]-scaled *training* images that were applied as
        ``(x - mean) / std`` (``0.0`` and ``1.0`` when ``normalize=False``).
    size : int
        Image height and width in pixels.
    seed : int
        The ``random_state`` of the split.
    test_size : float
        The fraction of samples in the test split.
    normalize : bool
        Whether the images were standardised.

    Examples
    --------
    >>> import tmx
    >>> data = tmx.datasets.digits(8, test_size=0.5)
    >>> data.n_classes, data.size, len(data.y_test)
    (10, 8, 899)
    >>> data.x_test.flags.writeable
    False
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    mean: float
    std: float
    size: int
    seed: int
    test_size: float = 0.25
    normalize: bool = True

    @property
    def n_classes(self) -> int:
        """The number of classes (10)."""
        return _N_CLASSES

    def as_dataarray(self, split: Literal["test", "train"] = "test") -> xr.DataArray:
        """One split as a labelled ``xr.DataArray`` that ``tmx.activations`` accepts.

        Parameters
        ----------
        split : {"test", "train"}, default "test"
            Which split to return.

        Returns
        -------
        xr.DataArray
            ``digits``, float32, dims ``(sample, y, x, channel)`` with integer coordinates on
            every dim, a ``label`` coordinate (int64) on ``sample`` (picked up by
            ``tmx.activations``), and the data set's provenance in ``attrs``: ``source``,
            ``split``, ``size``, ``seed``, ``test_size``, ``normalize`` (0/1), ``mean``,
            ``std`` and ``tmx_version``.

        Examples
        --------
        >>> import tmx
        >>> test = tmx.datasets.digits(8).as_dataarray("test")
        >>> test.dims, test.shape, test["label"].dtype, test.attrs["split"]
        (('sample', 'y', 'x', 'channel'), (450, 8, 8, 1), dtype('int64'), 'test')
        """
        split = v.choice(split, "split", ("test", "train"))
        x, y = (self.x_test, self.y_test) if split == "test" else (self.x_train, self.y_train)
        return xr.DataArray(
            x,
            dims=("sample", "y", "x", "channel"),
            coords={
                "sample": np.arange(x.shape[0]),
                "y": np.arange(self.size),
                "x": np.arange(self.size),
                "channel": np.arange(1),
                "label": ("sample", y),
            },
            name="digits",
            attrs=provenance(
                "source",
                "sklearn.datasets.load_digits",
                split=split,
                size=self.size,
                seed=self.seed,
                test_size=self.test_size,
                normalize=self.normalize,
                mean=self.mean,
                std=self.std,
            ),
        )


def resize_align_corners(images: np.ndarray, size: int) -> np.ndarray:
    """Resize square images ``(n, h, h)`` to ``(n, size, size)``, bilinear with corners aligned.

    Formerly ``resize_bilinear`` (a deprecated alias now), renamed apart from
    ``tmx.plot.overlay.resize_half_pixel``, which resizes heat maps on half-pixel centres.

    This is ``scipy.ndimage.zoom(images, (1, size / h, size / h), order=1, mode="nearest",
    grid_mode=False)``: corner-aligned linear interpolation along each image axis, so output
    pixel ``j`` samples input coordinate ``j * (h - 1) / (size - 1)`` and the four corner pixels
    are kept exactly (the convention of ``align_corners=True``; no antialiasing).

    Parameters
    ----------
    images : numpy.ndarray
        Array of shape ``(n, h, h)``.
    size : int
        Output height and width, at least 2.

    Returns
    -------
    numpy.ndarray
        float64 array ``(n, size, size)``.

    Examples
    --------
    >>> import numpy as np
    >>> from tmx.datasets import resize_align_corners
    >>> resize_align_corners(np.array([[[0.0, 1.0], [2.0, 3.0]]]), 3)[0].tolist()   # corners kept
    [[0.0, 0.5, 1.0], [1.0, 1.5, 2.0], [2.0, 2.5, 3.0]]
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"images must have shape (n, h, h); got {images.shape}")
    size = v.positive_int(size, "size")
    if size < 2:
        raise ValueError(f"size must be at least 2; got {size}")
    h = images.shape[1]
    if size == h:
        return images.copy()
    factor = size / h
    out = ndimage.zoom(images, (1.0, factor, factor), order=1, mode="nearest", grid_mode=False)
    if out.shape[1:] != (size, size):  # pragma: no cover - zoom rounds size/h*h to size
        raise RuntimeError(f"resize produced {out.shape[1:]}, expected {(size, size)}")
    return out


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Deprecated: ``resize_align_corners`` (same arguments, same result).

    Renamed apart from ``tmx.plot.overlay.resize_half_pixel`` (half-pixel centres, for heat
    maps); warns a ``DeprecationWarning`` and will be removed.

    Examples
    --------
    >>> import warnings, numpy as np
    >>> from tmx.datasets import resize_bilinear
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     out = resize_bilinear(np.array([[[0.0, 1.0], [2.0, 3.0]]]), 3)
    >>> out[0, 0].tolist(), caught[0].category.__name__
    ([0.0, 0.5, 1.0], 'DeprecationWarning')
    """
    warnings.warn(
        "tmx.datasets.resize_bilinear is deprecated and will be removed; use "
        "tmx.datasets.resize_align_corners instead",
        DeprecationWarning,
        stacklevel=2,
    )
    return resize_align_corners(images, size)


def digits(
    size: int = 28,
    *,
    test_size: float = 0.25,
    seed: int = 0,
    normalize: bool = True,
) -> Digits:
    """scikit-learn's digits, resized, split and (optionally) standardised.

    Parameters
    ----------
    size : int, default 28
        Image height and width in pixels, at least 8 (the original resolution).
    test_size : float, default 0.25
        Fraction of the 1797 samples in the test split, strictly between 0 and 1.
    seed : int, default 0
        ``random_state`` of the stratified split.
    normalize : bool, default True
        Standardise with the scalar mean and standard deviation of the training images.

    Returns
    -------
    Digits
        The split, NHWC float32 images ``(n, size, size, 1)`` and int64 labels.

    Notes
    -----
    The pipeline, deterministic for given arguments:

    1. ``sklearn.datasets.load_digits()``; the 8×8 images (values 0..16) are divided by 16 to
       lie in [0, 1].
    2. Resized to ``size × size`` with ``resize_align_corners`` (``scipy.ndimage.zoom`` with
       ``order=1``, corner-aligned bilinear interpolation; values stay in [0, 1]).
    3. Split with ``sklearn.model_selection.train_test_split(..., test_size=test_size,
       stratify=labels, random_state=seed)``, so every class has the same proportion (±1
       sample) in both splits.
    4. If ``normalize``: ``x = (x - mean) / std`` for both splits with the scalar mean and
       standard deviation (float64, ``ddof=0``) of all training pixels; then cast to float32.

    Examples
    --------
    >>> import tmx
    >>> data = tmx.datasets.digits(8, seed=0)
    >>> data.x_train.shape, data.x_test.shape, data.y_train.dtype
    ((1347, 8, 8, 1), (450, 8, 8, 1), dtype('int64'))
    >>> round(float(data.x_train.mean()), 6), round(float(data.x_train.std()), 6)  # standardised
    (0.0, 1.0)
    """

    if isinstance(size, bool | np.bool_) or not isinstance(size, numbers.Integral) or size < 8:
        raise ValueError(f"size must be an integer of at least 8; got {v._describe(size)}")
    size = int(size)
    test_size = v.fraction(test_size, "test_size")
    seed = v.seed(seed)
    normalize = v.flag(normalize, "normalize")

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64) / 16.0
    labels = np.asarray(bunch.target, dtype=np.int64)
    images = resize_align_corners(images, size)

    idx_train, idx_test = train_test_split(
        np.arange(labels.shape[0]), test_size=test_size, stratify=labels, random_state=seed
    )
    x_train, x_test = images[idx_train], images[idx_test]
    mean, std = 0.0, 1.0
    if normalize:
        mean = float(x_train.mean())
        std = float(x_train.std())
        x_train = (x_train - mean) / std
        x_test = (x_test - mean) / std

    def _freeze(a: np.ndarray, dtype: Any) -> np.ndarray:
        out = np.ascontiguousarray(a, dtype=dtype)
        out.setflags(write=False)
        return out

    return Digits(
        x_train=_freeze(x_train[..., None], np.float32),
        y_train=_freeze(labels[idx_train], np.int64),
        x_test=_freeze(x_test[..., None], np.float32),
        y_test=_freeze(labels[idx_test], np.int64),
        mean=mean,
        std=std,
        size=size,
        seed=seed,
        test_size=test_size,
        normalize=normalize,
    )
