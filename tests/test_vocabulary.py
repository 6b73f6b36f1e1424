"""The vocabulary renames (docs/guide/conventions.md, "Renames"): each new name gives the old
call's result, checked against an independent computation; each old name warns a
DeprecationWarning naming the new one; passing the old and the new keyword is a TypeError."""

from __future__ import annotations

import inspect
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest

import tmx
import tmx.plot
from tmx import datasets
from tmx import transforms as T
from tmx.plot.overlay import resize_bilinear as plot_resize_bilinear
from tmx.plot.overlay import resize_half_pixel

X = np.arange(2 * 4 * 4 * 1, dtype=np.float32).reshape(2, 4, 4, 1)
TURNS = T.rot90([0, 1, 2])


def _quarter_turns(x: np.ndarray, k: int) -> np.ndarray:
    """k counter-clockwise quarter turns of NHWC images, by numpy alone."""
    return np.rot90(x, k, axes=(1, 2))


def _no_warning(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kwargs)


def _deprecated(fn, *args, **kwargs):
    """fn's result and the one DeprecationWarning's message."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    found = [w for w in caught if w.category is DeprecationWarning]
    assert len(found) == 1, [str(w.message) for w in found]
    assert found[0].filename == __file__  # points at the caller, not at tmx
    return out, str(found[0].message)


# -- tset= → transforms= -------------------------------------------------------------------------
CALLS = {
    "apply": (T.apply, {"x": X, "j": 1}),
    "apply_many": (T.apply_many, {"x": X}),
    "invert_maps": (T.invert_maps, {"fmap": X, "j": 1}),
    "check_input": (T.check_input, {"shape": X.shape, "dtype": X.dtype}),
}
EXPECTED = {
    "apply": _quarter_turns(X, 1),
    "apply_many": np.stack([_quarter_turns(X, k) for k in range(3)], axis=1),
    "invert_maps": _quarter_turns(X, -1),
    "check_input": np.dtype("float32"),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_transforms_is_the_first_argument(name):
    fn, _ = CALLS[name]
    assert next(iter(inspect.signature(fn).parameters)) == "transforms"


@pytest.mark.parametrize("name", list(CALLS))
def test_tset_keyword_warns_and_gives_the_positional_result(name):
    fn, kwargs = CALLS[name]
    positional = _no_warning(fn, TURNS, *kwargs.values())
    by_new_keyword = _no_warning(fn, transforms=TURNS, **kwargs)
    by_old_keyword, message = _deprecated(fn, tset=TURNS, **kwargs)
    np.testing.assert_array_equal(positional, EXPECTED[name])
    np.testing.assert_array_equal(by_new_keyword, EXPECTED[name])
    np.testing.assert_array_equal(by_old_keyword, EXPECTED[name])
    assert message == (
        f"{name}(): tset= is deprecated and will be removed; use transforms= instead"
    )


@pytest.mark.parametrize("name", list(CALLS))
def test_tset_and_transforms_together_is_a_type_error(name):
    fn, kwargs = CALLS[name]
    with pytest.raises(TypeError, match=r"got both tset= \(deprecated\) and transforms="):
        fn(transforms=TURNS, tset=TURNS, **kwargs)
    with pytest.raises(TypeError, match="got both tset="):
        fn(TURNS, *kwargs.values(), tset=TURNS)


def test_the_old_keyword_still_checks_its_value():
    with pytest.raises(ValueError, match="transforms must be a TransformationSet"):
        _deprecated(T.check_input, tset="rotation", shape=X.shape)


def test_transform_preview_takes_transforms():
    assert next(iter(inspect.signature(tmx.plot.transform_preview).parameters)) == "transforms"
    new = _no_warning(tmx.plot.transform_preview, transforms=TURNS, x=X, n_samples=1)
    old, message = _deprecated(tmx.plot.transform_preview, tset=TURNS, x=X, n_samples=1)
    try:
        assert message == (
            "transform_preview(): tset= is deprecated and will be removed; use transforms= instead"
        )
        assert [ax.get_title() for ax in old.axes] == [ax.get_title() for ax in new.axes]
        assert [ax.get_title() for ax in new.axes] == list(TURNS.labels)
        for a, b, k in zip(old.axes, new.axes, range(3), strict=True):
            shown = np.asarray(b.images[0].get_array())
            np.testing.assert_array_equal(np.asarray(a.images[0].get_array()), shown)
            np.testing.assert_array_equal(shown, _quarter_turns(X, k)[0, ..., 0])
        with pytest.raises(TypeError, match="got both tset="):
            tmx.plot.transform_preview(TURNS, X, tset=TURNS)
    finally:
        plt.close(old)
        plt.close(new)


# -- tmx.transforms.invert → invert_maps; tmx.invert keeps its name -------------------------------
def test_transforms_invert_is_a_deprecated_alias_of_invert_maps():
    shift = T.translation([0, 4], 0)
    fmap = np.zeros((1, 4, 4, 1), np.float32)
    fmap[0, 1, 3, 0] = 1.0
    new = _no_warning(T.invert_maps, shift, fmap, 1, input_size=8)
    old, message = _deprecated(T.invert, shift, fmap, 1, input_size=8)
    assert "tmx.transforms.invert is deprecated" in message
    assert "use tmx.transforms.invert_maps" in message
    np.testing.assert_array_equal(old, new)
    expected = np.zeros_like(fmap)
    expected[0, 1, 1, 0] = 1.0  # 4 px on an 8 px input: 2 px left on the 4 px map
    np.testing.assert_allclose(new, expected, atol=1e-6)
    with warnings.catch_warnings(record=True) as caught:  # both old names: both warn
        warnings.simplefilter("always")
        both_old = T.invert(tset=TURNS, fmap=X, j=2)
    assert [w.category for w in caught] == [DeprecationWarning, DeprecationWarning]
    assert "use tmx.transforms.invert_maps" in str(caught[0].message)
    assert "use transforms=" in str(caught[1].message)
    np.testing.assert_array_equal(both_old, _quarter_turns(X, -2))


def test_the_two_inverts_have_distinct_names():
    assert tmx.invert is tmx.measures.invert
    assert "invert_maps" in T.__all__ and "invert" in tmx.__all__
    assert T.invert_maps is not tmx.invert and T.invert is not tmx.invert
    cube = tmx.from_array(
        {"maps": np.stack([_quarter_turns(X, k) for k in range(3)], axis=1)},
        transformation=TURNS,
        attrs={"input_shape": (4, 4, 1)},
    )
    back = _no_warning(tmx.invert, cube)  # the cube's inverse: every map back to X
    np.testing.assert_allclose(back.values, np.repeat(X.reshape(2, 1, 16), 3, axis=1))


# -- resize_bilinear: one name per pixel grid ----------------------------------------------------
def _interp_rows_cols(img: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Separable linear interpolation of a 2-D image at (clamped) source coordinates."""
    h, w = img.shape
    along_cols = np.stack([np.interp(cols, np.arange(w), row) for row in img])
    return np.stack([np.interp(rows, np.arange(h), col) for col in along_cols.T], axis=1)


def test_datasets_resize_align_corners_and_its_deprecated_alias():
    images = np.random.default_rng(0).random((2, 3, 3))
    new = _no_warning(datasets.resize_align_corners, images, 7)
    old, message = _deprecated(datasets.resize_bilinear, images, 7)
    assert "tmx.datasets.resize_bilinear is deprecated" in message
    assert "use tmx.datasets.resize_align_corners" in message
    np.testing.assert_array_equal(old, new)
    src = np.arange(7) * (3 - 1) / (7 - 1)  # corners aligned: output j samples j (h-1)/(n-1)
    for img, out in zip(images, new, strict=True):
        np.testing.assert_allclose(out, _interp_rows_cols(img, src, src), atol=1e-12)
    assert "resize_align_corners" in datasets.__all__


def test_plot_resize_half_pixel_and_its_deprecated_alias():
    heatmap = np.random.default_rng(1).random((3, 5))
    new = _no_warning(resize_half_pixel, heatmap, (6, 10))
    old, message = _deprecated(plot_resize_bilinear, heatmap, (6, 10))
    assert "tmx.plot.overlay.resize_bilinear is deprecated" in message
    assert "use tmx.plot.overlay.resize_half_pixel" in message
    np.testing.assert_array_equal(old, new)
    # half-pixel centres: output i samples (i + 1/2) h/H − 1/2, clamped at the border
    rows = (np.arange(6) + 0.5) * 3 / 6 - 0.5
    cols = (np.arange(10) + 0.5) * 5 / 10 - 0.5
    np.testing.assert_allclose(new, _interp_rows_cols(heatmap, rows, cols), atol=1e-12)


def test_the_two_resizes_differ_on_the_same_input():
    img = np.array([[0.0, 1.0], [0.0, 1.0]])
    corners = datasets.resize_align_corners(img[None], 4)[0]
    centres = resize_half_pixel(img, (4, 4))
    np.testing.assert_allclose(corners[0], [0.0, 1 / 3, 2 / 3, 1.0])
    np.testing.assert_allclose(centres[0], [0.0, 0.25, 0.75, 1.0])


# --------------------------------------------------------------------------------------------
# bootstrap / convergence: reduce= (the keyword of tmx.by_layer), by_layer= deprecated


def _small_cube():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(40, 3, 4)) + rng.normal(size=(40, 1, 4))
    return tmx.from_array({"d": values})


@pytest.mark.parametrize("reduce", ["mean", "ratio_of_means"])
def test_bootstrap_by_layer_warns_and_equals_reduce(reduce):
    cube = _small_cube()
    new = tmx.bootstrap(tmx.normalized_variance, cube, reduce=reduce)
    with pytest.warns(DeprecationWarning, match=r"by_layer= is deprecated.*use reduce="):
        old = tmx.bootstrap(tmx.normalized_variance, cube, by_layer=reduce)
    assert new.sizes == {"layer": 1}
    assert new.identical(old)
    assert old.attrs["reduce"] == reduce and "by_layer" not in old.attrs


def test_bootstrap_by_layer_and_reduce_together_is_a_type_error():
    with pytest.raises(TypeError, match=r"got both by_layer= .* and reduce="):
        tmx.bootstrap(tmx.normalized_variance, _small_cube(), reduce="mean", by_layer="mean")


def test_bootstrap_by_layer_still_checks_its_value():
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="reduce must be one"):
        tmx.bootstrap(tmx.normalized_variance, _small_cube(), by_layer="sum")


def test_convergence_by_layer_warns_and_equals_reduce():
    cube = _small_cube()
    new = tmx.convergence(tmx.normalized_variance, cube, sizes=(10, 40), reduce="mean")
    with pytest.warns(DeprecationWarning, match="convergence\\(\\): by_layer="):
        old = tmx.convergence(tmx.normalized_variance, cube, sizes=(10, 40), by_layer="mean")
    assert new.identical(old)
    auto = tmx.convergence(tmx.normalized_variance, cube, sizes=(10, 40))
    assert auto.attrs["reduce"] == "ratio_of_means"
    assert not auto.identical(new)
