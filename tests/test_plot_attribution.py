"""Attribution figures: normalizations against hand-computed arrays, the expected artists."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import xarray as xr
from matplotlib.image import AxesImage

from tmx.plot import attribution, attribution_mask, normalize_attribution

A = np.array([[[[2.0], [-1.0]], [[0.5], [-4.0]]]])  # (1, 2, 2, 1)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("unsigned_max", [[0.5, -0.25], [0.125, -1.0]]),
        ("unsigned_max_positive_centered", [[0.75, 0.375], [0.5625, 0.0]]),
        ("magnitude_max", [[0.5, 0.25], [0.125, 1.0]]),
        ("magnitude_sum", [[2 / 7.5, 1 / 7.5], [0.5 / 7.5, 4 / 7.5]]),
        ("signed_max", [[1.0, -0.25], [0.25, -1.0]]),
        ("signed_max_positive_centered", [[1.0, 0.375], [0.625, 0.0]]),
        ("signed_sum", [[2 / 2.5, -1 / 5], [0.5 / 2.5, -4 / 5]]),
        ("01", [[1.0, 0.5], [4.5 / 6, 0.0]]),
        ("unnormalized", [[2.0, -1.0], [0.5, -4.0]]),
    ],
)
def test_normalizations(mode: str, expected) -> None:
    got = normalize_attribution(A, mode)
    np.testing.assert_allclose(got[0, :, :, 0], expected, rtol=1e-12)


def test_per_channel_and_zero_maps() -> None:
    two = np.concatenate([A, 10 * A], axis=-1)
    got = normalize_attribution(two, "unsigned_max")
    np.testing.assert_allclose(got[..., 0], got[..., 1])  # each channel on its own
    np.testing.assert_array_equal(normalize_attribution(np.zeros((1, 2, 2, 1)), "01"), 0.0)
    with pytest.raises(ValueError, match="normalization"):
        normalize_attribution(A, "max")


def _attr(n: int = 3) -> xr.DataArray:
    rng = np.random.default_rng(0)
    return xr.DataArray(
        rng.normal(size=(n, 4, 4, 1)),
        dims=("sample", "y", "x", "channel"),
        coords={"sample": np.arange(10, 10 + n)},
    )


def test_attribution_figure_artists() -> None:
    images = np.random.default_rng(1).random((3, 8, 8, 1))
    fig = attribution({"saliency": _attr(), "grad_cam": _attr()}, images, overlay=0.4)
    axes = fig.axes
    assert len(axes) == 3 * 3  # samples × (input + two methods)
    assert [ax.get_title() for ax in axes[:3]] == ["input", "saliency", "grad_cam"]
    over = axes[1].get_images()
    assert len(over) == 2 and all(isinstance(im, AxesImage) for im in over)
    assert over[1].get_alpha() == pytest.approx(0.4)
    assert over[1].get_array().shape == (8, 8)  # resized to the image
    single = attribution(_attr(2), normalization="magnitude_max", blur=1.0)
    assert len(single.axes) == 2 and len(single.axes[0].get_images()) == 1
    with pytest.raises(ValueError, match="overlay"):
        attribution(_attr(), overlay=2.0)


def test_attribution_mask_artists() -> None:
    images = np.random.default_rng(2).random((2, 4, 4, 1))
    fig = attribution_mask(_attr(2), images)
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:3]] == ["input", "mask", "masked"]
    mask = fig.axes[1].get_images()[0].get_array()
    expected = np.abs(_attr(2).values[0, ..., 0]) / np.abs(_attr(2).values[0]).max()
    np.testing.assert_allclose(mask, expected, rtol=1e-6)
