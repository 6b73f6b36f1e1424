"""The command line: the transformation-spec grammar, ``tmx run`` and ``tmx report`` end to end
on a tiny model, and the page in headless Chromium."""

from __future__ import annotations

import html.parser
import logging
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import tmx
from tmx import cli
from tmx import transforms as T

from .test_report import _load_in_chromium


# -- the grammar --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("rotation(0:360:90)", T.rotation([0, 90, 180, 270])),
        ("rotation(0, 90:360:90)", T.rotation([0, 90, 180, 270])),
        ("rotation(0:1:0.25)", T.rotation([0, 0.25, 0.5, 0.75])),
        ("rotation(10:-11:-10, fill=nearest)", T.rotation([10, 0, -10], fill="nearest")),
        ("rotation([0, 45], fill_value=-0.5)", T.rotation([0, 45], fill_value=-0.5)),
        ("translation(-2:3:2)", T.translation([-2, -2, -2, 0, 0, 0, 2, 2, 2], [-2, 0, 2] * 3)),
        ("translation(dx=[-1,1])", T.translation([-1, 1], 0)),
        (
            "translation(dx=[0.1,0.2], dy=0, relative=true)",
            T.translation([0.1, 0.2], 0, relative=True),
        ),
        ("scale(0.5, 1, 2)", T.scale([0.5, 1, 2])),
        ("shear(-10, 10, axis=y)", T.shear([-10, 10], axis="y")),
        ("flip(none, x)", T.flip(["none", "x"])),
        ("rot90()", T.rot90([0, 1, 2, 3])),
        ("roll(0:8:4, axis=y)", T.roll([0, 4], axis="y")),
        ("brightness(0.5,1,1.5)", T.brightness([0.5, 1, 1.5])),
        ("contrast(2)", T.contrast(2)),
        ("noise(0, 0.1, seed=3)", T.gaussian_noise([0, 0.1], seed=3)),
        ("identity(2)", T.identity(2)),
        (
            "rotation(0, 90) * brightness(0.5, 2)",
            T.product(T.rotation([0, 90]), T.brightness([0.5, 2])),
        ),
        ("rotation(0, 90); flip(x)", T.union(T.rotation([0, 90]), T.flip("x"))),
    ],
)
def test_specs_build_the_constructors_sets(spec, expected):
    assert cli.parse(spec) == expected  # sets compare by value


def test_repeated_specs_are_their_union():
    got = cli.parse_all(["rotation(0:360:180)", "brightness(0.5)"])
    assert got == T.union(T.rotation([0, 180]), T.brightness(0.5))
    with pytest.raises(ValueError, match="--transforms is required"):
        cli.parse_all([])


@pytest.mark.parametrize(
    ("spec", "message", "token"),
    [
        ("rotaton(0:360:45)", "did you mean 'rotation'", "rotaton"),
        ("rotation(0:360:x)", "a range needs numbers", "x"),
        ("rotation(0:360:0)", "step of a range is 0", "0"),
        ("rotation(10:0)", "range is empty", "10:0"),
        ("rotation(0, foo=1)", "unknown option 'foo'", "foo"),
        ("rotation(0) rotation(1)", "expected ';', '*' or the end", "rotation"),
        ("rotation(0)@", "unexpected character '@'", "@"),
        ("rotation(0, fill_value=[1,2])", "takes one value", "[1,2]"),
        ("scale(-1)", "positive", "scale(-1)"),
        ("rotation(0,", "found the end", ""),
    ],
)
def test_spec_errors_point_at_the_bad_token(spec, message, token):
    with pytest.raises(cli.SpecError, match=re.escape(message)) as info:
        cli.parse(spec)
    err = info.value
    assert spec in str(err)
    if token:
        assert spec[err.start : err.end] == token
    caret = str(err).splitlines()[-1]
    assert caret.strip() == "^" * (err.end - err.start)
    assert caret.index("^") - 2 == err.start  # under the token (two spaces of indent)


# -- tmx run end to end -------------------------------------------------------------------------
N, SIZE = 12, 8


def _tiny_model():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 1)),
            keras.layers.Conv2D(3, 3, activation="relu", name="conv1"),
            keras.layers.GlobalAveragePooling2D(name="pool"),
            keras.layers.Dense(3, name="dense"),
        ],
        name="tiny",
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = _tiny_model()
    model.save(root / "m.keras")
    rng = np.random.default_rng(0)
    x = rng.random((N + 4, SIZE, SIZE, 1)).astype(np.float32)
    y = rng.integers(0, 3, N + 4)
    np.save(root / "x.npy", x)
    np.save(root / "y.npy", y)
    return {"root": root, "model": model, "x": x, "y": y}


@pytest.fixture(scope="module")
def ran(files):
    root = files["root"]
    argv = [
        "run",
        str(root / "m.keras"),
        str(root / "x.npy"),
        "--transforms",
        "rotation(0)",
        "--transforms",
        "brightness(0.5)",
        "--labels",
        str(root / "y.npy"),
        "--samples",
        str(N),
        "--layers",
        "conv1,dense",
        "--report-layers",
        "conv1,dense",
        "--out",
        str(root / "out"),
        "--top",
        "3",
    ]
    logger = logging.getLogger("tmx")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        status = cli.main(argv)
    finally:
        logger.removeHandler(handler)
    return {"status": status, "out": root / "out", "records": records}


def test_run_writes_every_output(ran, files):
    assert ran["status"] == 0
    out = ran["out"]
    for name in [
        "cube.zarr",
        "layers.csv",
        "units.csv",
        "accuracy.csv",
        "nv_per_layer.png",
        "nv_units.png",
        "transforms.png",
        "accuracy.png",
        "report.zarr",
        "report.html",
    ]:
        assert (out / name).exists(), name
    messages = [r.getMessage() for r in ran["records"]]
    assert any("computing the cube" in m for m in messages)
    cube = tmx.open(out / "cube.zarr")
    assert dict(cube.sizes) == {"sample": N, "transformation": 2, "unit": 6 * 6 * 3 + 3}
    run = cube.attrs["tmx_run"]
    assert run["model"] == str((files["root"] / "m.keras").resolve())
    assert run["transforms_spec"] == ["rotation(0)", "brightness(0.5)"]
    assert run["samples"] == N and run["safe_mode"] is True
    np.testing.assert_array_equal(cube["label"].values, files["y"][:N])


def test_tables_match_numpy_and_scipy(ran):
    out = ran["out"]
    a = np.asarray(tmx.open(out / "cube.zarr").values, dtype=np.float64)  # (N, T, U)
    units = pd.read_csv(out / "units.csv")
    tv = a.std(axis=1, ddof=1).mean(axis=0)
    sv = a.std(axis=0, ddof=1).mean(axis=0)
    np.testing.assert_allclose(units["tv"], tv, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(units["sv"], sv, rtol=1e-5, atol=1e-9)
    with np.errstate(invalid="ignore", divide="ignore"):
        nv = np.where(sv > 0, tv / sv, np.nan)
    np.testing.assert_allclose(units["nv"], nv, rtol=1e-5, equal_nan=True)
    u = int(np.flatnonzero(sv > 0)[0])
    f = stats.f_oneway(a[:, 0, u], a[:, 1, u]).statistic
    assert units["anova_f"][u] == pytest.approx(f, rel=1e-6)

    layers = pd.read_csv(out / "layers.csv")
    assert list(layers["layer"]) == ["conv1", "dense"]
    for row in layers.itertuples(index=False):
        mask = (units["layer"] == row.layer).to_numpy()
        ok = mask & np.isfinite(tv) & np.isfinite(sv)
        assert row[6] == pytest.approx(tv[ok].sum() / sv[ok].sum(), rel=1e-5)  # NV uncorrected
        assert row[4] <= row[3] <= row[5]  # the interval contains the corrected estimate
        assert row[3] - row[4] == pytest.approx(row[5] - row[3], rel=1e-6)  # centred on it
        assert row.units == mask.sum()
    if (out / "layers.parquet").exists():
        pd.testing.assert_frame_equal(pd.read_parquet(out / "layers.parquet"), layers)


def test_accuracy_per_transformation_matches_the_model(ran, files):
    acc = pd.read_csv(ran["out"] / "accuracy.csv")
    assert list(acc["transform"]) == ["rotation(0)", "brightness(0.5)"]
    model, x, y = files["model"], files["x"][:N], files["y"][:N]
    for j, scale in enumerate([1.0, 0.5]):
        predicted = np.asarray(model(x * scale)).argmax(axis=1)
        assert acc["accuracy"][j] == pytest.approx(np.mean(predicted == y))


class _Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_page_is_self_contained_and_complete(ran):
    page = (ran["out"] / "report.html").read_text(encoding="utf-8")
    parser = _Tags()
    parser.feed(page)
    for tag, attrs in parser.tags:
        for key in ("src", "href"):
            value = attrs.get(key)
            assert value is None or value.startswith(("data:", "#")), (tag, value)
    assert not any(t in ("link", "iframe") for t, _ in parser.tags)
    assert page.count('<circle class="pt"') == 2 * N  # the data set report of two layers
    for text in ("Invariance per layer", "jackknife", "Accuracy per transformation", "Units"):
        assert text in page
    assert "brightness(0.5)" in page and "0.5" in page


def test_report_rebuilds_the_page_from_the_store(ran, tmp_path, capsys):
    status = cli.main(["report", str(ran["out"] / "cube.zarr"), "--out", str(tmp_path)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "written:" in printed and "report.html" in printed
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "layers.csv"), pd.read_csv(ran["out"] / "layers.csv")
    )
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "accuracy.csv"), pd.read_csv(ran["out"] / "accuracy.csv")
    )
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.count('<circle class="pt"') == 2 * N  # the last three layers: both of them
    assert page.count('alt="sample ') > 0  # thumbnails from the run's data file


def test_page_in_headless_chromium(ran):
    dom, console = _load_in_chromium(
        ran["out"] / "report.html", "--virtual-time-budget=5000", "--dump-dom"
    )
    assert console == [], console
    assert 'data-ready="yes"' in dom
    assert f'data-points="{2 * N}"' in dom
    assert 'data-images-ok="yes"' in dom
    assert 'data-images="0"' not in dom


# -- errors and options -------------------------------------------------------------------------
def test_a_bad_spec_is_a_usage_error_naming_the_token(files, capsys):
    root = files["root"]
    with pytest.raises(SystemExit) as info:
        cli.main(["run", str(root / "m.keras"), str(root / "x.npy"), "-t", "rotaton(0:90:45)"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown transformation 'rotaton'" in err and "^^^^^^^" in err


def test_existing_store_and_unknown_layer_fail_cleanly(ran, files, capsys):
    root = files["root"]
    args = ["run", str(root / "m.keras"), str(root / "x.npy"), "-t", "rotation(0)"]
    assert cli.main([*args, "--out", str(ran["out"])]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert cli.main([*args, "--out", str(root / "o2"), "--layers", "conv9"]) == 1
    assert "conv9" in capsys.readouterr().err


def test_zarr_data_samples_and_safe_mode(files, tmp_path):
    import keras
    import zarr

    x = files["x"]
    arr = zarr.create_array(
        str(tmp_path / "x.zarr"), shape=x.shape, dtype=x.dtype, chunks=(4, SIZE, SIZE, 1)
    )
    arr[:] = x
    paths = cli.run(
        files["model"],
        tmp_path / "x.zarr",
        "rotation(0, 90)",
        out=tmp_path / "o",
        samples=5,
        layers=["dense"],
        page=False,
    )
    cube = tmx.open(paths["cube.zarr"])
    assert cube.sizes["sample"] == 5 and cube.sizes["transformation"] == 2
    expected = np.asarray(files["model"](x[:5]))
    np.testing.assert_allclose(cube.isel(transformation=0).values, expected, rtol=1e-5, atol=1e-6)

    # a model with Python code (a Lambda layer) loads only with --no-safe-mode
    inp = keras.Input((SIZE, SIZE, 1))
    lam = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2.0)(keras.layers.Flatten()(inp)))
    lam.save(tmp_path / "lam.keras")
    with pytest.raises(ValueError, match=r"(?i)safe"):
        cli.run(tmp_path / "lam.keras", x[:3], "rotation(0)", out=tmp_path / "o3", page=False)
    paths = cli.run(
        tmp_path / "lam.keras",
        x[:3],
        "rotation(0)",
        out=tmp_path / "o4",
        page=False,
        safe_mode=False,
    )
    assert tmx.open(paths["cube.zarr"]).sizes["sample"] == 3


def test_report_of_a_plain_store_without_run_provenance(files, tmp_path):
    cube = tmx.activations(files["model"], files["x"][:6], T.rotation([0, 90]), layers=["dense"])
    store = tmx.save(cube, tmp_path / "plain.zarr")
    paths = cli.report(store, report_layers=[])
    assert "accuracy.csv" not in paths and "report.zarr" not in paths
    page = paths["report.html"].read_text(encoding="utf-8")
    assert "No labels were given" in page and "Not computed" in page
    layers = pd.read_csv(paths["layers.csv"])
    assert list(layers["layer"]) == ["dense"] and layers["units"][0] == 3
