"""The data set report against direct scikit-learn computations; its files and HTML page."""

from __future__ import annotations

import html.parser
import shutil
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from tmx.introspect.report import open_report, report, report_table, save_report
from tmx.introspect.report_html import report_html

SIZES = {"a": 6, "b": 12}  # units per layer
COUNTS = (60, 55, 20)  # samples per label: the last label is below split_min


def _responses(seed: int = 0) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(c, k) for k, c in enumerate(COUNTS)])
    n = labels.size
    parts = []
    for units in SIZES.values():
        centres = rng.normal(scale=4.0, size=(len(COUNTS), units))
        parts.append(centres[labels] + rng.normal(size=(n, units)))
    values = np.concatenate(parts, axis=1)
    values[7] = values[3]  # an exact duplicate
    values[50] = values[40] + 1e-6  # a near duplicate
    layer = np.concatenate([np.full(u, name) for name, u in SIZES.items()])
    return xr.DataArray(
        values,
        dims=("sample", "unit"),
        coords={
            "sample": np.arange(1000, 1000 + n),
            "label": ("sample", labels),
            "layer": ("unit", layer),
            "channel": ("unit", np.concatenate([np.arange(u) for u in SIZES.values()])),
        },
    )


@pytest.fixture(scope="module")
def data() -> xr.DataArray:
    return _responses()


@pytest.fixture(scope="module")
def rep(data: xr.DataArray) -> xr.Dataset:
    return report(data, precursor_components=4, mixture_components=2)


def _reduced(data: xr.DataArray, layer: str, dims: int) -> np.ndarray:
    x = data.values[:, data["layer"].values == layer]
    return PCA(n_components=min(dims, x.shape[1]), random_state=0).fit_transform(x)


def test_structure(rep: xr.Dataset, data: xr.DataArray) -> None:
    n = data.sizes["sample"]
    assert dict(rep.sizes) == {"sample": n, "layer": 2, "component": 2, "label_model": 3}
    np.testing.assert_array_equal(rep["sample"].values, data["sample"].values)
    np.testing.assert_array_equal(rep["label"].values, data["label"].values)
    assert list(rep["layer"].values) == ["a", "b"]
    assert rep["projection"].dims == ("sample", "layer", "component")
    assert rep["familiarity"].dims == ("sample", "layer")
    assert rep["familiarity_split"].dims == ("sample", "layer", "label_model")
    np.testing.assert_array_equal(rep["reduced_dims"].values, [4, 4])
    np.testing.assert_array_equal(rep["label_count"].values, COUNTS)
    assert rep.attrs["n_samples"] == n and rep.attrs["projection"] == "pca"
    assert rep.attrs["precursor_components"] == 4 and rep.attrs["seed"] == 0


def test_familiarity_and_projection_match_sklearn(rep: xr.Dataset, data: xr.DataArray) -> None:
    labels = data["label"].values
    for layer in SIZES:
        z = _reduced(data, layer, 4)
        gmm = GaussianMixture(n_components=2, covariance_type="diag", random_state=0).fit(z)
        np.testing.assert_allclose(
            rep["familiarity"].sel(layer=layer).values, gmm.score_samples(z), atol=1e-8
        )
        proj = PCA(n_components=2, random_state=0).fit_transform(z)
        np.testing.assert_allclose(rep["projection"].sel(layer=layer).values, proj, atol=1e-8)
        split = rep["familiarity_split"].sel(layer=layer)
        own = rep["familiarity_own"].sel(layer=layer).values
        for k, count in enumerate(COUNTS):
            column = split.sel(label_model=k).values
            if count < 50:  # below split_min: no model of its own
                assert np.isnan(column).all()
                assert np.isnan(own[labels == k]).all()
                continue
            model = GaussianMixture(n_components=2, covariance_type="diag", random_state=0)
            expected = model.fit(z[labels == k]).score_samples(z)
            np.testing.assert_allclose(column, expected, atol=1e-8)
            np.testing.assert_allclose(own[labels == k], expected[labels == k], atol=1e-8)


def test_planted_duplicates_are_reported(rep: xr.Dataset) -> None:
    for layer in SIZES:
        cl = rep["duplicate_cluster"].sel(layer=layer).values
        assert cl[3] >= 0 and cl[3] == cl[7]
        assert cl[40] >= 0 and cl[40] == cl[50]
        assert cl[3] != cl[40]
        assert (cl >= 0).sum() == 4, "nothing but the planted pairs"


def test_labels_argument_and_no_labels(data: xr.DataArray) -> None:
    bare = data.drop_vars("label")
    out = report(bare, precursor_components=3, mixture_components=2, layers=["a"])
    assert "label" not in out.coords and "familiarity_split" not in out
    given = report(
        bare, data["label"].values, precursor_components=3, mixture_components=2, layers=["a"]
    )
    np.testing.assert_array_equal(given["label"].values, data["label"].values)
    named = report(
        data.rename(label="digit"),
        "digit",
        precursor_components=3,
        layers=["a"],
        mixture_components=2,
    )
    np.testing.assert_allclose(
        named["familiarity_split"].values, given["familiarity_split"].values, atol=1e-12
    )


def test_cube_stack_and_dask_input(data: xr.DataArray) -> None:
    cube = data.expand_dims(transformation=2, axis=1).copy()
    out = report(
        cube, transformation="stack", precursor_components=3, mixture_components=2, layers=["b"]
    )
    assert out.sizes["sample"] == 2 * data.sizes["sample"]
    cl = out["duplicate_cluster"].sel(layer="b").values
    assert (cl >= 0).all(), "each sample and its identical transformation are duplicates"
    lazy = report(data.chunk({"sample": 37}), precursor_components=3, mixture_components=2)
    eager = report(data, precursor_components=3, mixture_components=2)
    for name in ("familiarity", "projection", "duplicate_cluster", "familiarity_split"):
        np.testing.assert_allclose(lazy[name].values, eager[name].values, atol=1e-8)


def test_bad_arguments(data: xr.DataArray) -> None:
    with pytest.raises(ValueError, match="projection"):
        report(data, projection="mds")
    with pytest.raises(ValueError, match="precursor_components"):
        report(data, precursor_components=1)
    with pytest.raises(ValueError, match="split_min"):
        report(data, split_min=0)
    with pytest.raises(ValueError, match="labels"):
        report(data, labels=np.arange(3))
    with pytest.raises(ValueError, match="labels="):
        report(data, labels="nope")
    with pytest.raises(ValueError, match="layers"):
        report(data, layers=["zzz"])


def test_save_zarr_round_trip(rep: xr.Dataset, tmp_path) -> None:
    path = save_report(rep, tmp_path / "r.zarr")
    back = open_report(path)
    xr.testing.assert_identical(back, rep)
    assert back["layer"].dtype.kind == "U"
    with pytest.raises(ValueError, match="not a Zarr"):
        open_report(tmp_path)
    bad = rep.drop_vars("familiarity")
    bad["familiarity"] = rep["projection"]  # wrong dims
    save_report(bad, tmp_path / "bad.zarr")
    with pytest.raises(ValueError, match="'familiarity' should have dims"):
        open_report(tmp_path / "bad.zarr")
    with pytest.raises(ValueError, match="exists"):
        save_report(rep, path)
    with pytest.raises(ValueError, match=r"\.zarr or \.parquet"):
        save_report(rep, tmp_path / "r.csv")


def test_save_parquet_round_trip(rep: xr.Dataset, tmp_path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = save_report(rep, tmp_path / "r.parquet")
    table = pd.read_parquet(path)
    assert len(table) == rep.sizes["sample"] * 2
    row = table[(table["sample"] == 1005) & (table["layer"] == "b")].iloc[0]
    point = rep.sel(sample=1005, layer="b")
    assert row["familiarity"] == pytest.approx(float(point["familiarity"]))
    assert row["projection_1"] == pytest.approx(float(point["projection"][1]))
    assert row["familiarity_split_1"] == pytest.approx(float(point["familiarity_split"][1]))
    assert row["label"] == int(point["label"])
    import json

    import pyarrow.parquet as pq

    meta = json.loads(pq.read_schema(path).metadata[b"tmx"])
    assert meta["projection"] == "pca"
    pd.testing.assert_frame_equal(table, report_table(rep), check_dtype=False)


def test_parquet_without_pyarrow(rep: xr.Dataset, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ImportError, match=r"tmx-measures\[report\]"):
        save_report(rep, tmp_path / "r.parquet")
    assert not (tmp_path / "r.parquet").exists()


class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(1).random((n, 8, 8))


def test_html_is_self_contained(rep: xr.Dataset, tmp_path) -> None:
    n = rep.sizes["sample"]
    page = report_html(rep, tmp_path / "r.html", images=_images(n), top=5)
    assert (tmp_path / "r.html").read_text(encoding="utf-8") == page
    parser = _Tags()
    parser.feed(page)
    circles = [a for t, a in parser.tags if t == "circle"]
    assert len(circles) == 2 * n
    assert {a["data-layer"] for t, a in parser.tags if t == "svg"} == {"a", "b"}
    imgs = [a for t, a in parser.tags if t == "img"]
    assert len(imgs) == 2 * 2 * 5  # most and least familiar, two layers
    assert all(a["src"].startswith("data:image/png;base64,") for a in imgs)
    assert not any(t in ("link", "iframe") for t, _ in parser.tags)
    assert not any(t == "script" and a.get("src") for t, a in parser.tags)
    # the least familiar sample of layer a is shown first under "Least familiar"
    fam = rep["familiarity"].sel(layer="a").values
    least = int(rep["sample"].values[np.argmin(fam)])
    section = page.split("Least familiar")[1]
    assert f'alt="sample {least}"' in section.split("<img")[1]


def test_html_bad_arguments(rep: xr.Dataset) -> None:
    with pytest.raises(ValueError, match="images"):
        report_html(rep, images=np.zeros((3, 8, 8)))
    with pytest.raises(ValueError, match="report"):
        report_html(xr.Dataset())
    with pytest.raises(ValueError, match="unknown layers"):
        report_html(rep, layers=["c"])
    with pytest.raises(ValueError, match="top"):
        report_html(rep, top=-1)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no headless Chromium on this machine (Debian: apt-get install chromium)")


def _load_in_chromium(path, *extra: str) -> tuple[str, list[str]]:
    """The DOM after scripts ran, and the console messages Chromium logged."""
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
        *extra,
        path.resolve().as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


def test_console_detection_works(tmp_path) -> None:
    """The check below would see a script error: a page with one is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>notDefined();</script></body></html>")
    _, console = _load_in_chromium(bad, "--dump-dom")
    assert any("notDefined" in line for line in console)


def test_html_in_headless_chromium(rep: xr.Dataset, tmp_path) -> None:
    path = tmp_path / "r.html"
    report_html(rep, path, images=_images(rep.sizes["sample"]))
    dom, console = _load_in_chromium(path, "--dump-dom")
    assert console == [], console
    assert 'data-ready="yes"' in dom
    assert f'data-points="{2 * rep.sizes["sample"]}"' in dom
    shot = tmp_path / "shot.png"
    _load_in_chromium(path, f"--screenshot={shot}", "--window-size=1200,900")
    from matplotlib import image as mpimg

    pixels = mpimg.imread(shot)[..., :3]
    # the label colours of the scatter are on screen (tab10's first three, 0.8 opaque on white)
    for colour in ((31, 119, 180), (255, 127, 14), (44, 160, 44)):
        seen = 0.8 * np.asarray(colour) + 0.2 * 255
        close = np.abs(pixels * 255 - seen).max(axis=-1) < 25
        assert close.sum() > 20, colour


def test_report_progress_bar_when_asked(capsys):
    rng = np.random.default_rng(0)
    cube = _progress_cube(rng)
    report(cube, layers=["a"], precursor_components=None, progress=True)
    assert "4/4" in capsys.readouterr().out
    report(cube, layers=["a"], precursor_components=None)
    assert capsys.readouterr().out == ""


def _progress_cube(rng):
    data = rng.normal(size=(30, 1, 4))
    return xr.DataArray(
        data,
        dims=("sample", "transformation", "unit"),
        coords={
            "layer": ("unit", ["a"] * 4),
            "channel": ("unit", np.arange(4)),
            "y": ("unit", [-1] * 4),
            "x": ("unit", [-1] * 4),
        },
    )
