"""tmx.transforms: geometry against closed-form numpy, exact inverses, labels, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tmx
from tmx import transforms as T


# -- helpers (independent of tmx) ---------------------------------------------------------------
def blob(size, x0, y0, sigma=1.2):
    """A Gaussian blob centred at (x0, y0) (x = column, y = row), NHWC batch of one."""
    h, w = (size, size) if np.isscalar(size) else size
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2))
    return img[None, :, :, None].astype(np.float32)


def centroid(img):
    """(x, y) centre of mass of a (1, H, W, 1) image."""
    a = np.asarray(img)[0, :, :, 0].astype(np.float64)
    yy, xx = np.mgrid[0 : a.shape[0], 0 : a.shape[1]]
    return np.array([(a * xx).sum() / a.sum(), (a * yy).sum() / a.sum()])


def rotate_point(p, c, degrees):
    """Counter-clockwise as displayed, with y pointing down."""
    t = np.deg2rad(degrees)
    d = np.asarray(p, float) - c
    return c + np.array([d[0] * np.cos(t) + d[1] * np.sin(t), -d[0] * np.sin(t) + d[1] * np.cos(t)])


def smooth_image(h, w, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = np.zeros((1, h, w, channels), np.float32)
    for ch in range(channels):
        a, b, c, d = rng.uniform(0.5, 2.0, 4)
        out[0, :, :, ch] = np.sin(2 * a * xx + b) * np.cos(2 * c * yy + d)
    return out


def central_disk(h, w, radius_fraction=0.25):
    yy, xx = np.mgrid[0:h, 0:w]
    return (xx - (w - 1) / 2) ** 2 + (yy - (h - 1) / 2) ** 2 <= (radius_fraction * min(h, w)) ** 2


# -- rotation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [8, 9, 28])
def test_rotation_90_equals_np_rot90(size):
    img = np.random.default_rng(size).normal(size=(2, size, size, 3)).astype(np.float32)
    out = T.apply(T.rotation(90), img, 0)
    expected = np.rot90(img, k=1, axes=(1, 2))
    interior = np.s_[:, 1:-1, 1:-1, :]
    np.testing.assert_allclose(out[interior], expected[interior], atol=1e-4)
    # pixel centres map onto pixel centres: the border agrees too (up to rounding)
    np.testing.assert_allclose(out, expected, atol=1e-3)


@pytest.mark.parametrize("theta", [1.0, 15.0, 30.0, 45.0, 90.0, 135.0, -20.0, 180.0, 250.0])
def test_rotation_moves_marked_point_like_the_rotation_matrix(theta):
    size = 41
    c = np.array([(size - 1) / 2, (size - 1) / 2])
    p = np.array([28.0, 14.0])
    out = T.apply(T.rotation(theta), blob(size, *p), 0)
    np.testing.assert_allclose(centroid(out), rotate_point(p, c, theta), atol=0.05)


def test_rotation_partial_range_in_degrees_not_radians():
    angles = np.linspace(-30, 30, 7)
    size = 41
    c = np.array([20.0, 20.0])
    p = np.array([33.0, 20.0])
    img = blob(size, *p)
    tset = T.rotation(angles)
    for j, a in enumerate(angles):
        out = T.apply(tset, img, j)
        np.testing.assert_allclose(centroid(out), rotate_point(p, c, a), atol=0.05)
    # one degree is a small move (a radians-as-degrees bug would move it by 57°)
    moved = np.linalg.norm(centroid(T.apply(T.rotation(1.0), img, 0)) - p)
    assert 0.1 < moved < 0.4


# -- translation, scale, shear ----------------------------------------------------------------
@pytest.mark.parametrize(("dx", "dy"), [(3, 0), (0, 3), (5, -2), (-4, 7), (2.5, -1.5)])
def test_translation_moves_marked_pixel_by_dx_dy(dx, dy):
    img = np.zeros((1, 24, 30, 1), np.float32)
    img[0, 10, 12, 0] = 1.0  # row 10 (y), column 12 (x)
    out = T.apply(T.translation(dx, dy), img, 0)
    np.testing.assert_allclose(centroid(out), [12 + dx, 10 + dy], atol=1e-5)
    if float(dx).is_integer() and float(dy).is_integer():
        assert out[0, 10 + dy, 12 + dx, 0] == pytest.approx(1.0)


@given(
    dx=st.integers(-6, 6),
    dy=st.integers(-6, 6),
    seed=st.integers(0, 1000),
)
def test_integer_translation_equals_numpy_shift_with_zero_fill(dx, dy, seed):
    img = np.random.default_rng(seed).normal(size=(2, 12, 15, 2)).astype(np.float32)
    expected = np.zeros_like(img)
    h, w = img.shape[1:3]
    expected[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = img[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    out = T.apply(T.translation(dx, dy), img, 0)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_relative_translation_uses_fractions_of_the_size():
    img = np.zeros((1, 20, 40, 1), np.float32)
    img[0, 5, 10, 0] = 1
    out = T.apply(T.translation(0.25, 0.1, relative=True), img, 0)
    assert out[0, 7, 20, 0] == pytest.approx(1.0)
    assert T.translation(0.25, 0.1, relative=True).names == ("dx_rel", "dy_rel")


def test_scale_and_shear_move_points_as_documented():
    size = 41
    c = np.array([20.0, 20.0])
    p = np.array([26.0, 17.0])
    out = T.apply(T.scale(1.5), blob(size, *p, sigma=1.0), 0)
    np.testing.assert_allclose(centroid(out), c + 1.5 * (p - c), atol=0.05)
    phi = 20.0
    out = T.apply(T.shear(phi, axis="x"), blob(size, *p), 0)
    expected = [p[0] + np.tan(np.deg2rad(phi)) * (p[1] - c[1]), p[1]]
    np.testing.assert_allclose(centroid(out), expected, atol=0.05)
    out = T.apply(T.shear(phi, axis="y"), blob(size, *p), 0)
    expected = [p[0], p[1] + np.tan(np.deg2rad(phi)) * (p[0] - c[0])]
    np.testing.assert_allclose(centroid(out), expected, atol=0.05)


def test_point_matrix_composes_in_order():
    # rotation then translation: the point is rotated first, then shifted
    tset = T.product(T.rotation(90), T.translation(3, 1))
    size = 41
    c = np.array([20.0, 20.0])
    p = np.array([30.0, 20.0])
    out = T.apply(tset, blob(size, *p), 0)
    np.testing.assert_allclose(
        centroid(out), rotate_point(p, c, 90) + np.array([3.0, 1.0]), atol=0.05
    )


# -- fill and interpolation modes ------------------------------------------------------------
def test_fill_modes_and_interpolation():
    img = np.random.default_rng(0).normal(size=(1, 10, 10, 1)).astype(np.float32)
    wrap = T.apply(T.translation(3, 0, fill="wrap"), img, 0)
    np.testing.assert_allclose(wrap, np.roll(img, 3, axis=2), atol=1e-6)
    nearest = T.apply(T.translation(3, 0, fill="nearest"), img, 0)
    np.testing.assert_allclose(nearest[0, :, :3, 0], np.repeat(img[0, :, :1, 0], 3, axis=1))
    const = T.apply(T.translation(3, 0, fill="constant", fill_value=7.0), img, 0)
    np.testing.assert_allclose(const[0, :, :3, 0], 7.0)
    reflect = T.apply(T.translation(2, 0, fill="reflect"), img, 0)
    np.testing.assert_allclose(reflect[0, :, 0, 0], img[0, :, 1, 0], atol=1e-6)
    np.testing.assert_allclose(reflect[0, :, 1, 0], img[0, :, 0, 0], atol=1e-6)
    # nearest interpolation copies pixels: a 0.4 px shift rounds to no shift
    near = T.apply(T.translation(0.4, 0, interpolation="nearest", fill="nearest"), img, 0)
    np.testing.assert_allclose(near, img)
    bil = T.apply(T.translation(0.4, 0), img, 0)
    np.testing.assert_allclose(
        bil[0, :, 5, 0], 0.6 * img[0, :, 5, 0] + 0.4 * img[0, :, 4, 0], atol=1e-6
    )


# -- exact operations -------------------------------------------------------------------------
def test_flip_rot90_roll_are_exact():
    img = np.random.default_rng(1).normal(size=(3, 6, 6, 2)).astype(np.float32)
    np.testing.assert_array_equal(T.apply(T.flip("x"), img, 0), img[:, :, ::-1])
    np.testing.assert_array_equal(T.apply(T.flip("y"), img, 0), img[:, ::-1])
    np.testing.assert_array_equal(T.apply(T.flip("xy"), img, 0), img[:, ::-1, ::-1])
    for k in range(-1, 5):
        np.testing.assert_array_equal(T.apply(T.rot90(k), img, 0), np.rot90(img, k, axes=(1, 2)))
    np.testing.assert_array_equal(T.apply(T.roll(2, "x"), img, 0), np.roll(img, 2, axis=2))
    np.testing.assert_array_equal(T.apply(T.roll(-3, "y"), img, 0), np.roll(img, -3, axis=1))
    both = T.roll([(1, 2)], axis="xy")
    np.testing.assert_array_equal(T.apply(both, img, 0), np.roll(img, (2, 1), axis=(1, 2)))


def test_rot90_odd_k_needs_square_input():
    with pytest.raises(ValueError, match="square"):
        T.apply(T.rot90(1), np.zeros((1, 4, 6, 1), np.float32), 0)
    out = T.apply(T.rot90(2), np.zeros((1, 4, 6, 1), np.float32), 0)
    assert out.shape == (1, 4, 6, 1)


# -- photometric and noise --------------------------------------------------------------------
def test_photometric_formulas():
    img = np.random.default_rng(2).uniform(size=(2, 5, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(T.apply(T.brightness([1.0, 1.5]), img, 1), 1.5 * img, rtol=1e-6)
    mean = img.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(
        T.apply(T.contrast(0.5), img, 0), mean + 0.5 * (img - mean), rtol=1e-5, atol=1e-6
    )


def test_noise_is_seeded_and_independent_of_batch_size():
    img = np.zeros((6, 4, 4, 1), np.float32)
    tset = T.gaussian_noise([0.1, 0.5], seed=3)
    full = T.apply(tset, img, 1, sample_index=np.arange(10, 16))
    halves = [
        T.apply(tset, img[:4], 1, sample_index=np.arange(10, 14)),
        T.apply(tset, img[4:], 1, sample_index=np.arange(14, 16)),
    ]
    np.testing.assert_array_equal(full, np.concatenate(halves))
    np.testing.assert_array_equal(full, T.apply(tset, img, 1, sample_index=np.arange(10, 16)))
    assert 0.3 < full.std() < 0.7  # std 0.5
    assert not np.allclose(full, T.apply(T.gaussian_noise([0.1, 0.5], seed=4), img, 1))
    assert not np.allclose(full[0], full[1])  # each sample draws its own noise
    with pytest.raises(ValueError, match="cannot be inverted"):
        T.invert_maps(tset, img, 0)


# -- invert -----------------------------------------------------------------------------------
GEOMETRIC_SETS = [
    T.rotation([30.0, -75.0]),
    T.translation([2.5, -3.0], [-1.5, 2.0]),
    T.translation(0.1, -0.05, relative=True),
    T.scale([1.2, 0.9]),
    T.shear([15.0, -10.0], axis="x"),
    T.shear(12.0, axis="y"),
    T.product(T.rotation([20.0, 50.0]), T.translation(2.0, -1.0), T.scale(1.1)),
    T.product(T.shear(10.0), T.rotation(25.0)),
]


@pytest.mark.parametrize("tset", GEOMETRIC_SETS, ids=lambda s: s.description[:40])
def test_invert_after_apply_is_identity_on_the_interior(tset):
    img = smooth_image(32, 32, channels=2)
    disk = central_disk(32, 32)
    for j in range(len(tset)):
        back = T.invert_maps(tset, T.apply(tset, img, j), j, input_size=32)
        np.testing.assert_allclose(back[0][disk], img[0][disk], atol=2e-2)


@pytest.mark.parametrize(
    "tset",
    [T.rot90([0, 1, 2, 3]), T.flip(["x", "y", "xy", "none"]), T.roll([3, -5], "x"), T.roll(2, "y")],
    ids=lambda s: s.description,
)
def test_invert_is_exact_for_exact_transformations(tset):
    img = np.random.default_rng(5).normal(size=(2, 12, 12, 4)).astype(np.float32)
    for j in range(len(tset)):
        back = T.invert_maps(tset, T.apply(tset, img, j), j, input_size=12)
        np.testing.assert_array_equal(back, img)


def test_invert_rescales_translation_to_the_feature_map_size():
    tset = T.translation(4.0, 0.0)
    fmap = np.zeros((1, 14, 14, 5), np.float32)
    fmap[0, 5, 7, :] = 1.0
    back = T.invert_maps(tset, fmap, 0, input_size=28)
    assert back.shape == (1, 14, 14, 5)
    np.testing.assert_allclose(back[0, 5, 5, :], 1.0)  # moved back by 4 * 14 / 28 = 2
    assert back.sum() == pytest.approx(5.0)
    # non-square inputs: y is rescaled by the height ratio
    back = T.invert_maps(T.translation(0.0, 6.0), fmap, 0, input_size=(42, 28))
    np.testing.assert_allclose(back[0, 3, 7, :], 1.0)
    with pytest.raises(ValueError, match="input_size"):
        T.invert_maps(tset, fmap, 0)


def test_invert_roll_on_smaller_maps():
    tset = T.roll(4, "x")
    fmap = np.random.default_rng(0).normal(size=(1, 7, 7, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        T.invert_maps(tset, fmap, 0, input_size=28), np.roll(fmap, -1, axis=2)
    )
    odd = np.random.default_rng(1).normal(size=(1, 10, 10, 2)).astype(np.float32)
    back = T.invert_maps(tset, odd, 0, input_size=28)  # 1.43 px: resampled with wrap fill
    np.testing.assert_allclose(back.sum(), odd.sum(), rtol=1e-5)


def test_invert_rotation_on_feature_map_any_channel_count():
    fmap = np.random.default_rng(3).normal(size=(2, 7, 7, 13)).astype(np.float32)
    back = T.invert_maps(T.rot90([1]), fmap, 0)
    np.testing.assert_array_equal(back, np.rot90(fmap, -1, axes=(1, 2)))
    back = T.invert_maps(T.rotation(90), fmap, 0)
    np.testing.assert_allclose(back, np.rot90(fmap, -1, axes=(1, 2)), atol=1e-4)


def test_invert_photometric_is_identity_on_feature_maps():
    fmap = np.random.default_rng(3).normal(size=(2, 3, 3, 7)).astype(np.float32)
    tset = T.product(T.brightness(2.0), T.contrast(0.5), T.flip("x"))
    np.testing.assert_array_equal(T.invert_maps(tset, fmap, 0), fmap[:, :, ::-1])


# -- custom -----------------------------------------------------------------------------------
def test_custom_transformations():
    import tensorflow as tf

    def gamma(x, g):
        return tf.sign(x) * tf.abs(x) ** g

    def shift(x, s):
        return tf.roll(x, s, axis=2)

    def unshift(f, s):
        return tf.roll(f, -s, axis=2)

    img = np.random.default_rng(0).uniform(size=(1, 4, 4, 1)).astype(np.float32)
    g = T.custom(gamma, {"g": [0.5, 2.0]}, geometric=False)
    np.testing.assert_allclose(T.apply(g, img, 1), img**2, rtol=1e-5)
    assert g.labels == ("gamma(g=0.5)", "gamma(g=2)")
    np.testing.assert_array_equal(T.invert_maps(g, img, 0), img)
    s = T.custom(shift, [{"s": 1}, {"s": 2}], inverse=unshift)
    np.testing.assert_array_equal(T.invert_maps(s, T.apply(s, img, 1), 1), img)
    named_like_builtin = T.custom(shift, {"s": [1]}, inverse=unshift, name="flip")
    np.testing.assert_array_equal(T.apply(named_like_builtin, img, 0), np.roll(img, 1, axis=2))
    np.testing.assert_array_equal(
        T.invert_maps(named_like_builtin, img, 0), np.roll(img, -1, axis=2)
    )
    no_inverse = T.custom(shift, {"s": [1]})
    assert not no_inverse.invertible
    with pytest.raises(ValueError, match="inverse=None"):
        T.invert_maps(no_inverse, img, 0)
    with pytest.raises(ValueError, match="reserved"):
        T.custom(shift, {"x": [1]})
    with pytest.raises(ValueError, match="same length"):
        T.custom(shift, {"s": [1, 2], "t": [1]})
    with pytest.raises(ValueError, match="fn must accept"):
        T.custom(lambda x: x, {"a": [1]})
    with pytest.raises(ValueError, match="inverse must accept"):
        T.custom(shift, {"s": [1]}, inverse=lambda f: f)
    bad = T.custom(lambda x, a: x[:, :2], {"a": [1]})
    with pytest.raises(ValueError, match=r"input's shape"):
        T.apply(bad, img, 0)


# -- sets as data -----------------------------------------------------------------------------
def test_product_of_rotation_and_translation_has_both_coordinates():
    tset = T.product(T.rotation([0, 90, 180, 270]), T.translation([0, 2, 4], 0))
    assert len(tset) == 12
    ds = tset.parameters
    assert set(ds.coords) >= {"transformation", "transform", "angle", "dx", "dy"}
    np.testing.assert_array_equal(ds["angle"].values, np.repeat([0, 90, 180, 270], 3))
    np.testing.assert_array_equal(ds["dx"].values, np.tile([0, 2, 4], 4))
    assert ds["angle"].attrs["units"] == "degrees"
    assert ds["dx"].attrs["units"] == "pixels"
    assert ds["transform"].values[5] == "rotation(90)+translation(4, 0)"
    np.testing.assert_array_equal(ds["transformation"].values, np.arange(12))


def test_union_fills_neutral_values_and_resolves_name_clashes():
    u = T.union(T.rotation([10.0]), T.translation(2, 3), T.identity())
    np.testing.assert_array_equal(u.parameters["angle"].values, [10, 0, 0])
    np.testing.assert_array_equal(u.parameters["dx"].values, [0, 2, 0])
    assert u.labels == ("rotation(10)", "translation(2, 3)", "identity")
    bc = T.union(T.brightness([1.5]), T.contrast([0.5]))
    assert bc.names == ("brightness_factor", "contrast_factor")
    np.testing.assert_array_equal(bc.parameters["contrast_factor"].values, [1.0, 0.5])
    rr = T.product(T.rotation([0, 10]), T.rotation([0, 90]))
    assert rr.names == ("angle_1", "angle_2")
    # translation and roll share the meaning of dx: one coordinate in a union
    tr = T.union(T.translation(1.5, 0), T.roll(3))
    assert tr.names == ("dx", "dy")
    np.testing.assert_array_equal(tr.parameters["dx"].values, [1.5, 3])
    assert T.rotation(5).rename({"angle": "theta"}).names == ("theta",)
    with pytest.raises(ValueError, match="unknown"):
        T.rotation(5).rename({"nope": "x2"})


def test_equality_hash_repr_and_serialisation():
    a = T.rotation([0, 90])
    b = T.union(T.rotation(0), T.rotation(90))
    assert a == b and hash(a) == hash(b)
    assert a != T.rotation([0, 90], interpolation="nearest")
    assert a != T.rotation([0, 91])
    assert len({a, b, T.rotation([0, 90.0])}) == 1
    assert "rotation" in repr(a) and "T=2" in repr(a) and "angle" in repr(a)
    assert a[1] == T.rotation(90)
    assert a[::-1] == T.rotation([90, 0])
    tset = T.product(T.rotation([0, 45]), T.translation([1, 2], [3, 4], fill="wrap"), T.flip("x"))
    spec = json.loads(tset.to_json())
    assert T.from_dict(spec) == tset
    assert T.from_dict(tset.to_json()).labels == tset.labels
    with pytest.raises(ValueError, match="cannot be rebuilt"):
        T.from_dict(T.custom(lambda x, a: x, {"a": [1]}).to_dict())
    spec["elements"][0][0]["kind"] = "os.system"
    with pytest.raises(ValueError, match="cannot be rebuilt"):
        T.from_dict(spec)
    with pytest.raises(ValueError, match="spec"):
        T.from_dict({"format": "pickle"})


def test_apply_many_matches_apply_and_runs_in_a_tf_function():
    import tensorflow as tf

    img = smooth_image(16, 16, channels=3)
    img = np.concatenate([img, img[:, ::-1]])
    for tset in [
        T.product(T.rotation([0, 30, 60]), T.translation([0, 1.5], 0)),
        T.union(T.rotation([15.0]), T.flip("x"), T.identity(), T.brightness(2.0)),
    ]:
        many = T.apply_many(tset, img)
        assert many.shape == (2, len(tset), 16, 16, 3)
        for j in range(len(tset)):
            np.testing.assert_allclose(many[:, j], T.apply(tset, img, j), atol=1e-6)
    tset = T.rotation([0, 90])
    fn = tf.function(lambda x: T.apply_many(tset, x))
    out = fn(tf.constant(img))
    np.testing.assert_allclose(out.numpy(), T.apply_many(tset, img), atol=1e-6)
    partial = T.apply_many(tset, img, [1])
    np.testing.assert_allclose(partial[:, 0], np.rot90(img, 1, axes=(1, 2)), atol=1e-3)


def test_integer_images_are_converted_and_tensors_stay_tensors():
    import tensorflow as tf

    img = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1)
    out = T.apply(T.flip("x"), img, 0)
    assert out.dtype == np.float32
    tout = T.apply(T.flip("x"), tf.constant(img, tf.float32), 0)
    assert tf.is_tensor(tout)


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: T.rotation([]), "angles must not be empty"),
        (lambda: T.rotation(["ten"]), "angles must contain only real numbers"),
        (lambda: T.rotation("90"), "angles must be a number"),
        (lambda: T.rotation([float("nan")]), "angles must contain only finite"),
        (lambda: T.rotation([1], interpolation="cubic"), "interpolation must be one of"),
        (lambda: T.rotation([1], fill="zeros"), "fill must be one of"),
        (lambda: T.translation([1, 2], [1, 2, 3]), "dx and dy"),
        (lambda: T.scale([0.0]), "factors must contain only positive"),
        (lambda: T.shear([90.0]), "between -90 and 90"),
        (lambda: T.flip("z"), "axes must be one of"),
        (lambda: T.rot90([1.5]), "k must contain only integers"),
        (lambda: T.roll([1], axis="z"), "axis must be one of"),
        (lambda: T.gaussian_noise([-1.0]), "std must contain only non-negative"),
        (lambda: T.identity(0), "n must be a positive integer"),
        (lambda: T.product(), "at least one"),
        (lambda: T.union(T.rotation(1), "rotation"), "must be a TransformationSet"),
        (
            lambda: T.apply(T.rotation(1), np.zeros((28, 28)), 0),
            r"rotation\(1\) is a geometric transformation of images and needs a rank-4 .* "
            r"x has shape \(28, 28\)",
        ),
        (lambda: T.apply(T.rotation(1), np.zeros((1, 4, 4, 1)), 3), "out of range"),
        (lambda: T.apply(T.rotation(1), np.zeros((1, 4, 4, 1)), 0.5), "j must be an integer"),
        (lambda: T.invert_maps(T.rotation(1), np.zeros((4, 4)), 0), "fmap must be a rank-4"),
        (lambda: T.invert_maps(T.rotation(1), np.zeros((1, 4, 4, 1)), 0, fill="x"), "fill must be"),
        (lambda: T.seed_groups(0), "n must be a positive integer"),
        (lambda: T.seed_groups(4, semantics="old"), "semantics must be one of"),
        (lambda: T.rotation([0, 1])[[]], "index|empty"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# -- seed groups ------------------------------------------------------------------------------
def test_seed_groups_structure_and_units():
    groups = T.seed_groups(7)
    assert list(groups) == list(T.GROUP_NAMES)
    assert all(len(g) == 7 for g in groups.values())
    assert groups["identity"].labels == ("identity",) * 7
    np.testing.assert_allclose(
        groups["rotation"].parameters["angle"].values, np.arange(7) * 360 / 7
    )
    np.testing.assert_array_equal(groups["translation_x"].parameters["dx"].values, np.arange(7) * 4)
    np.testing.assert_array_equal(groups["translation_x"].parameters["dy"].values, 0)
    np.testing.assert_array_equal(groups["translation_y"].parameters["dy"].values, np.arange(7) * 4)
    xy = groups["translation_xy"].parameters
    np.testing.assert_array_equal(xy["dy"].values, [0, 7, 14, 21, 0, 0, 0])
    np.testing.assert_array_equal(xy["dx"].values, [0, 0, 0, 0, 0, 9, 18])
    rx = groups["rotation_translation_x"].parameters
    np.testing.assert_allclose(rx["angle"].values, [0, 90, 180, 270, 0, 0, 0])
    np.testing.assert_array_equal(rx["dx"].values, [0, 0, 0, 0, 0, 9, 18])
    np.testing.assert_array_equal(groups["rotation_translation_y"].parameters["dx"].values, 0)
    # more transformations than pixels: 1-pixel steps
    assert T.seed_groups(40, size=28)["translation_y"].parameters["dy"].values[-1] == 39
    assert T.seed_groups(1)["rotation_translation_x"] == T.rotation(0)
    filled = T.seed_groups(2, fill_value=-0.5)["rotation"]
    out = T.apply(filled, np.zeros((1, 5, 5, 1), np.float32) + 1, 1)  # 180°: no corner loss
    assert filled == T.rotation([0.0, 180.0], fill_value=-0.5)
    assert out.min() == pytest.approx(1.0)


def test_seed_groups_seed_semantics_reproduce_the_seed_parameters():
    groups = T.seed_groups(7, semantics="seed")
    np.testing.assert_array_equal(groups["rotation"].parameters["angle"].values, np.arange(7) * 51)
    np.testing.assert_array_equal(
        groups["translation_x"].parameters["dx"].values, -np.arange(7) * 4
    )
    rx = groups["rotation_translation_x"].parameters  # the seed shifted along y here
    np.testing.assert_array_equal(rx["dy"].values, [0, 0, 0, 0, 0, -9, -18])
    np.testing.assert_array_equal(rx["dx"].values, 0)


def test_seed_semantics_match_keras_apply_affine_transform():
    legacy = pytest.importorskip("keras.src.legacy.preprocessing.image")
    img = smooth_image(28, 28)
    groups = T.seed_groups(4, semantics="seed")
    # seed: AffineTransformation(tx=i*h) and (theta=i*h), Keras defaults (order 1, fill nearest)
    cases = [("translation_x", {"tx": 7}, 1), ("translation_y", {"ty": 14}, 2)]
    cases += [("rotation", {"theta": 90}, 1), ("rotation_translation_y", {"tx": 14}, 3)]
    for group, kwargs, j in cases:
        expected = legacy.apply_affine_transform(
            img[0], row_axis=0, col_axis=1, channel_axis=2, order=1, **kwargs
        )
        out = T.apply(groups[group], img, j)
        np.testing.assert_allclose(out[0], expected, atol=1e-4, err_msg=group)


def test_top_level_package_exposes_transforms():
    assert tmx.transforms.rotation is T.rotation
    assert isinstance(T.rotation(1), tmx.TransformationSet)
