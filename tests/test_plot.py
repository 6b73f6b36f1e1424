"""Tests of tmx.plot: check the artists each figure holds, not pixels."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr
from matplotlib.collections import PathCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

import tmx.plot as tp
import tmx.transforms as T
from tmx.plot.overlay import resize_half_pixel
from tmx.plot.transforms import wrap_label

LAYERS = ["conv2d", "conv2d_1", "max_pooling2d", "dense"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def per_layer(values, layers=LAYERS, name="normalized_variance"):
    return xr.DataArray(
        np.asarray(values, dtype=float), dims="layer", coords={"layer": layers}, name=name
    )


def boot(est, low, high, layers=LAYERS, ci=0.95):
    return xr.Dataset(
        {
            "estimate": per_layer(est, layers),
            "low": per_layer(low, layers),
            "high": per_layer(high, layers),
        },
        attrs={"ci": ci, "measure": "bootstrap(normalized_variance)"},
    )


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def data_lines(ax):
    """Lines that are series (not error-bar caps or separators)."""
    return [ln for ln in ax.lines if not ln.get_label().startswith("_")]


# -- measure names on the axes --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("normalized_variance", "normalized variance"),
        (" sample__variance ", "sample variance"),
        (None, "value"),
        ("", "value"),
    ],
)
def test_measure_names_are_readable_on_the_axes(name, shown):
    fig = tp.layer_curves(per_layer([0.9, 0.7, 0.5, 0.2], name=name))
    assert fig.axes[0].get_ylabel() == shown


def test_a_wrapped_measure_name_loses_its_wrapper():
    # bootstrap(...) results: the measure inside
    fig = tp.layer_curves(boot([0.5] * 4, [0.4] * 4, [0.6] * 4))
    assert fig.axes[0].get_ylabel() == "normalized variance"
    # a convergence curve: the measure inside convergence(...), "measure" when it has none
    bands = {"estimate": 0.5, "low": 0.4, "high": 0.6}
    curve = xr.Dataset(
        {k: (("layer", "size"), np.full((2, 3), v)) for k, v in bands.items()},
        coords={"layer": ["a", "b"], "size": [10, 20, 40]},
    )
    named = [("convergence(normalized_variance)", "normalized variance"), ("", "measure")]
    for measure, shown in named:
        curve.attrs["measure"] = measure
        fig = tp.convergence(curve)
        assert fig.axes[0].get_ylabel() == shown


# -- layer_curves ---------------------------------------------------------------------------------
def test_layer_curves_single(tmp_path):
    fig = tp.layer_curves(per_layer([0.9, 0.7, 0.5, 0.2]), title="NV")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "layer"
    assert ax.get_ylabel() == "normalized variance"
    assert ax.get_title() == "NV"
    assert [t.get_text() for t in ax.get_xticklabels()] == LAYERS
    (line,) = data_lines(ax)
    np.testing.assert_allclose(line.get_xdata(), [0, 1, 2, 3])
    np.testing.assert_allclose(line.get_ydata(), [0.9, 0.7, 0.5, 0.2])
    assert ax.get_legend() is None and not ax.containers
    fig.savefig(tmp_path / "curves.png")


def test_layer_curves_bootstrap_error_bars(tmp_path):
    est = [0.9, 0.7, 0.5, 0.2]
    low = [0.8, 0.75, np.nan, 0.1]  # estimate below the interval at conv2d_1; a NaN bound
    high = [1.0, 0.9, 0.6, 0.25]
    fig = tp.layer_curves(boot(est, low, high))
    (ax,) = fig.axes
    assert ax.get_ylabel() == "normalized variance"
    (container,) = ax.containers
    assert isinstance(container, ErrorbarContainer)
    (bars,) = container.lines[2]
    segments = bars.get_segments()
    ok = [0, 1, 3]  # layers with finite bounds
    assert len(segments) == len(ok)
    for seg, i in zip(segments, ok, strict=True):
        np.testing.assert_allclose(seg[:, 0], [i, i])
        np.testing.assert_allclose(sorted(seg[:, 1]), [low[i], high[i]])
    low_cap, high_cap = container.lines[1]
    np.testing.assert_allclose(low_cap.get_ydata(), np.asarray(low)[ok])
    np.testing.assert_allclose(high_cap.get_ydata(), np.asarray(high)[ok])
    assert legend_texts(ax) == ["normalized variance (95% CI)"]
    fig.savefig(tmp_path / "curves_boot.png")


def test_layer_curves_several_series_and_labels():
    a = per_layer([1, 2, 3, 4])
    b = per_layer([4, 3, 2, 1], name="normalized_distance")
    ax = tp.layer_curves([a, b]).axes[0]
    lines = data_lines(ax)
    assert len(lines) == 2
    assert legend_texts(ax) == ["normalized variance", "normalized distance"]
    assert ax.get_ylabel() == "value"
    assert lines[0].get_marker() != lines[1].get_marker()
    # Explicit labels and ylabel override; the same measure twice is numbered.
    ax = tp.layer_curves([a, b], labels=["A", "B"], ylabel="score").axes[0]
    assert legend_texts(ax) == ["A", "B"] and ax.get_ylabel() == "score"
    ax = tp.layer_curves([a, a]).axes[0]
    assert legend_texts(ax) == ["normalized variance (1)", "normalized variance (2)"]


def test_layer_curves_dict_aligns_layers_and_mixes_bootstrap():
    a = per_layer([1.0, 2.0, 3.0], layers=["l1", "l2", "l3"])
    b = boot([5.0, 6.0], [4.0, 5.0], [6.0, 7.0], layers=["l2", "l4"], ci=0.9)
    ax = tp.layer_curves({"model A": a, "model B": b}).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["l1", "l2", "l3", "l4"]
    assert legend_texts(ax) == ["model A", "model B (90% CI)"]
    line_a, line_b = data_lines(ax)
    np.testing.assert_allclose(line_a.get_ydata(), [1, 2, 3, np.nan])
    np.testing.assert_allclose(line_b.get_ydata(), [np.nan, 5, np.nan, 6])
    assert len(ax.containers) == 1


def test_layer_curves_non_finite_ax_and_log():
    fig, ax = plt.subplots()
    out = tp.layer_curves(per_layer([0.5, np.nan, np.inf, 0.1]), ax=ax, log=True)
    assert out is fig and ax.get_yscale() == "log"
    (line,) = data_lines(ax)
    np.testing.assert_allclose(line.get_ydata(), [0.5, np.nan, np.nan, 0.1])
    fig.canvas.draw()  # renders without error


def test_layer_curves_errors():
    with pytest.raises(ValueError, match="empty"):
        tp.layer_curves([])
    with pytest.raises(ValueError, match="empty"):
        tp.layer_curves({})
    with pytest.raises(ValueError, match="labels"):
        tp.layer_curves([per_layer([1, 2, 3, 4])], labels=["a", "b"])
    with pytest.raises(ValueError, match="'low'"):
        tp.layer_curves(xr.Dataset({"estimate": per_layer([1, 2, 3, 4])}))
    with pytest.raises(ValueError, match="'layer'"):
        tp.layer_curves(xr.DataArray([1.0, 2.0], dims="unit"))
    with pytest.raises(ValueError, match="by_layer"):
        tp.layer_curves(xr.DataArray(np.ones((4, 2)), dims=("layer", "replicate")))
    with pytest.raises(ValueError, match="twice"):
        tp.layer_curves(per_layer([1, 2], layers=["a", "a"]))
    with pytest.raises(ValueError, match="DataArray"):
        tp.layer_curves(np.ones(4))


# -- unit_heatmap ---------------------------------------------------------------------------------
def per_unit():
    """conv (3, 4, 5), a sequence layer (L=6, C=2) and a dense layer (7,)."""
    h, w, c = 3, 4, 5
    yy, xx, cc = (
        a.reshape(-1) for a in np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
    )
    conv = 100.0 * cc + 10.0 * yy + xx  # (y, x, channel) order, as the cube
    conv[7] = np.nan
    conv[8] = np.inf
    seq_x, seq_c = np.repeat(np.arange(6), 2), np.tile(np.arange(2), 6)
    n_dense = 7
    values = np.concatenate([conv, 10.0 * seq_c + seq_x, np.arange(n_dense, dtype=float)])
    return xr.DataArray(
        values,
        dims="unit",
        coords={
            "layer": ("unit", ["conv"] * conv.size + ["seq"] * 12 + ["fc"] * n_dense),
            "channel": ("unit", np.concatenate([cc, seq_c, np.arange(n_dense)])),
            "y": ("unit", np.concatenate([yy, np.full(12, -1), np.full(n_dense, -1)])),
            "x": ("unit", np.concatenate([xx, seq_x, np.full(n_dense, -1)])),
        },
        name="normalized_variance",
    )


def test_unit_heatmap_spatial_layer(tmp_path):
    pu = per_unit()
    fig = tp.unit_heatmap(pu, "conv")
    assert isinstance(fig, Figure)
    ax, cax = fig.axes
    (im,) = ax.get_images()
    arr = im.get_array()
    assert arr.shape == (5, 12)  # channels × positions (3 · 4)
    c, pos = np.meshgrid(np.arange(5), np.arange(12), indexing="ij")
    expected = 100.0 * c + 10.0 * (pos // 4) + pos % 4
    mask = np.ma.getmaskarray(arr)
    assert mask.sum() == 2
    # unit 7 is (y=0, x=1, c=2), unit 8 is (y=0, x=1, c=3)
    assert mask[2, 1] and mask[3, 1]
    np.testing.assert_allclose(arr.data[~mask], expected[~mask])
    assert ax.get_xlabel() == "position (y·w + x)"
    assert ax.get_ylabel() == "channel"
    assert cax.get_ylabel() == "normalized variance"
    assert "conv" in ax.get_title() and "2 non-finite" in ax.get_title()
    fig.savefig(tmp_path / "heatmap.png")


def test_unit_heatmap_dense_sequence_and_ax():
    pu = per_unit()
    ax = tp.unit_heatmap(pu, "fc", title="dense units").axes[0]
    arr = ax.get_images()[0].get_array()
    assert arr.shape == (1, 7)  # a single row of features
    np.testing.assert_allclose(arr.data[0], np.arange(7))
    assert ax.get_xlabel() == "channel (feature)"
    assert ax.get_title() == "dense units"
    seq = tp.unit_heatmap(pu, "seq").axes[0].get_images()[0].get_array()
    assert seq.shape == (2, 6)
    np.testing.assert_allclose(seq.data, 10.0 * np.arange(2)[:, None] + np.arange(6))
    fig, given = plt.subplots()
    assert tp.unit_heatmap(pu, "conv", ax=given, vmin=0, vmax=1) is fig
    assert given.get_images()[0].get_clim() == (0, 1)


def test_unit_heatmap_errors():
    pu = per_unit()
    with pytest.raises(ValueError, match=r"unknown layer 'nope'; layers: \['conv', 'seq', 'fc'\]"):
        tp.unit_heatmap(pu, "nope")
    with pytest.raises(ValueError, match="single dim 'unit'"):
        tp.unit_heatmap(pu.expand_dims(replicate=2), "conv")
    with pytest.raises(ValueError, match="unit coordinates"):
        tp.unit_heatmap(pu.drop_vars("channel"), "conv")


# -- accuracy_scatter -----------------------------------------------------------------------------
def analysis():
    groups = ["rotation", "translation_x", "scale", "brightness"]
    overall = np.array([0.6, 0.3, 0.45, 0.1])
    return xr.Dataset(
        {
            "accuracy": ("group", [0.4, 0.85, 0.7, 0.97]),
            "loss": ("group", [1.5, 0.4, 0.8, 0.1]),
            "measure": (("group", "layer"), overall[:, None] * np.array([[1.2, 1.0, 0.8, 0.5]])),
            "overall": ("group", overall),
        },
        coords={"group": groups, "layer": LAYERS},
        attrs={"measure": "normalized_variance"},
    )


def test_accuracy_scatter(tmp_path):
    ds = analysis()
    fig = tp.accuracy_scatter(ds, title="acc")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    np.testing.assert_allclose(
        points.get_offsets(), np.column_stack([ds["overall"], ds["accuracy"]])
    )
    assert [t.get_text() for t in ax.texts] == ds["group"].values.tolist()
    for text, (xi, yi) in zip(ax.texts, points.get_offsets(), strict=True):
        assert text.xy == pytest.approx((xi, yi))
    assert ax.get_xlabel() == "normalized variance (mean over units)"
    assert ax.get_ylabel() == "accuracy"
    assert ax.get_title() == "acc"
    assert ax.get_ylim() == pytest.approx((0, 1.02))
    fig.savefig(tmp_path / "scatter.png")


def test_accuracy_scatter_layer_nan_and_ax():
    ds = analysis()
    fig, ax = plt.subplots()
    assert tp.accuracy_scatter(ds, layer="conv2d_1", ax=ax) is fig
    offsets = ax.collections[0].get_offsets()
    np.testing.assert_allclose(offsets[:, 0], ds["measure"].sel(layer="conv2d_1"))
    assert ax.get_xlabel() == "normalized variance (conv2d_1)"
    ds["overall"][1] = np.nan
    ax = tp.accuracy_scatter(ds).axes[0]
    names = [t.get_text() for t in ax.texts]
    assert "translation_x" not in names and len(ax.collections[0].get_offsets()) == 3
    assert any("left out" in n for n in names)


def test_accuracy_scatter_errors():
    ds = analysis()
    with pytest.raises(ValueError, match=r"unknown layer 'fc'; layers: \['conv2d'"):
        tp.accuracy_scatter(ds, layer="fc")
    with pytest.raises(ValueError, match="lacks the variables \\['overall'\\]"):
        tp.accuracy_scatter(ds.drop_vars("overall"))
    with pytest.raises(ValueError, match="'group'"):
        tp.accuracy_scatter(ds.rename({"group": "g"}))


# -- transform_preview ----------------------------------------------------------------------------
def test_transform_preview_grid(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((5, 8, 8, 1)).astype("float32")
    tset = T.rot90([0, 1, 2, 3])
    fig = tp.transform_preview(tset, x, n_samples=3)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3 * 4
    assert [ax.get_title() for ax in fig.axes[:4]] == list(tset.labels)
    assert all(not ax.get_xticks().size and not ax.get_yticks().size for ax in fig.axes)
    # row 1, column 2: sample 1 turned twice
    img = fig.axes[4 + 2].get_images()[0].get_array()
    np.testing.assert_allclose(img, np.rot90(x[1, :, :, 0], 2), atol=1e-6)
    assert fig.axes[0].get_ylabel() == "sample 0"
    assert fig.get_size_inches()[0] > fig.get_size_inches()[1]  # 4 columns, 3 rows
    fig.savefig(tmp_path / "preview.png")


def test_transform_preview_subset_rgb_and_sizes():
    x = np.random.default_rng(1).random((2, 6, 6, 3)).astype("float32") * 255
    tset = T.brightness(np.linspace(0.5, 1.5, 21))
    fig = tp.transform_preview(tset, x, n_samples=4, max_transforms=5)
    assert len(fig.axes) == 2 * 5  # only 2 samples available
    picked = [0, 5, 10, 15, 20]
    assert [ax.get_title() for ax in fig.axes[:5]] == [tset.labels[j] for j in picked]
    rgb = fig.axes[0].get_images()[0].get_array()
    assert rgb.shape == (6, 6, 3) and rgb.min() >= 0 and rgb.max() <= 1
    small = tp.transform_preview(T.rot90([0, 1]), x[:1], n_samples=1)
    assert small.get_size_inches()[0] < fig.get_size_inches()[0]


def test_wrap_label():
    for label in ["rotation(45)", "translation(-3, 0)+scale(1.2)", "x" * 40]:
        wrapped = wrap_label(label, width=18)
        assert wrapped.replace("\n", "") == label
        assert all(len(line.rstrip(" ,+")) <= 18 for line in wrapped.split("\n"))
    assert wrap_label("translation(-3, 0)+scale(1.2)", 18) == "translation(-3, 0)+\nscale(1.2)"
    long = "+".join(["translation(0.25w, -0.125h)"] * 4)
    assert wrap_label(long, width=18, max_lines=3).endswith("…")
    assert wrap_label(long, width=18, max_lines=3).count("\n") == 2


def test_transform_preview_errors():
    tset = T.rot90([0, 1])
    with pytest.raises(ValueError, match="NHWC"):
        tp.transform_preview(tset, np.zeros((8, 8, 1)))
    with pytest.raises(ValueError, match="n_samples"):
        tp.transform_preview(tset, np.zeros((1, 8, 8, 1)), n_samples=0)
    with pytest.raises(ValueError, match="TransformationSet"):
        tp.transform_preview("rot90", np.zeros((1, 8, 8, 1)))


# -- overlay --------------------------------------------------------------------------------------
def test_overlay(tmp_path):
    rng = np.random.default_rng(2)
    image = rng.random((32, 24))
    heat = rng.random((4, 3))
    fig = tp.overlay(image, heat, alpha=0.4, title="attribution")
    assert isinstance(fig, Figure)
    ax, _cax = fig.axes  # the colorbar adds an axes
    base, top = ax.get_images()
    np.testing.assert_allclose(base.get_array(), image)
    assert top.get_array().shape == (32, 24)
    assert top.get_alpha() == 0.4
    assert ax.get_title() == "attribution"
    fig.savefig(tmp_path / "overlay.png")


def test_overlay_rgb_ax_and_no_colorbar():
    image = np.random.default_rng(3).random((16, 16, 3)) * 255
    fig, ax = plt.subplots()
    assert tp.overlay(image, np.ones((4, 4)), ax=ax, colorbar=False) is fig
    assert len(fig.axes) == 1
    base, top = ax.get_images()
    rgb = base.get_array()
    assert rgb.shape == (16, 16, 3) and rgb.min() == 0 and rgb.max() == 1
    np.testing.assert_allclose(top.get_array(), np.ones((16, 16)))
    grey = tp.overlay(image[..., :1], np.ones((2, 2))).axes[0].get_images()[0]
    assert grey.get_array().shape == (16, 16)


def test_resize_half_pixel():
    out = resize_half_pixel(np.array([[0.0, 1.0], [0.0, 1.0]]), (4, 4))
    np.testing.assert_allclose(out, np.tile([0.0, 0.25, 0.75, 1.0], (4, 1)))
    odd = resize_half_pixel(np.arange(21.0).reshape(3, 7), (10, 23))
    assert odd.shape == (10, 23)
    holes = resize_half_pixel(np.array([[1.0, np.nan], [1.0, 1.0]]), (4, 4))
    assert np.isnan(holes[0, 3]) and np.isfinite(holes[3, 0]) and np.nanmax(holes) == 1.0


def test_overlay_errors():
    with pytest.raises(ValueError, match="heatmap must be 2-D"):
        tp.overlay(np.zeros((8, 8)), np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"image must have shape"):
        tp.overlay(np.zeros((8, 8, 4)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="alpha"):
        tp.overlay(np.zeros((8, 8)), np.zeros((2, 2)), alpha=2)
